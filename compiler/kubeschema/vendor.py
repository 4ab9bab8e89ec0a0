"""Regenerate the vendored CRD schemas (compiler/kubeschema/crds/) from the upstream CRD files.

    python -m compiler.kubeschema.vendor ../shared/crds

reads Istio's `istio/customresourcedefinitions.gen.yaml` and Gateway API's
`gateway-api/{standard,experimental}/{httproutes,referencegrants}.yaml` (the layout of ../shared/crds, whose README
gives the revisions), keeps the kinds meshc writes or reads (KINDS), and writes one JSON file per
bundle: for each kind its API group, scope, the served versions and the `openAPIV3Schema` with
the `description` texts removed (they are most of the bytes and validate nothing). Every served
version of a kind must carry the same schema (true of both projects at these revisions: their
versions are generated from one type); a bump that breaks this fails here instead of validating
against the wrong one. The LICENSE files are copied beside them. Only the standard library and
PyYAML: a revision bump is `python -m compiler.kubeschema.vendor DIR` and a look at the diff.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "crds"

# bundle file -> (its source files under the CRD folder, the kinds kept)
ISTIO_KINDS = ("VirtualService", "DestinationRule", "AuthorizationPolicy", "PeerAuthentication", "Sidecar",
               "ServiceEntry", "WorkloadEntry", "EnvoyFilter")
GATEWAY_KINDS = ("HTTPRoute", "ReferenceGrant")
BUNDLES = {
    "istio.json": (("istio/customresourcedefinitions.gen.yaml",), ISTIO_KINDS),
    "gateway-api-standard.json": (("gateway-api/standard/httproutes.yaml",
                                   "gateway-api/standard/referencegrants.yaml"), GATEWAY_KINDS),
    "gateway-api-experimental.json": (("gateway-api/experimental/httproutes.yaml",
                                       "gateway-api/experimental/referencegrants.yaml"), GATEWAY_KINDS),
}
LICENSES = {"LICENSE.istio": "istio/LICENSE", "LICENSE.gateway-api": "gateway-api/LICENSE"}

# The keys of a schema node whose values are schemas, lists of schemas or maps of schemas.
_SUB_SCHEMA = ("items", "additionalProperties", "not")
_SUB_LISTS = ("allOf", "anyOf", "oneOf")
_SUB_MAPS = ("properties",)


def strip(schema: Any) -> Any:
    """The schema without its `description` texts (a property named `description` stays)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key in _SUB_SCHEMA:
            out[key] = strip(value)
        elif key in _SUB_LISTS:
            out[key] = [strip(v) for v in value]
        elif key in _SUB_MAPS:
            out[key] = {name: strip(v) for name, v in value.items()}
        else:
            out[key] = value
    return out


def bundle(paths: tuple[Path, ...], kinds: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    found: dict[str, Any] = {}
    annotations: dict[str, str] = {}
    docs = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            docs += [(path, d) for d in yaml.load_all(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d]
    for path, doc in docs:
        kind = doc["spec"]["names"]["kind"]
        if kind not in kinds:
            continue
        served = [v for v in doc["spec"]["versions"] if v.get("served")]
        schemas = {json.dumps(v["schema"]["openAPIV3Schema"], sort_keys=True) for v in served}
        if len(schemas) != 1:
            raise SystemExit(f"{path}: {kind}'s served versions carry different schemas: vendor them one by one")
        storage = next(v["name"] for v in served if v.get("storage"))
        found[kind] = {
            "group": doc["spec"]["group"],
            "scope": doc["spec"]["scope"],
            "versions": sorted(v["name"] for v in served),
            "storage": storage,
            "schema": strip(served[0]["schema"]["openAPIV3Schema"]),
        }
        annotations.update({k: v for k, v in (doc["metadata"].get("annotations") or {}).items()
                            if k.startswith("gateway.networking.k8s.io/")})
    missing = set(kinds) - set(found)
    if missing:
        raise SystemExit(f"{', '.join(map(str, paths))}: no CRD for {sorted(missing)}")
    return {"source": ", ".join(p.name for p in paths), "annotations": annotations,
            "kinds": {k: found[k] for k in kinds}}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    root = Path(argv[0])
    HERE.mkdir(exist_ok=True)
    for name, (rels, kinds) in BUNDLES.items():
        data = bundle(tuple(root / rel for rel in rels), kinds)
        text = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        (HERE / name).write_text(text, encoding="utf-8")
    for name, rel in LICENSES.items():
        shutil.copyfile(root / rel, HERE / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
