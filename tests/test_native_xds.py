"""The native proxy fed by `meshc serve` (issue 14, docs/control-plane.md "The native proxy"):
`meshc proxy --xds-server HOST:PORT --node SERVICE` spawns `python -m runtime_proxy.xds_client`,
which holds the ADS stream, validates each config with the proxy's contract, writes it (and the
certificates) into the state directory and has the proxy's reload path apply it; the response is
ACKed or NACKed by the outcome.

Everything is real: `meshc serve` as a subprocess (tests/test_control_plane.py's `Serve`), the
proxy and its helper as processes, loopback echo backends, `meshc status` over gRPC. The
certificate tests serve inline secrets (what `meshc serve --ca` sends) from the server's own ADS
servicer (compiler/control/ads.py) on a grpc.aio server in this process, with snapshots built
by compiler/control/snapshot.py whose secrets carry `meshc ca` certificates as inline bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import grpc.aio
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc

from compiler import api
from compiler.control import snapshot
from compiler.control.ads import AdsServicer
from tests import mtls_support as mtls
from tests.envoy_support import ROOT, Backend, free_port, meshc_inline, run_meshc
from tests.proxy_harness import Proxy, get
from tests.test_control_plane import Serve, policy

API_HOST = "api:8080"


def wait(predicate, what: str, timeout: float = 20, proxy: Proxy | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}" + (f"\n{proxy.log()}" if proxy is not None else ""))
        time.sleep(0.05)


def start_native(tmp: Path, server: int | list[str], node: str = "web", *extra: str) -> Proxy:
    """`meshc proxy --xds-server 127.0.0.1:PORT --node NODE --state-dir TMP/state`, once it listens
    (`server`: a port on loopback, or the addresses of the replicas, one `--xds-server` each)."""
    ports_file = tmp / f"ports-{time.monotonic_ns()}.json"
    log_path = str(ports_file) + ".log"
    servers = [f"127.0.0.1:{server}"] if isinstance(server, int) else server
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "compiler", "proxy",
                                 *[a for s in servers for a in ("--xds-server", s)],
                                 "--node", node, "--state-dir", str(tmp / "state"), "--ports-file", str(ports_file),
                                 *extra], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 30
    while not ports_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the native proxy did not start: {Path(log_path).read_text()}")
        time.sleep(0.05)
    return Proxy(proc, json.loads(ports_file.read_text()), log_path)


def helper_pid(proxy: Proxy) -> int | None:
    """The xDS client process the proxy spawned (its one child running runtime_proxy.xds_client)."""
    try:
        children = Path(f"/proc/{proxy.proc.pid}/task/{proxy.proc.pid}/children").read_text().split()
    except OSError:
        return None
    for pid in children:
        try:
            if b"runtime_proxy.xds_client" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        except OSError:
            continue
    return None


def loads_grpc(pid: int) -> bool:
    """Whether gRPC's core (the cygrpc extension) is mapped into process `pid`."""
    return "cygrpc" in Path(f"/proc/{pid}/maps").read_text()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def status(port: int) -> dict:
    """`meshc status --output-format json` (in this process; the tests below run the command's
    process for its human output)."""
    proc = meshc_inline("status", "--server", f"127.0.0.1:{port}", "--output-format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def native_stream(data: dict) -> dict | None:
    return next((s for s in data["streams"] if s["kind"] == "native"), None)


class NativePlane:
    """Backends, the behaviour policy, `meshc serve` and the native proxy of `web` fed by it."""

    def __init__(self, tmp: Path, serve_env: dict | None = None):
        self.v1, self.v2, self.shadow, self.app = (Backend(n) for n in ("v1", "v2", "shadow", "app"))
        self.ports = {"INBOUND": free_port(), "OUTBOUND": free_port(), "ADMIN": free_port(), "APP": self.app.port,
                      "V1": self.v1.port, "V2": self.v2.port, "SHADOW": self.shadow.port}
        self.tmp = tmp
        self.path = policy(tmp / "behaviour.mesh", self.ports)
        self.serve = Serve(str(self.path))
        self.proxy = start_native(tmp, self.serve.port)

    def call(self, path: str, headers: dict | None = None) -> str:
        r = get(self.proxy.outbound, path, host=API_HOST, headers=headers)
        assert r.status == 200, r
        return r.json()["backend"]

    def config(self) -> dict:
        code, body = self.proxy.admin_get("/config")
        assert code == 200
        return json.loads(body)

    def native_version(self) -> str:
        return snapshot.build(api.compile([str(self.path)]), "web").versions[snapshot.NATIVE]

    def close(self):
        self.proxy.stop()
        code = self.serve.stop() if self.serve.proc.poll() is None else 0
        for b in (self.v1, self.v2, self.shadow, self.app):
            b.close()
        assert code == 0, "".join(self.serve.lines)


@pytest.fixture
def plane(tmp_path):
    p = NativePlane(tmp_path)
    yield p
    p.close()


# ---- from `meshc serve` ------------------------------------------------------------------------------

def test_the_native_proxy_fed_by_meshc_serve_runs_the_compiled_config_and_routes(plane, tmp_path):
    """The config the proxy runs is `meshc compile --target native --proxy web`'s; it routes as from
    files; `meshc status` shows a `native` stream up to date at the version computed in process; the
    serving process never loads gRPC (its helper does); the state directory is private."""
    out = tmp_path / "files"
    proc = run_meshc("compile", str(plane.path), "--target", "native", "--proxy", "web", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    compiled = json.loads((out / "web.native.json").read_text())
    shown = plane.config()
    assert shown["config"]["version"] == compiled["version"]
    assert shown["file"] == str(tmp_path / "state" / "config.json")
    assert json.loads((tmp_path / "state" / "config.json").read_text()) == compiled
    assert plane.call("/live") == "v1"
    assert plane.call("/anything", {"x-canary": "always"}) == "v2"
    assert plane.call("/other") == "v1"
    assert get(plane.proxy.outbound, "/fault", host=API_HOST).status == 418

    data = wait(lambda: (d := status(plane.serve.port)) and native_stream(d) and
                native_stream(d)["types"].get("SidecarConfig", {}).get("state") == "up to date" and d,
                "a native stream up to date")
    stream = native_stream(data)
    assert stream["node"] == "web" and list(stream["types"]) == ["SidecarConfig"]   # no secrets: no mTLS here
    assert stream["types"]["SidecarConfig"]["acked"] == plane.native_version()
    assert data["server"]["snapshots"]["web"]["SidecarConfig"] == plane.native_version()
    human = run_meshc("status", "--server", f"127.0.0.1:{plane.serve.port}")
    assert human.returncode == 0 and any(line.split()[1:3] == ["native", "web"] for line in human.stdout.splitlines()
                                         if line[:1].isdigit()), human.stdout

    helper = helper_pid(plane.proxy)
    assert helper is not None
    assert not loads_grpc(plane.proxy.proc.pid), "the serving process must not load gRPC"
    assert loads_grpc(helper), "the helper holds the gRPC stream"
    print(f"RSS: serving process {rss_kb(plane.proxy.proc.pid) // 1024} MB, xDS helper {rss_kb(helper) // 1024} MB")
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "config.json").stat().st_mode) == 0o600


