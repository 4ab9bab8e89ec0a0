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
import posixpath
import zlib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

import orjson
from google.protobuf import any_pb2

from compiler.backends.base import Options
from compiler.control import protos
from compiler.control.versions import resource_digest, version_from_digests, version_of
from compiler.ir import workloads
from compiler.syntax.parse import ItemCache

_T = "type.googleapis.com/"
CLUSTER = _T + "envoy.config.cluster.v3.Cluster"
LISTENER = _T + "envoy.config.listener.v3.Listener"
ROUTE = _T + "envoy.config.route.v3.RouteConfiguration"
VIRTUAL_HOST = _T + "envoy.config.route.v3.VirtualHost"   # (inside a route configuration)
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
    admin: str | None = None        # the sidecar's admin address, HOST:PORT (`meshc stat` finds proxies by it)


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
OPTIONS = Options(bootstrap="xds", xds_dir=XDS_ROOT, output_dir=XDS_ROOT, alone_scope_in_own_dir=False)


def resources(compilation, service: str) -> dict[str, dict[str, dict]]:
    """The backend's resources for `service`'s sidecar, by type and name (config sources over ADS)."""
    emitted = compilation.emit("envoy", [service], OPTIONS)
    if emitted.has_errors:
        raise ValueError("; ".join(d.message for d in emitted.diagnostics if d.severity == "error"))
    found: dict[str, dict[str, dict]] = {t: {} for t in ENVOY_TYPES}
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
    """One proxy's snapshot (`service`: a proxy name, `SERVICE` or a workload's `SERVICE.SUBSET`)."""
    svc = workloads.views(compilation.ir, [service])[service]
    snap = NodeSnapshot(node=service, json=resources(compilation, service),
                        **{f: get(svc) for f, get in _PER_SERVICE})  # type: ignore[arg-type]
    for type_url, named in snap.json.items():
        snap.packed[type_url] = {name: protos.to_any(r) for name, r in sorted(named.items())}
        snap.versions[type_url] = version_of(snap.packed[type_url])
    # the native config: in `packed` only (`json` holds the Envoy resources, as the backend wrote them)
    snap.packed[NATIVE] = {service: native(compilation, service)}
    snap.versions[NATIVE] = version_of(snap.packed[NATIVE])
    return snap


def build_all(compilation) -> dict[str, NodeSnapshot]:
    """Every sidecar of the program, by its node id: `SERVICE`, and `SERVICE.SUBSET` for a workload's
    own sidecar (other node ids `SERVICE.SUBSET` get their service's: ads.resolve)."""
    return {name: build(compilation, name) for name in workloads.proxy_names(compilation.ir)}


def _digest(data: bytes) -> bytes:
    """A cache key for bytes: SHA-256 (measured 1.4 GB/s here, with the CPU's SHA extensions;
    BLAKE2b 0.6 GB/s), cut to 128 bits."""
    return hashlib.sha256(data).digest()[:16]


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
    """One resource as served: its JSON (config sources over ADS) kept as compact bytes,
    compressed (decoded when asked for, by a rejection's status report or a test: as Python
    objects it was most of a 1,000-sidecar server's memory, as plain bytes still 39 MB of it), its
    `Any`, and the digest of the `Any`'s deterministic bytes (what its version is computed from)."""
    compressed: bytes
    packed: any_pb2.Any
    digest: bytes
    uses: frozenset[tuple[str, str]]   # the resources it references (type, name)
    parts: tuple[bytes, ...] = ()      # a route configuration's virtual hosts (their digests)

    @property
    def json(self) -> dict:
        return orjson.loads(zlib.decompress(self.compressed))


