"""The intermediate representation: the one contract between the front end and every backend.

The IR is **resolved** (imports expanded, names resolved to services and subsets), **defaulted**
(every default written in from compiler/language/, so no backend decides one), **named** (every
name a target or the native proxy uses, such as a cluster, a Host domain or an SNI, is decided by
compiler/ir/names.py during lowering and carried here), **ordered** (services by name, routes in
evaluation order: the first match wins) and has **one unit per quantity**: durations in whole
milliseconds (`*_ms`; 0 means "none" where a field says so), percentages as floats in 0..100
(`*_percent`), sizes in bytes (`*_bytes`), ports and counts as ints, header names in lower case.

Every field below says what it means, its unit, its default (when lowering writes one) and who
reads it: **envoy** (compiler/backends/envoy/), **native** (compiler/backends/native/, which
carries it into the native proxy's config) and **checks** (compiler/ir/check.py, and the semantic
checks that reason on lowered matches and rules). docs/language.md gives the semantics; the IR is
also what `meshc compile --emit ir` prints, field for field.
"""

from __future__ import annotations

from compiler.core.nodes import Node, node
from compiler.ir.conditions import AuthzRule, HeaderMatch, Location, Match, PathMatch, Principal, QueryMatch
from compiler.language.retry import RETRY_CONDITIONS

__all__ = [
    "RETRY_ON",
    "SCHEMA_VERSION",
    "Authorization",
    "AuthzRule",
    "Cors",
    "CorsOrigin",
    "DirectResponse",
    "Endpoint",
    "Fault",
    "FaultAbort",
    "FaultDelay",
    "HeaderChanges",
    "HeaderMatch",
    "Limits",
    "Location",
    "Match",
    "Mirror",
    "Mtls",
    "Outlier",
    "PathMatch",
    "PathRewrite",
    "Principal",
    "Program",
    "QueryMatch",
    "Redirect",
    "Retry",
    "RetryBudget",
    "Rewrite",
    "Route",
    "Service",
    "Sidecar",
    "Split",
    "Subset",
    "SubsetRef",
    "Tracing",
    "Upstream",
    "WeightedSubset",
    "Workload",
]

# Version of the IR document (`meshc compile --emit ir`); bumped on an incompatible change.
# 2: structured provenance (Location), names (clusters, domains, SNI), connection settings.
# 3: the sidecar's limits on clients (header count, request-headers, stream idle timeouts, connections).
SCHEMA_VERSION = 3

# The retry conditions `Retry.retry_on` may hold: the language's names (compiler/language/retry.py),
# which are also Envoy's `retry_on` tokens.
RETRY_ON: tuple[str, ...] = tuple(RETRY_CONDITIONS)


# ---- destinations ----------------------------------------------------------------------------------

@node
class Endpoint(Node):
    """One address of a subset (or of a sidecar's local application)."""
    host: str          # an IPv4 address, an IPv6 address without brackets, or a DNS name (E0307)
    port: int          # 1-65535


@node
class Subset(Node):
    """A named group of endpoints of a service: what a route sends requests to. Read by envoy (one
    cluster each) and native (one upstream cluster state each: pools, breaker, outlier detector)."""
    name: str          # as written; `default` for a service's own `endpoints` (IMPLICIT_SUBSET)
    cluster: str       # the cluster name in both targets, `outbound|SUBSET|SERVICE` (ir/names.py): Envoy's
                       # cluster and stats name, the native proxy's stats label and state key
    discovery: str     # "static" (every endpoint is an IP address), "dns" (resolved, and re-resolved, by the proxy)
                       # or "labels" (a label-selected subset: the endpoints are the pods Kubernetes selects)
    endpoints: tuple[Endpoint, ...]   # round robin in this order; never empty, but for a label-selected subset
    source: Location   # the `subset` (or, for `default`, the service) declaration
    labels: tuple[tuple[str, str], ...] = ()   # a label-selected subset (`labels { KEY "VALUE" }`): the pod
                       # labels it selects, sorted by key, and no endpoints (then `discovery` is "labels"); ()
                       # for an endpoint list. Read by istio (DestinationRule subset labels); envoy and native
                       # refuse such a subset (E0750)


