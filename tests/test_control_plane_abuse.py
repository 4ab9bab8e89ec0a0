"""Bad and hostile ADS clients against `meshc serve` (issue 14, docs/control-plane.md "Limits and
bad input"): each gets a clear gRPC status on its own stream, and a real sidecar on the same
server (each of SIDECARS: Envoy, the native proxy) keeps receiving pushes and acknowledging
them meanwhile. The malformed requests that existed before (unknown node, unknown type URL, a
huge request) are in tests/test_control_plane.py.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import grpc.aio
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from compiler.control import status as control_status
from compiler.control.snapshot import CLUSTER, ROUTE
from tests.envoy_support import free_port, requires_envoy, run_meshc
from tests.test_control_plane import RawClient, Serve, fixed_ports, policy
from tests.test_control_plane_failover import SIDECARS, Fleet, Load

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


@pytest.fixture(params=list(SIDECARS))
def sidecar(request):
    """The sidecar beside the flooders: each of tests/test_control_plane_failover.py's SIDECARS."""
    return SIDECARS[request.param]


def push(fleet: Fleet, live: str) -> float:
    """Edit the route `live` to `live`, SIGHUP, and wait until the sidecar holds new versions and
    the server has its ACKs; the seconds from SIGHUP to the new version in the sidecar."""
    server = fleet.servers[0]
    assert server is not None
    before = fleet.versions()
    policy(fleet.path, fleet.ports, live=live)
    started = time.monotonic()
    server.reload()
    deadline = started + 10
    while fleet.versions() == before:
        assert time.monotonic() < deadline, fleet.output()
        time.sleep(0.005)
    took = time.monotonic() - started
    while True:   # and acknowledged: the server's view
        (stream,) = fleet.streams_on(0)
        if {e["state"] for e in stream["types"].values()} == {"up to date"}:
            return took
        assert time.monotonic() < deadline, stream
        time.sleep(0.01)


class RequestFlood(threading.Thread):
    """Streams as node `web` that send requests as fast as they can (a route subscription that
    changes on every request, so that each one would be answered), a new stream each time the
    server ends one, until stopped. Records each ended stream's status."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.stopping = threading.Event()
        self.sent = self.responses = 0
        self.ended: list[tuple[grpc.StatusCode, str]] = []
        self.started = time.monotonic()

    def requests(self):
        yield discovery_pb2.DiscoveryRequest(type_url=CLUSTER, node=base_pb2.Node(id="web", cluster="web"))
        flip = False
        while not self.stopping.is_set():
            flip = not flip
            self.sent += 1
            yield discovery_pb2.DiscoveryRequest(type_url=ROUTE, resource_names=["outbound"] if flip else [],
                                                 response_nonce="flood")

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                for _ in self.stub.StreamAggregatedResources(self.requests()):
                    self.responses += 1
            except grpc.RpcError as err:
                self.ended.append((err.code(), err.details()))

    def stop(self) -> str:
        self.stopping.set()
        self.join(10)
        self.channel.close()
        seconds = time.monotonic() - self.started
        return (f"{self.sent} requests in {seconds:.1f} s ({self.sent / seconds:.0f}/s) on {len(self.ended) + 1} "
                f"stream(s), {self.responses} answered")


@requires_envoy
def test_a_request_flood_ends_its_own_stream_and_the_sidecar_still_gets_pushes(tmp_path, sidecar):
    """Thousands of requests a second on one stream: RESOURCE_EXHAUSTED on that stream once its
    token bucket is empty (100 a second, a burst of 1,000, the defaults), again on every new
    stream of the flooder; meanwhile a real sidecar (Envoy, the native proxy) under load on the
    same server takes every push and acknowledges it, no request fails, and the server's own status answers."""
    fleet = Fleet(tmp_path, sidecar=sidecar)
    try:
        baseline = [push(fleet, live) for live in ("v2", "v1", "v2")]
        load = Load(fleet.ports["OUTBOUND"], rate=100, threads=2)
        flood = RequestFlood(fleet.server_ports[0])
        flood.start()
        try:
            deadline = time.monotonic() + 15
            while len(flood.ended) < 2:
                assert time.monotonic() < deadline, (flood.sent, flood.ended)
                time.sleep(0.05)
            during = [push(fleet, live) for live in ("v1", "v2", "v1")]
            report = control_status.fetch(f"127.0.0.1:{fleet.server_ports[0]}")
        finally:
            summary = flood.stop()
            served = load.stop()
        print(f"\nflood: {summary}; {fleet.proxy.kind}: {served}; push (SIGHUP to the new route in the sidecar) "
              f"{', '.join(f'{t * 1000:.0f}' for t in baseline)} ms alone, "
              f"{', '.join(f'{t * 1000:.0f}' for t in during)} ms under the flood")
        code, details = flood.ended[0]
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, flood.ended[0]
        assert details == "more than 100 requests per second on one stream (a burst of 1000 allowed; " \
                          "meshc serve --max-request-rate)"
        assert all(c == grpc.StatusCode.RESOURCE_EXHAUSTED for c, _ in flood.ended)
        assert flood.sent > 2000 and flood.responses < flood.sent
        assert not load.failures, load.failures[:5]
        assert max(during) < 2.0, during
        assert report["server"]["limits"]["rate_limited_streams"] >= 2
        server = fleet.servers[0]
        assert server is not None
        assert sum("requests per second" in line for line in server.lines) <= len(flood.ended)
        assert not any("Traceback" in line for line in server.lines)
    finally:
        fleet.close()