def test_an_edit_reaches_the_running_native_proxy_and_a_broken_edit_changes_nothing(plane):
    pid, before = plane.proxy.proc.pid, plane.config()["config"]["version"]
    assert plane.call("/live") == "v1"
    policy(plane.path, plane.ports, live="v2")
    started = time.monotonic()
    mark = plane.serve.reload()
    plane.serve.wait_for("published (", after=mark)
    wait(lambda: plane.config()["config"]["version"] != before, "the new config in the proxy", proxy=plane.proxy)
    elapsed = time.monotonic() - started
    assert plane.call("/live") == "v2" and plane.proxy.proc.pid == pid and plane.proxy.proc.poll() is None
    print(f"SIGHUP to the new config in the native proxy: {elapsed * 1000:.0f} ms")
    after = plane.config()["config"]["version"]
    wait(lambda: native_stream(d := status(plane.serve.port)) and
         native_stream(d)["types"]["SidecarConfig"]["acked"] == plane.native_version(), "the ACK of the new version")

    plane.path.write_text(plane.path.read_text().replace("route live {", "route live { nonsense"))
    mark = plane.serve.reload()
    plane.serve.wait_for("still serving the last good snapshot", after=mark)
    time.sleep(0.5)
    assert plane.config()["config"]["version"] == after and plane.call("/live") == "v2"
    assert plane.proxy.stats()["server.config_reload_rejected"] == 0