@node
class Limits(Node):
    """Circuit-breaker thresholds, per calling sidecar and per subset of the destination (Envoy's
    per-cluster resource manager). Default when not written: Envoy's own, 1024/1024/1024/3
    (settings block `limits`). Read by envoy (`circuit_breakers`) and native (its Breaker)."""
    max_connections: int       # connections open at once to the subset's endpoints
    max_pending_requests: int  # requests waiting for a connection
    max_requests: int          # requests in flight
    max_retries: int           # retries in flight; ignored when the service has a retry budget (W0503)


@node
class Outlier(Node):
    """Passive health checking of each subset's endpoints (docs/language.md §5.5). Present only when
    the service writes `outlier`; each unwritten setting takes its default (settings block `outlier`).
    Read by envoy (`outlier_detection`) and native (its detector)."""
    consecutive_5xx: int               # 5xx results in a row that eject an endpoint (default 5)
    consecutive_gateway_errors: int    # 502/503/504 results in a row that eject; 0 = not used (the default)
    interval_ms: int                   # ejections are re-evaluated, and ejected endpoints returned, at this
                                       # interval's ticks (default 10 000)
    base_ejection_ms: int              # ejection time = base x the number of times ejected (default 30 000)
    max_ejection_percent: float        # at most this share of a subset's endpoints ejected at once (default 10);
                                       # Envoy takes whole percents (W0701 for a fraction)


@node
class RetryBudget(Node):
    """Retries in flight to a service are at most max(min_concurrency, percent x its active and pending
    requests); replaces `max_retries`. Present only when written (settings block `retry_budget`).
    Read by envoy (`circuit_breakers.thresholds.retry_budget`) and native (its Breaker)."""
    percent: float                     # share of active requests that may be retries (default 20)
    min_concurrency: int               # retries always allowed in flight (default 3)


@node
class Upstream(Node):
    """How a caller's sidecar connects to this service's endpoints: the settings Envoy keeps per
    cluster. Not written in the language today; lowering writes the defaults (compiler/language/
    defaults.py), which are the values both targets applied before they were named here. Read by
    envoy (the clusters' `connect_timeout`; the others equal Envoy's built-in defaults and are
    written only when they differ) and native (each upstream cluster, and the local application's,
    which uses its own service's)."""
    connect_timeout_ms: int            # a connection (and its TLS handshake) not made within this is a
                                       # connect failure: 503, retried on `connect-failure` (default 1000)
    idle_timeout_ms: int               # a pooled connection idle this long is closed (default 3 600 000, Envoy's)
    max_response_headers_bytes: int    # a response head larger than this is a 502 (default 61 440, Envoy's 60 KiB)


# ---- routes ----------------------------------------------------------------------------------------

@node
class SubsetRef(Node):
    """A destination: one subset of one service (both exist: E0201/E0203)."""
    service: str
    subset: str


@node
class WeightedSubset(Node):
    """One target of a split."""
    service: str
    subset: str
    weight: int        # 0 to 2^32-1; a zero weight is never picked
    # this arm's own header changes, applied before the route's (Envoy's weighted cluster
    # `request_headers_to_add`/`_remove`, measured: the cluster's first, then the route's). Read by
    # envoy and native
    request_headers: HeaderChanges | None = None
    response_headers: HeaderChanges | None = None


@node
class Split(Node):
    """Pick by `value mod total` over cumulative weights in written order when the key header holds one
    unsigned 64-bit decimal integer, at random (by weight) otherwise. Zero weights are never picked."""
    targets: tuple[WeightedSubset, ...]  # written order, never empty
    key_header: str | None             # lower case; None: always random
    total_weight: int                  # the sum of the weights, above 0 (E0305) and at most 2^32-1


@node
class Retry(Node):
    """Retries of a route (docs/language.md §10). None on the route when it makes none (no `retry`,
    `retry none`, or `attempts 0`)."""
    num_retries: int                   # retries after the first attempt, 1-100 (default 2)
    retry_on: tuple[str, ...]          # conditions, names of RETRY_ON, in written order (default ("5xx",))
    retriable_status_codes: tuple[int, ...]  # status codes written in `on`, sorted
    per_try_timeout_ms: int            # bound on each attempt; 0: each try may use what is left of the route
                                       # timeout (the default)
    backoff_base_ms: int               # jittered exponential backoff base (default 25)
    backoff_max_ms: int                # the longest backoff (default 10 x the base)
    allow_non_idempotent: bool         # silences W0501; changes no behaviour


@node
class FaultAbort(Node):
    http_status: int                   # 200-599: the local reply's status
    percent: float                     # share of the route's requests (default 100)


