"""Config -> immutable compiled tables: what the proxy reads, precomputed once per config.

`compile_config` turns a validated config's JSON data (runtime_proxy/config/model.py; the proxy
validates in a child process and never imports pydantic itself) into plain slotted objects and
named tuples: every path, header and query condition becomes one small test function (regexes
compiled with RE2 and anchored at both ends, `ignore_case` values lower-cased once), every domain
of every destination goes into one dict keyed by the lower-cased Host, and every `to`, `split` and
`mirror` points straight at the destination service and subset it names. The table is the
proxy's only view of its config: the sidecar's listeners, application, limits and identity files
are in it too. Nothing here is changed after compilation; the mutable state (breakers, outlier
detection) lives in the I/O layer, keyed by `CSubset.cluster`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Any, NamedTuple

from runtime_proxy.decide.answer import CDirect, CRedirect, CRewrite
from runtime_proxy.decide.cors import CCors
from runtime_proxy.decide.mirror import fraction as mirror_fraction
from runtime_proxy.decide.route_index import RouteIndex
from runtime_proxy.decide.trace import compile_tracing

try:  # google-re2: the engine Envoy uses (RE2 syntax, linear time)
    import re2 as _re2
except ImportError:  # pragma: no cover - google-re2 is a dependency; this only helps a broken install
    _re2 = None


class TableError(ValueError):
    """A config that validates but cannot be compiled (an invalid RE2 pattern, a dangling reference)."""


# What the decisions read of a request: its headers (lower-case name -> values, request.header_dict)
# and its query (name -> first value, parse_query). Every condition compiles to one of these tests.
HeaderMap = dict[str, list[str]]
StrTest = Callable[[str], bool]                 # on the normalised path, or on one header value
HeaderTest = Callable[[HeaderMap], bool]
QueryTest = Callable[[dict[str, str]], bool]


# ---- string tests ---------------------------------------------------------------------------

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(s: str) -> str:
    """Lower-case ASCII letters only, as Envoy's `ignore_case` (absl::AsciiStrToLower) does."""
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER)


def re2_fullmatcher(pattern: str) -> StrTest:
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
        match: Callable[[Any, bytes, int, int], list[tuple[int, int]]]   # RE2.Match: (start, end) per group
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


def path_test(kind: str, value: str, ignore_case: bool = False) -> StrTest:
    """The test of one path condition on the normalised path (without the query). With
    `ignore_case` (never on a regex), ASCII letters only are folded, on both sides, as Envoy's
    `case_sensitive: false` and StringMatcher `ignore_case` do."""
    if ignore_case and kind != "regex":
        test = path_test(kind, ascii_lower(value))
        return lambda p: test(ascii_lower(p))
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


def value_test(kind: str, value: str, ignore_case: bool) -> StrTest:
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


def header_test(name: str, kind: str, value: str | None, invert: bool, ignore_case: bool) -> HeaderTest:
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
        def inverted(h: HeaderMap) -> bool:
            values = h.get(name)
            if values is None:
                return False
            for v in values:  # noqa: SIM110 - these tests run a request: all() would add a generator
                if test(v):
                    return False
            return True
        return inverted

    def plain(h: HeaderMap) -> bool:
        values = h.get(name)
        if values is None:
            return False
        for v in values:  # noqa: SIM110 - as above, any()
            if test(v):
                return True
        return False
    return plain


def query_test(name: str, kind: str, value: str | None) -> QueryTest:
    """The test of one query condition on the parsed query (name -> first value)."""
    if kind == "present":
        return lambda q: name in q
    if kind == "exact":
        return lambda q: q.get(name) == value
    if kind == "regex":
        test = re2_fullmatcher(value or "")

        def regex(q: dict[str, str]) -> bool:
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


# ---- settings (named tuples: compared by value, so unchanged cluster state survives a reload) -----

class Limits(NamedTuple):
    max_connections: int
    max_pending_requests: int
    max_requests: int
    max_retries: int                      # ignored with a retry budget


class OutlierSettings(NamedTuple):
    consecutive_5xx: int
    consecutive_gateway_errors: int       # 0: not used
    interval_ms: int
    base_ejection_ms: int
    max_ejection_percent: float


