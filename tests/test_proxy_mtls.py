"""Mutual TLS in the native proxy, with real sockets, real certificates and the real process.

One mesh CA (trust domain `test.local`, tests/mtls_support.py) issues the sidecar's identity
(`.../sa/client`), its callers' (`frontend`, allowed by identity; `intruder`, not) and the
upstream servers'. Two sidecars run for the whole module: a strict one and a permissive one,
both with the same authorization (`/public` for anyone, `/private` only from `frontend`).

Refusals are asserted the way a client sees them from this proxy: the handshake fails, or the
connection ends (EOF or reset) before any response. uvloop's server sends no TLS alert
(/work/mtls-FINDINGS.md §6), so no test looks for one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from mtls_support import bad_certs, client_context, issue, make_ca, peer_id, rotate, serial, server_context
from proxy_backend import Backend
from proxy_harness import ROOT, config, route, run_proxy, service, subset, write_config

from runtime_proxy.net.tls import serial_hex

TD = "spiffe://test.local/ns/default/sa/"
OWN = TD + "client"
FRONTEND = TD + "frontend"
CONNECT_FAILURE = b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"


# ---- certificates, servers, clients ---------------------------------------------------------------

class Pki:
    def __init__(self, root):
        self.root = str(root)
        self.ca_dir = make_ca(os.path.join(self.root, "ca"), "test.local")
        self.ca = os.path.join(self.ca_dir, "ca.pem")
        self.dirs = {}
        for name in ("client", "frontend", "intruder", "svc", "other"):
            self.dirs[name] = issue(self.ca_dir, os.path.join(self.root, name), TD + name)
        self.bad = bad_certs(self.ca_dir, os.path.join(self.root, "bad"), FRONTEND)

    def ctx(self, who: str | None) -> ssl.SSLContext:
        """A client context presenting `who`'s identity (a name, a bad_certs kind, or None)."""
        if who is None:
            return client_context(None, self.ca)
        return client_context(self.bad.get(who) or self.dirs[who], self.ca)

    def files(self, name: str) -> dict:
        d = self.dirs[name]
        return {"directory": d, "cert": f"{d}/cert.pem", "key": f"{d}/key.pem", "ca": f"{d}/ca.pem"}


class TlsBackend:
    """An mTLS HTTP/1.1 server on its own thread, presenting `cert_dir`'s identity and requiring a
    client certificate of the mesh CA; it answers with JSON: the caller's SPIFFE ID and its
    connection number (to see reuse)."""

    def __init__(self, cert_dir: str, ca: str):
        self.ctx = server_context(cert_dir, ca)
        self.peers: list[str | None] = []
        self.conns = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        backend = self

        class Conn(asyncio.Protocol):
            def connection_made(self, transport):
                backend.conns += 1
                self.id = backend.conns
                self.t = transport
                self.peer = peer_id(transport.get_extra_info("ssl_object"))
                backend.peers.append(self.peer)
                self.buf = b""

            def data_received(self, data):
                self.buf += data
                while b"\r\n\r\n" in self.buf:
                    _, self.buf = self.buf.split(b"\r\n\r\n", 1)
                    body = json.dumps({"peer": self.peer, "conn": self.id}).encode()
                    self.t.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

        async def start():
            self.server = await self.loop.create_server(Conn, "127.0.0.1", 0, ssl=self.ctx)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(5)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class RetriedTlsBackend:
    """An mTLS server, one thread per connection, for a retried answer with a body: the first
    request of an `x-id` gets a 503 whose 100 KB body comes in two parts `tail_delay` apart,
    later ones a 200. A new connection waits `handshake_delays.pop(0)` (when any) before its
    handshake. `events` records ("answer", connection number, status) and ("closed", number)."""

    def __init__(self, cert_dir: str, ca: str):
        self.ctx = server_context(cert_dir, ca)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.events: list[tuple] = []
        self.seen: set[bytes] = set()
        self.handshake_delays: list[float] = []
        self.tail_delay = 0.1
        self.conns = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            delay = self.handshake_delays.pop(0) if self.handshake_delays else 0.0
            threading.Thread(target=self._serve, args=(raw, self.conns, delay), daemon=True).start()

    def _serve(self, raw: socket.socket, n: int, delay: float):
        time.sleep(delay)
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as s:
                s.settimeout(5)
                buf = b""
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = s.recv(65536)
                        if not data:
                            raise ConnectionResetError
                        buf += data
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    headers = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
                    length = int(headers.get(b"content-length", b"0"))
                    while len(buf) < length:
                        data = s.recv(65536)
                        if not data:
                            raise ConnectionResetError
                        buf += data
                    buf = buf[length:]
                    if headers[b"x-id"] not in self.seen:
                        self.seen.add(headers[b"x-id"])
                        self.events.append(("answer", n, 503))
                        body = b"x" * 100_000
                        s.sendall(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n%s" % (
                            len(body), body[:1000]))
                        time.sleep(self.tail_delay)
                        s.sendall(body[1000:])
                    else:
                        self.events.append(("answer", n, 200))
                        s.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except (OSError, ssl.SSLError):
            self.events.append(("closed", n))

    def stop(self):
        self.sock.close()


