"""Stable names of what only the Envoy backend emits: resources, filters, type URLs, files.

The names both targets share (clusters, Host domains, SNI) are decided before the IR
(compiler/ir/names.py) and read from it. These are derived from IR names only, never from
positions or counters that would change when an unrelated part of the policy changes, so a
recompile renames nothing that did not change.
"""

from __future__ import annotations

# ---- type URLs (`@type` of an Any) ------------------------------------------------------------
_T = "type.googleapis.com/envoy."
CLUSTER = _T + "config.cluster.v3.Cluster"
LISTENER = _T + "config.listener.v3.Listener"
ROUTE_CONFIGURATION = _T + "config.route.v3.RouteConfiguration"
HCM = _T + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
FAULT = _T + "extensions.filters.http.fault.v3.HTTPFault"
CORS = _T + "extensions.filters.http.cors.v3.Cors"
CORS_POLICY = _T + "extensions.filters.http.cors.v3.CorsPolicy"
RBAC = _T + "extensions.filters.http.rbac.v3.RBAC"
ROUTER = _T + "extensions.filters.http.router.v3.Router"
SECRET = _T + "extensions.transport_sockets.tls.v3.Secret"
DOWNSTREAM_TLS = _T + "extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS = _T + "extensions.transport_sockets.tls.v3.UpstreamTlsContext"
TLS_INSPECTOR = _T + "extensions.filters.listener.tls_inspector.v3.TlsInspector"
OPENTELEMETRY = _T + "config.trace.v3.OpenTelemetryConfig"
OPENTELEMETRY_TRACER = "envoy.tracers.opentelemetry"
OTLP_CLUSTER = "otlp_collector"  # the collector of `tracing { otlp … }` (static bootstrap, or the CDS files)
FILE_ACCESS_LOG = _T + "extensions.access_loggers.file.v3.FileAccessLog"

# ---- filter names -----------------------------------------------------------------------------
HCM_FILTER = "envoy.filters.network.http_connection_manager"
FAULT_FILTER = "envoy.filters.http.fault"      # also the key of the per-route fault config
CORS_FILTER = "envoy.filters.http.cors"        # also the key of the per-route CorsPolicy
RBAC_DENY_FILTER = "envoy.filters.http.rbac.deny"
RBAC_ALLOW_FILTER = "envoy.filters.http.rbac.allow"
ROUTER_FILTER = "envoy.filters.http.router"
TLS_INSPECTOR_FILTER = "envoy.filters.listener.tls_inspector"
TLS_SOCKET = "envoy.transport_sockets.tls"
FILE_ACCESS_LOGGER = "envoy.access_loggers.file"

# ---- resources --------------------------------------------------------------------------------
INBOUND_LISTENER = "inbound"
OUTBOUND_LISTENER = "outbound"
OUTBOUND_ROUTES = "outbound"     # the outbound RouteConfiguration (xds/rds-outbound.json, or a sidecar's own)
INBOUND_ROUTES = "inbound"       # the inline route configuration of an inbound listener
IDENTITY_SECRET = "identity"     # the sidecar's certificate and key (SDS)
CA_SECRET = "mesh_ca"            # the mesh CA that peers' certificates must chain to (SDS)
# The TLS name (SNI, DNS SAN) of `meshc serve --ca`'s own certificate, which the bootstraps and
# `meshc status` ask for (compiler/control/sds.py issues it).
CONTROL_SERVER_NAME = "meshc-control"


def control_id(trust_domain: str) -> str:
    """The SPIFFE ID of `meshc serve --ca`: its certificate's URI SAN, which bootstraps match."""
    return f"spiffe://{trust_domain}/meshc/control"


# The key of Envoy's `metadata.filter_metadata` under which every resource records its provenance.
METADATA_KEY = "meshc"


def route(service: str, route_name: str, index: int, count: int) -> str:
    """One Envoy route per IR match: `SERVICE/ROUTE`, with `/N` (1-based) when the IR route has
    several matches (Envoy ORs routes, not matches within one route)."""
    return f"{service}/{route_name}" if count == 1 else f"{service}/{route_name}/{index + 1}"


# ---- files ------------------------------------------------------------------------------------
# xDS files, relative to the xds directory (`-o DIR/xds`, or `--xds-dir` at run time).
XDS_DIR = "xds"
CDS = "cds.json"
SCOPES = "scopes"   # xds/scopes/KEY/: the files of one scope
RDS = "rds-outbound.json"


def lds(service: str) -> str:
    return f"{service}/lds.json"


def proxy_cds(service: str) -> str:
    """The clusters of one sidecar, when they name its own secrets (mTLS: no shared CDS file)."""
    return f"{service}/cds.json"


SCOPE_KEY_LENGTH = 16   # hex digits of a scope's name (scope_key)


def scope_key(hosts: tuple[str, ...]) -> str:
    """A scope's name in the file layout: the first 16 hex digits of the SHA-256 of its
    destinations' names, one per line, sorted (compiler/ir/scope.py). Derived from IR names only:
    a scope keeps its name while its destinations stay the same."""
    import hashlib

    return hashlib.sha256("\n".join(hosts).encode()).hexdigest()[:SCOPE_KEY_LENGTH]


def scope_rds(hosts: tuple[str, ...]) -> str:
    """The outbound routes of the sidecars whose scope is `hosts` (not the whole program)."""
    return f"{SCOPES}/{scope_key(hosts)}/rds-outbound.json"


def proxy_rds(service: str) -> str:
    """The outbound routes of the sidecars of one service whose route table is their own (routes
    for it as the caller: compiler/ir/scope.py `own_routes`; its workloads' sidecars share it)."""
    return f"{service}/rds-outbound.json"


def scope_cds(hosts: tuple[str, ...]) -> str:
    """The clusters of the sidecars whose scope is `hosts`, without mTLS."""
    return f"{SCOPES}/{scope_key(hosts)}/cds.json"


def link_target(link: str, target: str) -> str:
    """`target` (relative to the xds directory) as the target of a symbolic link at `link`
    (relative to it too): relative to the link's directory, so the directory can move."""
    import posixpath

    return posixpath.relpath(target, posixpath.dirname(link))


def sds(service: str, secret: str) -> str:
    """One secret of one sidecar: a file-based SDS file holds exactly one secret (Envoy rejects
    a second: "Unexpected SDS secrets length")."""
    return f"{service}/sds-{secret}.json"


def output_path(xds_relative: str) -> str:
    """An xDS file's path relative to the output directory."""
    return f"{XDS_DIR}/{xds_relative}"


def bootstrap_file(service: str) -> str:
    return f"{service}.envoy.json"
