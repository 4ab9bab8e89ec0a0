"""`meshc serve` and scoping (docs/control-plane.md, "Scoping"): each node gets the resources of
its own scope (compiler/ir/scope.py); node ids `SERVICE.SUBSET`; a node that a reload removes
from the program. `meshc serve` runs as a subprocess, the clients are raw gRPC ADS streams
(tests/test_control_plane.py's harness), no mocks.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from compiler import api
from compiler.control import snapshot
from compiler.control.snapshot import CLUSTER, ROUTE
from tests.test_control_plane import RawClient, Serve, name_of

POLICY = '''
service web { port 8000  endpoints ["127.0.0.1:18001"] }
service gone { port 8001  endpoints ["127.0.0.1:18002"] }
service api {
  port 8080
  subset v1 { endpoints ["127.0.0.1:18003"] }
  subset v2 { endpoints ["127.0.0.1:18004"] }
}
service secret { port 8002  endpoints ["127.0.0.1:18005"] }
routes api { route all { split { api.v1 50  api.v2 50 } } }
authorization secret { default deny  allow only_gone { from service gone } }
'''
# `gone` is removed, and so is api's subset v2
EDITED = POLICY.replace('service gone { port 8001  endpoints ["127.0.0.1:18002"] }\n', "") \
    .replace('  subset v2 { endpoints ["127.0.0.1:18004"] }\n', "") \
    .replace("split { api.v1 50  api.v2 50 }", "to api.v1") \
    .replace("from service gone", "from service web")


def test_each_node_is_served_its_own_scope(tmp_path):
    """`secret` admits `gone` only: gone's snapshot holds secret's cluster and virtual host,
    web's holds neither (a request from web to `secret` gets the unknown Host's 404)."""
    comp = api.compile([api.Text("p.mesh", POLICY)], shard=False)
    snaps = snapshot.build_all(comp)
    web, gone = snaps["web"], snaps["gone"]
    assert "outbound|default|secret" in gone.json[CLUSTER] and "outbound|default|secret" not in web.json[CLUSTER]
    assert [vh["name"] for vh in gone.json[ROUTE]["outbound"]["virtual_hosts"]] == ["api", "gone", "secret", "web"]
    assert [vh["name"] for vh in web.json[ROUTE]["outbound"]["virtual_hosts"]] == ["api", "gone", "web"]
    assert [c for c in web.json[CLUSTER] if c.startswith("inbound|")] == ["inbound|web"]
    assert snaps["api"].subsets == ("v1", "v2") and web.subsets == ("default",)


def test_a_caller_route_is_served_to_its_caller_alone():
    """`meshc serve` follows the backend's files: the sidecar that a route's `caller` names gets a
    route configuration of its own holding that route; the others do not see it."""
    text = POLICY.replace("routes api { route all { split { api.v1 50  api.v2 50 } } }",
                          "routes api {\n  route beta { match { caller web  path prefix \"/b\" } to api.v2 }\n"
                          "  route all { split { api.v1 50  api.v2 50 } }\n}")
    snaps = snapshot.build_all(api.compile([api.Text("p.mesh", text)], shard=False))

    def api_routes(node: str) -> list[str]:
        vh = next(v for v in snaps[node].json[ROUTE]["outbound"]["virtual_hosts"] if v["name"] == "api")
        return [r["name"] for r in vh["routes"]]
    assert api_routes("web") == ["api/beta", "api/all"]
    assert api_routes("gone") == api_routes("secret") == api_routes("api") == ["api/all"]


@pytest.fixture
def served(tmp_path):
    path = tmp_path / "p.mesh"
    path.write_text(POLICY)
    serve = Serve(str(path))
    serve.path = path
    yield serve
    assert serve.stop() == 0, "".join(serve.lines)


def clusters_of(response) -> list[str]:
    return sorted(name_of(r) for r in response.resources)


def test_a_subset_node_gets_its_services_resources_and_an_unknown_subset_is_not_found(served):
    whole, subset = RawClient(served.port), RawClient(served.port)
    whole.send(CLUSTER, node="api")
    subset.send(CLUSTER, node="api.v2")
    a, b = whole.receive(), subset.receive()
    assert clusters_of(a) == clusters_of(b) and a.version_info == b.version_info
    assert "inbound|api" in clusters_of(b)
    for node, message in (("api.v9", "unknown node 'api.v9': service 'api' has no subset 'v9' (subsets: v1, v2)"),
                          ("nosuch.v1", "unknown node 'nosuch.v1': no service 'nosuch' in the program"),
                          ("web.", "unknown node 'web.': service 'web' has no subset '' (subsets: default)")):
        bad = RawClient(served.port)
        bad.send(CLUSTER, node=node)
        with pytest.raises(grpc.RpcError) as err:
            bad.receive()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and err.value.details() == message
        served.wait_for(f"ended: {message}")
        bad.close()
    # the good streams are untouched
    subset.send(ROUTE, names=["outbound"])
    assert subset.receive().type_url == ROUTE
    whole.close()
    subset.close()


def test_a_node_that_a_reload_removes_ends_with_not_found(served):
    clients = {}
    for node in ("web", "gone", "api.v1", "api.v2"):
        clients[node] = RawClient(served.port)
        clients[node].send(CLUSTER, node=node)
        assert clients[node].receive().type_url == CLUSTER
    Path(served.path).write_text(EDITED)
    mark = served.reload()
    served.wait_for("published", after=mark)
    for node, why in (("gone", "no service of that name in the program"),
                      ("api.v2", "service 'api' has no subset 'v2' (subsets: v1)")):
        with pytest.raises(grpc.RpcError) as err:
            clients[node].receive()
        message = f"node {node!r} was removed from the program by a reload: {why}"
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and err.value.details() == message
        served.wait_for(f"ended: {message}", after=mark)
    # the others get the new snapshot on their open streams: api lost a subset, web's scope gained
    # secret (first with the clusters it had, make before break, then exactly the new ones)
    union = clusters_of(clients["web"].receive())
    assert "outbound|default|secret" in union and "outbound|v2|api" in union
    web = clusters_of(clients["web"].receive())
    assert "outbound|default|secret" in web and "outbound|v2|api" not in web and "outbound|default|gone" not in web
    api_v1 = clients["api.v1"].receive()
    assert api_v1.type_url == CLUSTER and "outbound|v2|api" not in clusters_of(api_v1)
    for client in clients.values():
        client.close()


def test_a_route_edit_changes_only_the_snapshots_whose_scope_holds_the_destination():
    """`secret` admits `gone` only: a new route of `secret` changes gone's route version and no
    other node's versions, so `meshc serve` pushes it to that sidecar alone."""
    before = snapshot.build_all(api.compile([api.Text("p.mesh", POLICY)], shard=False))
    edited = POLICY + 'routes secret { route r { match { path prefix "/v2" }  to secret.default  timeout 2s } }\n'
    after = snapshot.build_all(api.compile([api.Text("p.mesh", edited)], shard=False))
    changed = {node: sorted(t.rpartition(".")[2] for t in snap.versions if snap.versions[t] != before[node].versions[t])
               for node, snap in after.items()}
    # (the native config carries the same routes: a native sidecar of `gone` gets the push too)
    assert {node: types for node, types in changed.items() if types} == {"gone": ["RouteConfiguration",
                                                                                 "SidecarConfig"]}


