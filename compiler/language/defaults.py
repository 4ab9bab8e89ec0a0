"""The defaults of the language that are not settings of a block (those are described with their
block in compiler/language/settings.py), one constant each. Lowering writes every one into the IR,
so neither backend nor the native proxy ever decides a default of its own. docs/language.md §19
lists them all (generated from DESCRIBED below and from the settings, compiler/tooling/reference.py)."""

NAMESPACE = "default"              # a service's namespace when it writes none
ROUTE_TIMEOUT_MS = 15_000          # Envoy's route default, made explicit
RETRY_BACKOFF_MAX_FACTOR = 10      # Envoy caps the backoff at 10 x base unless told otherwise
IMPLICIT_SUBSET = "default"        # the subset made by a service's own `endpoints`
IMPLICIT_ROUTE = "default"         # the route of a service without a routes block
AUTHORIZATION_DEFAULT = "allow"    # a service without an authorization block admits every request
APP_HOST = "127.0.0.1"             # where the inbound listener forwards to, unless `sidecar { app }`
MIRROR_PERCENT = 100.0             # share of a route's requests a `mirror` copies, unless written

# ---- what the sidecars apply that the language does not (yet) let a policy write ------------------
# Each is written into the IR by lowering, so that both targets apply the same value.
LISTEN_HOST = "127.0.0.1"          # every listener binds the loopback interface only
CONNECT_TIMEOUT_MS = 1000          # a connection to an endpoint (TLS included) within this, or a connect failure
UPSTREAM_IDLE_TIMEOUT_MS = 3_600_000   # a pooled upstream connection idle this long is closed (Envoy's 1 h)
MAX_RESPONSE_HEADERS_BYTES = 60 * 1024  # a larger upstream response head is a 502 (Envoy's 60 KiB)
MAX_REQUEST_BODY_BYTES = 0         # 0: unlimited, the body streams (as Envoy's)
DRAIN_TIMEOUT_MS = 5000            # native proxy, on SIGTERM: in-flight requests may take this long to finish
MIRROR_TIMEOUT_MS = 15_000         # a mirror copy on a `timeout none` route is dropped after this (native)
REDIRECT_STATUS = 301             # `redirect { … }` without `status`
DIRECT_RESPONSE_MAX_BYTES = 4096   # the largest `respond` body (Envoy's max_direct_response_body_size_bytes)

# What docs/language.md §19 shows of the constants above: (construct, constant, how its value reads:
# `name`, `duration` in ms, `percent`, `bytes` (0: unlimited), `factor`, or a rule in words).
DESCRIBED = (
    ("service namespace", "NAMESPACE", "name"),
    ("service identity", "", "`spiffe://<trust domain>/ns/<namespace>/sa/<name>`"),
    ("route timeout (`timeout`)", "ROUTE_TIMEOUT_MS", "duration"),
    ("retry backoff maximum", "RETRY_BACKOFF_MAX_FACTOR", "factor"),
    ("mirror share (`mirror S.SUBSET [PCT]`)", "MIRROR_PERCENT", "percent"),
    ("subset of service-level `endpoints`", "IMPLICIT_SUBSET", "name"),
    ("route of a service without a `routes` block", "IMPLICIT_ROUTE", "name"),
    ("authorization of a service without a block", "AUTHORIZATION_DEFAULT", "name"),
    ("sidecar application host (`app`)", "APP_HOST", "name"),
    ("where every listener binds", "LISTEN_HOST", "name"),
    ("connect timeout, to every endpoint", "CONNECT_TIMEOUT_MS", "duration"),
    ("idle pooled connection to an endpoint, closed after", "UPSTREAM_IDLE_TIMEOUT_MS", "duration"),
    ("largest response head from an endpoint (else 502)", "MAX_RESPONSE_HEADERS_BYTES", "bytes"),
    ("largest request body (else 413)", "MAX_REQUEST_BODY_BYTES", "bytes"),
    ("drain on SIGTERM (native proxy)", "DRAIN_TIMEOUT_MS", "duration"),
    ("mirror copy on a `timeout none` route, dropped after (native proxy)", "MIRROR_TIMEOUT_MS", "duration"),
)