class TlsClient:
    """A keep-alive HTTPS client presenting an identity (no hostname check: mesh certificates name
    a SPIFFE ID); `serial` is the serial of the certificate the server presented."""

    def __init__(self, port: int, ctx: ssl.SSLContext):
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        self.conn.connect()
        self.serial = serial_hex(self.conn.sock.getpeercert())
        self.server_id = peer_id(self.conn.sock)

    def get(self, path: str, headers=None) -> tuple[int, bytes]:
        self.conn.request("GET", path, headers=dict({"Host": "client"}, **(headers or {})))
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self):
        self.conn.close()


def tls_get(port: int, ctx, path: str, headers=None) -> tuple[int, bytes]:
    c = TlsClient(port, ctx)
    try:
        return c.get(path, headers)
    finally:
        c.close()


def plain_get(port: int, path: str, host: str = "client", headers=None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=dict({"Host": host}, **(headers or {})))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def refused(port: int, ctx: ssl.SSLContext | None) -> bool:
    """Whether the server refuses this client before any response: a failed handshake, or (TLS
    1.3, where the server judges the client's certificate after the client's handshake is done)
    EOF or a reset on the first read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        if ctx is not None:
            sock = ctx.wrap_socket(sock)
        sock.sendall(b"GET /public HTTP/1.1\r\nHost: client\r\n\r\n")
        return sock.recv(65536) == b""
    except (ssl.SSLError, ConnectionError):
        return True
    finally:
        sock.close()


def metric(proxy, line_start: str) -> int:
    _, text = proxy.admin_get("/metrics")
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def wait_for(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def sha256_of(cert_path: str) -> str:
    with open(cert_path) as fh:
        pem = fh.read()
    first = pem[:pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()


# ---- the sidecars ------------------------------------------------------------------------------

AUTHZ = {"default": "deny", "rules": [
    {"name": "public", "action": "allow", "source": {"file": "t.mesh", "line": 1, "column": 1},
     "path": {"kind": "segment_prefix", "value": "/public"}},
    {"name": "private", "action": "allow", "source": {"file": "t.mesh", "line": 2, "column": 1},
     "principals": [{"kind": "exact", "value": FRONTEND}], "path": {"kind": "segment_prefix", "value": "/private"}},
]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def upstreams(pki):
    ups = {"app": Backend("app"), "plain": Backend("plain"),
           "good": TlsBackend(pki.dirs["svc"], pki.ca),         # presents .../sa/svc
           "wrong": TlsBackend(pki.dirs["other"], pki.ca),      # presents .../sa/other
           "foreign": TlsBackend(pki.bad["other_ca"], pki.ca),  # another CA's certificate
           "retried": RetriedTlsBackend(pki.dirs["svc"], pki.ca)}
    yield ups
    for u in ups.values():
        u.stop()


def sidecar_config(pki, ups, mode: str) -> dict:
    def dest(name, port, mtls, identity=TD + "svc", **extra):
        return service(name, [subset("v1", [port], name)], [route("default", to=(name, "v1"), **extra)],
                       identity=identity, mtls=mtls, sni=f"{name}.default")
    retry = {"num_retries": 1, "retry_on": ["5xx"], "per_try_timeout_ms": 0, "backoff_base_ms": 5, "backoff_max_ms": 10}
    cfg = config([dest("good", ups["good"].port, True), dest("wrong", ups["wrong"].port, True),
                  dest("retried", ups["retried"].port, True, retry=retry),
                  dest("foreign", ups["foreign"].port, True), dest("plain", ups["plain"].port, False),
                  dest("client", ups["app"].port, False, OWN)],
                 app_port=ups["app"].port, authorization=AUTHZ)
    cfg["mtls"] = {"mode": mode, "files": pki.files("client")}
    return cfg


@pytest.fixture(scope="module")
def strict(pki, upstreams, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("strict")
    with run_proxy(sidecar_config(pki, upstreams, "strict"), tmp, "--access-log", str(tmp / "access.log")) as p:
        p.access_log = tmp / "access.log"
        yield p


@pytest.fixture(scope="module")
def permissive(pki, upstreams, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("permissive")
    # the identity header must not count where TLS can prove identities
    with run_proxy(sidecar_config(pki, upstreams, "permissive"), tmp, "--identity-header", "x-peer") as p:
        yield p


# ---- strict inbound ----------------------------------------------------------------------------

def test_strict_allows_a_verified_identity_and_the_app_sees_xfcc(strict, pki, upstreams):
    c = TlsClient(strict.inbound, pki.ctx("frontend"))
    assert c.server_id == OWN                                   # the sidecar presents its identity
    status, body = c.get("/private/x", {"x-forwarded-client-cert": "By=spoofed"})
    assert status == 200, body
    assert c.get("/public")[0] == 200                           # keep-alive on the same connection
    c.close()
    seen = [r for r in upstreams["app"].requests if r["target"] == "/private/x"][-1]
    xfcc = [v for n, v in seen["headers"] if n == "x-forwarded-client-cert"]
    # Envoy's SANITIZE_SET + uri (checked against a real Envoy: the same bytes for the same cert)
    assert xfcc == [f"By={OWN};Hash={sha256_of(pki.dirs['frontend'] + '/cert.pem')};URI={FRONTEND}"]


def test_strict_denies_another_identity_by_policy(strict, pki):
    assert tls_get(strict.inbound, pki.ctx("intruder"), "/private/x") == (403, b"RBAC: access denied")
    assert tls_get(strict.inbound, pki.ctx("intruder"), "/public")[0] == 200


def envoy_ssl(proxy, stat: str) -> str:
    """The inbound listener's Envoy-named TLS counter (tests/test_envoy_mtls.py: Envoy's own)."""
    return f'envoy_listener_ssl_{stat}{{envoy_listener_address="127.0.0.1_{proxy.inbound}"}}'


@pytest.mark.parametrize("who, reason, stat", [(None, "no_certificate", "fail_verify_no_cert"),
                                               ("selfsigned", "self_signed", "fail_verify_error"),
                                               ("other_ca", "unknown_ca", "fail_verify_error"),
                                               ("expired", "expired", "fail_verify_error")])
def test_strict_refuses_bad_client_certificates_in_the_handshake(strict, pki, who, reason, stat):
    key = f'meshc_tls_handshake_failures_total{{side="downstream",reason="{reason}"}}'
    before = metric(strict, key)
    envoy_before = metric(strict, envoy_ssl(strict, stat))
    assert refused(strict.inbound, pki.ctx(who))
    assert wait_for(lambda: metric(strict, key) == before + 1)
    assert metric(strict, envoy_ssl(strict, stat)) == envoy_before + 1     # Envoy's name for it
    assert f"refused: {reason}" in strict.log()


def test_strict_refuses_plaintext(strict):
    key = 'meshc_tls_handshake_failures_total{side="downstream",reason="not_tls"}'
    before = metric(strict, key)
    envoy_before = metric(strict, envoy_ssl(strict, "connection_error"))
    assert refused(strict.inbound, None)
    assert wait_for(lambda: metric(strict, key) == before + 1)
    # Envoy counts plaintext on a TLS port as ssl.connection_error (checked against Envoy 1.40)
    assert metric(strict, envoy_ssl(strict, "connection_error")) == envoy_before + 1


def test_connections_leak_no_sockets(strict, pki):
    """The accept loop hands each socket over (or closes it) whatever the handshake's outcome."""
    fds = f"/proc/{strict.proc.pid}/fd"
    refused(strict.inbound, pki.ctx("expired"))
    tls_get(strict.inbound, pki.ctx("frontend"), "/public")
    before = len(os.listdir(fds))
    for who in ["expired", "selfsigned", None] * 5:
        assert refused(strict.inbound, pki.ctx(who))
    for _ in range(5):
        assert refused(strict.inbound, None)
        assert tls_get(strict.inbound, pki.ctx("frontend"), "/public")[0] == 200
    assert wait_for(lambda: len(os.listdir(fds)) <= before, 3), "sockets left open"


