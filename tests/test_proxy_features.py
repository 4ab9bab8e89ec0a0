"""Every policy feature through a running proxy process (`python -m runtime_proxy`), real sockets
on loopback and real upstream servers (tests/proxy_backend.py), with Envoy's observable
behaviour (docs/language.md sections 1 and 6-14, ENVOY_NOTES §5 and §10)."""

from __future__ import annotations

import concurrent.futures
import json
import time

import pytest
from proxy_backend import Backend
from proxy_harness import Client, config, get, route, run_proxy, service, subset

OVERFLOW = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"


def free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def backends():
    bs = {name: Backend(name) for name in ("a", "b", "c", "m")}
    yield bs
    for b in bs.values():
        b.stop()


def hdr(name, kind="exact", value=None, **kw):
    h = {"name": name, "kind": kind}
    if value is not None:
        h["value"] = value
    h.update(kw)
    return h


def path(kind, value):
    return {"path": {"kind": kind, "value": value}}


def mesh_config(bs, dead_port):
    a, b, c, m = (bs[n].port for n in "abcm")
    retry = {"num_retries": 2, "retry_on": ["5xx"], "per_try_timeout_ms": 0, "backoff_base_ms": 5,
             "backoff_max_ms": 10}
    svc = service("svc", [subset("v1", [a], "svc"), subset("v2", [b], "svc"), subset("mirror", [m], "svc")], [
        route("canary", to=("svc", "v2"), matches=[{"headers": [hdr("x-canary", value="always")]}],
              request_headers={"remove": ["x-secret"], "set": [["x-route", "canary"]],
                               "add": [["x-appended", "two"]]},
              response_headers={"set": [["x-resp", "yes"]], "remove": ["x-backend"]}),
        route("exact", to=("svc", "v2"), matches=[path("exact", "/exact")]),
        route("split", split=[(("svc", "v1"), 30), (("svc", "v2"), 70)], matches=[path("segment_prefix", "/split")],
              key_header="x-key"),
        route("abort", to=("svc", "v1"), matches=[path("segment_prefix", "/fault/abort")],
              fault={"abort": {"http_status": 418, "percent": 100.0}}),
        route("delay", to=("svc", "v1"), matches=[path("segment_prefix", "/fault/delay")],
              fault={"delay": {"duration_ms": 200, "percent": 100.0}}),
        route("timeout", to=("svc", "v1"), matches=[path("segment_prefix", "/slow")], timeout_ms=300),
        route("retry", to=("svc", "v1"), matches=[path("segment_prefix", "/retry")], retry=retry),
        route("retry409", to=("svc", "v1"), matches=[path("segment_prefix", "/r409")],
              retry=dict(retry, retry_on=["retriable-4xx"], num_retries=1)),
        route("pertry", to=("svc", "v1"), matches=[path("segment_prefix", "/pertry")], timeout_ms=2000,
              retry=dict(retry, per_try_timeout_ms=100)),
        route("mirror", to=("svc", "v1"), matches=[path("segment_prefix", "/mirror")],
              mirror={"service": "svc", "subset": "mirror", "percent": 100.0}),
        route("posts", to=("svc", "v1"), matches=[{"methods": ["POST", "PUT"]}]),
        route("regex", to=("svc", "v2"), matches=[path("regex", "/re/[0-9]+")]),
        route("query", to=("svc", "v2"), matches=[{"path": {"kind": "exact", "value": "/q"},
                                                    "query": [{"name": "v", "kind": "exact", "value": "2"}]}]),
        route("default", to=("svc", "v1")),
    ])
    strict = service("strict", [subset("only", [a], "strict")],
                     [route("only", to=("strict", "only"), matches=[path("exact", "/only")])])
    dead = service("dead", [subset("d", [dead_port], "dead")], [
        route("retried", to=("dead", "d"), matches=[path("segment_prefix", "/retried")],
              retry=dict(retry, retry_on=["connect-failure"])),
        route("plain", to=("dead", "d")),
    ])
    od = service("od", [subset("all", [a, b, c], "od")], [route("all", to=("od", "all"))],
                 outlier={"consecutive_5xx": 3, "consecutive_gateway_errors": 0, "interval_ms": 200,
                          "base_ejection_ms": 600, "max_ejection_percent": 50.0})
    tight = service("tight", [subset("t", [a], "tight")], [route("all", to=("tight", "t"))],
                    limits={"max_connections": 1, "max_pending_requests": 1, "max_requests": 1,
                            "max_retries": 3})
    nobudget = service("nobudget", [subset("n", [a], "nobudget")],
                       [route("all", to=("nobudget", "n"), retry=dict(retry, num_retries=3))],
                       retry_budget={"percent": 0.0, "min_concurrency": 0})
    budget = service("budget", [subset("n", [a], "budget")],
                     [route("all", to=("budget", "n"), retry=dict(retry, num_retries=3))],
                     retry_budget={"percent": 20.0, "min_concurrency": 3})
    authz = {"default": "deny", "rules": [
        {"name": "admin", "action": "deny", "source": {"file": "t.mesh", "line": 1, "column": 1},
         "path": {"kind": "segment_prefix", "value": "/api/admin"}},
        {"name": "api", "action": "allow", "source": {"file": "t.mesh", "line": 2, "column": 1},
         "path": {"kind": "segment_prefix", "value": "/api"}},
        {"name": "from_frontend", "action": "allow", "source": {"file": "t.mesh", "line": 3, "column": 1},
         "principals": [{"kind": "exact", "value": "spiffe://test.local/ns/web/sa/frontend"}],
         "path": {"kind": "segment_prefix", "value": "/private"}},
    ]}
    return config([svc, strict, dead, od, tight, nobudget, budget], app_port=a, authorization=authz)


