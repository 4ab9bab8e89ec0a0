"""Header changes of one split destination (issue 16), through a real Envoy and the native proxy.

`split { s.a 50 request_headers { … } response_headers { … }  s.b 50 … }`: the chosen arm's own
changes, then the route's (Envoy's weighted cluster `request_headers_to_add`/`_remove` come
before the route's; measured with Envoy 1.40: a header the arm sets and the route sets ends with
the route's value, one the arm sets and the route removes is gone, one the arm removes and the
route sets has the route's value, and the arm's `add` line comes before the route's)."""

from __future__ import annotations

import http.client
import json

import pytest

from compiler import api
from tests.envoy_support import requires_envoy
from tests.planes_support import BothPlanes

POLICY = """
service client {
  port 8000
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" }
}
service s {
  port 8080
  subset a { endpoints ["127.0.0.1:@A@"] }
  subset b { endpoints ["127.0.0.1:@B@"] }
}
routes s {
  route aborted {
    match { path prefix "/abort" }
    split { s.a 1 response_headers { set "x-arm" "a" }  s.b 0 }
    fault { abort 503 100% }
    response_headers { add "x-route" "r" }
  }
  route r {
    split {
      s.a 50 request_headers { set "x-version" "a"  add "x-add" "a"  set "x-gone" "a"  remove "x-sent" }
             response_headers { set "x-arm" "a"  add "x-radd" "a"  set "x-rgone" "a"  remove "x-backend" }
      s.b 50 request_headers { set "x-version" "b" }
    } by header "x-k"
    request_headers { add "x-add" "route"  remove "x-gone"  set "x-sent" "route" }
    response_headers { add "x-radd" "route"  remove "x-rgone" }
  }
}
"""
SHOWN = ("x-version", "x-add", "x-gone", "x-sent")
SHOWN_RESPONSE = ("x-arm", "x-radd", "x-rgone", "x-backend", "x-route")


@pytest.fixture(scope="module")
def planes(tmp_path_factory):
    p = BothPlanes(tmp_path_factory.mktemp("split-headers"), POLICY, ("app", "a", "b"), warnings_allowed=True)
    yield p
    p.close()


def send(planes, plane: str, path: str, headers: dict):
    conn = http.client.HTTPConnection("127.0.0.1", planes.listener_ports[plane, "outbound"], timeout=5)
    try:
        conn.request("GET", path, headers={"Host": "s", **headers})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    up = None
    if resp.getheader("content-type") == "application/json":
        up = [(n, v) for n, v in json.loads(body)["headers"] if n in SHOWN]
    return resp.status, up, [(n.lower(), v) for n, v in resp.getheaders() if n.lower() in SHOWN_RESPONSE]


@requires_envoy
@pytest.mark.parametrize(("key", "want_up", "want_resp"), [
    ("0", [("x-add", "sent"), ("x-add", "a"), ("x-version", "a"), ("x-add", "route"), ("x-sent", "route")],
     [("x-arm", "a"), ("x-radd", "a"), ("x-radd", "route")]),
    ("50", [("x-add", "sent"), ("x-gone", "sent"), ("x-sent", "sent"), ("x-version", "b"), ("x-add", "route")],
     None),
])
def test_an_arms_changes_come_before_the_routes_in_both_planes(planes, key, want_up, want_resp):
    sent = {"x-k": key, "x-add": "sent", "x-gone": "sent", "x-sent": "sent"}
    got = {plane: send(planes, plane, "/x", sent) for plane in ("envoy", "native")}
    assert got["envoy"] == got["native"]
    status, up, resp = got["envoy"]
    assert status == 200
    # the route removes x-gone, which arm b leaves as sent; arm b's x-sent goes (route sets it)
    if key == "50":
        want_up = [p for p in want_up if p[0] != "x-gone" and p != ("x-sent", "sent")] + [("x-sent", "route")]
    assert sorted(up) == sorted(want_up), up
    if want_resp is not None:
        assert sorted(resp) == sorted(want_resp), resp
    else:
        assert ("x-backend", "b") in resp and ("x-radd", "route") in resp


@requires_envoy
def test_a_fault_abort_on_a_split_route_in_both_planes(planes):
    got = {plane: send(planes, plane, "/abort", {}) for plane in ("envoy", "native")}
    assert got["envoy"] == got["native"], got


def test_w0431_an_arm_change_the_route_undoes():
    text = POLICY.replace("@APP@", "1").replace("@INBOUND@", "2").replace("@OUTBOUND@", "3") \
        .replace("@ADMIN@", "4").replace("@A@", "5").replace("@B@", "6")
    comp = api.check([api.Text("p.mesh", text)])
    found = sorted(d.message for d in comp.diagnostics if d.code == "W0431")
    assert found == ["`set` of header `x-gone` for `s.a` is undone by the route's own `remove`",
                     "`set` of header `x-rgone` for `s.a` is undone by the route's own `remove`"]