def test_a_config_the_proxy_refuses_is_nacked_once_and_the_last_good_one_keeps_routing(tmp_path, monkeypatch):
    """`MESHC_SERVE_TEST_CORRUPT=Native:web` (test-only) makes the first good reload send web a
    config the proxy's contract refuses (a route's timeout_ms -1): it is NACKed once with the
    contract's located message, the proxy stays on its config and routes, `meshc status` shows the
    rejection at the route's `.mesh` declaration; the next good edit is applied."""
    monkeypatch.setenv("MESHC_SERVE_TEST_CORRUPT", "Native:web")
    plane = NativePlane(tmp_path)
    try:
        before = plane.config()["config"]["version"]
        policy(plane.path, plane.ports, live="v2")
        mark = plane.serve.reload()
        plane.serve.wait_for("test-only: corrupted Native:web for web", after=mark)
        line = plane.serve.wait_for("web rejected SidecarConfig version", after=mark)
        assert "timeout_ms" in line, line
        # the rejected version is not sent again: one NACK, one log line (a re-send would answer the
        # NACK itself, within a round trip: a second is ample even on a loaded machine)
        time.sleep(1)
        assert sum("rejected SidecarConfig" in x for x in plane.serve.lines[mark:]) == 1
        assert plane.config()["config"]["version"] == before and plane.call("/live") == "v1"
        data = status(plane.serve.port)
        entry = native_stream(data)["types"]["SidecarConfig"]
        assert entry["state"] == "rejected" and entry["nacks"] == 1
        rejection = entry["last_rejection"]
        assert "timeout_ms" in rejection["error"] and rejection["resource"] == "web"
        config = json.loads((tmp_path / "state" / "config.json").read_text())   # (the good one)
        first_route = next(r for s in config["services"] for r in s["routes"])
        src = first_route["source"]
        assert rejection["source"] == f"{src['file']}:{src['line']}:{src['column']}"
        assert src["file"].endswith("behaviour.mesh")
        human = run_meshc("status", "--server", f"127.0.0.1:{plane.serve.port}")
        assert human.returncode == 1 and "SidecarConfig version" in human.stdout and "rejected" in human.stdout

        policy(plane.path, plane.ports, live="shadow")   # a good edit: sent and applied
        mark = plane.serve.reload()
        plane.serve.wait_for("published (", after=mark)
        wait(lambda: plane.call("/live") == "shadow", "the good edit", proxy=plane.proxy)
        wait(lambda: native_stream(status(plane.serve.port))["types"]["SidecarConfig"]["state"] == "up to date",
             "the good edit acknowledged")
    finally:
        plane.close()


def test_the_server_stopped_the_proxy_keeps_routing_a_new_server_resyncs_without_a_reload(plane):
    version = plane.config()["config"]["version"]
    reloads = plane.proxy.stats()["server.config_reload_ok"]
    port = plane.serve.port
    assert plane.serve.stop() == 0
    for _ in range(10):
        assert plane.call("/live") == "v1"
        time.sleep(0.1)
    wait(lambda: "xDS server" in plane.proxy.log() and "retrying" in plane.proxy.log(), "the lost server logged")
    plane.serve = Serve(str(plane.path), port=port)   # another server process, the same sources
    data = wait(lambda: native_stream(d := status(port)) and
                native_stream(d)["types"].get("SidecarConfig", {}).get("state") == "up to date" and d,
                "the proxy back on the new server", timeout=30, proxy=plane.proxy)
    assert native_stream(data)["types"]["SidecarConfig"]["acked"] == plane.native_version()
    assert plane.config()["config"]["version"] == version and plane.call("/live") == "v1"
    assert plane.proxy.stats()["server.config_reload_ok"] == reloads, "same versions: nothing reloaded"
    policy(plane.path, plane.ports, live="v2")   # and it takes the next push
    plane.serve.reload()
    wait(lambda: plane.call("/live") == "v2", "the push after the resync", proxy=plane.proxy)


def test_no_request_fails_while_pushes_arrive_and_the_server_is_replaced(plane):
    """Requests on keep-alive and new connections, without a pause, while two edits are pushed,
    the server is stopped and a new one takes over: none fails, and the last edit is served."""
    failures: list[str] = []
    done = threading.Event()
    count = [0]

    def load():
        from tests.proxy_harness import Client

        client = Client(plane.proxy.outbound)
        while not done.is_set():
            try:
                r = client.request("GET", "/live", host=API_HOST)
                if r.status != 200:
                    failures.append(repr(r))
                count[0] += 1
            except OSError as err:
                failures.append(repr(err))
        client.close()

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for live in ("v2", "shadow"):
            policy(plane.path, plane.ports, live=live)
            plane.serve.reload()
            wait(lambda live=live: plane.call("/live") == live, f"the push of {live}", proxy=plane.proxy)
        port = plane.serve.port
        assert plane.serve.stop() == 0
        time.sleep(0.5)
        plane.serve = Serve(str(plane.path), port=port)
        wait(lambda: (s := native_stream(status(port))) and
             s["types"].get("SidecarConfig", {}).get("state") == "up to date", "the resync", proxy=plane.proxy)
        policy(plane.path, plane.ports, live="v1")
        plane.serve.reload()
        wait(lambda: plane.call("/live") == "v1", "the push after the resync", proxy=plane.proxy)
    finally:
        done.set()
        for t in threads:
            t.join(10)
    assert count[0] > 100 and not failures, (count[0], failures[:5])
    print(f"{count[0]} requests across 3 pushes and a server replaced, 0 failed")


