"""Mutual TLS compiled for Envoy, run by the real Envoy on real certificates (`meshc ca`'s code,
tests/mtls_support.py), with Python ssl clients and servers on loopback.

One Envoy for the module, run with `--reject-unknown-dynamic-fields`: the sidecar of `api` (mode
`strict`) in the fleet layout, compiled by the CLI with `--certs-dir` (a bootstrap loading its
own CDS and LDS files, which name its SDS files), with the inbound listener of `open` (mode
`permissive`) added to its LDS file, so that both modes run in the same process. Checked:

- strict: a mesh certificate with an allowed ID gets the application, which sees
  `x-forwarded-client-cert: By=<api>;Hash=<SHA-256 of the caller's certificate>;URI=<caller>`;
  another mesh ID gets 403 from RBAC; no certificate, a self-signed one, one of another CA, an
  expired one and plaintext are refused before any HTTP (an alert, EOF or reset: with TLS 1.3 a
  refusal arrives after the client's handshake, at its first read);
- permissive: plaintext gets what rules without `from` allow and 403 where only an identity rule
  would admit; mTLS peers are told apart as on strict; a bad certificate is still refused;
- W0702: a rule on `x-forwarded-client-cert` sees the value Envoy sets on an mTLS connection;
- outbound: `api` presents its own certificate, checks the server's SPIFFE ID (a server with
  another ID: 503, a SAN verification failure) and speaks plaintext to a `disable` destination;
- rotation: `meshc ca`'s rotation of `api`'s identity (one rename of `..data`) under load on
  keep-alive and new connections, inbound and outbound: no failure, new handshakes get the new
  certificate.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests import mtls_support as mtls
from tests.envoy_support import Backend, Envoy, free_port, request, requires_envoy, run_meshc

pytestmark = requires_envoy

TD = "mesh.local"
POLICY = """
mesh { trust_domain "mesh.local"  mtls strict }

service api {
  port 8000
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @API_IN@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" }
}
service open {
  port 8001
  mtls permissive
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @OPEN_IN@  app "127.0.0.1:@APP@" }
}
service web { port 8002  endpoints ["127.0.0.1:1"] }             # a caller the rules admit
service intruder { port 8003  endpoints ["127.0.0.1:1"] }        # a mesh identity they do not
service good { port 8004  endpoints ["127.0.0.1:@GOOD@"] }       # a server with its own identity
service impostor { port 8005  endpoints ["127.0.0.1:@IMPOSTOR@"] }  # a server with web's identity
service legacy { port 8006  mtls disable  endpoints ["127.0.0.1:@LEGACY@"] }

