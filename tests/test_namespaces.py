"""Services of one name in several namespaces (docs/language.md §5.1, "One name in several
namespaces"): declared, referred to as `NAMESPACE/NAME` or by a bare name resolved in the block's
namespace, named `NAMESPACE/NAME` in the IR, the files and the planes, and answering to their short
name only in their own namespace's sidecars, as Kubernetes resolves a short name in the caller's
namespace; through a real Envoy and the native proxy, the checks, `meshc test` and the Kubernetes
targets."""

from __future__ import annotations

import json

import pytest

from compiler import api
from compiler.backends.base import Options
from tests.envoy_support import requires_envoy
from tests.planes_support import BothPlanes
from tests.test_hosts import send

# `client` lives in `shop`; `reviews` is declared in `shop` and `prod`, `ratings` in `prod` and `qa`
# (neither is the client's namespace: its short name names neither, 404)
POLICY = """
service client {
  port 8000
  namespace "shop"
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" }
}

service reviews {
  port 9080
  namespace "shop"
  endpoints ["127.0.0.1:@RSHOP@"]
}

service reviews {
  port 9080
  namespace "prod"
  endpoints ["127.0.0.1:@RPROD@"]
}

service ratings {
  port 9090
  namespace "prod"
  endpoints ["127.0.0.1:@TPROD@"]
}

service ratings {
  port 9090
  namespace "qa"
  endpoints ["127.0.0.1:@TQA@"]
}

routes prod/reviews {
  route qa {
    match { header "x-to" exact "ratings" }
    to ratings            # prod's: the block's namespace
  }
  route other {
    match { header "x-to" exact "qa" }
    to qa/ratings
  }
  route rest { to reviews }
}
"""

CASES = [
    ("reviews", "rshop"), ("reviews:9080", "rshop"), ("REVIEWS", "rshop"),       # the client's namespace
    ("reviews.shop", "rshop"), ("reviews.shop.svc.cluster.local:9080", "rshop"),
    ("reviews.prod", "rprod"), ("reviews.prod:9080", "rprod"), ("reviews.prod.svc", "rprod"),
    ("reviews.prod.svc.cluster.local", "rprod"),
    ("ratings.prod", "tprod"), ("ratings.qa:9090", "tqa"), ("ratings.qa.svc.cluster.local", "tqa"),
    ("ratings", None), ("ratings:9090", None),                                    # in no namespace of the client
]


@pytest.fixture(scope="module")
def planes(tmp_path_factory):
    p = BothPlanes(tmp_path_factory.mktemp("ns"), POLICY, ("app", "rshop", "rprod", "tprod", "tqa"))
    yield p
    p.close()


def _send(port: int, host: str, headers: str = "") -> tuple[int, str | None]:
    if not headers:
        status, backend, _ = send(port, host)
        return status, backend
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET /x HTTP/1.1\r\nhost: {host}\r\n{headers}connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    backend = next((line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("x-backend:")),
                   None)
    return int(lines[0].split()[1]), backend


@requires_envoy
@pytest.mark.parametrize("plane", ["envoy", "native"])
def test_each_host_form_reaches_the_service_of_its_namespace(planes, plane):
    port = planes.listener_ports[plane, "outbound"]
    got = {host: _send(port, host) for host, _ in CASES}
    assert got == {host: (404, None) if want is None else (200, want) for host, want in CASES}, plane
    # a bare name in `routes prod/reviews` is prod's; a qualified one names its namespace's
    assert _send(port, "reviews.prod", "x-to: ratings\r\n") == (200, "tprod"), plane
    assert _send(port, "reviews.prod", "x-to: qa\r\n") == (200, "tqa"), plane


# ---- the compiler ---------------------------------------------------------------------------------

_PORTS = {"APP": 18000, "INBOUND": 15006, "OUTBOUND": 15001, "ADMIN": 15000, "RSHOP": 19001, "RPROD": 19002,
          "TPROD": 19003, "TQA": 19004}
PROGRAM = POLICY
for _key, _port in _PORTS.items():
    PROGRAM = PROGRAM.replace(f"@{_key}@", str(_port))


def _compile(text: str):
    return api.compile([api.Text("ns.mesh", text)], shard=False)


def _codes(text: str) -> list[str]:
    return [d.code for d in _compile(text).diagnostics]


def test_names_keys_identities_and_clusters():
    comp = _compile(PROGRAM)
    assert not comp.diagnostics, comp.diagnostics
    svcs = {s.name: s for s in comp.ir.services}
    assert sorted(svcs) == ["client", "prod/ratings", "prod/reviews", "qa/ratings", "shop/reviews"]
    r = svcs["prod/reviews"]
    assert r.identity == "spiffe://cluster.local/ns/prod/sa/reviews"
    assert r.sni == "reviews.prod"
    assert r.subsets[0].cluster == "outbound|default|prod/reviews"
    assert r.domains[:4] == ("reviews", "reviews:9080", "reviews.prod", "reviews.prod:9080")
    assert [rt.to.service for rt in r.routes if rt.to] == ["prod/ratings", "qa/ratings", "prod/reviews"]
    assert svcs["shop/reviews"].identity != r.identity


