"""mTLS over SDS in both planes at once (issue 14, docs/control-plane.md "Certificates over SDS"):
one `meshc serve --ca` subprocess feeds an Envoy sidecar and a native proxy, each over its own
mutual-TLS xDS channel (`--xds-identity`), with certificates of 7.2 s (`--cert-hours 0.002`, as
tests/test_control_plane_sds.py), so the module runs across rotations. Real Envoy 1.40, real
native proxies and their xDS helpers, real sockets, no mocks.

The fleet (`mtls strict`, one sidecar per service): `web` on Envoy, `api` on the native proxy;
web may call api and api may call web (authorization by identity), so each direction crosses the
planes: web's Envoy -> api's native inbound, api's native outbound -> web's Envoy inbound.
Checked:

- each sidecar holds its own certificate (its SPIFFE ID) and the CA from SDS: Envoy inline, the
  native proxy in private files (STATE/certs/HASH/, dirs 0700, files 0600);
- web -> api and api -> web through both sidecars are 200 with the caller's verified identity in
  `x-forwarded-client-cert`; an `intruder` certificate of the same CA gets 403 from either
  sidecar's inbound, a caller's own certificate 200;
- `meshc status --identity` lists the Envoy stream and the native stream, each up to date on every
  type it asked for (exit 0), and the certificates of both nodes;
- a rotation under load (requests through both kinds of sidecar in both directions, and fresh
  mTLS handshakes to both inbounds): 0 failed requests, both sidecars present the new certificates,
  the same proxy processes (and the same xDS helper);
- a native proxy whose channel identity is web's but which claims node `api` is refused
  (PERMISSION_DENIED): said once in its log, retried with backoff (not hot), never listens.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import mtls_support as mtls
from tests.envoy_support import ROOT, Backend, Envoy, free_port, request, requires_envoy, run_meshc
from tests.proxy_harness import Proxy
from tests.test_control_plane import Serve
from tests.test_control_plane_sds import CERT_HOURS, POLICY, inline_certs, serials, served_serial, spiffe
from tests.test_native_xds import certs_info, helper_pid, start_native

# tests/test_control_plane_sds.py's fleet, and web admits api too: both directions are by identity
MIXED = POLICY + "authorization web { default deny  allow api { from service api } }\n"
API_HOST, WEB_HOST = {"host": "api:8000"}, {"host": "web:8001"}


def native_serial(proxy: Proxy) -> int:
    return int(certs_info(proxy)["certificate"]["serial"], 16)


class MixedFleet:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.app = Backend("app")
        self.ports = {"API_IN": free_port(), "API_OUT": free_port(), "API_ADMIN": free_port(), "WEB_IN": free_port(),
                      "WEB_OUT": free_port(), "WEB_ADMIN": free_port(), "APP": self.app.port}
        text = MIXED
        for key, value in self.ports.items():
            text = text.replace(f"@{key}@", str(value))
        self.path = tmp / "mixed.mesh"
        self.path.write_text(text)
        self.ca = mtls.make_ca(str(tmp / "ca"), "mesh.local")
        self.ca_file = os.path.join(self.ca, "ca.pem")
        self.ids = {n: mtls.issue(self.ca, str(tmp / "ids" / n), spiffe(n)) for n in ("api", "web", "intruder")}
        self.serve = Serve(str(self.path), args=("--ca", self.ca, "--cert-hours", str(CERT_HOURS)))
        self.envoy: Envoy | None = None
        self.native: Proxy | None = None
        try:
            self._start(tmp)
        except BaseException:
            with contextlib.suppress(AssertionError):   # the start's error is the one to see
                self.close()   # no server, Envoy or proxy left behind by a start that failed
            raise

    def _start(self, tmp: Path) -> None:
        proc = run_meshc("compile", str(self.path), "--target", "envoy", "--proxy", "web", "--bootstrap", "ads",
                         "--xds-server", f"127.0.0.1:{self.serve.port}", "--xds-identity", self.ids["web"],
                         "-o", str(tmp / "boot"))
        assert proc.returncode == 0, proc.stderr
        self.envoy = Envoy(str(tmp / "boot" / "web.envoy.json"), "--reject-unknown-dynamic-fields")
        self.state = tmp / "api" / "state"
        (tmp / "api").mkdir()
        self.native = start_native(tmp / "api", self.serve.port, "api", "--xds-identity", self.ids["api"])
        self.wait(lambda: len(inline_certs(self.envoy)) >= 2, "certificates over SDS in Envoy")
        self.wait(lambda: certs_info(self.native).get("certificate"), "a certificate in the native proxy")
        self.pids = {"envoy": self.envoy.proc.pid, "native": self.native.proc.pid, "helper": helper_pid(self.native)}

    def wait(self, condition, what: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what}:\n{''.join(self.serve.lines)}\n"
                                     f"{self.native.log() if self.native else ''}")
            time.sleep(0.05)
        return value

    def web_to_api(self) -> tuple[int, bytes]:   # web's Envoy outbound -> api's native inbound
        status, _, body = request(self.ports["WEB_OUT"], "/from-web", headers=API_HOST)
        return status, body

    def api_to_web(self) -> tuple[int, bytes]:   # api's native outbound -> web's Envoy inbound
        status, _, body = request(self.ports["API_OUT"], "/from-api", headers=WEB_HOST)
        return status, body

    def status(self) -> tuple[int, dict]:
        proc = run_meshc("status", "--server", f"127.0.0.1:{self.serve.port}", "--identity", self.ids["intruder"],
                         "--format", "json")
        assert proc.returncode in (0, 1), proc.stderr
        return proc.returncode, json.loads(proc.stdout)

    def close(self):
        if self.native is not None:
            self.native.stop()
        if self.envoy is not None:
            self.envoy.stop()
        code = self.serve.stop()
        self.app.close()
        assert code == 0, "".join(self.serve.lines)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    f = MixedFleet(tmp_path_factory.mktemp("mixed"))
    yield f
    f.close()


def inbound_status(port: int, caller: str, ca_file: str) -> int:
    """The status of one request to a sidecar's inbound on a new mTLS handshake as `caller` (an
    identity directory), read from the status line alone (Envoy closes a denied connection only
    after its 1 s delayed close)."""
    ctx = mtls.client_context(caller, ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        tls.sendall(b"GET /direct HTTP/1.1\r\nhost: any\r\nconnection: close\r\n\r\n")
        data = b""
        while b"\r\n" not in data and (chunk := tls.recv(65536)):
            data += chunk
    return int(data.split(b" ", 2)[1])


def xfcc(body: bytes) -> str:
    return json.loads(body)["headers"]["x-forwarded-client-cert"][0]


@requires_envoy
def test_both_planes_get_their_certificates_over_sds_and_authorize_by_identity_across_planes(fleet):
    sans = {san["uri"] for c in inline_certs(fleet.envoy) for san in c["subject_alt_names"] if "uri" in san}
    assert sans == {spiffe("web")}
    info = certs_info(fleet.native)
    assert info["mode"] == "strict" and info["certificate"]["identity"] == spiffe("api"), info
    # the native proxy's key from SDS: a private file in a private directory of its state directory
    key = Path(info["certificate"]["key"])
    assert key.parent.parent == fleet.state / "certs"
    for directory in (fleet.state, fleet.state / "certs", key.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for name in ("cert.pem", "key.pem", "ca.pem"):
        assert stat.S_IMODE((key.parent / name).stat().st_mode) == 0o600, name
    assert (key.parent / "ca.pem").read_bytes() == Path(fleet.ca_file).read_bytes()

    status, body = fleet.web_to_api()   # Envoy -> native
    assert status == 200, body
    assert json.loads(body)["path"] == "/from-web" and f"URI={spiffe('web')}" in xfcc(body)
    status, body = fleet.api_to_web()   # native -> Envoy
    assert status == 200, body
    assert json.loads(body)["path"] == "/from-api" and f"URI={spiffe('api')}" in xfcc(body)
    # straight to each inbound: the allowed caller's certificate 200, another of the same CA 403
    assert inbound_status(fleet.ports["API_IN"], fleet.ids["web"], fleet.ca_file) == 200
    assert inbound_status(fleet.ports["API_IN"], fleet.ids["intruder"], fleet.ca_file) == 403
    assert inbound_status(fleet.ports["WEB_IN"], fleet.ids["api"], fleet.ca_file) == 200
    assert inbound_status(fleet.ports["WEB_IN"], fleet.ids["intruder"], fleet.ca_file) == 403


@requires_envoy
def test_meshc_status_lists_the_envoy_and_the_native_stream_up_to_date(fleet):
    def settled():
        code, data = fleet.status()
        return code == 0 and len(data["streams"]) == 2 and data

    data = fleet.wait(settled, "status exit 0 with both streams")
    kinds = {s["node"]: s["kind"] for s in data["streams"]}
    assert kinds == {"web": "envoy", "api": "native"}, kinds
    native = next(s for s in data["streams"] if s["kind"] == "native")
    assert set(native["types"]) == {"SidecarConfig", "Secret"}, native["types"]
    envoy = next(s for s in data["streams"] if s["kind"] == "envoy")
    assert {"Cluster", "Listener", "RouteConfiguration", "Secret"} <= set(envoy["types"]), envoy["types"]
    for stream in data["streams"]:
        for name, entry in stream["types"].items():
            assert entry["state"] == "up to date", (stream["node"], name, entry)
    assert set(data["certificates"]["nodes"]) == {"api", "web"}
    human = run_meshc("status", "--server", f"127.0.0.1:{fleet.serve.port}", "--identity", fleet.ids["intruder"])
    assert "native" in human.stdout and "envoy" in human.stdout and "PRIVATE" not in human.stdout, human.stdout


@requires_envoy
def test_a_rotation_under_load_through_both_planes_fails_no_request_and_restarts_nothing(fleet):
    envoy_before, native_before = serials(fleet.envoy), native_serial(fleet.native)
    seen = {"api": set(), "web": set()}   # serials each inbound presented to new handshakes
    first = {"api": served_serial(fleet.ports["API_IN"], fleet.ids["web"], fleet.ca_file)[1],
             "web": served_serial(fleet.ports["WEB_IN"], fleet.ids["api"], fleet.ca_file)[1]}
    failures: list[str] = []
    counts = {"web->api": 0, "api->web": 0, "handshakes": 0}
    stop = threading.Event()

    def through(name, call):
        while not stop.is_set():
            try:
                status, body = call()
                if status != 200:
                    failures.append(f"{name}: {status} {body[:100]!r}")
            except OSError as err:
                failures.append(f"{name}: {err!r}")
            counts[name] += 1

    def new_handshakes():   # a fresh mTLS handshake with each inbound
        while not stop.is_set():
            for node, port, caller in (("api", "API_IN", "web"), ("web", "WEB_IN", "api")):
                try:
                    status, serial = served_serial(fleet.ports[port], fleet.ids[caller], fleet.ca_file)
                    seen[node].add(serial)
                    if status != 200:
                        failures.append(f"{caller} -> {node} inbound: {status}")
                except (OSError, ssl.SSLError) as err:
                    failures.append(f"{caller} -> {node} inbound: {err!r}")
                counts["handshakes"] += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=through, args=("web->api", fleet.web_to_api)),
               threading.Thread(target=through, args=("api->web", fleet.api_to_web)),
               threading.Thread(target=new_handshakes)]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        fleet.wait(lambda: not (serials(fleet.envoy) & envoy_before) and native_serial(fleet.native) != native_before,
                   "new certificates in both sidecars", timeout=15)
        fleet.wait(lambda: seen["api"] - {first["api"]} and seen["web"] - {first["web"]},
                   "new handshakes with both new certificates", timeout=10)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    elapsed = time.monotonic() - started
    assert not failures, failures[:5]
    assert counts["web->api"] > 20 and counts["api->web"] > 20 and counts["handshakes"] >= 4, counts
    assert {"envoy": fleet.envoy.proc.pid, "native": fleet.native.proc.pid,
            "helper": helper_pid(fleet.native)} == fleet.pids
    assert fleet.envoy.proc.poll() is None and fleet.native.proc.poll() is None
    rotated = " ".join(line for line in fleet.serve.lines if "rotated" in line)
    assert "api" in rotated and "web" in rotated, fleet.serve.lines
    # the new key landed as the first one did: 0600 in a 0700 directory, the old directory removed
    key = Path(certs_info(fleet.native)["certificate"]["key"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    fleet.wait(lambda: len(os.listdir(fleet.state / "certs")) == 1, "one certificate directory left")
    print(f"rotation under load: {counts} in {elapsed:.1f} s, 0 failed")


@requires_envoy
def test_a_native_proxy_the_server_refuses_says_why_once_and_backs_off(fleet, tmp_path):
    """A native proxy whose channel identity is web's but whose `--node` is api: every stream ends
    PERMISSION_DENIED before anything is sent (no certificate issued, nothing written); one without
    `--xds-identity` cannot connect to the mutual-TLS server. Each says so once in its log, with what
    to check, retries with backoff (not in a hot loop), and never listens."""
    mark = len(fleet.serve.lines)
    cases = {"claims api": ("--xds-identity", fleet.ids["web"]), "no identity": ()}
    procs, logs = {}, {}
    for name, extra in cases.items():
        logs[name] = tmp_path / f"{name}.log"
        with open(logs[name], "w") as log:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "compiler", "proxy", "--xds-server", f"127.0.0.1:{fleet.serve.port}",
                 "--node", "api", *extra, "--state-dir", str(tmp_path / name)],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        fleet.wait(lambda: all("retrying" in p.read_text() for p in logs.values()), "the refusals in the logs")
        started = time.monotonic()
        time.sleep(4)
        texts = {name: p.read_text() for name, p in logs.items()}
        for name, text in texts.items():
            said = [line for line in text.splitlines() if "retrying" in line]
            assert len(said) == 1, text   # said once, not once per attempt
            assert "listening" not in text and not (tmp_path / name / "certs").exists(), text
            assert procs[name].poll() is None
        claim = next(line for line in texts["claims api"].splitlines() if "retrying" in line)
        assert "PERMISSION_DENIED" in claim and "node 'api'" in claim and spiffe("web") in claim, claim
        assert f"(--node must name a service of the identity in {fleet.ids['web']}/cert.pem)" in claim, claim
        plain = next(line for line in texts["no identity"].splitlines() if "retrying" in line)
        assert "UNAVAILABLE" in plain and "give --xds-identity DIR" in plain, plain
        # retried with backoff (0.25 s doubling to 5 s, jittered): a handful of streams, not hundreds
        ended = [line for line in fleet.serve.lines[mark:] if "may only name a node of its own identity" in line]
        assert 2 <= len(ended) <= 10, (time.monotonic() - started, ended)
    finally:
        for proc in procs.values():
            proc.terminate()
        assert [proc.wait(10) for proc in procs.values()] == [0, 0]


@requires_envoy
def test_an_edit_of_the_authorization_reaches_both_planes_without_restart(fleet):
    """Both rules now admit `intruder` instead of the other sidecar: after the push, the intruder's
    certificate gets 200 from either inbound and the other sidecar 403, in both planes; then back."""
    original = fleet.path.read_text()
    swapped = original.replace("allow web { from service web }", "allow intruder { from service intruder }") \
        .replace("allow api { from service api }", "allow intruder { from service intruder }")
    assert swapped != original

    def answers() -> dict[str, int]:
        return {f"{caller}->{node}": inbound_status(fleet.ports[port], fleet.ids[caller], fleet.ca_file)
                for node, port in (("api", "API_IN"), ("web", "WEB_IN"))
                for caller in ("intruder", "web" if node == "api" else "api")}

    try:
        swapped_answers = {"intruder->api": 200, "web->api": 403, "intruder->web": 200, "api->web": 403}
        original_answers = {"intruder->api": 403, "web->api": 200, "intruder->web": 403, "api->web": 200}
        for text, expected in ((swapped, swapped_answers), (original, original_answers)):
            fleet.path.write_text(text)
            mark = fleet.serve.reload()
            fleet.serve.wait_for("published (", after=mark)
            fleet.wait(lambda expected=expected: answers() == expected, f"the rules {expected}")
    finally:
        fleet.path.write_text(original)
    assert fleet.web_to_api()[0] == 200 and fleet.api_to_web()[0] == 200
    assert {"envoy": fleet.envoy.proc.pid, "native": fleet.native.proc.pid,
            "helper": helper_pid(fleet.native)} == fleet.pids
