"""Certificates over SDS and the trust model of the xDS channel (`meshc serve --ca`, issue 14,
docs/control-plane.md "Certificates over SDS"): real Envoy 1.40, real grpc, real sockets, no mocks.

The fleet: `api` (authorization: only `web` may call) and `web`, both `mtls strict`, each an Envoy
started from `meshc compile --bootstrap ads --xds-identity` (its identity directory from `meshc ca`'s
code, tests/mtls_support.py) against `meshc serve --ca` with certificates of 7.2 s (`--cert-hours
0.002`): every certificate is replaced after 4.8 s, so the whole module runs across rotations.
Checked:

- each Envoy holds its own certificate (its service's SPIFFE ID) and the CA, inline from SDS,
  and web -> api through both sidecars gets the application with web's verified identity, while
  an `intruder` certificate of the same CA gets 403 from api's RBAC: authorization by identity as
  from files;
- a raw grpc client with web's identity claiming node `api` gets PERMISSION_DENIED and nothing
  else; claiming `web` it gets web's certificate, never api's; a client without a certificate, with
  a certificate of another CA, or in plaintext cannot connect;
- `meshc status --identity DIR` works against the TLS server (exit 0) and without `--identity`
  exits 2 with a hint;
- rotation under load: requests through the sidecars and new mTLS handshakes to api's inbound
  keep succeeding (0 failures) while the server pushes new certificates; Envoy's `/certs` shows
  the new serials, and new handshakes present them; neither Envoy restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from compiler.control.snapshot import CLUSTER, SECRET
from tests import mtls_support as mtls
from tests.envoy_support import Backend, Envoy, free_port, free_ports, request, requires_envoy, run_meshc, validate
from tests.test_control_plane import RawClient, Serve

TD = "mesh.local"
POLICY = """
mesh { trust_domain "mesh.local"  mtls strict }

service api {
  port 8000
  endpoints ["127.0.0.1:@API_IN@"]
  sidecar { inbound @API_IN@  outbound @API_OUT@  admin @API_ADMIN@  app "127.0.0.1:@APP@" }
}
service web {
  port 8001
  endpoints ["127.0.0.1:@WEB_IN@"]
  sidecar { inbound @WEB_IN@  outbound @WEB_OUT@  admin @WEB_ADMIN@  app "127.0.0.1:@APP@" }
}
service intruder { port 8002  endpoints ["127.0.0.1:1"] }