def test_source_identity_in_metrics_and_access_log(strict, pki):
    tls_get(strict.inbound, pki.ctx("frontend"), "/public/logged")
    _, text = strict.admin_get("/metrics")
    assert (f'meshc_route_requests_total{{listener="inbound",service="client",route="inbound",'
            f'source_identity="{FRONTEND}",code="200"}}') in text
    assert metric(strict, 'meshc_tls_handshakes_total{side="downstream"}') >= 1
    assert wait_for(lambda: "/public/logged" in (strict.access_log.read_text() if strict.access_log.exists() else ""))
    rec = next(json.loads(x) for x in strict.access_log.read_text().splitlines() if "/public/logged" in x)
    assert rec["peer_identity"] == FRONTEND and rec["direction"] == "inbound"


# ---- permissive inbound -------------------------------------------------------------------------

def test_permissive_takes_plaintext_without_an_identity(permissive, upstreams):
    forged = {"x-forwarded-client-cert": "By=x;URI=" + FRONTEND}
    assert plain_get(permissive.inbound, "/public", headers=forged)[0] == 200
    seen = [r for r in upstreams["app"].requests if r["target"] == "/public"][-1]
    assert not [v for n, v in seen["headers"] if n == "x-forwarded-client-cert"]      # stripped
    # identity rules never match a plaintext peer, and no header can claim an identity here
    assert plain_get(permissive.inbound, "/private/x", headers={"x-peer": FRONTEND})[0] == 403
    assert metric(permissive, "meshc_tls_plaintext_connections_total") >= 2