@node
class FaultDelay(Node):
    duration_ms: int                   # above 0
    percent: float                     # share of the route's requests (default 100)


@node
class Fault(Node):
    """Injected failures of a route: the delay first, then the abort, with independent draws; an
    abort is a local reply, never retried, forwarded or mirrored."""
    abort: FaultAbort | None
    delay: FaultDelay | None


@node
class Mirror(Node):
    """A fire-and-forget copy of a share of the route's requests, its Host suffixed `-shadow`."""
    service: str
    subset: str
    percent: float                     # share of requests copied (default 100)
    timeout_ms: int                    # how long a copy may take before it is dropped: the route timeout, or
                                       # MIRROR_TIMEOUT_MS (15 000) on a route with `timeout none`. Read by
                                       # native only: Envoy's shadow request takes the route timeout as it is


@node
class HeaderChanges(Node):
    """Applied in this order: remove, then set (replace or add), then add (append)."""
    remove: tuple[str, ...]            # lower-case names, each once
    set: tuple[tuple[str, str], ...]   # (lower-case name, value)
    add: tuple[tuple[str, str], ...]   # (lower-case name, value), in written order


@node
class PathRewrite(Node):
    """How a redirect's Location or a forwarded request's path is made from the normalised path
    (docs/language.md §8.3); the query is never part of it."""
    kind: str                          # "path": the whole path replaced by `substitution`;
                                       # "prefix": the first len(pattern) characters (the prefix the route
                                       #   matched, which every match of the route has: E0421) replaced by
                                       #   `substitution`; with `segment` and a substitution "/", also one `/`
                                       #   after them (`/old/x` -> `/x`, never `//x`);
                                       # "regex": every non-overlapping match of the RE2 `pattern` replaced
                                       #   by `substitution` (`\N` a group, `\\` a backslash), as RE2's GlobalReplace
    pattern: str                       # prefix: the matched prefix; regex: the pattern; path: ""
    substitution: str
    segment: bool = False              # prefix: the match is a segment prefix (`path prefix "/a"`)
    ignore_case: bool = False          # prefix: the match ignores case (the prefix's length is what is replaced)


@node
class Redirect(Node):
    """The route answers with a redirect (docs/language.md §8.1): status, `location`, an empty body.
    Location = SCHEME://HOST[:PORT]PATH[?QUERY], with the request's scheme (its valid
    `x-forwarded-proto`, lower-cased, else `http`), Host and path where these say nothing."""
    status: int                        # 301 (default), 302, 303, 307, 308
    scheme: str                        # "http" | "https"; "": the request's
    host: str                          # a host without a port; "": the request's Host (a port of it kept, but
                                       # dropped with `port`, or on a scheme change from its default port)
    port: int                          # 0: none written
    path: PathRewrite | None           # None: the request's path
    strip_query: bool                  # the Location has no query (else the request's, an empty `?` kept)


@node
class Rewrite(Node):
    """What a forwarded request's path and Host become, after routing and before the upstream head
    (the mirror copy and every retry carry them; the original path goes in `x-envoy-original-path`)."""
    path: PathRewrite | None
    host: str                          # the upstream Host; "": unchanged (the original goes in
                                       # `x-envoy-original-host`)


@node
class DirectResponse(Node):
    """The route answers itself: `respond STATUS "BODY"` (a body is `text/plain` unless the route's
    response changes set a content type)."""
    status: int                        # 200-599
    body: str                          # UTF-8, at most DIRECT_RESPONSE_MAX_BYTES (4096); "" none


@node
class CorsOrigin(Node):
    """An allowed origin: `exact` (`*`: any origin), `prefix` or `regex` (RE2, whole value)."""
    test: str                          # "exact" | "prefix" | "regex"
    value: str


@node
class Cors(Node):
    """A route's CORS policy (docs/language.md §13a), applied by the caller's sidecar once the route
    is chosen: a request whose `Origin` one of `origins` matches (or one that matches the text `*`)
    is a CORS request; an OPTIONS one with `Access-Control-Request-Method` is a preflight, answered
    200 by the sidecar; the response to any other gets `access-control-allow-origin` (the caller's
    origin, echoed), `-allow-credentials` and `-expose-headers`."""
    origins: tuple[CorsOrigin, ...]    # never empty (E0342), in written order
    methods: tuple[str, ...]           # `access-control-allow-methods` of a preflight, joined with ","; () = none
    headers: tuple[str, ...]           # `access-control-allow-headers`, as written; () = none
    expose: tuple[str, ...]            # `access-control-expose-headers`, as written; () = none
    max_age_s: int | None              # `access-control-max-age` of a preflight; None = not sent
    credentials: bool                  # `access-control-allow-credentials: true`


