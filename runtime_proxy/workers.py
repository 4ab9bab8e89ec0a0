"""`meshc proxy --workers N` (N > 1): a supervisor process and N forked worker processes.

The supervisor loads and checks the config once (the listeners' addresses are in it), reserves the
inbound and outbound ports (a bound socket with SO_REUSEPORT, so port 0 becomes one port for all),
binds the admin port, makes the shared state (net/shared.py: breakers, retry budgets, outlier
detection), and forks the workers. Each worker is the ordinary proxy (__main__.ProxyApp) on the
reserved ports, bound with SO_REUSEPORT (the kernel spreads new connections over the workers),
with a private admin listener on 127.0.0.1 that only the supervisor uses. Once every worker
listens, the supervisor closes its reservations, serves the admin port and writes the ports file.

The admin port shows the workers as one proxy (Envoy with `--concurrency N`): counters and the
per-worker gauges (`*_active`) are summed; what is shared or process-wide (breaker gauges,
ejections active, reload counts, the config and certificate) is shown once. `?worker=K` on any
admin path asks worker K alone; `/workers` lists them. A reload (SIGHUP, `POST /reload`, an xDS
update: the supervisor holds the one xDS helper process) reaches every worker; a changed config
file is seen by each worker's own poll. SIGTERM or SIGINT: /ready says DRAINING, every worker
drains, and the supervisor exits 0 when all have. A worker that dies unasked stops the proxy:
the others drain, and the supervisor exits 1 (a supervisor such as Kubernetes or systemd
restarts the whole proxy, with its ports).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from runtime_proxy.net.shared import Region

Answer = tuple[int, bytes, str]   # an admin answer: (status, body, content type), as net/admin.py's

log = logging.getLogger("runtime_proxy")

EXIT_OK, EXIT_CONFIG, EXIT_USAGE = 0, 1, 2    # as __main__'s

START_SECONDS = 60.0        # how long the workers may take to listen
ADMIN_TIMEOUT = 5.0         # a worker's answer to a reload, or to a request for it alone (?worker=K)
VIEW_TIMEOUT = 2.0          # a worker's part of /stats, /metrics, /clusters, /config, …
READY_TIMEOUT = 0.5         # a worker's /ready (a worker that does not answer is not ready)


@dataclass
class WorkerInfo:
    """What a worker knows of its place (args.worker in the worker)."""
    index: int
    region: Region
    poll: bool              # watch the config file (not with --xds-server: the supervisor says when)


# ---- merging the workers' admin answers (pure) --------------------------------------------------------

# flat /stats names (by suffix) that are one process-wide or shared value, not a per-worker part
SHARED_STATS = ("upstream_rq_pending_active", "circuit_breakers_default_remaining_retries",
                "outlier_detection.ejections_active", "server.config_reload_ok", "server.config_reload_rejected",
                "tls.rotation_ok", "tls.rotation_rejected", "tls.certificate.expiration_unix_time_seconds")
# Prometheus families shown once (the same in every worker)
SHARED_FAMILIES = frozenset((
    "envoy_cluster_upstream_rq_pending_active", "envoy_cluster_circuit_breakers_default_remaining_retries",
    "envoy_cluster_outlier_detection_ejections_active", "meshc_config_reloads_total", "meshc_config_info",
    "meshc_tls_rotations_total", "meshc_tls_certificate_info", "meshc_tls_certificate_expiration_unix_time_seconds"))


def merge_stats(parts: list[list[tuple[str, int]]]) -> list[tuple[str, int]]:
    """The /stats items of all workers as one proxy's, in the first worker's order."""
    order: dict[str, int] = {}
    for items in parts:
        for name, value in items:
            if name not in order:
                order[name] = value
            elif name.endswith(SHARED_STATS):
                order[name] = max(order[name], value)
            else:
                order[name] += value
    return list(order.items())


def merge_prometheus(parts: list[str]) -> str:
    """The Prometheus texts of all workers as one: each sample summed over the workers, except
    in the shared families (the largest value: they are the same)."""
    families: dict[str, tuple[list[str], dict[str, float]]] = {}   # name -> (comment lines, samples)
    current = ""
    for text in parts:
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                bits = line.split(" ", 3)
                current = bits[2] if len(bits) > 2 else current
                comments = families.setdefault(current, ([], {}))[0]
                if line not in comments:
                    comments.append(line)
                continue
            key, _, value = line.rpartition(" ")
            samples = families.setdefault(current, ([], {}))[1]
            v = float(value)
            if key in samples:
                samples[key] = max(samples[key], v) if current in SHARED_FAMILIES else samples[key] + v
            else:
                samples[key] = v
    out: list[str] = []
    for comments, samples in families.values():
        out += comments
        out += [f"{key} {int(v) if v == int(v) else v}" for key, v in samples.items()]
    return "\n".join(out) + "\n"


def merge_clusters(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """/clusters: breakers and ejections are shared (the first worker's); idle connections summed."""
    out = json.loads(json.dumps(parts[0]))
    for part in parts[1:]:
        for name, cluster in part.items():
            mine = out.setdefault(name, cluster)
            if mine is cluster:
                continue
            idle = mine.setdefault("idle_connections", {})
            for key, n in cluster.get("idle_connections", {}).items():
                idle[key] = idle.get(key, 0) + n
    return out


# ---- the supervisor -------------------------------------------------------------------------------------

class Worker:
    def __init__(self, index: int, pid: int, ports_file: str) -> None:
        self.index = index
        self.pid = pid
        self.ports_file = ports_file
        self.admin = 0            # its private admin port, once listening
        self.code: int | None = None

    async def ask(self, method: str, path: str, timeout: float = ADMIN_TIMEOUT) -> tuple[int, bytes, str]:
        """The worker's answer on its private admin port, read without holding up the supervisor's
        loop; OSError (TimeoutError after `timeout` s) when it does not answer."""
        async def exchange() -> tuple[int, bytes, str]:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.admin)
            try:
                writer.write(f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n"
                             "connection: close\r\n\r\n".encode("latin-1"))
                data = await reader.read()          # (the worker closes after its answer)
            finally:
                writer.close()
            head, sep, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = lines[0].split(" ", 2)
            if not sep or len(status) < 2 or not status[1].isdigit():
                raise ConnectionError("no HTTP answer")
            ctype = next((line.partition(":")[2].strip() for line in lines[1:]
                          if line.lower().startswith("content-type:")), "text/plain")
            return int(status[1]), body, ctype

        return await asyncio.wait_for(exchange(), timeout)


