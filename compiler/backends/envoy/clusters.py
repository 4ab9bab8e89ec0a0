"""IR subsets to Envoy clusters: one per subset of every service (the destinations every sidecar
may call), and one per service for its local application (behind its inbound listener). The
clusters of a destination that accepts mTLS carry the calling sidecar's own certificate, so
they differ from one sidecar to the next (`with_mtls`)."""

from __future__ import annotations

from compiler import ir
from compiler.backends.envoy import defaults, names
from compiler.backends.envoy.tls import Sds, upstream_tls
from compiler.backends.envoy.values import duration, socket_address

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _cluster(name: str, discovery: str, endpoints: list[tuple[str, int]], upstream: ir.Upstream, meta: dict) -> dict:
    out = {
        "connect_timeout": duration(upstream.connect_timeout_ms),
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(h, p)}} for h, p in endpoints]}],
        },
        "metadata": {"filter_metadata": {names.METADATA_KEY: meta}},
        "name": name,
    }
    if discovery == "dns":
        # Every endpoint of the subset is resolved, and re-resolved, by the proxy.
        out["type"] = "STRICT_DNS"
        out["dns_lookup_family"] = "V4_PREFERRED"
    else:
        out["type"] = "STATIC"
    options = protocol_options(upstream)
    if options:
        out["typed_extension_protocol_options"] = {HTTP_PROTOCOL_OPTIONS: options}
    return out


def protocol_options(upstream: ir.Upstream) -> dict:
    """The cluster's HTTP protocol options, for what differs from Envoy's defaults (nothing, for
    every policy the language can write today)."""
    common: dict = {}
    if upstream.idle_timeout_ms != defaults.IDLE_TIMEOUT_MS:
        common["idle_timeout"] = duration(upstream.idle_timeout_ms)
    if upstream.max_response_headers_bytes != defaults.MAX_HEADERS_BYTES:
        common["max_response_headers_kb"] = kib(upstream.max_response_headers_bytes)
    if not common:
        return {}
    return {"@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}", "common_http_protocol_options": common,
            "explicit_http_config": {"http_protocol_options": {}}}


def kib(size: int) -> int:
    """A size in Envoy's KiB fields; the IR only holds whole KiB there (a compiler bug otherwise)."""
    if size % 1024:
        raise ValueError(f"{size} bytes is not a whole number of KiB, which is all Envoy can express")
    return size // 1024


def circuit_breakers(svc: ir.Service) -> dict:
    """`limits` and `retry_budget` of the destination service, for each of its subsets. With a
    budget, Envoy ignores `max_retries` (the language's W0503)."""
    threshold = _threshold(svc.limits)
    if svc.retry_budget is not None:
        threshold["retry_budget"] = {
            "budget_percent": {"value": svc.retry_budget.percent},
            "min_retry_concurrency": svc.retry_budget.min_concurrency,
        }
    return {"thresholds": [threshold]}


def _threshold(lim: ir.Limits) -> dict:
    return {
        "max_connections": lim.max_connections,
        "max_pending_requests": lim.max_pending_requests,
        "max_requests": lim.max_requests,
        "max_retries": lim.max_retries,
        "priority": "DEFAULT",
        "track_remaining": True,
    }


def outlier_detection(o: ir.Outlier) -> dict:
    """`config.cluster.v3.OutlierDetection`. Gateway errors are counted by Envoy in any case but
    enforced only when the policy uses them (Envoy's enforcing default for them is 0 %).
    `max_ejection_percent` is an integer in Envoy: a fraction is rounded down (W0702)."""
    out = {
        "base_ejection_time": duration(o.base_ejection_ms),
        "consecutive_5xx": o.consecutive_5xx,
        "enforcing_consecutive_5xx": 100,
        "interval": duration(o.interval_ms),
        "max_ejection_percent": int(o.max_ejection_percent),
        # Envoy also ejects by success rate unless told not to (enforcing 100 % by default, from
        # 5 hosts with 100 requests each); the language has no such rule and neither has the
        # native proxy, so it is turned off.
        "enforcing_success_rate": 0,
    }
    if o.consecutive_gateway_errors > 0:
        out["consecutive_gateway_failure"] = o.consecutive_gateway_errors
        out["enforcing_consecutive_gateway_failure"] = 100
    else:
        out["enforcing_consecutive_gateway_failure"] = 0
    return out


def service_clusters(svc: ir.Service) -> list[dict]:
    """The outbound clusters of one destination service, one per subset, in IR order."""
    breakers = circuit_breakers(svc)
    outlier = outlier_detection(svc.outlier) if svc.outlier is not None else None
    out = []
    for sub in svc.subsets:
        c = _cluster(sub.cluster, sub.discovery, [(e.host, e.port) for e in sub.endpoints], svc.upstream,
                     {"service": svc.name, "source": str(sub.source), "subset": sub.name})
        c["circuit_breakers"] = breakers
        if outlier is not None:
            c["outlier_detection"] = outlier
            # Envoy merges host health changes for `update_merge_window` (1 s by default) before
            # its load balancers see them: a second ejection within a second of the first, or a
            # return, would wait up to 1 s. 0 s delivers each at once (docs/language.md 5.5;
            # tests/test_equivalence_scenarios.py, the panic threshold).
            c["common_lb_config"] = {"update_merge_window": "0s"}
        out.append(c)
    return out


def with_mtls(dest: ir.Service, dest_clusters: list[dict], sds: Sds | None) -> list[dict]:
    """`dest_clusters` (from `service_clusters(dest)`) as the sidecar whose secrets `sds` locates
    calls them: over mTLS iff `dest` accepts it (its mode is not `disable`). A copy; the shared
    clusters are left as they are."""
    if dest.mtls.mode == "disable":
        return dest_clusters
    if sds is None:  # compiler.backends.needs_identity gives every sidecar an identity then
        raise ValueError(f"a sidecar without an identity cannot call `{dest.name}` (mtls {dest.mtls.mode})")
    socket = upstream_tls(dest, sds)
    return [{**c, "transport_socket": socket} for c in dest_clusters]


def inbound_cluster(svc: ir.Service) -> dict:
    """The local application of a service (`sidecar { app "HOST:PORT" }`), reached with the
    service's own connection settings; its thresholds are written only when they are not Envoy's."""
    sc = svc.sidecar
    out = _cluster(sc.app_cluster, sc.app_discovery, [(sc.app_host, sc.app_port)], svc.upstream,
                   {"service": svc.name, "source": str(svc.source)})
    lim = sc.app_limits
    if (lim.max_connections, lim.max_pending_requests, lim.max_requests, lim.max_retries) != defaults.THRESHOLDS:
        out["circuit_breakers"] = {"thresholds": [_threshold(lim)]}
    return out
