"""The native proxy's config: the contract between the compiler's native backend and the proxy.

One file configures one sidecar (`SERVICE.native.json`). It is the IR slice that sidecar needs:
the routes, subsets, limits, outlier detection, retry budgets, connection settings and
authorization are the IR's own nodes (compiler/ir/model.py), with the same fields, units and
meaning (tests/test_native_schema.py holds these models to the IR's fields); the envelope adds the
sidecar's listeners, application and limits. Every value the proxy applies is in the file: the
proxy has no defaults of its own (a field may be left out only where leaving it out means
"nothing": an empty list, no retry, no fault). Every model forbids unknown fields, so a typo is an
error, never a silently ignored setting. The JSON Schema in runtime_proxy/config/schema.json is
generated from these models (tests keep it current) and is what outside tools validate against.

Bump SCHEMA_VERSION on any change that an older proxy would misread.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# 2: provenance as {file, line, column}; names (app cluster, SNI) and every setting the proxy
# applies (connection settings per destination, limits per sidecar, the mirror's timeout) in the file.
# 3: the sidecar's limits on clients: header count, request-headers and stream idle timeouts, connections.
SCHEMA_VERSION = 3

# The retry conditions a route may name (compiler/language/retry.py has the same list, and a test
# keeps the two equal; runtime_proxy/decide/retry.py says what each retries).
RetryCondition = Literal["5xx", "gateway-error", "reset", "connect-failure", "refused-stream", "retriable-4xx"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Location(Model):
    """Where a construct was written (compiler/ir/model.py `Location`): shown in messages and logs."""
    file: str
    line: int = Field(ge=0)
    column: int = Field(ge=0)


# ---- matching ------------------------------------------------------------------------------

class PathMatch(Model):
    kind: Literal["exact", "prefix", "segment_prefix", "regex"]   # regex: RE2, full match
    value: str
    ignore_case: bool = False                  # not with regex: ASCII letters compared case-insensitively


class HeaderMatch(Model):
    name: str                                  # lower case
    kind: Literal["exact", "prefix", "suffix", "regex", "present", "absent"]
    value: str | None = None                   # None for present/absent
    invert: bool = False                       # string kinds: present and no value passes
    ignore_case: bool = False


class QueryMatch(Model):
    name: str
    kind: Literal["exact", "regex", "present"]  # a repeated key is tested on its first value
    value: str | None = None


class Match(Model):
    """All conditions hold (AND); a route matches when any of its matches does (OR)."""
    path: PathMatch | None = None
    headers: list[HeaderMatch] = []
    query: list[QueryMatch] = []
    methods: list[str] | None = None           # None: any method
    callers: list[str] | None = None           # the calling services it applies to; None: every one (the
                                               # compiler resolves it: never set in a config it writes)


# ---- routes ------------------------------------------------------------------------------

class SubsetRef(Model):
    service: str
    subset: str


class WeightedSubset(Model):
    service: str
    subset: str
    weight: int = Field(ge=0, le=2**32 - 1)
    request_headers: HeaderChanges | None = None    # this arm's, applied before the route's
    response_headers: HeaderChanges | None = None


class Split(Model):
    """Envoy's rule: `value mod total` over cumulative weights in written order when the key
    header holds exactly one unsigned 64-bit decimal integer; otherwise random by weight."""
    targets: list[WeightedSubset] = Field(min_length=1)
    key_header: str | None = None
    total_weight: int = Field(gt=0, le=2**32 - 1)


class Retry(Model):
    num_retries: int = Field(ge=0, le=100)
    retry_on: list[RetryCondition]
    retriable_status_codes: list[int] = []
    per_try_timeout_ms: int = Field(ge=0)      # 0: each try may use what is left of the route timeout
    backoff_base_ms: int = Field(gt=0)
    backoff_max_ms: int = Field(gt=0)
    allow_non_idempotent: bool = False


class FaultAbort(Model):
    http_status: int = Field(ge=200, le=599)
    percent: float = Field(ge=0, le=100)


class FaultDelay(Model):
    duration_ms: int = Field(gt=0)
    percent: float = Field(ge=0, le=100)


class Fault(Model):
    abort: FaultAbort | None = None            # the delay (if any) runs first, then the abort
    delay: FaultDelay | None = None


class Mirror(Model):
    service: str
    subset: str
    percent: float = Field(ge=0, le=100)
    timeout_ms: int = Field(gt=0)              # a copy still running after this is dropped


class HeaderChanges(Model):
    """Applied in this order: remove, then set (replace or add), then add (append)."""
    remove: list[str] = []
    set: list[tuple[str, str]] = []
    add: list[tuple[str, str]] = []


class PathRewrite(Model):
    """A path change (the IR's PathRewrite): `path` replaces it all, `prefix` the first
    len(pattern) characters (a segment prefix replaced by "/" also drops one `/` after them),
    `regex` every match of the RE2 pattern (GlobalReplace)."""
    kind: Literal["path", "prefix", "regex"]
    pattern: str
    substitution: str
    segment: bool = False
    ignore_case: bool = False


class Redirect(Model):
    status: Literal[301, 302, 303, 307, 308]
    scheme: Literal["", "http", "https"]       # "": the request's
    host: str                                  # "": the request's Host
    port: int = Field(ge=0, le=65535)          # 0: none written
    path: PathRewrite | None = None
    strip_query: bool = False


class Rewrite(Model):
    path: PathRewrite | None = None
    host: str = ""                             # "": unchanged


class DirectResponse(Model):
    status: int = Field(ge=200, le=599)
    body: str = Field(max_length=4096)


class CorsOrigin(Model):
    test: Literal["exact", "prefix", "regex"]  # `exact "*"`: any origin; `regex`: RE2, the whole value
    value: str


class Cors(Model):
    """The route's CORS policy: a preflight from an allowed origin is answered 200 by the proxy."""
    origins: list[CorsOrigin] = Field(min_length=1)
    methods: list[str] = []                    # access-control-allow-methods, joined with ","
    headers: list[str] = []                    # access-control-allow-headers
    expose: list[str] = []                     # access-control-expose-headers
    max_age_s: int | None = Field(default=None, gt=0)
    credentials: bool = False


class Route(Model):
    name: str
    source: Location                           # where the route is written in the policy
    matches: list[Match] = Field(min_length=1)
    to: SubsetRef | None = None                # exactly one of `to` and `split`
    split: Split | None = None
    timeout_ms: int = Field(ge=0)              # whole request including retries; 0 = none
    retry: Retry | None = None
    fault: Fault | None = None
    mirrors: list[Mirror] = []                 # in written order; one draw per request decides them all
    request_headers: HeaderChanges = HeaderChanges()
    response_headers: HeaderChanges = HeaderChanges()
    redirect: Redirect | None = None           # the route answers with a redirect (no `to`, no `split`)
    direct_response: DirectResponse | None = None  # the route answers itself
    rewrite: Rewrite | None = None             # the forwarded request's path and Host
    cors: Cors | None = None                   # None: requests are not looked at for CORS


# ---- destinations ----------------------------------------------------------------------------

class Endpoint(Model):
    host: str                                  # IP address or DNS name
    port: int = Field(ge=1, le=65535)


class Subset(Model):
    name: str
    cluster: str                               # `outbound|SUBSET|SERVICE`: the state key and stats label
    discovery: Literal["static", "dns"]
    endpoints: list[Endpoint] = Field(min_length=1)
    source: Location
    # the IR's label selector of a label-selected subset, which the native target refuses (E0750):
    # always empty here
    labels: list[tuple[str, str]] = Field(default_factory=list, max_length=0)


class Limits(Model):
    max_connections: int = Field(ge=0)
    max_pending_requests: int = Field(ge=0)
    max_requests: int = Field(ge=0)
    max_retries: int = Field(ge=0)             # ignored when the service has a retry budget


class Outlier(Model):
    consecutive_5xx: int = Field(ge=1)
    consecutive_gateway_errors: int = Field(ge=0)   # 0: not used
    interval_ms: int = Field(gt=0)
    base_ejection_ms: int = Field(gt=0)
    max_ejection_percent: float = Field(ge=0, le=100)


class RetryBudget(Model):
    percent: float = Field(ge=0, le=100)
    min_concurrency: int = Field(ge=0)


class Upstream(Model):
    """How this sidecar connects to a destination's endpoints (or to its local application)."""
    connect_timeout_ms: int = Field(gt=0)      # a connection (TLS included) not made in time is a connect failure
    idle_timeout_ms: int = Field(gt=0)         # a pooled connection idle this long is closed
    max_response_headers_bytes: int = Field(gt=0)   # a larger response head: 502


class Service(Model):
    """A destination: the caller's sidecar routes requests whose Host is one of `domains`."""
    name: str
    namespace: str
    identity: str                              # SPIFFE ID
    port: int = Field(ge=1, le=65535)
    domains: list[str]                         # Host values (case-insensitive), with and without port
    sni: str                                   # the TLS server name sent when `mtls` (NAME.NAMESPACE)
    source: Location
    subsets: list[Subset] = Field(min_length=1)
    limits: Limits                             # per calling sidecar, per subset (as Envoy's per-cluster breakers)
    outlier: Outlier | None = None
    retry_budget: RetryBudget | None = None
    upstream: Upstream
    routes: list[Route]                        # evaluation order: first match wins
    mtls: bool                                 # call it over mTLS: present our certificate, and require the
                                               # server's URI SAN to be exactly `identity`


# ---- the sidecar's own side ---------------------------------------------------------------------

class Principal(Model):
    kind: Literal["exact", "prefix"]
    value: str


class AuthzRule(Model):
    name: str
    action: Literal["allow", "deny"]
    source: Location
    principals: list[Principal] | None = None  # None: any peer
    path: PathMatch | None = None              # on the normalised path
    methods: list[str] | None = None
    headers: list[HeaderMatch] = []
    not_paths: list[PathMatch] = []            # `not path`: none of these matches the normalised path
    not_methods: list[str] = []                # `not method`: the method is none of these


class Authorization(Model):
    """Any matching deny denies (403); else any matching allow allows; else the default."""
    default: Literal["allow", "deny"]
    rules: list[AuthzRule] = []
    source: Location | None = None


class Address(Model):
    host: str
    port: int = Field(ge=0, le=65535)          # 0: any free port (tests)


class Listeners(Model):
    inbound: Address
    outbound: Address
    admin: Address


class App(Model):
    """The local application, behind the inbound listener."""
    host: str
    port: int = Field(ge=1, le=65535)
    discovery: Literal["static", "dns"]
    cluster: str                               # `inbound|SERVICE`: its state key and stats label
    limits: Limits
    upstream: Upstream


class Normalization(Model):
    """docs/language.md section 6; normalize_path and merge_slashes are always on."""
    escaped_slashes: Literal["reject", "decode", "keep"]


class MtlsFiles(Model):
    """The sidecar's identity: PEM files, watched for rotation (polled, validated, then swapped)."""
    directory: str                             # the directory that holds them (Kubernetes secret layout)
    cert: str                                  # leaf certificate, with the sidecar's SPIFFE ID as its URI SAN
    key: str                                   # its private key
    ca: str                                    # trust bundle: the mesh CA (only it: one trust domain)


class Mtls(Model):
    """Mutual TLS of this sidecar (docs/language.md, `mtls`)."""
    mode: Literal["strict", "permissive", "disable"]   # what the inbound listener accepts: mTLS only,
                                               # mTLS or plaintext on one port, plaintext only
    files: MtlsFiles | None = None             # None iff neither the inbound listener nor any destination uses TLS


class ProxySettings(Model):
    """The sidecar's limits on its clients (the IR's `Sidecar`)."""
    max_request_headers: int = Field(gt=0)         # more header lines in a request head: 431
    max_request_headers_bytes: int = Field(gt=0)   # a larger request head: 431
    max_request_body_bytes: int = Field(ge=0)      # 0: unlimited (streamed); a larger body: 413
    idle_timeout_ms: int = Field(gt=0)             # a client connection without a request this long is closed
    request_headers_timeout_ms: int = Field(gt=0)  # a head unfinished this long after its first byte: 408, close
    stream_idle_timeout_ms: int = Field(gt=0)      # a request with no byte to or from the client this long:
                                                   # 408 (request unfinished), 504, or reset (response started)
    max_connections: int = Field(gt=0)             # client connections open at once per listener; more: closed
    drain_timeout_ms: int = Field(ge=0)            # SIGTERM: how long in-flight requests may finish
    access_log: str | None = None                  # the file of one JSON line per request; absent: none


class Tracing(Model):
    """`mesh { tracing { … } }` (the IR's Tracing; docs/observability.md, "Tracing")."""
    sampling_percent: float = Field(ge=0, le=100)   # share of requests without a trace decision traced (0.01 steps)
    propagation: Literal["w3c"]                # traceparent and tracestate
    otlp_host: str | None                      # the OTLP/HTTP collector of sampled spans; None: no export
    otlp_port: int = Field(ge=0, le=65535)
    otlp_path: str
    source: Location


class Config(Model):
    schema_version: Literal[3]
    version: str                               # content hash: /config shows it, reload logs it
    service: str                               # whose sidecar this is
    namespace: str
    identity: str
    listeners: Listeners
    app: App                                   # the inbound listener forwards here
    normalization: Normalization
    proxy: ProxySettings
    authorization: Authorization               # of this service, enforced on the inbound listener
    mtls: Mtls
    services: list[Service]                    # every destination, sorted by name
    tracing: Tracing | None = None             # None: the sidecar does not trace (x-request-id only)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a config file (committed as runtime_proxy/config/schema.json)."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://meshc.dev/schemas/native-config-v{SCHEMA_VERSION}.json"
    return schema
