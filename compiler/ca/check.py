"""A sidecar's identity files checked as the proxies will use them (`meshc doctor`).

Whatever made them (`meshc ca`, cert-manager, SPIRE, ...): the three files exist and can be read,
each parses, the certificate is valid now (a warning when it expires within a day), carries
exactly the service's SPIFFE ID as its URI SAN, matches the key, and chains to a certificate of
ca.pem (through the intermediates cert.pem may hold after the leaf); see EXPIRY_WARNING. The native proxy refuses to
start without these; Envoy starts and fails the handshakes, which is why they are checked before
either runs. Findings carry the codes of compiler/core/host_codes.py. Only `meshc doctor` imports
this module (it loads `cryptography`).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from compiler.ca.certs import span as _span
from compiler.ca.certs import when

CERT_FILE, KEY_FILE, CA_FILE = "cert.pem", "key.pem", "ca.pem"
# A certificate that expires within a day is a warning; one that lives a day or less (`meshc ca
# issue`'s default is 24 h) only once `meshc ca rotate` would renew it, with less than a third of
# its lifetime left: a fresh short-lived certificate is what a mesh should run on, not a warning.
EXPIRY_WARNING = dt.timedelta(days=1)


@dataclass(frozen=True)
class Finding:
    """One problem: a host code (H01xx), the file concerned, a one-line message, a hint."""
    code: str
    severity: str                  # "error" | "warning"
    path: str
    message: str
    hint: str | None = None


@dataclass
class Identity:
    """What one identity directory holds, once read: the certificate chain (leaf first) and the
    trust bundle, when they parse; and what is wrong with it."""
    directory: str
    chain: list[x509.Certificate] = field(default_factory=list)
    bundle: list[x509.Certificate] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)


def check_identity(directory: str, spiffe_id: str, now: dt.datetime,
                   fix: str = "meshc ca issue") -> Identity:
    """Every check of one sidecar's identity directory. `fix` names the command that makes the
    files, for the hints."""
    ident = Identity(directory)
    found = ident.findings
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        found.append(Finding("H0101", "error", directory,
                             f"the identity directory {directory} {what} (no {CERT_FILE}, {KEY_FILE}, {CA_FILE})",
                             f"make it with `{fix}`, or give the directory the sidecars use (--certs-dir)"))
        return ident
    data: dict[str, bytes] = {}
    for name in (CERT_FILE, KEY_FILE, CA_FILE):
        path = os.path.join(directory, name)
        text = _read(path, found, fix)
        if text is not None:
            data[name] = text
    cert_path, key_path, ca_path = (os.path.join(directory, n) for n in (CERT_FILE, KEY_FILE, CA_FILE))
    if CERT_FILE in data:
        ident.chain = _certificates(data[CERT_FILE], cert_path, "certificate", found)
    if CA_FILE in data:
        ident.bundle = _certificates(data[CA_FILE], ca_path, "CA certificate", found)
    key = _key(data[KEY_FILE], key_path, found) if KEY_FILE in data else None
    if not ident.chain:
        return ident
    leaf = ident.chain[0]
    _validity(leaf, cert_path, "the certificate", now, found, fix)
    _identity(leaf, cert_path, spiffe_id, found, fix)
    if key is not None and _public(key.public_key()) != _public(leaf.public_key()):
        found.append(Finding("H0107", "error", key_path,
                             f"{key_path} is not the key of {cert_path}",
                             "write the certificate and its key together (a rename of the directory, as "
                             f"`{fix}` does), never one file after the other"))
    if ident.bundle:
        signer = chain_signer(ident.chain, ident.bundle)
        if signer is None:
            found.append(Finding("H0108", "error", cert_path,
                                 f"{cert_path} is not signed by {ca_path} (its issuer: "
                                 f"{leaf.issuer.rfc4514_string() or 'empty'})",
                                 f"issue it again from the mesh CA (`{fix}`), or put its CA into {ca_path}"))
        else:
            _validity(signer, ca_path, "the CA certificate that signed it", now, found, fix, warn=False)
    return ident


def chain_signer(chain: list[x509.Certificate], bundle: list[x509.Certificate]) -> x509.Certificate | None:
    """The certificate of `bundle` that `chain` (a leaf, then its intermediates) leads to, or None."""
    current = chain[0]
    rest = list(chain[1:])
    for _ in range(len(chain) + 1):
        for ca in bundle:
            if _signed(current, ca):
                return ca
        nxt = next((c for c in rest if _signed(current, c)), None)
        if nxt is None:
            return None
        rest.remove(nxt)
        current = nxt
    return None


def _signed(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False


def _read(path: str, found: list[Finding], fix: str) -> bytes | None:
    if not os.path.lexists(path):
        found.append(Finding("H0101", "error", path, f"{path} does not exist", f"make the identity files with `{fix}`"))
        return None
    if not os.path.exists(path):
        found.append(Finding("H0101", "error", path, f"{path} is a link to a file that does not exist "
                                                     f"({os.readlink(path)})", f"make the identity files with `{fix}`"))
        return None
    if not os.path.isfile(path):
        found.append(Finding("H0102", "error", path, f"{path} is not a regular file"))
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as err:
        found.append(Finding("H0102", "error", path, f"cannot read {path}: {(err.strerror or str(err)).lower()}",
                             "run `meshc doctor` as the user the sidecar runs as; the proxies need to read it"))
        return None


def _certificates(pem: bytes, path: str, what: str, found: list[Finding]) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
        for cert in certs:
            _ = cert.extensions           # parsed lazily: a broken one surfaces here
    except ValueError:
        found.append(Finding("H0103", "error", path, f"{path} holds no valid PEM {what}"))
        return []
    return certs


def _key(pem: bytes, path: str, found: list[Finding]):
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):      # TypeError: an encrypted key
        found.append(Finding("H0103", "error", path, f"{path} holds no unencrypted PEM private key",
                             "the proxies read the key without a passphrase"))
        return None


def _public(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _validity(cert: x509.Certificate, path: str, what: str, now: dt.datetime, found: list[Finding], fix: str,
              warn: bool = True) -> None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        found.append(Finding("H0104", "error", path, f"{what} in {path} is not valid before {when(start)} "
                                                     f"(in {_span(start - now)}; is this host's clock right?)"))
    elif now >= end:
        found.append(Finding("H0104", "error", path, f"{what} in {path} expired at {when(end)} "
                                                     f"({_span(now - end)} ago)",
                             f"rotate it (`meshc ca rotate`, or `{fix}` again)"))
    elif warn and end - now < min(EXPIRY_WARNING, (end - start) / 3):
        found.append(Finding("H0105", "warning", path, f"{what} in {path} expires at {when(end)} "
                                                       f"(in {_span(end - now)})",
                             "rotate it before then (`meshc ca rotate` from cron; both proxies reload it)"))


def _identity(cert: x509.Certificate, path: str, spiffe_id: str, found: list[Finding], fix: str) -> None:
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if uris == [spiffe_id]:
        return
    if not uris:
        got = "it has no URI SAN"
    elif len(uris) > 1:
        got = "it has several URI SANs (" + ", ".join(f"`{u}`" for u in uris) + "), so no one identity"
    else:
        got = f"its URI SAN is `{uris[0]}`"
    found.append(Finding("H0106", "error", path,
                         f"{path} is not this sidecar's identity: {got}, expected `{spiffe_id}`",
                         f"issue it for `{spiffe_id}` (`{fix}`)"))

