"""Kubernetes objects, their YAML and the file layout, shared by the Kubernetes backends.

- A `KubeObject` is one resource: apiVersion, kind, metadata (name, namespace, labels, and the
  annotation `meshc.dev/source` = `FILE:LINE:COL` of the `.mesh` construct it comes from) and the
  rest of its body (`spec`, or a kind's own top-level fields). `service` names the meshc service
  it belongs to (the file it goes into), None for what belongs to the whole mesh.
- `render(objects)` is multi-document YAML with a stable key order: apiVersion, kind, metadata
  (name, namespace, labels, annotations), then the body; every mapping below is sorted by key,
  lists keep their order (a VirtualService's routes are first-match). The same objects give the
  same bytes. Non-ASCII text is written escaped (`"\\u00e9"`): a raw NEL or LINE SEPARATOR would
  be a line break to a YAML reader.
- `layout(objects, kinds)`: one file per service, `NAMESPACE/SERVICE.yaml`, its objects ordered by
  kind (the target's `kinds`) and name; what belongs to the mesh goes to `NAMESPACE/_mesh.yaml`
  (`_` starts no Kubernetes name, so it cannot collide with a service's file). Files in path order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from compiler.backends.base import Emitted
from compiler.core.diagnostics import Diagnostic

SOURCE_ANNOTATION = "meshc.dev/source"
MESH_FILE = "_mesh.yaml"


@dataclass(frozen=True)
class KubeObject:
    api_version: str
    kind: str
    name: str
    namespace: str | None                 # None: a cluster-scoped object
    body: dict[str, Any]                  # `spec` and/or the kind's other top-level fields
    source: str | None = None             # FILE:LINE:COL of the construct (str(ir.Location))
    service: str | None = None            # the meshc service it belongs to (its file); None: the mesh's
    labels: dict[str, str] = field(default_factory=dict)
    # a list field whose elements come from different constructs: (its path, e.g. `spec.rules`;
    # each element's FILE:LINE:COL); not written, used to locate validation problems
    parts: tuple[str, tuple[str, ...]] | None = None

    def to_data(self) -> dict[str, Any]:
        """The object as Kubernetes reads it, keys in the order `render` writes them."""
        meta: dict[str, Any] = {"name": self.name}
        if self.namespace is not None:
            meta["namespace"] = self.namespace
        if self.labels:
            meta["labels"] = dict(sorted(self.labels.items()))
        if self.source is not None:
            meta["annotations"] = {SOURCE_ANNOTATION: self.source}
        data: dict[str, Any] = {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta}
        for key in sorted(self.body):
            data[key] = _sorted(self.body[key])
        return data


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_sorted(v) for v in value]
    return value


def render(objects: list[KubeObject], native: bool = True) -> bytes:
    """Multi-document YAML (`---` before each document), deterministic (`native`: libyaml's
    emitter when there is one; the same bytes as the Python one)."""
    import yaml

    parts = []
    dumper = _dumper(native)
    for obj in objects:
        parts.append("---\n")
        parts.append(yaml.dump(obj.to_data(), Dumper=dumper, sort_keys=False, default_flow_style=False,
                               allow_unicode=False, width=1 << 16, indent=2))
    return "".join(parts).encode("utf-8")


_DUMPERS: dict[bool, Any] = {}


def _dumper(native: bool = True) -> Any:
    """PyYAML's safe dumper without anchors (each object stands alone): libyaml's emitter when
    PyYAML has it (ten times faster on a large fleet), else the Python one, which writes the same
    bytes (tests/test_kube_output.py holds the two equal)."""
    native = native and hasattr(__import__("yaml"), "CSafeDumper")
    found = _DUMPERS.get(native)
    if found is None:
        import yaml

        base = yaml.CSafeDumper if native else yaml.SafeDumper

        class _Dumper(base):  # type: ignore[valid-type, misc]
            def ignore_aliases(self, data: Any) -> bool:
                return True

        found = _DUMPERS[native] = _Dumper
    return found


def load(data: bytes | str) -> list[dict[str, Any]]:
    """The documents of a rendered file (for tests and `meshc check --target`)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml's when built with it: ~10x faster
    return [d for d in yaml.load_all(data, Loader=loader) if d is not None]


def layout(objects: list[KubeObject], kinds: tuple[str, ...]) -> dict[str, bytes]:
    """The files: `NAMESPACE/SERVICE.yaml` per service, `NAMESPACE/_mesh.yaml` for the mesh's."""
    rank = {k: i for i, k in enumerate(kinds)}
    groups: dict[str, list[KubeObject]] = {}
    for obj in objects:
        ns = obj.namespace or "_cluster"
        path = f"{ns}/{obj.service.rpartition('/')[2]}.yaml" if obj.service is not None else f"{ns}/{MESH_FILE}"
        groups.setdefault(path, []).append(obj)
    out: dict[str, bytes] = {}
    for path in sorted(groups):
        group = sorted(groups[path], key=lambda o: (rank.get(o.kind, len(rank)), o.kind, o.name))
        out[path] = render(group)
    return out


class KubeTarget(Protocol):
    """What a Kubernetes backend implements."""
    name: str                   # the --target value: "istio", "gateway-api"
    kinds: tuple[str, ...]      # the kinds it writes, in the order of each file

    def build(self, program: Any, sources: dict) -> tuple[list[KubeObject], list[Diagnostic]]:
        """Every object of the program, and the diagnostics of what the target cannot carry exactly
        (errors for what it would do otherwise, warnings for approximations)."""
        ...


def emit_kube(target: KubeTarget, program: Any, sources: dict,
              extra_checks: Callable[[Any, dict], list[Diagnostic]] | None = None) -> Emitted:
    """Run a Kubernetes target: the name checks, the target's objects, the files; no files when
    there is an error (the CLI then writes nothing)."""
    from compiler.backends.kube.names import check_program_names

    diags = check_program_names(program, sources)
    if extra_checks is not None:
        diags += extra_checks(program, sources)
    emitted = Emitted(diagnostics=diags)
    if emitted.has_errors:
        return emitted
    objects, found = target.build(program, sources)
    emitted.diagnostics += found
    if emitted.has_errors:
        return emitted
    emitted.files = layout(objects, target.kinds)
    emitted.part_sources = {(o.kind, o.namespace, o.name): o.parts for o in objects if o.parts is not None}
    return emitted
