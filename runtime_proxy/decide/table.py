"""Config -> immutable compiled tables: what the request path reads, precomputed once per config.

`compile_config` turns the pydantic `Config` (runtime_proxy/config.py) into plain slotted objects:
every path, header and query condition becomes one small test function (regexes compiled with
RE2 and anchored at both ends, `ignore_case` values lower-cased once), every domain of every
destination goes into one dict keyed by the lower-cased Host, and every `to`, `split` and
`mirror` points straight at the destination service and subset it names. Nothing here is changed
after compilation; the mutable state (breakers, outlier detection) lives in the I/O layer, keyed
by `CSubset.cluster`.
"""

from __future__ import annotations

from bisect import bisect_right

try:  # google-re2: the engine Envoy uses (RE2 syntax, linear time)
    import re2 as _re2
except ImportError:  # pragma: no cover - google-re2 is a dependency; this only helps a broken install
    _re2 = None


class TableError(ValueError):
    """A config that validates but cannot be compiled (an invalid RE2 pattern, a dangling reference)."""


# ---- string tests ---------------------------------------------------------------------------

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(s: str) -> str:
    """Lower-case ASCII letters only, as Envoy's `ignore_case` (absl::AsciiStrToLower) does."""
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER)


def re2_fullmatcher(pattern: str):
    """A function `str -> bool` that is true when `pattern` (RE2) matches the whole string.

    The public `fullmatch` of google-re2 builds match objects and offset maps (about 5 µs a call);
    the underlying RE2 object's `Match` with ANCHOR_BOTH is about three times faster and gives the
    same answer, so it is used when the installed version exposes it.
    """
    if _re2 is None:  # pragma: no cover
        raise TableError("google-re2 is not installed")
    options = _re2.Options()
    options.log_errors = False  # the library would print its own copy of the error on stderr
    try:
        compiled = _re2.compile(pattern, options=options)
    except Exception as err:  # re2.error
        raise TableError(f"invalid RE2 regex {pattern!r}: {_re2_message(err)}") from None
    raw = getattr(compiled, "_regexp", None)
    anchor = getattr(getattr(getattr(_re2, "_re2", None), "RE2", None), "Anchor", None)
    if raw is not None and anchor is not None and hasattr(raw, "Match"):
        match, both = raw.Match, anchor.ANCHOR_BOTH

        def fullmatch(s: str) -> bool:
            b = s.encode("utf-8", "surrogateescape")
            return match(both, b, 0, len(b))[0][0] != -1
        return fullmatch
    public = compiled.fullmatch  # pragma: no cover - older google-re2

    def fullmatch_public(s: str) -> bool:  # pragma: no cover
        return public(s) is not None
    return fullmatch_public  # pragma: no cover


def _re2_message(err: Exception) -> str:
    msg = err.args[0] if err.args else str(err)
    return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)


def path_test(kind: str, value: str):
    """The test of one path condition on the normalised path (without the query)."""
    if kind == "exact":
        return value.__eq__
    if kind == "prefix":
        return lambda p: p.startswith(value)
    if kind == "segment_prefix":
        if value.endswith("/"):       # `prefix "/api/"` and `prefix "/"`: a plain string prefix
            return lambda p: p.startswith(value)
        with_slash = value + "/"
        return lambda p: p == value or p.startswith(with_slash)
    if kind == "regex":
        return re2_fullmatcher(value)
    raise TableError(f"unknown path match kind {kind!r}")


def value_test(kind: str, value: str, ignore_case: bool):
    """The test of one header value (exact, prefix, suffix, regex)."""
    if kind == "regex":
        return re2_fullmatcher(value)
    if ignore_case:
        v = ascii_lower(value)
        if kind == "exact":
            return lambda s: ascii_lower(s) == v
        if kind == "prefix":
            return lambda s: ascii_lower(s).startswith(v)
        if kind == "suffix":
            return lambda s: ascii_lower(s).endswith(v)
    else:
        if kind == "exact":
            return value.__eq__
        if kind == "prefix":
            return lambda s: s.startswith(value)
        if kind == "suffix":
            return lambda s: s.endswith(value)
    raise TableError(f"unknown header match kind {kind!r}")


