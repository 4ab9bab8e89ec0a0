"""Every Envoy golden and every compiled example passes the real `envoy --mode validate`.

Validate mode checks a bootstrap completely (unknown fields, proto constraints, regexes, routes
naming unknown clusters, referenced files that do not exist) but does not load file-based xDS
resources. So the xds files are validated as the static bootstrap they amount to
(`fleet_from_xds`: the listeners of every sidecar's LDS file with the routes of RDS inlined, and
the clusters of CDS, in one bootstrap; with mTLS, every sidecar's own CDS file and its SDS
secrets too, as static resources under prefixed names). The goldens name the fixed
/etc/meshc/xds, so they are pointed at the golden directory; the examples are also compiled
into a temporary directory and validated as a user gets them, with their real xds directory.

Validate mode needs an SDS file named by a listener or cluster to exist but does not read it,
nor the certificates it names (`test_validate_needs_the_secret_files_not_the_certificates`):
no certificate is made here; tests/test_envoy_mtls.py runs Envoy on real ones.
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


def resources(path) -> list[dict]:
    with open(path) as fh:
        return [{k: v for k, v in r.items() if k != "@type"} for r in json.load(fh)["resources"]]


def fleet(out_dir, services: list[str]) -> dict:
    """`fleet_from_xds`, plus what is per sidecar with mTLS: the clusters of every sidecar's own
    CDS file and its secrets, each under the name `SERVICE.NAME` so that they coexist."""
    boot = fleet_from_xds(str(out_dir), services)
    static = boot["static_resources"]
    for svc in services:
        xds = os.path.join(str(out_dir), "xds", svc)
        if svc != services[0] and os.path.exists(os.path.join(xds, "cds.json")):
            static["clusters"] += [{**c, "name": f"{svc}.{c['name']}"}
                                   for c in resources(os.path.join(xds, "cds.json"))]
        for name in sorted(n for n in os.listdir(xds) if n.startswith("sds-")):
            static.setdefault("secrets", []).extend(
                {**r, "name": f"{svc}.{r['name']}"} for r in resources(os.path.join(xds, name)))
    return boot


def relocated(doc: dict, case_dir) -> dict:
    """A golden document with its fixed run-time xds directory pointed at the golden files."""
    return json.loads(json.dumps(doc).replace(GOLDEN_XDS_DIR, str(case_dir / "xds")))


def sidecars(directory) -> list[str]:
    return sorted(p.name[: -len(".envoy.json")] for p in directory.glob("*.envoy.json"))


@pytest.mark.parametrize("case", EXAMPLES)
def test_goldens_validate(case, tmp_path):
    case_dir = GOLDEN_DIR / case
    services = sidecars(case_dir)
    assert services, f"no goldens for {case} (run `pytest --update-goldens`)"
    paths = []
    for static in sorted((case_dir / "static").glob("*.envoy.json")):  # naming the golden SDS files
        with open(static) as fh:
            paths.append(write(tmp_path / f"{static.name}.static.json", relocated(json.load(fh), case_dir)))
    for svc in services:  # each dynamic bootstrap, reading the golden xds files
        with open(case_dir / f"{svc}.envoy.json") as fh:
            paths.append(write(tmp_path / f"{svc}.dynamic.json", relocated(json.load(fh), case_dir)))
    paths.append(write(tmp_path / "fleet.json", relocated(fleet(case_dir, services), case_dir)))
    validate_all(paths)


@pytest.mark.parametrize("case", EXAMPLES)
def test_compiled_examples_validate(case, tmp_path):
    """The CLI's output as a user gets it: the fleet layout with its real (absolute) xds
    directory, and the static bootstrap of a sidecar."""
    fleet_dir, static = tmp_path / "fleet", tmp_path / "static"
    certs = str(tmp_path / "certs")  # need not exist: validate mode does not read certificates
    proxy = STATIC_PROXY[case]
    for out, extra in ((fleet_dir, ["--proxy", "all"]), (static, ["--proxy", proxy])):
        proc = run_meshc("compile", f"examples/{case}.mesh", "--target", "envoy", *extra, "--certs-dir", certs,
                         "-o", str(out))
        assert proc.returncode == 0, proc.stderr
    services = sidecars(fleet_dir)
    own_cds = os.path.join(str(fleet_dir), "xds", services[0], "cds.json")
    with open(fleet_dir / f"{services[0]}.envoy.json") as fh:
        assert json.load(fh)["dynamic_resources"]["cds_config"]["path_config_source"]["path"] == \
            (own_cds if os.path.exists(own_cds) else os.path.join(str(fleet_dir), "xds", "cds.json"))
    with open(static / f"{proxy}.envoy.json") as fh:
        assert "static_resources" in json.load(fh), "named proxies get static bootstraps by default"
    for svc in services:
        secret = os.path.join(str(fleet_dir), "xds", svc, "sds-identity.json")
        if os.path.exists(secret):  # --certs-dir decides where the certificates are
            assert resources(secret)[0]["tls_certificate"]["watched_directory"] == {"path": f"{certs}/{svc}"}
    paths = [str(fleet_dir / f"{s}.envoy.json") for s in services] + [str(static / f"{proxy}.envoy.json")]
    paths.append(write(tmp_path / "fleet.json", fleet(fleet_dir, services)))
    validate_all(paths)


def test_validate_rejects_what_envoy_rejects(tmp_path):
    """The check is real: a bootstrap with an unknown field fails validation."""
    with open(GOLDEN_DIR / "shop" / "static" / "payments.envoy.json") as fh:
        doc = relocated(json.load(fh), GOLDEN_DIR / "shop")
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


def test_validate_needs_the_secret_files_not_the_certificates(tmp_path):
    """The facts the tests above rely on: a missing SDS file fails validation, certificate files
    that do not exist do not (Envoy reads them when it runs), and the secrets' fields are
    checked when they are static resources."""
    case_dir = GOLDEN_DIR / "shop"
    with open(case_dir / "static" / f"{STATIC_PROXY['shop']}.envoy.json") as fh:
        boot = json.load(fh)
    assert "sds-identity.json" in json.dumps(boot)
    ok, out = validate(write(tmp_path / "missing.json", boot))  # /etc/meshc/xds does not exist
    assert not ok and "paths must refer to an existing path" in out
    good = relocated(boot, case_dir)
    secrets = json.dumps(resources(case_dir / "xds" / "payments" / "sds-identity.json"))
    good["static_resources"]["secrets"] = json.loads(secrets.replace("/etc/meshc/certs", str(tmp_path / "none")))
    ok, out = validate(write(tmp_path / "good.json", good))
    assert ok, out
    good["static_resources"]["secrets"][0]["tls_certificate"]["bogus_field"] = 1
    ok, out = validate(write(tmp_path / "bad.json", good))
    assert not ok and "bogus_field" in out