class _Json(Mapping):
    """A node's resources of one type as JSON, by name: each decoded when it is read (by the
    status report of a rejection, or a test); never kept as objects."""

    def __init__(self, resources: dict[str, _Resource]):
        self._resources = resources

    def __getitem__(self, name: str) -> dict:
        return self._resources[name].json

    def __contains__(self, name: object) -> bool:   # (without decoding)
        return name in self._resources

    def __iter__(self) -> Iterator[str]:
        return iter(self._resources)

    def __len__(self) -> int:
        return len(self._resources)

    def __repr__(self) -> str:
        return f"<JSON of {len(self)} resource(s)>"


@dataclass(frozen=True)
class _File:
    """One xDS file of the backend: its resources (type, name, digest of the JSON, resource), the
    files they reference, and the resources they reference (type, name)."""
    resources: tuple[tuple[str, str, bytes, _Resource], ...]
    references: tuple[str, ...]

    @property
    def uses(self) -> frozenset[tuple[str, str]]:
        return frozenset().union(*(resource.uses for _, _, _, resource in self.resources))


class Builder:
    """Every sidecar's snapshot from one emit of the whole fleet (`--proxy all`, xds layout),
    split by sidecar along the references of the backend's own files: a sidecar's bootstrap names
    its CDS and LDS files, its listeners their RDS file, its TLS contexts their SDS files. So the
    backend's per-sidecar layout (shared or per-sidecar files, scoped or not) is the one source of
    truth, and nothing here knows which sidecar gets what.

    One exception, measured rather than assumed: a file that several sidecars read (the shared
    CDS of a plaintext fleet) may hold, for the fleet, what the backend writes for one sidecar
    alone plus the other readers' own resources (their inbound clusters). Whether it does is
    found once per kind of such file by emitting one of its readers alone; where it does, a sidecar is
    not served a resource of that file that only other sidecars' own files reference and none of
    its files does, which gives exactly what the backend emits for that sidecar alone.

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
        # A route configuration's virtual hosts: serialized, and what each references.
        self._parts: dict[bytes, tuple[bytes, frozenset[tuple[str, str]]]] = {}
        self._parts_now: dict[bytes, tuple[bytes, frozenset[tuple[str, str]]]] = {}   # (this build's)
        self._nodes: dict[str, tuple[tuple, NodeSnapshot]] = {}
        # Per kind of shared file (its file name): whether the fleet's copy holds more than one
        # reader's (above).
        self._per_set: dict[str, bool] = {}
        self.rebuilt: list[str] = []   # the sidecars whose snapshot the last build made anew
        self._uses: dict[str, frozenset[tuple[str, str]]] = {}   # what each of them references
        self.timings: dict[str, float] = {}

    def build(self, compilation, native: Collection[str] | None = None) -> dict[str, NodeSnapshot]:
        """Every sidecar of the compiled program, by node id (the service's name), with the native
        config of the services in `native` (None: every one). Raises ValueError when the backend
        reports an error or a file references one it did not write.

        The native configs are made only for the sidecars a native proxy has asked for (`meshc
        serve` passes those): emitting them for a fleet of 1,000 Envoys would double the emit of
        each reload (measured: 0.31 s to 0.67 s) and the server's memory, for nobody."""
        import time

        started = time.perf_counter()
        services = workloads.proxy_names(compilation.ir)   # the proxies: services, and workloads' SERVICE.SUBSET
        # What a NodeSnapshot carries of its service (as the proxy sees it) besides resources.
        extra = {name: tuple((f, get(svc)) for f, get in _PER_SERVICE)
                 for name, svc in workloads.views(compilation.ir, services).items()}
        emitted = compilation.emit("envoy", services, OPTIONS)
        if emitted.has_errors:
            raise ValueError("; ".join(d.message for d in emitted.diagnostics if d.severity == "error"))
        # the native configs: one emit of the fleet, each sidecar's file served as it is
        wanted = [name for name in services if native is None or name in native]
        natives = compilation.emit("native", wanted, Options())
        if natives.has_errors:
            raise ValueError("; ".join(d.message for d in natives.diagnostics if d.severity == "error"))
        emitted_at = time.perf_counter()
        files: dict[bytes, _File] = {}
        packed: dict[bytes, _Resource] = {}
        self._parts_now = {}
        by_path: dict[str, tuple[bytes, _File]] = {}

        def load(path: str, node: str) -> tuple[bytes, _File]:
            found = by_path.get(path)
            if found is not None:
                return found
            relative = _relative(path)
            # (taken out of the emitted files: each is freed once read, which lowers the peak)
            data = emitted.files.pop(relative, None) if relative is not None else None
            if data is None:
                raise ValueError(f"sidecar {node}: the backend's files reference {path}, which it did not write")
            key = _digest(data)
            entry = files.get(key) or self._files.get(key)
            if entry is None:
                entry = self._parse(data, packed)
            files[key] = entry
            for _, _, digest, resource in entry.resources:
                packed[digest] = resource
                for part in resource.parts:   # kept while a resource made of it is
                    self._parts_now[part] = self._parts_now.get(part) or self._parts[part]
            by_path[path] = (key, entry)
            return by_path[path]

        def resolve(path: str) -> str:
            """The file a path names: a symbolic link of the layout (a sidecar's CDS path naming
            its scope's shared file) resolved, so that a shared file is one file here too."""
            relative = _relative(path)
            link = emitted.links.get(relative) if relative is not None else None
            if link is None:
                return path
            target = posixpath.normpath(posixpath.join(posixpath.dirname(relative or ""), link.target))
            return XDS_ROOT + "/" + target.removeprefix("xds/")

        reads: dict[str, dict[str, tuple[bytes, _File]]] = {}   # node -> path -> its file
        readers: dict[str, list[str]] = {}
        for name in services:
            boot = orjson.loads(emitted.files.pop(_bootstrap(name)))
            pending = _paths(boot.get("dynamic_resources", {}), [])
            mine: dict[str, tuple[bytes, _File]] = {}
            while pending:
                path = resolve(pending.pop())
                if path not in mine:
                    mine[path] = load(path, name)
                    pending.extend(mine[path][1].references)
                    readers.setdefault(path, []).append(name)
            reads[name] = mine
        dropped = self._others(compilation, reads, readers)
        out: dict[str, NodeSnapshot] = {}
        nodes: dict[str, tuple[tuple, NodeSnapshot]] = {}
        rebuilt = []
        uses: dict[str, frozenset[tuple[str, str]]] = {}
        for name in services:
            mine = reads[name]
            drop = dropped.get(name, frozenset())
            config = natives.files.pop(f"{name}.native.json", None)
            key = (tuple(sorted((path, digest) for path, (digest, _) in mine.items())), drop, extra[name],
                   _digest(config) if config is not None else None)
            previous = self._nodes.get(name)
            if previous is not None and previous[0] == key:
                snap = previous[1]
            else:
                snap, uses[name] = _assemble(name, [mine[path][1] for path in sorted(mine)], drop, extra[name])
                if config is not None:
                    packed_config = any_pb2.Any(type_url=NATIVE, value=config)
                    snap.packed[NATIVE] = {name: packed_config}
                    snap.versions[NATIVE] = version_of(snap.packed[NATIVE])
                rebuilt.append(name)
            nodes[name] = (key, snap)
            out[name] = snap
        self._files, self._resources, self._nodes, self.rebuilt = files, packed, nodes, rebuilt
        self._uses = uses
        self._parts = self._parts_now
        self.timings = {"emit": emitted_at - started, "split": time.perf_counter() - emitted_at}
        return out

    def references(self, node: str) -> dict[str, set[str]]:
        """`consistency.references` of a sidecar the last build rebuilt, from what each of its
        resources references (found once per distinct resource)."""
        found: dict[str, set[str]] = {CLUSTER: set(), ROUTE: set(), SECRET: set()}
        for type_url, name in self._uses[node]:
            found[type_url].add(name)
        return found

    def _others(self, compilation, reads: dict[str, dict[str, tuple[bytes, _File]]],
                readers: dict[str, list[str]]) -> dict[str, frozenset[tuple[str, str]]]:
        """Per sidecar, the resources of its shared files that belong to other sidecars (see the
        class): empty unless the backend writes some shared file differently for the fleet."""
        shared = [path for path, names in readers.items() if len(names) > 1]
        for path in shared:
            kind = path.rpartition("/")[2]   # (a property of the layout: once per kind of file)
            if kind not in self._per_set:   # one of its readers emitted alone: is the file the same?
                alone = compilation.emit("envoy", [readers[path][0]], OPTIONS)
                mine = alone.files.get(_relative(path) or "")
                self._per_set[kind] = mine is None or _digest(mine) != reads[readers[path][0]][path][0]
        per_set = [path for path in shared if self._per_set[path.rpartition("/")[2]]]
        if not per_set:
            return {}
        candidates = {(t, n) for path in per_set for t, n, _, _ in reads[readers[path][0]][path][1].resources}
        owners: dict[tuple[str, str], set[str]] = {}
        for name, mine in reads.items():
            for path, (_, entry) in mine.items():
                if len(readers[path]) == 1:
                    for used in entry.uses & candidates:
                        owners.setdefault(used, set()).add(name)
        out: dict[str, frozenset[tuple[str, str]]] = {}
        for path in per_set:
            held = {(t, n) for t, n, _, _ in reads[readers[path][0]][path][1].resources} & owners.keys()
            for name in readers[path]:
                uses = frozenset().union(*(entry.uses for _, entry in reads[name].values()))
                theirs = {r for r in held if name not in owners[r] and r not in uses}
                if theirs:
                    out[name] = out.get(name, frozenset()) | theirs
        return out

    def _to_any(self, resource: dict) -> tuple[any_pb2.Any, frozenset[tuple[str, str]], tuple[bytes, ...]]:
        """`protos.to_any(resource)`, the same bytes, but a route configuration is assembled from
        its virtual hosts each parsed once (`ParseDict` is the slow part: sidecars scoped to
        different destinations have different route configurations made of the same hosts)."""
        hosts = resource.get("virtual_hosts") if resource.get("@type") == ROUTE else None
        if not hosts:
            return protos.to_any(resource), _uses(resource), ()
        rest = {k: v for k, v in resource.items() if k != "virtual_hosts"}
        message = protos.parse({k: v for k, v in rest.items() if k != "@type"}, protos.message_class(ROUTE)())
        host_class = protos.message_class(VIRTUAL_HOST)
        parts, uses = [], set(_uses(rest))
        for host in hosts:
            key = _digest(_canonical(host))
            parts.append(key)
            part = self._parts_now.get(key) or self._parts.get(key)
            if part is None:
                part = (protos.parse(host, host_class()).SerializeToString(deterministic=True), _uses(host))
            self._parts_now[key] = part
            message.virtual_hosts.add().MergeFromString(part[0])
            uses |= part[1]
        packed = any_pb2.Any()
        packed.Pack(message, deterministic=True)
        return packed, frozenset(uses), tuple(parts)

    def _parse(self, data: bytes, packed: dict[bytes, _Resource]) -> _File:
        """A file of the backend read: each resource over ADS and packed (or found packed)."""
        doc = orjson.loads(data)
        found, references = [], []
        sources = b"path_config_source" in data   # (else nothing to follow or to turn over ADS)
        for raw in doc.get("resources", []):
            if sources:
                references += _paths(raw, [])
            resource_json = over_ads(raw) if sources else raw
            canonical = _canonical(resource_json)
            key = _digest(canonical)
            resource = packed.get(key) or self._resources.get(key)
            if resource is None:
                any_, uses, parts = self._to_any(resource_json)
                resource = _Resource(zlib.compress(canonical, 1), any_,
                                     resource_digest(any_.SerializeToString(deterministic=True)), uses, parts)
            packed[key] = resource
            found.append((resource_json["@type"], resource_json["name"], key, resource))
        return _File(tuple(found), tuple(dict.fromkeys(references)))


# The NodeSnapshot fields taken from the service: its subsets (node ids `SERVICE.SUBSET` that are not workloads:
# a workload has a snapshot of its own), its SPIFFE ID (certificates), its sidecar's admin address.
_PER_SERVICE = (("subsets", lambda svc: tuple(sub.name for sub in svc.subsets
                                              if sub.name not in {w.subset for w in svc.workloads})),
                ("identity", lambda svc: svc.identity),
                ("admin", lambda svc: f"{svc.sidecar.listen_host}:{svc.sidecar.admin_port}"))


def _canonical(resource: dict) -> bytes:
    return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)