def test_permissive_checks_tls_peers_as_strict_does(permissive, pki):
    assert tls_get(permissive.inbound, pki.ctx("frontend"), "/private/x")[0] == 200
    assert tls_get(permissive.inbound, pki.ctx("intruder"), "/private/x")[0] == 403
    assert refused(permissive.inbound, pki.ctx("expired"))        # a bad TLS peer never falls back to plaintext
    assert refused(permissive.inbound, pki.ctx(None))


# ---- outbound ------------------------------------------------------------------------------------

def test_outbound_mtls_to_the_right_identity_is_pooled(strict, upstreams):
    good = upstreams["good"]
    conns = good.conns
    for _ in range(3):
        status, body = plain_get(strict.outbound, "/x", host="good")
        assert status == 200, body
        assert json.loads(body)["peer"] == OWN                    # the sidecar presented its identity
    assert good.conns - conns <= 1                                # kept alive and reused
    assert metric(strict, 'meshc_tls_handshakes_total{side="upstream"}') >= 1


@pytest.mark.parametrize("host, reason, stat", [("wrong", "san_mismatch", "fail_verify_san"),
                                                ("foreign", "unknown_ca", "fail_verify_error")])
def test_outbound_refuses_a_server_that_is_not_the_destination(strict, host, reason, stat):
    stats = strict.stats()
    status, body = plain_get(strict.outbound, "/x", host=host)
    assert (status, body) == (503, CONNECT_FAILURE)             # Envoy's reply to a failed SAN match
    after = strict.stats()
    cluster = f"cluster.outbound|v1|{host}"
    assert after[f"{cluster}.upstream_cx_connect_fail"] == stats[f"{cluster}.upstream_cx_connect_fail"] + 1
    handshake_failures = f"tls.upstream.handshake_failure.{reason}"
    assert after[handshake_failures] == stats.get(handshake_failures, 0) + 1
    # Envoy's name: cluster.NAME.ssl.fail_verify_san (tests/test_envoy_mtls.py), in Prometheus too
    assert after[f"{cluster}.ssl.{stat}"] == stats.get(f"{cluster}.ssl.{stat}", 0) + 1
    assert metric(strict, f'envoy_cluster_ssl_{stat}{{envoy_cluster_name="outbound|v1|{host}"}}') == \
        after[f"{cluster}.ssl.{stat}"]


def test_outbound_plaintext_destination_stays_plaintext(strict):
    status, body = plain_get(strict.outbound, "/x", host="plain")
    assert status == 200 and json.loads(body)["backend"] == "plain"