def route_clusters(response) -> set[str]:
    """The clusters a RouteConfiguration response's routes name (single and weighted)."""
    from envoy.config.route.v3 import route_pb2

    out = set()
    for packed in response.resources:
        config = route_pb2.RouteConfiguration()
        packed.Unpack(config)
        for vhost in config.virtual_hosts:
            for route in vhost.routes:
                out.add(route.route.cluster)
                out.update(w.name for w in route.route.weighted_clusters.clusters)
    return out - {""}


def test_a_push_that_adds_and_removes_clusters_makes_before_it_breaks(served):
    """Subset v2 renamed v3: the push adds `outbound|v3|api` and removes `outbound|v2|api`. The
    stream gets first the old clusters and the new ones together (a version of its own, the
    content hash of that union), then the route configuration naming v3, and only then the exact
    new cluster set: at no point does the proxy hold a route to a cluster it does not have."""
    from compiler.control.versions import version_of

    web = RawClient(served.port)
    web.send(CLUSTER, node="web")
    old = web.receive()
    web.send(CLUSTER, version=old.version_info, nonce=old.nonce)
    web.send(ROUTE, names=["outbound"])
    routes = web.receive()
    assert "outbound|v2|api" in route_clusters(routes)
    web.send(ROUTE, names=["outbound"], version=routes.version_info, nonce=routes.nonce)
    Path(served.path).write_text(POLICY.replace("subset v2", "subset v3").replace("api.v2 50", "api.v3 50"))
    mark = served.reload()
    served.wait_for("published", after=mark)
    pushed = [web.receive() for _ in range(3)]
    assert [r.type_url for r in pushed] == [CLUSTER, ROUTE, CLUSTER]
    union, new_routes, exact = pushed
    assert set(clusters_of(union)) == set(clusters_of(old)) | set(clusters_of(exact))
    assert "outbound|v2|api" in clusters_of(union) and "outbound|v3|api" in clusters_of(union)
    assert "outbound|v2|api" not in clusters_of(exact) and "outbound|v3|api" in clusters_of(exact)
    assert route_clusters(new_routes) <= set(clusters_of(union)) and "outbound|v3|api" in route_clusters(new_routes)
    # versions are content hashes, the union's too; the three differ
    assert union.version_info == version_of({name_of(r): r for r in union.resources})
    assert exact.version_info == version_of({name_of(r): r for r in exact.resources})
    assert len({old.version_info, union.version_info, exact.version_info}) == 3
    assert web.nothing_within(0.3)
    web.close()