authorization api { default deny  allow web { from service web } }
"""
CERT_HOURS = 0.002   # 7.2 s: replaced after 4.8 s
API_HOST = {"host": "api:8000"}


def spiffe(name: str) -> str:
    return f"spiffe://{TD}/ns/default/sa/{name}"


def write_policy(path: Path, ports: dict) -> Path:
    text = POLICY
    for key, value in ports.items():
        text = text.replace(f"@{key}@", str(value))
    path.write_text(text)
    return path


def creds(identity: str | None, ca_file: str) -> grpc.ChannelCredentials:
    with open(ca_file, "rb") as fh:
        ca = fh.read()
    if identity is None:
        return grpc.ssl_channel_credentials(ca)
    key, cert = (Path(identity, n).read_bytes() for n in ("key.pem", "cert.pem"))
    return grpc.ssl_channel_credentials(ca, key, cert)


def inline_certs(envoy: Envoy) -> list[dict]:
    """The certificates Envoy's TLS contexts hold from SDS (inline), not the files of the channel's own."""
    data = json.loads(envoy.admin("/certs"))
    return [c for ctx in data["certificates"] for c in ctx.get("cert_chain", []) if c.get("path") == "<inline>"]


def serials(envoy: Envoy) -> set[int]:
    return {int(c["serial_number"], 16) for c in inline_certs(envoy)}


def control_serial(port: int, identity: str, ca_file: str) -> int:
    """The serial of the certificate `meshc serve` presents on a new handshake (TLS to
    `meshc-control`, ALPN h2, with a client certificate)."""
    ctx = mtls.client_context(identity, ca_file)
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="meshc-control") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(True)).serial_number


def served_serial(port: int, identity: str, ca_file: str) -> tuple[int, int]:
    """One mTLS request to a sidecar's inbound on a new handshake: (status, the server certificate's serial)."""
    ctx = mtls.client_context(identity, ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        serial = x509.load_der_x509_certificate(tls.getpeercert(True)).serial_number
        tls.sendall(b"GET /direct HTTP/1.1\r\nhost: api:8000\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), serial


class Fleet:
    def __init__(self, tmp: Path):
        self.app = Backend("app")
        self.ports = dict(zip(("API_IN", "API_OUT", "API_ADMIN", "WEB_IN", "WEB_OUT", "WEB_ADMIN"), free_ports(6)),
                          APP=self.app.port)
        self.path = write_policy(tmp / "fleet.mesh", self.ports)
        self.ca = mtls.make_ca(str(tmp / "ca"), TD)
        self.ca_file = os.path.join(self.ca, "ca.pem")
        self.ids = {n: mtls.issue(self.ca, str(tmp / "ids" / n), spiffe(n)) for n in ("api", "web", "intruder")}
        self.serve = Serve(str(self.path), args=("--ca", self.ca, "--cert-hours", str(CERT_HOURS)))
        self.envoys: dict[str, Envoy] = {}
        for name in ("api", "web"):
            proc = run_meshc("compile", str(self.path), "--target", "envoy", "--proxy", name, "--bootstrap", "ads",
                             "--xds-server", f"127.0.0.1:{self.serve.port}", "--xds-identity", self.ids[name],
                             "-o", str(tmp / "boot"))
            assert proc.returncode == 0, proc.stderr
            self.envoys[name] = Envoy(str(tmp / "boot" / f"{name}.envoy.json"), "--reject-unknown-dynamic-fields")
        self.wait(lambda: all(len(inline_certs(e)) >= 2 for e in self.envoys.values()), "certificates over SDS")
        self.pids = {n: e.proc.pid for n, e in self.envoys.items()}

    def wait(self, condition, what: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"no {what}: {''.join(self.serve.lines)}"
            time.sleep(0.05)

    def call(self) -> tuple[int, bytes]:
        status, _, body = request(self.ports["WEB_OUT"], "/via-web", headers=API_HOST)
        return status, body

    def close(self):
        for envoy in self.envoys.values():
            envoy.stop()
        code = self.serve.stop()
        self.app.close()
        assert code == 0, "".join(self.serve.lines)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    f = Fleet(tmp_path_factory.mktemp("sds"))
    yield f
    f.close()


@requires_envoy
def test_each_envoy_gets_its_own_certificate_over_sds_and_authorization_by_identity_works(fleet):
    for name, envoy in fleet.envoys.items():
        sans = {san["uri"] for c in inline_certs(envoy) for san in c["subject_alt_names"] if "uri" in san}
        assert sans == {spiffe(name)}, (name, sans)
        secrets = [s for d in json.loads(envoy.admin("/config_dump"))["configs"]
                   for s in d.get("dynamic_active_secrets", [])]
        assert {s["name"] for s in secrets} == {"identity", "mesh_ca"}
        ca = next(s for s in secrets if s["name"] == "mesh_ca")["secret"]["validation_context"]["trusted_ca"]
        assert "inline_bytes" in ca and "filename" not in ca   # from SDS, no file on the proxy's host
    status, body = fleet.call()
    assert status == 200, body
    hit = json.loads(body)
    assert hit["path"] == "/via-web"
    assert f"URI={spiffe('web')}" in hit["headers"]["x-forwarded-client-cert"][0]   # api's Envoy verified web
    # another identity of the same CA, straight to api's inbound: refused by api's RBAC
    assert served_serial(fleet.ports["API_IN"], fleet.ids["intruder"], fleet.ca_file)[0] == 403
    assert served_serial(fleet.ports["API_IN"], fleet.ids["web"], fleet.ca_file)[0] == 200


@requires_envoy
def test_a_client_claiming_another_nodes_id_gets_permission_denied_and_nothing(fleet):
    claims_api = RawClient(fleet.serve.port, creds(fleet.ids["web"], fleet.ca_file))
    try:
        claims_api.send(SECRET, node="api", names=["identity"])
        with pytest.raises(grpc.RpcError) as err:
            claims_api.receive()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "node 'api'" in err.value.details() and spiffe("web") in err.value.details()
        assert claims_api.responses.empty()   # nothing was sent before the error
    finally:
        claims_api.close()
    # its own node: its own certificate and key, never api's
    own = RawClient(fleet.serve.port, creds(fleet.ids["web"], fleet.ca_file))
    try:
        own.send(CLUSTER, node="web")
        clusters = own.receive()
        own.send(CLUSTER, version=clusters.version_info, nonce=clusters.nonce)
        own.send(SECRET, names=["identity", "mesh_ca"])
        response = own.receive()
        assert response.type_url == SECRET
        found = {}
        for packed in response.resources:
            secret = secret_pb2.Secret()
            packed.Unpack(secret)
            found[secret.name] = secret
        cert = x509.load_pem_x509_certificate(found["identity"].tls_certificate.certificate_chain.inline_bytes)
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.UniformResourceIdentifier)
        assert uris == [spiffe("web")]
        assert b"PRIVATE KEY" in found["identity"].tls_certificate.private_key.inline_bytes
        assert found["mesh_ca"].validation_context.trusted_ca.inline_bytes == Path(fleet.ca_file).read_bytes()
    finally:
        own.close()


@requires_envoy
@pytest.mark.parametrize("client", ["no certificate", "another CA", "plaintext"])
def test_a_client_without_a_certificate_of_the_ca_cannot_connect(fleet, tmp_path, client):
    if client == "plaintext":
        raw = RawClient(fleet.serve.port)
    elif client == "no certificate":
        raw = RawClient(fleet.serve.port, creds(None, fleet.ca_file))
    else:
        other = mtls.make_ca(str(tmp_path / "other"), TD)
        ident = mtls.issue(other, str(tmp_path / "other-web"), spiffe("web"))
        raw = RawClient(fleet.serve.port, creds(ident, fleet.ca_file))
    try:
        raw.send(CLUSTER, node="web")
        with pytest.raises(grpc.RpcError) as err:
            raw.receive()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
    finally:
        raw.close()


@requires_envoy
def test_meshc_status_talks_mtls_with_an_identity(fleet):
    fleet.wait(lambda: run_meshc("status", "--server", f"127.0.0.1:{fleet.serve.port}", "--identity",
                                 fleet.ids["intruder"]).returncode == 0, "status exit 0")
    proc = run_meshc("status", "--server", f"127.0.0.1:{fleet.serve.port}", "--identity", fleet.ids["intruder"],
                     "--format", "json")
    data = json.loads(proc.stdout)
    assert {s["node"] for s in data["streams"]} == {"api", "web"}
    assert set(data["certificates"]["nodes"]) == {"api", "web"}   # issued for the nodes connected, lazily
    assert data["certificates"]["server"]["spiffe_id"] == f"spiffe://{TD}/meshc/control"
    assert "PRIVATE" not in proc.stdout
    human = run_meshc("status", "--server", f"127.0.0.1:{fleet.serve.port}", "--identity", fleet.ids["intruder"])
    assert f"certificates: 2 issued from the CA of {TD}, valid {CERT_HOURS:g} h" in human.stdout, human.stdout
    plain = run_meshc("status", "--server", f"127.0.0.1:{fleet.serve.port}")
    assert plain.returncode == 2 and "give --identity DIR" in plain.stderr, plain.stderr


@requires_envoy
def test_a_rotation_is_pushed_under_load_with_no_failed_request_and_no_restart(fleet):
    before = {n: serials(e) for n, e in fleet.envoys.items()}
    api_before = served_serial(fleet.ports["API_IN"], fleet.ids["web"], fleet.ca_file)[1]
    control_before = control_serial(fleet.serve.port, fleet.ids["web"], fleet.ca_file)
    failures: list[str] = []
    counts = {"mesh": 0, "direct": 0}
    presented: set[int] = set()   # the serials api's Envoy presented to the new handshakes
    stop = threading.Event()

    def through_sidecars():
        while not stop.is_set():
            try:
                status, body = fleet.call()
                if status != 200:
                    failures.append(f"{status} {body[:100]!r}")
            except OSError as err:
                failures.append(repr(err))
            counts["mesh"] += 1

    def new_handshakes():   # a new mTLS handshake with api's Envoy each time
        while not stop.is_set():
            try:
                status, serial = served_serial(fleet.ports["API_IN"], fleet.ids["web"], fleet.ca_file)
                presented.add(serial)
                if status != 200:
                    failures.append(f"direct {status}")
            except (OSError, ssl.SSLError) as err:
                failures.append(repr(err))
            counts["direct"] += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=through_sidecars), threading.Thread(target=new_handshakes)]
    for t in threads:
        t.start()
    try:
        fleet.wait(lambda: all(not (serials(e) & before[n]) for n, e in fleet.envoys.items()),
                   "new serials in both Envoys", timeout=15)
        # traffic goes on over the new certificates, until a new handshake has seen api's new one
        fleet.wait(lambda: bool(presented - {api_before}), "a handshake with api's new certificate", timeout=10)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    # the load spans the rotation (the Envoys' serials changed while it ran), and new handshakes saw a new one
    assert presented - {api_before}, (api_before, presented)
    assert counts["mesh"] > 20 and counts["direct"] >= 2, counts
    # new handshakes present the new certificate (the one Envoy holds just before or just after:
    # certificates keep rotating every 4.8 s)
    held_before = serials(fleet.envoys["api"])
    api_after = served_serial(fleet.ports["API_IN"], fleet.ids["web"], fleet.ca_file)[1]
    held_after = serials(fleet.envoys["api"])
    assert api_after != api_before and api_after in held_before | held_after, (api_after, held_before, held_after)
    assert {n: e.proc.pid for n, e in fleet.envoys.items()} == fleet.pids
    assert all(e.proc.poll() is None for e in fleet.envoys.values())
    assert any("rotated" in line for line in fleet.serve.lines)
    # the server's own certificate is rotated too (every 4.8 s, not in step with the sidecars'):
    # once it has been, new handshakes get the new one
    def status_serial() -> int:
        proc = run_meshc("status", "--server", f"127.0.0.1:{fleet.serve.port}", "--identity", fleet.ids["web"],
                         "--format", "json")
        return int(json.loads(proc.stdout)["certificates"]["server"]["serial"], 16)

    fleet.wait(lambda: status_serial() != control_before, "rotation of the server's certificate", timeout=15)
    reported_before = status_serial()
    control_after = control_serial(fleet.serve.port, fleet.ids["web"], fleet.ca_file)
    reported_after = status_serial()
    assert control_after != control_before
    assert control_after in (reported_before, reported_after), (control_after, reported_before, reported_after)


# ---- the bootstrap and the command line (no Envoy running) ----------------------------------------

def test_an_xds_identity_bootstrap_is_mtls_to_meshc_control_and_validates(tmp_path):
    ports = dict(zip(("API_IN", "API_OUT", "API_ADMIN", "WEB_IN", "WEB_OUT", "WEB_ADMIN", "APP"), free_ports(7)))
    path = write_policy(tmp_path / "fleet.mesh", ports)
    ca = mtls.make_ca(str(tmp_path / "ca"), TD)
    ident = mtls.issue(ca, str(tmp_path / "ids" / "web"), spiffe("web"))
    proc = run_meshc("compile", str(path), "--target", "envoy", "--proxy", "web", "--bootstrap", "ads",
                     "--xds-server", "127.0.0.1:18000", "--xds-identity", ident, "-o", str(tmp_path / "boot"))
    assert proc.returncode == 0, proc.stderr
    boot = json.loads((tmp_path / "boot" / "web.envoy.json").read_text())
    tls = boot["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert tls["sni"] == "meshc-control"
    common = tls["common_tls_context"]
    assert common["tls_certificates"] == [{"certificate_chain": {"filename": f"{ident}/cert.pem"},
                                           "private_key": {"filename": f"{ident}/key.pem"}}]
    assert common["validation_context"]["trusted_ca"] == {"filename": f"{ident}/ca.pem"}
    assert common["validation_context"]["match_typed_subject_alt_names"] == \
        [{"matcher": {"exact": f"spiffe://{TD}/meshc/control"}, "san_type": "URI"}]
    ok, out = validate(str(tmp_path / "boot" / "web.envoy.json"))
    assert ok, out
    # several proxies: DIR is a root, each sidecar's identity is DIR/SERVICE
    proc = run_meshc("compile", str(path), "--target", "envoy", "--proxy", "all", "--bootstrap", "ads",
                     "--xds-server", "127.0.0.1:18000", "--xds-identity", str(tmp_path / "ids"),
                     "-o", str(tmp_path / "all"))
    assert proc.returncode == 0, proc.stderr
    for name in ("api", "web", "intruder"):
        boot = json.loads((tmp_path / "all" / f"{name}.envoy.json").read_text())
        common = boot["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"]
        assert common["tls_certificates"][0]["private_key"] == {"filename": f"{tmp_path}/ids/{name}/key.pem"}


def test_usage_errors_of_the_certificate_options(tmp_path):
    ports = dict(zip(("API_IN", "API_OUT", "API_ADMIN", "WEB_IN", "WEB_OUT", "WEB_ADMIN", "APP"), free_ports(7)))
    path = str(write_policy(tmp_path / "fleet.mesh", ports))
    compile_args = ("compile", path, "--target", "envoy", "--proxy", "web")
    for args, message in [
        ((*compile_args, "--xds-identity", "/ids/web"), "--xds-identity is for --bootstrap ads"),
        ((*compile_args, "--bootstrap", "ads", "--xds-server", "127.0.0.1:1", "--xds-identity", "ids/web"),
         "--xds-identity must be an absolute path"),
        (("serve", path, "--cert-hours", "1"), "--cert-hours is for --ca"),
        (("serve", path, "--ca", str(tmp_path / "none")), "no such CA directory"),
    ]:
        proc = run_meshc(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
    ca = mtls.make_ca(str(tmp_path / "ca"), TD)
    proc = run_meshc("serve", path, "--ca", ca, "--cert-hours", "0")
    assert proc.returncode == 2 and "--cert-hours 0: not a number of hours > 0" in proc.stderr, proc.stderr
    # a lifetime shorter than the rotation loop can keep up with (it wakes once a second)
    proc = run_meshc("serve", path, "--ca", ca, "--cert-hours", "0.0001")
    assert proc.returncode == 2 and "--cert-hours 0.0001: at least 0.001 (3.6 s" in proc.stderr, proc.stderr
    # a CA of another trust domain cannot issue the program's identities: exit 1, before serving
    other = mtls.make_ca(str(tmp_path / "other"), "other.local")
    proc = run_meshc("serve", path, "--ca", other, "--listen", f"127.0.0.1:{free_port()}")
    assert proc.returncode == 1, proc.stderr
    assert "api: cannot issue its certificate from --ca" in proc.stderr and "other.local" in proc.stderr, proc.stderr


# ---- the issuer in process (a real CA directory, no sockets) ----------------------------------------

def test_the_issuer_serves_no_file_secret_issues_per_node_and_rotates_at_two_thirds(tmp_path):
    from compiler import api
    from compiler.control import sds, snapshot

    ports = dict(zip(("API_IN", "API_OUT", "API_ADMIN", "WEB_IN", "WEB_OUT", "WEB_ADMIN", "APP"), free_ports(7)))
    base = snapshot.build_all(api.compile([str(write_policy(tmp_path / "fleet.mesh", ports))]))
    assert "filename" in base["api"].json[SECRET]["identity"]["tls_certificate"]["certificate_chain"]   # the backend's
    issuer = sds.Issuer(mtls.make_ca(str(tmp_path / "ca"), TD), hours=1)
    assert issuer.check(base) == []
    assert issuer.server.spiffe_id == f"spiffe://{TD}/meshc/control"
    served = issuer.apply(base)
    assert all(s.json[SECRET] == {} for s in served.values())   # nothing issued: no secret, never a file
    held = issuer.issue("api", spiffe("api"))
    assert issuer.issue("api", spiffe("api")) is held             # one per node, kept while not due
    assert abs((held.rotate_at - held.issued_at) - 3600 * 2 / 3) < 1
    api_secrets = issuer.overlay(base["api"]).json[SECRET]
    assert json.dumps(api_secrets).count("filename") == 0
    assert set(api_secrets) == {"identity", "mesh_ca"}
    assert issuer.overlay(base["web"]).json[SECRET] == {}         # web not admitted yet
    assert issuer.overlay(base["api"]).versions[SECRET] != served["api"].versions[SECRET]
    # at 2/3 of the lifetime: a new certificate, the same SPIFFE ID; a node with no stream is dropped instead
    issuer.issue("web", spiffe("web"))
    later = held.rotate_at + 1
    assert issuer.drop_due(later, keep={"api"}) == ["web"] and "web" not in issuer.issued
    assert issuer.rotate_due(later) == ["api"]
    assert issuer.issued["api"].serial != held.serial and issuer.issued["api"].spiffe_id == spiffe("api")
    assert issuer.rotations == 2   # api's and the server's own (issued at the same time, due at the same time)
    # a program whose identities are not the CA's trust domain, or that claims the control plane's ID
    other = sds.Issuer(mtls.make_ca(str(tmp_path / "other"), "other.local"))
    assert any("api: cannot issue" in p for p in other.check(base))
    base["web"].identity = f"spiffe://{TD}/meshc/control"
    assert "web: identity spiffe://mesh.local/meshc/control is the control plane's own SPIFFE ID" in issuer.check(base)


def test_an_edit_that_changes_a_nodes_identity_ends_its_streams(tmp_path):
    """A stream was admitted as web; an edit gives web another SPIFFE ID: at the publish, that
    stream (whose client certificate is the old identity) ends with PERMISSION_DENIED instead of
    receiving the new identity's certificate."""
    ports = dict(zip(("API_IN", "API_OUT", "API_ADMIN", "WEB_IN", "WEB_OUT", "WEB_ADMIN", "APP"), free_ports(7)))
    path = write_policy(tmp_path / "fleet.mesh", ports)
    ca = mtls.make_ca(str(tmp_path / "ca"), TD)
    web = mtls.issue(ca, str(tmp_path / "ids" / "web"), spiffe("web"))
    serve = Serve(str(path), args=("--ca", ca))
    raw = RawClient(serve.port, creds(web, os.path.join(ca, "ca.pem")))
    try:
        raw.send(CLUSTER, node="web")
        clusters = raw.receive()
        raw.send(CLUSTER, version=clusters.version_info, nonce=clusters.nonce)
        raw.send(SECRET, names=["identity"])
        assert raw.receive().type_url == SECRET
        path.write_text(path.read_text().replace("  port 8001\n", f'  port 8001\n  identity "{spiffe("web2")}"\n'))
        mark = serve.reload()
        serve.wait_for("published", after=mark)
        with pytest.raises(grpc.RpcError) as err:
            raw.receive()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert spiffe("web2") in err.value.details(), err.value.details()
    finally:
        raw.close()
        assert serve.stop() == 0


