"""What Envoy cannot express exactly: the E07xx/W07xx diagnostics, and the Envoy facts they rest on.

Cases are `tests/diagnostics_envoy/NAME.mesh`, each named after what it tests; `NAME.txt` is
exactly what `meshc compile NAME.mesh --target envoy --proxy all --color never` prints on standard
error (without the final "wrote N files" line, which names a temporary directory).
`pytest --update-goldens` rewrites them. EXPECTED_CODES states each case's intent.

The second half runs the real Envoy on what the backend would emit without these checks, so
that each diagnostic is backed by Envoy's actual behaviour (and a future Envoy that changes it
fails here, not in production).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
from pathlib import Path

import pytest

from compiler import cli
from compiler.backends.envoy import limitations
from compiler.core import codes
from tests.envoy_support import ROOT, Backend, Envoy, compile_files, requires_envoy, validate

CASES_DIR = Path(ROOT) / "tests" / "diagnostics_envoy"
CASES = sorted(p.stem for p in CASES_DIR.glob("*.mesh"))

EXPECTED_CODES = {
    "connect_in_route": ["E0701"],
    "connect_allowed": ["E0701"],
    "names_differ_in_case": ["E0702"],
    "fractional_ejection": ["W0701"],
    "header_envoy_changes": ["W0702", "W0702", "W0702", "W0702"],
    "raw_query": ["W0703"],
    "tracing_without_collector": ["E0703"],
    "label_selected_subset": ["E0750"],
}


def run_case(name: str, tmp_path, capsys, fmt: str = "human") -> tuple[int, str, str]:
    with contextlib.chdir(CASES_DIR):
        code = cli.main(["compile", f"{name}.mesh", "--target", "envoy", "--proxy", "all", "--color", "never",
                         "--format", fmt, "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    err = "".join(line for line in err.splitlines(keepends=True) if not line.startswith("meshc: wrote "))
    return code, out, err


def test_every_case_states_its_intent():
    assert sorted(EXPECTED_CODES) == CASES


def test_every_target_code_is_covered():
    target = {c for c in codes.CODES if c[1:3] == "07"}
    assert target == {c for cs in EXPECTED_CODES.values() for c in cs}


@pytest.mark.parametrize("name", CASES)
def test_case(name, tmp_path, capsys, update_goldens):
    code, _, human = run_case(name, tmp_path, capsys)
    found = re.findall(r"^(?:error|warning)\[(\w+)\]", human, re.M)
    assert found == EXPECTED_CODES[name]
    errors = any(c.startswith("E") for c in found)
    assert code == (1 if errors else 0)
    assert (tmp_path / "out").exists() != errors, "nothing is written on error"
    golden = CASES_DIR / f"{name}.txt"
    if update_goldens:
        if not golden.exists() or golden.read_text() != human:
            golden.write_text(human)
        return
    assert golden.exists(), f"missing {golden.relative_to(ROOT)} (run `pytest --update-goldens`)"
    assert human == golden.read_text(), f"{golden.relative_to(ROOT)} differs (run `pytest --update-goldens`)"


@pytest.mark.parametrize("name", CASES)
def test_case_in_json(name, tmp_path, capsys):
    _, out, _ = run_case(name, tmp_path, capsys, fmt="json")
    data = json.loads(out)
    assert [d["code"] for d in data["diagnostics"]] == EXPECTED_CODES[name]
    for d in data["diagnostics"]:
        assert d["file"] == f"{name}.mesh" and d["line"] >= 1  # at the policy's own line
        assert d["severity"] == codes.CODES[d["code"]].severity


def test_no_orphaned_goldens(update_goldens):
    orphans = [p for p in CASES_DIR.glob("*.txt") if p.stem not in CASES]
    if update_goldens:
        for p in orphans:
            p.unlink()
        return
    assert not orphans


# ---- the Envoy facts behind the diagnostics ------------------------------------------------------------

def unchecked(monkeypatch, text: str, tmp_path, proxies=None):
    """What the backend would emit without its target checks."""
    monkeypatch.setattr(limitations, "check_program", lambda program, sources: [])
    (tmp_path / "p.mesh").write_text(text)
    return {k: json.loads(v) for k, v in
            compile_files(["p.mesh"], proxies, bootstrap="static", cwd=str(tmp_path))[1].files.items()}


def write(path, doc) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


@requires_envoy
def test_envoy_rejects_domains_that_differ_in_case(monkeypatch, tmp_path):
    files = unchecked(monkeypatch, (CASES_DIR / "names_differ_in_case.mesh").read_text(), tmp_path, ["api"])
    ok, out = validate(write(tmp_path / "b.json", files["api.envoy.json"]))
    assert not ok and "Duplicate entry of domain api" in out


@requires_envoy
def test_envoy_takes_only_whole_ejection_percentages(tmp_path):
    _, emitted = compile_files(["fractional_ejection.mesh"], ["api"], bootstrap="static", cwd=str(CASES_DIR))
    boot = json.loads(emitted.files["api.envoy.json"])
    cluster = boot["static_resources"]["clusters"][0]
    assert cluster["outlier_detection"]["max_ejection_percent"] == 33  # rounded down, as W0701 says
    assert validate(write(tmp_path / "ok.json", boot))[0]
    bad = copy.deepcopy(boot)
    bad["static_resources"]["clusters"][0]["outlier_detection"]["max_ejection_percent"] = 33.5
    ok, out = validate(write(tmp_path / "bad.json", bad))
    assert not ok and "fractional" in out


@requires_envoy
def test_envoy_silently_accepts_unknown_retry_tokens(tmp_path):
    """Why the backend refuses any retry_on token it does not know (test_envoy_emit.py)."""
    _, emitted = compile_files(["examples/shop.mesh"], ["payments"], bootstrap="static", xds_dir=str(tmp_path / "xds"))
    boot = json.loads(emitted.files["payments.envoy.json"])
    for rel, data in emitted.files.items():  # the SDS files it names (mTLS) must exist
        if "/sds-" in rel:
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_bytes(data)
    for listener in boot["static_resources"]["listeners"]:
        rc = listener["filter_chains"][0]["filters"][0]["typed_config"].get("route_config", {})
        for vh in rc.get("virtual_hosts", []):
            for r in vh["routes"]:
                if "retry_policy" in r["route"]:
                    r["route"]["retry_policy"]["retry_on"] += ",5xxx,bogus"
    assert validate(write(tmp_path / "b.json", boot))[0]


def _connect(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"CONNECT api:80 HTTP/1.1\r\nHost: api:80\r\n\r\n")
        return s.recv(200).split(b"\r\n")[0]


@requires_envoy
def test_envoy_never_routes_connect(monkeypatch, tmp_path):
    app = Backend("app")
    try:
        text = (f'service api {{ port 80  endpoints ["127.0.0.1:{app.port}"]  '
                f'sidecar {{ app "127.0.0.1:{app.port}" }} }}\n'
                'routes api { route tunnel { match { method CONNECT } to api } }\n'
                'authorization api { default deny  allow tunnels { method CONNECT } }\n')
        boot = unchecked(monkeypatch, text, tmp_path, ["api"])["api.envoy.json"]
        boot["admin"]["address"]["socket_address"]["port_value"] = 0
        for listener in boot["static_resources"]["listeners"]:
            listener["address"]["socket_address"]["port_value"] = 0
        envoy = Envoy(write(tmp_path / "b.json", boot))
        try:
            ports = envoy.listener_ports()
            assert _connect(ports["outbound"]) == b"HTTP/1.1 404 Not Found"  # the route never matches
            assert _connect(ports["inbound"]) == b"HTTP/1.1 404 Not Found"   # allowed, yet not forwarded
            assert app.hits == []
        finally:
            envoy.stop()
    finally:
        app.close()
