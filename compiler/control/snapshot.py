"""A sidecar's resources: what the Envoy backend emits for `--proxy SERVICE` in the xds layout
(listeners, clusters, route configurations, secrets), read back by type and name, with each
file reference to another xDS resource (`path_config_source`) turned into a reference over the
same aggregated stream (`{ads: {}}`). That is the only change: there is no second translator.

`build(compilation, service)` emits one sidecar (the reference). `Builder` makes every
sidecar's snapshot from one emit of the whole fleet and, kept across reloads, rebuilds only
what an edit touched (docs/control-plane.md, "Push performance"); its snapshots are equal to
`build`'s, resource for resource and version for version (tests/test_control_push.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import orjson
from google.protobuf import any_pb2

from compiler.backends.base import Options
from compiler.control import protos
from compiler.control.versions import version_from, version_of
from compiler.syntax.parse import ItemCache

_T = "type.googleapis.com/"
CLUSTER = _T + "envoy.config.cluster.v3.Cluster"
LISTENER = _T + "envoy.config.listener.v3.Listener"
ROUTE = _T + "envoy.config.route.v3.RouteConfiguration"
SECRET = _T + "envoy.extensions.transport_sockets.tls.v3.Secret"
# The order of adding: clusters (and secrets, which clusters and listeners name) before the
# listeners, and the listeners before the route configurations they name.
TYPES = (CLUSTER, SECRET, LISTENER, ROUTE)
# State of the world: a response of these types carries every resource of the node (leaving one
# out deletes it); the others carry only the names the proxy asked for.
WILDCARD_TYPES = (CLUSTER, LISTENER)

ADS_SOURCE = {"ads": {}, "resource_api_version": "V3"}


@dataclass
class NodeSnapshot:
    """One sidecar's resources: JSON (as the backend wrote it) and packed, and a version per type."""
    node: str
    json: dict[str, dict[str, dict]] = field(default_factory=dict)          # type -> name -> resource
    packed: dict[str, dict[str, any_pb2.Any]] = field(default_factory=dict)  # type -> name -> Any
    versions: dict[str, str] = field(default_factory=dict)                  # type -> content hash


def over_ads(node):
    """A copy of `node` in which every `{path_config_source: ...}` config source reads over ADS."""
    if isinstance(node, dict):
        if "path_config_source" in node:
            return dict(ADS_SOURCE)
        return {k: over_ads(v) for k, v in node.items()}
    if isinstance(node, list):
        return [over_ads(v) for v in node]
    return node


# The xds layout as the backend writes it for the server: the files' run-time directory (which the
# file references name) and, in the emitted files, that directory's relative path.
XDS_ROOT = "/ads"
OPTIONS = Options(bootstrap="xds", xds_dir=XDS_ROOT, output_dir=XDS_ROOT)


def resources(compilation, service: str) -> dict[str, dict[str, dict]]:
    """The backend's resources for `service`'s sidecar, by type and name (config sources over ADS)."""
    emitted = compilation.emit("envoy", [service], OPTIONS)
    if emitted.has_errors:
        raise ValueError("; ".join(d.message for d in emitted.diagnostics if d.severity == "error"))
    found: dict[str, dict[str, dict]] = {t: {} for t in TYPES}
    for path, data in sorted(emitted.files.items()):
        if path.endswith(".envoy.json"):
            continue   # the bootstrap: over ADS, `--bootstrap ads` writes it
        for resource in json.loads(data)["resources"]:
            found.setdefault(resource["@type"], {})[resource["name"]] = over_ads(resource)
    return found


def build(compilation, service: str) -> NodeSnapshot:
    snap = NodeSnapshot(node=service, json=resources(compilation, service))
    for type_url, named in snap.json.items():
        snap.packed[type_url] = {name: protos.to_any(r) for name, r in sorted(named.items())}
        snap.versions[type_url] = version_of(snap.packed[type_url])
    return snap


def build_all(compilation) -> dict[str, NodeSnapshot]:
    """Every sidecar of the program, by node id (the service's name)."""
    return Builder().build(compilation)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _paths(node, found: list[str]) -> list[str]:
    """Every `path_config_source` path in a JSON document (the files it references), in order."""
    if isinstance(node, dict):
        source = node.get("path_config_source")
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            found.append(source["path"])
        for value in node.values():
            _paths(value, found)
    elif isinstance(node, list):
        for value in node:
            _paths(value, found)
    return found


@dataclass(frozen=True)
class _Resource:
    """One resource as served: its JSON (config sources over ADS), its `Any`, and the `Any`'s
    deterministic bytes (what its version is computed from)."""
    json: dict
    packed: any_pb2.Any
    serialized: bytes


@dataclass(frozen=True)
class _File:
    """One xDS file of the backend: its resources (type, name, digest of the JSON, resource) and
    the files they reference."""
    resources: tuple[tuple[str, str, bytes, _Resource], ...]
    references: tuple[str, ...]


