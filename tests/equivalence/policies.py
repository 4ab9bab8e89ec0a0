"""Hypothesis strategies for the equivalence suite: whole policies as `.mesh` text, and requests
aimed at them.

A generated policy is one program around the sidecar of service `client` (the data plane under
test): destination services `s0`, `s1`, ... with subsets, each subset on its own upstream
endpoint, ordered routes with every kind of match, `to` and `split` (with and without a key
header), timeouts, retries, faults at 0 % or 100 %, mirrors and header changes, and
`authorization client` with allow/deny rules and a default, whose rules may name callers (`from
identity`, exact and `/*` prefix, `from namespace`, `from service`, `from same_namespace`). The
sidecar's inbound listener runs mutual TLS in mode `permissive` (mostly), `strict` or `disable`
(set on the service or mesh-wide); the destinations stay `mtls disable` (their upstreams are
plain test servers). Ports are placeholders
(`@INBOUND@`, `@OUTBOUND@`, `@ADMIN@`, `@APP@`, `@EP0@`, `@EP1@`, ...) that `GenPolicy.render`
fills in, so one policy runs in front of any set of loopback servers.

Requests are built from the policy's own material: its path prefixes and regex alphabets, its
header and query names and values, its split keys; then dot segments, doubled slashes, escaped
slashes, case changes (of the whole path or of one letter, against path conditions with and
without `ignore_case`), `;params` and double encodings are mixed in, headers are dropped or
repeated, and methods vary.
Outbound requests go to a destination service (Host selects it); inbound requests go to the
sidecar's own inbound listener and meet `authorization client`, each from one of a fixed set of
callers (`CALLERS`: SPIFFE IDs in and out of the namespaces and the trust domain the rules name,
each presenting a certificate of the session's mesh CA over mTLS) or from a plaintext caller
without identity (`caller` None).

Sometimes s0 has a twin: a second `service s0` in namespace `shop` (the sidecar's own) or `other`
(docs/language.md §5.1, "One name in several namespaces"). Both are then named `NAMESPACE/s0`
(`default/s0`, `shop/s0`) in the program's references, its routes' names and the planes; requests
address them by every Host form, so that `s0` and `s0:8080` are proved to name the service of the
sidecar's own namespace (the twin in `shop`) or none (a twin in `other`: neither is in `shop`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SIDECAR = "client"


@dataclass(frozen=True)
class Endpoint:
    """The upstream server of one subset: placeholder `@EP{index}@`."""
    index: int
    service: str
    subset: str

    @property
    def label(self) -> str:
        return f"{self.service}.{self.subset}"


@dataclass(frozen=True)
class Fail:
    """What the upstream does to the first `first` attempts of a request (the rest get 200):
    `mode` "status" answers `status`, "reset" closes the connection without an answer, "delay"
    waits `delay_ms` and then answers `status`."""
    mode: str
    first: int
    status: int = 503
    delay_ms: int = 0


@dataclass(frozen=True)
class GenRequest:
    kind: str                                   # "outbound" (Host picks a service) or "inbound"
    method: str
    target: str                                 # the raw request target: path and optional ?query
    host: str                                   # the Host header
    headers: tuple[tuple[str, str], ...] = ()   # in order; a name may repeat; never `host`
    fail: Fail | None = None                    # upstream behaviour (live layer only)
    caller: str | None = None                   # inbound: the SPIFFE ID of the client certificate
                                                # presented over mTLS; None: plaintext, no identity

    def describe(self) -> str:
        lines = [f"{self.kind}: {self.method} {self.target}  Host: {self.host}"]
        if self.kind == "inbound":
            lines[0] += f"  from {self.caller}" if self.caller else "  (plaintext, no identity)"
        lines += [f"  {n}: {v}" for n, v in self.headers]
        if self.fail:
            lines.append(f"  upstream fails: {self.fail}")
        return "\n".join(lines)


@dataclass(frozen=True)
class GenPolicy:
    text: str                                   # .mesh source with port placeholders
    endpoints: tuple[Endpoint, ...]
    services: tuple[str, ...]                   # destination services, in declaration order
    # material for requests: path pieces, header names and values, query names and values
    paths: tuple[str, ...] = ()
    header_names: tuple[str, ...] = ()
    header_values: tuple[str, ...] = ()
    query_names: tuple[str, ...] = ()
    query_values: tuple[str, ...] = ()
    split_keys: tuple[str, ...] = ()
    has_timeouts: bool = False
    mtls: str = "disable"                       # mode of the sidecar's inbound listener
    out_of_scope: tuple[str, ...] = ()          # destinations whose authorization cannot admit `client`
                                                # (compiler/ir/scope.py): a request addressed to one gets
                                                # what an unknown Host gets, in every layer
    hosts: tuple[tuple[str, tuple[str, ...]], ...] = ()   # the `hosts` written per destination service
    cluster_domain: str = "cluster.local"
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def destination(self, host: str, scoped: bool = False) -> str | None:
        """The destination service a Host names, as Envoy selects a virtual host (docs/semantics.md,
        "Hosts"), among every destination or (`scoped`) those in the sidecar's scope; None: none."""
        written = dict(self.hosts)
        exact, suffixes, prefixes, star = {}, [], [], None
        for base in ("client", f"client.{CLIENT_NAMESPACE}", f"client.{CLIENT_NAMESPACE}.svc",
                     f"client.{CLIENT_NAMESPACE}.svc.{self.cluster_domain}"):
            exact[base] = exact[f"{base}:8000"] = SIDECAR   # (in its own scope or not: `client` is not judged)
        for svc in self.services:
            if scoped and svc in self.out_of_scope:
                continue
            name, ns = short_name(svc), namespace_of(svc)
            port = SERVICE_PORT[name]
            # a twin's short name only in the sidecar's own namespace (Kubernetes' short names)
            short = (name,) if "/" not in svc or ns == CLIENT_NAMESPACE else ()
            for base in short + (f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.{self.cluster_domain}"):
                exact[base] = exact[f"{base}:{port}"] = svc
            for h in written.get(svc, ()):
                if h == "*":
                    star = svc
                elif h.endswith(".*"):
                    prefixes.append((h[:-1], svc))
                elif h.startswith("*."):
                    suffixes += [(h[1:], svc), (f"{h[1:]}:{port}", svc)]
                else:
                    exact[h] = exact[f"{h}:{port}"] = svc
        h = host.lower()
        if h in exact:
            return exact[h]
        for group in (suffixes, prefixes):
            fits = [(len(w), svc) for w, svc in group
                    if len(h) > len(w) and (h.endswith(w) if group is suffixes else h.startswith(w))]
            if fits:
                return max(fits)[1]
        return star

    def render(self, ports: dict[str, int]) -> str:
        """The text with every placeholder replaced: `ports` maps INBOUND, OUTBOUND, ADMIN, APP,
        OTLP (the span sink) and EP0, EP1, ... to port numbers."""
        text = self.text
        for key, value in ports.items():
            text = text.replace(f"@{key}@", str(value))
        return text

    def dummy_ports(self) -> dict[str, int]:
        """Fixed ports for compiling without servers (the model layer)."""
        ports = {"INBOUND": 15006, "OUTBOUND": 15001, "ADMIN": 15000, "APP": 18000, "OTLP": 4318}
        for ep in self.endpoints:
            ports[f"EP{ep.index}"] = 19000 + ep.index
        return ports


# ---- strategies ---------------------------------------------------------------------------------

import json  # noqa: E402  (kept below the dataclasses, which the rest of the suite imports)


def short_name(service: str) -> str:
    """`s0` of `default/s0` (a twin's key) or of `s0`."""
    return service.rpartition("/")[2]


def namespace_of(service: str) -> str:
    """The namespace of a destination: its key's, else `default`."""
    return service.partition("/")[0] if "/" in service else "default"


def is_s0(service: str) -> bool:
    """Whether `service` is the destination the focus uses: `s0`, or `default/s0` when it has a twin."""
    return service in ("s0", "default/s0")


from hypothesis import strategies as st  # noqa: E402

SERVICE_PORT = {"s0": 8080, "s1": 8081, "s2": 8082}
# the hosts a destination may be given (`hosts`): each claimed by one service, overlapping as
# wildcards do (an exact name inside another's wildcard, a longer suffix, a suffix and a prefix
# taking one Host), and the catch-all
HOSTS = {"s0": (("api.example.com", "*.example.com"), ("*.example.com", "s0.*"), ("api.example.com",)),
         "s1": (("*.b.example.com", "www.b.example.com"), ("*.b.example.com", "shop.*"), ("shop.*",)),
         "s2": ((), ("*",), ("*", "*.example.org"), ("www.example.com", "*"))}
# the Hosts requests carry besides a service's own names: each rule of the selection
REQUEST_HOSTS = ("api.example.com", "API.Example.com:8080", "x.example.com", "x.example.com:8080",
                 "x.example.com:1", "x.b.example.com", "x.b.example.com", "b.example.com", "www.b.example.com",
                 "www.example.com", "shop.eu", "shop.example.com", "s0.x:1", "a.example.org", "nowhere")
SUBSETS = ("a", "b", "c")
SEGMENTS = ("api", "v1", "users", "a", "b", "x.y", "Admin")
REGEXES = ("/api/[0-9]+", "/(a|b)/.*", "/v[0-9]/[a-z]+", "/users/[^/]+", "(?i)/admin.*", "/a|/b", "/x\\.y")
REGEX_SAMPLES = ("/api/42", "/a/", "/b/x", "/v1/abc", "/users/u1", "/ADMIN/x", "/a", "/x.y", "/xzy")
MATCH_HEADERS = ("x-h0", "x-h1", "x-h2", "accept")   # `accept`: one of Envoy's inline headers
VALUES = ("", "a", "A", "ab", "aB", "1", "a,b", "v 1", "ü")
SPLIT_HEADER = "x-k"
SPLIT_KEYS = ("0", "29", "30", "99", "100", "129", "+5", "0029", "-1", "abc", " 7 ", "1e2", "0x10",
              "18446744073709551615", "18446744073709551616", "")
QUERY_NAMES = ("q", "v")
QUERY_VALUES = ("1", "2", "x", "a%20b", "")
SET_HEADERS = ("x-h0", "x-h1", "x-set", "x-add", "x-k", "accept")
SET_VALUES = ("v", "100%", "two words", "", "é", "a,b", "%%")
RESPONSE_HEADERS = ("x-r0", "x-r1", "cache-control", "x-backend", "content-type", "access-control-allow-origin")
# CORS (language §13a): the origins a `cors` block allows and those requests come from (some match
# none); a route sets `access-control-allow-origin` itself sometimes (RESPONSE_HEADERS), which
# the CORS filter then overwrites in place
CORS_ORIGINS = ("https://app.example", "https://app.example:8443", "http://localhost:3000", "https://evil.example",
                "https://app.example.evil", "null")
METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")
FAULT_STATUSES = (418, 429, 500, 503)
RETRY_ON = ("5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "409", "503", "500")

# Identities. The sidecar under test is `client` in namespace `shop`; destinations stay in
# `default`, and s2 has an explicit identity outside the namespace pattern (language §5.2).
TRUST_DOMAIN = "mesh.local"
CLIENT_NAMESPACE = "shop"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/{CLIENT_NAMESPACE}/sa/{SIDECAR}"
S2_ID = f"spiffe://{TRUST_DOMAIN}/legacy/s2"
# The callers of inbound requests: each one certificate of the session CA with this URI SAN.
CALLERS = (
    f"spiffe://{TRUST_DOMAIN}/ns/default/sa/s0",      # service s0
    CLIENT_ID,                                        # the sidecar's own identity (`from service client`)
    f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/web",        # the same namespace, no service of the program
    S2_ID,                                            # service s2 (an explicit identity)
    f"spiffe://{TRUST_DOMAIN}/ns/shopping/sa/x",      # `ns/shop` is a string prefix of its namespace
    "spiffe://evil.local/ns/shop/sa/client",          # another trust domain, signed by the mesh CA
)
RULE_IDENTITIES = CALLERS + (f"spiffe://{TRUST_DOMAIN}/ns/default/sa/s1",)
IDENTITY_PREFIXES = (f"spiffe://{TRUST_DOMAIN}/ns/shop/*", f"spiffe://{TRUST_DOMAIN}/ns/default/*",
                     f"spiffe://{TRUST_DOMAIN}/*", "spiffe://evil.local/*", f"spiffe://{TRUST_DOMAIN}/legacy/*",
                     f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/*")
NAMESPACES = ("shop", "default", "other", "shopping")
# where s0's twin is declared, when it has one: none mostly, the sidecar's namespace, another one
TWIN_NAMESPACES = (None, None, None, "shop", "other")
XFCC = "x-forwarded-client-cert"
FORGED_XFCC = f"By={CLIENT_ID};URI=spiffe://{TRUST_DOMAIN}/ns/shop/sa/forged"
MTLS_MODES = ("permissive", "permissive", "permissive", "strict", "strict", "disable")


def q(text: str) -> str:
    """A .mesh string literal (JSON escapes are the language's escapes for these values)."""
    return json.dumps(text, ensure_ascii=False)


# Authorization conditions on the XFCC header: what the sidecar sets over mTLS, before the rules
XFCC_CONDITIONS = (f"header {q(XFCC)} present", f"header {q(XFCC)} absent", f"not header {q(XFCC)} present",
                   f"header {q(XFCC)} prefix {q('By=' + CLIENT_ID + ';')}",
                   f"header {q(XFCC)} regex {q('.*;URI=spiffe://mesh[.]local/ns/shop/.*')}",
                   f"header {q(XFCC)} suffix {q('URI=spiffe://mesh.local/ns/shop/sa/forged')}")


_paths = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=2).map(lambda segs: "/" + "/".join(segs))


@st.composite
def path_conditions(draw) -> tuple[str, str]:
    """(condition text, a path that it is about)."""
    kind = draw(st.sampled_from(("exact", "prefix", "prefix", "raw_prefix", "regex")))
    if kind == "regex":
        value = draw(st.sampled_from(REGEXES))
        return f"path regex {q(value)}", draw(st.sampled_from(REGEX_SAMPLES))
    value = draw(_paths)
    if kind == "prefix" and draw(st.booleans()) and draw(st.booleans()):
        value += "/"
    if kind == "raw_prefix" and len(value) > 2 and draw(st.booleans()):
        value = value[:-1]
    ic = " ignore_case" if draw(st.integers(0, 2)) == 0 else ""
    return f"path {kind} {q(value)}{ic}", value


@st.composite
def header_conditions(draw, names=MATCH_HEADERS) -> str:
    name = draw(st.sampled_from(names))
    kind = draw(st.sampled_from(("exact", "exact", "prefix", "suffix", "regex", "present", "absent")))
    neg = "not " if draw(st.integers(0, 4)) == 0 else ""
    if kind in ("present", "absent"):
        return f"{neg}header {q(name)} {kind}"
    if kind == "regex":
        value = draw(st.sampled_from(("a.*", "[0-9]+", "(?i)ab", "a|b", "", ".*,.*")))
        return f"{neg}header {q(name)} regex {q(value)}"
    value = draw(st.sampled_from(VALUES))
    ic = " ignore_case" if draw(st.integers(0, 3)) == 0 else ""
    return f"{neg}header {q(name)} {kind} {q(value)}{ic}"


@st.composite
def query_conditions(draw) -> str:
    name = draw(st.sampled_from(QUERY_NAMES))
    kind = draw(st.sampled_from(("exact", "exact", "regex", "present")))
    if kind == "present":
        return f"query {q(name)} present"
    if kind == "regex":
        return f"query {q(name)} regex {q(draw(st.sampled_from(('[0-9]+', 'x|y', 'a%20b'))))}"
    return f"query {q(name)} exact {q(draw(st.sampled_from(QUERY_VALUES)))}"


@st.composite
def method_conditions(draw) -> str:
    methods = draw(st.lists(st.sampled_from(METHODS), min_size=1, max_size=3, unique=True))
    return f"method {methods[0]}" if len(methods) == 1 else f"method [{', '.join(methods)}]"


def _one_or_list(values: list[str]) -> str:
    return values[0] if len(values) == 1 else "[" + ", ".join(values) + "]"


@st.composite
def from_conditions(draw, services) -> str:
    """A `from` condition: identities (exact or `/*` prefix), namespaces, services or the
    sidecar's own namespace, one or a list."""
    kind = draw(st.sampled_from(("identity", "identity", "namespace", "service", "service", "same_namespace")))
    if kind == "same_namespace":
        return "from same_namespace"
    if kind == "identity":
        pool = st.sampled_from(RULE_IDENTITIES) if draw(st.booleans()) else st.sampled_from(IDENTITY_PREFIXES)
        values = draw(st.lists(pool, min_size=1, max_size=1)) if draw(st.integers(0, 2)) else \
            draw(st.lists(st.one_of(st.sampled_from(RULE_IDENTITIES), st.sampled_from(IDENTITY_PREFIXES)),
                          min_size=2, max_size=3, unique=True))
        return "from identity " + _one_or_list([q(v) for v in values])
    if kind == "namespace":
        values = draw(st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=2, unique=True))
        return "from namespace " + _one_or_list([q(v) for v in values])
    values = draw(st.lists(st.sampled_from(tuple(services) + (SIDECAR,)), min_size=1, max_size=2, unique=True))
    return "from service " + _one_or_list(values)


@st.composite
def match_blocks(draw, paths: list) -> str:
    conds = []
    if draw(st.integers(0, 3)) > 0:
        text, sample = draw(path_conditions())
        conds.append(text)
        paths.append(sample)
    conds += draw(st.lists(header_conditions(), max_size=2))
    if draw(st.integers(0, 3)) == 0:
        conds.append(draw(query_conditions()))
    if draw(st.integers(0, 2)) == 0:
        conds.append(draw(method_conditions()))
    return "match { " + "  ".join(conds) + " }"


@st.composite
def header_changes(draw, names) -> str:
    """A request_headers/response_headers body: no name both removed and set/added, no name set
    twice (E0313)."""
    ops = []
    used: dict[str, set] = {}
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names))
        op = draw(st.sampled_from(("remove", "set", "add", "add")))
        seen = used.setdefault(name, set())
        if "remove" in seen or (op == "remove" and seen) or (op == "set" and "set" in seen):
            continue
        seen.add(op)
        ops.append(f"remove {q(name)}" if op == "remove" else f"{op} {q(name)} {q(draw(st.sampled_from(SET_VALUES)))}")
    return "{ " + "  ".join(ops) + " }" if ops else ""


@st.composite
def cors_blocks(draw) -> str:
    """A route's `cors { … }`: exact, prefix and regex origins (sometimes one that allows every
    origin, never then with `credentials`: E0341), some of the lists, a max age, credentials."""
    kinds = draw(st.lists(st.sampled_from(("exact", "exact2", "prefix", "regex", "any", "anyregex")),
                          min_size=1, max_size=3, unique=True))
    text = {"exact": 'exact "https://app.example"', "exact2": 'exact "http://localhost:3000"',
            "prefix": 'prefix "https://app.example:"', "regex": 'regex "https://[a-z]+\\\\.example"',
            "any": 'exact "*"', "anyregex": 'regex ".*"'}
    parts = ["origins [" + ", ".join(text[k] for k in kinds) + "]"]
    if draw(st.booleans()):
        parts.append("methods " + draw(st.sampled_from(("[GET]", "[GET, POST, PUT]", "[DELETE, PATCH]"))))
    if draw(st.booleans()):
        parts.append("headers " + draw(st.sampled_from(('["x-h0"]', '["x-h0", "content-type"]', '["*"]'))))
    if draw(st.booleans()):
        parts.append("expose " + draw(st.sampled_from(('["x-backend"]', '["x-r0", "x-r1"]'))))
    if draw(st.booleans()):
        parts.append("max_age " + draw(st.sampled_from(("10s", "1h"))))
    if not {"any", "anyregex"} & set(kinds) and draw(st.booleans()):
        parts.append("credentials")
    return "cors { " + "  ".join(parts) + " }"


@st.composite
def retries(draw, has_per_try_room: bool) -> str:
    parts = [f"attempts {draw(st.integers(0, 3))}"]
    on = draw(st.lists(st.sampled_from(RETRY_ON), min_size=1, max_size=3, unique=True))
    parts.append(f"on [{', '.join(on)}]")
    if has_per_try_room and draw(st.integers(0, 2)) == 0:
        parts.append("per_try_timeout 100ms")
    if draw(st.integers(0, 5)) > 0:
        parts.append("backoff 1ms max 2ms")
    parts.append("allow_non_idempotent")
    return "retry { " + "  ".join(parts) + " }"


# `from` conditions that `client` (CLIENT_ID, namespace shop, trust domain mesh.local) satisfies,
# and some that it does not (the `ns/shop` string prefix of `ns/shopping` among them)
ADMIT_CLIENT = ("from service client", f"from identity {q(CLIENT_ID)}",
                f"from identity {q(f'spiffe://{TRUST_DOMAIN}/ns/shop/*')}", f"from identity {q(f'spiffe://{TRUST_DOMAIN}/*')}",
                'from namespace "shop"', 'from namespace ["other", "shop"]', "")
REFUSE_CLIENT = ("from service s0", f"from identity [{q(S2_ID)}, {q(CALLERS[0])}]", 'from namespace "default"',
                 'from namespace "shopping"',
                 f"from identity {q(f'spiffe://{TRUST_DOMAIN}/ns/shopping/*')}",
                 f"from identity {q('spiffe://evil.local/ns/shop/sa/client')}", "from same_namespace")
OTHER_CONDITIONS = ("", 'path prefix "/api"', "method [GET, HEAD]", 'header "x-h0" present')


def client_conditions(namespace: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The `from` conditions of an allow rule of a destination of `namespace` that admit `client`,
    and those that refuse it ("": no `from`, which admits everyone)."""
    if namespace == CLIENT_NAMESPACE:
        return (ADMIT_CLIENT + ("from same_namespace",),
                tuple(c for c in REFUSE_CLIENT if c != "from same_namespace"))
    return ADMIT_CLIENT, REFUSE_CLIENT


@st.composite
def destination_authorizations(draw, namespace: str = "default") -> tuple[str, bool] | None:
    """None (most often), or the body of an `authorization` block for a destination of `namespace`
    and whether it can admit `client` (compiler/ir/scope.py, derived here from what is drawn):
    `default allow` with or without deny rules (a deny never removes a destination from the
    scope), or `default deny` with allow rules of which at least one admits `client` (whatever its
    other conditions) or none does (out of scope). `from same_namespace` admits `client` on a
    destination of its own namespace (`shop/s0`, a twin) and refuses it anywhere else."""
    kind = draw(st.sampled_from(("none", "none", "none", "open", "admit", "refuse", "refuse")))
    if kind == "none":
        return None
    admit, refuse = client_conditions(namespace)
    rules = []
    if kind == "open" or draw(st.booleans()):
        rules.append(f"  deny d {{ {draw(st.sampled_from(ADMIT_CLIENT[:-1] + REFUSE_CLIENT))}"
                     f"  {draw(st.sampled_from(OTHER_CONDITIONS))} }}")
    refusals = draw(st.lists(st.sampled_from(refuse), max_size=2, unique=True))
    admitting = [draw(st.sampled_from(admit))] if kind == "admit" else []
    for i, cond in enumerate(refusals + admitting):
        other = draw(st.sampled_from(OTHER_CONDITIONS))
        if not cond and not other:
            other = 'method GET'
        rules.append(f"  allow a{i} {{ {cond}  {other} }}")
    default = "allow" if kind == "open" else "deny"
    return f"  default {default}\n" + "\n".join(rules), kind != "refuse"


def answered_as_unknown(policy: GenPolicy, host: str, like: str | None = None) -> bool:
    """Whether `host` names a destination out of the sidecar's scope (compiler/ir/scope.py) and the
    sidecar then answers it as it answers the Host `like` (None: as a Host no service of the scope
    takes, 404): no wildcard or catch-all of the scope takes it differently."""
    if policy.destination(host) not in policy.out_of_scope:
        return False
    scoped = policy.destination(host, scoped=True)
    return scoped is None if like is None else scoped == policy.destination(like, scoped=True)


# Outlier detection on a destination: every subset has one endpoint, so an ejection leaves none in
# service and Envoy's panic threshold balances over it anyway; what both planes must agree on is
# that the upstream failures and the mirrored copies (language §12) are counted, and that the
# requests still reach their subset.
OUTLIER = "  outlier { consecutive_5xx 1  interval 1s  ejection 30s  max_ejected 100% }"


@st.composite
def policies(draw, focus: frozenset[str] = frozenset()) -> GenPolicy:
    """A whole program around the sidecar of `client` (see the module docstring). `focus`: names
    of tests/equivalence/features.py whose steps the policy must hold where a focused request
    (`focused_requests`) reaches them together (`FOCUS_RECIPES`)."""
    n_services = draw(st.integers(1, 3))
    services = [f"s{i}" for i in range(n_services)]
    twin = draw(st.sampled_from(TWIN_NAMESPACES))
    if twin is None and "namespace.twin" in focus:
        twin = "other"
    if twin is not None:   # s0 in two namespaces: both named NAMESPACE/s0 (language §5.1)
        services[:1] = ["default/s0", f"{twin}/s0"]
    # a reference to a twin inside a block of its own namespace written short (resolved there)
    short_refs = draw(st.booleans())
    endpoints: list[Endpoint] = []
    subsets: dict[str, list[str]] = {}
    lines = []
    escaped = draw(st.sampled_from(("reject", "decode", "keep")))
    mtls = draw(st.sampled_from(MTLS_MODES))
    mesh_wide = draw(st.booleans())        # the mode from the mesh block, or the service's own
    # tracing, its spans to the session's sink (@OTLP@); a fractional sampling draws from the
    # request id, so the requests of such a policy always carry one (`requests`)
    tracing = draw(st.sampled_from((None, None, None, "0%", "100%", "37.5%")))
    cluster_domain = draw(st.sampled_from(("cluster.local", "cluster.local", "corp.internal")))
    hosts: list[tuple[str, tuple[str, ...]]] = []
    with_hosts = draw(st.booleans())
    escaped, mtls, tracing = focus_sidecar(focus, escaped, mtls, tracing)
    lines.append(f'mesh {{\n  trust_domain "{TRUST_DOMAIN}"\n' + (f"  mtls {mtls}\n" if mesh_wide else "")
                 + ("" if cluster_domain == "cluster.local" else f"  cluster_domain {q(cluster_domain)}\n")
                 + (f'  tracing {{ sampling {tracing}  otlp "http://127.0.0.1:@OTLP@/v1/traces" }}\n'
                    if tracing else "") + "}\n")
    own_mode = "" if mesh_wide else f"  mtls {mtls}\n"
    # the sidecar's limits on its clients, generous enough that no generated request meets them
    # (the scenarios reach each one: tests/test_equivalence_scenarios.py, section 9)
    limits = draw(st.none() | st.tuples(st.integers(64, 200), st.integers(16, 96), st.sampled_from(("5s", "30s")),
                                        st.sampled_from(("1m", "1h")), st.sampled_from(("1m", "10m")),
                                        st.integers(64, 4096)))
    limit_text = "" if limits is None else (
        "  max_request_headers {}  max_request_headers_kb {}  request_headers_timeout {}  idle_timeout {}"
        "  stream_idle_timeout {}  max_connections {}".format(*limits))
    lines.append(
        f'service client {{\n  port 8000\n  namespace "{CLIENT_NAMESPACE}"\n{own_mode}  endpoints ["127.0.0.1:@APP@"]\n'
        f'  sidecar {{ inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@"'
        f"  escaped_slashes {escaped}{limit_text} }}\n}}\n")
    for svc in services:
        names = list(SUBSETS[:draw(st.integers(1, 3))])
        subsets[svc] = names
        body = [f"  port {SERVICE_PORT[short_name(svc)]}"]
        if "/" in svc:
            body.append(f"  namespace {q(namespace_of(svc))}")
        if svc == "s2":
            body.append(f"  identity {q(S2_ID)}")
        if mesh_wide:
            body.append("  mtls disable")      # plain upstreams: the sidecar calls them in plaintext
        for name in names:
            ep = Endpoint(len(endpoints), svc, name)
            endpoints.append(ep)
            # sometimes a workload with its own sidecar (language §5.9): callers see the same subset
            own = "  sidecar { ports 40000 }" if draw(st.integers(0, 3)) == 0 else ""
            body.append(f'  subset {name} {{ endpoints ["127.0.0.1:@EP{ep.index}@"]{own} }}')
        if draw(st.booleans()) or (is_s0(svc) and "retry_budget" in focus):
            body.append("  retry_budget { percent 20%  min_concurrency 3 }")
        written = draw(st.sampled_from(HOSTS[short_name(svc)])) if with_hosts and svc != f"{twin}/s0" else ()
        if written:
            body.append("  hosts [" + ", ".join(q(h) for h in written) + "]")
            hosts.append((svc, written))
        if is_s0(svc):
            body += focus_service(focus)
        if draw(st.integers(0, 3)) == 0 and not any(line.lstrip().startswith("outlier") for line in body):
            body.append(OUTLIER)
        lines.append(f"service {short_name(svc)} {{\n" + "\n".join(body) + "\n}\n")
    destinations = [f"{svc}.{sub}" for svc in services for sub in subsets[svc]]

    def ref(target: str, block: str) -> str:
        """How a route of `routes block` writes the destination `target` (SERVICE.SUBSET)."""
        if short_refs and "/" in target and namespace_of(target) == namespace_of(block):
            return target.partition("/")[2]
        return target

    paths: list[str] = []
    has_timeouts = False
    meta_routes = {}
    foreign_routes: list[str] = []
    outbound_focus = any(FOCUS_SIDE.get(f) in ("outbound", "both") for f in focus)
    for svc in services:
        focused = is_s0(svc) and outbound_focus
        if len(subsets[svc]) == 1 and draw(st.integers(0, 3)) == 0 and not focused:
            continue   # the implicit route (language §5.8)
        routes = [focus_route(focus, destinations)] if focused else []
        for r in range(draw(st.integers(1, 4))):
            body = [draw(match_blocks(paths)) for _ in range(draw(st.integers(0, 2)))]
            # caller conditions (`caller`): for the sidecar under test, for others, for both
            callers_of = []
            for i, block in enumerate(body):
                if draw(st.integers(0, 3)) == 0:
                    named = draw(st.lists(st.sampled_from([SIDECAR, *services]), min_size=1, max_size=2, unique=True))
                    body[i] = block.replace("match { ", "match { caller " + (
                        named[0] if len(named) == 1 else "[" + ", ".join(named) + "]") + "  ", 1)
                    callers_of.append(named)
                else:
                    callers_of.append(None)
            if body and all(c is not None and SIDECAR not in c for c in callers_of):
                foreign_routes.append(f"{svc}/r{r}")   # in other callers' sidecars only
            kind = draw(st.sampled_from(ANSWER_KINDS))
            if kind != "none":   # a redirect, a direct response or a rewrite (docs/language.md §8.1-§8.3)
                body, answers = draw(answer_or_rewrite(kind, body, paths))
                if f"{svc}/r{r}" in foreign_routes and not all("caller " in b for b in body if b.startswith("match")):
                    foreign_routes.remove(f"{svc}/r{r}")   # (a prefix replacement's own match has no caller)
                if answers:
                    routes.append(f"  route r{r} {{\n    " + "\n    ".join(body) + "\n  }")
                    meta_routes[f"{svc}/r{r}"] = {"answer": kind}
                    continue
            if draw(st.integers(0, 2)) == 0:
                chosen = draw(st.lists(st.sampled_from(destinations), min_size=1, max_size=3, unique=True))
                weights = [draw(st.sampled_from((0, 1, 30, 70, 100))) for _ in chosen]
                if sum(weights) == 0:
                    weights[0] = 1
                arms = []
                for d, w in zip(chosen, weights):
                    arm = f"{ref(d, svc)} {w}"
                    # a destination's own header changes, before the route's (language §8)
                    if draw(st.integers(0, 3)) == 0 and (changes := draw(header_changes(SET_HEADERS))):
                        arm += " request_headers " + changes
                    if draw(st.integers(0, 3)) == 0 and (changes := draw(header_changes(RESPONSE_HEADERS))):
                        arm += " response_headers " + changes
                    arms.append(arm)
                split = "  ".join(arms)
                by = f" by header {q(SPLIT_HEADER)}" if draw(st.integers(0, 3)) > 0 else ""
                body.append(f"split {{ {split} }}{by}")
                meta_routes[f"{svc}/r{r}"] = {"split": list(zip(chosen, weights)), "key": bool(by)}
            else:
                body.append(f"to {ref(draw(st.sampled_from(destinations)), svc)}")
            timeout = draw(st.sampled_from(("", "", "timeout 250ms", "timeout 3s", "timeout none")))
            if timeout:
                body.append(timeout)
                has_timeouts = has_timeouts or timeout == "timeout 250ms"
            if draw(st.integers(0, 2)) == 0:
                body.append(draw(retries(has_per_try_room=timeout != "timeout 250ms")))
            if draw(st.integers(0, 5)) == 0:
                abort = f"abort {draw(st.sampled_from(FAULT_STATUSES))} {draw(st.sampled_from(('0%', '100%')))}"
                delay = f"delay 5ms {draw(st.sampled_from(('0%', '100%')))}"
                body.append("fault { " + draw(st.sampled_from((abort, delay, abort + "  " + delay))) + " }")
            if draw(st.integers(0, 5)) == 0:
                # one or more mirrors, each with its own share (language §12); their outcomes count
                # toward the mirror subset's outlier detection (OUTLIER, below)
                for target in draw(st.lists(st.sampled_from(destinations), min_size=1, max_size=3, unique=True)):
                    body.append(f"mirror {ref(target, svc)} {draw(st.sampled_from(('0%', '100%')))}")
            if draw(st.integers(0, 3)) == 0:
                changes = draw(header_changes(SET_HEADERS))
                if changes:
                    body.append("request_headers " + changes)
            if draw(st.integers(0, 3)) == 0:
                changes = draw(header_changes(RESPONSE_HEADERS))
                if changes:
                    body.append("response_headers " + changes)
            if draw(st.integers(0, 3)) == 0:
                body.append(draw(cors_blocks()))
            routes.append(f"  route r{r} {{\n    " + "\n    ".join(body) + "\n  }")
        lines.append(f"routes {svc} {{\n" + "\n".join(routes) + "\n}\n")
        if len(subsets[svc]) > 1:
            # a service with several subsets needs a route for each request (E0402 otherwise)
            pass

    out_of_scope = []
    for svc in services:
        block = draw(destination_authorizations(namespace_of(svc)))
        if is_s0(svc) and outbound_focus:
            block = None       # the focused requests go to s0: it stays in the sidecar's scope
        if block is not None:
            text, admits = block
            lines.append(f"authorization {svc} {{\n{text}\n}}\n")
            if not admits:
                out_of_scope.append(svc)

    rules = []
    for i in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(("allow", "deny")))
        conds = []
        if draw(st.integers(0, 5)) < (3 if mtls != "disable" else 1):
            conds.append(draw(from_conditions(services)))
        if draw(st.booleans()):
            text, sample = draw(path_conditions())
            conds.append(text)
            paths.append(sample)
        if draw(st.integers(0, 2)) == 0:
            conds.append(draw(method_conditions()))
        # `not path` / `not method` (Istio's notPaths / notMethods), with the other conditions
        for _ in range(draw(st.integers(0, 4)) // 3):
            text, sample = draw(path_conditions())
            conds.append("not " + text)
            paths.append(sample)
        if draw(st.integers(0, 3)) == 0:
            conds.append("not " + draw(method_conditions()))
        conds += draw(st.lists(header_conditions(), max_size=1))
        if draw(st.integers(0, 7)) == 0:
            conds.append(draw(st.sampled_from(XFCC_CONDITIONS)))
        rules.append(f"  {action} rule{i} {{ {'  '.join(conds)} }}")
    # (the same draws with or without a focus: hypothesis holds a strategy's draws to one shape)
    written = draw(st.booleans()) if not rules else True
    default = draw(st.sampled_from(("allow", "deny"))) if written else "allow"
    authz_focus = focus_authorization(focus)
    if authz_focus is not None:
        lines.append(authz_focus)
    elif written:
        lines.append("authorization client {\n  default " + default + "\n" + "\n".join(rules) + "\n}\n")

    return GenPolicy(
        text="\n".join(lines), endpoints=tuple(endpoints), services=tuple(services), paths=tuple(paths),
        header_names=MATCH_HEADERS, header_values=VALUES, query_names=QUERY_NAMES, query_values=QUERY_VALUES,
        split_keys=SPLIT_KEYS, has_timeouts=has_timeouts, mtls=mtls, out_of_scope=tuple(out_of_scope),
        hosts=tuple(hosts), cluster_domain=cluster_domain,
        meta={"routes": meta_routes, "escaped_slashes": escaped, "tracing": tracing, "focus": focus,
              "foreign_routes": foreign_routes})


# ---- focused policies: features combined on purpose (tests/equivalence/features.py) ---------------

@dataclass(frozen=True)
class Recipe:
    """What a focused policy and its focused requests add so that one request exercises a feature
    (one row per feature of tests/equivalence/features.py; the parts of several features are
    combined into one sidecar, one service `s0`, one route `fx` of s0 first in its routes, one
    `authorization client` and one request per listener)."""
    side: str = "outbound"                  # outbound | inbound | both: which focused request reaches it
    sidecar: tuple[tuple[str, str], ...] = ()   # (escaped|mtls|tracing, value)
    service: tuple[str, ...] = ()           # lines of service s0
    path: str | None = None                 # the path kind of the focus route's matching match
    match: str | None = None                # another condition of that match
    route: tuple[str, ...] = ()             # lines of the focus route
    retry: tuple[str, ...] = ()             # parts of its `retry { }`
    fault: tuple[str, ...] = ()             # parts of its `fault { }`
    split: str | None = None                # keyed | random
    rule: str | None = None                 # authorization: a deny rule with this one condition, which fails
    decide: str | None = None               # authorization: allow | deny | default_allow | default_deny
    caller: str | None = None               # inbound: identity | plaintext
    headers: tuple[tuple[str, str], ...] = ()   # the focused request's headers
    query: str = ""                         # its query
    target: str | None = None               # normalized | escaped: how its path is written
    method: str | None = None               # the focused request's method (GET when None)


FOCUS_PATH = "/fx/v1"
FOCUS_CORS = 'cors { origins [exact "https://app.example"]  methods [GET, PUT]  expose ["x-backend"]  credentials }'
FOCUS_RECIPES: dict[str, Recipe] = {
    "match.path.exact": Recipe(path="exact"),
    "match.path.prefix": Recipe(path="prefix"),
    "match.path.regex": Recipe(path="regex"),
    "match.header": Recipe(match='header "x-f" exact "1"', headers=(("x-f", "1"),)),
    "match.query": Recipe(match='query "f" exact "1"', query="?f=1"),
    "match.method": Recipe(match="method [GET, POST, OPTIONS]"),   # (a CORS preflight is an OPTIONS)
    "namespace.twin": Recipe(),   # s0 gets a twin (`policies`), the focused request goes to `s0.default`
    "split.keyed": Recipe(split="keyed", headers=((SPLIT_HEADER, "7"),)),
    "split.random": Recipe(split="random"),
    "timeout": Recipe(route=("timeout 3s",)),
    "retry": Recipe(retry=("on [5xx]",)),
    "retry.on_status": Recipe(retry=("on [503]",)),
    "retry.per_try_timeout": Recipe(retry=("per_try_timeout 100ms",)),
    "retry.backoff": Recipe(retry=("backoff 1ms max 2ms",)),
    "retry_budget": Recipe(retry=("on [5xx]",), service=("  retry_budget { percent 20%  min_concurrency 3 }",)),
    "fault.delay": Recipe(fault=("delay 5ms 100%",)),
    "fault.abort": Recipe(fault=("abort 418 100%",)),
    "mirror": Recipe(route=("mirror MIRROR 100%",)),
    "request_headers": Recipe(route=('request_headers { set "x-set" "f" }',)),
    "response_headers": Recipe(route=('response_headers { set "x-r0" "f" }',)),
    "cors.preflight": Recipe(route=(FOCUS_CORS,), method="OPTIONS",
                             headers=(("origin", "https://app.example"), ("access-control-request-method", "PUT"))),
    "cors.actual": Recipe(route=(FOCUS_CORS,), headers=(("origin", "https://app.example"),)),
    # generous: no focused request meets them, each is counted by them (scenarios reach them)
    "limits": Recipe(service=("  limits { connections 900  pending 900  requests 900 }",)),
    "outlier": Recipe(service=("  outlier { consecutive_5xx 1000  interval 10s  ejection 30s  max_ejected 10% }",)),
    "path.normalized": Recipe(side="both", target="normalized"),
    "escaped_slashes.decode": Recipe(side="both", sidecar=(("escaped", "decode"),), target="escaped"),
    "escaped_slashes.keep": Recipe(side="both", sidecar=(("escaped", "keep"),), target="escaped"),
    "tracing": Recipe(side="both", sidecar=(("tracing", "100%"),)),
    "authz.allow": Recipe(side="inbound", decide="allow"),
    "authz.deny": Recipe(side="inbound", decide="deny"),
    "authz.default_allow": Recipe(side="inbound", decide="default_allow"),
    "authz.default_deny": Recipe(side="inbound", decide="default_deny"),
    "authz.from": Recipe(side="inbound", rule='from identity "spiffe://nobody.local/x"'),
    "authz.method": Recipe(side="inbound", rule="method [DELETE]"),
    "authz.path": Recipe(side="inbound", rule='path prefix "/fxd"'),
    "authz.header": Recipe(side="inbound", rule='header "x-f" exact "nomatch"'),
    "mtls.strict": Recipe(side="inbound", sidecar=(("mtls", "strict"),)),
    "mtls.permissive": Recipe(side="inbound", sidecar=(("mtls", "permissive"),)),
    "mtls.disable": Recipe(side="inbound", sidecar=(("mtls", "disable"),)),
    "peer.identity": Recipe(side="inbound", caller="identity"),
    "peer.plaintext": Recipe(side="inbound", caller="plaintext"),
}
FOCUS_SIDE = {name: r.side for name, r in FOCUS_RECIPES.items()}


def _recipes(focus: frozenset[str]) -> list[Recipe]:
    return [FOCUS_RECIPES[f] for f in sorted(focus) if f in FOCUS_RECIPES]


def focus_sidecar(focus: frozenset[str], escaped: str, mtls: str, tracing: str | None) -> tuple[str, str, str | None]:
    """The sidecar's `escaped_slashes`, mTLS mode and tracing sampling under `focus`."""
    over = dict(kv for r in _recipes(focus) for kv in r.sidecar)
    callers = {r.caller for r in _recipes(focus)} - {None}
    if "mtls" not in over and callers == {"plaintext"} and mtls == "strict":
        over["mtls"] = "permissive"
    if "mtls" not in over and callers == {"identity"} and mtls == "disable":
        over["mtls"] = "permissive"
    return over.get("escaped", escaped), over.get("mtls", mtls), over.get("tracing", tracing)


def focus_service(focus: frozenset[str]) -> list[str]:
    """Lines service s0 gets under `focus` (a retry budget is added by `policies` itself)."""
    return list(dict.fromkeys(line for r in _recipes(focus) for line in r.service if "retry_budget" not in line))


def focus_route(focus: frozenset[str], destinations: list[str]) -> str:
    """The route `fx`, first in s0's routes: decoy matches (one per path kind of the focus but the
    last, each failing on the path) and then the match the focused request takes, the focus's
    destination and settings."""
    recipes = _recipes(focus)
    kinds = [k for k in ("exact", "regex", "prefix") if any(r.path == k for r in recipes)] or ["prefix"]
    decoy = {"exact": 'path exact "/fxd"', "regex": 'path regex "/fxd.*"', "prefix": 'path prefix "/fxd"'}
    final = {"exact": f"path exact {q(FOCUS_PATH)}", "regex": 'path regex "/fx.*"', "prefix": 'path prefix "/fx"'}
    body = [f"match {{ {decoy[k]} }}" for k in kinds[:-1]]
    body.append("match { " + "  ".join([final[kinds[-1]]] + [r.match for r in recipes if r.match]) + " }")
    splits = {r.split for r in recipes} - {None}
    s0 = [d for d in destinations if d.startswith(("s0.", "default/s0."))]
    if splits:
        arms = (s0 + [d for d in destinations if d not in s0])[:2]
        weights = (30, 70) if len(arms) == 2 else (100,)
        body.append("split { " + "  ".join(f"{d} {w}" for d, w in zip(arms, weights)) + " }"
                    + (f" by header {q(SPLIT_HEADER)}" if "keyed" in splits else ""))
    else:
        body.append(f"to {s0[0]}")
    retry = list(dict.fromkeys(p for r in recipes for p in r.retry))
    if retry:
        on = sorted({v for p in retry if p.startswith("on [") for v in p[4:-1].split(", ")})
        rest = [p for p in retry if not p.startswith("on [")]
        body.append("retry { " + "  ".join(["attempts 2", f"on [{', '.join(on or ['5xx'])}]"] + rest
                                           + ["allow_non_idempotent"]) + " }")
    fault = list(dict.fromkeys(p for r in recipes for p in r.fault))
    if fault:
        body.append("fault { " + "  ".join(fault) + " }")
    body += list(dict.fromkeys(line.replace("MIRROR", destinations[-1]) for r in recipes for line in r.route))
    return "  route fx {\n    " + "\n    ".join(body) + "\n  }"


def focus_authorization(focus: frozenset[str]) -> str | None:
    """`authorization client` under `focus` (None when the focus has nothing of it): deny rules
    that each test one condition kind and fail, then what decides."""
    recipes = _recipes(focus)
    rules = [r.rule for r in recipes if r.rule]
    decides = [r.decide for r in recipes if r.decide]
    if not rules and not decides:
        return None
    decide = decides[0] if decides else "default_allow"
    lines = [f"  deny f{i} {{ {rule} }}" for i, rule in enumerate(rules)]
    if decide == "deny":
        lines.append('  deny hit { path prefix "/fx" }')
    elif decide == "allow":
        lines.append('  allow hit { path prefix "/fx" }')
    default = "allow" if decide == "default_allow" else "deny"
    return "authorization client {\n  default " + default + "\n" + "\n".join(lines) + "\n}\n"


def focused_requests(policy: GenPolicy, live: bool = True) -> list[GenRequest]:
    """The requests that reach the focus of `policy` (none without one): one to s0 when the focus
    has outbound or both-listener features, one to the sidecar's inbound listener when it has
    inbound or both-listener features, from the caller the focus asks for."""
    focus = policy.meta.get("focus") or frozenset()
    recipes = _recipes(focus)
    if not recipes:
        return []
    sides = {r.side for r in recipes}
    path = FOCUS_PATH
    targets = {r.target for r in recipes}
    escaped = {v for r in recipes for k, v in r.sidecar if k == "escaped"}
    if "escaped" in targets:   # normalised to FOCUS_PATH: decoded, or kept in a segment `..` removes
        path = "/fx%2Fv1" if "decode" in escaped else "/x%2Fy/../fx/v1"
    if "normalized" in targets:
        path = "/." + path
    headers = tuple(h for r in recipes for h in r.headers)
    if policy.meta.get("tracing") not in (None, "0%", "100%"):
        headers += (("x-request-id", REQUEST_IDS[0]),)
    out = []
    if sides & {"outbound", "both"} and "inbound" not in sides:
        fail = Fail("status", 1, status=503) if live and any(r.retry for r in recipes) else None
        method = next((r.method for r in recipes if r.method), "GET")
        host = "s0.default" if "default/s0" in policy.services else "s0"   # (a twin's short name may name it)
        out.append(GenRequest("outbound", method, path + "".join(r.query for r in recipes), host, headers, fail))
    if sides & {"inbound", "both"} and "outbound" not in sides:
        wants = {r.caller for r in recipes} - {None}
        if not wants:
            wants = {"plaintext" if policy.mtls == "disable" else "identity"}
        caller = None if "plaintext" in wants else CALLERS[2]
        out.append(GenRequest("inbound", "GET", path, "client", headers, caller=caller))
    return out


# ---- redirects, direct responses, rewrites ----------------------------------------------------------

# a route's kind: mostly a plain forwarded one
ANSWER_KINDS = ("none",) * 6 + ("redirect", "respond", "rewrite", "rewrite")
REWRITE_REGEXES = (("^/([^/]+)/([^/]+)", "/\\2/\\1"), ("[0-9]", "n"), ("/(x*)", "/\\1z"), ("a|e", ""),
                   ("(?i)^/A", "/b"), ("^/[^/]*$", ""))   # (the last: an empty path, no change at all)
RESPOND_BODIES = ("", "paused", "caf\u00e9", '{"ok": false}')


@st.composite
def answer_or_rewrite(draw, kind: str, body: list[str], paths: list) -> tuple[list[str], bool]:
    """A route's body with a redirect, a direct response or a rewrite, and whether the route
    answers itself (then the caller adds no destination, timeout, retry, fault or mirror: E0420).
    A `prefix` replacement gets a route whose every match has one `path prefix` (E0421), as a
    segment prefix, a string prefix (ending in `/`) or a `raw_prefix`, with or without
    `ignore_case`, and a replacement that does not join segments (W0420)."""
    prefix = None
    if kind in ("redirect", "rewrite") and draw(st.booleans()):
        value = draw(_paths)
        form = draw(st.sampled_from(("prefix", "prefix", "string", "raw_prefix")))
        if form == "string":
            value += "/"
        ic = " ignore_case" if draw(st.integers(0, 3)) == 0 else ""
        extra = [draw(header_conditions())] if draw(st.integers(0, 2)) == 0 else []
        word = "raw_prefix" if form == "raw_prefix" else "prefix"
        body = ["match { " + "  ".join([f"path {word} {q(value)}{ic}", *extra]) + " }"]
        paths.append(value)
        if form == "prefix":
            prefix = draw(st.sampled_from(("/new", "/", "/a/b")))
        elif value.endswith("/"):
            prefix = draw(st.sampled_from(("/new/", "/")))
        else:
            prefix = draw(st.sampled_from(("/new", "/n/")))
    if kind == "redirect":
        settings = []
        if draw(st.booleans()):
            settings.append(f"scheme {q(draw(st.sampled_from(('http', 'https'))))}")
        if draw(st.integers(0, 2)) == 0:
            settings.append(f"host {q(draw(st.sampled_from(('www.example.com', '10.1.2.3'))))}")
        if draw(st.integers(0, 2)) == 0:
            settings.append(f"port {draw(st.sampled_from((80, 443, 8443)))}")
        if prefix is not None:
            settings.append(f"prefix {q(prefix)}")
        elif draw(st.integers(0, 2)) == 0:
            pattern, substitution = draw(st.sampled_from(REWRITE_REGEXES))
            settings.append(f"regex {q(pattern)} {q(substitution)}")
        elif draw(st.booleans()) or not settings:
            settings.append(f"path {q(draw(st.sampled_from(('/moved', '/', '/a/b'))))}")
        if draw(st.booleans()):
            settings.append(f"status {draw(st.sampled_from((301, 302, 303, 307, 308)))}")
        if draw(st.integers(0, 2)) == 0:
            settings.append("strip_query")
        out = [*body, "redirect { " + "  ".join(settings) + " }"]
    elif kind == "respond":
        status = draw(st.sampled_from((200, 403, 404, 418, 503, 204)))
        text = draw(st.sampled_from(RESPOND_BODIES)) if status != 204 else ""
        out = [*body, f"respond {status} {q(text)}" if text else f"respond {status}"]
    else:
        settings = []
        if prefix is not None:
            settings.append(f"prefix {q(prefix)}")
        else:
            change = draw(st.sampled_from(("path", "regex", "none")))
            if change == "path":
                settings.append(f"path {q(draw(st.sampled_from(('/fixed', '/', '/a/b'))))}")
            elif change == "regex":
                pattern, substitution = draw(st.sampled_from(REWRITE_REGEXES))
                settings.append(f"regex {q(pattern)} {q(substitution)}")
        if draw(st.booleans()) or not settings:
            settings.append(f"host {q(draw(st.sampled_from(('api.internal', 'up.example:8443'))))}")
        return [*body, "rewrite { " + "  ".join(settings) + " }"], False
    if draw(st.integers(0, 2)) == 0:
        changes = draw(header_changes(RESPONSE_HEADERS))
        if changes:
            out.append("response_headers " + changes)
    return out, True


# ---- requests -----------------------------------------------------------------------------------

def _mutate_path(draw, path: str) -> str:
    """The path with the tricks normalisation must see through (or reject)."""
    trick = draw(st.integers(0, 15))
    if trick == 0:
        return path.replace("/", "/./", 1)
    if trick == 1:
        return "/x/.." + path
    if trick == 2:
        return path.replace("/", "//", 1)
    if trick == 3 and path.count("/") > 1:
        return path[:1] + path[1:].replace("/", draw(st.sampled_from(("%2F", "%2f", "%5C"))), 1)
    if trick == 4:
        return path.swapcase()
    if trick == 5:
        return path + "/"
    if trick == 6:
        return path.replace("a", "%61", 1)
    if trick == 7:
        return path + draw(st.sampled_from(("/extra", "x", "/42", "/..", "/%2E%2E/b", "/..;/x")))
    if trick == 8:
        return path.replace("/", "/%2e/", 1)
    if trick == 9:   # a stray `%` (not an escape), alone or before an escape it could complete
        return draw(st.sampled_from(("/%", "/%/%2E%2E", "/a%/..", "/%%30"))) + path + draw(
            st.sampled_from(("", "/%30%30a", "%%41")))
    if trick == 10:  # one letter in another case (`ignore_case` folds it, a plain condition does not)
        i = next((i for i, c in enumerate(path) if c.isascii() and c.isalpha()), None)
        return path if i is None else path[:i] + path[i].swapcase() + path[i + 1:]
    if trick == 11:  # `;params` after the first segment: never stripped by either plane
        inner = path.find("/", 1)
        return path + ";x" if inner < 0 else path[:inner] + ";x" + path[inner:]
    if trick == 12:  # a double encoding (`%2561` is `%61` once decoded, `a` twice): never decoded twice
        return path.replace("a", "%2561", 1).replace("A", "%2541", 1)
    return path


_QUERIES = st.sampled_from(("", "", "", "?q=1", "?v=2&v=3", "?q", "?q=", "?v=x", "?q=a%20b", "?v=1&q=2",
                            "?q=x&debug"))


# Trace headers a caller may send: W3C trace context sampled or not, one that does not parse, and
# request ids that are UUIDs with and without Envoy's trace reason, or not UUIDs at all.
TRACEPARENTS = ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01", "garbage")
TRACESTATES = ("congo=t61rcWkgMzE", "a=1,b=2", "")
REQUEST_IDS = ("5cce2907-455e-40b7-94b9-d7a84cdb2641", "5cce2907-455e-90b7-94b9-d7a84cdb2641",
               "00000000-455e-40b7-94b9-d7a84cdb2641", "my-own-id", "abc")


@st.composite
def trace_headers(draw, need_request_id: bool) -> list[tuple[str, str]]:
    """Trace headers of a request (`need_request_id`: always an x-request-id, which a fractional
    sampling decides by: one the sidecar made would be random)."""
    out = []
    if draw(st.integers(0, 3)) == 0:
        out.append(("traceparent", draw(st.sampled_from(TRACEPARENTS))))
        if draw(st.booleans()):
            out.append(("tracestate", draw(st.sampled_from(TRACESTATES))))
    if need_request_id or draw(st.integers(0, 4)) == 0:
        out.append(("x-request-id", draw(st.sampled_from(REQUEST_IDS))))
    return out


@st.composite
def requests(draw, policy: GenPolicy, live: bool = True) -> GenRequest:
    """One request aimed at `policy`: at its services and paths, with its header names, values and
    split keys. With `live`, some requests carry upstream failures (`Fail`)."""
    inbound = draw(st.integers(0, 2 if policy.mtls != "disable" else 3)) == 0
    if inbound:
        host = "client"
    else:
        key = draw(st.sampled_from(policy.services))
        host, ns = short_name(key), namespace_of(key)
        port = SERVICE_PORT[host]
        host = draw(st.sampled_from((host, host, host, f"{host}:{port}", f"{host}.{ns}", host.upper(), "client",
                                     "nowhere", f"{host}:1", f"{host}.{ns}.svc:{port}",
                                     f"{host}.{ns}.svc.{policy.cluster_domain}",
                                     f"{host}.{ns}.svc.cluster.local:{port}", f"{host}.{ns}:{port}"))) \
            if not policy.hosts or draw(st.booleans()) else draw(st.sampled_from(REQUEST_HOSTS))
    base = draw(st.sampled_from(policy.paths)) if policy.paths and draw(st.integers(0, 4)) > 0 else draw(_paths)
    target = _mutate_path(draw, base) + draw(_QUERIES)
    headers: list[tuple[str, str]] = []
    for name in draw(st.lists(st.sampled_from(policy.header_names), max_size=3)):
        value = draw(st.sampled_from(policy.header_values))
        if draw(st.integers(0, 3)) == 0:
            name = name.upper()
        headers.append((name, value))
    if draw(st.integers(0, 2)) > 0:
        headers.append((SPLIT_HEADER, draw(st.sampled_from(policy.split_keys))))
        if draw(st.integers(0, 8)) == 0:
            headers.append((SPLIT_HEADER, draw(st.sampled_from(policy.split_keys))))
    if draw(st.integers(0, 5)) == 0:
        headers.append(("x-set", "from-client"))
    if inbound and draw(st.integers(0, 5)) == 0:   # forged: never reaches the application
        headers.append((XFCC, FORGED_XFCC))
    if inbound and draw(st.integers(0, 7)) == 0:   # kept as sent, over mTLS too
        headers.append(("x-forwarded-proto", draw(st.sampled_from(("http", "https")))))
    if not inbound and draw(st.integers(0, 7)) == 0:   # a redirect's scheme and port (docs/language.md §8.1)
        headers.append(("x-forwarded-proto", draw(st.sampled_from(("http", "https", "HTTPS", "foo")))))
    headers += draw(trace_headers(policy.meta.get("tracing") not in (None, "0%", "100%")))
    method = draw(st.sampled_from(("GET", "GET", "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")))
    if not inbound and draw(st.integers(0, 2)) == 0:   # CORS (language §13a): from an origin, some preflights
        headers.append(("origin", draw(st.sampled_from(CORS_ORIGINS))))
        if draw(st.booleans()):
            method = "OPTIONS"
            if draw(st.integers(0, 4)) > 0:
                headers.append(("access-control-request-method", draw(st.sampled_from(("PUT", "GET", "DELETE")))))
    fail = None
    if live and not inbound and draw(st.integers(0, 3)) == 0:
        mode = draw(st.sampled_from(("status", "status", "status", "reset", "delay")))
        if mode == "delay":
            fail = Fail("delay", 1, status=draw(st.sampled_from((200, 503))), delay_ms=400)
        else:
            fail = Fail(mode, draw(st.integers(1, 4)), status=draw(st.sampled_from((500, 502, 503, 504, 409, 404))))
    caller = draw(callers(policy.mtls)) if inbound else None
    return GenRequest("inbound" if inbound else "outbound", method, target, host, tuple(headers), fail, caller)


@st.composite
def callers(draw, mtls: str) -> str | None:
    """Who calls the inbound listener: mostly a caller with an identity where the listener takes
    mTLS, a plaintext one where it does not; one call in `other` is of the other kind (a
    plaintext caller of a permissive listener; refused by a strict one, or a TLS caller refused
    by a plaintext listener)."""
    other = {"permissive": 4, "strict": 8, "disable": 8}[mtls]
    usual = draw(st.sampled_from((True,) * (other - 1) + (False,)))   # not integers(): hypothesis favours 0
    tls = (mtls != "disable") == usual
    return draw(st.sampled_from(CALLERS)) if tls else None


@st.composite
def cases(draw, max_requests: int = 20, min_requests: int = 1, live: bool = True, focus_layer: str | None = None,
          focus: frozenset[str] = frozenset()):
    """(policy, requests aimed at it). With `focus_layer` (`model` or `live`), three policies in
    four are focused on one of `features.focus_groups()` (features combined on purpose); with
    `focus`, the policy is focused on those features. The focused requests come first."""
    if focus_layer is not None and not focus and draw(st.integers(0, 3)) > 0:
        from tests.equivalence import features

        focus = draw(st.sampled_from(features.focus_groups()))
    policy = draw(policies(focus))
    reqs = draw(st.lists(requests(policy, live=live), min_size=min_requests, max_size=max_requests))
    return policy, focused_requests(policy, live) + reqs
