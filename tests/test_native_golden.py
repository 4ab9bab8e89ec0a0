"""Golden tests of the native backend: `meshc compile EXAMPLE --target native`.

The goldens are `tests/golden/native/EXAMPLE/SERVICE.native.json`, for the sidecars whose config
the example itself writes (a service it declares, or a `routes` or `authorization` block of it):
every such file holds every destination of the program, so the other sidecars would only repeat
them. Each example is compiled from the repository root so that `source` locations are stable.
`pytest --update-goldens` rewrites them and deletes orphaned ones.

Every golden is also checked against the contract: the pydantic models of runtime_proxy/config/model.py
(strict, as the proxy loads it), the committed JSON Schema (as `--check-config` does), the checks
a schema cannot express, and the proxy's table compilation.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from compiler import api, backends, ir

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / "tests" / "golden" / "native"
# the example policies, not their tests (*_test.mesh)
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.mesh") if not p.stem.endswith("_test"))


def compile_example(case: str):
    with contextlib.chdir(ROOT):
        result = api.compile([f"examples/{case}.mesh"])
    assert result.diagnostics == [], [d.message for d in result.diagnostics]
    return result


def own_services(program, case: str) -> list[str]:
    """The services whose sidecar config the example writes itself."""
    file = f"examples/{case}.mesh"
    return [s.name for s in program.services
            if any(src is not None and src.file == file
                   for src in [s.source, s.authorization.source, *(r.source for r in s.routes)])]


@functools.cache
def emitted(case: str) -> dict[str, bytes]:
    result = compile_example(case)
    out = result.emit("native", own_services(result.ir, case))
    assert out.diagnostics == []
    return out.files


def all_goldens() -> list[Path]:
    return sorted(GOLDEN_DIR.glob("*/*.native.json"))


@pytest.mark.parametrize("case", EXAMPLES)
def test_native_golden(case, update_goldens):
    files = emitted(case)
    assert files, f"example {case} writes no sidecar config"
    folder = GOLDEN_DIR / case
    if update_goldens:
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            path = folder / name
            if not path.exists() or path.read_bytes() != content:
                path.write_bytes(content)
        for path in folder.glob("*.native.json"):
            if path.name not in files:
                path.unlink()
        return
    on_disk = sorted(p.name for p in folder.glob("*.native.json"))
    assert on_disk == sorted(files), f"{folder.relative_to(ROOT)} holds other files: run `pytest --update-goldens`"
    for name, content in files.items():
        path = folder / name
        assert content == path.read_bytes(), \
            f"{path.relative_to(ROOT)} differs (run `pytest --update-goldens` and review the diff)"


def test_no_orphaned_native_goldens(update_goldens):
    orphans = [p for p in GOLDEN_DIR.iterdir() if p.name not in EXAMPLES] if GOLDEN_DIR.exists() else []
    if update_goldens:
        for p in orphans:
            for f in p.glob("*") if p.is_dir() else []:
                f.unlink()
            p.rmdir() if p.is_dir() else p.unlink()
        return
    assert not orphans, f"native goldens without an example (run `pytest --update-goldens`): {orphans}"


# ---- every golden honours the contract ------------------------------------------------------

@functools.lru_cache(maxsize=1)
def schema_validator():
    import jsonschema

    from runtime_proxy.config.loading import load_schema
    return jsonschema.Draft202012Validator(load_schema())


@pytest.mark.parametrize("path", all_goldens(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_golden_is_a_valid_config(path):
    from runtime_proxy.config.loading import load, semantic_errors
    from runtime_proxy.config.model import Config
    from runtime_proxy.decide.table import compile_config

    raw = path.read_bytes()
    config = Config.model_validate_json(raw, strict=True)
    data = orjson.loads(raw)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in schema_validator().iter_errors(data)]
    assert errors == []
    assert semantic_errors(data) == []
    assert load(path) == config
    table = compile_config(data)
    assert config.service == path.name.removesuffix(".native.json")
    assert [s.name for s in config.services] == sorted(s.name for s in config.services)
    # a destination of the sidecar's scope answers to its domains; one that the scope's routes only
    # send to has none (and no routes): a request addressed to it gets the unknown Host's 404
    assert any(s.domains for s in config.services)
    for s in config.services:
        assert (table.service_for_host(s.name) is not None) == bool(s.domains) == bool(s.routes)


@pytest.mark.parametrize("path", all_goldens(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_version_is_the_hash_of_the_rest(path):
    data = orjson.loads(path.read_bytes())
    version = data.pop("version")
    # the file's own order: the envelope's keys sorted, the IR's nodes in their fields' order
    digest = hashlib.sha256(orjson.dumps(data)).hexdigest()
    assert version == digest[:16]


def test_config_is_the_ir_slice_of_the_sidecar():
    """Spot checks of the lowering against the IR: addresses, domains, cluster names, routes."""
    result = compile_example("canary")
    program = result.ir
    files = emitted("canary")
    data = json.loads(files["recommendations.native.json"])
    svc = program.service("recommendations")
    assert data["service"] == "recommendations" and data["identity"] == svc.identity
    assert data["listeners"] == {"inbound": {"host": "127.0.0.1", "port": svc.sidecar.inbound_port},
                                 "outbound": {"host": "127.0.0.1", "port": svc.sidecar.outbound_port},
                                 "admin": {"host": "127.0.0.1", "port": svc.sidecar.admin_port}}
    assert data["app"] == {"host": svc.sidecar.app_host, "port": svc.sidecar.app_port, "discovery": "static",
                           "cluster": "inbound|recommendations", "upstream": ir.to_data(svc.upstream),
                           "limits": ir.to_data(svc.sidecar.app_limits)}
    assert data["proxy"] == {"max_request_headers": 100, "max_request_headers_bytes": 61440,
                             "max_request_body_bytes": 0, "idle_timeout_ms": 3_600_000,
                             "request_headers_timeout_ms": 10_000, "stream_idle_timeout_ms": 300_000,
                             "max_connections": 4096, "drain_timeout_ms": 5000}
    assert data["normalization"] == {"escaped_slashes": svc.sidecar.escaped_slashes}
    assert data["authorization"]["default"] == "deny"
    # recommendations admits frontend only (compiler/ir/scope.py): its own sidecar cannot call it,
    # frontend's, whose scope is the whole program, can
    assert "recommendations" not in [s["name"] for s in data["services"]]
    frontend = json.loads(result.emit("native", ["frontend"]).files["frontend.native.json"])
    assert [s["name"] for s in frontend["services"]] == [s.name for s in program.services]
    dest = next(s for s in frontend["services"] if s["name"] == "recommendations")
    assert dest["domains"] == ["recommendations", "recommendations:8090", "recommendations.shop",
                               "recommendations.shop:8090", "recommendations.shop.svc",
                               "recommendations.shop.svc:8090", "recommendations.shop.svc.cluster.local",
                               "recommendations.shop.svc.cluster.local:8090"]
    assert [s["cluster"] for s in dest["subsets"]] == ["outbound|v1|recommendations", "outbound|v2|recommendations"]
    assert [r["name"] for r in dest["routes"]] == [r.name for r in svc.routes]
    rollout = next(r for r in dest["routes"] if r["name"] == "rollout")
    assert rollout["split"] == {"key_header": "x-user-bucket", "total_weight": 100, "targets": [
        {"service": "recommendations", "subset": "v1", "weight": 90, "request_headers": None, "response_headers": None},
        {"service": "recommendations", "subset": "v2", "weight": 10, "request_headers": None,
         "response_headers": None}]}
    # the IR's own nodes, field for field
    assert dest["routes"] == [ir.to_data(r) for r in svc.routes]
    assert dest["subsets"] == [ir.to_data(sub) for sub in svc.subsets]


# ---- determinism and the command line -------------------------------------------------------

def test_output_is_deterministic():
    result = compile_example("shop")
    names = [s.name for s in result.ir.services]
    first = backends.emit("native", result.ir, names, backends.Options()).files
    second = backends.emit("native", result.ir, list(reversed(names)), backends.Options()).files
    assert first == second


def test_cli_writes_the_configs_and_does_not_load_pydantic(tmp_path):
    """`meshc compile --target native` across two hash seeds: the same bytes, and the compiler
    never imports the proxy's pydantic models (compile start-up stays fast)."""
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        code = ("import sys, runpy; sys.argv = ['meshc', 'compile', 'examples', '--target', 'native', "
                f"'--proxy', 'all', '-o', {str(out)!r}]\n"
                "from compiler import cli\n"
                "rc = cli.main(sys.argv[1:])\n"
                "bad = sorted(m for m in sys.modules if m.startswith(('pydantic', 'runtime_proxy')))\n"
                "assert not bad, bad\n"
                "sys.exit(rc)\n")
        env = dict(os.environ, PYTHONHASHSEED=seed)
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        outputs.append({str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert outputs[0] == outputs[1]
    assert "frontend.native.json" in outputs[0]


def test_domains_and_clusters_are_the_envoy_targets():
    """Both targets name destinations as the IR does (the same Host domains, cluster names and
    SNI, decided once by compiler/ir/names.py), so that routing and stats read alike."""
    from compiler.backends.envoy import clusters, routes

    program = compile_example("canary").ir
    native = json.loads(emitted("canary")["recommendations.native.json"])
    by_name = {s["name"]: s for s in native["services"]}
    vhosts = {v["name"]: v for v in routes.outbound_route_configuration(program)["virtual_hosts"]}
    assert by_name
    for svc in program.services:
        if svc.name not in by_name:
            continue   # outside recommendations' scope
        assert vhosts[svc.name]["domains"] == list(svc.domains)
        assert by_name[svc.name]["domains"] in ([], list(svc.domains))   # [] when only its routes reach it
        envoy_clusters = [c["name"] for c in clusters.service_clusters(svc)]
        assert [s["cluster"] for s in by_name[svc.name]["subsets"]] == envoy_clusters == \
            [s.cluster for s in svc.subsets]
        assert by_name[svc.name]["sni"] == svc.sni
        assert clusters.inbound_cluster(svc)["name"] == svc.sidecar.app_cluster


# ---- mutual TLS ---------------------------------------------------------------------------------

def test_mtls_section_and_destinations():
    """`mtls`: the sidecar's own mode and identity files (`<certificates>/<service>`, or the
    `--certs-dir` root); every destination whose mode is not `disable` is called over mTLS with
    the Envoy target's SNI. A sidecar whose own mode is `disable` still has files when it calls
    an mTLS service (resilience: orders calls fraud)."""
    program = compile_example("resilience").ir
    files = emitted("resilience")
    orders = json.loads(files["orders.native.json"])
    fraud = json.loads(files["fraud.native.json"])
    assert fraud["mtls"]["mode"] == "strict" and orders["mtls"]["mode"] == "disable"
    directory = program.service("orders").mtls.directory
    assert orders["mtls"]["files"] == {"directory": directory, "cert": f"{directory}/cert.pem",
                                       "key": f"{directory}/key.pem", "ca": f"{directory}/ca.pem"}
    for svc in orders["services"]:
        assert svc["mtls"] == (program.service(svc["name"]).mtls.mode != "disable")
        assert svc["sni"] == f"{svc['name']}.{svc['namespace']}"
    relocated = backends.emit("native", program, ["orders"], backends.Options(certs_dir="/run/meshc/certs/"))
    data = json.loads(relocated.files["orders.native.json"])
    assert data["mtls"]["files"]["cert"] == "/run/meshc/certs/orders/cert.pem"
    assert data["version"] != orders["version"]


def test_a_mesh_without_mtls_needs_no_identity_files(tmp_path):
    (tmp_path / "plain.mesh").write_text(
        'service a {\n  port 80\n  endpoints ["127.0.0.1:9001"]\n}\n'
        'service b {\n  port 81\n  endpoints ["127.0.0.1:9002"]\n}\n')
    with contextlib.chdir(tmp_path):
        result = api.compile(["plain.mesh"])
    assert result.diagnostics == [], [d.message for d in result.diagnostics]
    data = json.loads(backends.emit("native", result.ir, ["a"], backends.Options()).files["a.native.json"])
    assert data["mtls"] == {"mode": "disable", "files": None}
    assert [(s["name"], s["mtls"]) for s in data["services"]] == [("a", False), ("b", False)]
    from runtime_proxy.config.model import Config
    from runtime_proxy.decide.table import compile_config
    Config.model_validate(data, strict=True)
    compile_config(data)
