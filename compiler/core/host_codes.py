"""The codes of `meshc doctor`'s findings: facts of the host a sidecar is to run on (its identity
files, its listener ports), not of a program, so they are not compiler diagnostics: `meshc check`
never reports them, and `meshc explain` does not list them. docs/identity.md ("Checking a host:
meshc doctor") describes each; only `meshc doctor` (and the renderers, for a finding) loads this
module.

H01xx: a sidecar's identity files (cert.pem, key.pem, ca.pem), as Envoy and the native proxy will
use them. H02xx: the sidecar's listeners.
"""

from __future__ import annotations

# (code, severity, title, explanation); compiler/core/codes.py's code_info() makes them Codes
HOST_CODES: tuple[tuple[str, str, str, str], ...] = (
    ("H0101", "error", "identity file missing",
         "A sidecar whose traffic uses mTLS has no certificate, key or trust bundle where its config says. The native "
         "proxy refuses to start; Envoy starts and fails every mTLS handshake of that sidecar."),
    ("H0102", "error", "identity file unreadable",
         "An identity file exists but cannot be read by this user (permissions, or not a regular file). Run `meshc "
         "doctor` as the user the sidecar runs as."),
    ("H0103", "error", "identity file does not parse",
         "cert.pem holds no PEM certificate, key.pem no unencrypted PEM private key, or ca.pem no PEM certificate."),
    ("H0104", "error", "certificate not valid now",
         "The sidecar's certificate (or the CA certificate that signed it) has expired, or is not valid yet: every "
         "peer refuses it in the handshake."),
    ("H0105", "warning", "certificate expires soon",
         "The sidecar's certificate expires within a day (one that lives a day or less: once less than a third of "
         "its life is left, when `meshc ca rotate` would renew it). Both proxies pick up a rotated certificate "
         "without a restart."),
    ("H0106", "error", "certificate of another identity",
         "The certificate's URI SAN is not exactly the service's SPIFFE ID (another ID, none, or several): callers "
         "that verify the destination's ID refuse the connection (503), and `from` rules see another caller."),
    ("H0107", "error", "key does not match the certificate",
         "key.pem is not the private key of cert.pem's public key: no handshake can complete."),
    ("H0108", "error", "certificate not signed by the trust bundle",
         "No certificate of the sidecar's ca.pem signed its certificate (through the intermediates in cert.pem): "
         "peers that trust the same bundle refuse it."),
    ("H0109", "error", "sidecars that do not trust each other",
         "One sidecar's ca.pem does not verify another checked sidecar's certificate, so the handshakes between "
         "them fail (issued by different CAs, or a CA replaced without every identity being issued again)."),
    ("H0201", "warning", "listener port in use",
         "Another process (or this sidecar, already running) listens on one of the sidecar's ports: a new sidecar "
         "could not bind it."),
    ("H0202", "warning", "listener address cannot be bound",
         "The sidecar's listen address and port cannot be bound on this host (an address of another host, or a "
         "privileged port for this user)."),
)
