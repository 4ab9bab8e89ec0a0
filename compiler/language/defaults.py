"""Every default of the language, in one place. Lowering writes them into the IR explicitly,
so neither backend ever decides a default of its own. docs/language.md quotes these values."""

TRUST_DOMAIN = "cluster.local"
MTLS_MODE = "disable"              # mTLS is one line away (`mesh { mtls strict }`), never a surprise
MTLS_MODES = ("strict", "permissive", "disable")
CERTIFICATES = "/etc/meshc/certs"  # identity files of service S: CERTIFICATES/S/{cert,key,ca}.pem
NAMESPACE = "default"

ROUTE_TIMEOUT_MS = 15_000          # Envoy's route default, made explicit

RETRY_ATTEMPTS = 2                 # retries after the first attempt (Istio's default)
RETRY_ON = ("5xx",)
RETRY_BACKOFF_BASE_MS = 25         # Envoy's default base interval
RETRY_BACKOFF_MAX_FACTOR = 10      # Envoy caps the backoff at 10 x base unless told otherwise

LIMIT_CONNECTIONS = 1024           # Envoy's circuit-breaker defaults
LIMIT_PENDING = 1024
LIMIT_REQUESTS = 1024
LIMIT_RETRIES = 3

OUTLIER_CONSECUTIVE_5XX = 5
OUTLIER_INTERVAL_MS = 10_000
OUTLIER_EJECTION_MS = 30_000
OUTLIER_MAX_EJECTED_PERCENT = 10.0
OUTLIER_CONSECUTIVE_GATEWAY_ERRORS = 0  # not used unless written

RETRY_PER_TRY_TIMEOUT_MS = 0       # each try may use what is left of the route timeout

IMPLICIT_SUBSET = "default"        # the subset made by a service's own `endpoints`
IMPLICIT_ROUTE = "default"         # the route of a service without a routes block
AUTHORIZATION_DEFAULT = "allow"    # a service without an authorization block admits every request

BUDGET_PERCENT = 20.0              # Envoy's retry budget defaults
BUDGET_MIN_CONCURRENCY = 3

SIDECAR_INBOUND_PORT = 15006       # Istio's sidecar ports
SIDECAR_OUTBOUND_PORT = 15001
SIDECAR_ADMIN_PORT = 15000
APP_HOST = "127.0.0.1"
ESCAPED_SLASHES = "reject"         # %2F / %5C in a path: 400

FAULT_PERCENT = 100.0
MIRROR_PERCENT = 100.0

# ---- what the sidecars apply that the language does not (yet) let a policy write ------------------
# Each is written into the IR by lowering, so that both targets apply the same value.
LISTEN_HOST = "127.0.0.1"          # every listener binds the loopback interface only
CONNECT_TIMEOUT_MS = 1000          # a connection to an upstream endpoint (TLS included) within this, or a connect failure
UPSTREAM_IDLE_TIMEOUT_MS = 3_600_000   # a pooled upstream connection idle this long is closed (Envoy's 1 h)
MAX_RESPONSE_HEADERS_BYTES = 60 * 1024  # a larger upstream response head is a 502 (Envoy's 60 KiB)
MAX_REQUEST_HEADERS_BYTES = 60 * 1024   # a larger request head is a 431 (Envoy's max_request_headers_kb, 60)
MAX_REQUEST_BODY_BYTES = 0         # 0: unlimited, the body streams (as Envoy's)
IDLE_TIMEOUT_MS = 3_600_000        # a client connection idle this long is closed (Envoy's 1 h)
DRAIN_TIMEOUT_MS = 5000            # native proxy, on SIGTERM: in-flight requests may take this long to finish
MIRROR_TIMEOUT_MS = 15_000         # a mirror copy on a `timeout none` route is dropped after this (native)