class RetryBudget(NamedTuple):
    percent: float
    min_concurrency: int


class Upstream(NamedTuple):
    connect_timeout_ms: int
    idle_timeout_ms: int
    max_response_headers_bytes: int


class App(NamedTuple):
    host: str
    port: int
    discovery: str
    cluster: str                          # `inbound|SERVICE`
    limits: Limits
    upstream: Upstream


class ProxySettings(NamedTuple):
    max_request_headers: int
    max_request_headers_bytes: int
    max_request_body_bytes: int           # 0: unlimited
    idle_timeout_ms: int
    request_headers_timeout_ms: int
    stream_idle_timeout_ms: int
    max_connections: int                  # per listener
    drain_timeout_ms: int
    access_log: str | None = None         # the access log's file (`--access-log` overrides it)


class IdentityFiles(NamedTuple):
    directory: str
    cert: str
    key: str
    ca: str


class Listeners(NamedTuple):
    inbound: tuple[str, int]              # (host, port); port 0: any free port
    outbound: tuple[str, int]
    admin: tuple[str, int]


def where(source: dict[str, Any] | None) -> str:
    """A config `source` ({file, line, column}) as `FILE:LINE:COL`."""
    if not source:
        return "?"
    return f"{source['file']}:{source['line']}:{source['column']}"


# ---- compiled objects -----------------------------------------------------------------------

class CMatch:
    """One `match` block: every condition holds (AND). `spec` keeps what was written (the config's
    match data) for the route index and for explanations."""
    __slots__ = ("path", "headers", "query", "methods", "spec")

    def __init__(self, path: StrTest | None, headers: tuple[HeaderTest, ...], query: tuple[QueryTest, ...],
                 methods: frozenset[str] | None, spec: dict[str, Any]) -> None:
        self.path = path              # callable(path) -> bool, or None for any path
        self.headers = headers        # tuple of callable(headers) -> bool
        self.query = query            # tuple of callable(params) -> bool
        self.methods = methods        # frozenset of methods, or None for any method
        self.spec = spec              # the config's match data


class CSubset:
    __slots__ = ("service", "name", "cluster", "discovery", "endpoints", "source")

    def __init__(self, service: str, name: str, cluster: str, discovery: str,
                 endpoints: tuple[tuple[str, int], ...], source: str) -> None:
        self.service = service        # the name of the service the subset belongs to
        self.name = name
        self.cluster = cluster        # `outbound|SUBSET|SERVICE`: breakers, outlier state and stats key
        self.discovery = discovery    # "static" | "dns"
        self.endpoints = endpoints    # tuple of (host, port)
        self.source = source          # FILE:LINE:COL


class CSubsetRef:
    """A resolved destination: the service (for its limits, outlier and budget) and the subset."""
    __slots__ = ("service", "subset")

    def __init__(self, service: CService, subset: CSubset) -> None:
        self.service = service
        self.subset = subset


class CWeightedSubset(CSubsetRef):
    __slots__ = ("weight", "request_headers", "response_headers")

    def __init__(self, service: CService, subset: CSubset, weight: int,
                 request_headers: CHeaderChanges | None = None, response_headers: CHeaderChanges | None = None) -> None:
        super().__init__(service, subset)
        self.weight = weight
        # this arm's own header changes, applied before the route's (None: none)
        self.request_headers = request_headers
        self.response_headers = response_headers


class CSplit:
    __slots__ = ("targets", "key_header", "total_weight", "bounds")

    def __init__(self, targets: tuple[CWeightedSubset, ...], key_header: str | None) -> None:
        self.targets = targets
        self.key_header = key_header
        bounds: list[int]
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

    def __init__(self, r: dict[str, Any]) -> None:
        from runtime_proxy.decide.retry import cap_exponent, compile_conditions

        self.num_retries: int = r["num_retries"]
        self.retry_on: tuple[str, ...] = tuple(r["retry_on"])
        self.retriable_status_codes: tuple[int, ...] = tuple(r.get("retriable_status_codes") or ())
        self.per_try_timeout_ms: int = r["per_try_timeout_ms"]
        self.backoff_base_ms: int = r["backoff_base_ms"]
        self.backoff_max_ms: int = r["backoff_max_ms"]
        self.allow_non_idempotent: bool = r.get("allow_non_idempotent", False)
        # precomputed: the statuses and failure kinds that this policy retries
        self.statuses, self.failures = compile_conditions(self.retry_on, self.retriable_status_codes)
        self.backoff_cap_exponent = cap_exponent(self.backoff_base_ms, self.backoff_max_ms)


