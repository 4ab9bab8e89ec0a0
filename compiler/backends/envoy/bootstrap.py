"""Bootstraps and xDS files: how the resources reach a running Envoy.

- `static`: one self-contained bootstrap per sidecar (listeners with their routes inline and
  the clusters), for `envoy -c FILE` as it is.
- `xds`: a small bootstrap per sidecar that loads its listeners and every cluster from files
  (`dynamic_resources` with `path_config_source`); the outbound listener loads the shared routes
  from a file too. Envoy watches those files and applies a file renamed over them without a
  restart. The files are shared: one CDS and one RDS file for the whole fleet (with mTLS, one
  CDS file per sidecar: its clusters name its own certificate).
- `ads`: a small bootstrap per sidecar that receives everything (clusters, listeners, routes,
  later secrets) from a control plane over one aggregated gRPC stream (ADS, state of the world),
  the upcoming `meshc serve` (docs/control-plane.md). It holds nothing static but the cluster of
  the control plane itself.
"""

from __future__ import annotations

import hashlib

from compiler import ir
from compiler.backends.base import CA_FILE, CERT_FILE, KEY_FILE
from compiler.backends.envoy import names
from compiler.backends.envoy.clusters import HTTP_PROTOCOL_OPTIONS
from compiler.backends.envoy.tls import UPSTREAM_TLS_PARAMS
from compiler.backends.envoy.tracing import collector_cluster
from compiler.backends.envoy.values import is_ip, socket_address

# Process-wide runtime settings every bootstrap carries.
RUNTIME: dict[str, int] = {
    # Envoy rejects RE2 programs larger than 100 by default; the language accepts every
    # regex that RE2 compiles (E0304), so the limit is lifted to RE2's own bound.
    "re2.max_program_size.error_level": 2**31 - 1,
}


def version_info(resources_json: bytes) -> str:
    """A short content hash: the same resources give the same version, in every run."""
    return hashlib.sha256(resources_json).hexdigest()[:16]


def discovery_response(type_url: str, resources: list[dict], dumps) -> bytes:
    """A `DiscoveryResponse` file of file-based xDS: every resource with its `@type`, and a
    version that is a hash of them.

    The resources are serialised once: the hash is taken over their JSON, and the document is
    assembled around it. It is exactly `dumps({"resources": ..., "version_info": ...})` (sorted
    keys, compact). For the fleet's RDS and CDS files, tens of megabytes at 10,000 services, this
    halves the serialisation.
    """
    body = dumps([{"@type": type_url, **r} for r in resources]).rstrip(b"\n")
    return b'{"resources":' + body + b',"version_info":"' + version_info(body).encode() + b'"}\n'


def discovery_response_reference(type_url: str, resources: list[dict], dumps) -> bytes:
    """The plain form of `discovery_response` (the tests check that both give the same bytes)."""
    typed = [{"@type": type_url, **r} for r in resources]
    body = dumps(typed).rstrip(b"\n")
    return dumps({"resources": typed, "version_info": version_info(body)})


# With span export: sampled spans wait at most a second (Envoy's OpenTelemetry tracer flushes
# every 5 s by default; the native proxy's exporter every second, net/tracing.py).
TRACING_RUNTIME = {"tracing.opentelemetry.flush_interval_ms": 1000}


def runtime(sidecar: ir.Sidecar, tracing: ir.Tracing | None = None) -> dict:
    """The runtime layer: RUNTIME, and the sidecar's connection cap on each listener
    (`max_connections`): Envoy's per-listener limit is a runtime key,
    `envoy.resource_limits.listener.NAME.connection_limit`; a connection above it is accepted and
    closed at once (`downstream_cx_overflow`)."""
    layer = dict(RUNTIME)
    for listener in (names.INBOUND_LISTENER, names.OUTBOUND_LISTENER):
        layer[f"envoy.resource_limits.listener.{listener}.connection_limit"] = sidecar.max_connections
    if tracing is not None and tracing.otlp_host is not None:
        layer.update(TRACING_RUNTIME)
    return {"layers": [{"name": "meshc", "static_layer": layer}]}


def _base(svc: ir.Service, tracing: ir.Tracing | None = None) -> dict:
    return {
        "admin": {"address": socket_address(svc.sidecar.listen_host, svc.sidecar.admin_port)},
        "layered_runtime": runtime(svc.sidecar, tracing),
        "node": {"cluster": svc.name, "id": svc.sidecar.node or svc.name},   # a workload's: SERVICE.SUBSET
    }


def collector(tracing: ir.Tracing | None) -> list[dict]:
    """The OTLP collector's cluster (`tracing { otlp … }`), which the listeners' tracers name: static
    in a static bootstrap, in the CDS files (or the control plane's clusters) otherwise."""
    cluster = collector_cluster(tracing) if tracing is not None else None
    return [cluster] if cluster is not None else []


def static_bootstrap(svc: ir.Service, listeners: list[dict], clusters: list[dict],
                     tracing: ir.Tracing | None = None) -> dict:
    out = _base(svc, tracing)
    out["static_resources"] = {"clusters": clusters + collector(tracing), "listeners": listeners}
    return out


def _config_source(path: str) -> dict:
    return {"path_config_source": {"path": path}, "resource_api_version": "V3"}


