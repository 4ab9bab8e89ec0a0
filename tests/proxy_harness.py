"""Helpers for the proxy tests: hand-written native configs, the proxy as a subprocess, a client.

Configs are plain dicts in the shape of runtime_proxy/config/model.py (the contract the native
backend writes), so a test says exactly the policy it runs. `run_proxy` starts
`python -m runtime_proxy CONFIG --ports-file ...` with every listener on port 0 and waits for
the ports file; the proxy is stopped (SIGTERM, then SIGKILL) when the context ends.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- configs ------------------------------------------------------------------------------------

LOC = {"file": "t.mesh", "line": 1, "column": 1}
# What the compiler writes when a policy says nothing (compiler/language/defaults.py): Envoy's values.
UPSTREAM = {"connect_timeout_ms": 1000, "idle_timeout_ms": 3_600_000, "max_response_headers_bytes": 61_440}
LIMITS = {"max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3}
PROXY = {"max_request_headers": 100, "max_request_headers_bytes": 61_440, "max_request_body_bytes": 0,
         "idle_timeout_ms": 3_600_000, "request_headers_timeout_ms": 10_000, "stream_idle_timeout_ms": 300_000,
         "max_connections": 4096, "drain_timeout_ms": 5000}


def subset(name: str, ports, service: str) -> dict:
    return {"name": name, "cluster": f"outbound|{name}|{service}", "discovery": "static",
            "endpoints": [{"host": "127.0.0.1", "port": p} for p in ports], "source": LOC}


def route(name: str, to=None, split=None, matches=None, key_header=None, **extra) -> dict:
    r = {"name": name, "source": {"file": "t.mesh", "line": 1, "column": len(name)}, "matches": matches or [{}],
         "timeout_ms": 15000}
    if to is not None:
        r["to"] = {"service": to[0], "subset": to[1]}
    if split is not None:
        targets = [{"service": s, "subset": sub, "weight": w} for (s, sub), w in split]
        r["split"] = {"targets": targets, "total_weight": sum(w for _, w in split), "key_header": key_header}
    mirrors = extra.pop("mirrors", [])
    if extra.get("mirror") is not None:          # one mirror: `mirror=`, several: `mirrors=[...]`
        mirrors = [extra.pop("mirror")]
    extra.pop("mirror", None)
    if mirrors:   # a copy's timeout is the compiler's: the route timeout, or 15 s
        timeout = extra.get("timeout_ms", r["timeout_ms"]) or 15000
        extra["mirrors"] = [m if "timeout_ms" in m else dict(m, timeout_ms=timeout) for m in mirrors]
    r.update(extra)
    return r


def service(name: str, subsets: list[dict], routes: list[dict], port: int = 8000, **extra) -> dict:
    s = {"name": name, "namespace": "default", "identity": f"spiffe://test.local/ns/default/sa/{name}",
         "port": port, "domains": [name, f"{name}:{port}"], "sni": f"{name}.default", "source": LOC,
         "subsets": subsets, "limits": dict(LIMITS), "upstream": dict(UPSTREAM), "routes": routes, "mtls": False}
    s.update(extra)
    return s


def config(services: list[dict], app_port: int = 1, version: str = "v1", authorization=None,
           escaped_slashes: str = "reject", proxy=None, upstream=None) -> dict:
    """A whole config; `proxy` and `upstream` override some of the sidecar's limits on its clients
    and of every destination's (and the app's) connection settings."""
    up = dict(UPSTREAM, **(upstream or {}))
    services = [dict(s, upstream=dict(s["upstream"], **(upstream or {}))) for s in services]
    return {
        "schema_version": 3, "version": version, "service": "client", "namespace": "default",
        "identity": "spiffe://test.local/ns/default/sa/client",
        "listeners": {"inbound": {"host": "127.0.0.1", "port": 0}, "outbound": {"host": "127.0.0.1", "port": 0},
                      "admin": {"host": "127.0.0.1", "port": 0}},
        "app": {"host": "127.0.0.1", "port": app_port, "discovery": "static", "cluster": "inbound|client",
                "limits": dict(LIMITS), "upstream": up},
        "normalization": {"escaped_slashes": escaped_slashes},
        "proxy": dict(PROXY, **(proxy or {})),
        "authorization": authorization or {"default": "allow", "rules": []},
        "mtls": {"mode": "disable", "files": None},
        "services": sorted(services, key=lambda s: s["name"]),
    }


def write_config(path, cfg: dict) -> str:
    """Write atomically (a temporary file renamed over the path), as a deployment would."""
    path = str(path)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(cfg, fh)
    os.replace(tmp, path)
    return path


# ---- the proxy process ------------------------------------------------------------------------------

class Proxy:
    def __init__(self, proc: subprocess.Popen, ports: dict, log_path: str):
        self.proc = proc
        self.ports = ports
        self.inbound = ports["inbound"]
        self.outbound = ports["outbound"]
        self.admin = ports["admin"]
        self.log_path = log_path

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def admin_get(self, path: str, method: str = "GET") -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=5)
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read().decode()
        conn.close()
        return resp.status, body

    def stats(self) -> dict[str, int]:
        _, body = self.admin_get("/stats?format=json")
        return {s["name"]: s["value"] for s in json.loads(body)["stats"]}

    def stop(self, sig=signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_proxy(config_path: str, tmp_path, *extra: str, nofile: tuple[int, int] | None = None) -> Proxy:
    """`nofile`: the (soft, hard) limit on open files the proxy process starts with."""
    ports_file = os.path.join(str(tmp_path), f"ports-{time.monotonic_ns()}.json")
    log_path = ports_file + ".log"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def limit() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "runtime_proxy", str(config_path),
                                 "--ports-file", ports_file, *extra],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                preexec_fn=limit if nofile is not None else None)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if os.path.exists(ports_file):
            with open(ports_file) as fh:
                return Proxy(proc, json.load(fh), log_path)
        if proc.poll() is not None:
            with open(log_path) as fh:
                raise RuntimeError(f"proxy exited with {proc.returncode}: {fh.read()}")
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("proxy did not start")


@contextlib.contextmanager
def run_proxy(cfg: dict, tmp_path, *extra: str):
    path = write_config(os.path.join(str(tmp_path), f"cfg-{time.monotonic_ns()}.json"), cfg)
    proxy = start_proxy(path, tmp_path, *extra)
    proxy.config_path = path
    try:
        yield proxy
    finally:
        proxy.stop()


# ---- clients ------------------------------------------------------------------------------------

class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"Response({self.status}, {self.body[:200]!r})"


class Client:
    """A keep-alive HTTP/1.1 client (http.client) to one port."""

    def __init__(self, port: int, timeout: float = 10):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def request(self, method: str, path: str, headers=None, body: bytes | None = None,
                host: str = "svc") -> Response:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        h = {"Host": host}
        h.update(headers or {})
        try:
            self.conn.request(method, path, body=body, headers=h)
            resp = self.conn.getresponse()
            data = resp.read()
        except (ConnectionError, http.client.HTTPException, OSError):
            self.close()
            raise
        if resp.will_close:
            self.close()
        return Response(resp.status, resp.getheaders(), data)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def get(port: int, path: str, host: str = "svc", headers=None, method: str = "GET", body=None) -> Response:
    c = Client(port)
    try:
        return c.request(method, path, headers=headers, body=body, host=host)
    finally:
        c.close()


def raw_exchange(port: int, data: bytes, timeout: float = 3.0) -> bytes:
    """Send raw bytes; everything the proxy answers until it closes (or the timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except TimeoutError:
        pass
    finally:
        s.close()
    return out