class CFault:
    __slots__ = ("abort_status", "abort_percent", "delay_ms", "delay_percent")

    def __init__(self, f: dict[str, Any]) -> None:
        abort, delay = f.get("abort"), f.get("delay")
        self.abort_status: int | None = abort["http_status"] if abort else None
        self.abort_percent: float = abort["percent"] if abort else 0.0
        self.delay_ms: int = delay["duration_ms"] if delay else 0
        self.delay_percent: float = delay["percent"] if delay else 0.0


class CMirror(CSubsetRef):
    __slots__ = ("percent", "timeout_ms", "numerator", "denominator")

    def __init__(self, service: CService, subset: CSubset, percent: float, timeout_ms: int) -> None:
        super().__init__(service, subset)
        self.percent = percent
        self.timeout_ms = timeout_ms  # a copy still running after this is dropped
        # the share as Envoy's FractionalPercent, which decide/mirror.py compares the draw with
        self.numerator, self.denominator = mirror_fraction(percent)


class CHeaderChanges:
    __slots__ = ("remove", "set", "add", "empty", "touched")

    def __init__(self, hc: dict[str, Any] | None) -> None:
        hc = hc or {}
        self.remove: frozenset[str] = frozenset(n.lower() for n in hc.get("remove") or ())
        self.set: tuple[tuple[str, str], ...] = tuple((n.lower(), v) for n, v in hc.get("set") or ())
        self.add: tuple[tuple[str, str], ...] = tuple((n.lower(), v) for n, v in hc.get("add") or ())
        self.empty = not (self.remove or self.set or self.add)
        self.touched = self.remove | {n for n, _ in self.set}   # names whose old values go


NO_HEADER_CHANGES = CHeaderChanges(None)


class CRoute:
    __slots__ = ("name", "source", "matches", "to", "split", "timeout_ms", "retry", "fault",
                 "mirrors", "request_headers", "response_headers", "redirect", "direct", "rewrite", "cors")

    def __init__(self, name: str, source: str, matches: tuple[CMatch, ...], to: CSubsetRef | None,
                 split: CSplit | None, timeout_ms: int, retry: CRetry | None, fault: CFault | None,
                 mirrors: tuple[CMirror, ...], request_headers: CHeaderChanges,
                 response_headers: CHeaderChanges, cors: CCors | None = None) -> None:
        self.name = name
        self.source = source                  # FILE:LINE:COL
        self.matches = matches                # OR
        self.to = to                          # exactly one of `to` and `split` (compile_config)
        self.split = split
        self.timeout_ms = timeout_ms          # 0: no timeout
        self.retry = retry
        self.fault = fault
        self.mirrors = mirrors                # in written order (decide/mirror.py draws them)
        self.request_headers = request_headers
        self.response_headers = response_headers
        self.cors = cors                      # decide/cors.py; None: no CORS, nothing looked at
        # decide/answer.py (compile_answers): a route that answers itself has neither `to` nor `split`
        self.redirect: CRedirect | None = None
        self.direct: CDirect | None = None
        self.rewrite: CRewrite | None = None


def compile_answers(route: CRoute, r: dict[str, Any]) -> CRoute:
    """A route's redirect, direct response and rewrite (decide/answer.py), when it has one."""
    if r.get("redirect") is not None or r.get("direct_response") is not None or r.get("rewrite") is not None:
        try:
            route.redirect = CRedirect(r["redirect"]) if r.get("redirect") is not None else None
            route.direct = CDirect(r["direct_response"]) if r.get("direct_response") is not None else None
            route.rewrite = CRewrite(r["rewrite"]) if r.get("rewrite") is not None else None
        except Exception as err:  # re2.error: an invalid pattern (the loader's check reports it first)
            raise TableError(f"route `{route.name}`: {err}") from None
    return route


