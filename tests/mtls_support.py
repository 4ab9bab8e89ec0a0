"""Certificates and TLS contexts for the mTLS tests, through the same code as `meshc ca`.

    make_ca(dir)                          a mesh CA (dir/ca.pem, dir/ca-key.pem)
    issue(ca_dir, out_dir, spiffe_id)     an identity directory, laid out like `meshc ca issue`'s
    rotate(ca_dir, out_dir)               a forced re-issue with the same ID, one atomic swap
    bad_certs(ca_dir, out_root, id)       certificates a peer must refuse
    client_context / server_context       Python ssl contexts presenting an identity directory
    peer_id(ssl_sock)                     the verified peer's SPIFFE ID
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import ssl

from compiler.ca import certs as build
from compiler.ca import files as ca_files

IDENTITY_FILES = ca_files.IDENTITY_FILES


def make_ca(dir: str, trust_domain: str = "mesh.local") -> str:
    """A new mesh CA in `dir` (replacing any there); returns `dir`."""
    ca_files.init_ca(dir, trust_domain, days=365, force=True, now=ca_files.utcnow())
    return dir


def issue(ca_dir: str, out_dir: str, spiffe_id: str, hours: float = 24) -> str:
    """A certificate for `spiffe_id` (in the CA's trust domain) into `out_dir`, in the layout of
    `meshc ca issue` (..data link, cert.pem/key.pem/ca.pem links); returns `out_dir`."""
    ca_files.issue_identity(ca_files.read_ca(ca_dir), out_dir, spiffe_id, hours, ca_files.utcnow())
    return out_dir


def rotate(ca_dir: str, out_dir: str) -> None:
    """A new certificate with the same SPIFFE ID and lifetime, switched in by one rename of ..data."""
    ca_files.rotate_identity(ca_files.read_ca(ca_dir), out_dir, None, 1.0, True, ca_files.utcnow())


def serial(cert_dir: str) -> str:
    """The serial (hex) of `cert_dir/cert.pem`: tells a rotated certificate from the one before."""
    path = os.path.join(cert_dir, "cert.pem")
    return build.cert_info(build.load_cert(ca_files.read_file(path), path)).serial


def bad_certs(ca_dir: str, out_root: str, spiffe_id: str) -> dict[str, str]:
    """Directories under `out_root`, each with cert.pem/key.pem carrying `spiffe_id` and ca.pem (the
    mesh CA, so that the holder itself still verifies good peers), that a peer must refuse:
    expired (an hour ago, by the mesh CA), selfsigned (a leaf signing itself), other_ca (signed
    by another CA of the same trust domain)."""
    ca = ca_files.read_ca(ca_dir)
    now = ca_files.utcnow()
    other_dir = os.path.join(out_root, "other_ca.ca")
    make_ca(other_dir, ca.trust_domain)
    pairs = {
        "expired": build.build_leaf(ca, spiffe_id, now - dt.timedelta(hours=2), now - dt.timedelta(hours=1)),
        "selfsigned": _self_signed(spiffe_id, now),
        "other_ca": build.issue(ca_files.read_ca(other_dir), spiffe_id, 24, now),
    }
    dirs = {}
    for name, (cert_pem, key_pem) in pairs.items():
        d = dirs[name] = os.path.join(out_root, name)
        os.makedirs(d, exist_ok=True)
        ca_files.write_atomic(os.path.join(d, "cert.pem"), cert_pem)
        ca_files.write_atomic(os.path.join(d, "key.pem"), key_pem, 0o600)
        shutil.copyfile(os.path.join(ca_dir, ca_files.CA_CERT), os.path.join(d, "ca.pem"))
    return dirs


def _self_signed(spiffe_id: str, now: dt.datetime) -> tuple[bytes, bytes]:
    """A workload-profile leaf that signs itself: its issuer is no CA at all."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(x509.Name([]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - build.BACKDATE).not_valid_after(now + dt.timedelta(hours=24))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
            .sign(key, hashes.SHA256()))
    return build.encode_cert(cert), build.encode_key(key)


def client_context(cert_dir: str | None, ca_file: str) -> ssl.SSLContext:
    """A client context presenting cert_dir/cert.pem + key.pem (none with None) and verifying the
    server's chain against `ca_file` only. No hostname check: the caller checks peer_id()."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(ca_file)
    if cert_dir is not None:
        ctx.load_cert_chain(os.path.join(cert_dir, "cert.pem"), os.path.join(cert_dir, "key.pem"))
    return ctx


def server_context(cert_dir: str, ca_file: str, require_client: bool = True) -> ssl.SSLContext:
    """A server context presenting cert_dir's identity; with `require_client`, clients must present
    a certificate of `ca_file`'s CA (mTLS strict), else a certificate is optional."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
    ctx.load_verify_locations(ca_file)
    ctx.load_cert_chain(os.path.join(cert_dir, "cert.pem"), os.path.join(cert_dir, "key.pem"))
    return ctx


def peer_id(ssl_sock) -> str | None:
    """The URI SAN of the peer's verified certificate (an SSLSocket or SSLObject); None without a
    verified certificate, or when it carries no URI or several."""
    cert = ssl_sock.getpeercert()
    uris = [value for kind, value in (cert or {}).get("subjectAltName", ()) if kind == "URI"]
    return uris[0] if len(uris) == 1 else None
