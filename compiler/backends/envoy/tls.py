"""Mutual TLS of the sidecars (docs/language.md §4.1): the SDS secrets, the TLS of the inbound
listener and the TLS of the outbound clusters.

A sidecar with an identity (`compiler.backends.needs_identity`) loads two secrets from two
file-based SDS files, one secret each (Envoy rejects a second secret in the same file:
"Unexpected SDS secrets length"):

    xds/SERVICE/sds-identity.json   `identity`: DIR/cert.pem and DIR/key.pem
    xds/SERVICE/sds-mesh_ca.json    `mesh_ca`: DIR/ca.pem, the CA every peer must chain to

where DIR is the sidecar's identity directory. Both secrets watch DIR: `meshc ca` rotates by
renaming `DIR/..data` (the Kubernetes secret-volume layout: DIR/cert.pem links to
..data/cert.pem), and a move in a watched directory makes Envoy read the files again; new
handshakes then present the new certificate, open connections keep theirs. (Envoy 1.40 watches
the directory of each file for moves even without `watched_directory`; naming it states what
the rotation relies on.) Files rewritten in place are not noticed.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler import ir
from compiler.backends.base import CA_FILE, CERT_FILE, KEY_FILE
from compiler.backends.envoy import names

# The listener filter that tells a TLS ClientHello from plaintext (`permissive`: one port, both).
TLS_INSPECTOR = {"name": names.TLS_INSPECTOR_FILTER, "typed_config": {"@type": names.TLS_INSPECTOR}}

# HCM settings of a TLS filter chain: the application sees who called, as
# `x-forwarded-client-cert: By=<own ID>;Hash=<SHA-256 of the peer certificate>;URI=<peer ID>`,
# and never a value sent by the caller. Plaintext chains keep Envoy's default, SANITIZE (removed).
CLIENT_CERT_DETAILS = {"forward_client_cert_details": "SANITIZE_SET", "set_current_client_cert_details": {"uri": True}}

DOWNSTREAM_TLS_PARAMS = {"tls_minimum_protocol_version": "TLSv1_2"}  # Envoy's maximum is already 1.3
# Envoy's upstream maximum is TLS 1.2 unless raised: both hops of a call then negotiate 1.3.
UPSTREAM_TLS_PARAMS = {"tls_maximum_protocol_version": "TLSv1_3", "tls_minimum_protocol_version": "TLSv1_2"}


@dataclass(frozen=True)
class Sds:
    """Where one sidecar's Envoy loads its two secrets from (absolute paths, at run time)."""
    identity: str
    ca: str


def sds_files(xds_dir: str, service: str) -> Sds:
    return Sds(f"{xds_dir}/{names.sds(service, names.IDENTITY_SECRET)}",
               f"{xds_dir}/{names.sds(service, names.CA_SECRET)}")


def secrets(directory: str) -> dict[str, dict]:
    """The two secrets of a sidecar whose identity files are in `directory`, by name."""
    watched = {"path": directory}
    return {
        names.IDENTITY_SECRET: {
            "name": names.IDENTITY_SECRET,
            "tls_certificate": {"certificate_chain": {"filename": f"{directory}/{CERT_FILE}"},
                                "private_key": {"filename": f"{directory}/{KEY_FILE}"},
                                "watched_directory": watched},
        },
        names.CA_SECRET: {
            "name": names.CA_SECRET,
            "validation_context": {"trusted_ca": {"filename": f"{directory}/{CA_FILE}"}, "watched_directory": watched},
        },
    }


def _secret_config(name: str, path: str) -> dict:
    """A reference to a secret of a file-based SDS file (Envoy watches the file itself and
    reloads it when a new one is renamed over it, as for the xds files)."""
    return {"name": name, "sds_config": {"path_config_source": {"path": path}, "resource_api_version": "V3"}}


def downstream_tls(sds: Sds) -> dict:
    """The inbound side: a client certificate chaining to the mesh CA is required; which peer may
    do what is the RBAC filters' decision, on the certificate's URI SAN."""
    return {"name": names.TLS_SOCKET, "typed_config": {
        "@type": names.DOWNSTREAM_TLS,
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [_secret_config(names.IDENTITY_SECRET, sds.identity)],
            "tls_params": DOWNSTREAM_TLS_PARAMS,
            "validation_context_sds_secret_config": _secret_config(names.CA_SECRET, sds.ca),
        },
        "require_client_certificate": True,
    }}


def upstream_tls(dest: ir.Service, sds: Sds) -> dict:
    """The outbound side, towards `dest`: present the sidecar's own certificate, and accept only
    a server certificate chaining to the mesh CA with exactly `dest`'s SPIFFE ID as a URI SAN.
    Anything else fails the connection (a connect failure: 503, retriable on `connect-failure`)."""
    return {"name": names.TLS_SOCKET, "typed_config": {
        "@type": names.UPSTREAM_TLS,
        "common_tls_context": {
            "combined_validation_context": {
                "default_validation_context": {
                    "match_typed_subject_alt_names": [{"matcher": {"exact": dest.identity}, "san_type": "URI"}],
                },
                "validation_context_sds_secret_config": _secret_config(names.CA_SECRET, sds.ca),
            },
            "tls_certificate_sds_secret_configs": [_secret_config(names.IDENTITY_SECRET, sds.identity)],
            "tls_params": UPSTREAM_TLS_PARAMS,
        },
        "sni": dest.sni,
    }}
