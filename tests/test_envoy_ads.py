"""`meshc compile --target envoy --bootstrap ads --xds-server HOST:PORT`: the bootstrap that points
a sidecar at the control plane (issue 14, docs/control-plane.md).

The bootstrap passes `envoy --mode validate`, and a real Envoy started from it connects to a real
gRPC ADS endpoint written here with grpc.aio and xds-protos (no mocks): the endpoint records every
DiscoveryRequest and answers each type's first one with an empty state of the world, which is
all Envoy needs to initialise and ask for the next type. The first request carries the node
(id and cluster SERVICE) and asks for clusters; listeners are asked for next, without the node
(`set_node_on_first_message_only`).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import grpc
import grpc.aio
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from compiler.cli import main
from tests.envoy_support import ROOT, Envoy, requires_envoy, validate

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
EXAMPLE = str(Path(ROOT) / "examples" / "shop.mesh")


def meshc(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


def ads(capsys, tmp_path: Path, server: str, *proxies: str) -> dict[str, dict]:
    """The files of `--bootstrap ads --xds-server SERVER` for `proxies` (default all), by name."""
    out = tmp_path / "out"
    code, _, err = meshc(capsys, "compile", EXAMPLE, "--target", "envoy", "--bootstrap", "ads",
                         "--xds-server", server, "-o", str(out),
                         *[a for p in (proxies or ("all",)) for a in ("--proxy", p)])
    assert code == 0, err
    # (`.meshc-manifest`: what the compile wrote, tests/test_stale_outputs.py)
    return {p.name: json.loads(p.read_text()) for p in sorted(out.rglob("*")) if p.is_file()
            if p.name != ".meshc-manifest"}


# ---- the bootstrap ---------------------------------------------------------------------------

def test_the_ads_bootstrap_points_the_sidecar_at_the_control_plane(capsys, tmp_path):
    files = ads(capsys, tmp_path, "127.0.0.1:18000", "payments")
    assert list(files) == ["payments.envoy.json"], "the bootstrap alone: the resources come from the server"
    boot = files["payments.envoy.json"]
    assert boot["node"] == {"id": "payments", "cluster": "payments"}
    assert boot["dynamic_resources"] == {
        "ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": True,
                       "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster", "retry_policy": {
                           "retry_back_off": {"base_interval": "0.25s", "max_interval": "2s"}}}}]},
        "cds_config": {"ads": {}, "resource_api_version": "V3"},
        "lds_config": {"ads": {}, "resource_api_version": "V3"},
    }
    (cluster,) = boot["static_resources"]["clusters"]
    assert list(boot["static_resources"]) == ["clusters"], "nothing else is static"
    assert cluster["name"] == "xds_cluster" and cluster["type"] == "STATIC" and cluster["connect_timeout"] == "1s"
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["explicit_http_config"] == {"http2_protocol_options": {
        "connection_keepalive": {"interval": "5s", "timeout": "3s"}}}
    assert cluster["lb_policy"] == "ROUND_ROBIN"
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18000}
    # The admin interface and the runtime are those of every other bootstrap.
    code, _, err = meshc(capsys, "compile", EXAMPLE, "--target", "envoy", "--proxy", "payments",
                         "--bootstrap", "static", "-o", str(tmp_path / "static"))
    assert code == 0, err
    static = json.loads((tmp_path / "static" / "payments.envoy.json").read_text())
    assert boot["admin"] == static["admin"] and boot["layered_runtime"] == static["layered_runtime"]


@pytest.mark.parametrize(("server", "kind", "address"), [
    ("xds.mesh.internal:18000", "STRICT_DNS", "xds.mesh.internal"),
    ("[::1]:18000", "STATIC", "::1"),
    ("10.0.0.7:443", "STATIC", "10.0.0.7"),
])
def test_the_control_plane_cluster_resolves_a_name_and_not_an_address(capsys, tmp_path, server, kind, address):
    boot = ads(capsys, tmp_path, server, "payments")["payments.envoy.json"]
    (cluster,) = boot["static_resources"]["clusters"]
    assert cluster["type"] == kind
    assert ("dns_lookup_family" in cluster) == (kind == "STRICT_DNS")
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"]["address"] == address


@requires_envoy
def test_replicas_of_the_server_are_every_host_of_the_control_planes_cluster(capsys, tmp_path):
    """`--xds-server` repeated: one cluster whose hosts are the replicas, picked round robin each
    time the stream is (re)opened (tests/test_control_plane_failover.py runs it with Envoy)."""
    out = tmp_path / "out"
    code, _, err = meshc(capsys, "compile", EXAMPLE, "--target", "envoy", "--bootstrap", "ads", "--proxy", "payments",
                         "--xds-server", "127.0.0.1:18000", "--xds-server", "[::1]:18001", "-o", str(out))
    assert code == 0, err
    (cluster,) = json.loads((out / "payments.envoy.json").read_text())["static_resources"]["clusters"]
    hosts = [e["endpoint"]["address"]["socket_address"]
             for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert hosts == [{"address": "127.0.0.1", "port_value": 18000}, {"address": "::1", "port_value": 18001}]
    assert cluster["type"] == "STATIC" and cluster["lb_policy"] == "ROUND_ROBIN"
    ok, output = validate(str(out / "payments.envoy.json"))
    assert ok, output
    # one name among them: every host is resolved (STRICT_DNS resolves an address to itself)
    code, _, err = meshc(capsys, "compile", EXAMPLE, "--target", "envoy", "--bootstrap", "ads", "--proxy", "payments",
                         "--xds-server", "127.0.0.1:18000", "--xds-server", "xds-b.mesh.internal:18000",
                         "-o", str(tmp_path / "dns"))
    assert code == 0, err
    (cluster,) = json.loads((tmp_path / "dns" / "payments.envoy.json").read_text())["static_resources"]["clusters"]
    assert cluster["type"] == "STRICT_DNS" and len(cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 2


@pytest.mark.parametrize(("args", "message"), [
    (["--bootstrap", "ads", "--xds-server", "127.0.0.1:18000", "--xds-server", "127.0.0.1:18000"],
     "--xds-server 127.0.0.1:18000 is given twice"),
    (["--bootstrap", "ads", "--xds-server", "127.0.0.1:18000", "--xds-server", "nope"],
     "--xds-server nope: not HOST:PORT"),
    (["--bootstrap", "ads"], "--bootstrap ads needs --xds-server HOST:PORT"),
    (["--xds-server", "127.0.0.1:18000"], "--xds-server is for --bootstrap ads"),
    (["--bootstrap", "xds", "--xds-server", "127.0.0.1:18000"], "--xds-server is for --bootstrap ads"),
    (["--bootstrap", "ads", "--xds-server", "127.0.0.1"], "--xds-server 127.0.0.1: not HOST:PORT"),
    (["--bootstrap", "ads", "--xds-server", "127.0.0.1:0"], "not HOST:PORT"),
    (["--bootstrap", "ads", "--xds-server", "::1:18000"], "not HOST:PORT"),
    (["--bootstrap", "ads", "--xds-server", "bad_name:18000"], "not HOST:PORT"),
    (["--bootstrap", "ads", "--xds-server", "127.0.0.1:18000", "--xds-dir", "/etc/meshc/xds"],
     "--xds-dir is not used by --bootstrap ads"),
    (["--bootstrap", "ads", "--xds-server", "127.0.0.1:18000", "--certs-dir", "/etc/meshc/certs"],
     "--certs-dir is not used by --bootstrap ads"),
])
def test_ads_and_the_server_address_go_together(capsys, tmp_path, args, message):
    code, _, err = meshc(capsys, "compile", EXAMPLE, "--target", "envoy", "--proxy", "all", *args,
                         "-o", str(tmp_path / "out"))
    assert code == 2 and message in err, err
    assert not (tmp_path / "out").exists()


def test_ads_is_for_the_envoy_target(capsys, tmp_path):
    code, _, err = meshc(capsys, "compile", EXAMPLE, "--target", "native", "--proxy", "all",
                         "--bootstrap", "ads", "--xds-server", "127.0.0.1:18000")
    assert code == 2 and "--bootstrap ads is for --emit envoy" in err
    assert "meshc proxy --xds-server HOST:PORT --node SERVICE" in err   # the native proxy's flags are its bootstrap
    code, _, err = meshc(capsys, "compile", EXAMPLE, "--emit", "ir", "--xds-server", "127.0.0.1:18000")
    assert code == 2 and "--xds-server" in err and "need --emit envoy" in err


def test_xds_still_means_files(capsys, tmp_path):
    """Today's `--bootstrap xds` keeps its meaning: files watched by Envoy, no control plane."""
    out = tmp_path / "out"
    code, _, err = meshc(capsys, "compile", EXAMPLE, "--target", "envoy", "--proxy", "all", "--bootstrap", "xds",
                         "-o", str(out))
    assert code == 0, err
    boot = json.loads((out / "payments.envoy.json").read_text())
    assert "path_config_source" in boot["dynamic_resources"]["cds_config"]
    assert "ads_config" not in boot["dynamic_resources"]
    assert (out / "xds" / "payments" / "lds.json").exists()