authorization api { default deny  allow web { from service web } }
authorization open {
  default deny
  allow web { from service web }
  allow health { path exact "/health" }
  deny cert_header { path exact "/health"  header "x-forwarded-client-cert" present }  # W0702
}
"""


def spiffe(name: str) -> str:
    return f"spiffe://{TD}/ns/default/sa/{name}"


class TlsServer:
    """An HTTP/1.0 server (one request per connection, so each call is a new handshake) on
    loopback, presenting an identity directory and requiring a client certificate of the mesh
    CA. Records, per request, the client's verified ID and certificate serial, the TLS version
    and the SNI."""

    def __init__(self, cert_dir: str, ca_file: str):
        self.seen: list[dict] = []
        self.sni: list[str | None] = []
        self.failures: list[str] = []
        ctx = mtls.server_context(cert_dir, ca_file)
        ctx.sni_callback = lambda sock, name, _ctx: self.sni.append(name)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                der = self.request.getpeercert(True)
                server.seen.append({"peer": mtls.peer_id(self.request), "version": self.request.version(),
                                    "serial": _serial(der) if der else None})
                body = b"tls backend"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, addr = self.socket.accept()
                # the handshake runs in the request's thread, on its first read
                return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

            def handle_error(self, request, client_address):
                import sys
                server.failures.append(repr(sys.exc_info()[1]))

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _serial(der: bytes) -> str:
    from cryptography import x509

    return format(x509.load_der_x509_certificate(der).serial_number, "x")


class Mesh:
    """The certificates, the backends, the compiled policy and the running Envoy."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.ca = mtls.make_ca(str(tmp / "ca"), TD)
        self.ca_file = os.path.join(self.ca, "ca.pem")
        self.certs = str(tmp / "certs")
        for name in ("api", "open", "web", "intruder", "good"):
            mtls.issue(self.ca, os.path.join(self.certs, name), spiffe(name))
        self.bad = mtls.bad_certs(self.ca, str(tmp / "bad"), spiffe("web"))  # each claims an admitted ID
        self.app, self.legacy = Backend("app"), Backend("legacy")
        self.good = TlsServer(self.cert("good"), self.ca_file)
        self.impostor = TlsServer(self.cert("web"), self.ca_file)  # a valid certificate, of the wrong service
        ports = {"API_IN": free_port(), "OUTBOUND": free_port(), "ADMIN": free_port(), "OPEN_IN": free_port(),
                 "APP": self.app.port, "GOOD": self.good.port, "IMPOSTOR": self.impostor.port,
                 "LEGACY": self.legacy.port}
        text = POLICY
        for key, value in ports.items():
            text = text.replace(f"@{key}@", str(value))
        (tmp / "mtls.mesh").write_text(text)
        out = tmp / "out"
        proc = run_meshc("compile", str(tmp / "mtls.mesh"), "--target", "envoy", "--proxy", "api", "--proxy", "open",
                         "--bootstrap", "xds", "--certs-dir", self.certs, "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        self.compile_output = proc.stderr
        # `open`'s inbound listener joins `api`'s LDS file, and its local cluster `api`'s CDS file
        # (a sidecar's CDS holds its own local cluster only).
        cds_path = out / "xds" / "api" / "cds.json"
        cds = json.loads(cds_path.read_text())
        theirs = json.loads((out / "xds" / "open" / "cds.json").read_text())["resources"]
        cds["resources"].append(next(c for c in theirs if c["name"] == "inbound|open"))
        cds_path.write_text(json.dumps(cds))
        lds_path = out / "xds" / "api" / "lds.json"
        lds = json.loads(lds_path.read_text())
        other = json.loads((out / "xds" / "open" / "lds.json").read_text())["resources"]
        lds["resources"].append({**next(x for x in other if x["name"] == "inbound"), "name": "open.inbound"})
        lds_path.write_text(json.dumps(lds))
        self.envoy = Envoy(str(out / "api.envoy.json"), "--reject-unknown-dynamic-fields")
        listeners = self.envoy.listener_ports()
        assert listeners == {"inbound": ports["API_IN"], "outbound": ports["OUTBOUND"],
                             "open.inbound": ports["OPEN_IN"]}
        self.strict, self.outbound, self.permissive = ports["API_IN"], ports["OUTBOUND"], ports["OPEN_IN"]

    def cert(self, name: str) -> str:
        return os.path.join(self.certs, name)

    def close(self):
        self.envoy.stop()
        for b in (self.app, self.legacy, self.good, self.impostor):
            b.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = Mesh(tmp_path_factory.mktemp("envoy-mtls"))
    yield m
    m.close()


def https(mesh, port: int, cert_dir: str | None, path: str = "/x", headers: dict | None = None):
    """One request over mTLS presenting `cert_dir`'s identity: (status, headers, body, server serial)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                       context=mtls.client_context(cert_dir, mesh.ca_file))
    try:
        conn.request("GET", path, headers={"host": "api", **(headers or {})})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, _serial(conn.sock.getpeercert(True))
    finally:
        conn.close()


def refusal(mesh, port: int, cert_dir: str | None, tls: bool = True) -> str | None:
    """How the connection ended when the request got no HTTP answer (an alert, an EOF or a
    reset: with TLS 1.3 the server's verdict on the client certificate arrives after the client's
    handshake, so it is seen on a read); None when an HTTP answer came."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            sock = mtls.client_context(cert_dir, mesh.ca_file).wrap_socket(raw) if tls else raw
            sock.sendall(b"GET /x HTTP/1.1\r\nhost: api\r\n\r\n")
            data = sock.recv(64)
    except (ssl.SSLError, ConnectionError) as e:
        return f"{type(e).__name__}: {e}"
    return "EOF" if data == b"" else None


def xfcc(mesh, path: str) -> list[str] | None:
    hits = mesh.app.hits_for(path)
    assert len(hits) == 1, hits
    return hits[0]["headers"].get("x-forwarded-client-cert")


def cert_hash(cert_dir: str) -> str:
    with open(os.path.join(cert_dir, "cert.pem"), "rb") as fh:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(fh.read().decode())).hexdigest()