def _silent(w: Worker, what: str, err: BaseException, timeout: float) -> tuple[int, bytes, str]:
    """503 naming the worker that did not answer."""
    why = f"no answer within {timeout:g} s" if isinstance(err, TimeoutError) else (
        getattr(err, "strerror", None) or str(err) or type(err).__name__)
    return 503, f"worker {w.index} (pid {w.pid}) did not answer {what}: {why}\n".encode(), "text/plain"


class _Silent(Exception):
    def __init__(self, answer: tuple[int, bytes, str]) -> None:
        self.answer = answer


class Supervisor:
    """The admin view and the life of the workers (what admin.AdminProtocol needs of an app)."""

    def __init__(self, args: argparse.Namespace, workers: list[Worker], link: Any) -> None:
        self.args = args
        self.workers = workers
        self.link = link
        self.config_path = args.config
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # run() sets it
        self.draining = False
        self.failed = False
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def rt(self) -> Any:          # (admin.AdminApp; the supervisor has no runtime of its own)
        return None

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.code is None]

    # ---- admin ------------------------------------------------------------------------------------

    def admin_request(self, method: str, path: str, query: str) -> Answer | Awaitable[Answer]:
        """The admin view of all workers: at once when no worker need be asked, else an answer to
        come (admin.AdminProtocol awaits it; the loop goes on meanwhile, a worker that does not
        answer is named in a 503)."""
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        if "worker" in params:
            k = params.pop("worker")
            if not k.isdigit() or int(k) >= len(self.workers):
                return 404, f"no worker {k} (0-{len(self.workers) - 1})\n".encode(), "text/plain"
            rest = "&".join(f"{a}={b}" for a, b in params.items())
            return self._one(self.workers[int(k)], method, path + ("?" + rest if rest else ""), ADMIN_TIMEOUT)
        if path == "/workers":
            rows = [{"index": w.index, "pid": w.pid, "admin_port": w.admin, "running": w.code is None}
                    for w in self.workers]
            return 200, json.dumps(rows, indent=2).encode() + b"\n", "application/json"
        if path == "/ready":
            if self.draining:
                return 503, b"DRAINING\n", "text/plain"
            return self._ready()
        if path == "/":
            return 200, b"/ready /config /stats /metrics /clusters /certs /reload (POST) /workers; " \
                        b"?worker=K: one worker's own\n", "text/plain"
        if path in ("/stats", "/metrics", "/stats/prometheus", "/clusters"):
            return self._merged(path, query)
        live = self.live()
        if not live:
            return 503, b"no worker running\n", "text/plain"
        return self._one(live[0], method, path + ("?" + query if query else ""), VIEW_TIMEOUT)

    async def _one(self, w: Worker, method: str, target: str, timeout: float) -> Answer:
        try:
            return await w.ask(method, target, timeout)
        except OSError as err:
            return _silent(w, target, err, timeout)

    async def _ready(self) -> Answer:
        """LIVE when every worker says so, else 503 naming the first that does not (a worker that
        has exited, answers otherwise, or not within READY_TIMEOUT)."""
        async def one(w: Worker) -> str | None:   # why `w` is not ready, or None
            if w.code is not None:
                return f"worker {w.index} (pid {w.pid}) has exited"
            try:
                status = (await w.ask("GET", "/ready", READY_TIMEOUT))[0]
            except OSError as err:
                return _silent(w, "/ready", err, READY_TIMEOUT)[1].decode().strip()
            return None if status == 200 else f"worker {w.index} (pid {w.pid}) is not ready ({status})"

        for why in await asyncio.gather(*(one(w) for w in self.workers)):
            if why is not None:
                return 503, f"{why}\n".encode(), "text/plain"
        return 200, b"LIVE\n", "text/plain"

    async def _merged(self, path: str, query: str) -> Answer:
        """/stats, /metrics, /clusters of every running worker (asked side by side), as one proxy's."""
        target = {"/stats": "/stats?format=json", "/clusters": "/clusters"}.get(path, "/metrics")
        workers = self.live()

        async def part(w: Worker) -> bytes:
            try:
                status, body, _ = await w.ask("GET", target, VIEW_TIMEOUT)
            except OSError as err:
                raise _Silent(_silent(w, path, err, VIEW_TIMEOUT)) from None
            if status != 200:
                raise _Silent((503, f"worker {w.index} (pid {w.pid}) answered {path} with {status}\n".encode(),
                               "text/plain"))
            return body

        try:
            bodies = await asyncio.gather(*(part(w) for w in workers))
        except _Silent as silent:
            return silent.answer
        if path == "/stats":
            items = merge_stats([[(s["name"], s["value"]) for s in json.loads(b)["stats"]] for b in bodies])
            if "format=json" in query:
                return 200, json.dumps({"stats": [{"name": n, "value": v} for n, v in items]}).encode(), \
                    "application/json"
            return 200, "".join(f"{n}: {v}\n" for n, v in items).encode(), "text/plain"
        if path == "/clusters":
            views = [json.loads(b) for b in bodies]
            return 200, json.dumps(merge_clusters(views), indent=2).encode() + b"\n", "application/json"
        return 200, merge_prometheus([b.decode() for b in bodies]).encode(), "text/plain; version=0.0.4"

    def reload(self, reason: str, done: Any = None) -> None:
        """Reload every worker (each through its own reload path); done(ok, message) once all
        have answered: ok when every worker applied the config."""
        workers = self.live()
        log.info("config reload (%s): asking %d worker(s)", reason, len(workers))

        async def ask(w: Worker) -> tuple[Worker, int, str]:
            try:
                status, body, _ = await w.ask("POST", "/reload")
            except OSError as err:
                why = f"no answer within {ADMIN_TIMEOUT:g} s" if isinstance(err, TimeoutError) else err
                status, body = 503, f"did not answer: {why}".encode()
            return w, status, body.decode(errors="replace").strip()

        async def ask_all() -> None:   # the workers reload side by side
            answers = await asyncio.gather(*(ask(w) for w in workers))
            if all(status == 200 for _, status, _ in answers):
                ok, message = True, answers[0][2] if answers else "no worker"
            else:
                ok, message = False, "; ".join(f"worker {w.index}: {text}" for w, status, text in answers
                                               if status != 200)
            if done is not None:
                done(ok, message)

        task = self.loop.create_task(ask_all())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ---- signals and exits ---------------------------------------------------------------------------

    def forward(self, sig: signal.Signals) -> None:
        for w in self.live():
            try:
                os.kill(w.pid, sig)
            except ProcessLookupError:
                pass

    def shutdown(self, reason: str) -> None:
        if self.draining:
            return
        self.draining = True
        log.info("%s: draining %d worker(s)", reason, len(self.live()))
        if self.link is not None:
            self.link.stop()
        self.forward(signal.SIGTERM)

    def reap(self) -> None:
        for w in self.live():
            try:
                pid, status = os.waitpid(w.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = w.pid, 1 << 8
            if pid == 0:
                continue
            w.code = os.waitstatus_to_exitcode(status)
            if not self.draining:
                how = f"signal {-w.code}" if w.code < 0 else f"code {w.code}"
                log.error("worker %d (pid %d) exited unasked (%s): stopping the proxy", w.index, w.pid, how)
                self.failed = True
                self.shutdown("a worker died")
            elif w.code != 0:
                self.failed = True
        if not self.live():
            self.loop.stop()
            return
        self.loop.call_later(0.05, self.reap)


def _reserve(host: str, port: int) -> socket.socket:
    """A bound (not listening) socket with SO_REUSEPORT: the port the workers share."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _child_death_signal() -> None:
    """A worker ends (SIGTERM: it drains) when its supervisor is gone (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def supervise(args: argparse.Namespace, open_app: Callable[[argparse.Namespace, str], Any],
              write_atomic: Callable[[str, str], None], link: Any = None) -> int:
    """Run the proxy with args.workers workers; the exit code of the whole. `open_app` and
    `write_atomic` are __main__'s (which imports this module)."""
    from runtime_proxy.config import child
    from runtime_proxy.decide.table import TableError, compile_config

    n = args.workers
    try:
        table = compile_config(child.load(args.config))
    except child.LoadError as err:
        print(err.message, file=sys.stderr)
        return EXIT_CONFIG
    except TableError as err:
        print(f"{args.config}: invalid config: {err}", file=sys.stderr)
        return EXIT_CONFIG
    lst = table.listeners
    held: list[socket.socket] = []
    try:
        inbound = _reserve(lst.inbound[0], lst.inbound[1] if args.inbound_port is None else args.inbound_port)
        held.append(inbound)
        outbound = _reserve(lst.outbound[0], lst.outbound[1] if args.outbound_port is None else args.outbound_port)
        held.append(outbound)
        admin = socket.socket(socket.AF_INET6 if ":" in lst.admin[0] else socket.AF_INET, socket.SOCK_STREAM)
        held.append(admin)
        admin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        admin.bind((lst.admin[0], lst.admin[1] if args.admin_port is None else args.admin_port))
        admin.listen(128)
    except OSError as err:
        print(f"runtime_proxy: error: cannot listen: {err.strerror or err}", file=sys.stderr)
        for sock in held:
            sock.close()
        return EXIT_USAGE
    ports = {"inbound": inbound.getsockname()[1], "outbound": outbound.getsockname()[1],
             "admin": admin.getsockname()[1]}
    region = Region(n)
    tmp = tempfile.mkdtemp(prefix="meshc-workers-")
    workers: list[Worker] = []
    sys.stdout.flush()
    sys.stderr.flush()
    for i in range(n):
        ports_file = os.path.join(tmp, f"worker-{i}.json")
        pid = os.fork()
        if pid == 0:                       # the worker
            code = 1
            try:
                _child_death_signal()
                for sock in held:
                    sock.close()
                if link is not None:
                    link.forget()
                formatter = logging.Formatter(f"%(asctime)s runtime_proxy[worker {i}] %(levelname)s %(message)s")
                for handler in logging.getLogger().handlers:
                    handler.setFormatter(formatter)
                region.worker = i
                args.worker = WorkerInfo(i, region, poll=link is None)
                args.inbound_port, args.outbound_port, args.admin_port = ports["inbound"], ports["outbound"], 0
                args.ports_file = ports_file
                args.workers = 1
                app = open_app(args, args.config)
                if isinstance(app, str):
                    print(app, file=sys.stderr)
                    code = EXIT_CONFIG
                else:
                    code = app.run()
            except BaseException:          # never back into the supervisor's code
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        workers.append(Worker(i, pid, ports_file))

    sup = Supervisor(args, workers, link)
    loop = asyncio.new_event_loop()
    sup.loop = loop
    asyncio.set_event_loop(loop)
    server: asyncio.Server | None = None
    try:
        # every worker listening (or one failed: then stop the others, with its exit code)
        deadline = time.monotonic() + START_SECONDS
        while True:
            for w in workers:
                if w.code is None and not w.admin and os.path.exists(w.ports_file):
                    with open(w.ports_file, encoding="utf-8") as fh:
                        w.admin = json.load(fh)["admin"]
                if w.code is None:
                    pid, status = os.waitpid(w.pid, os.WNOHANG)
                    if pid:
                        w.code = os.waitstatus_to_exitcode(status)
            dead = [w for w in workers if w.code is not None]
            if dead or time.monotonic() > deadline:
                if not dead:
                    log.error("the workers did not all listen within %.0f s", START_SECONDS)
                for w in sup.live():
                    os.kill(w.pid, signal.SIGTERM)
                for w in sup.live():
                    os.waitpid(w.pid, 0)
                return dead[0].code if dead and dead[0].code else EXIT_USAGE
            if all(w.admin for w in workers):
                break
            time.sleep(0.02)
        for sock in (inbound, outbound):
            sock.close()
        from runtime_proxy.net.admin import AdminProtocol

        server = loop.run_until_complete(loop.create_server(lambda: AdminProtocol(sup), sock=admin))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, sup.shutdown, sig.name)
        loop.add_signal_handler(signal.SIGHUP, sup.forward, signal.SIGHUP)
        loop.add_signal_handler(signal.SIGUSR1, sup.forward, signal.SIGUSR1)
        if link is not None:
            link.attach(sup, loop)

        def announce() -> None:
            if args.ports_file:
                write_atomic(args.ports_file, json.dumps(dict(ports, pid=os.getpid(),
                                                              workers=[w.pid for w in workers])))
            log.info("listening: inbound %s:%d, outbound %s:%d, admin %s:%d; service %s, %d workers (pids %s)",
                     lst.inbound[0], ports["inbound"], lst.outbound[0], ports["outbound"], lst.admin[0],
                     ports["admin"], table.service, n, " ".join(str(w.pid) for w in workers))

        loop.call_soon(announce)
        loop.call_later(0.05, sup.reap)
        loop.run_forever()
    finally:
        if server is not None:
            server.close()
        admin.close()
        loop.close()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    log.info("stopped (%d workers)", n)
    return 1 if sup.failed else EXIT_OK