def test_a_retried_answer_with_a_body_closes_its_connection(strict, upstreams):
    """A 503 whose body is still coming is retried on another connection, and its own connection
    is closed, as Envoy resets the stream. Regression: the native proxy drained and pooled it;
    when the body ended while the retry waited for a new connection (an mTLS handshake), the
    retry was handed that connection and sent on it, and the end of the 503's body ended the
    request with no answer to the client (access log: response_code 0)."""
    up = upstreams["retried"]
    up.handshake_delays[:] = [0.0, 0.3]      # the retry's connection is ready after the 503's body ended
    conn = http.client.HTTPConnection("127.0.0.1", strict.outbound, timeout=1.5)
    conn.request("POST", "/r", body=b"b" * 50_000, headers={"Host": "retried", "x-id": "r1"})
    resp = conn.getresponse()
    assert (resp.status, resp.read(), resp.getheader("x-envoy-attempt-count")) == (200, b"ok", "2")
    conn.close()
    first = up.conns - 1
    assert wait_for(lambda: ("closed", first) in up.events, 2)
    # the 503's connection closed without another request on it; the retry went on the next one
    assert up.events[-2:] == [("closed", first), ("answer", first + 1, 200)] or \
        up.events[-2:] == [("answer", first + 1, 200), ("closed", first)], up.events
    assert ("answer", first, 503) in up.events and ("answer", first, 200) not in up.events


# ---- rotation ------------------------------------------------------------------------------------

def test_rotation_under_traffic(strict, pki):
    """Rotate the sidecar's files while clients keep sending on a kept-alive connection and on new
    connections: no request fails, the open connection keeps its handshake, new handshakes get
    the new serial, and upstream connections keep working."""
    old = serial(pki.dirs["client"])
    keep = TlsClient(strict.inbound, pki.ctx("frontend"))
    assert keep.serial == old
    stop = threading.Event()
    failures, serials = [], set()
    counts = {"keep": 0, "new": 0, "out": 0}

    def keepalive():
        while not stop.is_set():
            try:
                status, _ = keep.get("/private/k")
                assert status == 200
                counts["keep"] += 1
            except Exception as err:
                failures.append(("keep", repr(err)))
                return

    def fresh():
        ctx = pki.ctx("frontend")
        while not stop.is_set():
            try:
                c = TlsClient(strict.inbound, ctx)
                serials.add(c.serial)
                assert c.get("/private/n")[0] == 200
                c.close()
                counts["new"] += 1
            except Exception as err:
                failures.append(("new", repr(err)))

    def outbound():
        conn = http.client.HTTPConnection("127.0.0.1", strict.outbound, timeout=10)
        while not stop.is_set():
            try:
                conn.request("GET", "/o", headers={"Host": "good"})
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200
                counts["out"] += 1
            except Exception as err:
                failures.append(("out", repr(err)))
                return
        conn.close()

    rotations = metric(strict, 'meshc_tls_rotations_total{result="ok"}')
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        jobs = [pool.submit(f) for f in (keepalive, fresh, outbound)]
        try:
            time.sleep(0.3)
            rotate(pki.ca_dir, pki.dirs["client"])
            new = serial(pki.dirs["client"])
            assert new != old
            assert wait_for(lambda: new in serials, 5), "new handshakes never got the new certificate"
            time.sleep(0.3)
        finally:
            stop.set()
        for j in jobs:
            j.result(30)
    assert failures == []
    assert min(counts.values()) > 0, counts
    assert serial_hex(keep.conn.sock.getpeercert()) == old   # the open connection kept its handshake
    keep.close()
    assert metric(strict, 'meshc_tls_rotations_total{result="ok"}') == rotations + 1
    assert json.loads(strict.admin_get("/certs")[1])["certificate"]["serial"] == new


def test_rotation_to_a_certificate_of_another_identity_is_refused(strict, pki):
    current = serial(pki.dirs["client"])
    rejected = metric(strict, 'meshc_tls_rotations_total{result="rejected"}')
    issue(pki.ca_dir, pki.dirs["client"], TD + "intruder")      # a valid certificate, but not ours
    try:
        assert wait_for(lambda: metric(strict, 'meshc_tls_rotations_total{result="rejected"}') == rejected + 1)
        assert "identity rotation refused" in strict.log() and "expected `" + OWN + "`" in strict.log()
        assert TlsClient(strict.inbound, pki.ctx("frontend")).serial == current   # still the old one
    finally:
        issue(pki.ca_dir, pki.dirs["client"], OWN)
    assert wait_for(lambda: TlsClient(strict.inbound, pki.ctx("frontend")).serial == serial(pki.dirs["client"]))


# ---- start and reload ------------------------------------------------------------------------------

