"""The intermediate representation: the one contract between the front end and both backends.

The IR is resolved (imports expanded, names resolved to services and subsets), defaulted (every
default written in, see compiler/defaults.py), ordered (routes in evaluation order, first match
wins) and has one unit per quantity: durations in milliseconds (`*_ms`, 0 means "none" where
documented), percentages as floats in 0..100 (`*_percent`), ports and counts as ints, header
names in lower case. Every field is documented here; docs/language.md gives the semantics.
"""

from __future__ import annotations

from compiler.core.nodes import Node, node
from compiler.language.retry import RETRY_CONDITIONS

SCHEMA_VERSION = 1

# The retry conditions `Retry.retry_on` may hold: the language's names (compiler/language/retry.py).
RETRY_ON: tuple[str, ...] = tuple(RETRY_CONDITIONS)



@node
class Endpoint(Node):
    """IR Endpoint."""
    host: str          # IPv4/IPv6 address or DNS name
    port: int


@node
class Subset(Node):
    """IR Subset."""
    name: str
    discovery: str     # "static" (all endpoints are IP addresses) or "dns" (resolved by the proxy)
    endpoints: tuple[Endpoint, ...]
    source: str        # file:line:col of the declaration


@node
class Limits(Node):
    """Circuit-breaker thresholds of every subset of a service (Envoy's defaults when not written)."""
    max_connections: int
    max_pending_requests: int
    max_requests: int
    max_retries: int


@node
class Outlier(Node):
    """Passive health checking: eject an endpoint after consecutive failures."""
    consecutive_5xx: int               # 5xx responses in a row that eject an endpoint
    consecutive_gateway_errors: int    # 502/503/504 in a row that eject; 0 = not used
    interval_ms: int                   # how often ejections are re-evaluated
    base_ejection_ms: int              # ejection time = base x number of times ejected
    max_ejection_percent: float        # at most this share of a subset's endpoints ejected at once


@node
class RetryBudget(Node):
    """Retries in flight to a service are at most max(min_concurrency, percent x active requests)."""
    percent: float
    min_concurrency: int


@node
class Sidecar(Node):
    """IR Sidecar."""
    inbound_port: int
    outbound_port: int
    admin_port: int
    app_host: str                      # where the inbound listener forwards to (the local app)
    app_port: int
    escaped_slashes: str               # "reject" (400), "decode" (%2F -> /, then normalise) or "keep"
    normalize_path: bool               # RFC 3986 dot-segment removal; always true
    merge_slashes: bool                # `//` -> `/`; always true


@node
class PathMatch(Node):
    """IR PathMatch."""
    kind: str          # "exact" | "prefix" (raw string prefix) | "segment_prefix" | "regex" (RE2, full match)
    value: str


@node
class HeaderMatch(Node):
    """IR HeaderMatch."""
    name: str          # lower case
    kind: str          # "exact" | "prefix" | "suffix" | "regex" | "present" | "absent"
    value: str | None  # None for present/absent
    invert: bool       # string kinds only: the header must be present and not match
    ignore_case: bool  # string kinds only


@node
class QueryMatch(Node):
    """IR QueryMatch."""
    name: str
    kind: str          # "exact" | "regex" | "present"; a repeated key is tested on its first value
    value: str | None


@node
class Match(Node):
    """All conditions must hold (AND). A route matches when any of its matches does (OR)."""
    path: PathMatch | None             # None: any path
    headers: tuple[HeaderMatch, ...]
    query: tuple[QueryMatch, ...]
    methods: tuple[str, ...] | None    # None: any method


@node
class SubsetRef(Node):
    """IR SubsetRef."""
    service: str
    subset: str


@node
class WeightedSubset(Node):
    """IR WeightedSubset."""
    service: str
    subset: str
    weight: int


@node
class Split(Node):
    """Pick by `value mod total` over cumulative weights in written order when the key header holds one
    unsigned 64-bit decimal integer, at random (by weight) otherwise. Zero weights are never picked."""
    targets: tuple[WeightedSubset, ...]
    key_header: str | None
    total_weight: int


@node
class Retry(Node):
    """IR Retry."""
    num_retries: int                   # retries after the first attempt
    retry_on: tuple[str, ...]          # conditions, canonical names
    retriable_status_codes: tuple[int, ...]
    per_try_timeout_ms: int            # 0: each try may use what is left of the route timeout
    backoff_base_ms: int
    backoff_max_ms: int
    allow_non_idempotent: bool


@node
class FaultAbort(Node):
    """IR FaultAbort."""
    http_status: int
    percent: float


@node
class FaultDelay(Node):
    """IR FaultDelay."""
    duration_ms: int
    percent: float


@node
class Fault(Node):
    """IR Fault."""
    abort: FaultAbort | None
    delay: FaultDelay | None


@node
class Mirror(Node):
    """IR Mirror."""
    service: str
    subset: str
    percent: float


@node
class HeaderChanges(Node):
    """Applied in this order: remove, then set (replace or add), then add (append)."""
    remove: tuple[str, ...]
    set: tuple[tuple[str, str], ...]
    add: tuple[tuple[str, str], ...]


@node
class Route(Node):
    """IR Route."""
    name: str
    source: str
    matches: tuple[Match, ...]         # never empty; a route without `match` has one empty match
    to: SubsetRef | None               # exactly one of `to` and `split`
    split: Split | None
    timeout_ms: int                    # whole request including retries; 0 = no timeout
    retry: Retry | None
    fault: Fault | None
    mirror: Mirror | None
    request_headers: HeaderChanges
    response_headers: HeaderChanges


@node
class Principal(Node):
    """IR Principal."""
    kind: str          # "exact" (one SPIFFE ID) or "prefix" (a trust domain or namespace)
    value: str


@node
class AuthzRule(Node):
    """IR AuthzRule."""
    name: str
    action: str        # "allow" | "deny"
    source: str
    principals: tuple[Principal, ...] | None   # None: any peer; else any of these
    path: PathMatch | None             # matched on the normalised path
    methods: tuple[str, ...] | None
    headers: tuple[HeaderMatch, ...]


@node
class Authorization(Node):
    """Any matching deny denies (403); else any matching allow allows; else the default."""
    default: str
    rules: tuple[AuthzRule, ...]
    source: str | None                 # None: the service has no authorization block (default allow)


@node
class Mtls(Node):
    """Mutual TLS of a service's sidecar (docs/language.md §4.1)."""
    mode: str          # "strict" | "permissive" | "disable": what the sidecar's inbound listener accepts
    directory: str     # the sidecar's identity files: cert.pem (its SPIFFE ID as URI SAN), key.pem and
                       # ca.pem (the trusted mesh CA); watched for rotation


@node
class Service(Node):
    """IR Service."""
    name: str
    namespace: str
    identity: str                      # SPIFFE ID
    port: int
    source: str
    subsets: tuple[Subset, ...]
    limits: Limits
    outlier: Outlier | None
    retry_budget: RetryBudget | None
    sidecar: Sidecar
    routes: tuple[Route, ...]          # evaluation order
    authorization: Authorization
    mtls: Mtls


@node
class Program(Node):
    """IR Program."""
    schema_version: int
    trust_domain: str
    services: tuple[Service, ...]      # sorted by name

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)