@node
class Route(Node):
    """What a caller's sidecar does with a request to the service that matches this route."""
    name: str                          # unique in the service (E0202); `default` for the implicit route
    source: Location                   # the `route` (or, for the implicit route, the service)
    matches: tuple[Match, ...]         # never empty; a route without `match` has one empty match
    to: SubsetRef | None               # exactly one of `to` and `split`, unless the route answers itself
    split: Split | None
    timeout_ms: int                    # the whole request, every try and backoff included; 0 = none
                                       # (`timeout none`); default ROUTE_TIMEOUT_MS, 15 000; 504 on expiry
    retry: Retry | None
    fault: Fault | None
    mirrors: tuple[Mirror, ...]        # in written order, each with its own share; one random draw per request
                                       # decides them all, as Envoy's stream id does (docs/language.md §12)
    request_headers: HeaderChanges     # to the request sent upstream
    response_headers: HeaderChanges    # to the response (local replies on a chosen route included)
    # A route that answers itself has neither `to` nor `split` (nor retry, fault, mirror: E0420).
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    rewrite: Rewrite | None = None     # a forwarded route's path and Host changes
    cors: Cors | None = None           # None: no CORS (the request is not looked at)


# ---- authorization ---------------------------------------------------------------------------------

@node
class Authorization(Node):
    """Any matching deny denies (403); else any matching allow allows; else the default. Enforced by
    the service's own sidecar on its inbound listener."""
    default: str                       # "allow" | "deny"; `allow` for a service without an authorization
                                       # block (AUTHORIZATION_DEFAULT)
    rules: tuple[AuthzRule, ...]       # written order, `use`d rule sets expanded in place
    source: Location | None            # None: the service has no authorization block


# ---- the sidecar -----------------------------------------------------------------------------------

@node
class Mtls(Node):
    """Mutual TLS of a service's sidecar (docs/language.md §4.1)."""
    mode: str          # "strict" | "permissive" | "disable": what the sidecar's inbound listener accepts; the
                       # service's `mtls`, else the mesh's, else "disable" (MTLS_MODE)
    directory: str     # the sidecar's identity files: cert.pem (its SPIFFE ID as URI SAN), key.pem and ca.pem
                       # (the trusted mesh CA), watched for rotation: `certificates`/SERVICE ("/etc/meshc/certs")


@node
class Sidecar(Node):
    """The proxy next to a service: its listeners, its local application, its path normalisation and
    its limits on clients (settings block `sidecar`, and the defaults of compiler/language/defaults.py).
    Read by envoy (listeners, the HTTP connection managers, the inbound cluster, the bootstrap's admin)
    and native (its listeners, the app cluster, its limits)."""
    listen_host: str                   # where every listener binds: "127.0.0.1" (LISTEN_HOST), loopback only
    inbound_port: int                  # traffic for the service (default 15006)
    outbound_port: int                 # the application's calls to other services (default 15001)
    admin_port: int                    # the proxy's admin interface (default 15000)
    app_host: str                      # where the inbound listener forwards to (default 127.0.0.1, APP_HOST)
    app_port: int                      # (default: the service's port)
    app_discovery: str                 # "static" when app_host is an IP address, else "dns"
    app_cluster: str                   # the local application's cluster, `inbound|SERVICE` (ir/names.py)
    app_limits: Limits                 # its thresholds: Envoy's defaults (no policy sets them)
    escaped_slashes: str               # "reject" (400, the default), "decode" (%2F -> /, then normalise) or "keep"
    normalize_path: bool               # RFC 3986 dot-segment removal; always true
    merge_slashes: bool                # `//` -> `/`; always true
    max_request_headers: int           # a request with more header lines than this is a 431 (default 100, Envoy's)
    max_request_headers_bytes: int     # a request head larger than this is a 431: `max_request_headers_kb` x 1024
                                       # (default 61 440: Envoy's 60 KiB)
    max_request_body_bytes: int        # a request body larger than this is a 413; 0 = unlimited, streamed
                                       # (the default). Read by native only (Envoy streams without a limit)
    idle_timeout_ms: int               # a client connection without a request in flight this long is closed
                                       # (`idle_timeout`, default 3 600 000, Envoy's)
    request_headers_timeout_ms: int    # a request head not complete this long after its first byte: 408 and close
                                       # (`request_headers_timeout`, default 10 000; Envoy's own default is none)
    stream_idle_timeout_ms: int        # a request on which no byte moves to or from the client this long: 408
                                       # (request unfinished), 504, or a reset once the response started
                                       # (`stream_idle_timeout`, default 300 000, Envoy's); applies under
                                       # `timeout none` too
    max_connections: int               # client connections open at once on each listener; one more is closed at
                                       # once (`max_connections`, default 4096)
    drain_timeout_ms: int              # on SIGTERM, how long in-flight requests may finish (default 5 000).
                                       # Read by native only (Envoy's drain time is its `--drain-time-s`)
    access_log: str                    # the file both planes append one JSON line per request to (`access_log`,
                                       # an absolute path); "" = none (the default). Envoy: a file access log
                                       # with json_format on both HTTP connection managers; native: the same
                                       # fields and values (docs/observability.md)
    node: str = ""                     # the proxy's name: its node id, its files' names (`SERVICE` for the
                                       # service's own sidecar, `SERVICE.SUBSET` for a workload's; ir/names.py)


