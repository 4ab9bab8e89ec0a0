"""Golden tests of the Envoy backend: every example, every resource type.

For each example NAME, `tests/golden/envoy/NAME/` holds exactly what
`meshc compile examples/NAME.mesh --target envoy --proxy all --xds-dir /etc/meshc/xds -o DIR`
writes (the fleet layout: `xds/cds.json` clusters, or `xds/SERVICE/cds.json` with mTLS,
`xds/SERVICE/sds-*.json` secrets, `xds/SERVICE/lds.json` listeners, `xds/rds-outbound.json`
routes, `SERVICE.envoy.json` bootstraps), plus
`static/SERVICE.envoy.json`, the self-contained bootstrap (`--bootstrap static`) of the sidecar
the example is about. meshc writes compact JSON; the goldens keep it indented (`_readable`), so
that a change reads as a diff, and the test also holds the output to its compact canonical form.
Compiled from the repository root, with a fixed xds directory, so the files do not depend on the
machine. `pytest --update-goldens` rewrites them and deletes orphans.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from tests.envoy_support import GOLDEN_XDS_DIR, ROOT, compile_files, flat_files, run_meshc

GOLDEN_DIR = Path(ROOT) / "tests" / "golden" / "envoy"
# the example policies, not their tests (*_test.mesh)
EXAMPLES = sorted(p.stem for p in (Path(ROOT) / "examples").glob("*.mesh") if not p.stem.endswith("_test"))
# The sidecar whose static bootstrap each example keeps as a golden (the service it is about).
STATIC_PROXY = {"canary": "recommendations", "resilience": "orders", "shop": "payments", "staging": "fulfilment",
                "zero-trust": "payments"}


def _readable(data: bytes) -> bytes:
    """A golden's form of an output file: indented, keys sorted."""
    import orjson

    option = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    return orjson.dumps(orjson.loads(data), option=option)