def header_test(name: str, kind: str, value: str | None, invert: bool, ignore_case: bool):
    """The test of one header condition on `dict[str, list[str]]` (docs/language.md section 7).

    Values are tested one by one (a header sent twice has two values); a string test never holds
    on an absent header, with or without `invert`.
    """
    if kind == "present":
        return (lambda h: name not in h) if invert else (lambda h: name in h)
    if kind == "absent":
        return (lambda h: name in h) if invert else (lambda h: name not in h)
    test = value_test(kind, value or "", ignore_case)
    if invert:
        def inverted(h):
            values = h.get(name)
            if values is None:
                return False
            for v in values:
                if test(v):
                    return False
            return True
        return inverted

    def plain(h):
        values = h.get(name)
        if values is None:
            return False
        for v in values:
            if test(v):
                return True
        return False
    return plain


def query_test(name: str, kind: str, value: str | None):
    """The test of one query condition on the parsed query (name -> first value)."""
    if kind == "present":
        return lambda q: name in q
    if kind == "exact":
        return lambda q: q.get(name) == value
    if kind == "regex":
        test = re2_fullmatcher(value or "")

        def regex(q):
            v = q.get(name)
            return v is not None and test(v)
        return regex
    raise TableError(f"unknown query match kind {kind!r}")


def parse_query(query: str) -> dict[str, str]:
    """Query parameters as Envoy's route matcher sees them: split on `&`, then on the first `=`,
    not percent-decoded; a key without `=` has the value ""; the first value of a key wins."""
    params: dict[str, str] = {}
    if not query:
        return params
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if name not in params:
            params[name] = value if eq else ""
    return params


# ---- compiled objects -----------------------------------------------------------------------

class CMatch:
    """One `match` block: every condition holds (AND)."""
    __slots__ = ("path", "headers", "query", "methods")

    def __init__(self, path, headers, query, methods):
        self.path = path              # callable(path) -> bool, or None for any path
        self.headers = headers        # tuple of callable(headers) -> bool
        self.query = query            # tuple of callable(params) -> bool
        self.methods = methods        # frozenset of methods, or None for any method


class CSubset:
    __slots__ = ("service", "name", "cluster", "discovery", "endpoints", "source")

    def __init__(self, service: str, name: str, cluster: str, discovery: str, endpoints, source: str):
        self.service = service        # the name of the service the subset belongs to
        self.name = name
        self.cluster = cluster        # `outbound|SUBSET|SERVICE`: breakers, outlier state and stats key
        self.discovery = discovery    # "static" | "dns"
        self.endpoints = endpoints    # tuple of (host, port)
        self.source = source


class CSubsetRef:
    """A resolved destination: the service (for its limits, outlier and budget) and the subset."""
    __slots__ = ("service", "subset")

    def __init__(self, service: CService, subset: CSubset):
        self.service = service
        self.subset = subset


class CWeightedSubset(CSubsetRef):
    __slots__ = ("weight",)

    def __init__(self, service: CService, subset: CSubset, weight: int):
        super().__init__(service, subset)
        self.weight = weight


class CSplit:
    __slots__ = ("targets", "key_header", "total_weight", "bounds")

    def __init__(self, targets: tuple, key_header: str | None):
        self.targets = targets
        self.key_header = key_header
        bounds, acc = [], 0
        for t in targets:
            acc += t.weight
            bounds.append(acc)
        self.total_weight = acc
        self.bounds = tuple(bounds)   # cumulative weights: target i takes [bounds[i-1], bounds[i])

    def index(self, value: int) -> int:
        """The target whose interval holds `value mod total` (zero-weight targets hold none)."""
        return bisect_right(self.bounds, value % self.total_weight)