def test_a_helper_that_dies_is_restarted_and_the_proxy_keeps_serving(plane):
    first = helper_pid(plane.proxy)
    assert first is not None
    reloads = plane.proxy.stats()["server.config_reload_ok"]
    os.kill(first, signal.SIGKILL)
    assert plane.call("/live") == "v1"
    second = wait(lambda: (p := helper_pid(plane.proxy)) and p != first and p, "a new helper", proxy=plane.proxy)
    assert "xDS client (pid" in plane.proxy.log()
    wait(lambda: (s := native_stream(status(plane.serve.port))) and
         s["types"].get("SidecarConfig", {}).get("state") == "up to date", "the new helper's stream acknowledged")
    assert plane.proxy.stats()["server.config_reload_ok"] == reloads, "a new helper, the same config: no reload"
    assert helper_pid(plane.proxy) == second and plane.call("/live") == "v1"
    policy(plane.path, plane.ports, live="v2")
    plane.serve.reload()
    wait(lambda: plane.call("/live") == "v2", "a push through the new helper", proxy=plane.proxy)
    plane.proxy.stop()
    wait(lambda: not Path(f"/proc/{second}").exists() or "zombie" in Path(f"/proc/{second}/status").read_text()
         .lower(), "the helper gone with the proxy")


def test_with_several_servers_one_that_never_answers_is_left_for_the_next(plane, tmp_path):
    """`--xds-server SILENT --xds-server LIVE`: SILENT accepts the TCP connection (a listening socket
    nobody accepts from: the kernel completes the handshake) and never speaks; the channel is not up
    within the connect timeout (2 s), the helper says so and takes the next server, where the proxy
    gets its config."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        (tmp_path / "second").mkdir()
        started = time.monotonic()
        proxy = start_native(tmp_path / "second", [address, f"127.0.0.1:{plane.serve.port}"], "web",
                             "--inbound-port", "0", "--outbound-port", "0", "--admin-port", "0")
        took = time.monotonic() - started
        try:
            log = proxy.log()
            assert f"xDS server {address}: no connection within 2 s; keeping config (none yet), next " \
                   f"127.0.0.1:{plane.serve.port}" in log, log
            assert f"xDS server 127.0.0.1:{plane.serve.port}: connected, node web" in log, log
            assert get(proxy.outbound, "/live", host=API_HOST).json()["backend"] == "v1"
            print(f"a silent first server: the proxy listened {took:.1f} s after its start")
        finally:
            proxy.stop()
    finally:
        silent.close()


def test_a_restart_with_its_state_dir_serves_the_last_config_while_no_server_answers(plane, tmp_path):
    """The proxy and the server both stopped; the proxy restarted with the same `--state-dir`
    while no server answers: it validates and serves the config.json it last applied at once,
    and keeps trying the server; a server on the same sources brings it up to date with no
    reload, and the next edit is pushed. A last config that cannot start is not served: the
    proxy waits for the server, as without one."""
    version = plane.config()["config"]["version"]
    assert plane.proxy.stop() == 0
    port = plane.serve.port
    assert plane.serve.stop() == 0
    started = time.monotonic()
    plane.proxy = start_native(tmp_path, port)   # nothing answers on `port`
    listening = time.monotonic() - started
    assert plane.config()["config"]["version"] == version and plane.call("/live") == "v1"
    assert plane.config()["file"] == str(tmp_path / "state" / "config.json")
    wait(lambda: "keeping config (none yet), retrying" in plane.proxy.log(), "the server tried", proxy=plane.proxy)
    log = plane.proxy.log()
    assert "serving the last config" in log and "waiting for the first config" not in log, log
    for _ in range(5):
        assert plane.call("/live") == "v1"
        time.sleep(0.1)
    plane.serve = Serve(str(plane.path), port=port)   # a server answers: the same sources
    came = time.monotonic()
    wait(lambda: (s := native_stream(status(port))) and s["types"].get("SidecarConfig", {}).get("state") ==
         "up to date", "the resync", proxy=plane.proxy)
    resync = time.monotonic() - came
    assert plane.proxy.stats()["server.config_reload_ok"] == 0, "the same config: no reload"
    assert plane.config()["config"]["version"] == version
    policy(plane.path, plane.ports, live="v2")
    plane.serve.reload()
    wait(lambda: plane.call("/live") == "v2", "the push after the resync", proxy=plane.proxy)
    print(f"restarted from the last config: listening {listening * 1000:.0f} ms after the start with no server; "
          f"up to date {resync * 1000:.0f} ms after a server was serving")

    # a last config that cannot start (its contract refuses it): not served; the server's is
    assert plane.proxy.stop() == 0
    state = tmp_path / "state" / "config.json"
    bad = json.loads(state.read_text())
    bad["services"][0]["routes"][0]["timeout_ms"] = -1
    state.write_text(json.dumps(bad))
    plane.proxy = start_native(tmp_path, port)
    log = plane.proxy.log()
    assert "the last config cannot start, waiting for the xDS server" in log and "timeout_ms" in log, log
    assert "waiting for the first config" in log and "serving the last config" not in log
    assert plane.call("/live") == "v2"


def test_a_state_dir_whose_last_config_is_another_services_is_not_served(plane, tmp_path):
    """`--state-dir` holding the config.json of another service (a directory reused for another
    `--node`): the proxy does not serve it, says why, and waits for the server as without one; the
    server's config for its node replaces the file. A node `SERVICE.SUBSET` matches SERVICE."""
    from runtime_proxy.__main__ import last_config

    assert plane.proxy.stop() == 0
    state = tmp_path / "state" / "config.json"
    other = json.loads(state.read_text())
    other["service"] = "api"
    other["version"] = "another service's"
    state.write_text(json.dumps(other))
    plane.proxy = start_native(tmp_path, plane.serve.port)
    log = plane.proxy.log()
    assert 'is the config of service "api", not of --node web; not served, waiting for the xDS server' in log, log
    assert "waiting for the first config" in log and "serving the last config" not in log, log
    assert plane.config()["config"]["version"] != "another service's" and plane.call("/live") == "v1"
    assert json.loads(state.read_text())["service"] == "web"

    started: list[str] = []
    sha = last_config(str(state), "web.canary", lambda path: (started.append(path) or True, "ok"))
    assert started == [str(state)] and sha is not None, "SERVICE.SUBSET: the saved config of SERVICE is served"
    assert last_config(str(state), "api.v1", lambda path: (started.append(path) or True, "ok")) is None
    assert started == [str(state)], "another service's config is not even started"


