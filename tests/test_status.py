"""`meshc status` (issue 14, "Drift"): a real `meshc serve` subprocess asked by the `meshc status`
CLI, with a real Envoy over ADS and raw gRPC clients (tests/test_control_plane.py's harness)."""

from __future__ import annotations

import json
import time

from compiler import api
from compiler.control import snapshot
from compiler.control.snapshot import CLUSTER, ROUTE, SECRET
from compiler.control.status import locate
from tests.envoy_support import free_port, meshc_inline, requires_envoy, run_meshc
from tests.test_control_plane import Plane, RawClient, Serve, fixed_ports, policy


def status(port: int, fmt: str = "json"):
    """`meshc status` in this process (its exit code, stdout and stderr exactly; the command's
    own process runs in test_an_unreachable_server_is_one_line_and_exit_2 below and in
    tests/test_native_xds.py)."""
    proc = meshc_inline("status", "--server", f"127.0.0.1:{port}", "--output-format", fmt)
    return proc.returncode, (json.loads(proc.stdout) if fmt == "json" and proc.returncode != 2 else proc.stdout), \
        proc.stderr


def wait_status(port: int, ok, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while True:
        code, data, err = status(port)
        if ok(code, data):
            return code, data
        assert time.monotonic() < deadline, (code, data, err)
        time.sleep(0.2)


@requires_envoy
def test_envoy_up_to_date_then_a_broken_edit_shows_its_diagnostics_and_exits_1(tmp_path):
    plane = Plane(tmp_path)
    try:
        current = snapshot.build(api.compile([str(plane.path)]), "web").versions
        # (no native proxy asked for web's native config: the server has not built it)
        current = {t: v for t, v in current.items() if t != snapshot.NATIVE}
        code, data = wait_status(plane.serve.port, lambda c, d: c == 0 and d["streams"]
                                 and {"Cluster", "Listener", "RouteConfiguration"} <= set(d["streams"][0]["types"]))
        (stream,) = data["streams"]
        assert stream["kind"] == "envoy" and stream["node"] == "web"
        assert stream["connected_since"] <= data["server"]["now"]
        for type_url, version in current.items():
            entry = stream["types"].get(type_url.rpartition(".")[2])
            if entry is None:
                continue   # (no secrets asked for: this policy has no mTLS)
            assert entry == {**entry, "current": version, "acked": version, "state": "up to date",
                             "last_rejection": None}
        assert data["server"]["snapshots"]["web"] == {t.rpartition(".")[2]: v for t, v in current.items()}
        assert data["server"]["last_reload"]["ok"] is True
        code, text, _ = status(plane.serve.port, "human")
        assert code == 0 and "envoy" in text and "web" in text and "up to date" in text, text

        before = plane.route_version()
        plane.path.write_text(plane.path.read_text().replace("route live {", "route live { nonsense"))
        mark = plane.serve.reload()
        plane.serve.wait_for("still serving the last good snapshot", after=mark)
        code, data, _ = status(plane.serve.port)
        reload = data["server"]["last_reload"]
        assert code == 1 and reload["ok"] is False and reload["good_since"] < reload["at"]
        assert reload["diagnostics"] and all(d["severity"] == "error" for d in reload["diagnostics"])
        assert reload["diagnostics"][0]["location"].startswith(f"{plane.path}:"), reload
        assert data["streams"][0]["types"]["RouteConfiguration"]["state"] == "up to date", "Envoy keeps the last good"
        assert plane.route_version() == before and plane.call("/live") == "v1"
        code, text, _ = status(plane.serve.port, "human")
        assert code == 1 and "last reload: FAILED" in text and f"{plane.path}:" in text, text
    finally:
        plane.close()


def test_a_nack_shows_its_error_and_the_source_of_the_resource(tmp_path):
    path = policy(tmp_path / "p.mesh", fixed_ports())
    snap = snapshot.build(api.compile([str(path)]), "web")
    serve = Serve(str(path))
    try:
        client = RawClient(serve.port)
        client.send(CLUSTER, node="web")
        clusters = client.receive()
        code, data, _ = status(serve.port)
        assert code == 1 and data["streams"][0]["types"]["Cluster"]["state"] == "never acked"
        name = sorted(snap.json[CLUSTER])[-1]
        client.send(CLUSTER, version="", nonce=clusters.nonce, error=f"cluster '{name}': test: rejected on purpose")
        serve.wait_for("rejected Cluster version")
        code, data, _ = status(serve.port)
        (stream,) = data["streams"]
        assert code == 1 and stream["kind"] == "unknown" and stream["node"] == "web"   # no user_agent_name
        entry = stream["types"]["Cluster"]
        assert entry["state"] == "rejected" and entry["nacks"] == 1
        expected = snap.json[CLUSTER][name]["metadata"]["filter_metadata"]["meshc"]["source"]
        assert entry["last_rejection"] == {"version": clusters.version_info, "resource": name, "exact": True,
                                           "error": f"cluster '{name}': test: rejected on purpose",
                                           "source": expected}
        assert expected.startswith(f"{path}:")
        code, text, _ = status(serve.port, "human")
        assert code == 1 and "rejected on purpose" in text and f"at {expected}" in text, text
        # a message that names no resource: the type's first resource, said to be approximate
        mark = len(serve.lines)
        client.send(CLUSTER, version="", nonce=clusters.nonce, error="no name here")
        serve.wait_for("no name here", after=mark)
        first = sorted(snap.json[CLUSTER])[0]
        rejection = status(serve.port)[1]["streams"][0]["types"]["Cluster"]["last_rejection"]
        assert rejection["error"] == "no name here" and rejection["exact"] is False
        assert rejection["resource"] == first
        assert rejection["source"] == snap.json[CLUSTER][first]["metadata"]["filter_metadata"]["meshc"]["source"]
        client.close()
    finally:
        assert serve.stop() == 0


def test_a_proxy_that_has_not_acknowledged_the_current_version_is_behind(tmp_path):
    ports = fixed_ports()
    path = policy(tmp_path / "p.mesh", ports)
    serve = Serve(str(path))
    try:
        client = RawClient(serve.port)
        client.send(CLUSTER, node="web")
        clusters = client.receive()
        client.send(CLUSTER, version=clusters.version_info, nonce=clusters.nonce)
        client.send(ROUTE, names=["outbound"])
        routes = client.receive()
        client.send(ROUTE, names=["outbound"], version=routes.version_info, nonce=routes.nonce)
        code, data = wait_status(serve.port, lambda c, d: c == 0)
        assert {t: e["state"] for t, e in data["streams"][0]["types"].items()} == \
            {"Cluster": "up to date", "RouteConfiguration": "up to date"}
        policy(path, ports, live="v2")
        mark = serve.reload()
        serve.wait_for("published", after=mark)
        newer = client.receive()   # received, not acknowledged
        assert newer.type_url == ROUTE and newer.version_info != routes.version_info
        code, data, _ = status(serve.port)
        entry = data["streams"][0]["types"]["RouteConfiguration"]
        assert code == 1 and entry["state"] == "behind"
        assert (entry["acked"], entry["sent"], entry["current"]) == \
            (routes.version_info, newer.version_info, newer.version_info)
        code, text, _ = status(serve.port, "human")
        assert code == 1 and f"RouteConfiguration behind (acked {routes.version_info})" in text, text
        client.close()
    finally:
        assert serve.stop() == 0


def test_a_rejected_route_configuration_is_located_at_the_route_its_message_names():
    compilation = api.compile(["examples/shop.mesh"])
    snap = snapshot.build(compilation, "cart")
    routes = {r["name"]: r["metadata"]["filter_metadata"]["meshc"]["source"]
              for vh in snap.json[ROUTE]["outbound"]["virtual_hosts"] for r in vh["routes"]}
    found = locate(snap, ROUTE, "route 'outbound': route 'catalog/search': bad regex")
    assert found == {"resource": "outbound", "source": routes["catalog/search"], "exact": True}
    assert found["source"].startswith("examples/shop.mesh:")
    # naming no route: the first provenance in the route configuration (its first virtual host)
    vh = snap.json[ROUTE]["outbound"]["virtual_hosts"][0]
    assert locate(snap, ROUTE, "bad")["source"] == vh["metadata"]["filter_metadata"]["meshc"]["source"]
    assert locate(snap, SECRET, "bad")["source"] is None


def test_json_shape_with_no_proxy(tmp_path):
    serve = Serve(str(policy(tmp_path / "p.mesh", fixed_ports())))
    try:
        code, data, _ = status(serve.port)
        assert code == 0 and data["schema"] == 1 and data["streams"] == []
        assert set(data["server"]) == {"started", "now", "snapshots", "admin", "last_reload", "limits"}
        assert data["server"]["limits"] == {"max_streams": 10_000, "max_request_rate": 100.0, "refused_streams": 0,
                                            "rate_limited_streams": 0}
        assert set(data["server"]["last_reload"]) == {"ok", "at", "good_since", "diagnostics", "problems"}
        # (no SidecarConfig: a native config is built once a native proxy asks for it)
        assert set(data["server"]["snapshots"]["web"]) == {"Cluster", "Listener", "RouteConfiguration", "Secret"}
    finally:
        assert serve.stop() == 0


def test_an_unreachable_server_is_one_line_and_exit_2_quickly():
    started = time.monotonic()
    proc = run_meshc("status", "--server", f"127.0.0.1:{free_port()}")
    assert proc.returncode == 2 and time.monotonic() - started < 5
    assert proc.stderr.startswith("meshc: error: cannot reach meshc serve at 127.0.0.1:")
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    proc = run_meshc("status", "--server", "nonsense")
    assert proc.returncode == 2 and "not HOST:PORT" in proc.stderr


@requires_envoy
def test_a_real_nack_provoked_on_purpose_keeps_the_last_good_is_sent_once_and_is_located(tmp_path, monkeypatch):
    """The test-only hook (MESHC_SERVE_TEST_CORRUPT, read by `meshc serve` only) corrupts one
    cluster in the first reload's snapshot: Envoy parses it and refuses it (NACK)."""
    name = "outbound|v1|api"   # the cluster route `live` sends to
    monkeypatch.setenv("MESHC_SERVE_TEST_CORRUPT", f"Cluster:{name}")
    plane = Plane(tmp_path)
    try:
        good = snapshot.build(api.compile([str(plane.path)]), "web")
        wait_status(plane.serve.port, lambda c, d: c == 0 and d["streams"])

        def cluster_versions() -> set:
            return {c["version_info"] for d in plane.dump()["configs"] for c in d.get("dynamic_active_clusters", [])}

        assert cluster_versions() == {good.versions[CLUSTER]}
        mark = plane.serve.reload()   # the same sources; the hook corrupts the one cluster
        plane.serve.wait_for(f"test-only: corrupted Cluster:{name} for ", after=mark)
        line = plane.serve.wait_for("web rejected Cluster version", after=mark)
        rejected = line.split("version ")[1].split()[0]
        assert rejected != good.versions[CLUSTER]
        time.sleep(1)   # anything re-sent (in answer to the NACK, within a round trip) would be NACKed again
        stats = plane.envoy.stats("cluster_manager.cds.update_rejected")
        assert stats["cluster_manager.cds.update_rejected"] == 1, "the rejected version is sent exactly once"
        assert sum("rejected Cluster version" in x for x in plane.serve.lines[mark:]) == 1
        assert cluster_versions() == {good.versions[CLUSTER]}, "Envoy keeps its last good clusters"
        assert plane.call("/live") == "v1", "and routes through them to the real backend"
        code, data, _ = status(plane.serve.port)
        entry = data["streams"][0]["types"]["Cluster"]
        rejection = entry["last_rejection"]
        print("Envoy's error_detail:", rejection["error"])
        assert code == 1 and entry["state"] == "rejected" and entry["nacks"] == 1
        assert rejection["version"] == rejected and rejection["resource"] == name and rejection["exact"] is True
        assert "cluster provided LB specified" in rejection["error"] and name in rejection["error"]
        expected = good.json[CLUSTER][name]["metadata"]["filter_metadata"]["meshc"]["source"]
        assert rejection["source"] == expected and expected.startswith(f"{plane.path}:")
        code, text, _ = status(plane.serve.port, "human")
        assert code == 1 and f"at {expected}" in text, text

        policy(plane.path, plane.ports, live="v2")   # a good edit (the hook fired once)
        mark = plane.serve.reload()
        plane.serve.wait_for("published (", after=mark)
        wait_status(plane.serve.port, lambda c, d: c == 0)
        edited = snapshot.build(api.compile([str(plane.path)]), "web")
        assert cluster_versions() == {edited.versions[CLUSTER]} and plane.call("/live") == "v2"
    finally:
        plane.close()
