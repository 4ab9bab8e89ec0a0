"""Mutual TLS: the sidecar's identity as TLS contexts, the peer's identity, and rotation.

An `Identity` is one generation of the identity files (cert.pem, key.pem, ca.pem): a server
context for the inbound listener, a client context for upstream connections, and what the
certificate says (its SPIFFE ID, serial, expiry). It is built fresh from the files and checked
before use: the key must match the certificate, the certificate must verify against the trust
bundle (an in-memory handshake of the two contexts with each other), and its one URI SAN must be
the sidecar's configured SPIFFE ID. A context is never changed once built: rotation builds a new
Identity and swaps it in (`Identities.poll`), so a bad pair can never break the one in use; a
connection keeps the context it was made with, and new handshakes get the new one.

Contexts trust only the mesh CA of the files (one trust domain). Python 3.11 cannot see the
verified chain, so a bundle of several CAs would let any of them mint any SPIFFE ID.

The peer's identity is the URI SAN of its verified certificate (exactly one, else none), read
once per connection, with the `x-forwarded-client-cert` line the local application gets
(Envoy's SANITIZE_SET with `uri`: `By=<own ID>;Hash=<sha256 of the peer certificate>;URI=<peer ID>`).
"""

from __future__ import annotations

import errno
import logging
import os
import ssl
import time
from typing import TYPE_CHECKING, Any

from runtime_proxy.decide.identity import uri_sans

if TYPE_CHECKING:
    from runtime_proxy.decide.table import IdentityFiles
    from runtime_proxy.net.metrics import TlsStats

log = logging.getLogger("runtime_proxy")

HANDSHAKE_TIMEOUT = 10.0      # seconds for a downstream TLS handshake (a stalled client is cut off)

# X509_V_ERR_* codes of a failed certificate verification -> the reason counted in metrics
_VERIFY_REASONS: dict[int | None, str] = {
    2: "unknown_ca",          # unable to get issuer certificate
    9: "not_yet_valid",
    10: "expired",
    18: "self_signed",        # depth-zero self-signed certificate
    19: "unknown_ca",         # self-signed certificate in the chain (another CA's root)
    20: "unknown_ca",         # unable to get local issuer certificate
    21: "unknown_ca",         # unable to verify the first certificate
    26: "bad_purpose",        # the certificate's extended key usage does not allow this side
}
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "PACKET_LENGTH_TOO_LONG",
                      "RECORD_LAYER_FAILURE"})
_VERSION = frozenset({"UNSUPPORTED_PROTOCOL", "VERSION_TOO_LOW", "TLSV1_ALERT_PROTOCOL_VERSION",
                      "NO_PROTOCOLS_AVAILABLE"})


class TlsError(Exception):
    """Identity files that cannot be used; the message says which file and why (one line)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def failure_reason(err: BaseException) -> str:
    """The metric label of a failed TLS handshake: `no_certificate`, `expired`, `unknown_ca`,
    `self_signed`, `not_yet_valid`, `bad_purpose`, `verify_failed`, `not_tls`, `protocol_version`,
    `peer_alert` (the peer refused us), `timeout`, `connection_closed` or `error`."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return _VERIFY_REASONS.get(getattr(err, "verify_code", None), "verify_failed")
    if isinstance(err, ssl.SSLError):
        reason = getattr(err, "reason", None) or ""
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "no_certificate"
        if reason in _NOT_TLS:
            return "not_tls"
        if reason in _VERSION:
            return "protocol_version"
        if reason.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_", "TLSV13_ALERT_")):
            return "peer_alert"
        if isinstance(err, ssl.SSLEOFError) or reason == "UNEXPECTED_EOF_WHILE_READING":
            return "connection_closed"
        return "error"
    # the event loop's handshake timeout aborts with ConnectionAbortedError("... taking longer ...")
    if isinstance(err, TimeoutError) or (isinstance(err, ConnectionAbortedError) and "longer" in str(err)):
        return "timeout"
    if isinstance(err, (ConnectionError, EOFError)) or getattr(err, "errno", None) in (errno.ECONNRESET, errno.EPIPE):
        return "connection_closed"
    return "error"


def serial_hex(cert: dict[str, Any] | None) -> str:
    """A certificate's serial as `meshc ca` shows it: lower-case hex, no leading zeros."""
    try:
        return format(int(cert["serialNumber"], 16), "x")  # type: ignore[index]  # None: the TypeError below
    except (KeyError, TypeError, ValueError):
        return ""


def describe(err: BaseException) -> str:
    """One line about a TLS error, for the log (no traceback)."""
    detail = getattr(err, "verify_message", None) or getattr(err, "reason", None) or getattr(err, "strerror", None)
    return str(detail or err or type(err).__name__)


# ---- contexts ---------------------------------------------------------------------------------

def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """The inbound listener's: TLS 1.2 or later, a client certificate from the mesh CA required,
    no session tickets (no resumption is offered, so the two tickets a TLS 1.3 server sends by
    default would only cost time)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.num_tickets = 0
    return ctx


def client_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """Upstream connections': our certificate, the server's chain verified against the mesh CA.
    No hostname check: mesh certificates name a SPIFFE ID (a URI SAN), which the connection
    compares itself (upstream.UpstreamConn.connection_made)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


