"""The control plane under failure (issue 14, docs/control-plane.md "Replicas, and when the server
is down"): a real sidecar, each of SIDECARS (Envoy 1.40, and the native proxy fed by `meshc
serve`), carrying load from a load generator in this process (threads, a new loopback connection
per request, a few hundred requests a second) while its `meshc serve` subprocess is killed,
restarted, or frozen, alone or with a second replica.

What must hold: no request fails while the server is away (the sidecar keeps serving its last
configuration), and a stream reopened on a server with the same sources (restarted, or another
replica) gets the same versions: for Envoy no cluster or listener is modified and nothing
drains, for the native proxy nothing is reloaded.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from compiler.control import status as control_status
from tests.envoy_support import Backend, Envoy, free_ports, request, requires_envoy, run_meshc
from tests.test_control_plane import API, Serve, policy

pytestmark = requires_envoy


class Load:
    """`threads` threads sending GET `path` through the sidecar's outbound listener at about `rate`
    requests a second in all, each on a new connection. Every answer other than 200 from the
    expected backend names, and every connection error, is a failure."""

    def __init__(self, port: int, rate: float = 240, threads: int = 4, path: str = "/live"):
        self.port, self.path = port, path
        self.interval = threads / rate
        self.ok: list[tuple[float, str]] = []     # (time answered, backend)
        self.sent: list[tuple[float, str]] = []   # (time sent, backend) of the same answers
        self.failures: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.started = time.monotonic()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, index: int) -> None:
        due = time.monotonic() + index * self.interval / len(self.threads)
        while not self.stopping.is_set():
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            due += self.interval
            sent = time.monotonic()
            try:
                code, _, body = request(self.port, self.path, headers=API, timeout=5)
                outcome = json.loads(body)["backend"] if code == 200 else f"status {code}: {body[:80]!r}"
                ok = code == 200
            except (OSError, ValueError) as err:
                outcome, ok = f"{type(err).__name__}: {err}", False
            with self.lock:
                (self.ok if ok else self.failures).append((time.monotonic(), outcome))
                if ok:
                    self.sent.append((sent, outcome))

    def count(self) -> int:
        with self.lock:
            return len(self.ok)

    def wait_for(self, requests: int, timeout: float = 10) -> None:
        """Until `requests` more have succeeded."""
        goal, deadline = self.count() + requests, time.monotonic() + timeout
        while self.count() < goal:
            assert time.monotonic() < deadline, f"the load stalled: {self.failures[:3]}"
            time.sleep(0.02)

    def backends_sent_since(self, since: float) -> list[str]:
        """The backend of each request sent at `since` or later that has been answered."""
        with self.lock:
            return [b for t, b in self.sent if t >= since]

    def stop(self) -> str:
        self.stopping.set()
        for t in self.threads:
            t.join(10)
        seconds = time.monotonic() - self.started
        return (f"{len(self.ok)} requests in {seconds:.1f} s ({len(self.ok) / seconds:.0f}/s), "
                f"{len(self.failures)} failed")


class EnvoySidecar:
    """The sidecar of `web` as a real Envoy from `meshc compile --bootstrap ads`, one
    `--xds-server` per replica. The failover tests use a sidecar through this interface only
    (`kind`, `versions`, `churn`, `connected`, `output`, `stop`), as NativeSidecar below."""

    kind = "envoy"   # what `meshc status` shows for its stream

    def __init__(self, tmp: Path, path: Path, servers: list[str], ports: dict[str, int],
                 keepalive: tuple[float, float] | None = None):
        args = [a for address in servers for a in ("--xds-server", address)]
        proc = run_meshc("compile", str(path), "--target", "envoy", "--proxy", "web", "--bootstrap", "ads",
                         *args, "-o", str(tmp / "boot"))
        assert proc.returncode == 0, proc.stderr
        self.keepalive = keepalive or (5.0, 3.0)   # the bootstrap's (compiler/backends/envoy/bootstrap.py)
        if keepalive is not None:   # the xds_cluster's HTTP/2 keepalive (interval, timeout), shortened
            boot = tmp / "boot" / "web.envoy.json"
            config = json.loads(boot.read_text())
            shortened = 0
            for cluster in config["static_resources"]["clusters"]:
                options = cluster.get("typed_extension_protocol_options", {})
                for option in options.values():
                    ka = option.get("explicit_http_config", {}).get("http2_protocol_options", {}).get(
                        "connection_keepalive")
                    if ka is not None:
                        ka["interval"], ka["timeout"] = f"{keepalive[0]}s", f"{keepalive[1]}s"
                        shortened += 1
            assert shortened == 1, config["static_resources"]["clusters"]
            boot.write_text(json.dumps(config))
        self.envoy = Envoy(str(tmp / "boot" / "web.envoy.json"), "--reject-unknown-dynamic-fields")
        deadline = time.monotonic() + 20
        while self.envoy.listener_ports() != {"inbound": ports["INBOUND"], "outbound": ports["OUTBOUND"]}:
            if time.monotonic() > deadline:
                output = self.envoy.output()
                self.envoy.stop()
                raise AssertionError(output)
            time.sleep(0.05)

    def versions(self) -> dict[str, dict[str, str]]:
        """What the proxy holds: per kind, each resource's version (Envoy's /config_dump)."""
        out: dict[str, dict[str, str]] = {"clusters": {}, "listeners": {}, "routes": {}}
        for config in json.loads(self.envoy.admin("/config_dump"))["configs"]:
            for c in config.get("dynamic_active_clusters", []):
                out["clusters"][c["cluster"]["name"]] = c["version_info"]
            for entry in config.get("dynamic_listeners", []):
                out["listeners"][entry["name"]] = entry["active_state"]["version_info"]
            for r in config.get("dynamic_route_configs", []):
                out["routes"][r["route_config"]["name"]] = r["version_info"]
        return out

    def churn(self) -> dict[str, int]:
        """Counters that move when the proxy changes or drains a cluster or listener."""
        stats = self.envoy.stats("cluster_manager.cluster_|listener_manager.listener_|listener_manager.total_")
        return {k: v for k, v in stats.items() if k in (
            "cluster_manager.cluster_modified", "cluster_manager.cluster_removed", "listener_manager.listener_modified",
            "listener_manager.listener_removed", "listener_manager.total_listeners_draining")}

    def connected(self) -> bool:
        """Whether the proxy has a stream to a server (Envoy's control_plane.connected_state)."""
        return self.envoy.stats("control_plane.connected_state")["control_plane.connected_state"] == 1

    def output(self) -> str:
        return self.envoy.output()

    def stop(self) -> None:
        self.envoy.stop()


class NativeSidecar:
    """The sidecar of `web` as the native proxy fed by `meshc serve`: `meshc proxy --node web` with
    one `--xds-server` per replica (its helper process holds the stream, tests/test_native_xds.py),
    listening on the policy's ports once its first config arrived."""

    kind = "native"

    def __init__(self, tmp: Path, path: Path, servers: list[str], ports: dict[str, int],
                 keepalive: tuple[float, float] | None = None):
        from tests.test_native_xds import start_native

        # the helper's keepalive (runtime_proxy/xds_client.py, KEEPALIVE), shortened through its
        # test-only MESHC_XDS_TEST_KEEPALIVE (the proxy's environment is the helper's)
        self.keepalive = keepalive or (5.0, 3.0)
        saved = os.environ.get("MESHC_XDS_TEST_KEEPALIVE")
        if keepalive is not None:
            os.environ["MESHC_XDS_TEST_KEEPALIVE"] = ",".join(str(round(x * 1000)) for x in keepalive)
        try:
            self.proxy = start_native(tmp, servers, "web")
        finally:
            if saved is None:
                os.environ.pop("MESHC_XDS_TEST_KEEPALIVE", None)
            else:
                os.environ["MESHC_XDS_TEST_KEEPALIVE"] = saved
        if (self.proxy.inbound, self.proxy.outbound) != (ports["INBOUND"], ports["OUTBOUND"]):
            self.proxy.stop()
            raise AssertionError(f"the native proxy listens on {self.proxy.ports}: {self.proxy.log()}")

    def versions(self) -> dict[str, dict[str, str]]:
        """What the proxy holds: its config's version (admin /config)."""
        code, body = self.proxy.admin_get("/config")
        assert code == 200, body
        shown = json.loads(body)
        return {"config": {"web": shown["config"]["version"]}}

    def churn(self) -> dict[str, int]:
        """Counters that move when the proxy reloads a config (applied or refused)."""
        stats = self.proxy.stats()
        return {k: stats[k] for k in ("server.config_reload_ok", "server.config_reload_rejected")}

    def connected(self) -> bool:
        """Whether the helper's last word about its stream is `connected` (its log: one line when a
        stream gets its first response, one when a stream ends or a server cannot be reached)."""
        lines = [x for x in self.proxy.log().splitlines() if "xDS server " in x and
                 (": connected, node" in x or "keeping config" in x)]
        return bool(lines) and ": connected, node" in lines[-1]

    def output(self) -> str:
        return self.proxy.log()

    def stop(self) -> None:
        self.proxy.stop()


# The sidecars the failover tests run with, by name (each test runs once per entry).
SIDECARS: dict[str, type] = {"envoy": EnvoySidecar, "native": NativeSidecar}


class Fleet:
    """The backends, the policy (tests/envoy/behaviour.mesh.in), `replicas` `meshc serve`
    processes on it (SIGHUP only), and the sidecar of `web` (`sidecar`, an entry of SIDECARS)
    pointed at every replica."""

    def __init__(self, tmp: Path, replicas: int = 1, serve_args: tuple[str, ...] = (), sidecar: type = EnvoySidecar,
                 **sidecar_args):
        self.v1, self.v2, self.shadow, self.app = (Backend(n) for n in ("v1", "v2", "shadow", "app"))
        inbound, outbound, admin = free_ports(3)   # (free_port thrice may give one port twice: E0312)
        self.ports = {"INBOUND": inbound, "OUTBOUND": outbound, "ADMIN": admin, "APP": self.app.port,
                      "V1": self.v1.port, "V2": self.v2.port, "SHADOW": self.shadow.port}
        self.path = policy(tmp / "behaviour.mesh", self.ports)
        self.proxy = None
        self.servers: list[Serve | None] = [Serve(str(self.path), args=serve_args) for _ in range(replicas)]
        self.server_ports = [s.port for s in self.servers if s is not None]
        try:
            self.proxy = sidecar(tmp, self.path, [f"127.0.0.1:{p}" for p in self.server_ports], self.ports,
                                 **sidecar_args)
        except BaseException:
            self.close()
            raise

    def versions(self) -> dict[str, dict[str, str]]:
        assert self.proxy is not None
        return self.proxy.versions()

    def churn(self) -> dict[str, int]:
        assert self.proxy is not None
        return self.proxy.churn()

    def connected(self) -> bool:
        assert self.proxy is not None
        return self.proxy.connected()

    def output(self) -> str:
        return self.proxy.output() if self.proxy is not None else ""

    def streams_on(self, index: int) -> list[dict]:
        """The sidecar's streams that `meshc status` of replica `index` shows."""
        assert self.proxy is not None
        try:
            report = control_status.fetch(f"127.0.0.1:{self.server_ports[index]}", timeout=1)
        except control_status.Unreachable:
            return []
        return [s for s in report["streams"] if s["kind"] == self.proxy.kind and s["node"] == "web"]

    def serving(self, timeout: float = 15, among: tuple[int, ...] | None = None) -> int:
        """The replica (of `among`, default all) whose `meshc status` shows the sidecar, once
        exactly one does."""
        deadline = time.monotonic() + timeout
        while True:
            on = [i for i, s in enumerate(self.servers) if s is not None and s.proc.poll() is None
                  and (among is None or i in among) and self.streams_on(i)]
            if len(on) == 1:
                return on[0]
            assert time.monotonic() < deadline, f"the sidecar is on replicas {on}: {self.output()}"
            time.sleep(0.05)

    def acked(self, index: int, old: dict, timeout: float = 15) -> float:
        """A time by which `meshc status` of replica `index` shows the sidecar's stream up to date
        on every type (acknowledged) at a snapshot of `web` other than `old` (taken once the
        report that shows it has arrived: the acknowledgement came before)."""
        assert self.proxy is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                report = control_status.fetch(f"127.0.0.1:{self.server_ports[index]}", timeout=1)
            except control_status.Unreachable:
                report = {"streams": [], "server": {"snapshots": {}}}
            snapshot = report["server"]["snapshots"].get("web")
            streams = [s for s in report["streams"] if s["kind"] == self.proxy.kind and s["node"] == "web"]
            if snapshot is not None and snapshot != old and len(streams) == 1 and all(
                    e["state"] == "up to date" and e["acked"] == snapshot.get(t)
                    for t, e in streams[0]["types"].items()):
                return time.monotonic()
            assert time.monotonic() < deadline, f"not acknowledged on replica {index}: {report}; {self.output()}"
            time.sleep(0.02)

    def restart(self, index: int) -> None:
        """A new `meshc serve` process for replica `index`, on its port and the same sources."""
        self.servers[index] = Serve(str(self.path), port=self.server_ports[index])

    def up_to_date(self, index: int) -> dict:
        """`meshc status --server` of replica `index` (the CLI, JSON): exit 0 and its report."""
        proc = run_meshc("status", "--server", f"127.0.0.1:{self.server_ports[index]}", "--output-format", "json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for s in self.servers:
            if s is not None and s.proc.poll() is None:
                assert s.stop() == 0, "".join(s.lines)
        for b in (self.v1, self.v2, self.shadow, self.app):
            b.close()


@pytest.fixture(params=list(SIDECARS))
def sidecar(request):
    return SIDECARS[request.param]


@pytest.fixture
def fleet(tmp_path, request, sidecar):
    param = getattr(request, "param", 1)   # replicas, or a dict of Fleet's arguments
    f = Fleet(tmp_path, **param, sidecar=sidecar) if isinstance(param, dict) else Fleet(tmp_path, param,
                                                                                         sidecar=sidecar)
    yield f
    f.close()


def kill(fleet: Fleet, index: int) -> None:
    server = fleet.servers[index]
    assert server is not None
    server.proc.kill()   # SIGKILL: no goodbye on the stream, the kernel closes the connection
    server.proc.wait(10)
    fleet.servers[index] = None


def test_the_server_killed_under_load_then_restarted(fleet):
    """SIGKILL of the only server under load: no request fails, the sidecar keeps its configuration;
    a new server on the same sources: the sidecar reconnects by itself, gets the same versions (no
    cluster or listener modified, nothing drains) and `meshc status` of the new server shows it
    up to date."""
    before, churn = fleet.versions(), fleet.churn()
    load = Load(fleet.ports["OUTBOUND"])
    try:
        load.wait_for(100)
        kill(fleet, 0)
        deadline = time.monotonic() + 10
        while fleet.connected():
            assert time.monotonic() < deadline, fleet.output()
            time.sleep(0.02)
        load.wait_for(200)   # a second or so with no server
        assert fleet.versions() == before
        fleet.restart(0)
        restarted = time.monotonic()
        deadline = time.monotonic() + 15
        while not (fleet.connected() and fleet.streams_on(0)):
            assert time.monotonic() < deadline, fleet.output()
            time.sleep(0.02)
        reconnect = time.monotonic() - restarted
        load.wait_for(100)
    finally:
        summary = load.stop()
    print(f"\nkilled and restarted ({fleet.proxy.kind}): {summary}; the sidecar reconnected "
          f"{reconnect * 1000:.0f} ms after the new server "
          "was serving")
    assert not load.failures, load.failures[:5]
    assert fleet.versions() == before, "the same versions from the new server"
    assert fleet.churn() == churn, "no cluster or listener changed or drained"
    report = fleet.up_to_date(0)
    (stream,) = report["streams"]
    assert stream["kind"] == fleet.proxy.kind and {e["state"] for e in stream["types"].values()} == {"up to date"}
    assert {t: e["acked"] for t, e in stream["types"].items()} == {
        t: v for t, v in report["server"]["snapshots"]["web"].items() if t in stream["types"]}


@pytest.mark.parametrize("fleet", [2], indirect=True)
def test_two_replicas_kill_the_one_the_sidecar_is_on_under_load(fleet):
    """Two replicas: SIGKILL of the one the sidecar's stream is on, under load: no request fails,
    the stream reopens on the other (its `meshc status` shows the sidecar, up to date, at the same
    versions), and an edit of the sources, SIGHUP to both replicas (the killed one restarted),
    reaches the sidecar through the replica it is on, acknowledged at the version both serve."""
    first = fleet.serving()
    other = 1 - first
    before, churn = fleet.versions(), fleet.churn()
    load = Load(fleet.ports["OUTBOUND"])
    try:
        load.wait_for(100)
        killed = time.monotonic()
        kill(fleet, first)
        assert fleet.serving() == other
        failover = time.monotonic() - killed
        load.wait_for(100)
        assert fleet.versions() == before and fleet.churn() == churn, "the same versions from the other replica"
        report = fleet.up_to_date(other)
        assert {e["state"] for s in report["streams"] for e in s["types"].values()} == {"up to date"}
        published = report["server"]["snapshots"]["web"]
        # the killed replica comes back; the edit goes to both, the sidecar stays where it is
        fleet.restart(first)
        policy(fleet.path, fleet.ports, live="v2")
        marks = [(s, s.reload()) for s in fleet.servers if s is not None]
        for s, mark in marks:
            s.wait_for("published (", after=mark)
        edited = time.monotonic()
        deadline = time.monotonic() + 10
        while fleet.versions() == before:
            assert time.monotonic() < deadline, fleet.output()
            time.sleep(0.01)
        pushed = time.monotonic() - edited
        # every request sent once the sidecar has acknowledged the edit (every type, at the version
        # the replica publishes) goes to v2; not "the last 0.2 s of answers": the first changed
        # version may be a cluster's, before the route's, and on a loaded machine a request sent
        # to v1 before the edit can be answered more than 0.2 s after a hundred others
        acked = fleet.acked(other, published)
        load.wait_for(100)
        assert fleet.serving() == other
        since = load.backends_sent_since(acked)
        assert len(since) >= 100 - len(load.threads) and set(since) == {"v2"}, \
            f"the edit reached the sidecar and the traffic: {since}"
    finally:
        summary = load.stop()
    print(f"\ntwo replicas, one killed ({fleet.proxy.kind}): {summary}; the stream reopened on the other in "
          f"{failover * 1000:.0f} ms; the edit in the sidecar {pushed * 1000:.0f} ms after both replicas published")
    assert not load.failures, load.failures[:5]
    reports = [fleet.up_to_date(i) for i in (0, 1)]   # exit 0: the sidecar is up to date on `other`
    snapshots = [r["server"]["snapshots"]["web"] for r in reports]
    # identical versions of every type both built (a replica builds a native config only once a
    # native proxy has asked it for one: docs/control-plane.md, "Push performance")
    common = set(snapshots[0]) & set(snapshots[1])
    assert {"Cluster", "Listener", "RouteConfiguration"} <= common
    assert {t: snapshots[0][t] for t in common} == {t: snapshots[1][t] for t in common}, \
        "the replicas serve identical versions"
    (stream,) = reports[other]["streams"]
    assert {t: e["acked"] for t, e in stream["types"].items()} == {
        t: v for t, v in snapshots[other].items() if t in stream["types"]}


@pytest.mark.parametrize("fleet", [{"replicas": 2, "keepalive": (1.0, 1.0)}], indirect=True, ids=["2"])
def test_a_frozen_replica_is_left_for_the_other_by_keepalive(fleet):
    """A replica that stops answering without closing its connection (SIGSTOP: the kernel keeps
    the socket open, as for a host that vanished): the sidecar's HTTP/2 keepalive closes the
    connection and the stream reopens on the other replica; no request fails meanwhile. Takes up
    to the keepalive interval plus its timeout by construction (5 s + 3 s), shortened here to a ping
    every 1 s, 1 s to answer: Envoy's in its bootstrap (where a user would set them), the native
    helper's by its test-only MESHC_XDS_TEST_KEEPALIVE."""
    first = fleet.serving()
    server = fleet.servers[first]
    assert server is not None
    load = Load(fleet.ports["OUTBOUND"], rate=100, threads=2)
    try:
        frozen = time.monotonic()
        server.proc.send_signal(signal.SIGSTOP)
        try:
            assert fleet.serving(timeout=sum(fleet.proxy.keepalive) + 4, among=(1 - first,)) == 1 - first
            failover = time.monotonic() - frozen
        finally:
            server.proc.send_signal(signal.SIGCONT)
        load.wait_for(50)
    finally:
        summary = load.stop()
    print(f"\na frozen replica ({fleet.proxy.kind}): {summary}; the stream reopened on the other after "
          f"{failover:.1f} s")
    assert not load.failures, load.failures[:5]
    assert failover < sum(fleet.proxy.keepalive) + 2