# ---- subset node ids, a garbage first message, the issuer under concurrency, the rotation loop ----------

SUBSET_POLICY = """
mesh { trust_domain "mesh.local"  mtls strict }
service api { port 8000  subset v1 { endpoints ["127.0.0.1:9001"] } }
service web { port 8001  endpoints ["127.0.0.1:9002"] }
authorization api { default deny  allow web { from service web } }
"""


def secrets_of(client: RawClient, node: str) -> dict[str, secret_pb2.Secret]:
    client.send(CLUSTER, node=node)
    clusters = client.receive()
    client.send(CLUSTER, version=clusters.version_info, nonce=clusters.nonce)
    client.send(SECRET, names=["identity", "mesh_ca"])
    response = client.receive()
    assert response.type_url == SECRET
    found = {}
    for packed in response.resources:
        secret = secret_pb2.Secret()
        packed.Unpack(secret)
        found[secret.name] = secret
    return found


def cert_uris(secret: secret_pb2.Secret) -> list[str]:
    cert = x509.load_pem_x509_certificate(secret.tls_certificate.certificate_chain.inline_bytes)
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier)


def test_a_subset_node_id_is_checked_and_served_as_its_services_identity(tmp_path):
    """`api.v1` is api's sidecar and `web.default` web's (its implicit subset): a client with
    another service's certificate claiming them gets PERMISSION_DENIED and nothing; with api's
    certificate, `api.v1` connects and gets api's certificate, the one `api` gets (issued once,
    held by service name)."""
    (tmp_path / "p.mesh").write_text(SUBSET_POLICY)
    ca = mtls.make_ca(str(tmp_path / "ca"), TD)
    ca_file = os.path.join(ca, "ca.pem")
    ids = {n: mtls.issue(ca, str(tmp_path / "ids" / n), spiffe(n)) for n in ("api", "web")}
    serve = Serve(str(tmp_path / "p.mesh"), args=("--ca", ca))
    try:
        for claimed, own in (("api.v1", "web"), ("web.default", "api")):
            attacker = RawClient(serve.port, creds(ids[own], ca_file))
            attacker.send(CLUSTER, node=claimed)
            with pytest.raises(grpc.RpcError) as err:
                attacker.receive()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value
            assert f"node {claimed!r}" in err.value.details() and spiffe(own) in err.value.details()
            assert attacker.responses.empty()
            attacker.close()
        subset, whole = (RawClient(serve.port, creds(ids["api"], ca_file)) for _ in range(2))
        got = secrets_of(subset, "api.v1")
        assert cert_uris(got["identity"]) == [spiffe("api")]
        assert b"PRIVATE KEY" in got["identity"].tls_certificate.private_key.inline_bytes
        assert got["mesh_ca"].validation_context.trusted_ca.inline_bytes == Path(ca_file).read_bytes()
        again = secrets_of(whole, "api")
        assert again["identity"].tls_certificate.certificate_chain.inline_bytes == \
            got["identity"].tls_certificate.certificate_chain.inline_bytes
        subset.close()
        whole.close()
        assert sum("issued api's certificate" in line for line in serve.lines) == 1, "".join(serve.lines)
        assert not any("issued web's" in line or "api.v1's" in line for line in serve.lines), "".join(serve.lines)
    finally:
        assert serve.stop() == 0, "".join(serve.lines)


