"""`mesh { tracing { … } }` for Envoy: the connection managers' `tracing` with the OpenTelemetry
tracer, and the static cluster of the OTLP/HTTP collector (docs/observability.md, "Tracing").

Each listener's connection manager traces with `random_sampling` = `sampling` (Envoy draws it
from the `x-request-id`, per 10 000), one span per hop: `ingress` (SERVER) on the inbound
listener, `egress` (CLIENT) on the outbound one, named by the listener's `traffic_direction`; no
separate upstream span (`spawn_upstream_span` false). The tracer reads and writes W3C
`traceparent`/`tracestate` only (Envoy 1.40's OpenTelemetry tracer has no other propagator), and
sends sampled spans as OTLP protobuf over HTTP to the collector's cluster. Envoy rejects an
OpenTelemetry tracer without an exporter when it loads the listener (`--mode validate` does not
notice), so a `tracing` block without `otlp` is an error for this target (E0703, limitations.py).
"""

from __future__ import annotations

from compiler import ir
from compiler.backends.envoy import names
from compiler.backends.envoy.values import is_ip, socket_address

EXPORT_TIMEOUT = "1s"        # one OTLP request to the collector
COLLECTOR_CONNECT_TIMEOUT = "1s"


def otlp_uri(tracing: ir.Tracing) -> str:
    host = f"[{tracing.otlp_host}]" if tracing.otlp_host and ":" in tracing.otlp_host else tracing.otlp_host
    return f"http://{host}:{tracing.otlp_port}{tracing.otlp_path}"


def hcm_tracing(tracing: ir.Tracing, service: str) -> dict:
    """The `tracing` of a connection manager of `service`'s sidecar."""
    assert tracing.otlp_host is not None, "E0703: no Envoy form without a collector"
    provider = {"@type": names.OPENTELEMETRY, "service_name": service,
                "http_service": {"http_uri": {"uri": otlp_uri(tracing), "cluster": names.OTLP_CLUSTER,
                                              "timeout": EXPORT_TIMEOUT}}}
    return {
        "provider": {"name": names.OPENTELEMETRY_TRACER, "typed_config": provider},
        "random_sampling": {"value": tracing.sampling_percent},
        "spawn_upstream_span": False,
    }


def collector_cluster(tracing: ir.Tracing) -> dict | None:
    """The static cluster of the collector (None without `otlp`): STATIC for an IP address, else
    STRICT_DNS, HTTP/1.1."""
    if tracing.otlp_host is None:
        return None
    ip = is_ip(tracing.otlp_host)
    cluster = {
        "connect_timeout": COLLECTOR_CONNECT_TIMEOUT,
        "load_assignment": {"cluster_name": names.OTLP_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": socket_address(tracing.otlp_host, tracing.otlp_port)}}]}]},
        "name": names.OTLP_CLUSTER,
        "type": "STATIC" if ip else "STRICT_DNS",
    }
    if not ip:
        cluster["dns_lookup_family"] = "V4_PREFERRED"   # as the mesh's own DNS clusters
    return cluster