def xds_bootstrap(svc: ir.Service, xds_dir: str, cds: str = names.CDS, tracing: ir.Tracing | None = None) -> dict:
    """A bootstrap that loads the sidecar's listeners and the clusters (the CDS file `cds`,
    relative to `xds_dir`) from files under `xds_dir` (absolute, as Envoy will see it at run
    time). The secrets are referenced by the listeners and clusters themselves."""
    out = _base(svc, tracing)
    out["dynamic_resources"] = {
        "cds_config": _config_source(f"{xds_dir}/{cds}"),
        "lds_config": _config_source(f"{xds_dir}/{names.lds(svc.sidecar.node or svc.name)}"),
    }
    return out


# The cluster of the control plane in an `ads` bootstrap (no IR cluster name is like it: those are
# `outbound|SUBSET|SERVICE` and `inbound|SERVICE`).
XDS_CLUSTER = "xds_cluster"
XDS_CONNECT_TIMEOUT = "1s"
# The backoff between two attempts to open the ADS stream (Envoy's default: 0.5 s doubling to
# 30 s, jittered): a proxy finds a restarted server or another replica within about 2 s.
XDS_RETRY_BASE, XDS_RETRY_MAX = "0.25s", "2s"
# HTTP/2 pings on the connection to the server: one every 5 s when idle, and a connection whose
# ping is not answered within 3 s is closed (and the stream reopened on another replica).
XDS_KEEPALIVE_INTERVAL, XDS_KEEPALIVE_TIMEOUT = "5s", "3s"
_ADS = {"ads": {}, "resource_api_version": "V3"}


# The TLS names of a `meshc serve --ca` server (compiler/control/sds.py): the SNI and DNS SAN of
# its certificate, and its URI SAN in the program's trust domain.
XDS_SERVER_NAME = names.CONTROL_SERVER_NAME


def xds_tls(identity: str, trust_domain: str) -> dict:
    """The xDS channel's mutual TLS: present DIR/cert.pem and DIR/key.pem (the sidecar's identity
    from `meshc ca issue`), trust DIR/ca.pem, and accept only the control plane's certificate
    (its URI SAN). Read when Envoy starts."""
    directory = identity.rstrip("/")
    return {"name": names.TLS_SOCKET, "typed_config": {
        "@type": names.UPSTREAM_TLS,
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificates": [{"certificate_chain": {"filename": f"{directory}/{CERT_FILE}"},
                                  "private_key": {"filename": f"{directory}/{KEY_FILE}"}}],
            "tls_params": UPSTREAM_TLS_PARAMS,
            "validation_context": {
                "match_typed_subject_alt_names": [{"matcher": {"exact": names.control_id(trust_domain)},
                                                   "san_type": "URI"}],
                "trusted_ca": {"filename": f"{directory}/{CA_FILE}"},
            },
        },
        "sni": XDS_SERVER_NAME,
    }}


def ads_bootstrap(svc: ir.Service, servers: tuple[tuple[str, int], ...], identity: str | None = None,
                  trust_domain: str = "cluster.local", tracing: ir.Tracing | None = None) -> dict:
    """A bootstrap whose listeners and clusters come over ADS from the control plane at `servers`
    (one (host, port) per replica): node id and cluster `SERVICE` (the name the server scopes by),
    the admin and runtime of every bootstrap, and one static cluster, the servers': gRPC over
    HTTP/2, STATIC when every host is an IP address, else STRICT_DNS. The node is sent on the
    first request of the stream only.

    Replicas (docs/control-plane.md): the stream goes to one host of the cluster, picked round
    robin each time Envoy (re)opens it, so a stream whose server dies is reopened, after the
    backoff, on the next replica; a connection that dies without a reset (a frozen or vanished
    host) is found by HTTP/2 keepalive pings. The backoff between attempts is short and capped,
    so a proxy finds a restarted server within a few seconds. With `identity` (an identity
    directory), the channel is mutual TLS (`xds_tls`)."""
    out = _base(svc, tracing)
    out["dynamic_resources"] = {
        "ads_config": {
            "api_type": "GRPC",
            "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER, "retry_policy": {
                "retry_back_off": {"base_interval": XDS_RETRY_BASE, "max_interval": XDS_RETRY_MAX}}}}],
            "set_node_on_first_message_only": True,
            "transport_api_version": "V3",
        },
        "cds_config": dict(_ADS),
        "lds_config": dict(_ADS),
    }
    static = all(is_ip(host) for host, _ in servers)
    cluster: dict = {
        "connect_timeout": XDS_CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}
                                            for host, port in servers]}],
        },
        "name": XDS_CLUSTER,
        "type": "STATIC" if static else "STRICT_DNS",
        # gRPC needs HTTP/2 to the control plane; keepalive pings find a server that stopped
        # answering without closing the connection (`meshc serve` accepts them, serve.py).
        "typed_extension_protocol_options": {HTTP_PROTOCOL_OPTIONS: {
            "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
            "explicit_http_config": {"http2_protocol_options": {"connection_keepalive": {
                "interval": XDS_KEEPALIVE_INTERVAL, "timeout": XDS_KEEPALIVE_TIMEOUT}}},
        }},
    }
    if cluster["type"] == "STRICT_DNS":
        cluster["dns_lookup_family"] = "V4_PREFERRED"   # as the mesh's own DNS clusters
    if identity is not None:
        cluster["transport_socket"] = xds_tls(identity, trust_domain)
    out["static_resources"] = {"clusters": [cluster]}
    return out