def test_with_ca_a_first_message_that_is_not_a_discovery_request_is_invalid_argument(tmp_path):
    (tmp_path / "p.mesh").write_text(SUBSET_POLICY)
    ca = mtls.make_ca(str(tmp_path / "ca"), TD)
    api_id = mtls.issue(ca, str(tmp_path / "ids" / "api"), spiffe("api"))
    serve = Serve(str(tmp_path / "p.mesh"), args=("--ca", ca))
    channel = grpc.secure_channel(f"127.0.0.1:{serve.port}", creds(api_id, os.path.join(ca, "ca.pem")),
                                  options=[("grpc.ssl_target_name_override", "meshc-control")])
    try:
        call = channel.stream_stream("/envoy.service.discovery.v3.AggregatedDiscoveryService/"
                                     "StreamAggregatedResources")(iter([b"\xff\xff\xff"]))
        with pytest.raises(grpc.RpcError) as err:
            list(call)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
        assert "a message of 3 bytes that is not a DiscoveryRequest" in err.value.details()
        serve.wait_for("not a DiscoveryRequest")
    finally:
        channel.close()
        assert serve.stop() == 0, "".join(serve.lines)
    assert "Traceback" not in "".join(serve.lines)


def test_the_issuers_reads_on_the_loop_survive_issuing_in_threads(tmp_path):
    """next_due, due and summary run on the event loop while admissions issue in worker threads:
    they read a copy of the issued certificates (before: `dictionary changed size during
    iteration`, which killed the rotation task)."""
    from compiler.control import sds

    issuer = sds.Issuer(mtls.make_ca(str(tmp_path / "ca"), TD))
    for i in range(3000):   # a fleet already admitted (the same certificate: only the size matters)
        issuer.issued[f"pre{i}"] = issuer.server
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)   # switch threads often, so that an unsafe read would be caught
    try:
        def admit(tag: str) -> None:
            for i in range(150):
                issuer.issue(f"{tag}{i}", spiffe("x"))

        threads = [threading.Thread(target=admit, args=(t,)) for t in ("a", "b")]
        for t in threads:
            t.start()
        reads = 0
        while any(t.is_alive() for t in threads):
            issuer.next_due()
            issuer.due(time.time())
            issuer.summary()
            reads += 1
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert reads > 0 and len(issuer.issued) == 3300


