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
