"""Caller-specific routes (issue 16, Istio's `sourceLabels`): `match { caller NAME … }` keeps a
match for the sidecar of NAME alone. Through a real Envoy and the native proxy (the sidecar of
`client`, with routes for it and for another caller), the per-sidecar route files, the shadowing
analysis (W0401) and the checks."""

from __future__ import annotations

import json
import socket

import pytest

from compiler import api
from compiler.backends.base import Options
from compiler.ir.scope import scopes
from tests.envoy_support import requires_envoy
from tests.planes_support import BothPlanes

POLICY = """
service client {
  port 8000
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" }
}

service other {
  port 8001
  endpoints ["127.0.0.1:@DEAD@"]
}

service payments {
  port 9000
  subset v1 { endpoints ["127.0.0.1:@V1@"] }
  subset v2 { endpoints ["127.0.0.1:@V2@"] }
  subset v3 { endpoints ["127.0.0.1:@V3@"] }
}

routes payments {
  route beta {
    match { caller client  path prefix "/api" }
    match { caller other }
    to payments.v2
  }
  route canary {
    match { caller [other, @CALLER@]  header "x-canary" present }
    split { payments.v1 50  payments.v3 50 } by header "x-k"
    retry { attempts 2  on [5xx] }
  }
  route rest { to payments.v1 }
}
"""

# (path, headers, the subset that answers in the sidecar of `client`) when `canary` is for it too
CASES = [
    ("/api/x", (), "v2"),            # beta, for client
    ("/other", (), "v1"),            # beta's `caller other` match is not client's
    ("/other", (("x-canary", "1"), ("x-k", "0")), "v1"),
    ("/other", (("x-canary", "1"), ("x-k", "75")), "v3"),
    ("/api/x", (("x-canary", "1"), ("x-k", "75")), "v2"),   # beta comes first
]


def send(port: int, path: str, headers) -> tuple[int, str | None]:
    extra = "".join(f"{n}: {v}\r\n" for n, v in headers)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nhost: payments\r\n{extra}connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    backend = next((line.split(":", 1)[1].strip() for line in head[1:] if line.lower().startswith("x-backend:")), None)
    return int(head[0].split()[1]), backend


@pytest.fixture(scope="module", params=["client", "nobody"])
def planes(request, tmp_path_factory):
    """`canary` for client too (`client`), or for `other` alone (`nobody`: a declared service that
    is not the sidecar under test)."""
    caller = "client" if request.param == "client" else "other"
    p = BothPlanes(tmp_path_factory.mktemp("callers"), POLICY.replace("@CALLER@", caller),
                   ("app", "v1", "v2", "v3"), warnings_allowed=True)
    p.caller = request.param
    yield p
    p.close()


@requires_envoy
@pytest.mark.parametrize("plane", ["envoy", "native"])
def test_the_sidecar_takes_its_own_routes_and_not_the_other_callers(planes, plane):
    port = planes.listener_ports[plane, "outbound"]
    got = [send(port, path, headers) for path, headers, _ in CASES]
    if planes.caller == "client":
        assert got == [(200, want) for _, _, want in CASES], plane
    else:   # canary is another caller's: the x-canary requests go to `rest`
        assert got == [(200, "v2"), (200, "v1"), (200, "v1"), (200, "v1"), (200, "v2")], plane


def _compile(text: str):
    c = api.compile([api.Text("c.mesh", text)])
    assert not c.has_errors, c.diagnostics
    return c


FLEET = POLICY.replace("@CALLER@", "client").replace("@DEAD@", "1").replace("@APP@", "2") \
    .replace("@INBOUND@", "3").replace("@OUTBOUND@", "4").replace("@ADMIN@", "5") \
    .replace("@V1@", "6").replace("@V2@", "7").replace("@V3@", "8")


def test_a_named_caller_gets_its_own_route_file_and_the_others_share_one(tmp_path):
    c = _compile(FLEET)
    files = c.emit("envoy", None, Options(bootstrap="xds", output_dir=str(tmp_path))).files
    routes = {path: json.loads(data)["resources"][0] for path, data in files.items() if "rds" in path}
    assert sorted(routes) == ["xds/client/rds-outbound.json", "xds/other/rds-outbound.json",
                              "xds/rds-outbound.json"]

    def payments_routes(path):
        vh = next(v for v in routes[path]["virtual_hosts"] if v["name"] == "payments")
        return [r["name"] for r in vh["routes"]]
    assert payments_routes("xds/client/rds-outbound.json") == ["payments/beta", "payments/canary", "payments/rest"]
    assert payments_routes("xds/other/rds-outbound.json") == ["payments/beta", "payments/canary", "payments/rest"]
    assert payments_routes("xds/rds-outbound.json") == ["payments/rest"]       # payments' own sidecar
    for name in ("client", "other", "payments"):
        lds = json.loads(files[f"xds/{name}/lds.json"])["resources"]
        outbound = next(lst for lst in lds if lst["name"] == "outbound")
        path = outbound["filter_chains"][0]["filters"][0]["typed_config"]["rds"]["config_source"][
            "path_config_source"]["path"]
        assert path.endswith("/" + ("rds-outbound.json" if name == "payments" else f"{name}/rds-outbound.json"))
    assert [s.own_routes for s in scopes(c.ir).values()] == [True, True, False]