def test_each_sidecar_sees_the_short_names_of_its_own_namespace(tmp_path):
    comp = _compile(PROGRAM)
    out = comp.emit("native", ["client", "prod/reviews"], Options())
    assert sorted(out.files) == ["client.native.json", "prod/reviews.native.json"]
    for file, mine in (("client.native.json", "shop/reviews"), ("prod/reviews.native.json", "prod/reviews")):
        config = json.loads(out.files[file])
        short = {s["name"] for s in config["services"] if "reviews" in s["domains"]}
        assert short == {mine}, file
        assert not any("ratings" in s["domains"] for s in config["services"]) or file.startswith("prod")
    envoy = comp.emit("envoy", ["client", "prod/reviews"], Options(bootstrap="xds", xds_dir=str(tmp_path)))
    rds = {name: json.loads(data) for name, data in envoy.files.items() if name.endswith("rds-outbound.json")}
    assert sorted(rds) == ["xds/client/rds-outbound.json", "xds/prod/reviews/rds-outbound.json"]
    for name, doc in rds.items():
        vhosts = doc["resources"][0]["virtual_hosts"]
        owner = {vh["name"] for vh in vhosts if "reviews" in vh["domains"]}
        assert owner == {"prod/reviews" if "prod" in name else "shop/reviews"}, name


def test_policy_tests_address_services_from_their_caller_namespace():
    text = PROGRAM + """
test "short name from shop" {
  request { from service client  GET "http://reviews/x" }
  expect { status 200  to shop/reviews.default }
}
test "qualified from shop" {
  request { from service client  GET "http://reviews.prod:9080/x"  header "x-to" "qa" }
  expect { route prod/reviews.other  to qa/ratings.default }
}
test "short name from prod" {
  request { from service prod/reviews  GET "http://ratings/x" }
  expect { to prod/ratings.default }
}
"""
    from compiler.verify.run import run_tests

    comp = _compile(text)
    assert not [d for d in comp.diagnostics if d.severity == "error"], comp.diagnostics
    results = run_tests(comp)
    assert [o.passed for o in results.outcomes] == [True, True, True], [o.failures for o in results.outcomes]


def test_the_same_name_twice_in_one_namespace_is_still_declared_twice():
    text = PROGRAM + 'service reviews {\n  port 9080\n  namespace "prod"\n  endpoints ["10.0.0.1:1"]\n}\n'
    assert _codes(text) == ["E0202"]


def test_an_ambiguous_bare_name_lists_its_namespaces():
    comp = _compile(PROGRAM + "routes reviews {\n  route r { to reviews }\n}\n")
    (d,) = comp.diagnostics
    assert d.code == "E0215" and ("`prod` and `shop`" in d.message or "`shop` and `prod`" in d.message)
    assert "`shop/reviews`" in d.hint and "`prod/reviews`" in d.hint
    # in `authorization client` (namespace shop, which has no ratings) a bare `ratings` is ambiguous
    text = PROGRAM + "authorization client {\n  default deny\n  allow { from service ratings }\n}\n"
    assert _codes(text) == ["E0215"]
    # ... and `reviews` is shop's
    ok = PROGRAM + 'mesh { mtls strict }\nauthorization client {\n  default deny\n  allow { from service reviews }\n}\n'
    comp = _compile(ok)
    assert not comp.diagnostics, comp.diagnostics
    (client,) = [s for s in comp.ir.services if s.name == "client"]
    assert client.authorization.rules[0].principals[0].value == "spiffe://cluster.local/ns/shop/sa/reviews"


def test_a_namespace_without_that_name_and_a_slash_in_a_declaration():
    comp = _compile(PROGRAM + "routes client {\n  route r { to client  mirror staging/reviews 10% }\n}\n")
    (d,) = comp.diagnostics
    assert d.code == "E0216" and "`staging`" in d.message and "`shop/reviews`" in d.hint
    assert _codes('service shop/cart {\n  port 1\n  endpoints ["10.0.0.1:1"]\n}\n') == ["E0217"]
    # a unique name may be written qualified too: it is that service
    comp = _compile(PROGRAM + 'service cart {\n  port 1\n  namespace "shop"\n  endpoints ["10.0.0.1:1"]\n}\n'
                    "routes client {\n  route r { to shop/cart }\n}\n")
    assert not comp.diagnostics, comp.diagnostics