# ---- strict ---------------------------------------------------------------------------------------

def test_strict_admits_an_allowed_identity_and_tells_the_application(mesh):
    status, _, _, served = https(mesh, mesh.strict, mesh.cert("web"), "/strict/ok",
                                 {"x-forwarded-client-cert": "By=spiffe://forged;URI=spiffe://forged"})
    assert status == 200
    assert served == mtls.serial(mesh.cert("api"))  # the sidecar presents its own identity
    assert xfcc(mesh, "/strict/ok") == [f"By={spiffe('api')};Hash={cert_hash(mesh.cert('web'))};URI={spiffe('web')}"]


def test_strict_denies_another_mesh_identity(mesh):
    status, _, body, _ = https(mesh, mesh.strict, mesh.cert("intruder"), "/strict/intruder")
    assert (status, body) == (403, b"RBAC: access denied")
    assert mesh.app.hits_for("/strict/intruder") == []


@pytest.mark.parametrize("client", ["none", "selfsigned", "other_ca", "expired", "plaintext"])
def test_strict_refuses_before_http(mesh, client):
    cert_dir = None if client in ("none", "plaintext") else mesh.bad[client]
    assert refusal(mesh, mesh.strict, cert_dir, tls=client != "plaintext") is not None


def test_refusals_are_counted_by_envoy(mesh):
    prefix = f"listener.127.0.0.1_{mesh.strict}.ssl.fail_verify"
    before = mesh.envoy.stats(prefix)
    for cert_dir in (None, mesh.bad["selfsigned"], mesh.bad["other_ca"], mesh.bad["expired"]):
        assert refusal(mesh, mesh.strict, cert_dir) is not None
    after = mesh.envoy.stats(prefix)
    assert after[prefix + "_no_cert"] - before.get(prefix + "_no_cert", 0) == 1
    assert after[prefix + "_error"] - before.get(prefix + "_error", 0) == 3
    # plaintext on the TLS port: ssl.connection_error (the native proxy's `not_tls` maps to it)
    errors = f"listener.127.0.0.1_{mesh.strict}.ssl.connection_error"
    before_errors = mesh.envoy.stats(errors).get(errors, 0)
    assert refusal(mesh, mesh.strict, None, tls=False) is not None
    deadline = time.monotonic() + 3
    while mesh.envoy.stats(errors).get(errors, 0) == before_errors and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mesh.envoy.stats(errors)[errors] == before_errors + 1


# ---- permissive -----------------------------------------------------------------------------------

def test_permissive_plaintext_has_no_identity(mesh):
    status, _, _ = request(mesh.permissive, "/health", headers={"x-forwarded-client-cert": f"URI={spiffe('web')}"})
    assert status == 200  # a rule without `from` admits anyone; `cert_header` never saw the forged header
    assert xfcc(mesh, "/health") is None  # it was removed, not passed on
    status, _, body = request(mesh.permissive, "/open/plain",
                              headers={"x-forwarded-client-cert": f"URI={spiffe('web')}"})
    assert (status, body) == (403, b"RBAC: access denied")  # only an identity rule would admit it


def test_a_rule_on_the_client_certificate_header_sees_envoys_value(mesh):
    """Why W0702 warns about `x-forwarded-client-cert` in the rules of an mTLS service: Envoy
    writes the header before authorization on an mTLS connection (it removes it on a plaintext
    one: the forged header above passed the same rule)."""
    assert "rule `cert_header` of `open` tests header `x-forwarded-client-cert`, which Envoy sets from " \
           "the caller's certificate before authorization on an mTLS connection" in mesh.compile_output
    status, _, body, _ = https(mesh, mesh.permissive, mesh.cert("web"), "/health")
    assert (status, body) == (403, b"RBAC: access denied")


def test_permissive_tells_mtls_peers_apart(mesh):
    status, _, _, _ = https(mesh, mesh.permissive, mesh.cert("web"), "/open/web")
    assert status == 200
    assert xfcc(mesh, "/open/web") == [f"By={spiffe('open')};Hash={cert_hash(mesh.cert('web'))};URI={spiffe('web')}"]
    assert https(mesh, mesh.permissive, mesh.cert("intruder"), "/open/intruder")[0] == 403


