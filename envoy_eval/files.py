"""The Envoy configuration of one sidecar as the evaluator reads it, from the files meshc emits
(`meshc compile --emit envoy --bootstrap xds`: `SIDECAR.envoy.json` and the `xds/` files it
names), held in memory as {relative path: bytes}. Only the paths the files name are followed:
nothing here knows how the compiler lays them out."""

from __future__ import annotations

import json


class EnvoyFiles:
    """`files`: relative path -> content (a link already replaced by a copy of its target);
    `sidecar`: the service whose bootstrap `SIDECAR.envoy.json` starts the reading; `parsed`: a
    cache of parsed files, which the sidecars of one program may share (their scopes' route and
    cluster files are shared files). The evaluator only reads what it is given."""

    def __init__(self, files: dict[str, bytes], sidecar: str, parsed: dict[str, dict] | None = None):
        self.files = files
        self.sidecar = sidecar
        self._cache: dict[str, dict] = {} if parsed is None else parsed

    def json(self, rel: str) -> dict:
        found = self._cache.get(rel)
        if found is None:
            found = self._cache[rel] = json.loads(self.files[rel])
        return found

    def named(self, path: str) -> str:
        """The file that a run-time path (XDS_DIR/REL) names: the longest `xds/…` file it ends with."""
        candidates = [rel for rel in self.files if rel.startswith("xds/") and path.endswith(rel[3:])]
        if not candidates:
            raise KeyError(f"no emitted file for {path}")
        return max(candidates, key=len)

    @property
    def bootstrap(self) -> dict:
        return self.json(f"{self.sidecar}.envoy.json")

    @property
    def listeners(self) -> list[dict]:
        lds = self.bootstrap["dynamic_resources"]["lds_config"]["path_config_source"]["path"]
        return list(self.json(self.named(lds))["resources"])

    @property
    def clusters(self) -> list[dict]:
        cds = self.bootstrap["dynamic_resources"]["cds_config"]["path_config_source"]["path"]
        return list(self.json(self.named(cds))["resources"])

    @property
    def routes(self) -> dict:
        """The RouteConfiguration the outbound listener names (RDS)."""
        outbound = next(lst for lst in self.listeners if lst["name"] == "outbound")
        hcm = outbound["filter_chains"][0]["filters"][0]["typed_config"]
        if "route_config" in hcm:
            return dict(hcm["route_config"])
        rds = hcm["rds"]["config_source"]["path_config_source"]["path"]
        return dict(self.json(self.named(rds))["resources"][0])