@pytest.fixture(scope="module")
def proxy(backends, tmp_path_factory):
    cfg = mesh_config(backends, free_port())
    tmp = tmp_path_factory.mktemp("proxy")
    with run_proxy(cfg, tmp, "--identity-header", "x-test-peer-identity",
                   "--access-log", str(tmp / "access.log")) as p:
        p.access_log = tmp / "access.log"
        yield p


@pytest.fixture(autouse=True)
def _reset(backends):
    for b in backends.values():
        b.reset()


# ---- routing --------------------------------------------------------------------------------------

def test_first_match_routing_and_proxied_response_shape(proxy):
    r = get(proxy.outbound, "/anything?x=1")
    assert r.status == 200 and r.json()["backend"] == "a"
    assert r.json()["target"] == "/anything?x=1"
    assert r.header("x-envoy-upstream-service-time") is not None
    assert r.header("x-envoy-attempt-count") == "1"
    assert get(proxy.outbound, "/exact").json()["backend"] == "b"
    assert get(proxy.outbound, "/exact/").json()["backend"] == "a"       # exact is exact
    assert get(proxy.outbound, "/re/123").json()["backend"] == "b"
    assert get(proxy.outbound, "/re/12a").json()["backend"] == "a"       # regex is a full match
    assert get(proxy.outbound, "/q?v=2&v=3").json()["backend"] == "b"    # first value of a key
    assert get(proxy.outbound, "/q?v=3&v=2").json()["backend"] == "a"
    # the first route that matches wins, even when a later one matches too
    assert get(proxy.outbound, "/exact", headers={"x-canary": "always"}).header("x-resp") == "yes"
    # Host with its port, any case
    assert get(proxy.outbound, "/exact", host="SVC:8000").json()["backend"] == "b"


def test_no_route_and_unknown_host_are_404_with_an_empty_body(proxy):
    for host, target in (("strict", "/other"), ("nowhere", "/"), ("svc:9999", "/")):
        r = get(proxy.outbound, target, host=host)
        assert r.status == 404 and r.body == b""
        assert r.header("content-length") == "0" and r.header("content-type") is None
        assert r.header("x-envoy-upstream-service-time") is None
    assert get(proxy.outbound, "/only", host="strict").status == 200


def test_weighted_split_by_header_is_envoys_value_mod_total(proxy):
    picks = "".join(get(proxy.outbound, "/split", headers={"x-key": str(k)}).json()["backend"]
                    for k in (0, 29, 30, 99, 100, 129, 130))
    assert picks == "aabbaab"


def test_header_changes_and_forwarding_headers(proxy, backends):
    r = get(proxy.outbound, "/h", headers={"x-canary": "always", "x-secret": "s", "x-route": "old",
                                           "x-appended": "one", "x-forwarded-for": "10.0.0.9",
                                           "Connection": "keep-alive, x-hop", "x-hop": "1",
                                           "Keep-Alive": "timeout=5", "TE": "gzip",
                                           "x-envoy-max-retries": "5"})
    assert r.status == 200
    seen = r.json()["headers"]
    names = [n for n, _ in seen]
    assert "x-secret" not in names
    assert [v for n, v in seen if n == "x-route"] == ["canary"]
    assert [v for n, v in seen if n == "x-appended"] == ["one", "two"]          # two header lines
    assert [v for n, v in seen if n == "x-forwarded-for"] == ["10.0.0.9"]      # unchanged, as Envoy
    for hop in ("connection", "x-hop", "keep-alive", "te", "x-envoy-max-retries"):
        assert hop not in names, hop
    seen = get(proxy.outbound, "/h", headers={"TE": "trailers"}).json()["headers"]
    assert ["te", "trailers"] in seen                                           # as Envoy keeps it
    assert ("x-envoy-attempt-count", "1") in [tuple(x) for x in seen]
    assert r.header("x-resp") == "yes" and r.header("x-backend") is None        # response changes


