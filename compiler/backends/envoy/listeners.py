"""The two listeners of a sidecar and their HTTP connection managers, with the HTTP filter order
in one place.

Filter order (Envoy runs HTTP filters in list order on the request path):

    inbound:  rbac.deny -> rbac.allow -> router
    outbound: cors -> fault -> router   (cors only when a route of the program has `cors`)

- `rbac.deny` first: any matching deny rule denies, whatever the allow rules say.
- `rbac.allow` next (only under `default deny`): a request that no deny rule took is admitted
  only if an allow rule matches it.
- `fault` on the outbound side, before the router: an abort is a local reply that never reaches
  the router, so it is never forwarded, retried or mirrored, and a delay runs before the router
  starts the route timeout (the language's order). The filter-level config is empty: only the
  per-route `HTTPFault` of a route with a `fault` injects anything, and request headers such as
  `x-envoy-fault-abort-request` have no effect (they need `header_abort`/`header_delay`).
- `cors` on the outbound side, first (where Istio puts it too): it acts only on a route with a
  per-route `CorsPolicy` (typed_per_filter_config), after the route is chosen; a preflight from an
  allowed origin is answered before the fault filter could delay or abort it, and a fault's abort
  (a local reply of a later filter) still gets the CORS response headers. Without any `cors` in
  the program the filter is left out, so nothing runs for it.
- `router` last: it is the terminal filter that forwards the request.

The inbound listener follows the service's `mtls` mode: `disable`, one plaintext filter chain;
`strict`, one TLS chain that requires a client certificate from the mesh CA; `permissive`, the
TLS inspector tells a ClientHello from plaintext, a TLS chain takes the first and a plaintext
chain the rest. Every chain has the same RBAC filters: an identity rule matches only a verified
certificate's URI SAN, so it never matches a plaintext caller, as the language says.
"""

from __future__ import annotations

from compiler import ir
from compiler.backends.envoy import defaults, names
from compiler.backends.envoy.access_log import access_log
from compiler.backends.envoy.clusters import kib
from compiler.backends.envoy.rbac import provenance, rbac_filters
from compiler.backends.envoy.routes import inbound_route_configuration
from compiler.backends.envoy.tls import CLIENT_CERT_DETAILS, TLS_INSPECTOR, Sds, downstream_tls
from compiler.backends.envoy.tracing import hcm_tracing
from compiler.backends.envoy.values import duration, socket_address

# The HTTP filters in the order Envoy runs them; each listener uses the ones it needs, in this order.
FILTER_ORDER = (names.RBAC_DENY_FILTER, names.RBAC_ALLOW_FILTER, names.CORS_FILTER, names.FAULT_FILTER,
                names.ROUTER_FILTER)

FAULT_FILTER = {"name": names.FAULT_FILTER, "typed_config": {"@type": names.FAULT}}
CORS_FILTER = {"name": names.CORS_FILTER, "typed_config": {"@type": names.CORS}}
ROUTER_FILTER = {"name": names.ROUTER_FILTER, "typed_config": {"@type": names.ROUTER}}

# `escaped_slashes` of the sidecar -> Envoy's action on %2F and %5C in a path (language §6).
ESCAPED_SLASHES = {"reject": "REJECT_REQUEST", "decode": "UNESCAPE_AND_FORWARD", "keep": "KEEP_UNCHANGED"}


def ordered(filters: list[dict]) -> list[dict]:
    """The filters in FILTER_ORDER (a filter not listed there is a bug)."""
    return sorted(filters, key=lambda f: FILTER_ORDER.index(f["name"]))


def connection_manager(stat_prefix: str, sidecar: ir.Sidecar, filters: list[dict], routes: dict) -> dict:
    """An `HttpConnectionManager` with the sidecar's path normalisation (language §6): dot
    segments removed (`normalize_path`), slashes merged, escaped slashes as configured."""
    hcm = {
        "@type": names.HCM,
        "codec_type": "AUTO",
        "http_filters": ordered(filters),
        "merge_slashes": sidecar.merge_slashes,
        "normalize_path": sidecar.normalize_path,
        "path_with_escaped_slashes_action": ESCAPED_SLASHES[sidecar.escaped_slashes],
        "stat_prefix": stat_prefix,
        # Envoy's own default is none: the language's is `request_headers_timeout` (10 s).
        "request_headers_timeout": duration(sidecar.request_headers_timeout_ms),
    }
    # The stream idle timeout bounds silence on a request whatever its route timeout (`timeout
    # none` too): Envoy's default is the language's (5 min), written only when it differs.
    if sidecar.stream_idle_timeout_ms != defaults.STREAM_IDLE_TIMEOUT_MS:
        hcm["stream_idle_timeout"] = duration(sidecar.stream_idle_timeout_ms)
    if sidecar.max_request_headers_bytes != defaults.MAX_HEADERS_BYTES:
        hcm["max_request_headers_kb"] = kib(sidecar.max_request_headers_bytes)
    common: dict[str, str | int] = {}
    if sidecar.idle_timeout_ms != defaults.IDLE_TIMEOUT_MS:
        common["idle_timeout"] = duration(sidecar.idle_timeout_ms)
    if sidecar.max_request_headers != defaults.MAX_HEADERS_COUNT:
        common["max_headers_count"] = sidecar.max_request_headers
    if common:
        hcm["common_http_protocol_options"] = common
    if sidecar.access_log:
        hcm["access_log"] = access_log(sidecar.access_log, stat_prefix)
    hcm.update(routes)
    return hcm


