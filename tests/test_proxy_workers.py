"""`meshc proxy --workers N` (runtime_proxy/workers.py, net/shared.py): real worker processes on
shared ports (SO_REUSEPORT), one admin view, reload and drain across all of them, and the circuit
breakers and outlier detection shared as Envoy's worker threads share them. Connections are
pinned to a worker by opening them until each worker holds one (the kernel picks the worker)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest
from proxy_backend import Backend
from proxy_harness import ROOT, Client, config, route, run_proxy, service, subset, write_config

from runtime_proxy.net import shared

OVERFLOW = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"


@pytest.fixture(scope="module")
def backends():
    bs = {name: Backend(name) for name in ("a", "b")}
    yield bs
    for b in bs.values():
        b.stop()


@pytest.fixture(autouse=True)
def _reset(backends):
    for b in backends.values():
        b.reset()


def fleet_config(bs, version="v1"):
    a, b = bs["a"].port, bs["b"].port
    svc = service("svc", [subset("v1", [a], "svc")], [route("default", to=("svc", "v1"))])
    tight = service("tight", [subset("t", [a], "tight")], [route("all", to=("tight", "t"))],
                    limits={"max_connections": 1, "max_pending_requests": 1, "max_requests": 1, "max_retries": 3})
    od = service("od", [subset("all", [a, b], "od")], [route("all", to=("od", "all"))],
                 outlier={"consecutive_5xx": 3, "consecutive_gateway_errors": 0, "interval_ms": 200,
                          "base_ejection_ms": 30_000, "max_ejection_percent": 50.0})
    return config([svc, tight, od], app_port=a, version=version)


def worker_stats(proxy, k: int) -> dict[str, int]:
    status, body = proxy.admin_get(f"/stats?format=json&worker={k}")
    assert status == 200, body
    return {s["name"]: s["value"] for s in json.loads(body)["stats"]}


def pinned(proxy, n: int = 2) -> dict[int, Client]:
    """One open keep-alive client on each worker (a request made on each, to svc)."""
    out: dict[int, Client] = {}
    spare = []
    for _ in range(64):
        before = [worker_stats(proxy, k)["http.outbound.downstream_cx_total"] for k in range(n)]
        c = Client(proxy.outbound)
        assert c.request("GET", "/").status == 200
        after = [worker_stats(proxy, k)["http.outbound.downstream_cx_total"] for k in range(n)]
        k = next(i for i in range(n) if after[i] > before[i])
        if k in out:
            spare.append(c)
        else:
            out[k] = c
        if len(out) == n:
            break
    for c in spare:
        c.close()
    assert len(out) == n, "the kernel gave every connection to one worker"
    return out


def test_two_workers_share_the_ports_and_the_admin_view_sums_them(backends, tmp_path):
    with run_proxy(fleet_config(backends), tmp_path, "--workers", "2") as p:
        assert len(p.ports["workers"]) == 2 and p.ports["pid"] not in p.ports["workers"]
        clients = [Client(p.outbound) for _ in range(16)]
        for c in clients:
            assert c.request("GET", "/").status == 200
        per = [worker_stats(p, k)["http.outbound.downstream_cx_total"] for k in (0, 1)]
        assert per[0] > 0 and per[1] > 0 and sum(per) == 16          # both took connections
        total = p.stats()
        assert total["http.outbound.downstream_cx_total"] == 16
        assert total["http.outbound.downstream_rq_2xx"] == 16
        assert total["cluster.outbound|v1|svc.upstream_rq_200"] == 16
        assert total["http.outbound.downstream_cx_active"] == 16     # a per-worker gauge: summed
        assert total["server.config_reload_ok"] == 0
        _, metrics = p.admin_get("/stats/prometheus")
        assert 'envoy_http_downstream_cx_total{envoy_http_conn_manager_prefix="outbound"} 16' in metrics
        assert 'meshc_config_info{version="v1"} 1' in metrics          # shared: shown once
        assert p.admin_get("/ready") == (200, "LIVE\n")
        status, body = p.admin_get("/workers")
        assert status == 200 and [w["pid"] for w in json.loads(body)] == p.ports["workers"]
        assert p.admin_get("/stats?worker=2")[0] == 404
        for c in clients:
            c.close()


def test_a_reload_reaches_every_worker(backends, tmp_path):
    with run_proxy(fleet_config(backends), tmp_path, "--workers", "2") as p:
        def versions():
            return [json.loads(p.admin_get(f"/config?worker={k}")[1])["version"] for k in (0, 1)]

        write_config(p.config_path, fleet_config(backends, version="v2"))      # the file changed
        deadline = time.monotonic() + 10
        while versions() != ["v2", "v2"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert versions() == ["v2", "v2"]
        write_config(p.config_path, fleet_config(backends, version="v3"))
        os.utime(p.config_path, (1, 1))       # an unchanged mtime after the poll: the admin reload says when
        status, body = p.admin_get("/reload", "POST")
        assert status == 200 and "version v3 applied" in body and versions() == ["v3", "v3"]
        write_config(p.config_path, fleet_config(backends, version="v4"))
        p.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while versions() != ["v4", "v4"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert versions() == ["v4", "v4"]
        assert p.stats()["server.config_reload_ok"] >= 3            # counted once, as one proxy


def test_sigterm_drains_every_worker(backends, tmp_path):
    with run_proxy(fleet_config(backends), tmp_path, "--workers", "2") as p:
        clients = pinned(p)
        backends["a"].reset()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            slow = [pool.submit(c.request, "GET", "/", {"x-test-delay-ms": "700"}) for c in clients.values()]
            deadline = time.monotonic() + 5
            while backends["a"].hits < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            p.proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            assert p.admin_get("/ready") == (503, "DRAINING\n")
            assert [f.result().status for f in slow] == [200, 200]     # both workers finished theirs
        assert p.proc.wait(10) == 0
        assert p.log().count("draining 1 request(s)") == 2


def test_limits_overflow_across_workers_as_with_one(backends, tmp_path):
    """max_requests 1 and max_pending 1: a request held on worker 0 makes one on worker 1 overflow."""
    with run_proxy(fleet_config(backends), tmp_path, "--workers", "2") as p:
        clients = pinned(p)
        backends["a"].reset()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(clients[0].request, "GET", "/", {"x-test-delay-ms": "800"}, None, "tight")
            deadline = time.monotonic() + 5
            while backends["a"].hits < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            over = clients[1].request("GET", "/", host="tight")
            assert over.status == 503 and over.body == OVERFLOW and over.header("x-envoy-overloaded") == "true"
            assert held.result().status == 200
        stats = p.stats()
        assert stats["cluster.outbound|t|tight.upstream_rq_pending_overflow"] == 1
        assert worker_stats(p, 1)["cluster.outbound|t|tight.upstream_rq_pending_overflow"] == 1
        # the units are given back: one at a time passes again, on either worker
        assert clients[1].request("GET", "/", host="tight").status == 200
        assert clients[0].request("GET", "/", host="tight").status == 200
        _, body = p.admin_get("/clusters")
        assert json.loads(body)["outbound|t|tight"]["breaker"]["requests"] == 0


def test_the_listener_connection_limit_counts_every_workers_connections(backends, tmp_path):
    """proxy.max_connections 1: while one connection is open (on either worker), every other one
    is accepted and closed at once, on whichever worker it lands."""
    import socket

    cfg = dict(fleet_config(backends))
    cfg["proxy"] = dict(cfg["proxy"], max_connections=1)
    with run_proxy(cfg, tmp_path, "--workers", "2") as p:
        held = Client(p.outbound)
        assert held.request("GET", "/").status == 200
        owner = next(k for k in (0, 1) if worker_stats(p, k)["http.outbound.downstream_cx_active"] == 1)
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", p.outbound), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
            try:
                assert s.recv(100) == b""           # closed (or reset) without an answer
            except ConnectionResetError:
                pass
            s.close()
        assert p.stats()["http.outbound.downstream_cx_overflow"] == 12
        assert worker_stats(p, 1 - owner)["http.outbound.downstream_cx_overflow"] > 0   # the other worker refused too
        assert held.request("GET", "/").status == 200
        held.close()
        deadline = time.monotonic() + 5
        while p.stats()["http.outbound.downstream_cx_active"] and time.monotonic() < deadline:
            time.sleep(0.05)
        c = Client(p.outbound)                     # the unit is given back
        assert c.request("GET", "/").status == 200
        c.close()


def test_outlier_counts_and_ejection_are_shared(backends, tmp_path):
    """Three consecutive 5xx of endpoint a, counted on two workers, eject it from both."""
    with run_proxy(fleet_config(backends), tmp_path, "--workers", "2") as p:
        clients = pinned(p)
        fails = 0
        turn = 0
        for _ in range(20):     # alternate the workers until a has failed three times
            r = clients[turn % 2].request("GET", "/", host="od", headers={"x-test-fail-on": "a"})
            if r.status == 500:
                fails += 1
                turn += 1
            if fails == 3:
                break
        assert fails == 3 and turn == 3          # the failures came from both workers
        stats = p.stats()
        assert stats["cluster.outbound|all|od.outlier_detection.ejections_enforced_total"] == 1
        assert stats["cluster.outbound|all|od.outlier_detection.ejections_active"] == 1   # shared: once
        backends["a"].reset()
        for k in (0, 1):                         # neither worker sends to a while it is ejected
            for _ in range(4):
                assert clients[k].request("GET", "/", host="od").json()["backend"] == "b"
        assert backends["a"].hits == 0
        _, body = p.admin_get("/clusters")
        assert json.loads(body)["outbound|all|od"]["ejected"] == [f"127.0.0.1:{backends['a'].port}"]


def test_a_worker_that_dies_stops_the_proxy(backends, tmp_path):
    with run_proxy(fleet_config(backends), tmp_path, "--workers", "2") as p:
        os.kill(p.ports["workers"][1], signal.SIGKILL)
        assert p.proc.wait(10) == 1
        assert "worker 1 (pid" in p.log() and "exited unasked (signal 9)" in p.log()
        with pytest.raises(ProcessLookupError):
            os.kill(p.ports["workers"][0], 0)


def test_a_hung_worker_is_named_promptly_and_does_not_hold_up_the_admin_port(backends, tmp_path):
    """A worker that does not answer (stopped: SIGSTOP) makes /ready 503 within a second and /stats
    503 within a few, both naming it; meanwhile the supervisor answers other admin requests at
    once (its loop is not held up), and once the worker goes on, all is as before."""
    with run_proxy(fleet_config(backends), tmp_path, "--workers", "2") as p:
        hung = p.ports["workers"][1]
        os.kill(hung, signal.SIGSTOP)
        try:
            started = time.monotonic()
            status, body = p.admin_get("/ready")
            assert status == 503 and f"worker 1 (pid {hung})" in body and time.monotonic() - started < 1.5, body
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                started = time.monotonic()
                stats = pool.submit(p.admin_get, "/stats")
                time.sleep(0.2)
                at = time.monotonic()
                assert p.admin_get("/workers")[0] == 200 and time.monotonic() - at < 0.5   # not behind /stats
                status, body = stats.result()
                assert status == 503 and f"worker 1 (pid {hung}) did not answer /stats" in body, body
                assert time.monotonic() - started < 4
            assert p.admin_get("/stats?worker=0")[0] == 200
        finally:
            os.kill(hung, signal.SIGCONT)
        assert p.admin_get("/ready") == (200, "LIVE\n")
        assert p.admin_get("/stats")[0] == 200 and p.admin_get("/clusters")[0] == 200
        assert p.admin_get("/metrics")[0] == 200 and p.admin_get("/config")[0] == 200


@pytest.mark.parametrize("value", ["0", "-1", "65"])
def test_bad_workers_values_exit_2(tmp_path, value):
    path = write_config(tmp_path / "c.json", config([]))
    out = subprocess.run([sys.executable, "-m", "runtime_proxy", path, "--workers", value], cwd=ROOT,
                         capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 2
    assert out.stderr.strip() == f"python -m runtime_proxy: error: --workers {value}: a number of worker " \
                                 "processes from 1 to 64"


def test_from_meshc_serve_two_workers_hold_one_stream_and_an_edit_reaches_both(tmp_path):
    """--xds-server with --workers 2: the supervisor holds the one xDS helper (one ADS stream per
    proxy, none in a worker); an edit reaches both workers and is ACKed once both applied it."""
    import test_native_xds as nx

    class Plane(nx.NativePlane):
        def __init__(self, tmp):       # NativePlane's, with --workers 2
            self.v1, self.v2, self.shadow, self.app = (nx.Backend(n) for n in ("v1", "v2", "shadow", "app"))
            self.ports = {"INBOUND": nx.free_port(), "OUTBOUND": nx.free_port(), "ADMIN": nx.free_port(),
                          "APP": self.app.port, "V1": self.v1.port, "V2": self.v2.port, "SHADOW": self.shadow.port}
            self.tmp = tmp
            self.path = nx.policy(tmp / "behaviour.mesh", self.ports)
            self.serve = nx.Serve(str(self.path))
            self.proxy = nx.start_native(tmp, self.serve.port, "web", "--workers", "2")

    plane = Plane(tmp_path)
    try:
        workers = plane.proxy.ports["workers"]
        helpers = [pid for pid in [plane.proxy.proc.pid, *workers] if nx.helper_pid(_AsProxy(pid))]
        assert helpers == [plane.proxy.proc.pid]                      # one stream, in the supervisor
        assert not any(nx.loads_grpc(pid) for pid in [plane.proxy.proc.pid, *workers])
        assert plane.call("/live") == "v1"

        def versions():
            return {json.loads(plane.proxy.admin_get(f"/config?worker={k}")[1])["version"] for k in (0, 1)}

        before = versions()
        nx.policy(plane.path, plane.ports, live="v2")
        plane.serve.reload()
        nx.wait(lambda: len(v := versions()) == 1 and v != before, "the edit in both workers", proxy=plane.proxy)
        nx.wait(lambda: nx.native_stream(d := nx.status(plane.serve.port)) and
                nx.native_stream(d)["types"]["SidecarConfig"]["acked"] == plane.native_version(),
                "the ACK of the new version")
        for _ in range(6):
            assert plane.call("/live") == "v2"
    finally:
        plane.close()
    assert plane.proxy.proc.returncode == 0


class _AsProxy:
    def __init__(self, pid):
        self.proc = type("P", (), {"pid": pid})()


def test_the_admin_view_merges_counters_histograms_and_shared_gauges():
    """runtime_proxy.workers' merge rules on two workers' real admin output shapes: counters and
    histogram buckets summed, per-worker gauges summed, shared values shown once."""
    from runtime_proxy.workers import merge_prometheus, merge_stats

    a = [("cluster.c.upstream_rq_total", 3), ("cluster.c.upstream_rq_pending_active", 2),
         ("server.config_reload_ok", 1), ("http.outbound.downstream_cx_active", 4)]
    b = [("cluster.c.upstream_rq_total", 5), ("cluster.c.upstream_rq_pending_active", 2),
         ("server.config_reload_ok", 1), ("http.outbound.downstream_cx_active", 1), ("cluster.d.upstream_rq_total", 1)]
    assert merge_stats([a, b]) == [("cluster.c.upstream_rq_total", 8), ("cluster.c.upstream_rq_pending_active", 2),
                                   ("server.config_reload_ok", 1), ("http.outbound.downstream_cx_active", 5),
                                   ("cluster.d.upstream_rq_total", 1)]
    text = ("# TYPE envoy_cluster_upstream_rq_time histogram\n"
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c",le="0.5"} {n}\n'
            'envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="c"} {n}\n'
            "# HELP meshc_config_info the active config version\n# TYPE meshc_config_info gauge\n"
            'meshc_config_info{version="v1"} 1\n'
            "# HELP envoy_cluster_upstream_rq_pending_active cluster upstream_rq_pending_active\n"
            "# TYPE envoy_cluster_upstream_rq_pending_active gauge\n"
            'envoy_cluster_upstream_rq_pending_active{envoy_cluster_name="c"} 3\n')
    merged = merge_prometheus([text.replace("{n}", "2"), text.replace("{n}", "5")])
    assert merged.splitlines() == [
        "# TYPE envoy_cluster_upstream_rq_time histogram",
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c",le="0.5"} 7',
        'envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="c"} 7',
        "# HELP meshc_config_info the active config version", "# TYPE meshc_config_info gauge",
        'meshc_config_info{version="v1"} 1',
        "# HELP envoy_cluster_upstream_rq_pending_active cluster upstream_rq_pending_active",
        "# TYPE envoy_cluster_upstream_rq_pending_active gauge",
        'envoy_cluster_upstream_rq_pending_active{envoy_cluster_name="c"} 3']


def test_shared_breaker_slots_across_a_fork_and_entries_freed_by_every_worker():
    """net/shared.py with a real fork: a unit taken in the child counts in the parent; an entry
    is reused only once every worker has left it and nothing is held in it."""
    from runtime_proxy.decide.table import Limits
    from runtime_proxy.net.shared import MAX_CLUSTERS, Region

    region = Region(2)
    limits = Limits(1, 1, 1, 3)
    region.worker = 0
    breaker, _ = region.cluster("c", "sig", limits, None, None, ("h:1",), 0.0, {})
    to_parent, to_child = os.pipe(), os.pipe()     # (read end, write end) each
    pid = os.fork()
    if pid == 0:                                  # worker 1 (never back into pytest)
        try:
            region.worker = 1
            other, _ = region.cluster("c", "sig", limits, None, None, ("h:1",), 0.0, {})
            ok = other.try_acquire_request()
            os.write(to_parent[1], b"1" if ok else b"0")
            os.read(to_child[0], 1)               # hold it until the parent has looked
            other.release_request()
        finally:
            os._exit(0)
    assert os.read(to_parent[0], 1) == b"1"
    assert breaker.requests == 1 and not breaker.try_acquire_request()   # the child's unit counts here
    os.write(to_child[1], b"x")
    os.waitpid(pid, 0)
    assert breaker.requests == 0 and breaker.try_acquire_request()
    # the entry of "c": used by worker 1 (which never left it) and worker 0; fill the rest
    for i in range(MAX_CLUSTERS - 1):
        assert region.entry(f"x{i}", "sig") is not None
    assert region.entry("one more", "sig") is None
    region.leave(breaker)
    assert region.entry("one more", "sig") is None      # worker 1 still uses "c", and a unit is held
    region.worker = 1
    region.leave(breaker)
    assert region.entry("one more", "sig") is None      # left by both, but a request is in flight
    region.worker = 0
    breaker.release_request()
    assert region.entry("one more", "sig") == breaker.at
    for fd in (*to_parent, *to_child):
        os.close(fd)


def test_shared_outlier_detection_decides_as_one_detector_and_a_clean_success_takes_no_lock():
    """Two workers' views of one shared detector (net/shared.py), fed an interleaved random
    sequence of answers, decide what one detector (decide/outlier.py) fed the same sequence
    decides; a success for an endpoint with nothing counted is read without the lock."""
    import random

    from runtime_proxy.decide.outlier import CONNECT_FAILURE, PER_TRY_TIMEOUT, RESET, OutlierState
    from runtime_proxy.decide.table import Limits, OutlierSettings
    from runtime_proxy.net.shared import Region

    class CountingLock:
        def __init__(self, lock):
            self.lock, self.taken = lock, 0

        def __enter__(self):
            self.taken += 1
            return self.lock.__enter__()

        def __exit__(self, *exc):
            return self.lock.__exit__(*exc)

    keys = ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
    answers = [(200, None)] * 6 + [(404, None), (500, None), (502, None), (503, None), (504, None),
                                   (None, CONNECT_FAILURE), (None, RESET), (None, PER_TRY_TIMEOUT)]
    for seed in range(40):
        rng = random.Random(seed)
        settings = OutlierSettings(rng.randint(1, 4), rng.choice([0, 1, 2, 3]), 1000, rng.choice([500, 3000]),
                                   rng.choice([34.0, 67.0, 100.0]))
        region = Region(2)
        region.lock = lock = CountingLock(region.lock)
        views = []
        for worker in (0, 1):
            region.worker = worker
            views.append(region.cluster("c", "sig", Limits(9, 9, 9, 9), None, settings, keys, 0.0, {})[1])
        one = OutlierState(settings, keys, tick_origin=0.0)
        now = 0.0
        for _ in range(300):
            now += rng.choice([0.0, 0.01, 0.3, 1.7])
            key = rng.choice(keys)
            status, failure = rng.choice(answers)
            view = rng.choice(views)
            assert view.record(key, status, failure, now) == one.record(key, status, failure, now), seed
            assert view.ejected(now) == one.ejected(now), seed
            assert view.available(keys, now) == one.available(keys, now), seed
        # a success for an endpoint not ejected with nothing counted: no lock (where reads are
        # lock-free: x86), and the lock for the rest
        now += 100.0
        for key in keys:
            views[0].record(key, 200, None, now)
        taken = lock.taken
        for view in views:
            for key in keys:
                assert view.record(key, 200, None, now) is False
        assert lock.taken == taken + (0 if shared._LOCK_FREE_READS else 6)
        taken = lock.taken
        views[1].record(keys[0], 503, None, now)              # an error takes it, and so does the
        views[0].record(keys[0], 200, None, now)              # success that clears its count
        assert lock.taken == taken + 2


@pytest.mark.skipif(not shared._LOCK_FREE_READS, reason="lock-free reads are made on x86 only")
def test_the_shared_outlier_record_is_read_without_the_lock_only_between_two_equal_even_generations(monkeypatch):
    """The seqlock of net/shared.py: a store makes the entry's generation odd before it writes a
    host record and even (2 higher) after; a lock-free read is taken only when the generation is
    even and the same before and after it, else the lock is; reusing an entry never takes the
    generation back to a value a reader saw before, nor does a store left half-way make it even
    while a store is under way."""
    from runtime_proxy.decide.table import Limits, OutlierSettings
    from runtime_proxy.net.shared import Region

    region = Region(2)
    region.worker = 0
    lock = region.lock

    class CountingLock:
        taken = 0

        def __enter__(self):
            CountingLock.taken += 1
            return lock.__enter__()

        def __exit__(self, *exc):
            return lock.__exit__(*exc)

    region.lock = CountingLock()
    keys = ("10.0.0.1:80", "10.0.0.2:80")
    _, view = region.cluster("c", "sig", Limits(9, 9, 9, 9), None, OutlierSettings(3, 0, 1000, 30000, 100.0),
                             keys, 0.0, {})
    generation_at = view._at + region.generation_at

    def generation() -> int:
        return struct.unpack_from("<q", region.mm, generation_at)[0]

    seen = []
    real_host = shared._HOST

    class WatchedHost:             # every host record written: the generation at that moment
        size = real_host.size
        unpack_from = real_host.unpack_from

        @staticmethod
        def pack_into(*args):
            seen.append(generation())
            return real_host.pack_into(*args)

    monkeypatch.setattr(shared, "_HOST", WatchedHost)
    for key in keys:
        before = generation()
        view.record(key, 500, None, 1.0)          # a locked store
        assert generation() == before + 2 and generation() % 2 == 0
    assert seen and all(g % 2 == 1 for g in seen)
    view.record(keys[0], 200, None, 1.0)          # clears the count (locked)
    view.record(keys[1], 200, None, 1.0)
    taken = CountingLock.taken
    assert view.record(keys[0], 200, None, 1.0) is False and CountingLock.taken == taken   # lock-free

    real_generation = shared._GENERATION
    reads = []

    class Moving:                  # the generation read differs before and after: a store came between
        size = real_generation.size
        pack_into = real_generation.pack_into

        @staticmethod
        def unpack_from(buf, at):
            value = real_generation.unpack_from(buf, at)
            if at != generation_at:
                return value
            reads.append(value[0])
            return (value[0] + (2 if len(reads) == 2 else 0),)

    monkeypatch.setattr(shared, "_GENERATION", Moving)
    assert view.record(keys[0], 200, None, 1.0) is False and CountingLock.taken == taken + 1
    assert len(reads) >= 2
    monkeypatch.setattr(shared, "_GENERATION", real_generation)

    # a store cut short left it odd: the next store still writes inside an odd value, ends even
    struct.pack_into("<q", region.mm, generation_at, generation() + 1)
    view.record(keys[1], 500, None, 2.0)
    assert generation() % 2 == 0
    # an entry left by its cluster and reused by another keeps counting up from where it was
    last = generation()
    breaker, _ = region.cluster("c", "sig", Limits(9, 9, 9, 9), None, None, keys, 0.0, {})   # (the same entry)
    region.leave(breaker)
    assert region.entry("another", "sig") == view._at
    assert generation() > last and generation() % 2 == 0


def test_an_endpoint_key_too_long_for_the_shared_record_keeps_outlier_detection_per_worker():
    """A key is stored in 64 bytes: a longer one would never be found again, and the shared
    detector would never eject it; such a cluster's detector is the worker's own (as past 64
    endpoints), its breaker still shared."""
    from runtime_proxy.decide.outlier import OutlierState
    from runtime_proxy.decide.table import Limits, OutlierSettings
    from runtime_proxy.net.shared import KEY_BYTES, Region, SharedBreaker, SharedOutlier

    region = Region(2)
    region.worker = 0
    settings = OutlierSettings(1, 0, 1000, 30000, 100.0)
    long_key = "a" * (KEY_BYTES - 5) + ".svc:8080"
    breaker, detector = region.cluster("c", "sig", Limits(9, 9, 9, 9), None, settings, (long_key,), 0.0, {})
    assert isinstance(breaker, SharedBreaker)
    assert type(detector) is OutlierState
    assert detector.record(long_key, 500, None, 1.0) and detector.is_ejected(long_key, 1.0)
    _, shared = region.cluster("d", "sig", Limits(9, 9, 9, 9), None, settings, ("a" * KEY_BYTES,), 0.0, {})
    assert isinstance(shared, SharedOutlier)                                  # 64 bytes still fit
    assert shared.record("a" * KEY_BYTES, 500, None, 1.0) and shared.is_ejected("a" * KEY_BYTES, 1.0)