class Builder:
    """Every sidecar's snapshot from one emit of the whole fleet (`--proxy all`, xds layout),
    split by sidecar along the references of the backend's own files: a sidecar's bootstrap names
    its CDS and LDS files, its listeners their RDS file, its TLS contexts their SDS files. So the
    backend's per-sidecar layout (shared or per-sidecar files, scoped or not) is the one source of
    truth, and nothing here knows which sidecar gets what.

    Kept from the last build that succeeded, so that a reload redoes only what changed (and
    `parses`, the parsed items of the program, for the compile before it):
    - each file's resources, by the digest of the file's bytes (an unchanged file is not parsed);
    - each resource's `Any` and bytes, by the digest of its JSON (an unchanged resource is not
      packed again; a resource that many sidecars share is packed once);
    - each sidecar's snapshot, by the paths and digests of the files it reads: a sidecar none of
      whose files changed keeps the very same `NodeSnapshot` object (so nothing is pushed to it).
    """

    def __init__(self) -> None:
        # The parsed items of the program's files, for the compile before each build (kept here so
        # that one object carries everything a reload reuses).
        self.parses = ItemCache()
        self._files: dict[bytes, _File] = {}
        self._resources: dict[bytes, _Resource] = {}
        self._nodes: dict[str, tuple[tuple, NodeSnapshot]] = {}
        self.rebuilt: list[str] = []   # the sidecars whose snapshot the last build made anew
        self.timings: dict[str, float] = {}

    def build(self, compilation) -> dict[str, NodeSnapshot]:
        """Every sidecar of the compiled program, by node id (the service's name). Raises
        ValueError when the backend reports an error or a file references one it did not write."""
        import time

        started = time.perf_counter()
        services = [svc.name for svc in compilation.ir.services]
        emitted = compilation.emit("envoy", services, OPTIONS)
        if emitted.has_errors:
            raise ValueError("; ".join(d.message for d in emitted.diagnostics if d.severity == "error"))
        emitted_at = time.perf_counter()
        files: dict[bytes, _File] = {}
        packed: dict[bytes, _Resource] = {}
        by_path: dict[str, tuple[bytes, _File]] = {}

        def load(path: str, node: str) -> tuple[bytes, _File]:
            found = by_path.get(path)
            if found is not None:
                return found
            relative = _relative(path)
            data = emitted.files.get(relative) if relative is not None else None
            if data is None:
                raise ValueError(f"sidecar {node}: the backend's files reference {path}, which it did not write")
            key = _digest(data)
            entry = files.get(key) or self._files.get(key)
            if entry is None:
                entry = self._parse(data, packed)
            files[key] = entry
            for _, _, digest, resource in entry.resources:
                packed[digest] = resource
            by_path[path] = (key, entry)
            return by_path[path]

        out: dict[str, NodeSnapshot] = {}
        nodes: dict[str, tuple[tuple, NodeSnapshot]] = {}
        rebuilt = []
        for name in services:
            boot = orjson.loads(emitted.files[_bootstrap(name)])
            pending = _paths(boot.get("dynamic_resources", {}), [])
            reads: dict[str, tuple[bytes, _File]] = {}
            while pending:
                path = pending.pop()
                if path not in reads:
                    reads[path] = load(path, name)
                    pending.extend(reads[path][1].references)
            key = tuple(sorted((path, digest) for path, (digest, _) in reads.items()))
            previous = self._nodes.get(name)
            if previous is not None and previous[0] == key:
                snap = previous[1]
            else:
                snap = _assemble(name, [reads[path][1] for path in sorted(reads)])
                rebuilt.append(name)
            nodes[name] = (key, snap)
            out[name] = snap
        self._files, self._resources, self._nodes, self.rebuilt = files, packed, nodes, rebuilt
        self.timings = {"emit": emitted_at - started, "split": time.perf_counter() - emitted_at}
        return out

    def _parse(self, data: bytes, packed: dict[bytes, _Resource]) -> _File:
        """A file of the backend read: each resource over ADS and packed (or found packed)."""
        doc = orjson.loads(data)
        found, references = [], []
        for raw in doc.get("resources", []):
            references += _paths(raw, [])
            resource_json = over_ads(raw)
            key = _digest(_canonical(resource_json))
            resource = packed.get(key) or self._resources.get(key)
            if resource is None:
                any_ = protos.to_any(resource_json)
                resource = _Resource(resource_json, any_, any_.SerializeToString(deterministic=True))
            packed[key] = resource
            found.append((resource_json["@type"], resource_json["name"], key, resource))
        return _File(tuple(found), tuple(dict.fromkeys(references)))


def _canonical(resource: dict) -> bytes:
    return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)


def _relative(path: str) -> str | None:
    """The emitted file (relative to the output directory) that a run-time path names."""
    prefix = XDS_ROOT + "/"
    return "xds/" + path[len(prefix):] if path.startswith(prefix) else None


def _bootstrap(service: str) -> str:
    return f"{service}.envoy.json"


def _assemble(node: str, files: list[_File]) -> NodeSnapshot:
    """A sidecar's snapshot from the files it reads, in path order (a name found twice: the last)."""
    chosen: dict[str, dict[str, _Resource]] = {t: {} for t in TYPES}
    for entry in files:
        for type_url, name, _, resource in entry.resources:
            chosen.setdefault(type_url, {})[name] = resource
    snap = NodeSnapshot(node=node)
    for type_url, named in chosen.items():
        ordered = sorted(named)
        snap.json[type_url] = {n: named[n].json for n in ordered}
        snap.packed[type_url] = {n: named[n].packed for n in ordered}
        snap.versions[type_url] = version_from({n: named[n].serialized for n in ordered})
    return snap
