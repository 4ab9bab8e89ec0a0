"""Every Envoy golden and every compiled example passes the real `envoy --mode validate`.

Validate mode checks a bootstrap completely (unknown fields, proto constraints, regexes, routes
naming unknown clusters, referenced files that do not exist) but does not load file-based xDS
resources. So the xds files are validated as the static bootstrap they amount to
(`fleet_from_xds`: the listeners of every sidecar's LDS file with the routes of RDS inlined, and
the clusters of CDS, in one bootstrap). The goldens' dynamic bootstraps name the fixed
/etc/meshc/xds, so they are pointed at the golden directory; the examples are also compiled
into a temporary directory and validated as a user gets them, with their real xds directory.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.envoy_support import GOLDEN_XDS_DIR, fleet_from_xds, requires_envoy, run_meshc, validate
from tests.test_envoy_golden import EXAMPLES, GOLDEN_DIR, STATIC_PROXY

pytestmark = requires_envoy


def validate_all(paths: list[str]) -> None:
    """Validate in parallel (two Envoy processes at a time); fail with every rejected file."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(validate, paths))
    failures = [f"{p}:\n{out}" for p, (ok, out) in zip(paths, results) if not ok]
    assert not failures, "\n\n".join(failures)


def write(path, doc: dict) -> str:
    with open(path, "w") as fh:
        json.dump(doc, fh)
    return str(path)


def sidecars(directory) -> list[str]:
    return sorted(p.name[: -len(".envoy.json")] for p in directory.glob("*.envoy.json"))


@pytest.mark.parametrize("case", EXAMPLES)
def test_goldens_validate(case, tmp_path):
    case_dir = GOLDEN_DIR / case
    services = sidecars(case_dir)
    assert services, f"no goldens for {case} (run `pytest --update-goldens`)"
    paths = [str(p) for p in sorted((case_dir / "static").glob("*.envoy.json"))]
    for svc in services:  # each dynamic bootstrap, reading the golden xds files
        with open(case_dir / f"{svc}.envoy.json") as fh:
            doc = json.loads(fh.read().replace(GOLDEN_XDS_DIR, str(case_dir / "xds")))
        paths.append(write(tmp_path / f"{svc}.dynamic.json", doc))
    paths.append(write(tmp_path / "fleet.json", fleet_from_xds(str(case_dir), services)))
    validate_all(paths)


@pytest.mark.parametrize("case", EXAMPLES)
def test_compiled_examples_validate(case, tmp_path):
    """The CLI's output as a user gets it: the fleet layout with its real (absolute) xds
    directory, and the static bootstrap of a sidecar."""
    fleet, static = tmp_path / "fleet", tmp_path / "static"
    proxy = STATIC_PROXY[case]
    for out, extra in ((fleet, ["--proxy", "all"]), (static, ["--proxy", proxy])):
        proc = run_meshc("compile", f"examples/{case}.mesh", "--target", "envoy", *extra, "-o", str(out))
        assert proc.returncode == 0, proc.stderr
    services = sidecars(fleet)
    with open(fleet / f"{services[0]}.envoy.json") as fh:
        assert json.load(fh)["dynamic_resources"]["cds_config"]["path_config_source"]["path"] == \
            os.path.join(str(fleet), "xds", "cds.json")
    with open(static / f"{proxy}.envoy.json") as fh:
        assert "static_resources" in json.load(fh), "named proxies get static bootstraps by default"
    paths = [str(fleet / f"{s}.envoy.json") for s in services] + [str(static / f"{proxy}.envoy.json")]
    paths.append(write(tmp_path / "fleet.json", fleet_from_xds(str(fleet), services)))
    validate_all(paths)


def test_validate_rejects_what_envoy_rejects(tmp_path):
    """The check is real: a bootstrap with an unknown field fails validation."""
    with open(GOLDEN_DIR / "shop" / "static" / "payments.envoy.json") as fh:
        doc = json.load(fh)
    doc["static_resources"]["clusters"][0]["bogus_field"] = 1
    ok, out = validate(write(tmp_path / "bad.json", doc))
    assert not ok and "bogus_field" in out


def test_large_regexes_are_accepted(tmp_path):
    """Envoy rejects RE2 programs larger than 100 unless told otherwise; the language accepts any
    regex RE2 compiles, so every bootstrap lifts the limit in its runtime layer."""
    (tmp_path / "p.mesh").write_text(
        'service a { port 80 endpoints ["127.0.0.1:1"] }\n'
        'routes a { route r { match { path regex "/[a-z]{300}/(x|y|z)+" } to a } }\n'
        'authorization a { default allow  deny d { path regex "/[0-9]{300}" } }\n')
    proc = run_meshc("compile", "p.mesh", "--target", "envoy", "--proxy", "a", "--bootstrap", "static", "-o", "out",
                     cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "out" / "a.envoy.json") as fh:
        boot = json.load(fh)
    ok, out = validate(write(tmp_path / "with.json", boot))
    assert ok, out
    del boot["layered_runtime"]
    ok, out = validate(write(tmp_path / "without.json", boot))
    assert not ok and "max program size" in out