def _chain(hcm: dict) -> dict:
    return {"filters": [{"name": names.HCM_FILTER, "typed_config": hcm}]}


def _traced(hcm: dict, svc: ir.Service, tracing: ir.Tracing | None) -> dict:
    """The connection manager with the mesh's tracing (docs/observability.md), if any."""
    if tracing is not None:
        hcm["tracing"] = hcm_tracing(tracing, svc.name)
    return hcm


def _direction(listener: dict, direction: str, tracing: ir.Tracing | None) -> dict:
    """With tracing, the listener's direction: it names and kinds its spans (`ingress` SERVER,
    `egress` CLIENT)."""
    if tracing is not None:
        listener["traffic_direction"] = direction
    return listener


def _listener(name: str, sidecar: ir.Sidecar, port: int, chains: list[dict], metadata: dict) -> dict:
    return {
        "address": socket_address(sidecar.listen_host, port),
        # A second process on the same port is an error rather than a silent traffic share.
        "enable_reuse_port": False,
        "filter_chains": chains,
        "metadata": {"filter_metadata": {names.METADATA_KEY: metadata}},
        "name": name,
    }


def inbound_listener(svc: ir.Service, sds: Sds | None, tracing: ir.Tracing | None = None) -> dict:
    """Traffic for the service: its authorization, then its local application. `sds` locates the
    sidecar's secrets (None when it has no identity, and then its mode is `disable`)."""
    hcm = _traced(connection_manager("inbound", svc.sidecar, rbac_filters(svc.authorization) + [ROUTER_FILTER],
                                     {"route_config": inbound_route_configuration(svc)}), svc, tracing)
    mode = svc.mtls.mode
    if mode == "disable":
        return _direction(_listener(names.INBOUND_LISTENER, svc.sidecar, svc.sidecar.inbound_port, [_chain(hcm)],
                                    provenance(svc)), "INBOUND", tracing)
    assert sds is not None  # a sidecar with mTLS has an identity
    # The TLS chain comes first: the chain tests and tools read first is the one with the identities.
    tls_chain = {**_chain({**hcm, **CLIENT_CERT_DETAILS}), "transport_socket": downstream_tls(sds)}
    if mode == "strict":
        chains = [tls_chain]
    else:  # permissive
        chains = [{**tls_chain, "filter_chain_match": {"transport_protocol": "tls"}}, _chain(hcm)]
    listener = _listener(names.INBOUND_LISTENER, svc.sidecar, svc.sidecar.inbound_port, chains, provenance(svc))
    if mode == "permissive":
        listener["listener_filters"] = [TLS_INSPECTOR]
    return _direction(listener, "INBOUND", tracing)


def outbound_listener(svc: ir.Service, routes: dict, tracing: ir.Tracing | None = None, cors: bool = False) -> dict:
    """The service's calls to other services. `routes` is either the inline route configuration
    (`{"route_config": ...}`, static bootstrap) or where to load it from (`{"rds": ...}`); `cors`:
    a route of the program has a CORS policy (the CORS filter is in the chain)."""
    filters = [CORS_FILTER, FAULT_FILTER, ROUTER_FILTER] if cors else [FAULT_FILTER, ROUTER_FILTER]
    hcm = _traced(connection_manager("outbound", svc.sidecar, filters, routes), svc, tracing)
    return _direction(_listener(names.OUTBOUND_LISTENER, svc.sidecar, svc.sidecar.outbound_port, [_chain(hcm)],
                                {"service": svc.name, "source": str(svc.source)}), "OUTBOUND", tracing)


def rds(path: str) -> dict:
    """The outbound routes from a file that Envoy watches (no `watched_directory`: Envoy then
    watches the file itself and reloads it when a new file is renamed over it)."""
    return {"rds": {"config_source": {"path_config_source": {"path": path}, "resource_api_version": "V3"},
                    "route_config_name": names.OUTBOUND_ROUTES}}