def test_a_native_proxy_with_a_subset_node_id_gets_its_services_config(served):
    """The native proxy asks for its SidecarConfig by its node id (runtime_proxy/xds_client.py):
    `api.v1` is answered with api's config, under the name asked for."""
    configs = {}
    for node in ("api", "api.v1"):
        client = RawClient(served.port)
        client.send(snapshot.NATIVE, node=node, names=[node])
        response = client.receive()
        assert response.type_url == snapshot.NATIVE and len(response.resources) == 1, response
        configs[node] = (response.version_info, response.resources[0].value)
        client.send(snapshot.NATIVE, names=[node], version=response.version_info, nonce=response.nonce)
        assert client.nothing_within(0.2)
        client.close()
    assert configs["api.v1"] == configs["api"]
    assert b'"api"' in configs["api"][1]


def test_after_a_nack_of_the_clusters_a_push_that_adds_and_removes_sends_no_union():
    """The union is made of the clusters last sent; when the proxy rejected those it holds an
    older set the stream does not know, so no union is sent (removals last, as before). The
    state machine in process."""
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    from compiler.control.ads import Stream

    def req(type_url, names=(), version="", nonce="", node=None, error=None):
        r = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names), version_info=version,
                                           response_nonce=nonce)
        if node:
            r.node.CopyFrom(base_pb2.Node(id=node))
        if error:
            r.error_detail.message = error
        return r

    one = snapshot.build_all(api.compile([api.Text("p.mesh", POLICY)], shard=False))
    two = snapshot.build_all(api.compile([api.Text("p.mesh", POLICY.replace("subset v2", "subset v3")
                                                   .replace("api.v2 50", "api.v3 50"))], shard=False))
    for nack in (False, True):
        stream = Stream(1)
        [clusters] = stream.on_request(req(CLUSTER, node="web"), one)
        stream.on_request(req(CLUSTER, version="" if nack else clusters.version_info, nonce=clusters.nonce,
                              error="refused" if nack else None), one)
        [routes] = stream.on_request(req(ROUTE, names=["outbound"]), one)
        stream.on_request(req(ROUTE, names=["outbound"], version=routes.version_info, nonce=routes.nonce), one)
        pushed = [r.type_url for r in stream.pending(two)]
        assert pushed == ([ROUTE, CLUSTER] if nack else [CLUSTER, ROUTE, CLUSTER]), (nack, pushed)
