"""The Istio objects of a program, and the diagnostics of what Istio cannot carry exactly.

Per service, in its file `NAMESPACE/SERVICE.yaml` (compiler/backends/kube/objects.py):
- `ServiceEntry` with the static endpoints of its endpoint-list subsets (each endpoint labelled
  with its subset, `meshc.dev/subset`), when it has such subsets; a service whose subsets are all
  label-selected is the team's Kubernetes Service and gets none;
- `DestinationRule`: its subsets (labels), round robin, the connection pool (limits, connect and
  idle timeouts), outlier detection, the retry budget, and mTLS towards it (ISTIO_MUTUAL or not);
- `VirtualService`: its routes (compiler/backends/istio/routes.py);
- `PeerAuthentication` (its mTLS mode) and `AuthorizationPolicy` (security.py) for its workload;
- `Sidecar`: the hosts its workload may call (its scope, compiler/ir/scope.py), registry only;
- `EnvoyFilter`: its sidecar's HTTP connection manager settings that Istio has no API for (path
  normalisation with escaped slashes, request-headers and idle timeouts, header limits), merged into
  the sidecar's inbound and outbound connection managers.
"""

from __future__ import annotations

import ipaddress

from compiler import ir
from compiler.backends.istio import routes, security
from compiler.backends.istio.values import (
    API_ENVOYFILTER,
    API_NETWORKING,
    API_SECURITY,
    APP_LABEL,
    PORT_NAME,
    SUBSET_LABEL,
    duration,
    fqdn,
    istio_hosts,
    where,
)
from compiler.backends.kube import KubeObject
from compiler.backends.kube.names import check_dns_subdomain
from compiler.backends.located import located
from compiler.core.diagnostics import Diagnostic
from compiler.ir.names import short_name
from compiler.ir.scope import scopes

KINDS = ("ServiceEntry", "DestinationRule", "VirtualService", "PeerAuthentication", "AuthorizationPolicy",
         "Sidecar", "EnvoyFilter")

# What an Istio sidecar has of its own (not settable per workload by the objects above): its ports.
ISTIO_PORTS = {"inbound_port": 15006, "outbound_port": 15001, "admin_port": 15000}
ISTIO_DRAIN_MS = 5000            # MeshConfig.defaultConfig.terminationDrainDuration's default
ESCAPED_SLASHES = {"reject": "REJECT_REQUEST", "decode": "UNESCAPE_AND_FORWARD", "keep": "KEEP_UNCHANGED"}
HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


