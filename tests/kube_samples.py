"""A sample value for any node of a structural schema: every property set (down to a depth), one
item per list, one entry per map, strings that parse as a duration. The CEL rules of the vendored
CRDs are evaluated on these (tests/test_kubeschema.py): a rule that cannot evaluate on a value its
schema describes is a gap of the validator."""

from __future__ import annotations

from typing import Any


def sample(node: dict[str, Any], depth: int = 0) -> Any:
    if depth > 14:
        return None
    if "enum" in node:
        return node["enum"][0]
    if node.get("x-kubernetes-int-or-string"):
        return 1
    t = node.get("type")
    if t == "object" or "properties" in node:
        out = {name: sample(sub, depth + 1) for name, sub in (node.get("properties") or {}).items()}
        out = {k: v for k, v in out.items() if v is not None}
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            value = sample(extra, depth + 1)
            if value is not None:
                out["1"] = value   # (a key that is also a port number: PeerAuthentication's rule reads int(key))
        return out
    if t == "array":
        item = sample(node.get("items") or {}, depth + 1)
        return [] if item is None else [item]
    if t == "string":
        return "1s"
    if t == "integer":
        return max(1, node.get("minimum", 1))
    if t == "number":
        return 1.0
    if t == "boolean":
        return True
    return None
