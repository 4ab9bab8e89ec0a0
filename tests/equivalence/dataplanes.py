"""The live layer of the equivalence suite: one interface, two real data planes.

Both data planes sit in front of the same loopback upstreams (`Upstreams`: one
tests/proxy_backend.Backend per endpoint placeholder `EP0`, `EP1`, ... and one for `APP`, the
sidecar's local application) and run the same generated policy text, rendered twice: with the
same `EPn`/`APP` ports but each plane's own `INBOUND`/`OUTBOUND`/`ADMIN` ports.

* `EnvoyPlane`: one real Envoy 1.40 per test session on the xds bootstrap of a first policy
  (`--reject-unknown-dynamic-fields --disable-hot-restart --concurrency 1`). A new policy is
  swapped in through Envoy's file-based dynamic configuration: each changed file (the SDS files
  of the sidecar's identity, then the CDS file, then `client/lds.json`, then the RDS file, shared
  `rds-outbound.json` or `client/rds-outbound.json` for a scope that is not the whole
  program: written before the listeners when they switch from one to another) is written
  elsewhere and renamed into place, and the swap waits, file by
  file, until the admin `/stats` counters say Envoy applied it (`update_attempt` moved and
  `update_rejected` did not; an SDS file is read when a listener or cluster first names it),
  then until no cluster or listener is warming. The listener ports are fixed for the session, so
  an LDS update replaces the listeners in place; every request uses a new connection, so none
  is left on a draining one. The compiler writes the sidecar's own CDS file (`xds/client/cds.json`:
  one sidecar compiled), the path the session's bootstrap names.
* `NativePlane`: the native proxy as a real process (`python -m runtime_proxy CONFIG`), swapped
  by renaming a new config over its file and asking the admin listener to reload it (`POST
  /reload`, the same path as SIGHUP and the file poll, but answered once the load is over), then
  checking that `/config` reports the new `version`.

Both compile with `--certs-dir` pointing at the session's identity files
(tests/equivalence/identities.py), so the sidecar's inbound listener runs the policy's mTLS mode
with a certificate of the session CA, and an inbound request whose `caller` is set connects with
that caller's certificate (one client context per caller for the session), after checking that
the listener presented the sidecar's own SPIFFE ID.

`observe` sends one `GenRequest` through one plane with a raw socket (the target goes on the wire
exactly as generated; repeated headers as separate lines), with a fresh `x-test-id` and the
request's `Fail` as `x-test-*` headers, and `Batch.observations` turns what the client and the
upstreams saw into one normalised, comparable `Observation` per request. A connection the
listener refuses (a plaintext caller of a `strict` listener, a TLS caller of a plaintext one) is
status 0, "refused", the same observation on both planes.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from envoy_eval.decisions import REFUSED
from envoy_eval.evaluator import EnvoyModel
from tests.envoy_support import Envoy, free_port, terminate
from tests.equivalence.compile import SIDECAR, Compiled, compile_text
from tests.equivalence.identities import SessionCerts
from tests.equivalence.policies import MATCH_HEADERS, RESPONSE_HEADERS, SET_HEADERS, XFCC, GenPolicy, GenRequest
from tests.mtls_support import peer_id
from tests.proxy_backend import Backend

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ENDPOINTS = 12          # EP0 .. EP11: enough for the largest generated policy
APP_LABEL = "app"       # the serving "subset" of the sidecar's local application
MIRROR_WAIT = 0.15      # mirrors are fire-and-forget: one wait per batch before collecting them

# Request headers each proxy adds with a per-request value: not part of the comparison
# (`x-envoy-expected-rq-timeout-ms` is the time left, which differs by a few ms; `x-test-id` is
# ours and differs per plane). Everything else is compared, fixed values the proxies add
# included (`x-forwarded-proto`, `x-envoy-attempt-count`, `content-length: 0`); the trace headers
# (`x-request-id`, `traceparent`) by what they mean (`trace_semantics`).
_VOLATILE_REQUEST = ("x-envoy-expected-rq-timeout-ms", "x-test-id")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Response headers that vary per request or only frame the message (the body of a proxied
# response is the upstream's echo, whose length varies with the request id).
_VOLATILE_RESPONSE = ("date", "x-envoy-upstream-service-time", "content-length", "connection",
                      "keep-alive", "transfer-encoding")


# ---- upstreams ------------------------------------------------------------------------------------

class Upstreams:
    """One Backend per endpoint placeholder plus the application; names are the placeholders."""

    def __init__(self, endpoints: int = ENDPOINTS):
        self.eps = [Backend(f"EP{i}") for i in range(endpoints)]
        self.app = Backend("APP")
        self.otlp = Backend("OTLP")       # where a tracing policy's spans go (answered 200, not compared)
        self.backends = self.eps + [self.app, self.otlp]

    def ports(self) -> dict[str, int]:
        out = {f"EP{i}": b.port for i, b in enumerate(self.eps)}
        out["APP"] = self.app.port
        out["OTLP"] = self.otlp.port
        return out

    def drain_records(self) -> dict[str, list[dict]]:
        """Every request the upstreams received since the last call, by `x-test-id`, in arrival
        order (each record gets `backend` = the placeholder name)."""
        out: dict[str, list[dict]] = {}
        for b in self.backends:
            with b.lock:
                reqs, b.requests = b.requests, []
            for r in reqs:
                tid = next((v for n, v in r["headers"] if n == "x-test-id"), None)
                if tid is not None:
                    out.setdefault(tid, []).append(r)
        return out

    def stop(self) -> None:
        for b in self.backends:
            b.stop()


def subset_label(policy: GenPolicy, backend: str | None) -> str | None:
    """`service.subset` of a backend placeholder name under `policy`."""
    if backend is None:
        return None
    if backend == "APP":
        return APP_LABEL
    if backend.startswith("EP") and backend[2:].isdigit():
        index = int(backend[2:])
        for ep in policy.endpoints:
            if ep.index == index:
                return ep.label
    return f"?{backend}"


# ---- the data planes --------------------------------------------------------------------------

class Plane:
    name = "?"
    ports: dict[str, int]        # INBOUND, OUTBOUND, ADMIN
    certs_dir: str | None = None

    def render(self, policy: GenPolicy, upstream_ports: dict[str, int]) -> str:
        return policy.render(dict(upstream_ports, **self.ports))

    def port(self, kind: str) -> int:
        return self.ports["INBOUND" if kind == "inbound" else "OUTBOUND"]


class SwapError(RuntimeError):
    pass


class EnvoyPlane(Plane):
    """One Envoy for the session; policies swapped in by file-based xDS."""

    name = "envoy"
    CDS_STATS = "cluster_manager.cds."
    LDS_STATS = "listener_manager.lds."
    RDS_STATS = "http.outbound.rds.outbound."

    def __init__(self, policy: GenPolicy, upstream_ports: dict[str, int], certs_dir: str | None = None):
        self.dir = tempfile.mkdtemp(prefix="meshc-equivalence-envoy-")
        self.xds = os.path.join(self.dir, "xds")
        self.staging = os.path.join(self.dir, "staging")
        os.makedirs(os.path.join(self.xds, SIDECAR))
        os.makedirs(self.staging)
        self.ports = {"INBOUND": free_port(), "OUTBOUND": free_port(), "ADMIN": free_port()}
        self.upstream_ports = upstream_ports
        self.certs_dir = certs_dir
        compiled = self.compile(policy)
        self.cds_path = compiled.cds_path      # the one the bootstrap names, for the session
        self.rds_path: str | None = None       # the one the served listeners name (none yet)
        self.current: dict[str, bytes] = {}
        for rel, data, _ in self._files(compiled):
            self._put(rel, data)
        self.rds_path = compiled.rds_path
        boot = os.path.join(self.dir, f"{SIDECAR}.envoy.json")
        with open(boot, "wb") as fh:
            fh.write(compiled.envoy[f"{SIDECAR}.envoy.json"])
        self.envoy = Envoy(boot, "--reject-unknown-dynamic-fields")
        self.swap_times: list[float] = []

    def compile(self, policy: GenPolicy) -> Compiled:
        return compile_text(self.render(policy, self.upstream_ports), xds_dir=self.xds, certs_dir=self.certs_dir)

    def _files(self, compiled: Compiled) -> list[tuple[str, bytes, str | None]]:
        """(path, content, stats prefix to wait on or None) in the order Envoy must see them: the
        secrets a listener or cluster names, then the clusters (at the session's CDS path), the
        listeners and their routes. The RDS file is the shared one or its scope's
        (compiler/ir/scope.py); when the new listeners name another one than the served
        ones, it is written before them and unwatched: the listener update subscribes to it."""
        out: list[tuple[str, bytes, str | None]] = [
            (rel, data, None) for rel, data in sorted(compiled.envoy.items()) if rel.startswith(f"xds/{SIDECAR}/sds")]
        rds = compiled.rds_path
        moved = rds != self.rds_path
        if moved:
            out.append((rds, compiled.envoy[rds], None))
        out.append((self.cds_path, compiled.envoy[compiled.cds_path], self.CDS_STATS))
        lds = f"xds/{SIDECAR}/lds.json"
        out.append((lds, compiled.envoy[lds], self.LDS_STATS))
        if not moved:
            out.append((rds, compiled.envoy[rds], self.RDS_STATS))
        return out

    def _put(self, rel: str, data: bytes) -> None:
        tmp = os.path.join(self.staging, rel.replace("/", "_"))
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.makedirs(os.path.dirname(os.path.join(self.dir, rel)), exist_ok=True)   # xds/scopes/KEY/
        os.replace(tmp, os.path.join(self.dir, rel))
        self.current[rel] = data

    def _stats(self) -> dict[str, int]:
        return self.envoy.stats("update_attempt|update_rejected|update_success|warming")

    def swap(self, compiled: Compiled) -> float:
        """Make `compiled` the served config; the seconds it took."""
        start = time.perf_counter()
        changed = False
        for rel, data, prefix in self._files(compiled):
            if self.current.get(rel) == data:
                continue
            if prefix is None:        # a secret, or routes no listener reads yet: read when one names them
                self._put(rel, data)
                continue
            changed = True
            before = self._stats()
            self._put(rel, data)
            deadline = time.monotonic() + 10
            while True:
                now = self._stats()
                if now.get(prefix + "update_rejected", 0) > before.get(prefix + "update_rejected", 0):
                    raise SwapError(f"envoy rejected {rel}:\n{self.envoy.output()[-2000:]}")
                if now.get(prefix + "update_attempt", 0) > before.get(prefix + "update_attempt", 0) and \
                        now.get(prefix + "update_success", 0) > before.get(prefix + "update_success", 0):
                    break
                if time.monotonic() > deadline:
                    raise SwapError(f"envoy did not apply {rel} in 10 s: {now}\n{self.envoy.output()[-2000:]}")
                time.sleep(0.0005)
        self.rds_path = compiled.rds_path
        if changed:
            deadline = time.monotonic() + 10
            while True:
                now = self._stats()
                if now.get("cluster_manager.warming_clusters", 0) == 0 and \
                        now.get("listener_manager.total_listeners_warming", 0) == 0:
                    break
                if time.monotonic() > deadline:
                    raise SwapError(f"envoy still warming after 10 s: {now}")
                time.sleep(0.0005)
        took = time.perf_counter() - start
        self.swap_times.append(took)
        return took

    def stop(self) -> None:
        self.envoy.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class NativePlane(Plane):
    """The native proxy as a real process for the session; policies swapped by renaming a new
    config over its file and `POST /reload`."""

    name = "native"

    def __init__(self, policy: GenPolicy, upstream_ports: dict[str, int], certs_dir: str | None = None):
        self.dir = tempfile.mkdtemp(prefix="meshc-equivalence-native-")
        self.path = os.path.join(self.dir, f"{SIDECAR}.native.json")
        self.ports = {"INBOUND": free_port(), "OUTBOUND": free_port(), "ADMIN": free_port()}
        self.upstream_ports = upstream_ports
        self.certs_dir = certs_dir
        compiled = self.compile(policy)
        self._put(compiled.native)
        self.version = compiled.native["version"]
        ports_file = os.path.join(self.dir, "ports.json")
        self.log_path = os.path.join(self.dir, "proxy.log")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "runtime_proxy", self.path,
                                          "--ports-file", ports_file, "--log-level", "warning",
                                          # MESHC_EQUIVALENCE_WORKERS=N: the native plane runs --workers N
                                          "--workers", os.environ.get("MESHC_EQUIVALENCE_WORKERS", "1")],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + 20
        while not os.path.exists(ports_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the native proxy did not start:\n{self.log()}")
            time.sleep(0.01)
        with open(ports_file) as fh:
            bound = json.load(fh)
        assert (bound["inbound"], bound["outbound"], bound["admin"]) == (
            self.ports["INBOUND"], self.ports["OUTBOUND"], self.ports["ADMIN"]), bound
        self.swap_times: list[float] = []

    def compile(self, policy: GenPolicy) -> Compiled:
        return compile_text(self.render(policy, self.upstream_ports), certs_dir=self.certs_dir)

    def _put(self, native: dict) -> None:
        tmp = os.path.join(self.dir, "next.json")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(native, fh)
        os.replace(tmp, self.path)

    def admin(self, path: str, method: str = "GET") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["ADMIN"], timeout=30)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def swap(self, compiled: Compiled) -> float:
        start = time.perf_counter()
        version = compiled.native["version"]
        self._put(compiled.native)
        status, body = self.admin("/reload", "POST")
        if status != 200:
            raise SwapError(f"native proxy refused the config: {body.decode(errors='replace')}")
        status, body = self.admin("/config")
        served = json.loads(body)["version"]
        if served != version:
            raise SwapError(f"native proxy serves version {served}, expected {version}")
        self.version = version
        took = time.perf_counter() - start
        self.swap_times.append(took)
        return took

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()[-4000:]

    def stop(self) -> None:
        terminate(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- sending requests -------------------------------------------------------------------------------

_ids = itertools.count(1)


def fail_headers(request: GenRequest) -> list[tuple[str, str]]:
    f = request.fail
    if f is None:
        return []
    out = [("x-test-fail-first", str(f.first))]
    if f.mode == "reset":
        out.append(("x-test-reset", "1"))
    elif f.mode == "delay":
        out += [("x-test-delay-ms", str(f.delay_ms)), ("x-test-status", str(f.status))]
    else:
        out.append(("x-test-status", str(f.status)))
    return out


@dataclass
class Sent:
    """What the client saw of one request through one plane (status 0: no HTTP response)."""
    test_id: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    error: str | None = None


@dataclass(frozen=True)
class CallerTls:
    """How an inbound request's caller connects: its client context, and the SPIFFE ID the
    listener must present (the sidecar's own)."""
    context: ssl.SSLContext
    server_id: str


class WrongServer(AssertionError):
    """The listener presented a certificate that is not the sidecar's identity."""


def send(port: int, request: GenRequest, test_id: str, timeout: float = 20, tls: CallerTls | None = None) -> Sent:
    """One request on a new connection, byte for byte as generated; over mTLS with `tls`."""
    lines = [f"{request.method} {request.target} HTTP/1.1", f"host: {request.host}"]
    lines += [f"{n}: {v}" for n, v in request.headers]
    lines.append(f"x-test-id: {test_id}")
    lines += [f"{n}: {v}" for n, v in fail_headers(request)]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                sock = tls.context.wrap_socket(sock)
            except (TimeoutError, ssl.SSLError, ConnectionError) as err:
                return Sent(test_id, REFUSED, [], b"", f"refused in the handshake: {type(err).__name__}: {err}")
            served = peer_id(sock)
            if served != tls.server_id:
                raise WrongServer(f"port {port} presented {served}, not {tls.server_id}")
        try:
            sock.sendall(data)
            resp = http.client.HTTPResponse(sock, method=request.method)
            resp.begin()
            body = resp.read()
        except (TimeoutError, http.client.HTTPException, ConnectionError, ssl.SSLError) as err:
            return Sent(test_id, REFUSED, [], b"", f"{type(err).__name__}: {err}")
        return Sent(test_id, resp.status, [(n.lower(), v) for n, v in resp.getheaders()], body)
    finally:
        sock.close()


# ---- observations ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Observation:
    status: int                                   # 0: no HTTP response (connection closed)
    subset: str | None                            # who answered; None for a local reply
    attempts: int                                 # upstream attempts (mirror copies not counted)
    target: str | None                            # request target the upstream saw (last attempt)
    headers: tuple[tuple[str, tuple[str, ...]], ...] | None   # upstream request headers (last attempt)
    response_headers: tuple[tuple[str, tuple[str, ...]], ...]
    body: bytes | None                            # body of a local reply
    mirror: str | None                            # subsets that received mirror copies, sorted, comma-joined
    error: str | None = field(default=None, compare=False)   # why there was no response (status 0)

    def lines(self) -> list[str]:
        out = [f"status {self.status}", f"subset {self.subset}", f"attempts {self.attempts}",
               f"target {self.target}", f"mirror {self.mirror}", f"body {self.body!r}"]
        if self.error:
            out.append(f"error {self.error}")
        out += [f"req  {n}: {list(v)}" for n, v in self.headers or ()]
        out += [f"resp {n}: {list(v)}" for n, v in self.response_headers]
        return out


def _grouped(pairs, drop) -> tuple[tuple[str, tuple[str, ...]], ...]:
    by: dict[str, list[str]] = {}
    for n, v in pairs:
        n = n.lower()
        if n in drop:
            continue
        by.setdefault(n, []).append(v)
    return tuple(sorted((n, tuple(v)) for n, v in by.items()))


def trace_semantics(pairs: list, request: GenRequest | None) -> list:
    """The forwarded trace headers as what they say rather than their random ids: an
    `x-request-id` the sidecar made is `<uuid, reason R>` (R: Envoy's trace reason at character
    14), one the caller sent is compared as sent apart from that character; a `traceparent` is
    `VERSION-<trace>-<span>-FLAGS` with each id `sent` (the caller's), `new` or invalid as it is."""
    sent = dict(request.headers) if request is not None else {}
    sent_rid, sent_tp = sent.get("x-request-id"), sent.get("traceparent", "").split("-")
    out = []
    for n, v in pairs:
        ln = n.lower()
        if ln == "x-request-id":
            if sent_rid is not None and len(v) == len(sent_rid) == 36 and \
                    v[:14] + v[15:] == sent_rid[:14] + sent_rid[15:]:
                v = f"<as sent, reason {v[14]}>"
            elif v != sent_rid and _UUID.fullmatch(v):
                v = f"<uuid, reason {v[14]}>"
        elif ln == "traceparent":
            parts = v.split("-")
            if len(parts) == 4 and v != sent.get("traceparent"):
                ids = ["sent" if len(sent_tp) == 4 and p == sent_tp[i] else ("new" if len(p) in (16, 32) else p)
                       for i, p in ((1, parts[1]), (2, parts[2]))]
                v = f"{parts[0]}-<{ids[0]}>-<{ids[1]}>-{parts[3]}"
        out.append((n, v))
    return out


def observation(policy: GenPolicy, sent: Sent, records: list[dict], head: bool = False,
                request: GenRequest | None = None) -> Observation:
    """The comparable view of one exchange. Who answered comes from the echo body (the policy
    may set or remove the upstream's `x-backend` header); a HEAD response has no body, so there
    the `x-backend` header or else the last attempt tells."""
    primary = [r for r in records if "-shadow" not in _host(r)]
    shadows = [r for r in records if "-shadow" in _host(r)]
    last = primary[-1] if primary else None
    backend = None
    if sent.body[:1] == b"{":
        try:
            backend = json.loads(sent.body).get("backend")
        except ValueError:
            pass
    elif head and sent.status and last is not None:
        header = next((v for n, v in sent.headers if n == "x-backend"), None)
        backend = header if header in _BACKEND_NAMES else last["backend"]
    # the upstream's own x-backend header names the endpoint: shown as its subset label
    response = [(n, subset_label(policy, v) if n == "x-backend" and v in _BACKEND_NAMES else v)
                for n, v in sent.headers]
    return Observation(
        status=sent.status,
        subset=subset_label(policy, backend),
        attempts=len(primary),
        target=last["target"] if last else None,
        headers=_grouped(trace_semantics(last["headers"], request), _VOLATILE_REQUEST) if last else None,
        response_headers=_grouped(response, _VOLATILE_RESPONSE),
        body=sent.body if backend is None else None,
        mirror=", ".join(sorted(str(subset_label(policy, r["backend"])) for r in shadows)) or None,
        error=sent.error,
    )


_BACKEND_NAMES = frozenset([f"EP{i}" for i in range(64)] + ["APP"])


def _host(record: dict) -> str:
    return next((v for n, v in record["headers"] if n == "host"), "")


class Batch:
    """The requests of one policy through several planes; observations once all were sent (and
    the mirror copies had time to arrive)."""

    def __init__(self, upstreams: Upstreams, policy: GenPolicy):
        self.upstreams = upstreams
        self.policy = policy
        self.sent: list[tuple[str, GenRequest, Sent]] = []

    def send(self, plane: Plane, request: GenRequest, tls: CallerTls | None = None) -> Sent:
        test_id = f"{plane.name}-{next(_ids)}"
        sent = send(plane.port(request.kind), request, test_id, tls=tls)
        self.sent.append((plane.name, request, sent))
        return sent

    def observations(self, wait: bool = True) -> list[tuple[str, GenRequest, Observation]]:
        if wait:
            time.sleep(MIRROR_WAIT)
        records = self.upstreams.drain_records()
        return [(name, req, observation(self.policy, sent, records.get(sent.test_id, []), req.method == "HEAD", req))
                for name, req, sent in self.sent]


def observe(plane: Plane, request: GenRequest, policy: GenPolicy, upstreams: Upstreams,
            tls: CallerTls | None = None) -> Observation:
    """One request through one plane, observed on its own (waits for a mirror copy)."""
    batch = Batch(upstreams, policy)
    batch.send(plane, request, tls)
    return batch.observations()[0][2]


# ---- a session: both planes, one policy at a time ----------------------------------------------------

@dataclass
class Compared:
    request: GenRequest
    envoy: Observation
    native: Observation
    problem: str | None          # None when the two agree
    model: str | None = None     # None when the model layer's Envoy evaluator predicted Envoy's observation
    decision: object = None      # that prediction (envoy_eval/decisions.Decision)


class Session:
    """The upstreams and both data planes, for one test session. `envoy` and `native` make the
    planes (called with the first policy, the upstream ports and the certificates' directory):
    by default the file-fed ones above; tests/equivalence/served.py has the planes fed by `meshc
    serve` (tests/test_equivalence_served.py). A native factory with `needs_envoy_plane` also gets
    the Envoy plane (`envoy=`): the native proxy fed by the Envoy plane's server."""

    def __init__(self, first: GenPolicy, envoy=None, native=None):
        self.upstreams = Upstreams()
        self.envoy = self.native = None
        self.certs_root = tempfile.mkdtemp(prefix="meshc-equivalence-certs-")
        try:
            self.certs = SessionCerts(self.certs_root)
            self.envoy = (envoy or EnvoyPlane)(first, self.upstreams.ports(), self.certs.certs_dir)
            native = native or NativePlane
            shared = {"envoy": self.envoy} if getattr(native, "needs_envoy_plane", False) else {}
            self.native = native(first, self.upstreams.ports(), self.certs.certs_dir, **shared)
        except BaseException:
            self.stop()
            raise
        self.planes = (self.envoy, self.native)

    def tls(self, request: GenRequest) -> CallerTls | None:
        """How the request's caller connects: with its certificate, or in plaintext (None)."""
        if request.caller is None:
            return None
        return CallerTls(self.certs.contexts[request.caller], self.certs.own_id)

    def load(self, policy: GenPolicy) -> tuple[Compiled, Compiled]:
        """Compile `policy` for both planes and swap it in."""
        ce = self.envoy.compile(policy)
        cn = self.native.compile(policy)
        self.compiled = ce
        self.compiled_native = cn    # what the native plane runs: the suite reads each request's features from it
        self.envoy.swap(ce)
        self.native.swap(cn)
        return ce, cn

    def run(self, policy: GenPolicy, requests: list[GenRequest]) -> list[Compared]:
        """Swap `policy` in, send every request through both planes (each plane's requests one
        after the other, the two planes side by side), and compare."""
        ce, cn = self.load(policy)
        sent: dict[str, list[Sent]] = {}

        failed: list[BaseException] = []

        def through(plane: Plane):
            out = []
            try:
                for r in requests:
                    out.append(send(plane.port(r.kind), r, f"{plane.name}-{next(_ids)}", tls=self.tls(r)))
            except BaseException as err:      # re-raised below, from the test's thread
                failed.append(err)
            sent[plane.name] = out

        worker = threading.Thread(target=through, args=(self.native,))
        worker.start()
        try:
            through(self.envoy)
        finally:
            worker.join()
        if failed:
            raise failed[0]
        if self.native.proc.poll() is not None:
            raise RuntimeError(f"the native proxy exited with {self.native.proc.returncode}:\n{self.native.log()}")
        if self.envoy.envoy.proc.poll() is not None:
            raise RuntimeError(f"envoy exited:\n{self.envoy.envoy.output()}")
        if has_mirror(cn.native):
            time.sleep(MIRROR_WAIT)
        records = self.upstreams.drain_records()
        model = EnvoyModel(ce, own_uri=self.certs.own_id, certs=self.certs.ders)
        out = []
        for i, r in enumerate(requests):
            head = r.method == "HEAD"
            oe = observation(policy, sent["envoy"][i], records.get(sent["envoy"][i].test_id, []), head, r)
            on = observation(policy, sent["native"][i], records.get(sent["native"][i].test_id, []), head, r)
            decision = model.decide(r, response=echo_response())
            out.append(Compared(r, oe, on, difference(decision, oe, on), model_difference(policy, decision, oe, head),
                                decision))
        return out

    def stop(self) -> None:
        for plane in (self.native, self.envoy):   # the native plane may be fed by the Envoy plane's server
            if plane is not None:
                plane.stop()
        self.upstreams.stop()
        shutil.rmtree(self.certs_root, ignore_errors=True)


def has_mirror(native: dict) -> bool:
    return any(r.get("mirror") and r["mirror"].get("percent", 0) > 0
               for s in native["services"] for r in s["routes"])


# ---- comparing ------------------------------------------------------------------------------------

def difference(decision, envoy: Observation, nat: Observation) -> str | None:
    """None when the observations agree; else what differs. A split whose pick is random (no key
    header, or a key that does not decide: the model layer's evaluator says so, and
    `model_difference` checks that evaluator against Envoy) only has to land, in both planes, on a
    target of the split with weight > 0."""
    from dataclasses import replace

    if envoy == nat:
        return None
    if envoy.subset != nat.subset and decision.candidates:
        labels = {_cluster_label(c) for c in decision.candidates}
        if envoy.subset in labels and nat.subset in labels and _anonymous(envoy) == _anonymous(nat):
            return None
        # arms with their own header changes (the model has no head before the draw): the heads
        # differ with the arm; the model layer compares them with the same draw on both sides
        varies = decision.upstream_headers is None and decision.response_headers is None
        if varies and envoy.subset in labels and nat.subset in labels and \
                replace(_anonymous(envoy), headers=None, response_headers=()) == \
                replace(_anonymous(nat), headers=None, response_headers=()):
            return None
    fields = [f for f in envoy.__dataclass_fields__ if getattr(envoy, f) != getattr(nat, f)]
    return "differ in: " + ", ".join(fields)


# Request headers whose upstream values the evaluator's prediction is checked on: the ones
# generated policies match on and change (tests/equivalence/policies.py).
_MODEL_REQUEST_HEADERS = frozenset(MATCH_HEADERS + SET_HEADERS)
_MODEL_RESPONSE_HEADERS = frozenset(RESPONSE_HEADERS) - {"x-backend"}


def _cluster_label(cluster: str) -> str:
    """`outbound|SUBSET|SERVICE` as an observation names it (the sidecar's own app: `app`)."""
    _, subset, service = cluster.split("|")
    return APP_LABEL if service == SIDECAR else f"{service}.{subset}"


def echo_response() -> tuple[tuple[str, str], ...]:
    """The response headers the upstream echo server sends (tests/proxy_backend.py), for the
    evaluator to apply the route's response changes to."""
    return (("x-backend", "EP"), ("content-type", "application/json"))


def model_difference(policy: GenPolicy, d, o: Observation, head: bool = False) -> str | None:
    """None when the model layer's Envoy evaluator (envoy_eval/evaluator.py) predicted
    what the real Envoy did with the request: the local reply and its body, or the subset (one of
    the split's when the pick is random), the target and the policy's request and response
    headers. This is what keeps the fast layer's evaluator honest."""
    if d.status == REFUSED:
        return None if o.status == REFUSED else "predicted a refused connection"
    if o.status == REFUSED:
        return "no response from Envoy"
    if d.status is not None:
        body = "" if head else d.body      # a response to HEAD has no body
        if (o.status, o.subset, (o.body or b"").decode("latin-1")) != (d.status, None, body):
            return f"predicted the local reply {d.status} {d.body!r}"
        if d.location is not None and dict(o.response_headers).get("location") != (d.location,):
            return f"predicted the location {d.location!r}"
        return None
    if o.subset is not None and d.kind == "outbound":
        labels = {_cluster_label(c) for c in (d.candidates or (d.cluster,))}
        if o.subset not in labels:
            return f"predicted the subset {sorted(labels)}"
    if o.target is not None and o.target != d.path:
        return f"predicted the upstream target {d.path!r}"
    if o.headers is not None and d.xfcc is not None:
        seen = dict(o.headers).get(XFCC, ())
        if seen != d.xfcc:
            return f"predicted {XFCC} {d.xfcc!r}"
    if o.headers is not None and d.upstream_headers is not None:
        seen = {n: v for n, v in o.headers if n in _MODEL_REQUEST_HEADERS}
        grouped: dict[str, list[str]] = {}
        for n, v in d.upstream_headers:
            if n in _MODEL_REQUEST_HEADERS:
                grouped.setdefault(n, []).append(v)
        if seen != {n: tuple(v) for n, v in grouped.items()}:
            return f"predicted the upstream request headers {sorted(grouped.items())}"
    if o.subset is not None and o.status < 300 and d.response_headers is not None:
        seen = {n: v for n, v in o.response_headers if n in _MODEL_RESPONSE_HEADERS}
        grouped = {}
        for n, v in d.response_headers:
            if n in _MODEL_RESPONSE_HEADERS:
                grouped.setdefault(n, []).append(v)
        if seen != {n: tuple(v) for n, v in grouped.items()}:
            return f"predicted the response headers {sorted(grouped.items())}"
    return None


def _anonymous(o: Observation) -> Observation:
    """`o` without who answered (for a random pick)."""
    from dataclasses import replace

    headers = tuple((n, tuple("*" if n == "x-backend" and v == o.subset else v for v in vs))
                    for n, vs in o.response_headers)
    return replace(o, subset="*", response_headers=headers)


def side_by_side(policy: GenPolicy, c: Compared) -> str:
    """The policy, the request and the two observations in two columns."""
    a, b = c.envoy.lines(), c.native.lines()
    width = max([len(x) for x in a] + [10])
    rows = [f"{'envoy':{width}} | native", "-" * (width + 10)]
    for x, y in itertools.zip_longest(a, b, fillvalue=""):
        rows.append(f"{x:{width}} {'|' if x == y else '#'} {y}")
    return (f"--- policy:\n{policy.text}\n--- request:\n{c.request.describe()}\n--- {c.problem}\n"
            + "\n".join(rows))


def model_report(policy: GenPolicy, c: Compared) -> str:
    """The policy, the request, what the evaluator predicted and what Envoy did."""
    return (f"--- policy:\n{policy.text}\n--- request:\n{c.request.describe()}\n--- the evaluator {c.model}\n"
            f"--- prediction:\n{c.decision}\n--- envoy observed:\n" + "\n".join(c.envoy.lines()))
