"""The fields of the Istio kinds `meshc import istio` reads, as the real CRD schemas declare them:
derived from the CRDs vendored for the validator (compiler/kubeschema/crds/istio.json, istio/api
v1.30.3), so the two never disagree and a revision bump updates both.

A dict is an object's fields (`"*"`: a map whose keys are free), a one-item list an array of that,
None a value. A field not here is an unknown field (E1004); a field here that the importer does not
translate is E1005.
"""

from __future__ import annotations

from typing import Any

_FIELDS: dict[str, Any] = {}


def _tree(schema: dict[str, Any]) -> Any:
    if "properties" in schema:
        return {name: _tree(sub) for name, sub in schema["properties"].items()}
    if schema.get("type") == "object":
        free = schema.get("additionalProperties")
        return {"*": _tree(free)} if isinstance(free, dict) else None
    if schema.get("type") == "array" and "items" in schema:
        return [_tree(schema["items"])]
    return None


def spec_fields(kind: str) -> Any:
    """The field tree of `spec` of an Istio kind (the storage version's schema)."""
    found = _FIELDS.get(kind)
    if found is None:
        from compiler.kubeschema.validate import bundle

        found = _FIELDS[kind] = _tree(bundle("istio")[kind]["schema"]["properties"]["spec"])
    return found