class CService:
    """A destination service as the caller's sidecar sees it."""
    __slots__ = ("name", "namespace", "identity", "port", "domains", "source", "subsets",
                 "limits", "outlier", "retry_budget", "upstream", "routes", "mtls", "sni")

    def __init__(self, s: dict[str, Any]) -> None:
        self.name: str = s["name"]
        self.namespace: str = s["namespace"]
        self.identity: str = s["identity"]
        self.port: int = s["port"]
        self.domains: tuple[str, ...] = tuple(s["domains"])
        self.source = where(s.get("source"))
        self.subsets: dict[str, CSubset] = {
            sub["name"]: CSubset(s["name"], sub["name"], sub["cluster"], sub["discovery"],
                                 tuple((e["host"], e["port"]) for e in sub["endpoints"]), where(sub.get("source")))
            for sub in s["subsets"]}
        self.limits = limits(s["limits"])                  # read by breaker.Breaker
        self.outlier = OutlierSettings(**s["outlier"]) if s.get("outlier") else None
        self.retry_budget = RetryBudget(**s["retry_budget"]) if s.get("retry_budget") else None
        self.upstream = Upstream(**s["upstream"])
        self.routes: tuple[CRoute, ...] = ()  # filled in once every service exists
        self.mtls: bool = s["mtls"]           # called over mTLS, expecting `identity` as the server's URI SAN
        self.sni: str = s["sni"]              # the TLS server name sent with mTLS


def limits(data: dict[str, Any]) -> Limits:
    return Limits(data["max_connections"], data["max_pending_requests"], data["max_requests"], data["max_retries"])


class CAuthzRule:
    __slots__ = ("name", "action", "source", "principals", "path", "methods", "headers", "spec")

    def __init__(self, r: dict[str, Any]) -> None:
        self.name: str = r["name"]
        self.action: str = r["action"]
        self.source = where(r.get("source"))
        # principals: None (any peer) or (exact identities, prefixes)
        principals = r.get("principals")
        if principals is None:
            self.principals: tuple[frozenset[str], tuple[str, ...]] | None = None
        else:
            self.principals = (frozenset(p["value"] for p in principals if p["kind"] == "exact"),
                               tuple(p["value"] for p in principals if p["kind"] == "prefix"))
        path = r.get("path")
        self.path = path_test(path["kind"], path["value"], path.get("ignore_case", False)) if path else None
        methods = r.get("methods")
        self.methods: frozenset[str] | None = frozenset(methods) if methods is not None else None
        self.headers = tuple(header_test(h["name"].lower(), h["kind"], h.get("value"), h.get("invert", False),
                                         h.get("ignore_case", False)) for h in r.get("headers") or ())
        # `not path` / `not method`, folded into the path test and the method set: a rule without
        # them costs nothing more
        not_paths = r.get("not_paths")
        if not_paths:
            self.path = excluding_paths(self.path, tuple(path_test(p["kind"], p["value"], p.get("ignore_case", False))
                                                         for p in not_paths))
        not_methods = r.get("not_methods")
        if not_methods:
            excluded = frozenset(not_methods)
            self.methods = self.methods - excluded if self.methods is not None else AllMethodsBut(excluded)
        self.spec = r                 # the rule as written, for explanations


class AllMethodsBut(frozenset):  # type: ignore[type-arg]  # of str
    """A rule's methods when it has `not method` and no `method`: every method but these."""
    __slots__ = ()

    def __contains__(self, method: object) -> bool:
        return not frozenset.__contains__(self, method)


def excluding_paths(base: Callable[[str], bool] | None,
                    excluded: tuple[Callable[[str], bool], ...]) -> Callable[[str], bool]:
    """The path test of a rule with `not path`: its own path test (if any) and none of the excluded."""
    if base is None:
        return lambda path: not any(t(path) for t in excluded)
    return lambda path: base(path) and not any(t(path) for t in excluded)


class CAuthorization:
    __slots__ = ("default_allow", "deny", "allow", "source", "reads_xfcc")

    def __init__(self, a: dict[str, Any]) -> None:
        self.default_allow = a["default"] == "allow"
        rules = [CAuthzRule(r) for r in a.get("rules") or ()]
        self.deny = tuple(r for r in rules if r.action == "deny")
        self.allow = tuple(r for r in rules if r.action == "allow")
        self.source = where(a.get("source")) if a.get("source") else None
        # whether a rule has a condition on `x-forwarded-client-cert` (only then does a request's
        # header map get the sidecar's own value in place of the client's: decide/request.py)
        self.reads_xfcc = any(h["name"].lower() == "x-forwarded-client-cert"
                              for r in rules for h in r.spec.get("headers") or ())