def test_before_its_first_config_the_proxy_waits_and_a_signal_ends_the_wait(plane, tmp_path):
    """A node the server does not know: the stream ends NOT_FOUND, the helper retries with backoff,
    the proxy does not listen; SIGTERM ends the wait with exit 0, the helper with it, and the
    temporary state directory is removed."""
    log_path = tmp_path / "waiting.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "compiler", "proxy", "--xds-server",
                                 f"127.0.0.1:{plane.serve.port}", "--node", "nosuch"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait(lambda: "unknown node 'nosuch'" in log_path.read_text(), "the server's answer logged")
        helper = wait(lambda: helper_pid(Proxy(proc, {"inbound": 0, "outbound": 0, "admin": 0}, str(log_path))),
                      "the helper")
        text = log_path.read_text()
        assert "waiting for the first config" in text and "listening" not in text
        argv = Path(f"/proc/{helper}/cmdline").read_bytes().decode().split("\0")
        state = argv[argv.index("--state-dir") + 1]   # the default: a new temporary directory
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not os.path.exists(state)
        wait(lambda: not Path(f"/proc/{helper}").exists() or "zombie" in Path(f"/proc/{helper}/status").read_text()
             .lower(), "the helper gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- certificates: inline secrets from the server's ADS servicer ----------------------------------

MTLS_POLICY = """
mesh { trust_domain "mesh.local"  mtls strict  certificates "@CERTS@" }
service web {
  port 8000
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" }
}
service peer { port 8001  endpoints ["127.0.0.1:1"] }
authorization web { default deny  allow peer { from service peer } }
"""


class InlineServer:
    """compiler/control/ads.py's servicer on a grpc.aio server in a thread, serving snapshots of
    MTLS_POLICY whose two secrets carry `meshc ca` certificates as inline bytes."""

    def __init__(self, tmp: Path, channel_tls: bool = False):
        self.tmp = tmp
        self.channel_tls = channel_tls   # mutual TLS on the xDS channel, the server named `meshc-control`
        self.ca = mtls.make_ca(str(tmp / "ca"), "mesh.local")
        self.app = Backend("app")
        self.ports = {"INBOUND": free_port(), "OUTBOUND": free_port(), "ADMIN": free_port(), "APP": self.app.port}
        text = MTLS_POLICY.replace("@CERTS@", str(tmp / "nowhere"))
        for key, value in self.ports.items():
            text = text.replace(f"@{key}@", str(value))
        (tmp / "mtls.mesh").write_text(text)
        self.compilation = api.compile([str(tmp / "mtls.mesh")])
        assert not self.compilation.has_errors
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def snapshots(self, cert_dir: str, key_from: str | None = None) -> dict:
        """web's snapshot with inline secrets from `cert_dir` (the key from `key_from` if given)."""
        snap = snapshot.build(self.compilation, "web")
        read = {n: Path(cert_dir, n).read_bytes() for n in ("cert.pem", "key.pem", "ca.pem")}
        if key_from is not None:
            read["key.pem"] = Path(key_from, "key.pem").read_bytes()
        snap.json[snapshot.SECRET] = {
            "identity": {"@type": snapshot.SECRET, "name": "identity", "tls_certificate": {
                "certificate_chain": {"inline_bytes": _b64(read["cert.pem"])},
                "private_key": {"inline_bytes": _b64(read["key.pem"])}}},
            "mesh_ca": {"@type": snapshot.SECRET, "name": "mesh_ca", "validation_context": {
                "trusted_ca": {"inline_bytes": _b64(read["ca.pem"])}}}}
        from compiler.control import protos
        from compiler.control.versions import version_of
        snap.packed[snapshot.SECRET] = {n: protos.to_any(r) for n, r in sorted(snap.json[snapshot.SECRET].items())}
        snap.versions[snapshot.SECRET] = version_of(snap.packed[snapshot.SECRET])
        return {"web": snap}

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def main():
            self.server = grpc.aio.server()
            self.servicer = AdsServicer({})
            ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.servicer, self.server)
            if self.channel_tls:
                cert, key = _control_cert(self.ca)
                ca_pem = Path(self.ca, "ca.pem").read_bytes()
                creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca_pem, require_client_auth=True)
                self.port = self.server.add_secure_port("127.0.0.1:0", creds)
            else:
                self.port = self.server.add_insecure_port("127.0.0.1:0")
            self.stopped = asyncio.Event()
            await self.server.start()
            self.ready.set()
            await self.stopped.wait()
            await self.server.stop(0)

        self.loop.run_until_complete(main())

    def publish(self, snapshots: dict) -> None:
        self.loop.call_soon_threadsafe(self.servicer.publish, snapshots)

    def secret_state(self) -> dict | None:
        stream = next((s for s in list(self.servicer.streams.values()) if s.node == "web"), None)
        return stream.status()["types"].get(snapshot.SECRET) if stream is not None else None

    def close(self):
        self.loop.call_soon_threadsafe(self.stopped.set)
        self.thread.join(10)
        self.app.close()