def test_the_native_config_of_a_sidecar_carries_only_its_own_routes():
    c = _compile(FLEET)
    files = c.emit("native", None).files
    for name, want in (("client", [["payments/beta", 1], ["payments/canary", 1], ["payments/rest", 1]]),
                       ("other", [["payments/beta", 1], ["payments/canary", 1], ["payments/rest", 1]]),
                       ("payments", [["payments/rest", 1]])):
        config = json.loads(files[f"{name}.native.json"])
        dest = next(d for d in config["services"] if d["name"] == "payments")
        assert [[f"payments/{r['name']}", len(r["matches"])] for r in dest["routes"]] == want, name
        assert all(m["callers"] is None for r in dest["routes"] for m in r["matches"]), name
    payments = next(d for d in json.loads(files["other.native.json"])["services"] if d["name"] == "payments")
    beta_other = next(r for r in payments["routes"] if r["name"] == "beta")
    assert beta_other["matches"] == [{"path": None, "headers": [], "query": [], "methods": None, "callers": None}]


def diagnostics(text: str) -> list[tuple[str, str]]:
    return [(d.code, d.message) for d in api.check([api.Text("t.mesh", text)]).diagnostics]


SERVICES = """
service a {
  port 1
  endpoints ["10.0.0.1:1"]
}
service b {
  port 2
  endpoints ["10.0.0.2:2"]
}
service d {
  port 3
  subset v1 { endpoints ["10.0.0.3:3"] }
  subset v2 { endpoints ["10.0.0.4:3"] }
}
"""


def test_a_route_for_one_caller_does_not_shadow_a_route_for_another():
    text = SERVICES + """
routes d {
  route for-a { match { caller a  path prefix "/x" } to d.v2 }
  route for-b { match { caller b  path prefix "/x" } to d.v2 }
  route rest { to d.v1 }
}
"""
    assert diagnostics(text) == []


def test_a_route_without_a_caller_shadows_the_caller_specific_ones_after_it():
    text = SERVICES + """
routes d {
  route all { match { path prefix "/x" } to d.v1 }
  route for-a { match { caller a  path prefix "/x/y" } to d.v2 }
  route for-both { match { caller [a, b]  path prefix "/z" } to d.v2 }
  route for-b { match { caller b  path prefix "/z/1" } to d.v2 }
  route rest { to d.v1 }
}
"""
    assert diagnostics(text) == [("W0401", "route `for-a` can never match"),
                                 ("W0401", "route `for-b` can never match")]


def test_an_unknown_caller_is_located_with_a_suggestion():
    text = SERVICES + 'routes d {\n  route r { match { caller bb } to d.v2 }\n  route rest { to d.v1 }\n}\n'
    diags = api.check([api.Text("t.mesh", text)]).diagnostics
    assert [(d.code, d.message, d.hint) for d in diags] == [
        ("E0214", "unknown caller `bb` in route `r`", "did you mean `b`?")]
    assert diags[0].span.start_line_col() == (16, 28)


def test_caller_routes_round_trip_through_fmt():
    from compiler.syntax.fmt import format_text

    text = SERVICES + ('routes d {\n  route r {\n    match { caller [a, b]  path prefix "/x" }\n    to d.v2\n  }\n'
                       '  route rest { to d.v1 }\n}\n')
    once = format_text(text)
    assert "caller [a, b]" in once and format_text(once) == once


def test_the_proxy_reads_a_hand_written_callers_field_as_the_compiler_means_it():
    """The compiler resolves `caller` conditions; a config written by hand with `callers` set is
    read the same way at load time: a match for other sidecars is not this sidecar's."""
    from runtime_proxy.decide.table import compile_config

    config = json.loads(_compile(FLEET).emit("native", ["payments"]).files["payments.native.json"])
    dest = next(d for d in config["services"] if d["name"] == "payments")
    rest = dest["routes"][0]
    dest["routes"] = [dict(rest, name="mine", matches=[dict(rest["matches"][0], callers=["payments"])]),
                      dict(rest, name="theirs", matches=[dict(rest["matches"][0], callers=["client"])]), rest]
    table = compile_config(config)
    assert [r.name for r in table.services["payments"].routes] == ["mine", "rest"]


def test_istio_writes_a_caller_condition_as_source_labels_and_gateway_api_leaves_it_out():
    c = _compile(SERVICES + 'routes d {\n  route r { match { caller [a, b]  path exact "/x" } to d.v2 }\n'
                            '  route rest { to d.v1 }\n}\n')
    istio = c.emit("istio", None)
    assert not istio.has_errors, istio.diagnostics
    text = b"".join(istio.files.values()).decode()
    assert "sourceLabels:\n        app: a" in text and "sourceLabels:\n        app: b" in text
    gateway = c.emit("gateway-api", None)
    assert [d.code for d in gateway.diagnostics if d.code.startswith("W04")] == ["W0411"]
    routes = b"".join(gateway.files.values()).decode()
    assert "name: rest" in routes and "name: r\n" not in routes and "/x" not in routes
