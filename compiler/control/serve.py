"""`meshc serve`: compile the program, publish a consistent snapshot per sidecar, serve ADS,
and recompile on SIGHUP or when a file of the program changes (polled mtimes). An edit that
does not compile, or whose snapshot is inconsistent, keeps the last good snapshot served."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import signal
import time
from collections.abc import Callable, Collection

import grpc
import grpc.aio
from google.protobuf import any_pb2

from compiler import api
from compiler.control import ads, consistency, protos, snapshot, status
from compiler.control.ads import AdsServicer, Limits, StreamError
from compiler.control.versions import version_of

# A DiscoveryRequest is small (a node, a type URL, names, a nonce): a larger one ends its own stream
# with RESOURCE_EXHAUSTED before it is read.
MAX_REQUEST_BYTES = 1 << 20
# The proxies ping the connection (HTTP/2 keepalive, every 5 s, bootstrap.py) to find a server
# that stopped answering; gRPC's default would answer a ping more often than every 5 minutes on
# a connection that sends no data with GOAWAY (`too_many_pings`).
KEEPALIVE = [("grpc.http2.min_recv_ping_interval_without_data_ms", 1000), ("grpc.http2.max_ping_strikes", 0),
             ("grpc.keepalive_permit_without_calls", 1)]


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


def build(files: list[str], builder: snapshot.Builder | None = None, timings: dict[str, float] | None = None,
          native: Collection[str] | None = None) -> tuple[dict[str, snapshot.NodeSnapshot], list, list[str]]:
    """Every sidecar's snapshot, checked for consistency, the compile's diagnostics (warnings)
    and the files to watch; raises BuildError when the program has errors or a snapshot is
    inconsistent. With the `builder` of the previous builds, only what changed is rebuilt (and
    checked: a sidecar whose snapshot is reused was checked when it was made); `timings`, when
    given, receives the seconds of each step; `native`: the services whose native config is
    built (None: every one)."""
    builder = builder or snapshot.Builder()
    enabled = gc.isenabled()
    gc.disable()   # (the whole reload allocates objects that live on: collecting them, measured,
    try:           # tripled the time of the backend's emit of 1,000 sidecars)
        return _build(files, builder, timings, native)
    finally:
        if enabled:
            gc.enable()


def _build(files: list[str], builder: snapshot.Builder, timings: dict[str, float] | None,
           native: Collection[str] | None) -> tuple[dict[str, snapshot.NodeSnapshot], list, list[str]]:
    started = time.perf_counter()
    compilation = api.compile(files, cache=builder.parses)
    compiled = time.perf_counter()
    watch = watched(files, compilation)
    if compilation.has_errors:
        raise BuildError(compilation.diagnostics, [], watch)
    try:
        snapshots = builder.build(compilation, native)
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
# CLUSTER_PROVIDED on a STATIC cluster), so that a real NACK can be provoked on purpose;
# `Native:NODE` makes node NODE's native config valid JSON that the proxy's contract refuses (the
# first route's `timeout_ms` -1). Read by `meshc serve` only; anything else is ignored.
TEST_CORRUPT = "MESHC_SERVE_TEST_CORRUPT"


def corrupt_native(snapshots: dict[str, snapshot.NodeSnapshot], node: str) -> list[str]:
    """Node `node`'s native config with its first route's `timeout_ms` at -1 (the contract wants
    >= 0); [node], or [] when it has no route."""
    snap = snapshots.get(node)
    config = snapshot.native_config(snap) if snap is not None else None
    route = next((r for svc in (config or {}).get("services", []) for r in svc["routes"]), None)
    if snap is None or route is None:
        return []
    route["timeout_ms"] = -1
    data = json.dumps(config, sort_keys=True, indent=2).encode() + b"\n"
    packed = {node: any_pb2.Any(type_url=snapshot.NATIVE, value=data)}
    # a copy: the builder's own snapshot stays good, so the next reload serves the good one again
    snapshots[node] = dataclasses.replace(snap, packed={**snap.packed, snapshot.NATIVE: packed},
                                          versions={**snap.versions, snapshot.NATIVE: version_of(packed)})
    return [node]


def corrupt(snapshots: dict[str, snapshot.NodeSnapshot], spec: str) -> list[str]:
    """Corrupt cluster NAME (`spec` is `Cluster:NAME`) in every node that has it, or node NODE's
    native config (`Native:NODE`); those nodes. Each such node's snapshot is replaced by a
    corrupted copy (the builder's own stays good, so the next reload serves the good one again)."""
    kind, _, name = spec.partition(":")
    touched: list[str] = []
    if kind == "Native":
        return corrupt_native(snapshots, name)
    if kind != "Cluster":
        return touched
    for node, snap in snapshots.items():
        if name in snap.json.get(snapshot.CLUSTER, {}):
            bad = {**snap.json[snapshot.CLUSTER][name], "lb_policy": "CLUSTER_PROVIDED"}
            packed = {**snap.packed[snapshot.CLUSTER], name: protos.to_any(bad)}
            snapshots[node] = dataclasses.replace(
                snap, json={**snap.json, snapshot.CLUSTER: {**snap.json[snapshot.CLUSTER], name: bad}},
                packed={**snap.packed, snapshot.CLUSTER: packed},
                versions={**snap.versions, snapshot.CLUSTER: version_of(packed)})
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
                 report: Callable[[str, list, list[str]], None], watch: list[str], limits: Limits | None = None,
                 issuer=None, *, builder: snapshot.Builder | None = None):
        self.files = files
        self.builder = builder or snapshot.Builder()   # what the last good build made, reused
        self.watch = watch   # the files and their imports, as of the last compile
        # `--ca` (compiler/control/sds.py): certificates over SDS and mTLS on the channel; the
        # snapshots built (`base`) then carry no file-based secret: the issuer's overlay does.
        self.issuer = issuer
        self.base = snapshots
        self.servicer = AdsServicer(self._served(snapshots), log=lambda line: report(line, [], []),
                                    limits=limits or Limits(), admit=self._admit if issuer is not None else None,
                                    native=self._want_native)
        # The services a native proxy has asked for: only they get a native config (snapshot.Builder).
        self.native_nodes: set[str] = set()
        self._native_task: asyncio.Task | None = None
        self.report = report   # (event, diagnostics, problems) -> printed by the CLI
        self.grpc = grpc.aio.server(options=[("grpc.so_reuseport", 0),
                                             ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                                             *KEEPALIVE])
        ads.add_to_server(self.servicer, self.grpc)
        self.grpc.add_generic_rpc_handlers((status.handler(self.status),))   # `meshc status`, same port
        self.started = time.time()
        self.last_reload: dict = {"ok": True, "at": self.started, "good_since": self.started,
                                  "diagnostics": [], "problems": []}
        self._seen = mtimes(watch)
        spec = os.environ.get(TEST_CORRUPT, "")   # test-only: corrupts the first reload's snapshot
        self._corrupt = spec if spec.startswith(("Cluster:", "Native:")) else ""
        self._lock: asyncio.Lock   # made in run(), on the server's loop

    def status(self) -> dict:
        """What `meshc status` shows (compiler/control/status.py)."""
        out = status.report(self.servicer, self.last_reload, self.started)
        if self.issuer is not None:
            out["certificates"] = self.issuer.summary()
        return out

    def _served(self, snapshots: dict[str, snapshot.NodeSnapshot]) -> dict[str, snapshot.NodeSnapshot]:
        return snapshots if self.issuer is None else self.issuer.apply(snapshots)

    async def _admit(self, node: str, context) -> str | None:
        """With --ca: a stream may name only a node of its client certificate's SPIFFE ID
        (PERMISSION_DENIED otherwise, before anything is sent, and at a later publish when an
        edit changed the node's identity); the node's certificate is issued (in a worker thread)
        before its first request is answered. The identity checked is returned (the stream
        refuses any snapshot of another, ads.Stream.admitted). An unknown node is left to the
        stream (NOT_FOUND). A node id `SERVICE.SUBSET` is its service's sidecar: the service's
        identity is checked, and the certificate is issued (and held) by service name."""
        from compiler.control import sds

        service, _ = ads.resolve(node, self.base)
        if service is None:
            return None
        snap = self.base[service]
        peer = sds.peer_identity(context)
        if peer is None or peer != snap.identity:
            raise StreamError(grpc.StatusCode.PERMISSION_DENIED,
                              f"node {node!r} is {snap.identity}, and this client's certificate is "
                              f"{peer or 'no single SPIFFE ID'}: a stream may only name a node of its own identity")
        if sds.needs_secrets(snap):
            held = self.issuer.issued.get(service)
            served = self.servicer.snapshots.get(service)
            if held is not None and held.spiffe_id == snap.identity and served is not None \
                    and served.packed.get(snapshot.SECRET):
                return peer   # issued, and served with its secrets

            def work() -> tuple[bool, snapshot.NodeSnapshot]:   # in a worker thread: keygen, signing, packing
                fresh = self.issuer.issue(service, snap.identity) is not held
                return fresh, self.issuer.overlay(snap)

            started = time.monotonic()
            try:
                fresh, overlaid = await asyncio.to_thread(work)
            except self.issuer.Error as err:   # the CA expired
                self.report(f"cannot issue {service}'s certificate: {err}", [], [])
                raise StreamError(grpc.StatusCode.UNAVAILABLE, f"cannot issue {service}'s certificate: {err}") from err
            if fresh:
                self.report(f"issued {service}'s certificate ({snap.identity}, serial "
                            f"{self.issuer.issued[service].serial}; {(time.monotonic() - started) * 1000:.1f} ms)",
                            [], [])
            if self.base.get(service) is snap and service in self.servicer.snapshots:
                self.servicer.snapshots[service] = overlaid   # the entry with its secrets, the others as they are
        return peer

    async def rotate(self) -> list[str]:
        """Replace the certificates whose rotation time has come and push the new secrets."""
        async with self._lock:
            server_serial = self.issuer.server.serial
            # on the loop, so that no admission slips in between: a stream is admitted (and its
            # node set) without yielding once its node's certificate is held
            connected = {s.service for s in self.servicer.streams.values() if s.service}   # certificates by service
            gone = self.issuer.drop_due(time.time(), keep=connected)

            def work() -> tuple[list[str], dict[str, snapshot.NodeSnapshot]]:   # in a worker thread
                nodes = self.issuer.rotate_due(time.time())
                return nodes, {n: self.issuer.overlay(self.base[n]) for n in nodes if n in self.base}

            nodes, fresh = await asyncio.to_thread(work)
            # the dropped ones on the loop, now: one may have been admitted (and issued) meanwhile
            fresh.update({n: self.issuer.overlay(self.base[n]) for n in gone if n in self.base})
            if fresh:   # only these nodes' secrets change: the others' snapshots are kept as they are
                self.servicer.publish({**self.servicer.snapshots, **fresh})
            if gone:
                self.report(f"dropped the due certificate(s) of {len(gone)} node(s) with no stream open "
                            f"({', '.join(gone[:5])}{', ...' if len(gone) > 5 else ''}): issued again when they "
                            "connect", [], [])
            if nodes or self.issuer.server.serial != server_serial:
                shown = ", ".join(nodes[:5]) + (f", ... ({len(nodes) - 5} more)" if len(nodes) > 5 else "")
                own = "" if self.issuer.server.serial == server_serial else \
                    f"; the server's own, serial {self.issuer.server.serial}"
                self.report(f"rotated {len(nodes)} certificate(s) ({shown or 'none'}){own}; next rotation at "
                            f"{self._next_rotation()}", [], [])
            return nodes

    def _next_rotation(self) -> str:
        from compiler.control import sds

        return sds.when(self.issuer.next_due())

    def bind(self, address: str) -> int:
        """Listen on `address` (HOST:PORT); the port (0 asks for a free one). Raises OSError.
        With --ca the port is mutual TLS, never plaintext."""
        try:
            if self.issuer is not None:
                port = self.grpc.add_secure_port(address, self.issuer.credentials())
            else:
                port = self.grpc.add_insecure_port(address)
        except RuntimeError as err:
            raise OSError(str(err)) from err
        if not port:
            raise OSError(f"cannot listen on {address}")
        return port

    async def reload(self, edit: bool = True) -> bool:
        """Recompile and publish; False (the last good snapshot kept) when that fails. The compile
        runs in a worker thread, so the streams go on meanwhile; reloads run one at a time."""
        async with self._lock:
            started = time.monotonic()
            before = mtimes(self.watch)
            try:
                timings: dict[str, float] = {}
                snapshots, diagnostics, self.watch = await asyncio.to_thread(build, self.files, self.builder, timings,
                                                                             frozenset(self.native_nodes))
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
            if self.issuer is not None:
                problems = self.issuer.check(snapshots)
                if problems:
                    self.report("rejected", [], problems)
                    self.last_reload = {"ok": False, "at": time.time(), "good_since": self.last_reload["good_since"],
                                        "diagnostics": [], "problems": problems}
                    return False
                # a node gone, or whose identity an edit changed, loses its certificate; its open
                # streams end at the publish below (their client certificate is the old identity)
                self.issuer.forget({n for n, snap in snapshots.items()
                                    if n not in self.issuer.issued or self.issuer.issued[n].spiffe_id == snap.identity})
            self.base = snapshots
            if self._corrupt and edit:   # (on SIGHUP or an edit, not a reload for native configs)
                spec, self._corrupt = self._corrupt, ""
                self.report(f"test-only: corrupted {spec} for {', '.join(corrupt(snapshots, spec)) or 'no node'}",
                            [], [])
            served = snapshots
            if self.issuer is not None:   # the secrets overlay, off the event loop (150 ms at 1,000 nodes)
                from compiler.control.sds import needs_secrets

                served = await asyncio.to_thread(self.issuer.apply, snapshots)
                for node, held in dict(self.issuer.issued).items():   # issued meanwhile by an admission
                    if node in served and needs_secrets(served[node]) and not served[node].packed.get(snapshot.SECRET) \
                            and held.spiffe_id == served[node].identity:
                        served[node] = self.issuer.overlay(snapshots[node])
            changed = sorted(n for n, s in served.items()
                             if n not in self.servicer.snapshots or self.servicer.snapshots[n].versions != s.versions)
            self.servicer.publish(served)
            now = time.time()
            self.last_reload = {"ok": True, "at": now, "good_since": now, "diagnostics": [], "problems": []}
            shown = ", ".join(changed[:SHOWN]) + (f" and {len(changed) - SHOWN} more" if len(changed) > SHOWN else "")
            steps = ", ".join(f"{step} {seconds * 1000:.0f}" for step, seconds in timings.items())
            self.report(f"published ({len(changed)} sidecar(s) changed: {shown or 'none'}; "
                        f"{(time.monotonic() - started) * 1000:.0f} ms: {steps} ms)", diagnostics, [])
            await asyncio.to_thread(release_memory)   # (after the publish: the pushes go first)
            return True

    def _want_native(self, service: str) -> None:
        """A native proxy asked for `service`'s config, which the snapshots do not hold yet: build
        it, with a reload (one at a time; the services asked for meanwhile join the next)."""
        self.native_nodes.add(service)
        if self._native_task is None or self._native_task.done():
            self._native_task = asyncio.ensure_future(self._build_native())

    async def _build_native(self) -> None:
        while True:
            missing = sorted(s for s in self.native_nodes
                             if s in self.base and snapshot.NATIVE not in self.base[s].versions)
            if not missing:
                return
            self.report(f"native config asked for: {', '.join(missing[:SHOWN])}"
                        + (f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else "") + "; reloading",
                        [], [])
            if not await self.reload(edit=False):
                return   # said by the reload; the next good one builds them

    async def _rotate_forever(self) -> None:
        """Rotate each certificate when its time comes (checked at least once a second). Nothing
        ends this loop but its cancellation: an unexpected error is reported and the rotation is
        tried again a second later (a loop that died would never rotate again, silently)."""
        while True:
            try:
                await asyncio.sleep(max(0.05, min(1.0, self.issuer.next_due() - time.time())))
                await self.rotate()
            except self.issuer.Error as err:   # the CA expired: said, and tried again later
                self.report(f"cannot rotate: {err}", [], [])
                await asyncio.sleep(60)
            except Exception as err:   # a bug must not stop rotation for good
                self.report(f"rotation failed, tried again in 1 s: {type(err).__name__}: {err}", [], [])
                await asyncio.sleep(1.0)

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
        rotation = asyncio.ensure_future(self._rotate_forever()) if self.issuer is not None else None
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
            if rotation is not None:
                rotation.cancel()
            await self.grpc.stop(0.5)