def start_error(cfg: dict, tmp_path) -> subprocess.CompletedProcess:
    path = write_config(tmp_path / "cfg.json", cfg)
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "runtime_proxy", path], capture_output=True, text=True,
                          timeout=30, env=env, cwd=ROOT)


def test_missing_identity_files_stop_the_start_with_a_message(pki, upstreams, tmp_path):
    cfg = sidecar_config(pki, upstreams, "strict")
    cfg["mtls"]["files"]["key"] = str(tmp_path / "nope" / "key.pem")
    proc = start_error(cfg, tmp_path)
    assert proc.returncode == 1
    assert "cannot use the identity files (mtls): cannot read the private key" in proc.stderr
    assert "No such file or directory" in proc.stderr and "Traceback" not in proc.stderr


def test_a_certificate_of_another_identity_stops_the_start(pki, upstreams, tmp_path):
    cfg = sidecar_config(pki, upstreams, "strict")
    cfg["mtls"]["files"] = pki.files("frontend")
    proc = start_error(cfg, tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"its URI SAN is `{FRONTEND}`, expected `{OWN}`" in proc.stderr


def test_reload_switches_to_other_files_and_refuses_bad_ones(pki, upstreams, tmp_path):
    other = issue(pki.ca_dir, str(tmp_path / "other-client"), OWN)
    cfg = sidecar_config(pki, upstreams, "strict")
    with run_proxy(cfg, tmp_path) as p:
        assert TlsClient(p.inbound, pki.ctx("frontend")).serial == serial(pki.dirs["client"])
        cfg["mtls"]["files"] = {"directory": other, "cert": f"{other}/cert.pem", "key": f"{other}/key.pem",
                                "ca": f"{other}/ca.pem"}
        cfg["version"] = "v2"
        write_config(p.config_path, cfg)
        status, text = p.admin_get("/reload", "POST")
        assert status == 200, text
        assert TlsClient(p.inbound, pki.ctx("frontend")).serial == serial(other)
        cfg["mtls"]["files"]["cert"] = pki.files("frontend")["cert"]     # a key that does not match
        cfg["version"] = "v3"
        write_config(p.config_path, cfg)
        status, text = p.admin_get("/reload", "POST")
        assert status == 400 and "cannot use the identity files" in text
        assert TlsClient(p.inbound, pki.ctx("frontend")).serial == serial(other)


def test_reload_turns_mtls_on_for_a_plaintext_sidecar(pki, upstreams, tmp_path):
    cfg = sidecar_config(pki, upstreams, "disable")
    with run_proxy(cfg, tmp_path) as p:
        assert plain_get(p.inbound, "/public")[0] == 200
        cfg["mtls"]["mode"] = "strict"
        cfg["version"] = "v2"
        write_config(p.config_path, cfg)
        assert p.admin_get("/reload", "POST")[0] == 200
        assert refused(p.inbound, None)
        assert tls_get(p.inbound, pki.ctx("frontend"), "/private/x")[0] == 200


def test_reload_to_strict_ends_plaintext_connections_kept_alive(pki, upstreams, tmp_path):
    cfg = sidecar_config(pki, upstreams, "permissive")
    with run_proxy(cfg, tmp_path) as p:
        kept = http.client.HTTPConnection("127.0.0.1", p.inbound, timeout=10)
        kept.request("GET", "/public", headers={"Host": "client"})
        assert kept.getresponse().read() is not None
        cfg["mtls"]["mode"] = "strict"
        cfg["version"] = "v2"
        write_config(p.config_path, cfg)
        assert p.admin_get("/reload", "POST")[0] == 200
        # The idle plaintext connection is closed: the next request on it gets no response.
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)):
            kept.request("GET", "/public", headers={"Host": "client"})
            kept.getresponse()
        kept.close()
        assert refused(p.inbound, None)
        assert tls_get(p.inbound, pki.ctx("frontend"), "/private/x")[0] == 200


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_a_listener_on_an_ipv6_address_takes_ipv6_clients_only():
    """`::` is IPv6 only, for the mTLS listener (net/listener.py) as for the plaintext ones and
    Envoy's (ipv4_compat false): docs/native-proxy.md."""
    from runtime_proxy.net.listener import listening_socket

    try:
        sock = listening_socket("::", 0)
    except OSError:
        pytest.skip("cannot bind ::")
    port = sock.getsockname()[1]
    try:
        with socket.create_connection(("::1", port), timeout=2):
            pass
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        sock.close()
