"""`meshc serve` (issue 14, docs/control-plane.md): the Envoy backend's resources served over ADS,
state of the world, to a real Envoy 1.40 and to raw gRPC clients, with no mocks.

`meshc serve` runs as a subprocess (its CLI, its signals); Envoy starts from the bootstrap of
`meshc compile --bootstrap ads`. The policy is tests/envoy/behaviour.mesh.in (the sidecar of
`web` in front of loopback echo backends), whose route `live` the tests switch between subsets.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from compiler import api
from compiler.control import consistency, protos, snapshot
from compiler.control.snapshot import CLUSTER, LISTENER, ROUTE
from tests.envoy_support import ROOT, Backend, Envoy, free_port, request, requires_envoy, run_meshc

TEMPLATE = Path(ROOT) / "tests" / "envoy" / "behaviour.mesh.in"
API = {"host": "api:8080"}


def policy(path: Path, ports: dict, live: str = "v1", more_rules: str = "") -> Path:
    text = TEMPLATE.read_text()
    for key, value in {**ports, "LIVE": live, "MORE_RULES": more_rules}.items():
        text = text.replace(f"@{key}@", str(value))
    path.write_text(text)
    return path


def fixed_ports() -> dict:
    return {k: free_port() for k in ("INBOUND", "OUTBOUND", "ADMIN", "APP", "V1", "V2", "SHADOW")}


class Serve:
    """`meshc serve FILE --listen 127.0.0.1:PORT` as a subprocess, its stderr read in a thread."""

    def __init__(self, *files: str, watch: float = 0, port: int | None = None, args: tuple[str, ...] = ()):
        self.port = port or free_port()
        env = {k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "compiler", "serve", *files, "--listen", f"127.0.0.1:{self.port}",
             "--watch", str(watch), "--color", "never", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for("serving")

    def _read(self):
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def wait_for(self, text: str, after: int = 0, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[after:]:
                    if text in line:
                        return line
                if self.proc.poll() is not None and not self.cond.wait(0.2):
                    raise AssertionError(f"meshc serve exited {self.proc.returncode}: {''.join(self.lines)}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {text!r} from meshc serve: {''.join(self.lines)}")
                self.cond.wait(0.1)

    def reload(self) -> int:
        """SIGHUP; the index of the next line (for wait_for)."""
        with self.cond:
            mark = len(self.lines)
        self.proc.send_signal(signal.SIGHUP)
        return mark

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


class RawClient:
    """One ADS stream from a plain (synchronous) gRPC client: requests are queued, responses read
    one at a time with a timeout."""

    def __init__(self, port: int, credentials: grpc.ChannelCredentials | None = None):
        # with credentials: mutual TLS to `meshc serve --ca`, whose certificate names `meshc-control`
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}") if credentials is None else \
            grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=[("grpc.ssl_target_name_override",
                                                                              "meshc-control")])
        self.requests: queue.Queue = queue.Queue()
        self.responses: queue.Queue = queue.Queue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.StreamAggregatedResources(iter(self.requests.get, None))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for response in self.call:
                self.responses.put(response)
        except grpc.RpcError as err:
            self.responses.put(err)

    def send(self, type_url: str, node: str | None = None, names=(), version: str = "", nonce: str = "",
             error: str | None = None):
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names), version_info=version,
                                             response_nonce=nonce)
        if node is not None:
            req.node.CopyFrom(base_pb2.Node(id=node, cluster=node))
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self.requests.put(req)

    def receive(self, timeout: float = 10):
        item = self.responses.get(timeout=timeout)
        if isinstance(item, Exception):
            raise item
        return item

    def nothing_within(self, seconds: float) -> bool:
        try:
            item = self.responses.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected: {item}")

    def close(self):
        self.requests.put(None)
        self.channel.close()


# ---- the snapshot, the versions, the consistency check (in process) ------------------------------

def test_a_snapshot_is_the_backends_xds_output_over_ads(tmp_path):
    ports = fixed_ports()
    path = policy(tmp_path / "p.mesh", ports)
    snap = snapshot.build(api.compile([str(path)]), "web")
    assert set(snap.json[LISTENER]) == {"inbound", "outbound"}
    assert "outbound" in snap.json[ROUTE]
    assert not consistency.problems(snap)
    # the only change from the files: references to other xDS resources go over ADS
    hcm = next(f["typed_config"] for c in snap.json[LISTENER]["outbound"]["filter_chains"] for f in c["filters"])
    assert hcm["rds"]["config_source"] == {"ads": {}, "resource_api_version": "V3"}
    for type_url, packed in snap.packed.items():
        for resource in packed.values():
            assert resource.type_url == type_url
            if type_url != snapshot.NATIVE:
                assert resource.Unpack(protos.message_class(type_url)())
    # the native config: one resource named by the node, the native backend's bytes as they are
    native = api.compile([str(path)]).emit("native", ["web"]).files["web.native.json"]
    assert list(snap.packed[snapshot.NATIVE]) == ["web"] and snap.packed[snapshot.NATIVE]["web"].value == native
    # versions are content hashes: another compile of the same sources agrees, an edit changes
    # the routes' version only (and the native config's, which holds the routes too)
    again = snapshot.build(api.compile([str(path)]), "web")
    assert again.versions == snap.versions
    policy(path, ports, live="v2")
    edited = snapshot.build(api.compile([str(path)]), "web")
    assert edited.versions[ROUTE] != snap.versions[ROUTE]
    assert edited.versions[snapshot.NATIVE] != snap.versions[snapshot.NATIVE]
    assert {t: v for t, v in edited.versions.items() if t not in (ROUTE, snapshot.NATIVE)} == \
        {t: v for t, v in snap.versions.items() if t not in (ROUTE, snapshot.NATIVE)}


def test_an_inconsistent_snapshot_is_found(tmp_path):
    snap = snapshot.build(api.compile([str(policy(tmp_path / "p.mesh", fixed_ports()))]), "web")
    cluster = sorted(consistency.references(snap)[CLUSTER])[0]   # one the routes send to
    del snap.json[CLUSTER][cluster]
    del snap.json[ROUTE]["outbound"]
    found = consistency.problems(snap)
    assert "web: RouteConfiguration 'outbound' is referenced but not in the snapshot" in found
    assert any(f"Cluster {cluster!r}" in p for p in found), found


# ---- a real Envoy fed by `meshc serve` ---------------------------------------------------------

class Plane:
    """The backends, the policy, `meshc serve` (reloads on SIGHUP only) and Envoy from `--bootstrap ads`."""

    def __init__(self, tmp: Path):
        self.v1, self.v2, self.shadow, self.app = (Backend(n) for n in ("v1", "v2", "shadow", "app"))
        self.ports = {"INBOUND": free_port(), "OUTBOUND": free_port(), "ADMIN": free_port(), "APP": self.app.port,
                      "V1": self.v1.port, "V2": self.v2.port, "SHADOW": self.shadow.port}
        self.tmp = tmp
        self.path = policy(tmp / "behaviour.mesh", self.ports)
        self.serve = Serve(str(self.path))
        self.envoy = None
        proc = run_meshc("compile", str(self.path), "--target", "envoy", "--proxy", "web", "--bootstrap", "ads",
                         "--xds-server", f"127.0.0.1:{self.serve.port}", "-o", str(tmp / "boot"))
        assert proc.returncode == 0, proc.stderr
        self.envoy = Envoy(str(tmp / "boot" / "web.envoy.json"), "--reject-unknown-dynamic-fields")
        self.wait_listeners()

    def wait_listeners(self):
        deadline = time.monotonic() + 20
        while self.envoy.listener_ports() != {"inbound": self.ports["INBOUND"], "outbound": self.ports["OUTBOUND"]}:
            assert time.monotonic() < deadline, self.envoy.output()
            time.sleep(0.05)

    def call(self, path: str, headers: dict | None = None) -> str:
        status, _, body = request(self.ports["OUTBOUND"], path, headers={**API, **(headers or {})})
        assert status == 200, (status, body)
        return json.loads(body)["backend"]

    def dump(self) -> dict:
        return json.loads(self.envoy.admin("/config_dump"))

    def route_version(self) -> str | None:
        for config in self.dump()["configs"]:
            for dynamic in config.get("dynamic_route_configs", []):
                if dynamic["route_config"]["name"] == "outbound":
                    return dynamic["version_info"]
        return None

    def close(self):
        if self.envoy is not None:
            self.envoy.stop()
        code = self.serve.stop()
        for b in (self.v1, self.v2, self.shadow, self.app):
            b.close()
        assert code == 0, "".join(self.serve.lines)


@pytest.fixture
def plane(tmp_path):
    p = Plane(tmp_path)
    yield p
    p.close()


@requires_envoy
def test_envoy_over_ads_routes_as_envoy_from_files(plane):
    """The resources Envoy received are those the backend writes to files (config sources aside),
    and requests route as in tests/test_envoy_behaviour.py."""
    snap = snapshot.build(api.compile([str(plane.path)]), "web")
    dump = plane.dump()["configs"]
    clusters = {c["cluster"]["name"]: c for d in dump for c in d.get("dynamic_active_clusters", [])}
    listeners = {entry["name"]: entry["active_state"] for d in dump for entry in d.get("dynamic_listeners", [])}
    routes = {r["route_config"]["name"]: r for d in dump for r in d.get("dynamic_route_configs", [])}
    for type_url, got in ((CLUSTER, {n: c["cluster"] for n, c in clusters.items()}),
                          (LISTENER, {n: s["listener"] for n, s in listeners.items()}),
                          (ROUTE, {n: r["route_config"] for n, r in routes.items()})):
        assert set(got) == set(snap.json[type_url]), type_url
        for name, doc in got.items():   # the same protobuf message as the backend's JSON
            assert _same(doc, snap.packed[type_url][name], type_url), name
    versions = {CLUSTER: {c["version_info"] for c in clusters.values()},
                LISTENER: {s["version_info"] for s in listeners.values()},
                ROUTE: {r["version_info"] for r in routes.values()}}
    assert versions == {t: {snap.versions[t]} for t in versions}, "the content hashes, as computed in process"
    assert plane.call("/live") == "v1"
    assert plane.call("/anything", {"x-canary": "always"}) == "v2"
    assert plane.call("/other") == "v1"


def _same(doc: dict, packed, type_url: str) -> bool:
    message = protos.message_class(type_url)()
    packed.Unpack(message)
    received = protos.parse({k: v for k, v in doc.items() if k != "@type"}, protos.message_class(type_url)())
    return received == message


@requires_envoy
def test_an_edit_reaches_envoy_without_restart_and_a_broken_edit_changes_nothing(plane):
    pid, before = plane.envoy.proc.pid, plane.route_version()
    assert plane.call("/live") == "v1"
    policy(plane.path, plane.ports, live="v2")
    started = time.monotonic()
    mark = plane.serve.reload()
    line = plane.serve.wait_for("published (", after=mark)
    assert "web" in line.partition("changed: ")[2], line   # (the shared outbound routes: not scoped yet)
    deadline = time.monotonic() + 10
    while plane.route_version() == before:
        assert time.monotonic() < deadline, plane.envoy.output()
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    after = plane.route_version()
    assert after == snapshot.build(api.compile([str(plane.path)]), "web").versions[ROUTE]
    assert plane.call("/live") == "v2" and plane.envoy.proc.pid == pid and plane.envoy.proc.poll() is None
    print(f"SIGHUP to the new route version in Envoy: {elapsed * 1000:.0f} ms")

    plane.path.write_text(plane.path.read_text().replace("route live {", "route live { nonsense"))
    mark = plane.serve.reload()
    plane.serve.wait_for("still serving the last good snapshot", after=mark)
    assert any("error[" in line for line in plane.serve.lines[mark:]), "the diagnostics are printed"
    time.sleep(0.3)
    assert plane.route_version() == after and plane.call("/live") == "v2"
    stats = plane.envoy.stats("cluster_manager.cds.update_rejected")
    assert stats.get("cluster_manager.cds.update_rejected", 0) == 0


@requires_envoy
def test_envoy_keeps_its_config_while_the_server_is_down_and_resyncs_with_a_new_one(plane):
    version = plane.route_version()
    assert plane.serve.stop() == 0
    deadline = time.monotonic() + 10
    while plane.envoy.stats("control_plane.connected_state")["control_plane.connected_state"] != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert plane.call("/live") == "v1" and plane.route_version() == version, "the last config, served"
    plane.serve = Serve(str(plane.path), port=plane.serve.port)   # a new server process, same sources
    deadline = time.monotonic() + 30
    while plane.envoy.stats("control_plane.connected_state")["control_plane.connected_state"] != 1:
        assert time.monotonic() < deadline, plane.envoy.output()
        time.sleep(0.05)
    assert plane.route_version() == version and plane.call("/live") == "v1"
    policy(plane.path, plane.ports, live="v2")   # and the new stream takes pushes
    plane.serve.reload()
    deadline = time.monotonic() + 10
    while plane.route_version() == version:
        assert time.monotonic() < deadline, plane.envoy.output()
        time.sleep(0.02)
    assert plane.call("/live") == "v2"


def test_a_saved_edit_of_an_imported_file_is_picked_up_by_polling(tmp_path):
    ports = fixed_ports()
    path = policy(tmp_path / "p.mesh", ports)
    main = tmp_path / "main.mesh"
    main.write_text('import "./p.mesh"\n')
    serve = Serve(str(main), watch=0.1)
    try:
        client = RawClient(serve.port)
        client.send(ROUTE, node="web", names=["outbound"])
        client.send(CLUSTER)
        first = client.receive()
        assert first.type_url == CLUSTER
        routes = client.receive()
        assert routes.type_url == ROUTE
        client.send(ROUTE, names=["outbound"], version=routes.version_info, nonce=routes.nonce)
        time.sleep(0.05)
        policy(path, ports, live="v2")
        again = client.receive()
        assert again.type_url == ROUTE and again.version_info != routes.version_info
        client.close()
    finally:
        assert serve.stop() == 0


# ---- the stream state machine, in process ----------------------------------------------------------

def test_the_stream_records_acks_and_nacks_per_type_and_ignores_a_stale_nonce(tmp_path):
    from compiler.control.ads import Stream

    ports = fixed_ports()
    path = policy(tmp_path / "p.mesh", ports)
    snaps = snapshot.build_all(api.compile([str(path)]))
    stream = Stream(1)
    req = discovery_pb2.DiscoveryRequest
    (clusters,) = stream.on_request(req(type_url=CLUSTER, node=base_pb2.Node(id="web")), snaps)
    (listeners,) = stream.on_request(req(type_url=LISTENER), snaps)
    assert clusters.version_info == snaps["web"].versions[CLUSTER] and clusters.nonce != listeners.nonce
    assert stream.on_request(req(type_url=CLUSTER, version_info=clusters.version_info,
                                 response_nonce=clusters.nonce), snaps) == []
    rejected = req(type_url=LISTENER, response_nonce=listeners.nonce, error_detail=status_pb2.Status(message="bad"))
    assert stream.on_request(rejected, snaps) == []
    status = stream.status()["types"]
    assert status[CLUSTER]["acked"] == clusters.version_info and status[CLUSTER]["acks"] == 1
    assert status[LISTENER] == {"sent": listeners.version_info, "acked": None, "error": "bad", "acks": 0,
                                     "nacks": 1, "rejected": listeners.version_info}
    # a stale nonce acknowledges nothing
    assert stream.on_request(req(type_url=LISTENER, version_info=listeners.version_info, response_nonce="old"),
                             snaps) == []
    assert stream.status()["types"][LISTENER]["acked"] is None
    # a new snapshot (the route `live` to v2) is pushed, the rejected one is not
    policy(path, ports, live="v2")
    newer = snapshot.build_all(api.compile([str(path)]))
    assert stream.pending(newer) == [], "only routes changed, and this stream asked for none"
    (routes,) = stream.on_request(req(type_url=ROUTE, resource_names=["outbound"]), newer)
    assert routes.version_info == newer["web"].versions[ROUTE]
    # routes NACKed: not re-sent, not even on a publish of the same snapshot; the next version is
    nack = req(type_url=ROUTE, resource_names=["outbound"], response_nonce=routes.nonce,
               error_detail=status_pb2.Status(message="no"))
    assert stream.on_request(nack, newer) == [] and stream.pending(newer) == []
    assert stream.rejections[-1] == (ROUTE, routes.version_info, "no")
    (back,) = stream.pending(snaps)   # the route `live` to v1 again: the first version
    assert back.version_info == snaps["web"].versions[ROUTE] != routes.version_info


def test_removals_go_in_the_reverse_order(tmp_path):
    """A snapshot that drops clusters the proxy has: listeners and routes first, clusters last."""
    import copy

    from compiler.control.ads import Stream
    from compiler.control.versions import version_of

    snaps = snapshot.build_all(api.compile([str(policy(tmp_path / "p.mesh", fixed_ports()))]))
    stream = Stream(1)
    req = discovery_pb2.DiscoveryRequest
    stream.on_request(req(type_url=CLUSTER, node=base_pb2.Node(id="web")), snaps)
    stream.on_request(req(type_url=LISTENER), snaps)
    stream.on_request(req(type_url=ROUTE, resource_names=["outbound"]), snaps)
    smaller = copy.copy(snaps["web"])
    victim = next(n for n in smaller.packed[CLUSTER] if n.startswith("outbound|"))   # (web's CDS: its own inbound only)
    kept = {n: r for n, r in smaller.packed[CLUSTER].items() if n != victim}
    smaller.packed = {**smaller.packed, CLUSTER: kept, LISTENER: dict(list(smaller.packed[LISTENER].items())[:1])}
    smaller.versions = {t: version_of(p) for t, p in smaller.packed.items()}
    assert [r.type_url for r in stream.pending({"web": smaller})] == [LISTENER, CLUSTER]


# ---- raw gRPC clients: versions, bad clients, NACKs ------------------------------------------------

@pytest.fixture
def served(tmp_path):
    serve = Serve(str(policy(tmp_path / "p.mesh", fixed_ports())))
    yield serve
    assert serve.stop() == 0, "".join(serve.lines)


def test_two_servers_on_the_same_sources_serve_the_same_versions(tmp_path, served):
    other = Serve(*[a for a in served.proc.args if a.endswith(".mesh")])
    try:
        seen = []
        for port in (served.port, other.port):
            client = RawClient(port)
            client.send(CLUSTER, node="web")
            client.send(LISTENER)
            got = [client.receive(), client.receive()]
            seen.append({r.type_url: (r.version_info, [a.value for a in r.resources]) for r in got})
            assert got[0].nonce != got[1].nonce
            client.close()
        assert seen[0] == seen[1] and set(seen[0]) == {CLUSTER, LISTENER}
    finally:
        assert other.stop() == 0


def test_clusters_go_first_and_routes_by_name(served):
    client = RawClient(served.port)
    client.send(LISTENER, node="web")
    assert client.nothing_within(0.3), "no listeners before the clusters"
    client.send(CLUSTER)
    first, second = client.receive(), client.receive()
    assert (first.type_url, second.type_url) == (CLUSTER, LISTENER)
    assert sorted(name_of(r) for r in second.resources) == ["inbound", "outbound"]
    client.send(ROUTE, names=["outbound", "no-such-route"])
    routes = client.receive()
    assert [name_of(r) for r in routes.resources] == ["outbound"]
    # a subscription change with a stale nonce is honoured
    client.send(ROUTE, names=[], nonce="stale")
    assert list(client.receive().resources) == []
    client.close()


def name_of(resource) -> str:
    message = protos.message_class(resource.type_url)()
    resource.Unpack(message)
    return message.name


def test_an_unknown_node_or_type_or_a_huge_request_ends_that_stream_only(served):
    good = RawClient(served.port)
    good.send(CLUSTER, node="web")
    assert good.receive().type_url == CLUSTER
    bad = RawClient(served.port)
    bad.send(CLUSTER, node="nosuch")
    with pytest.raises(grpc.RpcError) as err:
        bad.receive()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "unknown node 'nosuch'" in err.value.details()
    served.wait_for("ended: unknown node 'nosuch'")
    odd = RawClient(served.port)
    odd.send("type.googleapis.com/envoy.config.endpoint.v3.NoSuch", node="web")
    with pytest.raises(grpc.RpcError) as err:
        odd.receive()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "is not served" in err.value.details()
    huge = RawClient(served.port)   # a request over 1 MiB
    huge.send(CLUSTER, node="web", names=["x" * 1000] * 1100)
    with pytest.raises(grpc.RpcError) as err:
        huge.receive()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    good.send(LISTENER)   # the other stream goes on
    assert good.receive().type_url == LISTENER
    for c in (good, bad, odd, huge):
        c.close()


def test_a_nack_is_not_answered_with_the_same_version(served):
    client = RawClient(served.port)
    client.send(CLUSTER, node="web")
    clusters = client.receive()
    client.send(CLUSTER, version="", nonce=clusters.nonce, error="test: rejected on purpose")
    assert client.nothing_within(1.0), "the rejected version is never re-sent"
    line = served.wait_for("rejected Cluster version")
    assert f"web rejected Cluster version {clusters.version_info}" in line and "rejected on purpose" in line
    # a reload that changes nothing for this node sends nothing either
    mark = served.reload()
    served.wait_for("published", after=mark)
    assert client.nothing_within(0.5)
    client.close()


def test_serve_exits_1_on_errors_and_2_on_a_busy_port(tmp_path):
    bad = tmp_path / "bad.mesh"
    bad.write_text("service {")
    proc = run_meshc("serve", str(bad), "--listen", f"127.0.0.1:{free_port()}", "--color", "never")
    assert proc.returncode == 1 and "error[" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    good = policy(tmp_path / "p.mesh", fixed_ports())
    serve = Serve(str(good))
    try:
        proc = run_meshc("serve", str(good), "--listen", f"127.0.0.1:{serve.port}")
        assert proc.returncode == 2 and proc.stderr == f"meshc: error: cannot listen on 127.0.0.1:{serve.port} " \
            "(address in use or not available)\n", proc.stderr
        proc = run_meshc("serve", str(good), "--listen", "nonsense")
        assert proc.returncode == 2 and proc.stderr.startswith("meshc: error: --listen nonsense: not HOST:PORT")
    finally:
        assert serve.stop() == 0
    interrupted = Serve(str(good))   # Ctrl-C: a clean exit 0, as SIGTERM
    interrupted.proc.send_signal(signal.SIGINT)
    assert interrupted.proc.wait(10) == 0
    interrupted.wait_for("meshc serve: stopped")
    assert not any("Traceback" in line for line in interrupted.lines)


@requires_envoy
def test_a_subset_renamed_under_load_is_never_a_503_make_before_break(plane):
    """Subset v2 renamed v3 while requests go to it (`x-canary: always`) every few ms: the push
    adds `outbound|v3|api` and removes `outbound|v2|api`; make before break (the union of the
    clusters first, then the routes naming v3, then the new clusters) leaves Envoy no moment with
    a route to a cluster it does not have: every request answers 200 from the same backend."""
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            status, _, body = request(plane.ports["OUTBOUND"], "/anything", headers={**API, "x-canary": "always"})
            answers.append((status, json.loads(body)["backend"] if status == 200 else body.decode()[:80]))
            time.sleep(0.003)

    def clusters() -> set[str]:
        return {c["cluster"]["name"] for d in plane.dump()["configs"] for c in d.get("dynamic_active_clusters", [])}

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        time.sleep(0.3)
        plane.path.write_text(plane.path.read_text().replace("subset v2 {", "subset v3 {").replace("api.v2", "api.v3"))
        mark = plane.serve.reload()
        plane.serve.wait_for("published (", after=mark)
        deadline = time.monotonic() + 10
        while "outbound|v2|api" in clusters() or "outbound|v3|api" not in clusters():
            assert time.monotonic() < deadline, plane.envoy.output()
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join(10)
    assert len(answers) > 50 and set(answers) == {(200, "v2")}, {a: answers.count(a) for a in set(answers)}
