"""Who the caller is, over mutual TLS: pure decisions on a verified peer certificate (as
`ssl.SSLSocket.getpeercert()` shows it) and on the first byte a client sends. The TLS contexts,
the handshakes and the rotation are runtime_proxy/net/tls.py's."""

from __future__ import annotations

from typing import Any

TLS_HANDSHAKE = 0x16   # the first byte of a TLS record carrying a ClientHello


def accepts(mode: str, tls: bool) -> bool:
    """Whether the inbound listener takes a connection that opens with TLS (`tls`) or plaintext:
    `strict` closes a plaintext client; `permissive` takes both; `disable` serves plaintext only
    (a TLS client's ClientHello gets the HTTP parser's 400, which no TLS client reads as an answer)."""
    if mode == "disable":
        return not tls
    return tls or mode == "permissive"


def uri_sans(cert: dict[str, Any] | None) -> list[str]:
    """The URI subject alternative names of a certificate as `getpeercert()` returns it."""
    if not cert:
        return []
    return [v for k, v in cert.get("subjectAltName", ()) if k == "URI"]


def peer_identity(cert: dict[str, Any] | None) -> str | None:
    """A SPIFFE ID is the certificate's only URI SAN: none, or several, is no identity."""
    uris = uri_sans(cert)
    return uris[0] if len(uris) == 1 else None


def xfcc_line(own_id: str, der: bytes, cert: dict[str, Any] | None) -> bytes:
    """The `x-forwarded-client-cert` header line for the local application, as Envoy writes it with
    SANITIZE_SET and `uri: true`: By (our URI SAN), Hash (hex SHA-256 of the peer certificate's
    DER), URI (the peer's first URI SAN; the key stays when it is empty)."""
    import hashlib  # here: a plaintext sidecar never loads it (0.7 MB of RSS)

    uris = uri_sans(cert)
    parts = []
    if own_id:
        parts.append("By=" + own_id)
    parts.append("Hash=" + hashlib.sha256(der).hexdigest())
    parts.append("URI=" + (uris[0] if uris else ""))
    return b"x-forwarded-client-cert: " + ";".join(parts).encode("latin-1", "replace") + b"\r\n"