def _compact(data: bytes) -> bytes:
    import orjson

    return orjson.dumps(orjson.loads(data), option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


@functools.cache
def outputs(case: str) -> dict[str, bytes]:
    """Every golden file of an example: relative path -> bytes."""
    files = [f"examples/{case}.mesh"]
    _, fleet = compile_files(files)
    assert not fleet.diagnostics, [d.message for d in fleet.diagnostics]
    out = flat_files(fleet)   # a sidecar's CDS link as a copy of its scope's file
    proxy = STATIC_PROXY.get(case)
    if proxy is not None:
        _, static = compile_files(files, [proxy], bootstrap="static")
        out[f"static/{proxy}.envoy.json"] = static.files[f"{proxy}.envoy.json"]
    return out


def test_every_example_has_a_static_golden():
    assert sorted(STATIC_PROXY) == EXAMPLES


@pytest.mark.parametrize("case", EXAMPLES)
def test_envoy_golden(case, update_goldens):
    files = outputs(case)
    case_dir = GOLDEN_DIR / case
    on_disk = {str(p.relative_to(case_dir)) for p in case_dir.rglob("*") if p.is_file()} if case_dir.exists() else set()
    if update_goldens:
        for rel, data in files.items():
            path = case_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_bytes() != _readable(data):
                path.write_bytes(_readable(data))
        for rel in on_disk - set(files):
            (case_dir / rel).unlink()
        for d in sorted((p for p in case_dir.rglob("*") if p.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
        return
    missing = sorted(set(files) - on_disk)
    assert not missing, f"missing goldens under {case_dir.relative_to(ROOT)}: {missing} (run `pytest --update-goldens`)"
    orphans = sorted(on_disk - set(files))
    assert not orphans, \
        f"orphaned goldens under {case_dir.relative_to(ROOT)}: {orphans} (run `pytest --update-goldens`)"
    for rel, data in files.items():
        assert data == _compact(data), f"{rel} is not compact JSON with sorted keys"
        assert (case_dir / rel).read_bytes() == _readable(data), \
            f"{case_dir.relative_to(ROOT)}/{rel} differs (run `pytest --update-goldens` and review the diff)"


def test_no_orphaned_example_directories(update_goldens):
    orphans = sorted(p for p in GOLDEN_DIR.iterdir() if p.name not in EXAMPLES) if GOLDEN_DIR.exists() else []
    if update_goldens:
        import shutil

        for p in orphans:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return
    assert not orphans, f"Envoy goldens without an example: {[p.name for p in orphans]}"


def test_files_come_in_dependency_order():
    """Secrets first, then clusters, then routes, then listeners, then bootstraps: the CLI
    renames in this order, so a watching Envoy never sees a route naming a cluster it does not
    have yet, a listener naming a routes file that is not there yet, nor a cluster or listener
    naming a secret file that is not there yet. Without mTLS, the sidecars' CDS links come right
    after the clusters' files (before the routes)."""
    keys = list(compile_files(["examples/shop.mesh"])[1].files)  # mTLS: SDS and CDS files per sidecar
    kinds = ["sds" if "/sds-" in k else "cds" if k.endswith("cds.json") else "lds" if k.endswith("/lds.json") else
             "rds" if k.endswith("rds-outbound.json") else "bootstrap" for k in keys]
    assert kinds == sorted(kinds, key=["sds", "cds", "rds", "lds", "bootstrap"].index)
    assert kinds.count("sds") == 2 * kinds.count("bootstrap") and kinds.count("cds") == kinds.count("bootstrap")
    # the shared routes, and checkout's own (`routes cart` has a route for `caller checkout`)
    assert [k for k in keys if k.endswith("rds-outbound.json")] == ["xds/rds-outbound.json",
                                                                     "xds/checkout/rds-outbound.json"]


def test_plaintext_sidecars_cds_links_come_between_the_clusters_and_the_routes(tmp_path):
    """Without mTLS each sidecar's bootstrap names its own CDS path, a link to its scope's file:
    the CLI writes the links after the clusters' files and before the routes and listeners. A
    scope of one sidecar has its file at that path itself: a CDS file, no link."""
    policy = ('mesh { mtls disable }\n'
              'service a { port 1  endpoints ["10.0.0.1:1"] }\n'
              'service b { port 2  endpoints ["10.0.0.2:1"] }\n'
              'authorization a { default deny  allow x { from service b } }\n')
    shared = ('service c { port 3  endpoints ["10.0.0.3:1"] }\n'   # c shares a's scope: b only
              'authorization c { default deny  allow x { from service b } }\n')
    for text, links in ((policy + shared, ["xds/a/cds.json", "xds/b/cds.json", "xds/c/cds.json"]),
                        (policy, ["xds/b/cds.json"])):   # a alone in its scope: xds/a/cds.json is its file
        (tmp_path / "p.mesh").write_text(text)
        _, emitted = compile_files([str(tmp_path / "p.mesh")], cwd=str(tmp_path))
        keys = list(emitted.outputs())
        kinds = ["link" if k in emitted.links else "cds" if k.endswith("cds.json") else "lds" if k.endswith("/lds.json")
                 else "rds" if k.endswith("rds-outbound.json") else "bootstrap" for k in keys]
        assert kinds == sorted(kinds, key=["cds", "link", "rds", "lds", "bootstrap"].index)
        assert sorted(emitted.links) == links and kinds.count("cds") == 2


def test_cli_writes_the_in_process_output(tmp_path):
    proc = run_meshc("compile", "examples/canary.mesh", "--target", "envoy", "--proxy", "all",
                     "--xds-dir", GOLDEN_XDS_DIR, "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    fleet = {k: v for k, v in outputs("canary").items() if not k.startswith("static/")}
    written = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    manifest = json.loads(written.pop(".meshc-manifest"))["files"]   # tests/test_stale_outputs.py
    assert written == fleet and sorted(manifest) == sorted(fleet)


def test_output_is_deterministic_across_processes(tmp_path):
    """Byte-identical output from processes with different hash seeds (set and dict order)."""
    trees = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        proc = run_meshc("compile", "examples", "--target", "envoy", "--proxy", "all", "--xds-dir", GOLDEN_XDS_DIR,
                         "-o", str(out), env_extra={"PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        trees.append({str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert trees[0] == trees[1]


def _walk(node, found):
    if isinstance(node, dict):
        meta = node.get("metadata", {}).get("filter_metadata", {}).get("meshc")
        if meta is not None:
            found.append((node, meta))
        for v in node.values():
            _walk(v, found)
    elif isinstance(node, list):
        for v in node:
            _walk(v, found)


@pytest.mark.parametrize("case", EXAMPLES)
def test_every_route_cluster_and_rule_is_traceable(case):
    """Each route, cluster, listener and RBAC policy names the source line it comes from."""
    files = outputs(case)
    docs = {k: json.loads(v) for k, v in files.items() if k.startswith("xds/")}
    routes = [r for vh in docs["xds/rds-outbound.json"]["resources"][0]["virtual_hosts"] for r in vh["routes"]]
    clusters = [c for k, doc in docs.items() if k.endswith("cds.json") for c in doc["resources"]]
    assert routes and clusters
    for node in routes + clusters:
        source = node["metadata"]["filter_metadata"]["meshc"]["source"]
        path, line, col = source.rsplit(":", 2)
        assert path.startswith(("examples/", "<std>/")), source
        assert int(line) >= 1 and int(col) >= 1
    for rel, doc in docs.items():
        if not rel.endswith("/lds.json"):
            continue
        inbound = next(r for r in doc["resources"] if r["name"] == "inbound")
        meta = inbound["metadata"]["filter_metadata"]["meshc"]["authorization"]
        hcm = inbound["filter_chains"][0]["filters"][0]["typed_config"]
        policies = {name for f in hcm["http_filters"] if "rules" in f["typed_config"]
                    for name in f["typed_config"]["rules"]["policies"]}
        assert policies <= set(meta["rules"]), rel
        for rule in meta["rules"].values():
            assert ":" in rule["source"]