def _control_cert(ca_dir: str) -> tuple[bytes, bytes]:
    """The certificate `meshc serve --ca` presents, issued as it issues it (compiler/control/sds.py):
    the DNS SAN `meshc-control` (the name the client checks) and the control plane's SPIFFE ID."""
    import datetime as dt

    from compiler.backends.envoy.names import CONTROL_SERVER_NAME, control_id
    from compiler.ca import certs
    from compiler.ca import files as ca_files

    ca = ca_files.read_ca(ca_dir)
    return certs.issue(ca, control_id(ca.trust_domain), 1, dt.datetime.now(dt.UTC), (CONTROL_SERVER_NAME,))


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def certs_info(proxy: Proxy) -> dict:
    code, body = proxy.admin_get("/certs")
    assert code == 200
    return json.loads(body)


def test_inline_certificates_land_in_private_files_and_a_rotation_reaches_the_proxy(tmp_path):
    server = InlineServer(tmp_path)
    web = mtls.issue(server.ca, str(tmp_path / "issued" / "web"), "spiffe://mesh.local/ns/default/sa/web")
    peer = mtls.issue(server.ca, str(tmp_path / "issued" / "peer"), "spiffe://mesh.local/ns/default/sa/peer")
    server.publish(server.snapshots(web))
    proxy = start_native(tmp_path, server.port)
    try:
        info = certs_info(proxy)
        assert info["mode"] == "strict" and info["certificate"]["serial"] == mtls.serial(web)
        key = Path(info["certificate"]["key"])
        certs = tmp_path / "state" / "certs"
        assert key.parent.parent == certs
        assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
        assert stat.S_IMODE(certs.stat().st_mode) == 0o700 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
        for name in ("cert.pem", "key.pem", "ca.pem"):
            assert stat.S_IMODE((key.parent / name).stat().st_mode) == 0o600, name
        assert key.read_bytes() == Path(web, "key.pem").read_bytes()
        # the inbound listener takes mTLS with the served identity: the peer is admitted
        assert _mtls_get(proxy.inbound, peer) == 200
        wait(lambda: (s := server.secret_state()) and s["acked"] == s["sent"] and s["acks"] >= 1, "the secrets ACKed")

        mtls.rotate(server.ca, web)   # a new certificate: a new secret version, new files, a reload
        rotated = mtls.serial(web)
        server.publish(server.snapshots(web))
        wait(lambda: certs_info(proxy)["certificate"]["serial"] == rotated, "the rotated certificate", proxy=proxy)
        new_key = Path(certs_info(proxy)["certificate"]["key"])
        assert new_key.parent != key.parent
        # the helper removes the old directory once the proxy has applied the new one
        wait(lambda: not key.parent.exists(), "the old key removed", proxy=proxy)
        assert stat.S_IMODE(new_key.stat().st_mode) == 0o600
        assert _mtls_get(proxy.inbound, peer) == 200
        wait(lambda: (s := server.secret_state()) and s["acked"] == s["sent"], "the rotation ACKed")

        # a key that does not match the certificate: the proxy refuses, the secret is NACKed with
        # its message, and the last good identity keeps serving
        server.publish(server.snapshots(web, key_from=peer))
        state = wait(lambda: (s := server.secret_state()) and s["rejected"] and s, "the NACK", proxy=proxy)
        assert "identity files" in state["error"] and state["nacks"] == 1, state
        assert certs_info(proxy)["certificate"]["serial"] == rotated and _mtls_get(proxy.inbound, peer) == 200
        assert stat.S_IMODE(new_key.stat().st_mode) == 0o600 and new_key.exists()
        assert json.loads((tmp_path / "state" / "config.json").read_text())["mtls"]["files"]["key"] == str(new_key)
    finally:
        proxy.stop()
        server.close()