def test_the_rotation_loop_survives_an_unexpected_error(tmp_path):
    """An exception out of a rotation is reported and the loop goes on: the next rotation
    happens (before, the task died and nothing was ever rotated again, silently)."""
    from compiler.control import sds
    from compiler.control import serve as control

    ports = dict(zip(("API_IN", "API_OUT", "API_ADMIN", "WEB_IN", "WEB_OUT", "WEB_ADMIN", "APP"), free_ports(7)))
    path = str(write_policy(tmp_path / "fleet.mesh", ports))
    snapshots, _, watch = control.build([path])
    issuer = sds.Issuer(mtls.make_ca(str(tmp_path / "ca"), TD), hours=0.0003)   # 1.08 s: due after 0.72 s
    lines: list[str] = []

    class Failing(control.Server):
        """One rotation raises (what a bug would): the fault is injected, the rest is the server's."""
        failed = False

        async def rotate(self):
            if not self.failed:
                self.failed = True
                raise RuntimeError("dictionary changed size during iteration")
            return await super().rotate()

    async def main() -> None:
        server = Failing([path], snapshots, lambda line, d, p: lines.append(line), watch, issuer=issuer)
        server._lock = asyncio.Lock()   # (made by run(), which also handles signals: not in a test)
        first = issuer.server.serial
        task = asyncio.ensure_future(server._rotate_forever())
        deadline = time.monotonic() + 10
        while issuer.server.serial == first and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not task.done(), task
        task.cancel()
        await server.grpc.stop(0)
        assert issuer.server.serial != first, lines

    asyncio.run(main())
    assert any("rotation failed, tried again in 1 s: RuntimeError: dictionary changed size" in line
               for line in lines), lines
    assert any(line.startswith("rotated ") for line in lines), lines