def _relative(path: str) -> str | None:
    """The emitted file (relative to the output directory) that a run-time path names."""
    prefix = XDS_ROOT + "/"
    return "xds/" + path[len(prefix):] if path.startswith(prefix) else None


def _bootstrap(service: str) -> str:
    return f"{service}.envoy.json"


def walk(node, found: dict[str, set[str]]) -> None:
    """Add to `found` (type URL -> names) every name that `node` references (the names the
    consistency check, consistency.py, looks for)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("cluster", "cluster_name") and isinstance(value, str):
                found[CLUSTER].add(value)
            elif key == "weighted_clusters" and isinstance(value, dict):
                found[CLUSTER].update(c["name"] for c in value.get("clusters", []))
            elif key == "rds" and isinstance(value, dict) and "route_config_name" in value:
                found[ROUTE].add(value["route_config_name"])
            elif key in ("tls_certificate_sds_secret_configs",) and isinstance(value, list):
                found[SECRET].update(s["name"] for s in value if "sds_config" in s)
            elif key == "validation_context_sds_secret_config" and isinstance(value, dict) and "sds_config" in value:
                found[SECRET].add(value["name"])
            walk(value, found)
    elif isinstance(node, list):
        for value in node:
            walk(value, found)


def _uses(resource: dict) -> frozenset[tuple[str, str]]:
    """The resources (type, name) that one resource references, as consistency.py reads them:
    a cluster's transport socket, the whole of a listener or route configuration (or a part of
    one), nothing of a secret."""
    kind = resource.get("@type")
    if kind == SECRET:
        return frozenset()
    found: dict[str, set[str]] = {CLUSTER: set(), ROUTE: set(), SECRET: set()}
    walk(resource if kind != CLUSTER else resource.get("transport_socket", {}), found)
    return frozenset((t, n) for t, names in found.items() for n in names)


def _assemble(node: str, files: list[_File], drop: frozenset[tuple[str, str]] = frozenset(),
              extra: tuple[tuple[str, object], ...] = ()) -> tuple[NodeSnapshot, frozenset[tuple[str, str]]]:
    """A sidecar's snapshot from the files it reads, in path order (a name found twice: the last),
    without the resources in `drop` (other sidecars' own); and what its resources reference."""
    chosen: dict[str, dict[str, _Resource]] = {t: {} for t in ENVOY_TYPES}
    for entry in files:
        for type_url, name, _, resource in entry.resources:
            if (type_url, name) not in drop:
                chosen.setdefault(type_url, {})[name] = resource
    snap = NodeSnapshot(node=node, **dict(extra))  # type: ignore[arg-type]
    for type_url, named in chosen.items():
        ordered = sorted(named)
        snap.json[type_url] = _Json({n: named[n] for n in ordered})  # type: ignore[assignment]
        snap.packed[type_url] = {n: named[n].packed for n in ordered}
        snap.versions[type_url] = version_from_digests({n: named[n].digest for n in ordered})
    return snap, frozenset().union(*(r.uses for named in chosen.values() for r in named.values()))