class StreamFlood(threading.Thread):
    """`count` ADS streams, 100 per connection (grpc.aio, HTTP/2 multiplexed), each sending a first
    request as node `web`: the ones answered are held open until stopped, the others record their
    status."""

    def __init__(self, port: int, count: int):
        super().__init__(daemon=True)
        self.port, self.count = port, count
        self.accepted = 0
        self.refused: list[tuple[grpc.StatusCode, str]] = []
        self.began = self.finished = 0.0
        self.done = threading.Event()
        self.stopping: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def run(self) -> None:
        asyncio.run(self.main())

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        # one connection per 100 streams (one channel each; a channel option keeps them apart)
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=[("grpc.channel_id", i)])
                    for i in range(-(-self.count // 100))]
        stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(c) for c in channels]
        try:
            async def one(index: int):
                call = stubs[index // 100].StreamAggregatedResources()
                try:
                    await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, node=base_pb2.Node(id="web")))
                    await call.read()
                except grpc.aio.AioRpcError:
                    # the call's own status (a write racing the server's abort fails on its own)
                    self.refused.append((await call.code(), await call.details() or ""))
                    return
                self.accepted += 1
                assert self.stopping is not None
                await self.stopping.wait()
                call.cancel()

            self.began = time.monotonic()
            tasks = [asyncio.ensure_future(one(i)) for i in range(self.count)]
            while self.accepted + len(self.refused) < self.count:
                await asyncio.sleep(0.02)
            self.finished = time.monotonic()
            self.done.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for c in channels:
                await c.close()

    def stop(self) -> None:
        if self.loop is not None and self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
        self.join(10)


@requires_envoy
def test_streams_over_max_streams_are_refused_and_the_sidecar_still_gets_pushes(tmp_path, sidecar):
    """`--max-streams 50` and a client opening 1,000 streams at once while a real sidecar is
    connected: 49 are served, the other 951 end at once with RESOURCE_EXHAUSTED and a message
    naming the limit; the sidecar takes a push meanwhile, `meshc status` counts the refusals, the log
    says it in at most 10 lines a second, and once the flood's streams close a new client is served."""
    fleet = Fleet(tmp_path, serve_args=("--max-streams", "50"), sidecar=sidecar)
    try:
        flood = StreamFlood(fleet.server_ports[0], 1000)
        flood.start()
        try:
            assert flood.done.wait(30), (flood.accepted, len(flood.refused))
            took = push(fleet, "v2")
            report = control_status.fetch(f"127.0.0.1:{fleet.server_ports[0]}")
        finally:
            flood.stop()
        print(f"\n1,000 streams, --max-streams 50: {flood.accepted} served, {len(flood.refused)} refused; "
              f"a push to the {fleet.proxy.kind} sidecar meanwhile {took * 1000:.0f} ms")
        assert (flood.accepted, len(flood.refused)) == (49, 951)
        assert set(flood.refused) == {(grpc.StatusCode.RESOURCE_EXHAUSTED, "the server serves at most 50 streams "
                                       "(meshc serve --max-streams); try again later or another replica")}
        assert report["server"]["limits"]["refused_streams"] == 951, report["server"]["limits"]
        assert len(report["streams"]) == 50, report["streams"]
        server = fleet.servers[0]
        assert server is not None
        logged = [line for line in server.lines if "refused: the server serves at most" in line]
        seconds = flood.finished - flood.began   # 10 lines a second; the rest counted (said with the next line)
        assert 1 <= len(logged) <= 10 * (int(seconds) + 2), (seconds, logged)
        deadline = time.monotonic() + 10   # the flood's streams are gone: room again
        while len(control_status.fetch(f"127.0.0.1:{fleet.server_ports[0]}")["streams"]) != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client = RawClient(fleet.server_ports[0])
        client.send(CLUSTER, node="web")
        assert client.receive().type_url == CLUSTER
        client.close()
    finally:
        fleet.close()