class Table:
    """Everything one config compiles to."""
    __slots__ = ("version", "service", "namespace", "identity", "listeners", "app", "escaped_slashes",
                 "proxy", "mtls_mode", "identity_files", "authorization", "services", "hosts", "subsets", "index",
                 "tracing", "wildcards")

    def __init__(self, data: dict[str, Any], services: dict[str, CService], authorization: CAuthorization) -> None:
        self.version: str = data["version"]
        self.service: str = data["service"]                 # whose sidecar this is
        self.namespace: str = data["namespace"]
        self.identity: str = data["identity"]               # its SPIFFE ID
        lst = data["listeners"]
        self.listeners = Listeners(*((lst[k]["host"], lst[k]["port"]) for k in ("inbound", "outbound", "admin")))
        app = data["app"]
        self.app = App(app["host"], app["port"], app["discovery"], app["cluster"], limits(app["limits"]),
                       Upstream(**app["upstream"]))
        self.escaped_slashes: str = data["normalization"]["escaped_slashes"]
        self.proxy = ProxySettings(**data["proxy"])
        mtls = data["mtls"]
        self.mtls_mode: str = mtls["mode"]                  # what the inbound listener accepts
        self.identity_files = IdentityFiles(**mtls["files"]) if mtls.get("files") else None
        self.authorization = authorization                  # enforced on the inbound listener
        self.tracing = compile_tracing(data.get("tracing"))  # None: the sidecar does not trace
        self.services = services                            # name -> CService
        self.hosts: dict[str, CService] = {}                # lower-cased exact domain -> CService
        suffixes: list[tuple[str, CService]] = []
        prefixes: list[tuple[str, CService]] = []
        star: CService | None = None
        for svc in services.values():
            for d in svc.domains:
                d = ascii_lower(d)
                if d == "*":
                    star = star or svc
                elif d.startswith("*"):
                    suffixes.append((d[1:], svc))
                elif d.endswith("*"):
                    prefixes.append((d[:-1], svc))
                else:
                    self.hosts.setdefault(d, svc)
        # The wildcard domains, in Envoy's order of selection (longest `*SUFFIX`, longest `PREFIX*`,
        # then `*`); None without any, so a Host that no exact domain holds costs one test more.
        self.wildcards: Wildcards | None = None
        if suffixes or prefixes or star is not None:
            self.wildcards = Wildcards(tuple(sorted(suffixes, key=lambda x: -len(x[0]))),
                                       tuple(sorted(prefixes, key=lambda x: -len(x[0]))), star)
        self.subsets: dict[str, CSubset] = {sub.cluster: sub for svc in services.values()
                                            for sub in svc.subsets.values()}
        # the routes each request can take, by method and first path segment (route_index.py)
        self.index: dict[CService, RouteIndex[CRoute]] = {svc: RouteIndex(svc) for svc in services.values()}

    def service_for_host(self, host: str) -> CService | None:
        """The destination whose domains hold `host` (case-insensitive; a port in Host must match
        a domain with that port, as Envoy matches virtual hosts)."""
        svc = self.hosts.get(host)
        if svc is None:
            lowered = ascii_lower(host)
            svc = self.hosts.get(lowered)
            if svc is None and self.wildcards is not None:
                return self.wildcards.lookup(lowered)
        return svc


class Wildcards:
    """Envoy 1.40's virtual host selection after the exact domains: the longest `*SUFFIX`, then
    the longest `PREFIX*` (a wildcard never matches by its empty part alone), then `*`."""
    __slots__ = ("suffixes", "prefixes", "star")

    def __init__(self, suffixes: tuple[tuple[str, CService], ...], prefixes: tuple[tuple[str, CService], ...],
                 star: CService | None) -> None:
        self.suffixes, self.prefixes, self.star = suffixes, prefixes, star

    def lookup(self, host: str) -> CService | None:
        """The destination of a lower-cased Host that no exact domain holds."""
        for suffix, svc in self.suffixes:
            if len(host) > len(suffix) and host.endswith(suffix):
                return svc
        for prefix, svc in self.prefixes:
            if len(host) > len(prefix) and host.startswith(prefix):
                return svc
        return self.star


