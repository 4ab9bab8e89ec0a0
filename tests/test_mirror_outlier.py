"""A mirrored copy's outcome, through a real Envoy and the native proxy (issue 16).

Envoy sends a shadow through the router of an async client: its answer is dropped, but its
outcome is the mirror subset's like any request's. A 5xx answer, a reset and a timeout of a copy
count toward the subset's outlier detection (and eject its endpoint, which then steers the
subset's real traffic), and the copy is charged to the cluster's statistics
(`upstream_rq_<code>`, `upstream_rq_timeout`, `upstream_rq_completed`). The native proxy ignored
mirror outcomes: after two copies answered 503 by one endpoint of a two-endpoint subset, Envoy
sent the next ten direct requests to the other endpoint, the native proxy split them 5/5. Both
planes now count them alike (docs/language.md §12, docs/semantics.md)."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time

import pytest

from tests.envoy_support import requires_envoy
from tests.planes_support import BothPlanes

pytestmark = requires_envoy

PLANES = ("envoy", "native")
TEMPLATE = """
service client {
  port 8000
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" }
}
# one service per outcome of a mirrored copy: a 5xx answer, a timeout, a reset
service s {
  port 8080
  subset a { endpoints ["127.0.0.1:@SA@"] }
  subset b { endpoints ["127.0.0.1:@SB1@", "127.0.0.1:@SB2@"] }
  outlier { consecutive_5xx 1  interval 10s  ejection 30s  max_ejected 50% }
}
routes s {
  route direct { match { header "x-direct" present }  to s.b }
  route all { to s.a  mirror s.b }
}
service t {
  port 8080
  subset a { endpoints ["127.0.0.1:@TA@"] }
  subset b { endpoints ["127.0.0.1:@TB1@", "127.0.0.1:@TB2@"] }
  outlier { consecutive_5xx 1  interval 10s  ejection 30s  max_ejected 50% }
}
routes t {
  route direct { match { header "x-direct" present }  to t.b }
  route all { to t.a  timeout 150ms  mirror t.b }
}
service u {
  port 8080
  subset a { endpoints ["127.0.0.1:@UA@"] }
  subset b { endpoints ["127.0.0.1:@UB1@", "127.0.0.1:@UB2@"] }
  outlier { consecutive_5xx 1  interval 10s  ejection 30s  max_ejected 50% }
}
routes u {
  route direct { match { header "x-direct" present }  to u.b }
  route all { to u.a  mirror u.b }
}
# a copy in flight holds the mirror subset's only `requests` unit
service v {
  port 8080
  subset a { endpoints ["127.0.0.1:@VA@"] }
  subset b { endpoints ["127.0.0.1:@VB@"] }
  limits { requests 1 }
}
routes v {
  route direct { match { header "x-direct" present }  to v.b }
  route all { to v.a  mirror v.b }
}
# several mirrors: one draw per request decides them all (Envoy's stream id)
service w {
  port 8080
  subset a { endpoints ["127.0.0.1:@WA@"] }
  subset b { endpoints ["127.0.0.1:@WB@"] }
  subset c { endpoints ["127.0.0.1:@WC@"] }
  subset d { endpoints ["127.0.0.1:@WD@"] }
}
routes w {
  route all { to w.a  mirror w.b 30%  mirror w.c 50%  mirror w.d 12.5% }
}
"""
UPSTREAMS = ("app", "sa", "sb1", "sb2", "ta", "tb1", "tb2", "ua", "ub1", "ub2", "va", "vb", "wa", "wb", "wc", "wd")
# the statistics of the mirror subset's cluster both planes keep (Envoy's names)
STATS = ("upstream_rq_total", "upstream_rq_completed", "upstream_rq_200", "upstream_rq_500", "upstream_rq_503",
         "upstream_rq_504", "upstream_rq_5xx", "upstream_rq_timeout", "outlier_detection.ejections_enforced_total",
         "outlier_detection.ejections_active", "outlier_detection.ejections_detected_consecutive_5xx")


@pytest.fixture(scope="module")
def planes(tmp_path_factory):
    p = BothPlanes(tmp_path_factory.mktemp("mirror-outlier"), TEMPLATE, UPSTREAMS)
    yield p
    p.close()


def send(planes: BothPlanes, plane: str, host: str, headers: dict) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", planes.listener_ports[plane, "outbound"], timeout=5)
    try:
        conn.request("GET", "/x", headers={"Host": host, **headers})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    served = json.loads(body)["backend"] if resp.getheader("content-type") == "application/json" else None
    return resp.status, served


def stats(planes: BothPlanes, plane: str, cluster: str) -> dict[str, int]:
    if plane == "envoy":
        got = planes.envoy.stats(f"cluster.{re.escape(cluster)}.")
    else:
        got = planes.native.stats()
    return {name: got.get(f"cluster.{cluster}.{name}", 0) for name in STATS}


def copies_then_direct(planes: BothPlanes, host: str, failing: dict, settle: float) -> dict[str, tuple]:
    """Two mirrored requests whose copies fail, then ten direct requests to the mirror subset,
    through each plane: (the mirrored answers, the endpoints of the direct ones, the stats)."""
    out = {}
    for plane in PLANES:
        mirrored = [send(planes, plane, host, failing)[0] for _ in range(2)]
        time.sleep(settle)      # the copies end after their answer was sent
        direct = [send(planes, plane, host, {"x-direct": "1"}) for _ in range(10)]
        out[plane] = (mirrored, direct, stats(planes, plane, f"outbound|b|{host}"))
    return out


def test_a_mirrored_5xx_ejects_the_endpoint_in_both_planes(planes):
    """The issue's reproduction: b's first endpoint answers 500 to the copies (only it fails)."""
    got = copies_then_direct(planes, "s", {"x-test-fail-on": "sb1"}, 0.3)
    for plane in PLANES:
        mirrored, direct, _ = got[plane]
        assert mirrored == [200, 200], plane
        assert direct == [(200, "sb2")] * 10, (plane, direct)
    assert got["envoy"][2] == got["native"][2]
    st = got["envoy"][2]
    assert st["upstream_rq_500"] == 1 and st["outlier_detection.ejections_enforced_total"] == 1


@pytest.mark.parametrize(("host", "failing", "status"), [
    ("t", {"x-test-delay-ms": "400"}, 504),     # the copy times out with the route (150 ms)
    ("u", {"x-test-reset": "1"}, 503),          # the copy's connection is reset
])
def test_a_mirrored_timeout_or_reset_ejects_the_endpoint_in_both_planes(planes, host, failing, status):
    """Both endpoints fail one copy each; the first failure ejects its endpoint, the second is held
    back by `max_ejected 50%`: every direct request then goes to the one endpoint left."""
    got = copies_then_direct(planes, host, failing, 0.6)
    for plane in PLANES:
        mirrored, direct, st = got[plane]
        assert mirrored == [status, status], plane
        assert len(set(direct)) == 1 and direct[0][0] == 200, (plane, direct)
        assert st[f"upstream_rq_{status}"] == 2 and st["outlier_detection.ejections_enforced_total"] == 1, (plane, st)
    assert got["envoy"][2] == got["native"][2]


def test_a_mirrored_copy_in_flight_holds_a_requests_unit_in_both_planes(planes):
    """While a slow copy is in flight, a direct request to the mirror subset of `limits { requests 1 }`
    overflows (503) in both planes; once the copy ended, it passes."""
    for plane in PLANES:
        slow = threading.Thread(target=send, args=(planes, plane, "v", {"x-test-delay-ms": "600"}))
        slow.start()
        time.sleep(0.25)
        during = send(planes, plane, "v", {"x-direct": "1"})
        slow.join()
        time.sleep(0.5)
        after = send(planes, plane, "v", {"x-direct": "1"})
        assert (during, after) == ((503, None), (200, "vb")), plane


def test_several_mirrors_are_decided_by_one_draw_in_both_planes(planes):
    """`mirror w.b 30%  mirror w.c 50%  mirror w.d 12.5%`: Envoy compares one number, the stream id,
    with each share (`u mod 100 < 30`, `u mod 100 < 50`, `u mod 10000 < 1250`), so every request
    copied to b is copied to c, and d's copies are independent of theirs; the native proxy draws
    them the same way (runtime_proxy/decide/mirror.py)."""
    n = 300
    for plane in PLANES:
        for i in range(n):
            assert send(planes, plane, "w", {"x-seq": f"{plane}-{i}"}) == (200, "wa")
        time.sleep(0.3)
        got: dict[str, set] = {}
        for name in ("wb", "wc", "wd"):
            with planes.backends[name].lock:
                got[name] = {dict(r["headers"])["x-seq"] for r in planes.backends[name].requests
                             if dict(r["headers"])["x-seq"].startswith(plane + "-")}
        assert got["wb"] <= got["wc"], plane                      # 30 % within 50 %: one draw
        assert 0.20 * n < len(got["wb"]) < 0.40 * n, (plane, len(got["wb"]))
        assert 0.38 * n < len(got["wc"]) < 0.62 * n, (plane, len(got["wc"]))
        assert 0.05 * n < len(got["wd"]) < 0.21 * n, (plane, len(got["wd"]))
        assert got["wd"] - got["wc"], plane                        # 12.5 % of TEN_THOUSAND: not nested