class CRetry:
    __slots__ = ("num_retries", "retry_on", "retriable_status_codes", "per_try_timeout_ms",
                 "backoff_base_ms", "backoff_max_ms", "allow_non_idempotent",
                 "statuses", "failures", "backoff_cap_exponent")

    def __init__(self, r):
        from runtime_proxy.decide.retry import compile_conditions, cap_exponent

        self.num_retries = r.num_retries
        self.retry_on = tuple(r.retry_on)
        self.retriable_status_codes = tuple(r.retriable_status_codes)
        self.per_try_timeout_ms = r.per_try_timeout_ms
        self.backoff_base_ms = r.backoff_base_ms
        self.backoff_max_ms = r.backoff_max_ms
        self.allow_non_idempotent = r.allow_non_idempotent
        # precomputed: the statuses and failure kinds that this policy retries
        self.statuses, self.failures = compile_conditions(self.retry_on, self.retriable_status_codes)
        self.backoff_cap_exponent = cap_exponent(self.backoff_base_ms, self.backoff_max_ms)


class CFault:
    __slots__ = ("abort_status", "abort_percent", "delay_ms", "delay_percent")

    def __init__(self, f):
        self.abort_status = f.abort.http_status if f.abort else None
        self.abort_percent = f.abort.percent if f.abort else 0.0
        self.delay_ms = f.delay.duration_ms if f.delay else 0
        self.delay_percent = f.delay.percent if f.delay else 0.0


class CMirror(CSubsetRef):
    __slots__ = ("percent",)

    def __init__(self, service: CService, subset: CSubset, percent: float):
        super().__init__(service, subset)
        self.percent = percent


class CHeaderChanges:
    __slots__ = ("remove", "set", "add", "empty", "touched")

    def __init__(self, hc):
        self.remove = frozenset(n.lower() for n in hc.remove)
        self.set = tuple((n.lower(), v) for n, v in hc.set)
        self.add = tuple((n.lower(), v) for n, v in hc.add)
        self.empty = not (self.remove or self.set or self.add)
        self.touched = self.remove | {n for n, _ in self.set}   # names whose old values go


class CRoute:
    __slots__ = ("name", "source", "matches", "to", "split", "timeout_ms", "retry", "fault",
                 "mirror", "request_headers", "response_headers")

    def __init__(self, name, source, matches, to, split, timeout_ms, retry, fault, mirror,
                 request_headers, response_headers):
        self.name = name
        self.source = source
        self.matches = matches                # tuple[CMatch, ...], OR
        self.to = to                          # CSubsetRef | None
        self.split = split                    # CSplit | None
        self.timeout_ms = timeout_ms          # 0: no timeout
        self.retry = retry                    # CRetry | None
        self.fault = fault                    # CFault | None
        self.mirror = mirror                  # CMirror | None
        self.request_headers = request_headers
        self.response_headers = response_headers


class CService:
    """A destination service as the caller's sidecar sees it."""
    __slots__ = ("name", "namespace", "identity", "port", "domains", "source", "subsets",
                 "limits", "outlier", "retry_budget", "routes", "mtls", "sni")

    def __init__(self, s):
        self.name = s.name
        self.namespace = s.namespace
        self.identity = s.identity
        self.port = s.port
        self.domains = tuple(s.domains)
        self.source = s.source
        self.subsets = {sub.name: CSubset(s.name, sub.name, sub.cluster, sub.discovery,
                                          tuple((e.host, e.port) for e in sub.endpoints), sub.source)
                        for sub in s.subsets}
        self.limits = s.limits                # config.Limits (read by breaker.Breaker)
        self.outlier = s.outlier              # config.Outlier | None (read by outlier.OutlierState)
        self.retry_budget = s.retry_budget    # config.RetryBudget | None
        self.routes: tuple[CRoute, ...] = ()  # filled in once every service exists
        self.mtls = s.mtls                    # called over mTLS, expecting `identity` as the server's URI SAN
        self.sni = s.sni                      # the TLS server name (None: none)


class CPrincipal:
    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value: str):
        self.kind, self.value = kind, value


class CAuthzRule:
    __slots__ = ("name", "action", "source", "principals", "path", "methods", "headers")

    def __init__(self, r):
        self.name = r.name
        self.action = r.action
        self.source = r.source
        # principals: None (any peer) or (exact identities, prefixes)
        if r.principals is None:
            self.principals = None
        else:
            self.principals = (frozenset(p.value for p in r.principals if p.kind == "exact"),
                               tuple(p.value for p in r.principals if p.kind == "prefix"))
        self.path = path_test(r.path.kind, r.path.value) if r.path else None
        self.methods = frozenset(r.methods) if r.methods is not None else None
        self.headers = tuple(header_test(h.name.lower(), h.kind, h.value, h.invert, h.ignore_case)
                             for h in r.headers)