# ---- local replies --------------------------------------------------------------------------------

def test_fault_abort_is_a_local_reply_and_never_forwarded(proxy, backends):
    r = get(proxy.outbound, "/fault/abort")
    assert (r.status, r.body) == (418, b"fault filter abort")
    assert r.header("content-type") == "text/plain" and r.header("content-length") == "18"
    assert r.header("x-envoy-upstream-service-time") is None
    assert backends["a"].hits == 0


def test_fault_delay_runs_before_the_route_timeout_starts(proxy):
    t = time.monotonic()
    r = get(proxy.outbound, "/fault/delay")
    took = time.monotonic() - t
    assert r.status == 200 and 0.19 <= took < 1.0
    assert int(r.header("x-envoy-upstream-service-time")) < 150        # the delay is not counted


def test_route_timeout_is_504_upstream_request_timeout(proxy):
    t = time.monotonic()
    r = get(proxy.outbound, "/slow", headers={"x-test-delay-ms": "2000"})
    took = time.monotonic() - t
    assert (r.status, r.body) == (504, b"upstream request timeout")
    assert r.header("content-type") == "text/plain"
    assert 0.29 <= took < 0.9
    assert get(proxy.outbound, "/slow", headers={"x-test-delay-ms": "50"}).status == 200


def test_unreachable_endpoint_is_503_remote_connection_failure(proxy):
    r = get(proxy.outbound, "/", host="dead")
    assert r.status == 503
    assert r.body == (b"upstream connect error or disconnect/reset before headers. "
                      b"reset reason: remote connection failure")
    r = get(proxy.outbound, "/retried", host="dead")
    assert r.status == 503 and r.header("x-envoy-attempt-count") == "3"
    assert r.body == (b"upstream connect error or disconnect/reset before headers. retried and the latest "
                      b"reset reason: remote connection failure")


# ---- retries --------------------------------------------------------------------------------------

def test_retries_on_5xx_return_the_last_upstream_response(proxy, backends):
    r = get(proxy.outbound, "/retry", headers={"x-test-status": "503"})
    assert r.status == 503 and r.json()["backend"] == "a"       # the upstream's own body
    assert r.header("x-envoy-attempt-count") == "3"
    assert backends["a"].hits == 3
    counts = [dict(req["headers"])["x-envoy-attempt-count"] for req in backends["a"].requests]
    assert counts == ["1", "2", "3"]
    backends["a"].reset()
    assert get(proxy.outbound, "/retry", headers={"x-test-status": "404"}).status == 404
    assert backends["a"].hits == 1                               # 404 is not retried on 5xx
    backends["a"].reset()
    r = get(proxy.outbound, "/r409", headers={"x-test-status": "409"})
    assert r.status == 409 and r.header("x-envoy-attempt-count") == "2"


def test_retry_on_reset_with_a_body(proxy, backends):
    backends["a"].close_idle()     # fresh connections (the proxy notices the closes while idle)
    time.sleep(0.05)
    r = get(proxy.outbound, "/retry", method="PUT", body=b"payload" * 100, headers={"x-test-reset": "1"})
    assert r.status == 503
    assert r.body.startswith(b"upstream connect error or disconnect/reset before headers. retried and the latest")
    assert backends["a"].hits == 3
    assert all(req["body"] == b"payload" * 100 for req in backends["a"].requests)


def test_per_try_timeout_retries_then_504(proxy, backends):
    t = time.monotonic()
    r = get(proxy.outbound, "/pertry", headers={"x-test-delay-ms": "400"})
    took = time.monotonic() - t
    assert (r.status, r.body) == (504, b"upstream request timeout")
    assert backends["a"].hits == 3 and 0.3 <= took < 1.5


def test_retry_budget_admits_or_refuses_retries(proxy, backends):
    # min_concurrency 3: a lone request gets all its retries
    r = get(proxy.outbound, "/", host="budget", headers={"x-test-status": "500"})
    assert r.status == 500 and backends["a"].hits == 4
    backends["a"].reset()
    # a budget of 0 % with no minimum admits no retry: the first answer is returned at once
    r = get(proxy.outbound, "/", host="nobudget", headers={"x-test-status": "500"})
    assert r.status == 500 and backends["a"].hits == 1
    assert proxy.stats()["cluster.outbound|n|nobudget.upstream_rq_retry_overflow"] >= 1