def test_kubernetes_targets_write_each_in_its_namespace():
    from compiler.kubeschema import validate

    comp = _compile(PROGRAM)
    istio = comp.emit("istio", [], Options())
    assert not [d for d in istio.diagnostics if d.severity == "error"], istio.diagnostics
    assert {"prod/reviews.yaml", "shop/reviews.yaml", "prod/ratings.yaml", "qa/ratings.yaml"} <= set(istio.files)
    import yaml
    docs = [d for data in istio.files.values() for d in yaml.safe_load_all(data) if d]
    names = {(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs}
    assert ("VirtualService", "prod", "reviews") in names and ("VirtualService", "shop", "reviews") in names
    (vs,) = [d for d in docs if d["kind"] == "VirtualService" and d["metadata"]["namespace"] == "prod"
             and d["metadata"]["name"] == "reviews"]
    hosts = [r["route"][0]["destination"]["host"] for r in vs["spec"]["http"]]
    assert hosts == ["ratings.prod.svc.cluster.local", "ratings.qa.svc.cluster.local",
                     "reviews.prod.svc.cluster.local"]
    report = validate(docs)
    assert report.ok, [str(p) for p in report.problems]


def test_the_language_server_follows_qualified_and_resolved_names():
    from compiler.tooling.lsp import analysis

    text = PROGRAM
    a = analysis.analyse_document("file:///ns.mesh", text)
    prod = text.index('namespace "prod"')          # the first service declared in prod: reviews
    for needle, declared in (("routes prod/reviews", "reviews"), ("to qa/ratings", "ratings"),
                             ("to ratings ", "ratings"), ("to reviews }", "reviews")):
        at = text.index(needle) + len(needle.rstrip(" }")) - 1
        found = analysis.definition(a, at)
        assert found is not None and text[found[1]:found[2]] == declared, needle
        assert found[1] > text.rfind("service", 0, prod) - 1, needle   # not shop's reviews
    at = text.index("to qa/ratings") + 4
    labels = [c.label for c in analysis.complete(a, text, at)[1]]
    assert "qa/ratings.default" in labels and "prod/reviews.default" in labels
    assert "**service `qa/ratings`**" in (analysis.hover(a, text.index("to qa/ratings") + 6) or "")


def test_import_istio_takes_one_name_in_two_namespaces(tmp_path):
    """Two VirtualServices for `reviews` in `prod` and `staging`: each short host is its own
    namespace's (Istio reads a short host in the rule's namespace), the program names them
    `prod/reviews` and `staging/reviews`, and it compiles back to Istio in both namespaces."""
    from pathlib import Path

    from compiler.tooling.istio_import import import_istio

    data = Path(__file__).parent / "data" / "istio" / "namespaces.yaml"
    result = import_istio([str(data)], out_dir=str(tmp_path))
    assert not result.has_errors, [d.message for d in result.diagnostics]
    text = "\n".join(result.files.values())
    assert "routes staging/reviews {" in text and "routes prod/reviews {" in text
    assert "split { staging/reviews.v2 50  prod/reviews.v1 50 }" in text
    comp = api.compile([api.Text(name, body) for name, body in result.files.items()], shard=False)
    assert not comp.has_errors, comp.diagnostics
    assert sorted(s.name for s in comp.ir.services) == ["prod/reviews", "staging/reviews"]
    istio = comp.emit("istio", [], Options())
    assert {"prod/reviews.yaml", "staging/reviews.yaml"} <= set(istio.files)


def test_hints_name_a_service_of_several_namespaces_as_a_host_or_node_id_can():
    """E0807 for a Host a caller of a third namespace cannot resolve suggests NAME.NAMESPACE (never the
    key `prod/reviews`, which is no Host); E0216 for one namespace says "namespace", singular; a node
    id `reviews` for `meshc serve` lists the node ids of the sidecars of that name."""
    text = PROGRAM + 'service ext {\n  port 9000\n  namespace "third"\n  endpoints ["10.0.9.1:9000"]\n}\n' \
        'test "third short" {\n  request { from service ext  GET "http://reviews/" }\n  expect { status 404 }\n}\n'
    (d,) = [d for d in _compile(text).diagnostics if d.severity == "error"]
    assert d.code == "E0807" and "`reviews.shop`" in d.hint and "`reviews.prod`" in d.hint and "/" not in d.hint, d.hint
    comp = _compile(PROGRAM + "routes client {\n  route r { to staging/client }\n}\n")
    (d,) = comp.diagnostics
    assert d.code == "E0216" and "declared in namespace `shop`" in d.message, d.message

    from compiler.control import ads, snapshot

    snaps = snapshot.build_all(_compile(PROGRAM))
    assert ads.resolve("prod/reviews", snaps) == ("prod/reviews", "")
    service, why = ads.resolve("reviews", snaps)
    assert service is None and "prod/reviews" in why and "shop/reviews" in why, why
    service, why = ads.resolve("reviews.default", snaps)
    assert service is None and "prod/reviews.default" in why, why