@node
class Workload(Node):
    """A subset with its own sidecar (docs/language.md §5.9): one workload of the service, with the
    service's identity, authorization and routes, and its own listeners and application. Read by
    every backend through compiler/ir/workloads.py (a proxy per workload, named `SERVICE.SUBSET`)."""
    subset: str                        # the subset's name; its endpoints are where callers reach this sidecar
    sidecar: Sidecar                   # the service's `sidecar` settings overridden by the subset's own
    source: Location                   # the subset's `sidecar` block


@node
class Service(Node):
    """A service of the mesh: as a destination (its subsets, limits, routes: what every caller's
    sidecar applies when calling it) and as the owner of a sidecar (its authorization, mTLS mode,
    listeners)."""
    name: str                          # unique (E0202), and unique regardless of case for envoy (E0702)
    namespace: str                     # default "default" (NAMESPACE)
    identity: str                      # its SPIFFE ID: `identity`, else spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/NAME
    port: int                          # the port the application listens on
    domains: tuple[str, ...]           # the Host values a caller uses to reach it (ir/names.py): NAME,
                                       # NAME:PORT, NAME.NAMESPACE, NAME.NAMESPACE:PORT; matched case-insensitively
    sni: str                           # the TLS server name a caller sends over mTLS, NAME.NAMESPACE (ir/names.py)
    source: Location                   # the `service` declaration
    subsets: tuple[Subset, ...]        # the implicit `default` first, then as written; never empty
    limits: Limits
    outlier: Outlier | None            # None: no outlier detection
    retry_budget: RetryBudget | None   # None: `limits.max_retries` caps retries in flight
    upstream: Upstream                 # how callers connect to its endpoints (and its sidecar to its app)
    sidecar: Sidecar
    routes: tuple[Route, ...]          # evaluation order; one `default` route without a routes block
    authorization: Authorization
    mtls: Mtls
    workloads: tuple[Workload, ...] = ()   # the subsets with their own sidecar, in written order; the service's
                                       # own `sidecar` serves the others (there is none when every subset is one)


@node
class Tracing(Node):
    """Trace propagation and span export by every sidecar (`mesh { tracing { … } }`, docs/language.md
    §4.2, docs/observability.md). Read by envoy (the connection managers' `tracing`, the collector's
    cluster) and native (its `tracing` section)."""
    sampling_percent: float            # share of requests without a trace decision that are traced, 0..100 in
                                       # steps of 0.01 (`sampling`, default 100.0, Envoy's)
    propagation: str                   # the trace context headers: "w3c" (`traceparent`, `tracestate`)
    otlp_host: str | None              # the OTLP/HTTP collector sampled spans are sent to; None: no export
    otlp_port: int                     # (0 without export)
    otlp_path: str                     # ("/v1/traces" when the URL names none; "" without export)
    source: Location                   # the `tracing` block


@node
class Program(Node):
    """The whole program: what `meshc compile --emit ir` writes."""
    schema_version: int                # SCHEMA_VERSION
    trust_domain: str                  # of every SPIFFE ID of the program (default "cluster.local")
    services: tuple[Service, ...]      # sorted by name
    tracing: Tracing | None = None     # None: no `tracing` block, no tracing (every sidecar's service name is its own)

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)