@requires_envoy
def test_every_ads_bootstrap_passes_envoy_validate(capsys, tmp_path):
    for server in ("127.0.0.1:18000", "xds.mesh.internal:18000", "[::1]:18000"):
        files = ads(capsys, tmp_path / server.replace(":", "_"), server)
        for name, doc in files.items():
            path = tmp_path / name
            path.write_text(json.dumps(doc))
            ok, output = validate(str(path))
            assert ok, (server, name, output)


# ---- a real Envoy, a real ADS server ---------------------------------------------------------

class RecordingAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """An ADS endpoint that records every request and answers the first request of each type
    with an empty state of the world (version "0")."""

    def __init__(self):
        self.requests: list[discovery_pb2.DiscoveryRequest] = []
        self.lock = threading.Lock()

    async def StreamAggregatedResources(self, request_iterator, context):   # gRPC's method name
        nonce = 0
        async for request in request_iterator:
            with self.lock:
                self.requests.append(request)
            if not request.response_nonce:
                nonce += 1
                yield discovery_pb2.DiscoveryResponse(version_info="0", type_url=request.type_url,
                                                      nonce=str(nonce))

    def snapshot(self) -> list[discovery_pb2.DiscoveryRequest]:
        with self.lock:
            return list(self.requests)


class AdsServer:
    """A grpc.aio server on 127.0.0.1 (a port of its own choosing), on an event loop in a thread."""

    def __init__(self):
        self.servicer = RecordingAds()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> int:
        self.server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.servicer, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@requires_envoy