def _self_handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[dict[str, Any], bytes]:
    """Shake hands between the two contexts in memory: each verifies the other's certificate
    (our own) against the trust bundle. The certificate as the client saw it, and its DER."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_side=False)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = [False, False]
    for _ in range(16):
        for i, obj in enumerate((c, s)):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done):
            break
    if not all(done):
        raise ssl.SSLError("the handshake did not complete")
    # TLS 1.3: the server checks the client's certificate on its last step, already done above
    return c.getpeercert(), c.getpeercert(True)  # type: ignore[return-value]  # verified: never None


class Identity:
    """One generation of the identity files, checked and ready."""
    __slots__ = ("server", "client", "uri", "serial", "not_after", "files", "loaded_at")

    def __init__(self, server: ssl.SSLContext, client: ssl.SSLContext, uri: str, serial: str, not_after: float,
                 files: IdentityFiles, loaded_at: float) -> None:
        self.server = server          # for the inbound listener
        self.client = client          # for upstream connections
        self.uri = uri                # our SPIFFE ID (the certificate's URI SAN)
        self.serial = serial          # serial_hex
        self.not_after = not_after    # expiry, seconds since the epoch
        self.files = files            # what these came from
        self.loaded_at = loaded_at

    def info(self) -> dict[str, Any]:
        return {"identity": self.uri, "serial": self.serial, "not_after": round(self.not_after),
                "cert": self.files.cert, "key": self.files.key, "ca": self.files.ca,
                "loaded_at": round(self.loaded_at, 3)}


def load_identity(files: IdentityFiles, identity: str) -> Identity:
    """Build and check fresh contexts from `files` (a table.IdentityFiles) for the SPIFFE ID
    `identity`; TlsError says what is wrong."""
    for what, path in (("certificate", files.cert), ("private key", files.key), ("trust bundle", files.ca)):
        try:
            with open(path, "rb"):
                pass
        except OSError as err:
            raise TlsError(f"cannot read the {what} {path}: {err.strerror or err}") from None
    try:
        server = server_context(files.cert, files.key, files.ca)
        client = client_context(files.cert, files.key, files.ca)
    except ssl.SSLError as err:
        raise TlsError(f"cannot load {files.cert} with {files.key} and {files.ca}: {describe(err)}") from None
    except (OSError, ValueError) as err:
        raise TlsError(f"cannot load {files.cert} with {files.key} and {files.ca}: {err}") from None
    try:
        cert, _der = _self_handshake(server, client)
    except ssl.SSLError as err:
        raise TlsError(f"{files.cert} does not verify against the trust bundle {files.ca}: {describe(err)}") from None
    uris = uri_sans(cert)
    if uris != [identity]:
        shown = ", ".join(f"`{u}`" for u in uris) or "none"
        raise TlsError(f"{files.cert} is not this sidecar's identity: its URI SAN is {shown}, expected `{identity}`")
    try:
        not_after = float(ssl.cert_time_to_seconds(cert["notAfter"]))
    except (KeyError, ValueError):
        not_after = 0.0
    return Identity(server, client, identity, serial_hex(cert), not_after, files, time.time())


# ---- rotation ---------------------------------------------------------------------------------

# what tells a changed file, for each of the three (None: it cannot be read)
FilesState = tuple[tuple[int, int, int] | None, ...]


def files_state(files: IdentityFiles) -> FilesState:
    """What tells a changed file: inode, modification time and size of each, following symlinks
    (a Kubernetes-style rotation swaps the `..data` link: every file gets another inode)."""
    out: list[tuple[int, int, int] | None] = []
    for path in (files.cert, files.key, files.ca):
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class Identities:
    """The active Identity of a sidecar and the watch on its files. `current` is what new
    handshakes use; `poll()` (once a second, from server.Runtime.sweep: one stat per file)
    rebuilds it when the files changed, and keeps the old one, with a log line, when the new
    files do not pass the checks."""

    def __init__(self, identity: Identity, stats: TlsStats) -> None:
        self.current = identity
        self.stats = stats
        self.state = files_state(identity.files)
        self.rejected_state: FilesState | None = None     # the file state last refused (logged once)
        stats.identity = identity

    @classmethod
    def load(cls, files: IdentityFiles, identity: str, stats: TlsStats) -> Identities:
        """At start: TlsError when the files cannot be used (the proxy does not start)."""
        return cls(load_identity(files, identity), stats)

    def replace(self, files: IdentityFiles, identity: str) -> None:
        """A config reload named other files or another identity: TlsError refuses the reload."""
        state = files_state(files)
        new = load_identity(files, identity)
        self._swap(new, state)

    def poll(self) -> None:
        files = self.current.files
        state = files_state(files)
        if state == self.state or state == self.rejected_state:
            return
        if None in state:    # a file is missing: in the middle of a rotation by hand, most likely
            return
        try:
            new = load_identity(files, self.current.uri)
        except TlsError as err:
            self.rejected_state = state
            self.stats.rotations_rejected += 1
            log.error("identity rotation refused, still serving serial %s: %s", self.current.serial, err.message)
            return
        self._swap(new, state)
        self.stats.rotations_ok += 1
        log.info("identity rotated: %s serial %s, valid until %s", new.uri, new.serial,
                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(new.not_after)))

    def _swap(self, new: Identity, state: FilesState) -> None:
        self.current = new
        self.state = state
        self.rejected_state = None
        self.stats.identity = new
