"""Workloads: a subset with its own sidecar (docs/language.md §5.9), `sidecar { ports N }`, E0350,
`meshc proxy --app-address`, `meshc serve` by node id `SERVICE.SUBSET`, and the Bookinfo fleet of
fleet/bookinfo run on one host by its script, with the native proxy and with Envoy (real processes,
ports from the OS)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from compiler import api
from compiler.backends.base import Options
from compiler.control import snapshot
from compiler.control.snapshot import CLUSTER
from compiler.ir.workloads import proxy_names
from tests.envoy_support import ENVOY, free_port
from tests.proxy_backend import Backend
from tests.proxy_harness import start_proxy
from tests.test_control_plane import RawClient, Serve, name_of

ROOT = Path(__file__).resolve().parents[1]
FLEET = ROOT / "fleet" / "bookinfo"

POLICY = '''
service web { port 8000  endpoints ["127.0.0.1:18001"] }
service reviews {
  port 9080
  sidecar { escaped_slashes decode }
  subset v1 { sidecar { ports 21000  app "127.0.0.1:19081" } }
  subset v2 { endpoints ["10.0.0.2:9080"]  sidecar { inbound 16006 } }
  subset legacy { endpoints ["10.0.0.9:9080"] }
}
routes reviews { route all { split { reviews.v1 1  reviews.v2 1  reviews.legacy 1 } } }
authorization reviews { default deny  allow reads { method [GET] } }
'''


def compiled(text: str = POLICY):
    comp = api.compile([api.Text("p.mesh", text)], shard=False)
    assert not comp.diagnostics, comp.diagnostics
    return comp


def test_each_workload_is_a_proxy_with_its_own_sidecar_and_the_services_identity():
    comp = compiled()
    assert proxy_names(comp.ir) == ["reviews", "reviews.v1", "reviews.v2", "web"]
    reviews = comp.ir.service("reviews")
    # a workload without endpoints is reached at its own inbound listener; written endpoints stay
    assert {s.name: [(e.host, e.port) for e in s.endpoints] for s in reviews.subsets} == {
        "v1": [("127.0.0.1", 21000)], "v2": [("10.0.0.2", 9080)], "legacy": [("10.0.0.9", 9080)]}
    native = comp.emit("native", None, Options())
    assert sorted(native.files) == [f"{p}.native.json" for p in ["reviews", "reviews.v1", "reviews.v2", "web"]]
    configs = {name.removesuffix(".native.json"): json.loads(data) for name, data in native.files.items()}
    v1, v2, own = configs["reviews.v1"], configs["reviews.v2"], configs["reviews"]
    assert {k: v["port"] for k, v in v1["listeners"].items()} == {"inbound": 21000, "outbound": 21001, "admin": 21002}
    assert {k: v["port"] for k, v in v2["listeners"].items()} == {"inbound": 16006, "outbound": 15001, "admin": 15000}
    assert (v1["app"]["port"], v1["app"]["cluster"]) == (19081, "inbound|v1|reviews")
    assert (v2["app"]["port"], v2["app"]["cluster"]) == (9080, "inbound|v2|reviews")
    assert own["app"]["cluster"] == "inbound|reviews"
    # the service's settings, overridden setting by setting; one identity and one policy for all
    assert {c["normalization"]["escaped_slashes"] for c in (v1, v2, own)} == {"decode"}
    assert {c["identity"] for c in (v1, v2, own)} == {"spiffe://cluster.local/ns/default/sa/reviews"}
    assert v1["authorization"] == v2["authorization"] == own["authorization"]
    assert v1["services"] == own["services"]   # the same scope: the service's
    envoy = comp.emit("envoy", None, Options(output_dir="/out"))
    assert {p for p in envoy.files if p.endswith(".envoy.json")} == \
        {"reviews.envoy.json", "reviews.v1.envoy.json", "reviews.v2.envoy.json", "web.envoy.json"}
    boot = json.loads(envoy.files["reviews.v1.envoy.json"])
    assert boot["node"] == {"cluster": "reviews", "id": "reviews.v1"}
    assert boot["dynamic_resources"]["lds_config"]["path_config_source"]["path"] == "/out/xds/reviews.v1/lds.json"
    lds = json.loads(envoy.files["xds/reviews.v1/lds.json"])["resources"]
    assert sorted(listener["address"]["socket_address"]["port_value"] for listener in lds) == [21000, 21001]
    # the plaintext fleet shares one CDS file: every application's cluster has a name of its own
    cds = json.loads(envoy.files["xds/cds.json"])["resources"]
    assert sorted(c["name"] for c in cds if c["name"].startswith("inbound|")) == \
        ["inbound|reviews", "inbound|v1|reviews", "inbound|v2|reviews", "inbound|web"]


def test_a_service_whose_subsets_are_all_workloads_has_no_sidecar_of_its_own(tmp_path):
    text = POLICY.replace('  subset legacy { endpoints ["10.0.0.9:9080"] }\n', "").replace(
        "  reviews.legacy 1", "")
    path = tmp_path / "p.mesh"
    path.write_text(text)
    assert proxy_names(compiled(text).ir) == ["reviews.v1", "reviews.v2", "web"]
    run = [sys.executable, "-m", "compiler", "compile", str(path), "--target", "native", "-o", str(tmp_path / "o")]
    proc = subprocess.run([*run, "--proxy", "reviews"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr == ("meshc: error: --proxy reviews: no sidecar `reviews` in the "
                                                    "program (its workloads have their own: reviews.v1, reviews.v2)\n")
    proc = subprocess.run([*run, "--proxy", "reviews.v2"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [".meshc-manifest", "reviews.v2.native.json"]


def test_meshc_serve_serves_each_workload_its_own_sidecar(tmp_path):
    comp = compiled()
    built = snapshot.Builder().build(comp)
    assert sorted(built) == ["reviews", "reviews.v1", "reviews.v2", "web"]
    for node, snap in built.items():   # the native config: the bytes `meshc compile --proxy NODE` writes
        assert snap.packed[snapshot.NATIVE][node].value == comp.emit("native", [node], Options()).files[
            f"{node}.native.json"]
    assert built["reviews.v1"].admin == "127.0.0.1:21002" and built["reviews"].subsets == ("legacy",)
    path = tmp_path / "p.mesh"
    path.write_text(POLICY)
    serve = Serve(str(path))
    try:
        client = RawClient(serve.port)
        client.send(CLUSTER, node="reviews.v1")
        clusters = sorted(name_of(r) for r in client.receive().resources)
        assert "inbound|v1|reviews" in clusters and "inbound|reviews" not in clusters
        client.close()
        bad = RawClient(serve.port)
        bad.send(CLUSTER, node="reviews.v9")
        with pytest.raises(grpc.RpcError) as err:
            bad.receive()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == \
            "unknown node 'reviews.v9': service 'reviews' has no subset 'v9' (subsets: legacy)"
        bad.close()
    finally:
        assert serve.stop() == 0, "".join(serve.lines)


def test_meshc_proxy_app_address_overrides_the_application(tmp_path):
    comp = compiled('service api { port 1  endpoints ["127.0.0.1:1"]  sidecar { app "127.0.0.1:1" } }')
    config = json.loads(comp.emit("native", ["api"], Options()).files["api.native.json"])
    config["listeners"] = {k: dict(v, port=0) for k, v in config["listeners"].items()}
    path = tmp_path / "api.native.json"
    path.write_text(json.dumps(config))
    app = Backend("app")
    proxy = start_proxy(str(path), tmp_path, "--app-address", f"localhost:{app.port}")
    try:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", proxy.inbound, timeout=5)
        conn.request("GET", "/hello", headers={"Host": "api"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["backend"] == "app"
        conn.close()
    finally:
        proxy.stop()
        app.stop()
    proc = subprocess.run([sys.executable, "-m", "runtime_proxy", str(path), "--app-address", "::1:80"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "--app-address ::1:80: not HOST:PORT" in proc.stderr


@pytest.mark.parametrize("address", ["a/b:80", "x..y:80", "x-.example:80", "256.1.1.1:80", "caf\u00e9.example:80",
                                     "a_b:80", "x" * 64 + ".example:80"])
def test_meshc_proxy_app_address_is_an_ip_address_or_a_dns_name(tmp_path, address):
    """--app-address takes what the compiler takes for `app` (an IP address or an RFC 1123 name):
    anything else is a usage error at start-up (exit 2), not a failure at the first request."""
    comp = compiled('service api { port 1  endpoints ["127.0.0.1:1"]  sidecar { app "127.0.0.1:1" } }')
    path = tmp_path / "api.native.json"
    path.write_bytes(comp.emit("native", ["api"], Options()).files["api.native.json"])
    for extra in ([], ["--check-config", str(path)]):
        proc = subprocess.run([sys.executable, "-m", "runtime_proxy", str(path), "--app-address", address, *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and f"--app-address {address}: not HOST:PORT" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_check_config_checks_the_config_with_the_app_address_given(tmp_path):
    """`--check-config FILE --app-address H:P` checks the config as the proxy would run it: the
    application at H:P (a config whose own `app` is unusable passes; the address is named)."""
    comp = compiled('service api { port 1  endpoints ["127.0.0.1:1"]  sidecar { app "127.0.0.1:1" } }')
    config = json.loads(comp.emit("native", ["api"], Options()).files["api.native.json"])
    config["app"]["port"] = 0
    path = tmp_path / "api.native.json"
    path.write_text(json.dumps(config))
    check = [sys.executable, "-m", "runtime_proxy", "--check-config", str(path)]
    proc = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "$.app.port" in proc.stderr, proc.stderr
    proc = subprocess.run([*check, "--app-address", "app.local:8080"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0 and proc.stdout == f"{path}: valid (the application at app.local:8080)\n", \
        proc.stdout + proc.stderr


def test_the_fleet_policy_is_clean_and_formatted():
    """bookinfo.mesh compiles without a diagnostic and is in `meshc fmt`'s layout."""
    proc = subprocess.run([sys.executable, "-m", "compiler", "fmt", "--check", str(FLEET / "bookinfo.mesh")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    comp = api.compile([str(FLEET / "bookinfo.mesh")], shard=False)
    assert not comp.diagnostics and proxy_names(comp.ir) == [
        "details.v1", "productpage.v1", "ratings.v1", "reviews.v1", "reviews.v2", "reviews.v3"]


_TAKEN: set[int] = set()   # every port handed to a policy of this module (two fleets run at once)


def _free_ports_policy(tmp_path: Path) -> Path:
    """bookinfo.mesh with every port (each sidecar's three, each application's) from the OS."""
    def port() -> int:   # (a port the OS gave and took back may come again: E0350 would say so)
        while (p := free_port()) in _TAKEN:
            pass
        _TAKEN.add(p)
        return p

    text = (FLEET / "bookinfo.mesh").read_text()
    text = re.sub(r"ports \d+", lambda _: f"inbound {port()}  outbound {port()}  admin {port()}", text)
    text = re.sub(r'app "127\.0\.0\.1:\d+"', lambda _: f'app "127.0.0.1:{port()}"', text)
    path = tmp_path / "bookinfo.mesh"
    path.write_text(text)
    return path


def _fleet(tmp_path: Path, *args: str) -> subprocess.Popen:
    """run.py on a copy of the policy with ports from the OS, started (`_results` waits for it)."""
    tmp_path.mkdir()
    policy = _free_ports_policy(tmp_path)
    return subprocess.Popen([sys.executable, str(FLEET / "run.py"), "--json", "--requests", "6", "--policy",
                             str(policy), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _results(proc: subprocess.Popen, tmp_path: Path | None = None, *args: str) -> dict:
    """The fleet's JSON report. A port the OS handed out may be taken again before the fleet binds
    it (by another process's outgoing connection: both come from the ephemeral range); run.py then
    says `port N in use` and exits 1: given `tmp_path`, the fleet is run once more on new ports."""
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 1 and " in use " in out + err and tmp_path is not None:
        return _results(_fleet(tmp_path.with_name(tmp_path.name + "-again"), *args))
    assert proc.returncode == 0, out + err
    return json.loads(out)


def test_the_bookinfo_fleet_answers_alike_through_native_proxies_and_envoys(tmp_path):
    """Six workloads, each with its own sidecar process, three hops of mTLS: the script's own
    expectations hold (exit 0) in both planes, and the planes agree on every request (the split's
    draws aside: both versions answer). Two fleets of six real proxies, run side by side: 5-10 s."""
    args = {"native": (), "envoy": ("--envoy",)}
    running = {"native": _fleet(tmp_path / "native")}
    if ENVOY is not None:   # (both fleets at once: the wall time is the slower one's)
        running["envoy"] = _fleet(tmp_path / "envoy", "--envoy")
    planes = {plane: _results(proc, tmp_path / plane, *args[plane]) for plane, proc in running.items()}
    for plane, out in planes.items():
        answered = {(r["request"], r["answered"]) for r in out["results"]}
        assert answered >= {
            ("GET /productpage (end-user: jason)", "productpage.v1 <- details.v1, reviews.v2 <- ratings.v1"),
            ("productpage -> ratings (not in its scope)", "404"),
            ("reviews.v1 -> details (its policy allows only productpage)", "404")}, plane
        anonymous = {a for r, a in answered if r == "GET /productpage"}
        assert anonymous <= {"productpage.v1 <- details.v1, reviews.v1",
                             "productpage.v1 <- details.v1, reviews.v3 <- ratings.v1"}, plane
    if ENVOY is None:
        pytest.skip("no Envoy binary: the native fleet alone was run")
    strip = [[(r["request"], r["status"], r["answered"] if r["request"] != "GET /productpage" else "")
              for r in out["results"]] for out in planes.values()]
    assert strip[0] == strip[1]


def test_the_bookinfo_script_stops_its_proxies_on_sigterm_and_refuses_ports_in_use(tmp_path):
    """SIGTERM to run.py stops every proxy it started (exit 143), and a run whose ports something
    holds (an earlier run's leftover proxy, here a plain socket) says `port N in use` and exits 1
    instead of taking that something's answers for its sidecars'."""
    import os
    import signal
    import socket
    import time

    policy = _free_ports_policy(tmp_path)
    held = int(re.findall(r"inbound (\d+)", policy.read_text())[0])
    busy = socket.socket()
    busy.bind(("127.0.0.1", held))
    busy.listen()
    try:
        proc = subprocess.run([sys.executable, str(FLEET / "run.py"), "--json", "--policy", str(policy)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    finally:
        busy.close()
    assert proc.returncode == 1 and f"port {held} in use" in proc.stderr, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr

    keep = tmp_path / "keep"
    run = subprocess.Popen([sys.executable, str(FLEET / "run.py"), "--json", "--requests", "100000", "--policy",
                            str(policy), "--keep", str(keep)], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    survivors: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and run.poll() is None:
            files = sorted(keep.glob("*.ports.json"))
            try:
                pids = [json.loads(f.read_text())["pid"] for f in files]
            except (OSError, ValueError, KeyError):
                pids = []
            if len(pids) == 6:
                break
            time.sleep(0.05)
        assert len(pids) == 6, run.communicate(timeout=30)
        time.sleep(0.3)   # (the requests have begun)
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for pid in pids:   # (a survivor would hold the next run's ports: the failure this test is about)
            try:
                os.kill(pid, signal.SIGKILL)
                survivors.append(pid)
            except ProcessLookupError:
                pass
    assert run.returncode == 143, out + err
    assert not survivors and "Traceback" not in err, (survivors, err)


def test_doctor_and_ca_issue_name_a_workloads_sidecar(tmp_path, capsys):
    """`meshc doctor` checks each workload's own ports and names its sidecar; `meshc ca issue`
    takes a workload's name and issues its service's identity (one per service)."""
    import socket

    from compiler.cli import main

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    path = tmp_path / "p.mesh"
    path.write_text(POLICY.replace("sidecar { inbound 16006 }", f"sidecar {{ admin {port} }}"))
    try:
        code = main(["doctor", str(path), "--proxy", "reviews.v2", "--color", "never"])
    finally:
        busy.close()
    err = capsys.readouterr().err
    assert code == 0 and f"warning[H0201]: sidecar `reviews.v2`: the admin port 127.0.0.1:{port} is in use" in err
    assert "1 sidecar ready" in err
    assert main(["ca", "init", str(tmp_path / "ca")]) == 0
    assert main(["ca", "issue", "reviews.v1", "--ca", str(tmp_path / "ca"), "-o", str(tmp_path / "id"),
                 "--policy", str(path)]) == 0
    assert "spiffe://cluster.local/ns/default/sa/reviews serial" in capsys.readouterr().err


def test_a_native_proxy_fed_by_meshc_serve_as_a_workload_runs_its_own_sidecar(tmp_path):
    """`meshc proxy --xds-server … --node reviews.v1` gets the workload's own config (the bytes of
    `meshc compile --proxy reviews.v1`) and forwards inbound requests to the workload's application."""
    import http.client

    from tests.test_native_xds import start_native

    app = Backend("reviews-v1")
    path = tmp_path / "p.mesh"
    path.write_text(POLICY.replace('app "127.0.0.1:19081"', f'app "127.0.0.1:{app.port}"'))
    serve = Serve(str(path))
    proxy = None
    try:
        proxy = start_native(tmp_path, serve.port, "reviews.v1", "--inbound-port", "0", "--outbound-port", "0",
                             "--admin-port", "0")
        config = json.loads((tmp_path / "state" / "config.json").read_text())
        comp = api.compile([api.Text(str(path), path.read_text())], shard=False)
        compiled_native = json.loads(comp.emit("native", ["reviews.v1"], Options()).files["reviews.v1.native.json"])
        assert config["version"] == compiled_native["version"] and config["app"]["cluster"] == "inbound|v1|reviews"
        conn = http.client.HTTPConnection("127.0.0.1", proxy.inbound, timeout=5)
        conn.request("GET", "/reviews/0", headers={"Host": "reviews"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["backend"] == "reviews-v1"
        conn.close()
    finally:
        if proxy is not None:
            proxy.stop()
        app.stop()
        assert serve.stop() == 0, "".join(serve.lines)