def test_a_real_envoy_connects_to_the_control_plane_it_is_pointed_at(capsys, tmp_path):
    server = AdsServer()
    envoy = None
    try:
        boot = ads(capsys, tmp_path, f"127.0.0.1:{server.port}", "payments")["payments.envoy.json"]
        boot["admin"]["address"]["socket_address"]["port_value"] = 0   # the test's own admin port
        path = tmp_path / "payments.ads.json"
        path.write_text(json.dumps(boot))
        envoy = Envoy(str(path))   # ready: it received (empty) clusters and listeners over ADS
        assert envoy.stats("control_plane.connected_state")["control_plane.connected_state"] == 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:   # the ACKs of both responses
            requests = server.servicer.snapshot()
            if {r.type_url for r in requests if r.response_nonce} >= {CLUSTER, LISTENER}:
                break
            time.sleep(0.02)
    finally:
        if envoy is not None:
            envoy.stop()
        server.stop()

    first = requests[0]
    assert first.node.id == "payments" and first.node.cluster == "payments"
    version = first.node.user_agent_build_version.version
    assert first.node.user_agent_name == "envoy" and (version.major_number, version.minor_number) == (1, 40)
    assert first.type_url == CLUSTER and not first.response_nonce and not first.version_info
    initial = [r.type_url for r in requests if not r.response_nonce]
    assert initial == [CLUSTER, LISTENER], initial   # clusters first, then listeners, once each
    assert all(not r.HasField("node") for r in requests[1:]), "the node goes with the first message only"
    acks = [r for r in requests if r.response_nonce]
    assert {r.type_url for r in acks} == {CLUSTER, LISTENER}
    assert all(r.version_info == "0" and not r.HasField("error_detail") for r in acks), acks
