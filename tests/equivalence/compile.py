"""A generated policy compiled by the real compiler, in process, into both targets' files.

`compile_text` runs the compile API (compiler/api.py), as `meshc compile` does, on a text held
in memory, for the sidecar `SIDECAR`: the Envoy files in the fleet layout
(`xds/SIDECAR/cds.json`: one sidecar compiled has its own CDS file; `xds/rds-outbound.json` when
its scope is the whole program, else `xds/SIDECAR/rds-outbound.json`; `xds/SIDECAR/lds.json`,
with mTLS the SDS files `xds/SIDECAR/sds-*.json`, and the xds bootstrap `SIDECAR.envoy.json`) and the native config
`SIDECAR.native.json`. `certs_dir` is `--certs-dir`: where both find the identity files. A policy the compiler
rejects, or that either backend reports an error for, raises `PolicyRejected` with the
diagnostics: the generators only make policies that must compile.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from compiler import api
from compiler.backends.base import Options
from tests.envoy_support import flat_files

SIDECAR = "client"


class PolicyRejected(AssertionError):
    pass


@dataclass
class Compiled:
    text: str
    envoy: dict[str, bytes]           # relative path -> content (xds/..., SIDECAR.envoy.json)
    native: dict                      # the parsed SIDECAR.native.json
    warnings: list[str]

    def envoy_json(self, rel: str) -> dict:
        return json.loads(self.envoy[rel])

    def named(self, path: str) -> str:
        """The emitted file that a run-time path (XDS_DIR/REL) names."""
        return max((rel for rel in self.envoy if rel.startswith("xds/") and path.endswith(rel[3:])), key=len)

    @property
    def rds_path(self) -> str:
        """The RDS file the outbound listener names: shared by the sidecars whose scope is the
        whole program, else the sidecar's own (one sidecar compiled: its scope is its own;
        compiler/ir/scope.py)."""
        outbound = next(lst for lst in self.listeners if lst["name"] == "outbound")
        rds = outbound["filter_chains"][0]["filters"][0]["typed_config"]["rds"]
        return self.named(rds["config_source"]["path_config_source"]["path"])

    @property
    def routes(self) -> dict:
        """The RouteConfiguration of the outbound listener."""
        return self.envoy_json(self.rds_path)["resources"][0]

    @property
    def cds_path(self) -> str:
        """The CDS file the bootstrap names: the sidecar's own (a compile of one sidecar)."""
        boot = json.loads(self.envoy[f"{SIDECAR}.envoy.json"])
        return self.named(boot["dynamic_resources"]["cds_config"]["path_config_source"]["path"])

    @property
    def clusters(self) -> list[dict]:
        return self.envoy_json(self.cds_path)["resources"]

    @property
    def listeners(self) -> list[dict]:
        return self.envoy_json(f"xds/{SIDECAR}/lds.json")["resources"]


def compile_text(text: str, xds_dir: str = "/etc/meshc/xds", path: str = "generated.mesh",
                 certs_dir: str | None = None) -> Compiled:
    comp = api.compile([api.Text(path, text)], shard=False)
    errors = [d for d in comp.diagnostics if d.severity == "error"]
    if errors:
        raise PolicyRejected(_describe(errors, text))
    options = Options(bootstrap="xds", xds_dir=os.path.abspath(xds_dir), output_dir=os.path.abspath(xds_dir),
                      certs_dir=certs_dir)
    envoy = comp.emit("envoy", [SIDECAR], options)
    native = comp.emit("native", [SIDECAR], options)
    errors = [d for d in envoy.diagnostics + native.diagnostics if d.severity == "error"]
    if errors:
        raise PolicyRejected(_describe(errors, text))
    warnings = [f"{d.code}: {d.message}" for d in comp.diagnostics + envoy.diagnostics + native.diagnostics
                if d.severity != "error"]
    return Compiled(text, flat_files(envoy), json.loads(native.files[f"{SIDECAR}.native.json"]), warnings)


def _describe(diags, text: str) -> str:
    lines = [f"{d.code} at {d.span.start if d.span else d.path}: {d.message}" for d in diags]
    return "the compiler rejected a generated policy:\n" + "\n".join(lines) + "\n--- policy:\n" + text