@pytest.mark.parametrize("client", ["none", "expired", "other_ca"])
def test_permissive_never_falls_back_to_plaintext_for_a_bad_certificate(mesh, client):
    assert refusal(mesh, mesh.permissive, None if client == "none" else mesh.bad[client]) is not None


# ---- outbound -------------------------------------------------------------------------------------

def test_outbound_presents_the_sidecars_identity_and_checks_the_servers(mesh):
    status, _, body = request(mesh.outbound, "/out", headers={"host": "good"})
    assert (status, body) == (200, b"tls backend")
    seen = mesh.good.seen[-1]
    assert seen["peer"] == spiffe("api") and seen["version"] == "TLSv1.3"
    assert mesh.good.sni[-1] == "good.default"


def test_outbound_refuses_a_server_with_another_identity(mesh):
    status, _, body = request(mesh.outbound, "/out", headers={"host": "impostor"})
    assert status == 503
    assert body.startswith(b"upstream connect error or disconnect/reset before headers")
    assert mesh.impostor.seen == []  # no request was sent to it
    stats = mesh.envoy.stats("cluster.outbound|default|impostor.ssl.fail_verify_san")
    assert stats["cluster.outbound|default|impostor.ssl.fail_verify_san"] >= 1


def test_outbound_speaks_plaintext_to_a_disabled_destination(mesh):
    status, _, _ = request(mesh.outbound, "/legacy", headers={"host": "legacy"})
    assert status == 200 and len(mesh.legacy.hits_for("/legacy")) == 1


# ---- rotation (last: it changes api's certificate) -----------------------------------------------

def test_rotation_under_load_loses_nothing(mesh):
    old = mtls.serial(mesh.cert("api"))
    stop = threading.Event()
    results: dict[str, list] = {"keepalive": [], "new": [], "outbound": []}
    errors: list[str] = []

    def keepalive():
        conn = http.client.HTTPSConnection("127.0.0.1", mesh.strict, timeout=5,
                                           context=mtls.client_context(mesh.cert("web"), mesh.ca_file))
        try:
            while not stop.is_set():
                conn.request("GET", "/rotate/keepalive", headers={"host": "api"})
                resp = conn.getresponse()
                resp.read()
                results["keepalive"].append((resp.status, _serial(conn.sock.getpeercert(True))))
        finally:
            conn.close()

    def new_connections():
        while not stop.is_set():
            status, _, _, served = https(mesh, mesh.strict, mesh.cert("web"), "/rotate/new")
            results["new"].append((status, served))

    def outbound():
        while not stop.is_set():
            count = len(mesh.good.seen)
            status, _, _ = request(mesh.outbound, "/rotate/out", headers={"host": "good"})
            served_serial = mesh.good.seen[count]["serial"] if len(mesh.good.seen) > count else None
            results["outbound"].append((status, served_serial))

    def guarded(fn):
        def run():
            try:
                fn()
            except Exception as e:  # any failure fails the test
                errors.append(f"{fn.__name__}: {e!r}")
        return run

    threads = [threading.Thread(target=guarded(f)) for f in (keepalive, new_connections, outbound)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        mtls.rotate(mesh.ca, mesh.cert("api"))
        new = mtls.serial(mesh.cert("api"))
        assert new != old
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (results["new"] and results["new"][-1][1] == new and
                                                   results["outbound"] and results["outbound"][-1][1] == new):
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors
    for kind, got in results.items():
        assert got and all(status == 200 for status, _ in got), (kind, [r for r in got if r[0] != 200][:5])
    # New handshakes, inbound (Envoy's server certificate) and outbound (its client certificate),
    # switch to the new certificate and stay there; the keep-alive connection keeps its own.
    for kind in ("new", "outbound"):
        serials = [s for _, s in results[kind]]
        assert serials[0] == old and serials[-1] == new, kind
        switch = serials.index(new)
        assert set(serials[:switch]) == {old} and set(serials[switch:]) == {new}, kind
    assert {s for _, s in results["keepalive"]} == {old}
    assert len(results["keepalive"]) > 10
