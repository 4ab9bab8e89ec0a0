"""A sidecar's resources: what the Envoy backend emits for `--proxy SERVICE` in the xds layout
(listeners, clusters, route configurations, secrets), read back by type and name, with each
file reference to another xDS resource (`path_config_source`) turned into a reference over the
same aggregated stream (`{ads: {}}`). That is the only change: there is no second translator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from google.protobuf import any_pb2

from compiler.backends.base import Options
from compiler.control import protos
from compiler.control.versions import version_of

_T = "type.googleapis.com/"
CLUSTER = _T + "envoy.config.cluster.v3.Cluster"
LISTENER = _T + "envoy.config.listener.v3.Listener"
ROUTE = _T + "envoy.config.route.v3.RouteConfiguration"
SECRET = _T + "envoy.extensions.transport_sockets.tls.v3.Secret"
# The native proxy's config (docs/control-plane.md, "The native proxy"): one resource per node,
# named by the node id, whose `Any.value` is the UTF-8 JSON `meshc compile --target native`
# writes for that sidecar. Envoy never asks for it; it references no other resource.
NATIVE = _T + "meshc.native.v1.SidecarConfig"
ENVOY_TYPES = (CLUSTER, SECRET, LISTENER, ROUTE)
# The order of adding: clusters (and secrets, which clusters and listeners name) before the
# listeners, and the listeners before the route configurations they name; the native config last
# (after the secrets its files come from).
TYPES = (*ENVOY_TYPES, NATIVE)
# State of the world: a response of these types carries every resource of the node (leaving one
# out deletes it); the others carry only the names the proxy asked for.
WILDCARD_TYPES = (CLUSTER, LISTENER)

ADS_SOURCE = {"ads": {}, "resource_api_version": "V3"}


@dataclass
class NodeSnapshot:
    """One sidecar's resources: JSON (as the backend wrote it) and packed, and a version per type."""
    node: str
    json: dict[str, dict[str, dict]] = field(default_factory=dict)          # type -> name -> resource (Envoy's)
    packed: dict[str, dict[str, any_pb2.Any]] = field(default_factory=dict)  # type -> name -> Any
    versions: dict[str, str] = field(default_factory=dict)                  # type -> content hash
    identity: str | None = None             # the service's SPIFFE ID (whose certificate it gets with --ca)
    subsets: tuple[str, ...] = ()   # the service's subsets: node ids `SERVICE.SUBSET` get this snapshot


def over_ads(node):
    """A copy of `node` in which every `{path_config_source: ...}` config source reads over ADS."""
    if isinstance(node, dict):
        if "path_config_source" in node:
            return dict(ADS_SOURCE)
        return {k: over_ads(v) for k, v in node.items()}
    if isinstance(node, list):
        return [over_ads(v) for v in node]
    return node


def resources(compilation, service: str) -> dict[str, dict[str, dict]]:
    """The backend's resources for `service`'s sidecar, by type and name (config sources over ADS)."""
    emitted = compilation.emit("envoy", [service], Options(bootstrap="xds", xds_dir="/ads", output_dir="/ads"))
    if emitted.has_errors:
        raise ValueError("; ".join(d.message for d in emitted.diagnostics if d.severity == "error"))
    found: dict[str, dict[str, dict]] = {t: {} for t in TYPES}
    for path, data in sorted(emitted.files.items()):
        if path.endswith(".envoy.json"):
            continue   # the bootstrap: over ADS, `--bootstrap ads` writes it
        for resource in json.loads(data)["resources"]:
            found.setdefault(resource["@type"], {})[resource["name"]] = over_ads(resource)
    return found


def native(compilation, service: str) -> any_pb2.Any:
    """`service`'s native config, exactly the bytes of `meshc compile --target native --proxy
    SERVICE` (the native backend's), packed as its `Any`. It is not parsed back (a config holds
    every destination: 1.3 MB a sidecar at 100 services); `native_config` reads it when needed."""
    emitted = compilation.emit("native", [service], Options())
    if emitted.has_errors:
        raise ValueError("; ".join(d.message for d in emitted.diagnostics if d.severity == "error"))
    return any_pb2.Any(type_url=NATIVE, value=emitted.files[f"{service}.native.json"])


def native_config(snap: NodeSnapshot) -> dict | None:
    """The node's native config as JSON data (for `meshc status` and the test-only hook)."""
    packed = snap.packed.get(NATIVE, {}).get(snap.node)
    return json.loads(packed.value) if packed is not None else None


def build(compilation, service: str) -> NodeSnapshot:
    snap = NodeSnapshot(node=service, json=resources(compilation, service),
                        identity=compilation.ir.service(service).identity,
                        subsets=tuple(sub.name for sub in compilation.ir.service(service).subsets))
    for type_url, named in snap.json.items():
        snap.packed[type_url] = {name: protos.to_any(r) for name, r in sorted(named.items())}
        snap.versions[type_url] = version_of(snap.packed[type_url])
    # the native config: in `packed` only (`json` holds the Envoy resources, as the backend wrote them)
    snap.packed[NATIVE] = {service: native(compilation, service)}
    snap.versions[NATIVE] = version_of(snap.packed[NATIVE])
    return snap


def build_all(compilation) -> dict[str, NodeSnapshot]:
    """Every sidecar of the program, by the service's name (node ids `SERVICE.SUBSET` get their
    service's: ads.resolve)."""
    return {svc.name: build(compilation, svc.name) for svc in compilation.ir.services}
