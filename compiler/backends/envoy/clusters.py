"""IR subsets to Envoy clusters: one per subset of every service (the destinations every sidecar
may call), and one per service for its local application (behind its inbound listener). The
clusters of a destination that accepts mTLS carry the calling sidecar's own certificate, so
they differ from one sidecar to the next (`with_mtls`)."""

from __future__ import annotations

from compiler import ir
from compiler.backends.envoy import names
from compiler.backends.envoy.tls import Sds, upstream_tls
from compiler.backends.envoy.values import duration, is_ip, socket_address

# The language sets no connect timeout; a connect failure (`connect-failure`) includes one.
CONNECT_TIMEOUT = duration(1000)


def _cluster(name: str, discovery: str, endpoints: list[tuple[str, int]], meta: dict) -> dict:
    out = {
        "connect_timeout": CONNECT_TIMEOUT,
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
    return out


def circuit_breakers(svc: ir.Service) -> dict:
    """`limits` and `retry_budget` of the destination service, for each of its subsets. With a
    budget, Envoy ignores `max_retries` (the language's W0503)."""
    lim = svc.limits
    threshold: dict = {
        "max_connections": lim.max_connections,
        "max_pending_requests": lim.max_pending_requests,
        "max_requests": lim.max_requests,
        "max_retries": lim.max_retries,
        "priority": "DEFAULT",
        "track_remaining": True,
    }
    if svc.retry_budget is not None:
        threshold["retry_budget"] = {
            "budget_percent": {"value": svc.retry_budget.percent},
            "min_retry_concurrency": svc.retry_budget.min_concurrency,
        }
    return {"thresholds": [threshold]}


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
        name = names.outbound_cluster(svc.name, sub.name)
        c = _cluster(name, sub.discovery, [(e.host, e.port) for e in sub.endpoints],
                     {"service": svc.name, "source": sub.source, "subset": sub.name})
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
    """The local application of a service (`sidecar { app "HOST:PORT" }`)."""
    sc = svc.sidecar
    discovery = "static" if is_ip(sc.app_host) else "dns"
    return _cluster(names.inbound_cluster(svc.name), discovery, [(sc.app_host, sc.app_port)],
                    {"service": svc.name, "source": svc.source})