class CAuthorization:
    __slots__ = ("default_allow", "deny", "allow", "source")

    def __init__(self, a):
        self.default_allow = a.default == "allow"
        rules = [CAuthzRule(r) for r in a.rules]
        self.deny = tuple(r for r in rules if r.action == "deny")
        self.allow = tuple(r for r in rules if r.action == "allow")
        self.source = a.source


class Table:
    """Everything one config compiles to."""
    __slots__ = ("config", "version", "service", "escaped_slashes", "authorization", "services",
                 "hosts", "subsets")

    def __init__(self, config, services: dict[str, CService], authorization: CAuthorization):
        self.config = config
        self.version = config.version
        self.service = config.service                       # whose sidecar this is
        self.escaped_slashes = config.normalization.escaped_slashes
        self.authorization = authorization                  # enforced on the inbound listener
        self.services = services                            # name -> CService
        self.hosts: dict[str, CService] = {}                # lower-cased domain -> CService
        for svc in services.values():
            for d in svc.domains:
                self.hosts.setdefault(d.lower(), svc)
        self.subsets: dict[str, CSubset] = {sub.cluster: sub for svc in services.values()
                                            for sub in svc.subsets.values()}

    def service_for_host(self, host: str) -> CService | None:
        """The destination whose domains hold `host` (case-insensitive; a port in Host must match
        a domain with that port, as Envoy matches virtual hosts)."""
        svc = self.hosts.get(host)
        if svc is None:
            svc = self.hosts.get(ascii_lower(host))
        return svc


# ---- compilation ----------------------------------------------------------------------------

def compile_match(m) -> CMatch:
    return CMatch(
        path_test(m.path.kind, m.path.value) if m.path else None,
        tuple(header_test(h.name.lower(), h.kind, h.value, h.invert, h.ignore_case) for h in m.headers),
        tuple(query_test(q.name, q.kind, q.value) for q in m.query),
        frozenset(m.methods) if m.methods is not None else None,
    )


def compile_config(config) -> Table:
    """Compile a validated `Config` into a `Table`. Raises TableError for an invalid regex or a
    destination that names no service or subset of the config."""
    services = {s.name: CService(s) for s in config.services}

    def resolve(service: str, subset: str, where: str) -> tuple[CService, CSubset]:
        svc = services.get(service)
        sub = svc.subsets.get(subset) if svc is not None else None
        if sub is None:
            raise TableError(f"{where}: no subset `{subset}` of service `{service}` in the config")
        return svc, sub

    for s in config.services:
        routes = []
        for r in s.routes:
            where = f"route `{r.name}` of service `{s.name}` ({r.source})"
            try:
                matches = tuple(compile_match(m) for m in r.matches)
            except TableError as err:
                raise TableError(f"{where}: {err}") from None
            to = CSubsetRef(*resolve(r.to.service, r.to.subset, where)) if r.to else None
            split = None
            if r.split is not None:
                targets = tuple(CWeightedSubset(*resolve(t.service, t.subset, where), t.weight)
                                for t in r.split.targets)
                split = CSplit(targets, r.split.key_header.lower() if r.split.key_header else None)
                if split.total_weight <= 0:
                    raise TableError(f"{where}: split weights total zero")
            if (to is None) == (split is None):
                raise TableError(f"{where}: exactly one of `to` and `split` is needed")
            mirror = None
            if r.mirror is not None:
                mirror = CMirror(*resolve(r.mirror.service, r.mirror.subset, where), r.mirror.percent)
            routes.append(CRoute(
                r.name, r.source, matches, to, split, r.timeout_ms,
                CRetry(r.retry) if r.retry is not None else None,
                CFault(r.fault) if r.fault is not None else None,
                mirror, CHeaderChanges(r.request_headers), CHeaderChanges(r.response_headers)))
        services[s.name].routes = tuple(routes)
    try:
        authorization = CAuthorization(config.authorization)
    except TableError as err:
        raise TableError(f"authorization of `{config.service}`: {err}") from None
    return Table(config, services, authorization)