@contextlib.contextmanager
def servicer_on_a_port(servicer):
    """`servicer` (an AdsServicer) served by a grpc.aio server on a real loopback port, on an event
    loop of its own in a thread: yields (loop, port); the server stops on exit."""
    from envoy.service.discovery.v3 import ads_pb2_grpc

    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict = {}

    async def main() -> None:
        state["stop"] = asyncio.Event()
        server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)
        state["port"] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        started.set()
        await state["stop"].wait()
        await server.stop(0)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield loop, state["port"]
    finally:
        loop.call_soon_threadsafe(lambda: state["stop"].set())
        thread.join(10)
        loop.close()


def test_a_stream_never_gets_a_snapshot_of_another_identity_than_the_one_admitted(tmp_path):
    """The re-check at a publish awaits (the real one issues a certificate in a worker thread);
    an edit that changes web's identity is published meanwhile, with requests of the stream
    queued behind. Every response is built against the identity the stream was admitted with:
    the stream ends with PERMISSION_DENIED and gets nothing of the new snapshot. In process: the
    servicer on a real port, its admission the test's (what `meshc serve --ca` passes checks the
    client certificate; here the admitted identity is the node's at admission)."""

    from compiler import api
    from compiler.control import ads, snapshot

    ports = dict(zip(("API_IN", "API_OUT", "API_ADMIN", "WEB_IN", "WEB_OUT", "WEB_ADMIN", "APP"), free_ports(7)))
    path = write_policy(tmp_path / "fleet.mesh", ports)
    before = snapshot.build_all(api.compile([str(path)]))
    path.write_text(path.read_text().replace("  port 8001\n", f'  port 8001\n  identity "{spiffe("web2")}"\n'))
    after = snapshot.build_all(api.compile([str(path)]))
    assert after["web"].identity == spiffe("web2")
    calls: list[str] = []
    gate = asyncio.Event()   # (bound to the server's loop when first awaited)

    async def admit(node: str, context) -> str | None:
        service, _ = ads.resolve(node, servicer.snapshots)
        identity = servicer.snapshots[service].identity
        calls.append(node)
        if len(calls) == 2:   # the re-check at the first publish: held until the test releases it
            await gate.wait()
        return identity

    servicer = ads.AdsServicer(before, admit=admit)
    with servicer_on_a_port(servicer) as (loop, port):
        web = RawClient(port)
        try:
            web.send(CLUSTER, node="web")
            clusters = web.receive()
            web.send(CLUSTER, version=clusters.version_info, nonce=clusters.nonce)
            # the same identity in a new snapshot object (publish wakes only the nodes whose snapshot is
            # another object): re-checked ...
            loop.call_soon_threadsafe(servicer.publish, {**before, "web": dataclasses.replace(before["web"])})
            deadline = time.monotonic() + 10
            while len(calls) < 2:   # ... and held there
                assert time.monotonic() < deadline, calls
                time.sleep(0.01)
            web.send(SECRET, names=["identity", "mesh_ca"])   # queued behind the held re-check
            web.send("type.googleapis.com/envoy.config.listener.v3.Listener")
            time.sleep(0.2)
            loop.call_soon_threadsafe(servicer.publish, after)   # web is now spiffe://.../web2
            loop.call_soon_threadsafe(lambda: loop.call_later(0.1, gate.set))
            with pytest.raises(grpc.RpcError) as err:
                web.receive()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value
            assert spiffe("web2") in err.value.details() and spiffe("web") in err.value.details()
            assert web.responses.empty()
        finally:
            web.close()


def test_a_node_the_admission_does_not_know_is_never_served_unchecked(tmp_path):
    """A reload that removes a node sets the server's base before it publishes (the overlay runs
    in a worker thread meanwhile): a stream naming that node is then unknown to the admission
    but still in the snapshots served. It ends with NOT_FOUND, never served without the check.
    In process: the servicer on a real port, an admission that knows no node."""

    from compiler import api
    from compiler.control import ads, snapshot

    ports = dict(zip(("API_IN", "API_OUT", "API_ADMIN", "WEB_IN", "WEB_OUT", "WEB_ADMIN", "APP"), free_ports(7)))
    served = snapshot.build_all(api.compile([str(write_policy(tmp_path / "fleet.mesh", ports))]))
    async def admit(node: str, context) -> str | None:
        return None   # the base no longer has it

    with servicer_on_a_port(ads.AdsServicer(served, admit=admit)) as (_loop, port):
        web = RawClient(port)
        try:
            web.send(CLUSTER, node="web")
            with pytest.raises(grpc.RpcError) as err:
                web.receive()
            assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value
            assert "unknown node 'web'" in err.value.details()
            assert web.responses.empty()
        finally:
            web.close()