class IstioTarget:
    name: str = "istio"
    kinds: tuple[str, ...] = KINDS

    def build(self, program: ir.Program, sources: dict) -> tuple[list[KubeObject], list[Diagnostic]]:
        diags: list[Diagnostic] = []
        objects: list[KubeObject] = []
        scope = scopes(program)
        services = {s.name: s for s in program.services}
        # a Sidecar's egress imports each host of a service in its scope: its FQDN and its written hosts
        egress_host = {s.name: [f"{s.namespace}/{h}" for h in (fqdn(s), *istio_hosts(s)[0])]
                       for s in program.services}
        # shared by every sidecar whose scope is the whole program
        everyone = sorted(h for hs in egress_host.values() for h in hs)
        restricted = False
        for svc in program.services:
            def obj(api: str, kind: str, name: str, spec: dict, source: ir.Location | None = svc.source,
                    svc: ir.Service = svc) -> None:
                objects.append(KubeObject(api, kind, name, svc.namespace, {"spec": spec}, where(source), svc.name))

            kname = short_name(svc.name)   # (a name several namespaces declare: each object in its namespace)
            account = _service_account(svc, program, sources, diags)
            entry = _service_entry(svc, account, sources, diags)
            if entry is not None:
                obj(API_NETWORKING, "ServiceEntry", kname, entry)
            obj(API_NETWORKING, "DestinationRule", kname, _destination_rule(svc, sources, diags))
            first = svc.routes[0].source if svc.routes else svc.source
            spec = routes.virtual_service(svc, services, sources, diags)
            obj(API_NETWORKING, "VirtualService", kname, spec, first)
            obj(API_SECURITY, "PeerAuthentication", kname, security.peer_authentication(svc))
            for suffix, _, spec in security.authorization_policies(svc, sources, diags):
                obj(API_SECURITY, "AuthorizationPolicy", f"{kname}-{suffix}", spec, svc.authorization.source)
            mine = scope[svc.name]
            hosts = everyone if mine.full else sorted(h for n in mine.services for h in egress_host[n])
            obj(API_NETWORKING, "Sidecar", kname, {"workloadSelector": {"labels": {APP_LABEL: kname}},
                                                      "egress": [{"hosts": hosts}],
                                                      "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})
            if not restricted and set(mine.services) != set(mine.hosts):
                restricted = True
                extra = sorted(set(mine.services) - set(mine.hosts))
                diags.append(located("W0906", f"Istio routes `{svc.name}`'s requests to `{extra[0]}` by its Host: "
                                              "meshc answers them 404 (out of scope)", svc.source, sources,
                                     hint=f"`{extra[0]}` is not in `{svc.name}`'s scope, but its subsets are (a "
                                          "route sends there): an Istio Sidecar's egress imports a host whole. "
                                          "Its authorization still denies the request (403 instead of 404)"))
            ejecting = [services[n] for n in mine.services if services[n].outlier is not None]
            obj(API_ENVOYFILTER, "EnvoyFilter", kname, _envoy_filter(svc, ejecting))
            _sidecar_settings(svc, sources, diags)
            _workload_settings(svc, sources, diags)
        if program.tracing is not None:
            diags.append(located("W0905", "tracing is not written for Istio: it is the mesh's Telemetry and "
                                          "MeshConfig.extensionProviders", program.tracing.source, sources,
                                 hint="add an `opentelemetry` extension provider for the collector to MeshConfig "
                                      "and a Telemetry resource with the sampling percentage"))
        return objects, diags


def _service_account(svc: ir.Service, program: ir.Program, sources: dict, diags: list[Diagnostic]) -> str | None:
    """The service account of the workload: Istio's identities are spiffe://TD/ns/NAMESPACE/sa/ACCOUNT."""
    prefix = f"spiffe://{program.trust_domain}/ns/{svc.namespace}/sa/"
    account = svc.identity[len(prefix):] if svc.identity.startswith(prefix) else ""
    if not account or "/" in account:
        diags.append(located("E0908", f"Istio cannot give service `{svc.name}` the identity `{svc.identity}`",
                             svc.source, sources,
                             hint=f"an Istio workload's identity is its service account's: `{prefix}ACCOUNT`"))
        return None
    diags.extend(check_dns_subdomain(account, "service account", svc.source, sources))
    return account


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _service_entry(svc: ir.Service, account: str | None, sources: dict, diags: list[Diagnostic]) -> dict | None:
    static = [s for s in svc.subsets if not s.labels]
    if not static:
        return None
    if len(static) != len(svc.subsets):
        diags.append(located("E0909", f"service `{svc.name}` mixes label-selected and endpoint subsets, which Istio "
                                      "cannot serve under one host", svc.source, sources,
                             hint="a ServiceEntry for the endpoints and the Kubernetes Service for the pods would "
                                  "both claim the host; make every subset of a service one kind"))
    endpoints = []
    for sub in static:
        for e in sub.endpoints:
            ep: dict = {"address": e.host, "ports": {PORT_NAME: e.port},
                        "labels": {APP_LABEL: short_name(svc.name), SUBSET_LABEL: sub.name}}
            if account is not None:
                ep["serviceAccount"] = account
            endpoints.append(ep)
    dns = any(not _is_ip(e.host) for sub in static for e in sub.endpoints)
    return {"hosts": [fqdn(svc)], "location": "MESH_INTERNAL", "resolution": "DNS" if dns else "STATIC",
            "ports": [{"number": svc.port, "name": PORT_NAME, "protocol": "HTTP"}], "endpoints": endpoints}


ISTIO_UNLIMITED = 2**32 - 1   # Istio's value for an absent connection-pool field


def _destination_rule(svc: ir.Service, sources: dict, diags: list[Diagnostic]) -> dict:
    lim, up = svc.limits, svc.upstream
    # A connection-pool field is an int32 in Istio's CRD; Istio gives an absent one Envoy's
    # 2^32-1 (no limit), so that value is written by leaving the field out. Any other value above
    # 2^31-1 is refused by the CRD check of the output (E0940).
    tcp: dict = {"maxConnections": lim.max_connections, "connectTimeout": duration(up.connect_timeout_ms)}
    http: dict = {"http1MaxPendingRequests": lim.max_pending_requests, "http2MaxRequests": lim.max_requests,
                  "maxRetries": lim.max_retries, "idleTimeout": duration(up.idle_timeout_ms)}
    for fields in (tcp, http):
        for name in [k for k, v in fields.items() if v == ISTIO_UNLIMITED]:
            del fields[name]
    policy: dict = {
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "connectionPool": {"tcp": tcp, "http": http},
        "tls": {"mode": "DISABLE" if svc.mtls.mode == "disable" else "ISTIO_MUTUAL"},
    }
    o = svc.outlier
    if o is not None:
        od: dict = {"consecutive5xxErrors": o.consecutive_5xx, "interval": duration(o.interval_ms),
                    "baseEjectionTime": duration(o.base_ejection_ms),
                    "maxEjectionPercent": int(o.max_ejection_percent),
                    # Envoy's panic threshold (50 %), which meshc keeps; Istio's default 0 turns it off
                    "minHealthPercent": 50}
        if o.consecutive_gateway_errors:
            od["consecutiveGatewayErrors"] = o.consecutive_gateway_errors
        policy["outlierDetection"] = od
        if o.max_ejection_percent != int(o.max_ejection_percent):
            diags.append(located("W0904", f"Istio's `maxEjectionPercent` is a whole number: "
                                          f"{o.max_ejection_percent:g}% of `{svc.name}` becomes "
                                          f"{int(o.max_ejection_percent)}%", svc.source, sources))
    b = svc.retry_budget
    if b is not None:
        policy["retryBudget"] = {"percent": b.percent, "minRetryConcurrency": b.min_concurrency}
    subsets = []
    for sub in svc.subsets:
        labels = dict(sub.labels) if sub.labels else {SUBSET_LABEL: sub.name}
        subsets.append({"name": sub.name, "labels": labels})
    return {"host": fqdn(svc), "trafficPolicy": policy, "subsets": subsets}


def _envoy_filter(svc: ir.Service, ejecting: list[ir.Service]) -> dict:
    """The sidecar's connection manager settings, merged into Istio's inbound and outbound ones; and
    for each destination with outlier detection it calls, its clusters' `update_merge_window` of
    0 s, as meshc's Envoy output sets it (an ejection or a return reaches the load balancer at once,
    docs/language.md 5.5; Istio keeps Envoy's 1 s and DestinationRule has no field for it)."""
    sc = svc.sidecar
    hcm = {
        "@type": HCM_TYPE,
        "normalize_path": sc.normalize_path,
        "merge_slashes": sc.merge_slashes,
        "path_with_escaped_slashes_action": ESCAPED_SLASHES[sc.escaped_slashes],
        "request_headers_timeout": duration(sc.request_headers_timeout_ms),
        "stream_idle_timeout": duration(sc.stream_idle_timeout_ms),
        "max_request_headers_kb": sc.max_request_headers_bytes // 1024,
        "common_http_protocol_options": {"idle_timeout": duration(sc.idle_timeout_ms),
                                         "max_headers_count": sc.max_request_headers},
    }
    # Inbound, the caller's `x-forwarded-client-cert` is never passed on (Istio's sidecars append to
    # it, APPEND_FORWARD): replaced by the verified peer's (its URI; Istio's subject and DNS fields,
    # which a MERGE cannot turn off, stay: an Istio certificate has an empty subject and no DNS name)
    inbound = {**hcm, "forward_client_cert_details": "SANITIZE_SET", "set_current_client_cert_details": {"uri": True}}
    patches = [{"applyTo": "NETWORK_FILTER",
                "match": {"context": context, "listener": {"filterChain": {"filter": {"name": HCM}}}},
                "patch": {"operation": "MERGE", "value": {"typed_config": config}}}
               for context, config in (("SIDECAR_INBOUND", inbound), ("SIDECAR_OUTBOUND", hcm))]
    # Istio (1.24 and later) retries a request to the local application twice when the connection
    # resets before the request is sent (route.go BuildDefaultHTTPInboundRoute); meshc's inbound
    # route has no retries.
    patches.append({"applyTo": "HTTP_ROUTE", "match": {"context": "SIDECAR_INBOUND"},
                    "patch": {"operation": "MERGE", "value": {"route": {"retry_policy": {"num_retries": 0}}}}})
    patches += [{"applyTo": "CLUSTER", "match": {"context": "SIDECAR_OUTBOUND", "cluster": {"service": fqdn(dest)}},
                 "patch": {"operation": "MERGE", "value": {"common_lb_config": {"update_merge_window": "0s"}}}}
                for dest in ejecting]
    return {"workloadSelector": {"labels": {APP_LABEL: short_name(svc.name)}}, "configPatches": patches}


def _sidecar_settings(svc: ir.Service, sources: dict, diags: list[Diagnostic]) -> None:
    """The sidecar settings Istio's objects cannot carry: W0907 for those that differ from Istio."""
    sc = svc.sidecar
    found = [f"{k.replace('_', ' ')} {getattr(sc, k)} (Istio's: {v})" for k, v in ISTIO_PORTS.items()
             if getattr(sc, k) != v]
    if sc.app_port != svc.port:
        found.append(f"the application's port {sc.app_port} (Istio forwards to the port the request was for, "
                     f"{svc.port})")
    if sc.drain_timeout_ms != ISTIO_DRAIN_MS:
        found.append(f"drain_timeout {duration(sc.drain_timeout_ms)} (Istio's terminationDrainDuration is mesh-wide "
                     "or a pod annotation)")
    if sc.max_request_body_bytes:
        found.append(f"max_request_body {sc.max_request_body_bytes} bytes (Istio's sidecar streams without a limit)")
    if sc.access_log:
        found.append(f"access_log `{sc.access_log}` (Istio's access logs are the mesh's Telemetry)")
    if found:
        diags.append(located("W0907", f"Istio does not carry the sidecar settings of `{svc.name}`: {found[0]}"
                                      + (f" and {len(found) - 1} more" if len(found) > 1 else ""), svc.source, sources,
                             hint="; ".join(found)))


# A workload's sidecar settings that are its own under Istio anyway: every pod has Istio's ports and
# forwards to the port a request was for (W0907 covers the service's)
_PER_POD = frozenset({"listen_host", "inbound_port", "outbound_port", "admin_port", "app_host", "app_port",
                      "app_discovery", "app_cluster", "app_limits", "node"})


def _workload_settings(svc: ir.Service, sources: dict, diags: list[Diagnostic]) -> None:
    """A workload (a subset with its own sidecar) is the pods of its subset, which the service's
    EnvoyFilter selects with the others (by the `app` label): W0909 for a workload whose other sidecar
    settings differ from the service's, which then apply to it."""
    for w in svc.workloads:
        differ = [f for f in type(w.sidecar).__dataclass_fields__
                  if f not in _PER_POD and getattr(w.sidecar, f) != getattr(svc.sidecar, f)]
        if differ:
            diags.append(located("W0909", f"Istio applies `{svc.name}`'s sidecar settings to workload "
                                          f"`{svc.name}.{w.subset}`, whose {differ[0].replace('_', ' ')} differs",
                                 w.source, sources,
                                 hint="the EnvoyFilter of a service selects all its pods (its `app` label); "
                                      "write the setting on the service, or leave it out of the subset's "
                                      "`sidecar` block"))
