"""A located view of one Kubernetes object's values, recording which fields the importer read.

`Node(doc, path)` is the value at `path` of a YAML document (yaml_source.Document). Reading a
field through `at`, `value`, `items` or `entries` marks it as read; `consume` marks a whole
subtree. After an object is translated, `leftovers` walks it against the real CRD's fields
(fields.py): a field the schema does not declare is unknown (E1004), a declared field that the
translation never read is one meshc cannot express (E1005). So nothing of the input is dropped
silently: every field is either translated or reported.
"""

from __future__ import annotations

from typing import Any

from compiler.core.diagnostics import Collector, did_you_mean
from compiler.core.source import Span
from compiler.tooling.istio_import.yaml_source import Document

_MISSING = object()


class Seen:
    """What the translation read, per document: paths read, and subtrees taken whole."""

    def __init__(self) -> None:
        self.read: set[tuple[int, tuple]] = set()
        self.whole: set[tuple[int, tuple]] = set()


class Node:
    __slots__ = ("doc", "path", "raw", "seen")

    def __init__(self, doc: Document, path: tuple, raw: Any, seen: Seen):
        self.doc, self.path, self.seen = doc, path, seen
        self.raw: Any = raw
        seen.read.add((id(doc), path))

    @property
    def span(self) -> Span:
        """The field's key (for a mapping entry), else its value: where a diagnostic points."""
        return self.doc.where(self.path)

    @property
    def value_span(self) -> Span:
        return self.doc.value_span(self.path)

    @property
    def field(self) -> str:
        """The path as Istio's documentation writes it: `spec.http[0].route`."""
        out = ""
        for p in self.path:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
        return out

    def at(self, key: str | int) -> Node | None:
        """The child `key` of a mapping (or index of a list), or None when absent or null."""
        raw = self.raw
        if isinstance(raw, dict):
            child = raw.get(key, _MISSING)
        elif isinstance(raw, list) and isinstance(key, int) and 0 <= key < len(raw):
            child = raw[key]
        else:
            return None
        if child is _MISSING:
            return None
        node = Node(self.doc, self.path + (key,), child, self.seen)
        return None if child is None else node

    def consume(self) -> Any:
        self.seen.whole.add((id(self.doc), self.path))
        return self.raw

    def items(self) -> list[Node]:
        """The items of a list (an absent list: none)."""
        if not isinstance(self.raw, list):
            return []
        return [Node(self.doc, self.path + (i,), v, self.seen) for i, v in enumerate(self.raw)]

    def entries(self) -> list[tuple[str, Node]]:
        """The entries of a mapping, in written order."""
        if not isinstance(self.raw, dict):
            return []
        return [(k, Node(self.doc, self.path + (k,), v, self.seen)) for k, v in self.raw.items()]


def leftovers(node: Node, schema: object, kind: str, diags: Collector) -> None:
    """E1004 for every field the schema does not declare, E1005 for every declared field the
    translation did not read (iteratively: a walk of the object as written)."""
    seen = node.seen
    key = id(node.doc)
    work = [(node.path, node.raw, schema)]
    while work:
        path, raw, sch = work.pop()
        if (key, path) in seen.whole:
            continue
        if isinstance(raw, dict) and isinstance(sch, dict):
            for name, value in raw.items():
                sub = path + (name,)
                if name not in sch and "*" not in sch:
                    where = Node(node.doc, sub, value, seen)
                    diags.add("E1004", f"unknown field `{where.field}` in {kind}", where.span,
                              did_you_mean(name, [k for k in sch if k != "*"])
                              or f"not a field of Istio's {kind} (istio/api v1.30)")
                    continue
                child = sch.get(name, sch.get("*"))
                if (key, sub) not in seen.read and value is not None:
                    where = Node(node.doc, sub, value, seen)
                    diags.add("E1005", f"`{where.field}` of {kind} cannot be translated to meshc", where.span,
                              _UNTRANSLATED.get(name, "meshc has no construct with this meaning; remove the "
                                                "field, or keep this object in Istio YAML"))
                    continue
                work.append((sub, value, child))
        elif isinstance(raw, list) and isinstance(sch, list):
            for i, value in enumerate(raw):
                if (key, path + (i,)) in seen.read:
                    work.append((path + (i,), value, sch[0]))


_UNTRANSLATED = {
    "unmatchedPreflights": "meshc forwards a preflight from an origin it does not allow (Istio's FORWARD)",
    "redirect": "meshc routes have no redirects yet",
    "rewrite": "meshc routes have no rewrites yet",
    "directResponse": "meshc routes have no direct responses yet",
    "delegate": "meshc has no delegated routes: write the delegate's routes in this VirtualService",
    "tcp": "meshc routes HTTP only",
    "tls": "meshc routes HTTP only (an upstream TLS setting of a DestinationRule is meshc's `mtls`)",
    "loadBalancer": "meshc balances round robin, with no other policy",
    "portLevelSettings": "meshc has one port per service",
    "portLevelMtls": "meshc has one mTLS mode per service",
    "authority": "meshc routes a service's requests by path, headers, query and method: `Host` chooses the service",
    "scheme": "meshc does not match on the scheme",
    "port": "meshc has one port per service",
    "sourceLabels": "meshc's `caller NAME` is `sourceLabels: {app: NAME}`, NAME a service of the imported "
                    "files whose every pod has the label `app: NAME`",
    "sourceNamespace": "meshc's `caller` names a service, not a namespace",
    "gateways": "meshc configures the sidecars of the mesh, not gateways",
    "exportTo": "meshc has no visibility scopes: every service is visible to every sidecar",
    "workloadSelector": "meshc routes of a service apply to every caller",
    "targetRef": "meshc authorization applies to a service, chosen by `selector`",
    "targetRefs": "meshc authorization applies to a service, chosen by `selector`",
}