# ---- compilation ----------------------------------------------------------------------------

def compile_match(m: dict[str, Any]) -> CMatch:
    path = m.get("path")
    methods = m.get("methods")
    return CMatch(
        path_test(path["kind"], path["value"], path.get("ignore_case", False)) if path else None,
        tuple(header_test(h["name"].lower(), h["kind"], h.get("value"), h.get("invert", False),
                          h.get("ignore_case", False)) for h in m.get("headers") or ()),
        tuple(query_test(q["name"], q["kind"], q.get("value")) for q in m.get("query") or ()),
        frozenset(methods) if methods is not None else None,
        m,
    )


def _arm_changes(hc: dict[str, Any] | None) -> CHeaderChanges | None:
    """A split arm's header changes, or None when it has none (nothing to do per request)."""
    changes = CHeaderChanges(hc) if hc else None
    return changes if changes is not None and not changes.empty else None


def compile_config(data: dict[str, Any]) -> Table:
    """Compile a validated config's JSON data into a `Table`. Raises TableError for an invalid regex
    or a destination that names no service or subset of the config."""
    services = {s["name"]: CService(s) for s in data["services"]}

    def resolve(service: str, subset: str, where_: str) -> tuple[CService, CSubset]:
        svc = services.get(service)
        sub = svc.subsets.get(subset) if svc is not None else None
        if svc is None or sub is None:
            raise TableError(f"{where_}: no subset `{subset}` of service `{service}` in the config")
        return svc, sub

    for s in data["services"]:
        routes: list[CRoute] = []
        for r in s["routes"]:
            source = where(r.get("source"))
            at = f"route `{r['name']}` of service `{s['name']}` ({source})"
            # a match for other callers (`callers`) is not this sidecar's: the compiler leaves such
            # matches out of a sidecar's config, and a hand-written one is read the same way
            written = [m for m in r["matches"] if m.get("callers") is None or data["service"] in m["callers"]]
            if not written and r["matches"]:
                continue
            try:
                matches = tuple(compile_match(m) for m in written)
            except TableError as err:
                raise TableError(f"{at}: {err}") from None
            to = CSubsetRef(*resolve(r["to"]["service"], r["to"]["subset"], at)) if r.get("to") else None
            split = None
            if r.get("split") is not None:
                targets = tuple(CWeightedSubset(*resolve(t["service"], t["subset"], at), t["weight"],
                                                _arm_changes(t.get("request_headers")),
                                                _arm_changes(t.get("response_headers")))
                                for t in r["split"]["targets"])
                key = r["split"].get("key_header")
                split = CSplit(targets, key.lower() if key else None)
                if split.total_weight <= 0:
                    raise TableError(f"{at}: split weights total zero")
            answers = r.get("redirect") is not None or r.get("direct_response") is not None
            if answers and (to is not None or split is not None or r.get("mirror") is not None):
                raise TableError(f"{at}: a route that answers itself forwards nothing")
            if not answers and (to is None) == (split is None):
                raise TableError(f"{at}: exactly one of `to` and `split` is needed")
            mirrors = tuple(CMirror(*resolve(m["service"], m["subset"], at), m["percent"], m["timeout_ms"])
                            for m in r.get("mirrors") or ())
            routes.append(compile_answers(CRoute(
                r["name"], source, matches, to, split, r["timeout_ms"],
                CRetry(r["retry"]) if r.get("retry") is not None else None,
                CFault(r["fault"]) if r.get("fault") is not None else None,
                mirrors, CHeaderChanges(r.get("request_headers")), CHeaderChanges(r.get("response_headers")),
                CCors(r["cors"], re2_fullmatcher) if r.get("cors") is not None else None), r))
        services[s["name"]].routes = tuple(routes)
    try:
        authorization = CAuthorization(data["authorization"])
    except TableError as err:
        raise TableError(f"authorization of `{data['service']}`: {err}") from None
    return Table(data, services, authorization)