# ---- malformed requests, one stream each --------------------------------------------------------

@pytest.fixture
def served(tmp_path):
    serve = Serve(str(policy(tmp_path / "p.mesh", fixed_ports())))
    yield serve
    assert serve.stop() == 0, "".join(serve.lines)
    assert not any("Traceback" in line for line in serve.lines), "".join(serve.lines)


def stream_state(serve: Serve, node: str = "web") -> dict:
    (stream,) = [s for s in control_status.fetch(f"127.0.0.1:{serve.port}")["streams"] if s["node"] == node]
    return stream


def test_a_nonce_never_sent_and_a_nack_of_a_type_never_sent_acknowledge_and_reject_nothing(served):
    """A request whose nonce the server never sent, claiming the current version, is not an ACK
    (and its subscription is answered); a NACK with a nonce never sent rejects nothing: the
    clusters are sent, and sent again to nobody's harm when the proxy asks with the right nonce."""
    client = RawClient(served.port)
    client.send(CLUSTER, node="web", nonce="never-sent", error="a NACK of nothing")
    clusters = client.receive()
    assert clusters.type_url == CLUSTER and clusters.nonce != "never-sent"
    state = stream_state(served)["types"]["Cluster"]
    assert (state["state"], state["nacks"], state["last_rejection"]) == ("never acked", 0, None)
    client.send(ROUTE, names=["outbound"], version="0123456789abcdef", nonce="never-sent-either")
    routes = client.receive()
    assert routes.type_url == ROUTE
    state = stream_state(served)["types"]["RouteConfiguration"]
    assert (state["state"], state["acked"]) == ("never acked", None), "a forged version is not an ACK"
    client.send(ROUTE, names=["outbound"], version=routes.version_info, nonce=routes.nonce)
    deadline = time.monotonic() + 5
    while stream_state(served)["types"]["RouteConfiguration"]["state"] != "up to date":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not any("rejected" in line for line in served.lines)
    client.close()


def test_garbage_bytes_a_changed_node_a_missing_node_and_delta_end_their_own_stream(served):
    good = RawClient(served.port)
    good.send(CLUSTER, node="web")
    assert good.receive().type_url == CLUSTER
    channel = grpc.insecure_channel(f"127.0.0.1:{served.port}")
    raw = channel.stream_stream(ADS_METHOD)   # bytes as they are: not a DiscoveryRequest
    with pytest.raises(grpc.RpcError) as err:
        list(raw(iter([b"\xff\xfe\x00 not protobuf" * 8])))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("a message of 128 bytes that is not a DiscoveryRequest (")
    changed = RawClient(served.port)
    changed.send(CLUSTER, node="web")
    assert changed.receive().type_url == CLUSTER
    changed.send(ROUTE, node="api", names=["outbound"])
    with pytest.raises(grpc.RpcError) as err:
        changed.receive()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "the node id changed on the stream ('web', then 'api'): one stream serves one node"
    anonymous = RawClient(served.port)
    anonymous.send(CLUSTER)
    with pytest.raises(grpc.RpcError) as err:
        anonymous.receive()
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                       "the first request carries no node id")
    delta = channel.stream_stream("/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources")
    with pytest.raises(grpc.RpcError) as err:
        list(delta(iter([b""])))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED and "delta xDS is not served" in err.value.details()
    good.send(ROUTE, names=["outbound"])   # the good stream went on throughout
    assert good.receive().type_url == ROUTE
    served.wait_for("not a DiscoveryRequest")
    for c in (good, changed, anonymous):
        c.close()
    channel.close()


@pytest.mark.parametrize(("args", "message"), [
    (("--max-streams", "0"), "meshc: error: --max-streams 0: not a number of streams >= 1\n"),
    (("--max-request-rate", "0"), "meshc: error: --max-request-rate 0: not a number of requests per second > 0\n"),
    (("--max-request-rate", "nan"), "meshc: error: --max-request-rate nan: not a number of requests per second > 0\n"),
    # too large to mean a limit (and its burst, 10 s of it, overflowed an int: exit 3 before)
    (("--max-request-rate", "1e308"), "meshc: error: --max-request-rate 1e+308: at most 1,000,000 requests per "
                                      "second\n"),
])
def test_limits_that_are_not_numbers_of_anything_exit_2(tmp_path, args, message):
    path = policy(tmp_path / "p.mesh", fixed_ports())
    proc = run_meshc("serve", str(path), "--listen", f"127.0.0.1:{free_port()}", *args)
    assert (proc.returncode, proc.stderr) == (2, message)
