"""The development certificate authority: a mesh CA and short-lived SPIFFE workload certificates.

Pure: PEM bytes and the current time in, PEM bytes and facts out; files are compiler/ca/files.py's
job. The certificate profiles are the ones verified against Envoy (BoringSSL), Python's ssl and
`openssl verify -x509_strict` (docs/identity.md): every verifier accepts them, strict ones included.
Only `meshc ca` imports this module, so no other command pays for loading `cryptography`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from compiler.language import defaults
from compiler.language.identity import DNS_LABEL, SPIFFE_ID, TRUST_DOMAIN
from compiler.language.identity import spiffe_id as default_id

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

BACKDATE = dt.timedelta(minutes=1)     # a workload cert is valid a minute early: clock skew between hosts
CA_BACKDATE = dt.timedelta(minutes=5)
SIGNING_KEYS = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                ed448.Ed448PrivateKey)  # keys that sign; DSA is deprecated everywhere


class CaError(Exception):
    """Bad input (an identity, a certificate, a CA): reported as `meshc: error: ...`, exit 1."""


class CaFileError(CaError):
    """A file that cannot be read or written: reported as `meshc: error: ...`, exit 2."""


@dataclass(frozen=True)
class Ca:
    """A loaded CA: what signing needs."""
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes  # the private key, of whatever type the CA uses
    trust_domain: str              # from the subject's O= (meshc writes it there)
    cert_pem: bytes                # as read: copied into every identity as the trust bundle


@dataclass(frozen=True)
class CertInfo:
    """The facts `meshc ca issue/rotate/show` report about a certificate (never its key)."""
    spiffe_id: str | None          # the single URI SAN, None if there is none (a CA) or several
    serial: str                    # hex
    subject: str                   # RFC 4514
    issuer: str
    not_before: dt.datetime        # aware, UTC
    not_after: dt.datetime
    is_ca: bool

    @property
    def lifetime(self) -> dt.timedelta:
        return self.not_after - self.not_before


def check_trust_domain(trust_domain: str) -> str:
    if not TRUST_DOMAIN.match(trust_domain):
        raise CaError(f"`{trust_domain}` is not a valid trust domain (a lower-case DNS name such as `shop.local`)")
    return trust_domain


def check_spiffe_id(spiffe_id: str, trust_domain: str) -> str:
    """The ID itself when it is a SPIFFE ID of `trust_domain`; CaError otherwise."""
    m = SPIFFE_ID.match(spiffe_id)
    if not m:
        raise CaError(f"`{spiffe_id}` is not a valid SPIFFE ID (write `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/NAME`)")
    if m.group(1) != trust_domain:
        raise CaError(f"`{spiffe_id}` is not in the CA's trust domain `{trust_domain}` "
                      f"(a CA only issues IDs of its own trust domain; `meshc ca init --trust-domain {m.group(1)}` "
                      "makes a CA for that one)")
    return spiffe_id


def default_spiffe_id(trust_domain: str, namespace: str | None, service: str) -> str:
    """The language's default identity of a service (compiler/language/identity.py)."""
    namespace = defaults.NAMESPACE if namespace is None else namespace
    if not DNS_LABEL.match(namespace):
        raise CaError(f"`{namespace}` is not a valid namespace name (namespaces are lower-case DNS labels)")
    return check_spiffe_id(default_id(trust_domain, namespace, service), trust_domain)


# ---- building ------------------------------------------------------------------------------

def new_ca(trust_domain: str, days: int, now: dt.datetime) -> tuple[bytes, bytes]:
    """A self-signed mesh CA (EC P-256): (cert PEM, key PEM). It signs leaves only (path length 0)."""
    check_trust_domain(trust_domain)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"meshc CA {trust_domain}")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - CA_BACKDATE).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
               # strict verifiers (X509_STRICT) need the SKI here to match the leaves' AKI
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    return encode_cert(builder.sign(key, hashes.SHA256())), encode_key(key)