# ---- limits, outlier detection, mirror ---------------------------------------------------------------

def test_limits_overflow_is_503_with_x_envoy_overloaded(proxy, backends):
    def call(_):
        return get(proxy.outbound, "/", host="tight", headers={"x-test-delay-ms": "300"})

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(call, range(6)))
    ok = [r for r in results if r.status == 200]
    over = [r for r in results if r.status == 503]
    assert len(ok) >= 1 and len(over) >= 3 and len(ok) + len(over) == 6
    for r in over:
        assert r.body == OVERFLOW and r.header("x-envoy-overloaded") == "true"
        assert r.header("x-envoy-upstream-service-time") is None
    assert proxy.stats()["cluster.outbound|t|tight.upstream_rq_pending_overflow"] >= 3


def test_outlier_detection_ejects_and_returns_an_endpoint(proxy, backends):
    c = Client(proxy.outbound)
    codes = [c.request("GET", "/", host="od", headers={"x-test-fail-on": "a"}).status for _ in range(30)]
    assert codes.count(500) == 3                                  # ejected at its third 5xx
    stats = proxy.stats()
    assert stats["cluster.outbound|all|od.outlier_detection.ejections_enforced_total"] == 1
    assert stats["cluster.outbound|all|od.outlier_detection.ejections_active"] == 1
    _, metrics = proxy.admin_get("/metrics")
    assert 'envoy_cluster_outlier_detection_ejections_enforced_total{envoy_cluster_name="outbound|all|od"} 1' in metrics
    time.sleep(0.9)              # the ejection time is 600 ms, ending at the next 200 ms interval tick
    backends["a"].reset()
    for _ in range(9):
        c.request("GET", "/", host="od")
    assert backends["a"].hits >= 2                                # back in the rotation
    c.close()


def test_mirror_sends_a_shadow_copy_and_ignores_it(proxy, backends):
    r = get(proxy.outbound, "/mirror", host="svc:8000", method="POST", body=b"copy me")
    assert r.status == 200 and r.json()["backend"] == "a"
    deadline = time.monotonic() + 2
    while backends["m"].hits == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    req = backends["m"].requests[0]
    assert dict(req["headers"])["host"] == "svc-shadow:8000"
    assert req["body"] == b"copy me"
    # a failing mirror changes nothing for the caller
    r = get(proxy.outbound, "/mirror", headers={"x-test-status": "200"})
    assert r.status == 200


# ---- the inbound listener: authorization after normalisation ---------------------------------------------

def test_inbound_authorization_after_path_normalisation(proxy, backends):
    assert get(proxy.inbound, "/api/orders").status == 200
    assert backends["a"].hits == 1
    for target in ("/api/admin", "/api//admin", "/api/./admin/x", "/x/../api/admin", "/other"):
        r = get(proxy.inbound, target)
        assert (r.status, r.body) == (403, b"RBAC: access denied"), target
        assert r.header("content-type") == "text/plain"
    assert backends["a"].hits == 1
    r = get(proxy.inbound, "/api%2Fadmin")
    assert (r.status, r.body) == (400, b"")
    # the upstream sees the normalised path
    assert get(proxy.inbound, "/api/x/../y").json()["target"] == "/api/y"


def test_inbound_identity_rules(proxy):
    assert get(proxy.inbound, "/private").status == 403
    r = get(proxy.inbound, "/private", headers={"x-test-peer-identity": "spiffe://test.local/ns/web/sa/frontend"})
    assert r.status == 200
    assert r.header("x-envoy-attempt-count") is None             # only the outbound routes count attempts


# ---- bodies, admin, access log ----------------------------------------------------------------------

def test_chunked_request_and_response_bodies_stream(proxy, backends):
    def gen():
        for _ in range(5):
            yield b"x" * 1000
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", proxy.outbound, timeout=5)
    conn.request("POST", "/up", body=gen(), headers={"Host": "svc", "Transfer-Encoding": "chunked",
                                                     "x-test-chunked": "1", "x-test-body-size": "250000"},
                 encode_chunked=True)
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200 and len(body) == 250000
    assert resp.getheader("transfer-encoding") == "chunked"
    assert backends["a"].requests[-1]["body_len"] == 5000
    conn.close()


