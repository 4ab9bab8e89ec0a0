"""Certificates of a live session: the sidecar's identity and its callers', from one mesh CA.

`SessionCerts(root)` makes a mesh CA for the generators' trust domain (tests/mtls_support.py,
the code of `meshc ca`), issues the sidecar's identity into `certs_dir/client` (both data planes
compile with `--certs-dir certs_dir`), and one certificate per caller of `policies.CALLERS`.
A caller outside the trust domain is signed by the same CA (`meshc ca issue` refuses that, so it
is built directly): both planes trust the mesh CA alone and read identities from URI SANs, so it
is admitted at the TLS layer and only its SPIFFE ID tells it apart. Each caller gets one client
context for the session (handshakes are per connection; contexts are reused), and its
certificate's DER, whose SHA-256 the application sees in `x-forwarded-client-cert`.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl

from compiler.ca import certs as build
from compiler.ca import files as ca_files
from tests.equivalence.policies import CALLERS, CLIENT_ID, SIDECAR, TRUST_DOMAIN
from tests.mtls_support import client_context, issue, make_ca


class SessionCerts:
    def __init__(self, root: str):
        ca_dir = make_ca(os.path.join(root, "ca"), TRUST_DOMAIN)
        self.ca_file = os.path.join(ca_dir, ca_files.CA_CERT)
        self.certs_dir = os.path.join(root, "certs")          # --certs-dir of both planes
        self.own_id = CLIENT_ID
        issue(ca_dir, os.path.join(self.certs_dir, SIDECAR), CLIENT_ID)
        self.contexts: dict[str, ssl.SSLContext] = {}
        self.ders: dict[str, bytes] = {}
        for i, spiffe_id in enumerate(CALLERS):
            cert_dir = os.path.join(root, "callers", str(i))
            if spiffe_id.startswith(f"spiffe://{TRUST_DOMAIN}/"):
                issue(ca_dir, cert_dir, spiffe_id)
            else:
                _foreign(ca_dir, cert_dir, spiffe_id)
            self.contexts[spiffe_id] = client_context(cert_dir, self.ca_file)
            with open(os.path.join(cert_dir, "cert.pem"), encoding="ascii") as fh:
                self.ders[spiffe_id] = ssl.PEM_cert_to_DER_cert(fh.read())


def _foreign(ca_dir: str, out_dir: str, spiffe_id: str) -> None:
    """A certificate of the mesh CA for an ID of another trust domain (cert.pem, key.pem)."""
    ca = ca_files.read_ca(ca_dir)
    now = ca_files.utcnow()
    cert_pem, key_pem = build.build_leaf(ca, spiffe_id, now - build.BACKDATE, now + dt.timedelta(hours=24))
    os.makedirs(out_dir, exist_ok=True)
    ca_files.write_atomic(os.path.join(out_dir, "cert.pem"), cert_pem)
    ca_files.write_atomic(os.path.join(out_dir, "key.pem"), key_pem, 0o600)