def issue(ca: Ca, spiffe_id: str, hours: float, now: dt.datetime,
          dns_names: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """A workload certificate for `spiffe_id`, valid `hours` from now (backdated a minute, and
    never past the CA's own expiry): (cert PEM, key PEM). `dns_names` are added to the SAN (the
    control plane's own certificate carries `meshc-control`; workloads carry none)."""
    check_spiffe_id(spiffe_id, ca.trust_domain)
    if ca.cert.not_valid_after_utc <= now:
        raise CaError(f"the CA expired on {when(ca.cert.not_valid_after_utc)}: "
                      "make a new one with `meshc ca init --force` and issue every identity again")
    ca_end = ca.cert.not_valid_after_utc
    not_after = ca_end if hours >= (ca_end - now) / dt.timedelta(hours=1) else now + dt.timedelta(hours=hours)
    return build_leaf(ca, spiffe_id, now - BACKDATE, not_after, dns_names)


def build_leaf(ca: Ca, spiffe_id: str, not_before: dt.datetime, not_after: dt.datetime,
               dns_names: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """The workload profile with explicit validity (tests use it for expired certificates)."""
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
    names += [x509.DNSName(d) for d in dns_names]
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               # RFC 5280 4.2.1.6: the SAN must be critical when the subject is empty
               .add_extension(x509.SubjectAlternativeName(names), critical=True)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(digital_signature=True), critical=True)
               # both roles: a sidecar is a server inbound and a client outbound
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               # the CA key's public half is its certificate's (load_ca checks), typed as an issuer's
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False))
    return encode_cert(builder.sign(ca.key, _hash_for(ca.key))), encode_key(key)


def _key_usage(**on: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: on.get(n, False) for n in names})


def _hash_for(key):
    # EdDSA signs the message itself; every other key type signs a SHA-256 digest
    return None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()


def encode_cert(cert: x509.Certificate) -> bytes:
    """PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def encode_key(key) -> bytes:
    """PKCS#8 PEM, unencrypted (as Envoy and Python's ssl read it)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# ---- reading -------------------------------------------------------------------------------

def load_cert(pem: bytes, source: str) -> x509.Certificate:
    """The first certificate of a PEM file; CaError naming `source` when there is none."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise CaError(f"{source}: not a PEM certificate") from None
    try:
        _ = cert.extensions   # parsed lazily by cryptography: a broken one would surface later as a crash
    except ValueError as err:
        raise CaError(f"{source}: unreadable certificate extensions ({err})") from None
    return cert


def load_ca(cert_pem: bytes, key_pem: bytes, cert_source: str, key_source: str) -> Ca:
    """A CA from its files, checked: a CA certificate, the key that matches it, a trust domain."""
    cert = load_cert(cert_pem, cert_source)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # TypeError: an encrypted key
        raise CaError(f"{key_source}: not an unencrypted PEM private key") from None
    if not isinstance(key, SIGNING_KEYS):  # X25519, X448 and DH keys cannot sign; DSA ones Envoy cannot verify
        raise CaError(f"{key_source}: a {type(key).__name__.lstrip('_')} cannot sign certificates; "
                      "a CA needs an RSA, EC, Ed25519 or Ed448 key")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CaError(f"{cert_source}: not a CA certificate (no basic constraints `CA:TRUE`)")
    if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CaError(f"{key_source}: this key does not belong to the certificate {cert_source}")
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if len(orgs) != 1 or not TRUST_DOMAIN.match(str(orgs[0].value)):
        raise CaError(f"{cert_source}: cannot tell the CA's trust domain: its subject needs one `O=` "
                      "naming it (as `meshc ca init` writes)")
    return Ca(cert, key, str(orgs[0].value), cert_pem)


def cert_info(cert: x509.Certificate) -> CertInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(uris[0] if len(uris) == 1 else None, format(cert.serial_number, "x"),
                    cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
                    cert.not_valid_before_utc, cert.not_valid_after_utc, is_ca)


def issued_by(cert: x509.Certificate, ca: Ca) -> bool:
    """Whether the CA's key signed this certificate (false after `meshc ca init --force`)."""
    try:
        cert.verify_directly_issued_by(ca.cert)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


# ---- rotation ------------------------------------------------------------------------------

def rotation_due(info: CertInfo, now: dt.datetime, before: float) -> dt.datetime | None:
    """None when the certificate is due for rotation (less than `before` of its lifetime left),
    else the time when it will be."""
    due_at = info.not_after - info.lifetime * before
    return None if now >= due_at else due_at


def lifetime_hours(info: CertInfo) -> float:
    """The lifetime `meshc ca issue --hours` gave a certificate (its backdate taken off)."""
    return max((info.lifetime - BACKDATE) / dt.timedelta(hours=1), 1 / 60)


def when(t: dt.datetime) -> str:
    """How a time is printed: to the second, in UTC."""
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def span(delta: dt.timedelta) -> str:
    """A duration for people: `2d 3h`, `23h 59m`, `5m`, `12s`."""
    s = int(delta.total_seconds())
    if s >= 86400:
        return f"{s // 86400}d {s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 60}m" if s >= 60 else f"{s}s"