def test_head_request(proxy):
    r = get(proxy.outbound, "/", method="HEAD")
    assert r.status == 200 and r.body == b"" and int(r.header("content-length")) > 0
    assert get(proxy.outbound, "/").status == 200


def test_admin_endpoints_and_metric_names(proxy):
    assert proxy.admin_get("/ready") == (200, "LIVE\n")
    status, body = proxy.admin_get("/config")
    cfg = json.loads(body)
    assert status == 200 and cfg["version"] == "v1" and cfg["config"]["service"] == "client"
    get(proxy.outbound, "/")
    _, metrics = proxy.admin_get("/metrics")
    for name in ("envoy_cluster_upstream_rq_retry", "envoy_cluster_upstream_rq_retry_overflow",
                 "envoy_cluster_upstream_rq_pending_overflow",
                 "envoy_cluster_outlier_detection_ejections_enforced_total",
                 "envoy_http_downstream_cx_active", "envoy_cluster_upstream_rq_time_bucket",
                 "meshc_route_requests_total"):
        assert f"\n{name}{{" in metrics, name
    assert 'meshc_route_requests_total{listener="outbound",service="svc",route="default",code="200"}' in metrics
    status, text = proxy.admin_get("/stats")
    assert "cluster.outbound|v1|svc.upstream_rq_total: " in text


def test_access_log_has_one_json_line_per_request(proxy):
    get(proxy.outbound, "/logged-request")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        lines = proxy.access_log.read_text().splitlines() if proxy.access_log.exists() else []
        hit = [json.loads(x) for x in lines if "/logged-request" in x]
        if hit:
            break
        time.sleep(0.1)
    rec = hit[0]
    assert rec["route"] == "default" and rec["response_code"] == 200 and rec["attempts"] == 1
    assert rec["response_code_details"] == "via_upstream" and rec["response_flags"] == "-"
    assert rec["upstream_host"].startswith("127.0.0.1:") and rec["upstream_cluster"] == "outbound|v1|svc"
    assert rec["duration_ms"] >= 0 and rec["direction"] == "outbound"


def test_request_ids_are_canonical_random_uuid4_across_batches():
    """Issue 18 point 7: the ids the proxy generates (net/exchange.py, in batches from
    os.urandom): every one a canonical UUIDv4, none repeated, across batch boundaries."""
    import uuid

    from runtime_proxy.net.exchange import DRAWS, RID_BATCH, request_ids

    assert len(request_ids(3)) == 3
    ids = [DRAWS.request_id() for _ in range(3 * RID_BATCH + 7)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value.decode())
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122), value
        assert str(parsed).encode() == value


def test_a_mirror_copy_is_timed_like_any_answer(proxy, backends):
    """The shadow subset's upstream_rq_time holds the copy's real time (as Envoy's), not 0 ms."""
    from compiler.observe.prom import parse

    def buckets() -> dict[str, float]:
        status, body = proxy.admin_get("/stats/prometheus")
        assert status == 200
        return {dict(labels)["le"]: n for labels, n in parse(body)["envoy_cluster_upstream_rq_time_bucket"].items()
                if dict(labels)["envoy_cluster_name"] == "outbound|mirror|svc"}

    before = buckets()
    r = get(proxy.outbound, "/mirror", host="svc:8000", headers={"x-test-delay-ms": "120"})
    assert r.status == 200
    deadline = time.monotonic() + 3
    while (after := buckets())["+Inf"] == before["+Inf"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert after["+Inf"] == before["+Inf"] + 1
    assert after["100"] == before["100"] and after["250"] == before["250"] + 1


def test_response_flags_accumulate_as_envoys(proxy):
    """A fault's delay is `DI`, and stays when the request then fails: `DI,UC` (Envoy keeps every
    flag, alphabetically), with the failure's details."""
    get(proxy.outbound, "/fault/delay/flagged", host="svc:8000")
    get(proxy.outbound, "/fault/delay/reset", host="svc:8000", headers={"x-test-reset": "1"})
    deadline = time.monotonic() + 3
    while True:
        lines = proxy.access_log.read_text().splitlines() if proxy.access_log.exists() else []
        recs = {r["path"]: r for r in map(json.loads, lines) if r["path"].startswith("/fault/delay/")}
        if len(recs) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert recs["/fault/delay/flagged"]["response_flags"] == "DI"
    assert recs["/fault/delay/flagged"]["response_code_details"] == "via_upstream"
    reset = recs["/fault/delay/reset"]
    assert (reset["response_code"], reset["response_flags"]) == (503, "DI,UC")
    assert reset["response_code_details"] == "upstream_reset_before_response_started{connection_termination}"
