"""`meshc serve`: compile the program, publish a consistent snapshot per sidecar, serve ADS,
and recompile on SIGHUP or when a file of the program changes (polled mtimes). An edit that
does not compile, or whose snapshot is inconsistent, keeps the last good snapshot served."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from collections.abc import Callable

import grpc
import grpc.aio
from envoy.service.discovery.v3 import ads_pb2_grpc

from compiler import api
from compiler.control import consistency, protos, snapshot, status
from compiler.control.ads import AdsServicer
from compiler.control.versions import version_of

# A DiscoveryRequest is small (a node, a type URL, names, a nonce): a larger one ends its own stream
# with RESOURCE_EXHAUSTED before it is read.
MAX_REQUEST_BYTES = 1 << 20


# The sidecars a `published` line names; more are counted.
SHOWN = 10


class BuildError(Exception):
    """A program that does not give a servable snapshot: its diagnostics, or the problems found."""

    def __init__(self, diagnostics: list, problems: list[str], watched: list[str]):
        super().__init__("; ".join(problems))
        self.diagnostics = diagnostics
        self.problems = problems
        self.watched = watched


def watched(files: list[str], compilation) -> list[str]:
    """The files whose edits concern the program: those given and every file they import (the
    standard library aside)."""
    return sorted(set(files) | {p for p in compilation.sources if not p.startswith("<")})


def build(files: list[str], builder: snapshot.Builder | None = None,
          timings: dict[str, float] | None = None) -> tuple[dict[str, snapshot.NodeSnapshot], list, list[str]]:
    """Every sidecar's snapshot, checked for consistency, the compile's diagnostics (warnings)
    and the files to watch; raises BuildError when the program has errors or a snapshot is
    inconsistent. With the `builder` of the previous builds, only what changed is rebuilt (and
    checked: a sidecar whose snapshot is reused was checked when it was made); `timings`, when
    given, receives the seconds of each step."""
    builder = builder or snapshot.Builder()
    enabled = gc.isenabled()
    gc.disable()   # (the whole reload allocates objects that live on: collecting them, measured,
    try:           # tripled the time of the backend's emit of 1,000 sidecars)
        return _build(files, builder, timings)
    finally:
        if enabled:
            gc.enable()


def _build(files: list[str], builder: snapshot.Builder,
           timings: dict[str, float] | None) -> tuple[dict[str, snapshot.NodeSnapshot], list, list[str]]:
    started = time.perf_counter()
    compilation = api.compile(files, cache=builder.parses)
    compiled = time.perf_counter()
    watch = watched(files, compilation)
    if compilation.has_errors:
        raise BuildError(compilation.diagnostics, [], watch)
    try:
        snapshots = builder.build(compilation)
    except ValueError as err:
        raise BuildError(compilation.diagnostics, [str(err)], watch) from err
    if timings is not None:
        timings.update(compile=compiled - started, **builder.timings)
    problems = [p for node in builder.rebuilt for p in consistency.problems(snapshots[node], builder.references(node))]
    if problems:
        raise BuildError(compilation.diagnostics, problems, watch)
    return snapshots, compilation.diagnostics, watch


# Test-only (docs/control-plane.md): `MESHC_SERVE_TEST_CORRUPT=Cluster:NAME` makes the first
# good reload's snapshot carry cluster NAME with a combination Envoy parses but refuses (lb_policy
# CLUSTER_PROVIDED on a STATIC cluster), so that a real NACK can be provoked on purpose. Read by
# `meshc serve` only; anything but `Cluster:NAME` is ignored.
TEST_CORRUPT = "MESHC_SERVE_TEST_CORRUPT"


def corrupt(snapshots: dict[str, snapshot.NodeSnapshot], spec: str) -> list[str]:
    """Corrupt cluster NAME (`spec` is `Cluster:NAME`) in every node that has it; those nodes.
    Each such node's snapshot is replaced by a corrupted copy (the builder's own stays good, so
    the next reload serves the good one again)."""
    kind, _, name = spec.partition(":")
    touched: list[str] = []
    if kind != "Cluster":
        return touched
    for node, snap in snapshots.items():
        if name in snap.json.get(snapshot.CLUSTER, {}):
            bad = {**snap.json[snapshot.CLUSTER][name], "lb_policy": "CLUSTER_PROVIDED"}
            packed = {**snap.packed[snapshot.CLUSTER], name: protos.to_any(bad)}
            snapshots[node] = snapshot.NodeSnapshot(
                node, {**snap.json, snapshot.CLUSTER: {**snap.json[snapshot.CLUSTER], name: bad}},
                {**snap.packed, snapshot.CLUSTER: packed},
                {**snap.versions, snapshot.CLUSTER: version_of(packed)})
            touched.append(node)
    return touched


def release_memory() -> None:
    """Give the heap a build freed back to the system (glibc's `malloc_trim`; elsewhere nothing).
    A reload of 1,000 sidecars allocates some 100 MB that it frees again: measured, the server's
    resident set stays about 55 MB lower with this after each build."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def mtimes(files: list[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for path in files:
        try:
            out[path] = os.stat(path).st_mtime_ns
        except OSError:
            out[path] = None
    return out


def _diagnostic(d) -> dict:
    return {"severity": d.severity, "code": d.code, "message": d.message,
            "location": d.span.location() if d.span is not None else d.path}


class Server:
    """The grpc.aio server and the snapshot it serves (made on the event loop that runs it)."""

    def __init__(self, files: list[str], snapshots: dict[str, snapshot.NodeSnapshot],
                 report: Callable[[str, list, list[str]], None], watch: list[str], *,
                 builder: snapshot.Builder | None = None):
        self.files = files
        self.builder = builder or snapshot.Builder()   # what the last good build made, reused
        self.watch = watch   # the files and their imports, as of the last compile
        self.servicer = AdsServicer(snapshots, log=lambda line: report(line, [], []))
        self.report = report   # (event, diagnostics, problems) -> printed by the CLI
        self.grpc = grpc.aio.server(options=[("grpc.so_reuseport", 0),
                                             ("grpc.max_receive_message_length", MAX_REQUEST_BYTES)])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.servicer, self.grpc)
        self.grpc.add_generic_rpc_handlers((status.handler(self.status),))   # `meshc status`, same port
        self.started = time.time()
        self.last_reload: dict = {"ok": True, "at": self.started, "good_since": self.started,
                                  "diagnostics": [], "problems": []}
        self._seen = mtimes(watch)
        spec = os.environ.get(TEST_CORRUPT, "")   # test-only: corrupts the first reload's snapshot
        self._corrupt = spec if spec.startswith("Cluster:") else ""
        self._lock: asyncio.Lock   # made in run(), on the server's loop

    def status(self) -> dict:
        """What `meshc status` shows (compiler/control/status.py)."""
        return status.report(self.servicer, self.last_reload, self.started)

    def bind(self, address: str) -> int:
        """Listen on `address` (HOST:PORT); the port (0 asks for a free one). Raises OSError."""
        try:
            port = self.grpc.add_insecure_port(address)
        except RuntimeError as err:
            raise OSError(str(err)) from err
        if not port:
            raise OSError(f"cannot listen on {address}")
        return port

    async def reload(self) -> bool:
        """Recompile and publish; False (the last good snapshot kept) when that fails. The compile
        runs in a worker thread, so the streams go on meanwhile; reloads run one at a time."""
        async with self._lock:
            started = time.monotonic()
            before = mtimes(self.watch)
            try:
                timings: dict[str, float] = {}
                snapshots, diagnostics, self.watch = await asyncio.to_thread(build, self.files, self.builder, timings)
            except BuildError as err:
                self.watch = err.watched
                self._seen = {**mtimes(err.watched), **before}
                self.report("rejected", err.diagnostics, err.problems)
                self.last_reload = {"ok": False, "at": time.time(), "good_since": self.last_reload["good_since"],
                                    "diagnostics": [_diagnostic(d) for d in err.diagnostics
                                                    if d.severity == "error"],
                                    "problems": err.problems}
                return False
            self._seen = {**mtimes(self.watch), **before}
            if self._corrupt:
                spec, self._corrupt = self._corrupt, ""
                self.report(f"test-only: corrupted {spec} for {', '.join(corrupt(snapshots, spec)) or 'no node'}",
                            [], [])
            changed = sorted(n for n, s in snapshots.items()
                             if n not in self.servicer.snapshots or self.servicer.snapshots[n].versions != s.versions)
            self.servicer.publish(snapshots)
            now = time.time()
            self.last_reload = {"ok": True, "at": now, "good_since": now, "diagnostics": [], "problems": []}
            shown = ", ".join(changed[:SHOWN]) + (f" and {len(changed) - SHOWN} more" if len(changed) > SHOWN else "")
            steps = ", ".join(f"{step} {seconds * 1000:.0f}" for step, seconds in timings.items())
            self.report(f"published ({len(changed)} sidecar(s) changed: {shown or 'none'}; "
                        f"{(time.monotonic() - started) * 1000:.0f} ms: {steps} ms)", diagnostics, [])
            await asyncio.to_thread(release_memory)   # (after the publish: the pushes go first)
            return True

    async def run(self, watch_interval: float, ready: Callable[[], None] = lambda: None) -> None:
        """Serve until SIGINT or SIGTERM; reload on SIGHUP, and when a file changes if polling.
        `ready` is called once the signals are handled and the server has started."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self._lock = asyncio.Lock()
        reloads: set[asyncio.Task] = set()

        def on_sighup() -> None:
            task = asyncio.ensure_future(self.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_sighup)
        await self.grpc.start()
        ready()
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), watch_interval if watch_interval > 0 else None)
                except TimeoutError:
                    if mtimes(self.watch) != {p: self._seen.get(p) for p in self.watch}:
                        await self.reload()
        finally:
            for task in reloads:
                task.cancel()
            await self.grpc.stop(0.5)
