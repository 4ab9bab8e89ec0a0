"""Certificates over SDS (`meshc serve --ca DIR`): each sidecar's workload certificate, issued in
memory from the CA directory, its key, and the trust bundle, served as the two secrets every
sidecar already asks for (`identity`, `mesh_ca`) with the PEM inline; rotation before expiry;
and the trust model of the xDS channel (mutual TLS; a stream may only name a node of its client
certificate's identity). docs/control-plane.md, "Certificates over SDS".

- Issuing is lazy: a node's certificate is made when a stream of that node is admitted (its
  first request, after the identity check), in a worker thread, and kept in memory only: the
  server never writes a key. One certificate per service (a node id `SERVICE.SUBSET` is its
  service's sidecar, checked against and issued as that service); every stream of it gets it.
- A certificate lives `hours` (`--cert-hours`, as `meshc ca issue --hours`) and is replaced once
  ROTATE_AT of that lifetime has passed (a third left, as `meshc ca rotate`'s default): the new
  `identity` secret is a new SDS version pushed on the streams that are open.
- The server's own certificate (DNS SAN `meshc-control`, URI SAN `spiffe://TD/meshc/control`) is
  issued at start with the same lifetime and rotated the same way: gRPC asks for it at every
  handshake (`dynamic_ssl_server_credentials`), so new connections get the new one.

Imports `cryptography` (through compiler/ca/certs.py): only `meshc serve --ca` loads this module.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import threading
import time
from dataclasses import dataclass

import grpc
from cryptography import x509

from compiler.backends.envoy.names import CA_SECRET, CONTROL_SERVER_NAME, IDENTITY_SECRET, control_id
from compiler.ca import certs
from compiler.ca import files as ca_files
from compiler.control import protos
from compiler.control.snapshot import SECRET, NodeSnapshot
from compiler.control.versions import version_of

SERVER_NAME = CONTROL_SERVER_NAME                     # the DNS SAN (and TLS name) of the server's certificate
ROTATE_AT = 2 / 3                                     # of a certificate's lifetime: then it is replaced
DEFAULT_HOURS = 24.0


@dataclass(frozen=True)
class Issued:
    """One certificate the server issued and holds in memory."""
    spiffe_id: str
    cert_pem: bytes
    key_pem: bytes
    serial: str
    issued_at: float          # Unix seconds
    rotate_at: float          # Unix seconds: ROTATE_AT of the lifetime
    not_after: float


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def secrets_json(issued: Issued, ca_pem: bytes) -> dict[str, dict]:
    """The two secrets of a sidecar, by name, with the PEM inline (`inline_bytes`)."""
    return {
        IDENTITY_SECRET: {"@type": SECRET, "name": IDENTITY_SECRET, "tls_certificate": {
            "certificate_chain": {"inline_bytes": _b64(issued.cert_pem)},
            "private_key": {"inline_bytes": _b64(issued.key_pem)}}},
        CA_SECRET: {"@type": SECRET, "name": CA_SECRET,
                    "validation_context": {"trusted_ca": {"inline_bytes": _b64(ca_pem)}}},
    }


def needs_secrets(snap: NodeSnapshot) -> bool:
    """Whether a sidecar uses a certificate: the backend gave it the `identity` secret."""
    return IDENTITY_SECRET in snap.json.get(SECRET, {})


def peer_identity(context) -> str | None:
    """The SPIFFE ID of a gRPC peer's verified client certificate: its single URI SAN, read from
    the PEM gRPC puts in the auth context; None without a certificate or with no or several URIs."""
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return None
    try:
        return certs.cert_info(x509.load_pem_x509_certificate(pems[0])).spiffe_id
    except ValueError:
        return None


class Issuer:
    """The CA, the certificates issued from it (by service name) and the server's own certificate.

    `issue`/`rotate_due` run in worker threads; `apply`, `overlay` and the reads run on the event
    loop; the dictionaries are replaced entry by entry (one assignment), so readers see either
    the old or the new certificate of a node."""

    Error = certs.CaError   # what issuing raises (the CA expired)

    def __init__(self, ca_dir: str, hours: float = DEFAULT_HOURS):
        self.ca = ca_files.read_ca(ca_dir)          # CaError / CaFileError: reported by the CLI
        self.hours = hours
        self.issued: dict[str, Issued] = {}         # node id -> its current certificate
        # node id -> (snapshot, certificate, their overlay): an unchanged pair keeps its object, so
        # that a reload wakes only the streams whose snapshot changed (AdsServicer.publish)
        self._overlaid: dict[str, tuple[NodeSnapshot, Issued | None, NodeSnapshot]] = {}
        self.rotations = 0
        self.server: Issued = self._issue(control_id(self.ca.trust_domain), (SERVER_NAME,))
        self._server_changed = False
        self._lock = threading.RLock()              # one issue at a time (rotation and admission threads)

    @property
    def trust_domain(self) -> str:
        return self.ca.trust_domain

    # ---- issuing ---------------------------------------------------------------------------

    def _issue(self, spiffe_id: str, dns_names: tuple[str, ...] = ()) -> Issued:
        now = ca_files.utcnow()
        cert_pem, key_pem = certs.issue(self.ca, spiffe_id, self.hours, now, dns_names)
        info = certs.cert_info(certs.load_cert(cert_pem, "issued certificate"))
        start = now.timestamp()
        end = info.not_after.timestamp()
        return Issued(spiffe_id, cert_pem, key_pem, info.serial, start, start + (end - start) * ROTATE_AT, end)

    def issue(self, node: str, spiffe_id: str, now: float | None = None) -> Issued:
        """The certificate of `node` (SPIFFE ID `spiffe_id`): the one held when it is for that ID
        and not due at `now` (default: the current time), else a new one (in a worker thread:
        keygen and signing, 0.35 ms)."""
        now = time.time() if now is None else now
        with self._lock:
            held = self.issued.get(node)
            if held is not None and held.spiffe_id == spiffe_id and now < held.rotate_at:
                return held
            self.issued[node] = fresh = self._issue(spiffe_id)
            if held is not None:
                self.rotations += 1
            return fresh

    # The reads below run on the event loop while admissions add entries in worker threads: they
    # iterate a copy (`dict(...)`, atomic under the GIL), never the dictionary itself.

    def due(self, now: float) -> list[str]:
        return sorted(node for node, held in dict(self.issued).items() if now >= held.rotate_at)

    def rotate_due(self, now: float) -> list[str]:
        """Replace every certificate whose rotation time has come (the server's too); the nodes."""
        with self._lock:
            return self._rotate_due(now)

    def _rotate_due(self, now: float) -> list[str]:
        nodes = self.due(now)
        for node in nodes:
            self.issue(node, self.issued[node].spiffe_id, now)
        if now >= self.server.rotate_at:
            self.server = self._issue(control_id(self.ca.trust_domain), (SERVER_NAME,))
            self._server_changed = True
            self.rotations += 1
        return nodes

    def drop_due(self, now: float, keep: set[str]) -> list[str]:
        """Forget the due certificates of nodes with no stream open (not in `keep`) instead of
        rotating them: a node that comes back gets a new one when it is admitted."""
        with self._lock:
            gone = [node for node in self.due(now) if node not in keep]
            for node in gone:
                del self.issued[node]
            return gone

    def next_due(self) -> float:
        return min([self.server.rotate_at, *(held.rotate_at for held in dict(self.issued).values())])

    def forget(self, keep: set[str]) -> None:
        """Drop the certificates of nodes no longer in the program."""
        with self._lock:
            for node in [n for n in self.issued if n not in keep]:
                del self.issued[node]

    # ---- snapshots -------------------------------------------------------------------------

    def check(self, snapshots: dict[str, NodeSnapshot]) -> list[str]:
        """Problems that keep a program from being served with this CA: a service identity outside
        the CA's trust domain (no client certificate of this CA could name that node, and its
        certificate could not be issued), or one that is the control plane's own ID."""
        problems = []
        for node, snap in sorted(snapshots.items()):
            if snap.identity == control_id(self.trust_domain):
                problems.append(f"{node}: identity {snap.identity} is the control plane's own SPIFFE ID")
                continue
            try:
                certs.check_spiffe_id(snap.identity or "", self.trust_domain)
            except certs.CaError as err:
                problems.append(f"{node}: cannot issue its certificate from --ca: {err}")
        return problems

    def overlay(self, snap: NodeSnapshot) -> NodeSnapshot:
        """`snap` with its secrets from the CA: the node's certificate when one is issued for its
        identity, else no secret at all (it is issued when a stream of the node is admitted).
        A file-based secret is never served with --ca."""
        if not needs_secrets(snap):
            return snap
        held = self.issued.get(snap.node)
        last = self._overlaid.get(snap.node)
        if last is not None and last[0] is snap and last[1] is held:
            return last[2]   # the same snapshot and certificate: the same object (no stream is woken)
        named = secrets_json(held, self.ca.cert_pem) if held is not None and held.spiffe_id == snap.identity else {}
        # every other field (identity, subsets, ...) as it is: only the secrets change
        out = dataclasses.replace(snap, json=dict(snap.json), packed=dict(snap.packed), versions=dict(snap.versions))
        out.json[SECRET] = named
        out.packed[SECRET] = {name: protos.to_any(r) for name, r in sorted(named.items())}
        out.versions[SECRET] = version_of(out.packed[SECRET])
        self._overlaid[snap.node] = (snap, held, out)
        return out

    def apply(self, snapshots: dict[str, NodeSnapshot]) -> dict[str, NodeSnapshot]:
        return {node: self.overlay(snap) for node, snap in snapshots.items()}

    # ---- the channel -----------------------------------------------------------------------

    def credentials(self) -> grpc.ServerCredentials:
        """Mutual TLS: the server's certificate (replaced at rotation, for new handshakes), and a
        client certificate chaining to the CA required."""
        def fetch():   # called by gRPC's core at each handshake: cheap, no lock
            if not self._server_changed:
                return None
            self._server_changed = False
            return self._server_config()

        return grpc.dynamic_ssl_server_credentials(self._server_config(), fetch, require_client_authentication=True)

    def _server_config(self):
        return grpc.ssl_server_certificate_configuration([(self.server.key_pem, self.server.cert_pem)],
                                                         root_certificates=self.ca.cert_pem)

    def summary(self) -> dict:
        """What `meshc status` shows of the certificates (never a key)."""
        def one(held: Issued) -> dict:
            return {"spiffe_id": held.spiffe_id, "serial": held.serial, "issued_at": held.issued_at,
                    "rotate_at": held.rotate_at, "not_after": held.not_after}

        return {"trust_domain": self.trust_domain, "hours": self.hours, "rotations": self.rotations,
                "server": one(self.server), "nodes": {n: one(h) for n, h in sorted(dict(self.issued).items())}}


def when(t: float) -> str:
    return certs.when(dt.datetime.fromtimestamp(t, dt.UTC))
