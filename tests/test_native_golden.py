"""Golden tests of the native backend: `meshc compile EXAMPLE --target native`.

The goldens are `tests/golden/native/EXAMPLE/SERVICE.native.json`, for the sidecars whose config
the example itself writes (a service it declares, or a `routes` or `authorization` block of it):
every such file holds every destination of the program, so the other sidecars would only repeat
them. Each example is compiled from the repository root so that `source` locations are stable.
`pytest --update-goldens` rewrites them and deletes orphaned ones.

Every golden is also checked against the contract: the pydantic models of runtime_proxy/config.py
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

from compiler import api, backends

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / "tests" / "golden" / "native"
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.mesh"))


def compile_example(case: str):
    with contextlib.chdir(ROOT):
        result = api.compile([f"examples/{case}.mesh"])
    assert result.diagnostics == [], [d.message for d in result.diagnostics]
    return result


def own_services(program, case: str) -> list[str]:
    """The services whose sidecar config the example writes itself."""
    prefix = f"examples/{case}.mesh:"
    return [s.name for s in program.services
            if any((src or "").startswith(prefix)
                   for src in [s.source, s.authorization.source, *(r.source for r in s.routes)])]


@functools.lru_cache(maxsize=None)
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
    from runtime_proxy.config.model import Config
    from runtime_proxy.config.loading import load, semantic_errors
    from runtime_proxy.decide.table import compile_config

    raw = path.read_bytes()
    config = Config.model_validate_json(raw, strict=True)
    data = orjson.loads(raw)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in schema_validator().iter_errors(data)]
    assert errors == []
    assert semantic_errors(data) == []
    assert load(path) == config
    table = compile_config(config)
    assert config.service == path.name.removesuffix(".native.json")
    assert [s.name for s in config.services] == sorted(s.name for s in config.services)
    assert table.service_for_host(config.service) is not None


@pytest.mark.parametrize("path", all_goldens(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_version_is_the_hash_of_the_rest(path):
    data = orjson.loads(path.read_bytes())
    version = data.pop("version")
    digest = hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()
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
    assert data["app"] == {"host": svc.sidecar.app_host, "port": svc.sidecar.app_port}
    assert data["normalization"] == {"escaped_slashes": svc.sidecar.escaped_slashes}
    assert data["authorization"]["default"] == "deny"
    assert [s["name"] for s in data["services"]] == [s.name for s in program.services]
    dest = next(s for s in data["services"] if s["name"] == "recommendations")
    assert dest["domains"] == ["recommendations", "recommendations:8090", "recommendations.shop",
                               "recommendations.shop:8090"]
    assert [s["cluster"] for s in dest["subsets"]] == ["outbound|v1|recommendations", "outbound|v2|recommendations"]
    assert [r["name"] for r in dest["routes"]] == [r.name for r in svc.routes]
    rollout = dest["routes"][2]
    assert rollout["split"] == {"key_header": "x-user-bucket", "total_weight": 100, "targets": [
        {"service": "recommendations", "subset": "v1", "weight": 90},
        {"service": "recommendations", "subset": "v2", "weight": 10}]}


def test_every_ir_field_reaches_the_config():
    """The lowering is field by field: a field added to an IR class that the config has too must
    be transcribed (the models forbid unknown fields, so the reverse is caught by validation)."""
    from compiler import ir
    from runtime_proxy.config import model as cfg

    pairs = [(ir.Route, cfg.Route), (ir.Match, cfg.Match), (ir.HeaderMatch, cfg.HeaderMatch),
             (ir.QueryMatch, cfg.QueryMatch), (ir.Retry, cfg.Retry), (ir.Split, cfg.Split),
             (ir.Fault, cfg.Fault), (ir.Mirror, cfg.Mirror), (ir.HeaderChanges, cfg.HeaderChanges),
             (ir.Limits, cfg.Limits), (ir.Outlier, cfg.Outlier), (ir.RetryBudget, cfg.RetryBudget),
             (ir.AuthzRule, cfg.AuthzRule), (ir.Authorization, cfg.Authorization),
             (ir.Subset, cfg.Subset), (ir.Endpoint, cfg.Endpoint)]
    for ir_cls, model in pairs:
        missing = set(ir_cls.__dataclass_fields__) - set(model.model_fields)
        assert not missing, f"{ir_cls.__name__} fields without a place in the native config: {missing}"


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
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert outputs[0] == outputs[1]
    assert "frontend.native.json" in outputs[0]


def test_domains_and_clusters_are_the_envoy_targets():
    """The native config names destinations as the Envoy target does (same Host domains, same
    cluster names), so that routing and stats read alike on both targets."""
    try:
        from compiler.backends.envoy import names, routes
        virtual_host, outbound_cluster = routes.virtual_host, names.outbound_cluster
    except (ImportError, AttributeError):  # the Envoy backend is developed alongside
        pytest.skip("the Envoy backend does not expose virtual_host / outbound_cluster")
    from compiler.backends import native

    program = compile_example("canary").ir
    for svc in program.services:
        assert native.domains(svc) == virtual_host(svc)["domains"]
        for sub in svc.subsets:
            assert native.cluster_name(svc.name, sub.name) == outbound_cluster(svc.name, sub.name)


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
    compile_config(Config.model_validate(data, strict=True))
