"""`meshc ca`, the development CA: the certificates it makes (checked by openssl and by a real TLS
handshake), the identity directory layout and its atomic rotation, and its errors (one line, no
traceback, nothing written). The happy paths run `meshc` as a subprocess; the error matrix runs
the same CLI in-process (compiler.cli.main), which is faster and lets a test break a syscall."""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from compiler.cli import main
from tests import mtls_support as mtls

ROOT = Path(__file__).resolve().parent.parent
VERSION = re.compile(r"\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d{6}\Z")


def meshc(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "compiler", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    _no_secrets_no_traceback(proc.stdout + proc.stderr)
    return proc


def meshc_inline(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    _no_secrets_no_traceback(out + err)
    assert "internal error" not in err, err
    return code, out, err


def _no_secrets_no_traceback(text: str) -> None:
    assert "Traceback" not in text, text
    assert "PRIVATE KEY" not in text, "a key was printed"


def load(path) -> x509.Certificate:
    with open(path, "rb") as fh:
        return x509.load_pem_x509_certificate(fh.read())


def uri_sans(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def snapshot(root) -> dict[str, object]:
    """Every entry under root: links by target, files by content (to prove nothing changed)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                found[rel] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                found[rel] = Path(path).read_bytes()
            else:
                found[rel] = "dir"
    return found


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory) -> str:
    """A CA of trust domain shop.local (examples/shop.mesh's), made by `meshc ca init`."""
    d = str(tmp_path_factory.mktemp("ca") / "ca")
    proc = meshc("ca", "init", d, "--trust-domain", "shop.local")
    assert proc.returncode == 0, proc.stderr
    assert "shop.local" in proc.stderr
    return d


# ---- init ------------------------------------------------------------------------------------

def test_init_makes_a_ca_of_the_verified_profile(ca_dir):
    assert mode(os.path.join(ca_dir, "ca-key.pem")) == 0o600
    cert = load(os.path.join(ca_dir, "ca.pem"))
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "shop.local"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "meshc CA shop.local"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_init_refuses_to_replace_a_ca_without_force(ca_dir, tmp_path):
    d = str(tmp_path / "ca")
    shutil.copytree(ca_dir, d)
    before = snapshot(d)
    proc = meshc("ca", "init", d)
    assert proc.returncode == 1
    assert proc.stderr.startswith("meshc: error: ") and "--force" in proc.stderr
    assert snapshot(d) == before
    proc = meshc("ca", "init", d, "--force", "--trust-domain", "other.local", "--days", "2")
    assert proc.returncode == 0, proc.stderr
    assert snapshot(d) != before and mode(os.path.join(d, "ca-key.pem")) == 0o600
    assert "other.local" in load(os.path.join(d, "ca.pem")).subject.rfc4514_string()
    assert not [n for n in os.listdir(d) if n.startswith(".tmp")]


def test_init_default_trust_domain_and_validation(tmp_path, capsys):
    code, _, err = meshc_inline(capsys, "ca", "init", str(tmp_path / "default"))
    assert code == 0, err
    assert "O=cluster.local" in load(tmp_path / "default" / "ca.pem").subject.rfc4514_string()
    code, _, err = meshc_inline(capsys, "ca", "init", str(tmp_path / "bad" / "ca"), "--trust-domain", "Shop.Local")
    assert code == 1 and "`Shop.Local` is not a valid trust domain" in err
    assert not (tmp_path / "bad").exists()


# ---- issue -----------------------------------------------------------------------------------

def check_identity_dir(out: str, spiffe_id: str, ca_dir: str) -> x509.Certificate:
    """The layout of docs/identity.md, and a leaf of the verified profile carrying exactly spiffe_id."""
    names = sorted(os.listdir(out))
    versions = [n for n in names if VERSION.match(n)]
    assert len(versions) == 1 and names == sorted(versions + ["..data", "ca.pem", "cert.pem", "key.pem"]), names
    assert os.readlink(os.path.join(out, "..data")) == versions[0]
    for name in ("cert.pem", "key.pem", "ca.pem"):
        assert os.readlink(os.path.join(out, name)) == f"..data/{name}"
    assert sorted(os.listdir(os.path.join(out, versions[0]))) == ["ca.pem", "cert.pem", "key.pem"]
    assert mode(os.path.join(out, "key.pem")) == 0o600
    assert mode(os.path.join(out, "cert.pem")) == 0o644
    assert Path(out, "ca.pem").read_bytes() == Path(ca_dir, "ca.pem").read_bytes()
    cert = load(os.path.join(out, "cert.pem"))
    assert uri_sans(cert) == [spiffe_id]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and list(san.value) == [x509.UniformResourceIdentifier(spiffe_id)]
    assert cert.subject == x509.Name([])
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    cert.verify_directly_issued_by(load(os.path.join(ca_dir, "ca.pem")))
    return cert


@pytest.mark.parametrize("extra, spiffe_id", [
    ([], "spiffe://shop.local/ns/default/sa/payments"),
    (["--namespace", "billing"], "spiffe://shop.local/ns/billing/sa/payments"),
    (["--spiffe-id", "spiffe://shop.local/custom/pay"], "spiffe://shop.local/custom/pay"),
    (["--policy", "examples/shop.mesh"], "spiffe://shop.local/ns/shop/sa/payments"),  # namespace "shop" there
], ids=["default", "namespace", "spiffe-id", "policy"])
def test_issue_writes_the_identity_directory(ca_dir, tmp_path, extra, spiffe_id):
    out = str(tmp_path / "payments")
    proc = meshc("ca", "issue", "payments", "--ca", ca_dir, "-o", out, "--hours", "2", *extra)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    cert = check_identity_dir(out, spiffe_id, ca_dir)
    line = proc.stderr.strip()
    assert "\n" not in line and spiffe_id in line and format(cert.serial_number, "x") in line and out in line
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.total_seconds() == 2 * 3600 + 60  # backdated one minute


@pytest.fixture(scope="module")
def frontend_dir(ca_dir, tmp_path_factory) -> str:
    return mtls.issue(ca_dir, str(tmp_path_factory.mktemp("id") / "frontend"), "spiffe://shop.local/ns/web/sa/frontend")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")
@pytest.mark.parametrize("purpose", ["sslclient", "sslserver"])
def test_openssl_strict_verify_accepts_the_leaf(ca_dir, frontend_dir, purpose):
    proc = subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile",
                           os.path.join(ca_dir, "ca.pem"), os.path.join(frontend_dir, "cert.pem")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip().endswith(": OK"), proc.stdout + proc.stderr


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext):
    """Both ends of one TLS handshake over a socketpair, then one byte each way. Returns
    (server's peer id, client's peer id), or the first exception either side raised."""
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    seen: dict[str, object] = {}

    def serve():
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                seen["server"] = mtls.peer_id(s)
                s.sendall(s.recv(1))
        except Exception as err:  # reported to the caller
            seen["server_error"] = err

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client_ctx.wrap_socket(b) as c:
            client_peer = mtls.peer_id(c)
            c.sendall(b"x")
            if c.recv(1) != b"x":  # TLS 1.3: a refused client cert shows up here, not in the handshake
                raise ConnectionError("no echo")
    except (OSError, ssl.SSLError) as err:
        client_peer = err
    finally:
        t.join(10)
    if "server_error" in seen:
        raise seen["server_error"]
    if isinstance(client_peer, Exception):
        raise client_peer
    return seen["server"], client_peer


def test_python_ssl_handshake_both_ways_strict(ca_dir, frontend_dir, tmp_path):
    """mTLS between two identities, with X509_STRICT on both sides: each sees the other's ID."""
    server_dir = mtls.issue(ca_dir, str(tmp_path / "payments"), "spiffe://shop.local/ns/shop/sa/payments")
    ca_file = os.path.join(ca_dir, "ca.pem")
    server = mtls.server_context(server_dir, ca_file)
    client = mtls.client_context(frontend_dir, ca_file)
    for ctx in (server, client):
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    assert handshake(server, client) == ("spiffe://shop.local/ns/web/sa/frontend",
                                         "spiffe://shop.local/ns/shop/sa/payments")


def test_refused_certificates(ca_dir, frontend_dir, tmp_path):
    """mtls_support.bad_certs: a strict server refuses each; no client cert is refused too;
    and a client refuses a server presenting one."""
    ca_file = os.path.join(ca_dir, "ca.pem")
    bad = mtls.bad_certs(ca_dir, str(tmp_path), "spiffe://shop.local/ns/web/sa/frontend")
    assert sorted(bad) == ["expired", "other_ca", "selfsigned"]
    server = mtls.server_context(frontend_dir, ca_file)
    for name, d in bad.items():
        assert {"cert.pem", "key.pem", "ca.pem"} <= set(os.listdir(d)), name
        assert mode(os.path.join(d, "key.pem")) == 0o600
        with pytest.raises((ssl.SSLError, OSError)):
            handshake(server, mtls.client_context(d, ca_file))
        with pytest.raises((ssl.SSLError, OSError)):
            handshake(mtls.server_context(d, ca_file, require_client=False), mtls.client_context(None, ca_file))
    with pytest.raises((ssl.SSLError, OSError)):
        handshake(server, mtls.client_context(None, ca_file))
    # permissive-style server: a client without a certificate is accepted, with no identity
    assert handshake(mtls.server_context(frontend_dir, ca_file, require_client=False),
                     mtls.client_context(None, ca_file)) == (None, "spiffe://shop.local/ns/web/sa/frontend")


def test_issue_over_an_identity_replaces_it_in_one_switch(ca_dir, tmp_path):
    out = mtls.issue(ca_dir, str(tmp_path / "cart"), "spiffe://shop.local/ns/shop/sa/cart")
    old = os.readlink(os.path.join(out, "..data"))
    proc = meshc("ca", "issue", "cart", "--ca", ca_dir, "-o", out, "--namespace", "shop")
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(os.path.join(out, "..data")) != old and not os.path.exists(os.path.join(out, old))
    check_identity_dir(out, "spiffe://shop.local/ns/shop/sa/cart", ca_dir)


# ---- rotate and show -------------------------------------------------------------------------

def test_rotate_when_due_only_then_swaps_atomically(ca_dir, tmp_path):
    spiffe_id = "spiffe://shop.local/ns/shop/sa/inventory"
    out = mtls.issue(ca_dir, str(tmp_path / "inventory"), spiffe_id, hours=3)
    old_version, old_serial = os.readlink(os.path.join(out, "..data")), mtls.serial(out)

    proc = meshc("ca", "rotate", out, "--ca", ca_dir)
    assert proc.returncode == 0, proc.stderr
    assert "not due until" in proc.stderr and "--force" in proc.stderr
    assert os.readlink(os.path.join(out, "..data")) == old_version and mtls.serial(out) == old_serial

    # --before 1: due as soon as any of the lifetime is gone, so this rotates without --force
    proc = meshc("ca", "rotate", out, "--ca", ca_dir, "--before", "1")
    assert proc.returncode == 0, proc.stderr
    assert "rotated (due)" in proc.stderr
    new_version = os.readlink(os.path.join(out, "..data"))
    assert new_version != old_version and not os.path.exists(os.path.join(out, old_version))
    assert mtls.serial(out) != old_serial and mtls.serial(out) in proc.stderr
    cert = check_identity_dir(out, spiffe_id, ca_dir)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.total_seconds() == 3 * 3600 + 60  # the lifetime is kept

    proc = meshc("ca", "rotate", out, "--ca", ca_dir, "--force", "--hours", "1")
    assert proc.returncode == 0 and "rotated (forced)" in proc.stderr
    cert = check_identity_dir(out, spiffe_id, ca_dir)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() == 3600 + 60


def test_rotate_after_the_ca_was_replaced(ca_dir, tmp_path, capsys):
    out = mtls.issue(ca_dir, str(tmp_path / "id"), "spiffe://shop.local/ns/shop/sa/cart")
    new_ca = mtls.make_ca(str(tmp_path / "ca2"), "shop.local")
    code, _, err = meshc_inline(capsys, "ca", "rotate", out, "--ca", new_ca)
    assert code == 0 and "rotated (issued by another CA)" in err
    check_identity_dir(out, "spiffe://shop.local/ns/shop/sa/cart", new_ca)


def test_mtls_support_rotate_keeps_the_id_and_links(ca_dir, tmp_path):
    out = mtls.issue(ca_dir, str(tmp_path / "x"), "spiffe://shop.local/ns/a/sa/x", hours=0.5)
    first = mtls.serial(out)
    mtls.rotate(ca_dir, out)
    assert mtls.serial(out) != first
    cert = check_identity_dir(out, "spiffe://shop.local/ns/a/sa/x", ca_dir)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() == 1800 + 60


def test_show(ca_dir, frontend_dir):
    proc = meshc("ca", "show", frontend_dir)
    assert proc.returncode == 0, proc.stderr
    assert "spiffe id:   spiffe://shop.local/ns/web/sa/frontend" in proc.stdout
    assert "issuer:      CN=meshc CA shop.local,O=shop.local" in proc.stdout
    assert re.search(r"left: +23h 5\dm \(\d\.\d\d days\)", proc.stdout), proc.stdout
    proc = meshc("ca", "show", ca_dir)
    assert proc.returncode == 0 and "ca:          yes" in proc.stdout and "spiffe id" not in proc.stdout


# ---- errors: one line, the right exit code, nothing written ----------------------------------

def test_issue_errors_write_nothing(ca_dir, tmp_path, capsys):
    out = tmp_path / "out"
    corrupt = tmp_path / "corrupt"
    shutil.copytree(ca_dir, corrupt)
    (corrupt / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    mismatched = tmp_path / "mismatched"
    shutil.copytree(ca_dir, mismatched)
    shutil.copy(mtls.make_ca(str(tmp_path / "other"), "shop.local") + "/ca-key.pem", mismatched / "ca-key.pem")
    cannot_sign = tmp_path / "cannot_sign"
    shutil.copytree(ca_dir, cannot_sign)
    (cannot_sign / "ca-key.pem").write_bytes(x25519.X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    keydir = tmp_path / "keydir"
    shutil.copytree(ca_dir, keydir)
    os.unlink(keydir / "ca-key.pem")
    os.mkdir(keydir / "ca-key.pem")
    cases = [
        (["--spiffe-id", "spiffe://other.local/ns/a/sa/b"], 1, "not in the CA's trust domain `shop.local`"),
        (["--spiffe-id", "http://shop.local/x"], 1, "is not a valid SPIFFE ID"),
        (["--namespace", "Not_A_Label"], 1, "is not a valid namespace name"),
        (["--policy", "examples/shop.mesh", "--ca", str(tmp_path / "nope")], 2, "no such CA directory"),
        (["--ca", str(corrupt)], 1, "ca.pem: not a PEM certificate"),
        (["--ca", str(mismatched)], 1, "does not belong to the certificate"),
        (["--ca", str(cannot_sign)], 1, "X25519PrivateKey cannot sign certificates"),
        (["--ca", str(keydir)], 2, "cannot read"),
        (["--ca", str(tmp_path / "other" / "ca.pem")], 2, "no such CA directory"),
        (["--namespace", "x", "--spiffe-id", "spiffe://shop.local/a"], 2, "--namespace applies to the default ID"),
        (["--hours", "0"], 2, "argument --hours: expected a positive number"),
    ]
    for extra, code, message in cases:
        args = ["ca", "issue", "payments", "--ca", ca_dir, "-o", str(out), *extra]
        got, stdout, err = meshc_inline(capsys, *args)
        assert (got, stdout) == (code, ""), (extra, err)
        assert message in err and "meshc: error: " in err, (extra, err)
        assert not out.exists(), extra


def test_policy_errors(ca_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = meshc_inline(capsys, "ca", "issue", "paymnts", "--ca", ca_dir, "-o", str(out),
                                "--policy", "examples/shop.mesh")
    assert code == 1 and "no service `paymnts` in the policy" in err and "did you mean `payments`?" in err
    other_ca = mtls.make_ca(str(tmp_path / "ca"), "mesh.local")
    code, _, err = meshc_inline(capsys, "ca", "issue", "payments", "--ca", other_ca, "-o", str(out),
                                "--policy", "examples/")
    assert code == 1 and "`spiffe://shop.local/ns/shop/sa/payments` is not in the CA's trust domain" in err
    bad = tmp_path / "bad.mesh"
    bad.write_text("service payments { port 0 }\n")
    code, _, err = meshc_inline(capsys, "ca", "issue", "payments", "--ca", ca_dir, "-o", str(out), "--policy", str(bad))
    assert code == 1 and "error[" in err and "the policy has errors" in err
    code, _, err = meshc_inline(capsys, "ca", "issue", "payments", "--ca", ca_dir, "-o", str(out),
                                "--policy", str(tmp_path / "missing.mesh"))
    assert code == 2 and "no such file or directory" in err
    assert not out.exists()


def test_a_failed_write_leaves_the_identity_as_it_was(ca_dir, tmp_path, capsys, monkeypatch):
    """A write error (here: the ..data link cannot be made) is one line, exit 2, and undone."""
    fresh, existing = tmp_path / "fresh" / "svc", tmp_path / "existing"
    mtls.issue(ca_dir, str(existing), "spiffe://shop.local/ns/default/sa/svc")
    before = snapshot(existing)

    def denied(src, dst, *a, **k):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(os, "symlink", denied)
    for out in (fresh, existing):
        code, _, err = meshc_inline(capsys, "ca", "issue", "svc", "--ca", ca_dir, "-o", str(out))
        assert code == 2 and f"meshc: error: cannot write to {out}: permission denied" in err, err
    monkeypatch.undo()
    assert not (tmp_path / "fresh").exists()
    assert snapshot(existing) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_ca_key(ca_dir, tmp_path, capsys):
    d = tmp_path / "ca"
    shutil.copytree(ca_dir, d)
    os.chmod(d / "ca-key.pem", 0)
    code, _, err = meshc_inline(capsys, "ca", "issue", "x", "--ca", str(d), "-o", str(tmp_path / "o"))
    assert code == 2 and "cannot read" in err and "permission denied" in err



def test_directories_are_private_whatever_the_umask(tmp_path):
    """Issue 18 point 14: under umask 000 a plain mkdir gives 0777, a CA directory in which anyone
    could replace ca.pem or ca-key.pem. The CA directory and the parents made for it are 0700; an
    identity directory, its parents and its versions 0755 (a sidecar, maybe another user, reads
    them); the files keep their modes (key 0600)."""
    env = {k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)

    def run(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "compiler", *args], cwd=tmp_path, env=env, umask=0,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr

    run("ca", "init", "made/for/ca")
    run("ca", "issue", "web", "--ca", "made/for/ca", "-o", "certs/sub/web")
    run("ca", "rotate", "certs/sub/web", "--ca", "made/for/ca", "--force")
    for d in ("made", "made/for", "made/for/ca"):
        assert mode(tmp_path / d) == 0o700, d
    assert mode(tmp_path / "made/for/ca/ca-key.pem") == 0o600
    assert mode(tmp_path / "made/for/ca/ca.pem") == 0o644
    web = tmp_path / "certs/sub/web"
    versions = [n for n in os.listdir(web) if VERSION.match(n)]
    assert len(versions) == 1
    for d in (tmp_path / "certs", tmp_path / "certs/sub", web, web / versions[0]):
        assert mode(d) == 0o755, d
    assert (mode(web / "key.pem"), mode(web / "cert.pem"), mode(web / "ca.pem")) == (0o600, 0o644, 0o644)


def test_a_ca_key_readable_by_others_is_refused(ca_dir, tmp_path, capsys):
    """Issue 18 point 14: as ssh refuses a private key that group or others may read, issue and
    rotate refuse such a CA key (exit 1, the input's fault), naming the chmod that fixes it; a CA
    directory others may write is refused the same way. Nothing is written."""
    d = tmp_path / "ca"
    shutil.copytree(ca_dir, d)
    out = tmp_path / "out"
    code, _, err = meshc_inline(capsys, "ca", "issue", "web", "--ca", str(d), "-o", str(out))
    assert code == 0, err
    before = snapshot(out)
    key = d / "ca-key.pem"
    for bad in (0o644, 0o640, 0o604):
        os.chmod(key, bad)
        for args in (("issue", "web", "--ca", str(d), "-o", str(tmp_path / "new")),
                     ("rotate", str(out), "--ca", str(d), "--force")):
            code, _, err = meshc_inline(capsys, "ca", *args)
            assert code == 1, err
            assert err == (f"meshc: error: {key}: the private key is accessible by group or others (mode "
                           f"{bad:04o}): anyone on this host could use it; run `chmod 600 {key}`\n"), err
    assert not (tmp_path / "new").exists() and snapshot(out) == before
    os.chmod(key, 0o600)
    for bad in (0o770, 0o777, 0o702):
        os.chmod(d, bad)
        for args in (("issue", "web", "--ca", str(d), "-o", str(tmp_path / "new")), ("init", str(d), "--force")):
            code, _, err = meshc_inline(capsys, "ca", *args)
            assert code == 1, err
            assert f"{d}: the CA directory is writable by group or others (mode {bad:04o})" in err, err
            assert f"run `chmod 700 {d}`" in err, err
    assert not (tmp_path / "new").exists()
    os.chmod(d, 0o755)      # readable by others is fine: the key itself is 0600
    code, _, err = meshc_inline(capsys, "ca", "rotate", str(out), "--ca", str(d), "--force")
    assert code == 0, err


def test_issue_and_rotate_refuse_foreign_directories(ca_dir, tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "cert.pem").write_text("mine\n")
    code, _, err = meshc_inline(capsys, "ca", "issue", "x", "--ca", ca_dir, "-o", str(flat))
    assert code == 1 and "not a link into `..data`" in err
    assert os.listdir(flat) == ["cert.pem"]
    code, _, err = meshc_inline(capsys, "ca", "rotate", str(flat), "--ca", ca_dir)
    assert code == 1 and "was not written by `meshc ca issue`" in err
    code, _, err = meshc_inline(capsys, "ca", "rotate", str(tmp_path), "--ca", ca_dir)
    assert code == 1 and "not an identity directory written by `meshc ca issue` (no `..data` link)" in err
    code, _, err = meshc_inline(capsys, "ca", "rotate", str(tmp_path / "none"), "--ca", ca_dir)
    assert code == 2 and "no such directory" in err
    code, _, err = meshc_inline(capsys, "ca", "show", str(flat / "cert.pem"))
    assert code == 1 and "not a PEM certificate" in err


def test_usage(capsys):
    code, _, err = meshc_inline(capsys, "ca")
    assert code == 2 and "init" in err and "rotate" in err
    code, _, err = meshc_inline(capsys, "ca", "rotate", "x", "--ca", "y", "--before", "2")
    assert code == 2 and "argument --before: expected a fraction" in err


def test_other_commands_do_not_load_cryptography():
    code = ("import sys\nfrom compiler.cli import main\n"
            "assert main(['check', 'examples/shop.mesh']) == 0\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'cryptography' or m.startswith('compiler.ca')]\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