def test_a_corrupt_secret_is_nacked_and_the_helper_keeps_its_stream_for_the_next_version(tmp_path):
    """A Secret whose bytes are not a Secret (protobuf's DecodeError) is NACKed with a message
    that says so; the helper does not die or stall: the proxy keeps its identity and serves mTLS,
    and the next good version (a rotation) is applied through the same helper."""
    from google.protobuf.any_pb2 import Any

    from compiler.control.versions import version_of

    server = InlineServer(tmp_path)
    web = mtls.issue(server.ca, str(tmp_path / "issued" / "web"), "spiffe://mesh.local/ns/default/sa/web")
    peer = mtls.issue(server.ca, str(tmp_path / "issued" / "peer"), "spiffe://mesh.local/ns/default/sa/peer")
    server.publish(server.snapshots(web))
    proxy = start_native(tmp_path, server.port)
    try:
        serial = mtls.serial(web)
        assert certs_info(proxy)["certificate"]["serial"] == serial
        wait(lambda: (s := server.secret_state()) and s["acked"] == s["sent"], "the secrets ACKed")
        helper = helper_pid(proxy)
        snaps = server.snapshots(web)
        packed = snaps["web"].packed[snapshot.SECRET]
        packed["identity"] = Any(type_url=snapshot.SECRET, value=b"\xff\xff\xff")
        snaps["web"].versions[snapshot.SECRET] = version_of(packed)
        server.publish(snaps)
        state = wait(lambda: (s := server.secret_state()) and s["rejected"] and s, "the NACK", proxy=proxy)
        assert "cannot be decoded" in state["error"] and state["nacks"] == 1, state
        assert "cannot be decoded" in proxy.log()
        assert certs_info(proxy)["certificate"]["serial"] == serial and _mtls_get(proxy.inbound, peer) == 200
        assert helper_pid(proxy) == helper, "the same helper, its stream still up"

        mtls.rotate(server.ca, web)   # the next good version: applied
        server.publish(server.snapshots(web))
        wait(lambda: certs_info(proxy)["certificate"]["serial"] == mtls.serial(web), "the next good version",
             proxy=proxy)
        wait(lambda: (s := server.secret_state()) and s["acked"] == s["sent"] != s["rejected"], "its ACK")
        assert _mtls_get(proxy.inbound, peer) == 200 and helper_pid(proxy) == helper
        assert "keeping config" not in proxy.log(), "the stream never ended (no reconnection)"
    finally:
        proxy.stop()
        server.close()


def test_xds_identity_takes_the_config_over_a_mutual_tls_channel(tmp_path):
    """`--xds-identity DIR` (cert.pem, key.pem, ca.pem of `meshc ca issue`): the channel is mutual
    TLS to a server whose certificate names `meshc-control` and which requires a client certificate."""
    server = InlineServer(tmp_path, channel_tls=True)
    web = mtls.issue(server.ca, str(tmp_path / "issued" / "web"), "spiffe://mesh.local/ns/default/sa/web")
    server.publish(server.snapshots(web))
    proxy = start_native(tmp_path, server.port, "web", "--xds-identity", web)
    try:
        assert certs_info(proxy)["certificate"]["serial"] == mtls.serial(web)
        wait(lambda: (s := server.secret_state()) and s["acked"] == s["sent"], "the secrets ACKed over TLS")
    finally:
        proxy.stop()
        server.close()


def test_file_secrets_from_meshc_serve_are_used_where_they_are_and_a_refused_one_is_nacked(tmp_path):
    """Without `--ca` the server's secrets name files (the backend's `filename`s): the proxy uses
    them in place. An edit that points them at a directory without certificates passes the server
    (and the contract) but not the proxy's identity check: the Secret is NACKed with the proxy's
    message, `meshc status` shows it, and the proxy keeps its identity and serves mTLS."""
    ca = mtls.make_ca(str(tmp_path / "ca"), "mesh.local")
    web = mtls.issue(ca, str(tmp_path / "certs" / "web"), "spiffe://mesh.local/ns/default/sa/web")
    peer = mtls.issue(ca, str(tmp_path / "issued" / "peer"), "spiffe://mesh.local/ns/default/sa/peer")
    app = Backend("app")
    ports = {"INBOUND": free_port(), "OUTBOUND": free_port(), "ADMIN": free_port(), "APP": app.port}

    def write(certs: Path) -> Path:
        text = MTLS_POLICY.replace("@CERTS@", str(certs))
        for key, value in ports.items():
            text = text.replace(f"@{key}@", str(value))
        (tmp_path / "mtls.mesh").write_text(text)
        return tmp_path / "mtls.mesh"

    serve = Serve(str(write(tmp_path / "certs")))
    proxy = start_native(tmp_path, serve.port)
    try:
        info = certs_info(proxy)["certificate"]
        assert info["serial"] == mtls.serial(web) and info["key"] == os.path.join(web, "key.pem")
        assert not (tmp_path / "state" / "certs").exists() or not os.listdir(tmp_path / "state" / "certs")
        assert _mtls_get(proxy.inbound, peer) == 200
        data = wait(lambda: (s := native_stream(d := status(serve.port))) and
                    s["types"].get("Secret", {}).get("state") == "up to date" and d, "the secrets acknowledged")
        assert set(native_stream(data)["types"]) == {"SidecarConfig", "Secret"}

        (tmp_path / "empty" / "web").mkdir(parents=True)
        write(tmp_path / "empty")
        mark = serve.reload()
        line = serve.wait_for("web rejected Secret version", after=mark)
        assert "cannot read the certificate" in line, line
        entry = wait(lambda: (s := native_stream(status(serve.port))) and s["types"]["Secret"]["state"] == "rejected"
                     and s["types"]["SidecarConfig"]["state"] == "up to date" and s, "the NACK in status")
        assert "identity files" in entry["types"]["Secret"]["last_rejection"]["error"]
        assert certs_info(proxy)["certificate"]["serial"] == mtls.serial(web) and _mtls_get(proxy.inbound, peer) == 200
        assert run_meshc("status", "--server", f"127.0.0.1:{serve.port}").returncode == 1
    finally:
        proxy.stop()
        assert serve.stop() == 0
        app.close()


def _mtls_get(port: int, cert_dir: str) -> int:
    import http.client

    ctx = mtls.client_context(cert_dir, os.path.join(cert_dir, "ca.pem"))
    ctx.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": "web"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_native_rejection_is_located_by_its_json_path(tmp_path):
    """The proxy's messages locate by JSON path: `$.services[I].routes[K]` is that route's
    declaration, `$.services[I]` that service's, anything else the node's config without a source."""
    from compiler.control.status import locate

    path = policy(tmp_path / "p.mesh", {k: free_port() for k in ("INBOUND", "OUTBOUND", "ADMIN", "APP", "V1", "V2",
                                                                  "SHADOW")})
    snap = snapshot.build(api.compile([str(path)]), "web")
    config = snapshot.native_config(snap)
    route, service = config["services"][0]["routes"][2]["source"], config["services"][1]["source"]
    assert locate(snap, snapshot.NATIVE, "invalid config: $.services[0].routes[2].timeout_ms: bad") == {
        "resource": "web", "source": f"{path}:{route['line']}:{route['column']}", "exact": True}
    assert locate(snap, snapshot.NATIVE, "$.services[1].limits.max_requests: bad")["source"] == \
        f"{path}:{service['line']}:{service['column']}"
    assert locate(snap, snapshot.NATIVE, "cannot use the identity files")["source"] is None
    assert locate(snap, snapshot.NATIVE, "$.services[99].routes[0]: bad")["source"] is None


# ---- usage --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--xds-server", "127.0.0.1:1"], "go together"),
    (["--node", "web"], "go together"),
    (["cfg.json", "--xds-server", "127.0.0.1:1", "--node", "web"], "exclude each other"),
    (["--xds-server", "nowhere", "--node", "web"], "not HOST:PORT"),
    (["--xds-server", "127.0.0.1:1", "--xds-server", "127.0.0.1:2", "--xds-server", "nowhere", "--node", "web"],
     "nowhere: not HOST:PORT"),
    (["--xds-server", "127.0.0.1:1", "--xds-server", "127.0.0.1:1", "--node", "web"], "given twice"),
    (["--xds-server", "127.0.0.1:1", "--node", "web", "--xds-identity", "/nonexistent"], "no cert.pem"),
    (["cfg.json", "--state-dir", "/tmp/x"], "go with --xds-server"),
])
def test_xds_flags_misused_exit_2_in_one_line(args, message):
    proc = run_meshc("proxy", *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
