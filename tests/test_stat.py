"""The access log in both planes and `meshc stat` (issue 20), with real components: one policy
compiled for the sidecar `client` and run by a real Envoy and by the native proxy, known traffic
through both (authorization denials by a named rule and by the default, retried 503s), then
`meshc stat --once --output-format json` run as a subprocess against both admin addresses, and
once through a running `meshc serve` that names the proxies."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.envoy_support import free_port, requires_envoy, run_meshc
from tests.planes_support import BothPlanes
from tests.proxy_harness import get
from tests.test_control_plane import Serve

POLICY = """
service client {
  port 8000
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@"  access_log "@LOG@" }
}

service api {
  port 8080
  subset v1 { endpoints ["127.0.0.1:@V1@"] }
  sidecar { admin @DEAD@ }
  outlier { consecutive_5xx 100 }
  retry_budget { percent 100% min_concurrency 10 }
}

routes api {
  route flaky { match { path prefix "/flaky" method [GET] } to api.v1 retry { attempts 2 on [5xx] backoff 1ms } }
  route rest { to api.v1 }
}

# where requests fail in the proxy: a connection refused, a fault's abort, per-try timeouts
service edge {
  port 8081
  subset v1 { endpoints ["127.0.0.1:@V1@"] }
  subset dead { endpoints ["127.0.0.1:@DEAD@"] }
  sidecar { admin @DEAD@ }
  retry_budget { percent 100% min_concurrency 10 }
}

routes edge {
  route gone { match { path prefix "/gone" } to edge.dead retry none }
  route abort { match { path prefix "/abort" } to edge.v1 fault { abort 418 } }
  route delayed { match { path prefix "/delayed" } to edge.v1 fault { delay 1ms } }
  route pertry { match { method [GET] } to edge.v1 retry { attempts 1 per_try_timeout 50ms on [5xx] } }
}

# ejected at its second 5xx in a row
service flap {
  port 8082
  endpoints ["127.0.0.1:@V1@"]
  sidecar { admin @DEAD@ }
  outlier { consecutive_5xx 2  max_ejected 100% }
}

authorization client {
  default deny
  deny admin { path prefix "/admin" }
  allow public { path prefix "/public" }
}
"""

# requests sent to each plane before `meshc stat` runs
INBOUND = [("/admin/users", 403)] * 3 + [("/other", 403)] * 2 + [("/public/a", 200)] * 2 + \
    [("/public/q?x=1&y", 200), ("/public/./b/../c", 200)]
OUTBOUND = [("/x", 200, None)] * 5 + [("/flaky", 503, "503")] * 2
# (target, status) at the outbound listener, Host `edge`
EDGE = [("/gone", 503), ("/abort", 418), ("/slow", 504), ("/delayed", 200)]
FIELDS = {"start_time", "direction", "method", "path", "authority", "response_code", "response_code_details",
          "response_flags", "service", "route", "upstream_cluster", "upstream_host", "attempts", "duration_ms",
          "request_id", "peer_identity"}


class Planes(BothPlanes):
    def __init__(self, tmp: Path):
        self.logs = {"envoy": tmp / "envoy-access.log", "native": tmp / "native-access.log"}

        def native_log(config: dict) -> None:
            config["proxy"]["access_log"] = str(self.logs["native"])

        # Envoy flushes its access log every 10 s by default: every 200 ms here
        super().__init__(tmp, POLICY.replace("@LOG@", str(self.logs["envoy"])), ("app", "v1"),
                         adjust_native=native_log, envoy_args=("--file-flush-interval-msec", "200"),
                         bootstrap={"stats_flush_interval": "0.1s"})   # histograms merged every 100 ms
        self.admin = {"envoy": f"127.0.0.1:{self.envoy.admin_port}", "native": f"127.0.0.1:{self.native.admin}"}


@pytest.fixture(scope="module")
def planes(tmp_path_factory):
    p = Planes(tmp_path_factory.mktemp("stat"))
    try:
        for plane in ("envoy", "native"):
            for path, status in INBOUND:
                assert get(p.listener_ports[plane, "inbound"], path, host="client").status == status, (plane, path)
            for path, status, fail in OUTBOUND:
                headers = {"x-test-status": fail} if fail else None
                got = get(p.listener_ports[plane, "outbound"], path, host="api", headers=headers).status
                assert got == status, (plane, path, got)
            for _ in range(2):
                got = get(p.listener_ports[plane, "outbound"], "/flap", host="flap", headers={"x-test-status": "503"})
                assert got.status == 503, (plane, got.status)
            for path, status in EDGE:
                got = get(p.listener_ports[plane, "outbound"], path, host="edge", headers={"x-test-delay-ms": "300"})
                assert got.status == status, (plane, path, got.status)
        yield p
    finally:
        p.close()


def log_lines(path: Path, count: int, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(x) for x in lines]
        time.sleep(0.1)


def stat_json(*args: str) -> tuple[int, dict | None, str]:
    proc = run_meshc("stat", *args, "--once", "--output-format", "json")
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else None), proc.stderr


def comparable(rec: dict) -> dict:
    """What both planes write the same: every field but the times, ids and ports of the moment, and
    the transport detail Envoy adds to a connection failure's details (`|delayed_connect_error:…`)."""
    out = {k: v for k, v in rec.items() if k not in ("start_time", "duration_ms", "request_id", "upstream_host")}
    out["response_code_details"] = re.sub(r"\|[^}]*", "", out["response_code_details"] or "")
    return out


@requires_envoy
def test_both_planes_write_the_same_access_log(planes):
    total = len(INBOUND) + len(OUTBOUND) + 2 + len(EDGE)
    logs = {plane: log_lines(planes.logs[plane], total) for plane in ("envoy", "native")}
    for plane, records in logs.items():
        assert len(records) == total, (plane, records)
        for rec in records:
            assert set(rec) == FIELDS, (plane, rec)
            assert rec["start_time"].endswith("Z") and isinstance(rec["duration_ms"], int)
            assert len(rec["request_id"]) == 36, rec
    assert [comparable(r) for r in logs["envoy"]] == [comparable(r) for r in logs["native"]]
    details = [r["response_code_details"] for r in logs["native"]]
    assert details[:len(INBOUND)] == (["rbac_access_denied_matched_policy[admin]"] * 3
                                      + ["rbac_access_denied_matched_policy[none]"] * 2 + ["via_upstream"] * 4)
    # the path as routed: normalised, with its query
    assert [r["path"] for r in logs["native"][7:9]] == ["/public/q?x=1&y", "/public/c"]
    flaky = [r for r in logs["native"] if r["route"] == "flaky"]
    assert [(r["attempts"], r["response_flags"], r["response_code"]) for r in flaky] == [(3, "URX", 503)] * 2
    edge = [(r["response_code_details"], r["response_flags"], r["upstream_cluster"]) for r in logs["native"][-4:]]
    assert edge == [("upstream_reset_before_response_started{remote_connection_failure}", "UF", "outbound|dead|edge"),
                    ("fault_filter_abort", "FI", "outbound|v1|edge"),
                    ("upstream_per_try_timeout", "URX,UT", "outbound|v1|edge"),
                    ("via_upstream", "DI", "outbound|v1|edge")]


def target(data: dict, plane: str) -> dict:
    (t,) = [t for t in data["targets"] if t["plane"] == plane]
    return t


def row(t: dict, kind: str, service: str, route: str | None = None) -> dict:
    (r,) = [r for r in t["rows"] if (r["kind"], r["service"], r["route"]) == (kind, service, route)]
    return r


@requires_envoy
def test_stat_reads_both_planes_the_same(planes):
    # both access logs written whole (Envoy's denials by rule come from its log)
    log_lines(planes.logs["envoy"], len(INBOUND) + len(OUTBOUND) + 2 + len(EDGE))
    code, data, err = stat_json(planes.admin["envoy"], planes.admin["native"], "--interval", "0.3")
    assert code == 0, err
    assert data["schema"] == 1 and 0.3 <= data["interval_s"] < 3
    for plane in ("envoy", "native"):
        t = target(data, plane)
        assert t["proxy"] == "client" and t["error"] is None and t["address"] == planes.admin[plane]
        inbound = row(t, "inbound", "client")
        assert inbound["requests"] == len(INBOUND), (plane, inbound)
        assert inbound["success_rate"] == 1.0 and inbound["denied"] == 5
        assert inbound["denied_by_rule"] == [{"rule": "admin", "denied": 3, "window": 0},
                                             {"rule": "none", "denied": 2, "window": 0}], plane
        assert inbound["window"]["requests"] == 0 and inbound["window"]["requests_per_s"] == 0.0
        api = row(t, "destination", "api")
        # final answers, as Envoy's router charges them: 5 × 200, 2 × 503 after 3 attempts each
        assert api["requests"] == 7 and api["retries"] == 4 and api["ejections"] == 0, (plane, api)
        assert api["success_rate"] == round(5 / 7, 4)
        flap = row(t, "destination", "flap")
        assert (flap["requests"], flap["success_rate"], flap["ejections"]) == (2, 0.0, 1), (plane, flap)
        flaky, rest = row(t, "route", "api", "flaky"), row(t, "route", "api", "rest")
        assert (flaky["requests"], flaky["success_rate"], flaky["retries"]) == (2, 0.0, 4), (plane, flaky)
        assert (rest["requests"], rest["success_rate"], rest["retries"]) == (5, 1.0, 0), (plane, rest)
    assert target(data, "envoy")["access_log"] == str(planes.logs["envoy"])
    for plane in ("envoy", "native"):
        lat = row(target(data, plane), "destination", "api")["latency_ms"]
        assert lat["p50"] is not None and 0 < lat["p50"] <= lat["p95"] <= lat["p99"], (plane, lat)


@requires_envoy
def test_stat_rates_come_from_the_window(planes):
    """Requests sent while `meshc stat` watches: the window counts some of them, at most all, and
    requests/s is that count over the window."""
    port = planes.listener_ports["native", "inbound"]
    sent = [0]
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            get(port, "/public/rate", host="client")
            sent[0] += 1

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        code, data, err = stat_json(planes.admin["native"], "--interval", "1")
    finally:
        stop.set()
        thread.join()
    assert code == 0, err
    w = row(target(data, "native"), "inbound", "client")["window"]
    assert 0 < w["requests"] <= sent[0], (w, sent)
    assert w["requests_per_s"] == pytest.approx(w["requests"] / w["seconds"], abs=0.01)
    assert w["success_rate"] == 1.0


@requires_envoy
def test_stat_finds_the_proxies_through_meshc_serve(planes, tmp_path):
    path = tmp_path / "policy.mesh"
    path.write_text(planes.text)
    serve = Serve(str(path))
    try:
        code, data, err = stat_json("--server", f"127.0.0.1:{serve.port}", "--interval", "0")
    finally:
        assert serve.stop() == 0
    # no proxy is connected to this server: every sidecar it compiled, `client` (its admin address is
    # Envoy's; the native proxy listens on a free port) and `api` and `edge` (one free port, nothing
    # running there: reported, exit 0)
    assert code == 0, err
    client, api = sorted(data["targets"], key=lambda t: t["address"] != planes.admin["envoy"])
    assert client["plane"] == "envoy" and client["proxy"] == "client" and data["interval_s"] == 0
    assert row(client, "inbound", "client")["denied"] >= 5
    dead = re.search(r"service api \{.*?admin (\d+)", planes.text, re.S).group(1)
    assert api["address"] == f"127.0.0.1:{dead}" and api["error"].startswith(f"cannot read http://127.0.0.1:{dead}/")


@requires_envoy
def test_stat_human_table(planes):
    proc = run_meshc("stat", planes.admin["native"], "--once", "--interval", "0")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["PROXY", "PLANE", "SERVICE", "ROUTE", "RPS", "SUCCESS", "P50", "P95", "P99",
                                "RETRIES", "EJECTIONS", "DENIED"]
    inbound = next(line.split() for line in lines if "(inbound)" in line)
    assert inbound[:6] == ["client", "native", "client", "(inbound)", "-", "100.00%"] and inbound[-1] >= "5"
    assert any(line.startswith("client (native ") and "denied by rule: admin 3, none 2" in line for line in lines)


def test_an_unreachable_address_is_one_line_and_exit_4():
    proc = run_meshc("stat", f"127.0.0.1:{free_port()}", "--once")
    assert proc.returncode == 4 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("meshc: error: cannot read http://127.0.0.1:"), proc.stderr


@requires_envoy
def test_an_address_that_is_not_a_proxy_is_exit_1_when_another_answers(planes):
    # an HTTP server that is no proxy: the echo backend answers 200 to anything, but not /config's JSON
    backend = f"127.0.0.1:{planes.backends['app'].port}"
    proc = run_meshc("stat", backend, planes.admin["native"], "--once", "--interval", "0", "--format", "json")
    assert proc.returncode == 1, proc.stderr
    assert f"meshc: error: {backend} is not the admin endpoint of a proxy" in proc.stderr
    data = json.loads(proc.stdout)
    assert [t["error"] is None for t in data["targets"]] == [False, True]


def test_a_silent_tcp_server_is_not_a_proxy():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        proc = run_meshc("stat", f"127.0.0.1:{s.getsockname()[1]}", "--once")
    assert proc.returncode == 4 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.parametrize("args, message", [
    (("localhost",), "localhost: not HOST:PORT"),
    (("127.0.0.1:1", "--interval", "-1"), "--interval must be 0 to 3600 seconds"),
    (("127.0.0.1:1", "--interval", "nan"), "--interval must be 0 to 3600 seconds"),
    (("127.0.0.1:1", "--interval", "soon"), "invalid float value: 'soon'"),
    (("--output-format", "xml"), "invalid choice: 'xml'"),
])
def test_bad_input_is_exit_2(args, message):
    proc = run_meshc("stat", *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_no_serve_to_ask_is_exit_4():
    proc = run_meshc("stat", "--server", f"127.0.0.1:{free_port()}", "--once")
    assert proc.returncode == 4 and "cannot reach meshc serve" in proc.stderr, proc.stderr


def test_stat_and_status_point_at_each_other():
    stat_help = run_meshc("stat", "--help").stdout
    status_help = run_meshc("status", "--help").stdout
    assert "meshc status" in " ".join(stat_help.split()) and "meshc stat`" in " ".join(status_help.split())


# ---- the pure parts ---------------------------------------------------------------------------

def test_prometheus_text_is_parsed_with_escapes_and_timestamps():
    from compiler.observe.prom import PromError, parse

    text = ('# HELP x help\n# TYPE x counter\nx{a="1",b="q\\"uote\\\\"} 3\nx 4 1700000000000\n'
            'y_bucket{le="+Inf"} 2\n\n')
    assert parse(text) == {"x": {(("a", "1"), ("b", 'q"uote\\')): 3.0, (): 4.0}, "y_bucket": {(("le", "+Inf"),): 2.0}}
    with pytest.raises(PromError, match="line 1"):
        parse("not a sample at all {")


def test_quantiles_are_prometheus_histogram_quantile():
    from compiler.observe.prom import quantile

    inf = float("inf")
    buckets = [(1.0, 2.0), (5.0, 6.0), (inf, 8.0)]
    # rank 4 lies in (1, 5], which holds ranks 2..6: 1 + (5 - 1) × (4 - 2) / (6 - 2)
    assert quantile(0.5, buckets) == 3.0
    # rank 0.8 lies in the first bucket, from 0: 1 × 0.8 / 2
    assert quantile(0.1, buckets) == pytest.approx(0.4)
    # a rank in the +Inf bucket: the highest finite bound
    assert quantile(0.99, buckets) == 5.0
    assert quantile(0.5, [(1.0, 0.0), (inf, 0.0)]) is None and quantile(0.5, []) is None


def test_a_reload_opens_the_new_access_log_and_one_that_cannot_be_opened_is_refused(tmp_path):
    """The native proxy: a config without `access_log` logs nothing; a reload that adds it opens the
    file; a config whose file cannot be opened is refused, as Envoy refuses such listeners: the
    last good config (and its log) keeps serving, and a proxy cannot start on it."""
    from tests.proxy_backend import Backend
    from tests.proxy_harness import config, route, service, start_proxy, subset, write_config

    backend = Backend("v1")
    cfg = config([service("svc", [subset("v1", [backend.port], "svc")], [route("default", to=("svc", "v1"))])])
    path = write_config(tmp_path / "cfg.json", cfg)
    proxy = start_proxy(path, tmp_path)
    bad = str(tmp_path / "missing-dir" / "access.log")
    try:
        log = tmp_path / "access.log"
        assert get(proxy.outbound, "/before").status == 200
        cfg["proxy"] = dict(cfg["proxy"], access_log=str(log))
        write_config(path, cfg)
        assert proxy.admin_get("/reload", method="POST")[0] == 200
        assert get(proxy.outbound, "/after").status == 200
        assert [r["path"] for r in log_lines(log, 1)] == ["/after"]
        cfg["proxy"] = dict(cfg["proxy"], access_log=bad)
        write_config(path, cfg)
        status, body = proxy.admin_get("/reload", method="POST")
        assert status == 400 and f"$.proxy.access_log: cannot open {bad}: no such file or directory" in body, body
        assert get(proxy.outbound, "/still").status == 200
        assert [r["path"] for r in log_lines(log, 2)] == ["/after", "/still"]
    finally:
        proxy.stop()
        backend.stop()
    proc = subprocess.run([sys.executable, "-m", "runtime_proxy", path], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"invalid config: $.proxy.access_log: cannot open {bad}: no such file or directory" in proc.stderr


def test_rows_and_table_of_two_fixed_scrapes_golden(update_goldens):
    """Two scrapes 2 s apart (tests/data/stat/*.prom: Envoy's families, as both planes serve them)
    give the rows and the table of tests/golden/stat/ (`pytest --update-goldens` rewrites them)."""
    from compiler.cli.stat import SCHEMA
    from compiler.observe import stats, table
    from compiler.observe.prom import parse

    data = Path(__file__).parent / "data" / "stat"
    first = stats.Scrape(10.0, parse((data / "before.prom").read_text()), {})
    second = stats.Scrape(12.0, parse((data / "after.prom").read_text()), {"admin": 3, "none": 2})
    native = {"address": "127.0.0.1:15000", "plane": "native", "proxy": "client", "error": None, "access_log": None,
              "denials_note": None, "rows": stats.rows("client", first, second)}
    unknown = stats.Scrape(12.0, second.samples, None)     # an Envoy without an access log
    envoy = {"address": "127.0.0.1:15100", "plane": "envoy", "proxy": "client", "error": None, "access_log": None,
             "denials_note": "no access log is configured", "rows": stats.rows("client", first, unknown)}
    down = {"address": "127.0.0.1:15200", "plane": None, "proxy": None, "access_log": None, "denials_note": None,
            "error": "cannot read http://127.0.0.1:15200/config: connection refused", "rows": []}
    report = {"schema": SCHEMA, "interval_s": 2.0, "targets": [native, envoy, down]}
    got = {"report.json": json.dumps(report, indent=2, sort_keys=True) + "\n", "table.txt": table.render(report) + "\n"}
    golden = Path(__file__).parent / "golden" / "stat"
    for name, text in got.items():
        if update_goldens:
            golden.mkdir(exist_ok=True)
            (golden / name).write_text(text)
        assert (golden / name).read_text() == text, f"tests/golden/stat/{name} differs: run pytest --update-goldens"
    api = next(r for r in native["rows"] if r["kind"] == "destination")
    # 12 answers in the window, 2 of them 503: rates over 2 s. The window's buckets (the first scrape
    # has none of this cluster): 10 ≤ 1 ms, 15 ≤ 5 ms, 17 ≤ 25 ms, so histogram_quantile gives
    # p50 = 1 × 8.5 / 10, p95 = 5 + 20 × (16.15 − 15) / 2, p99 = 5 + 20 × (16.83 − 15) / 2
    assert api["window"] == {"seconds": 2.0, "requests": 12, "requests_per_s": 6.0, "success_rate": 0.8333,
                             "retries": 4, "denied": None}
    assert api["latency_ms"] == {"p50": 0.85, "p95": 16.5, "p99": 23.3}
    rest = next(r for r in native["rows"] if r["route"] == "rest")
    # the window's buckets of route rest: 7 ≤ 1 ms, 10 ≤ 5 ms: p50 = 1 × 5 / 7
    assert rest["latency_ms"]["p50"] == round(5 / 7, 3) and rest["window"]["requests_per_s"] == 5.0


def _histogram_scrape(at: float, requests: float, buckets: dict[str, float]):
    from compiler.observe import stats

    cluster = (("envoy_cluster_name", "outbound|v1|api"),)
    samples: dict = {
        "envoy_cluster_upstream_rq": {cluster + (("envoy_response_code", "200"),): requests},
        "envoy_cluster_upstream_rq_time_bucket": {cluster + (("le", le),): n for le, n in buckets.items()},
    }
    return stats.Scrape(at, samples, {})


def test_the_window_percentiles_need_new_bucket_counts_and_a_restart_is_no_negative_window():
    """Envoy adds to its histograms only at its stats flush: a window with new requests but no new
    bucket counts shows the totals' percentiles, not `-`; a counter that went down (the proxy
    restarted between the scrapes) counts its window from 0, never negative."""
    from compiler.observe import stats

    totals = {"1": 10.0, "5": 20.0, "+Inf": 20.0}
    first = _histogram_scrape(10.0, 20, totals)
    unflushed = _histogram_scrape(12.0, 25, totals)         # 5 new requests, histogram not flushed yet
    api = next(r for r in stats.rows("client", first, unflushed) if r["kind"] == "destination")
    assert api["window"]["requests"] == 5
    assert api["latency_ms"] == {"p50": 1.0, "p95": 4.6, "p99": 4.92}
    restarted = _histogram_scrape(12.0, 4, {"1": 4.0, "5": 4.0, "+Inf": 4.0})
    api = next(r for r in stats.rows("client", first, restarted) if r["kind"] == "destination")
    assert api["window"]["requests"] == 4 and api["window"]["requests_per_s"] == 2.0
    assert api["latency_ms"]["p50"] == 0.5


class FakeAdmin:
    """A real HTTP server on 127.0.0.1 answering GET PATH with fixed JSON or text (404 otherwise):
    an admin endpoint that looks like Envoy's in some ways and not in others."""

    def __init__(self, answers: dict[str, str]) -> None:
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = answers.get(self.path)
                data = (body if body is not None else "not found").encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_server_info_without_a_node_object_is_not_a_proxy():
    admin = FakeAdmin({"/server_info": json.dumps({"version": "x", "node": "client"})})
    try:
        proc = run_meshc("stat", admin.address, "--once", "--interval", "0")
    finally:
        admin.close()
    assert proc.returncode == 4 and "Traceback" not in proc.stderr, proc.stderr
    assert f"meshc: error: {admin.address} is not the admin endpoint of a proxy" in proc.stderr


def test_lines_of_envoys_access_log_that_are_not_objects_are_skipped(tmp_path):
    from compiler.backends.envoy.names import FILE_ACCESS_LOG

    log = tmp_path / "access.log"
    denied = {"direction": "inbound", "response_code_details": "rbac_access_denied_matched_policy[admin]"}
    log.write_text('["rbac_access_denied_matched_policy[x]"]\n"rbac_access_denied_matched_policy[y]"\n'
                   + json.dumps(denied) + "\n")
    admin = FakeAdmin({
        "/server_info": json.dumps({"version": "x", "node": {"id": "client.default"}}),
        "/config_dump": json.dumps({"configs": [{"typed_config": {"@type": FILE_ACCESS_LOG, "path": str(log)}}]}),
        "/stats/prometheus": "",
    })
    try:
        proc = run_meshc("stat", admin.address, "--once", "--interval", "0", "--output-format", "json")
    finally:
        admin.close()
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    (target,) = json.loads(proc.stdout)["targets"]
    inbound = next(r for r in target["rows"] if r["kind"] == "inbound")
    assert inbound["denied_by_rule"] == [{"rule": "admin", "denied": 1, "window": 0}]


def _logging_proxy(tmp_path):
    """A native proxy of one service, one backend, writing its access log to tmp_path/access.log:
    (backend, proxy, log path); the caller stops both."""
    from tests.proxy_backend import Backend
    from tests.proxy_harness import config, route, service, start_proxy, subset, write_config

    backend = Backend("v1")
    log = tmp_path / "access.log"
    cfg = config([service("svc", [subset("v1", [backend.port], "svc")], [route("default", to=("svc", "v1"))])])
    cfg["proxy"] = dict(cfg["proxy"], access_log=str(log))
    return backend, start_proxy(write_config(tmp_path / "cfg.json", cfg), tmp_path), log


def test_the_native_access_log_follows_a_rotation_and_sigusr1(tmp_path):
    """logrotate renames the file: the sweep finds another file (or none) at the path and reopens
    it, so later lines go to the new file; SIGUSR1 reopens too (as Envoy's). Lines are written by
    the sweep only; none is dropped."""
    import signal

    backend, proxy, log = _logging_proxy(tmp_path)
    try:
        assert get(proxy.outbound, "/one").status == 200
        assert [r["path"] for r in log_lines(log, 1)] == ["/one"]
        log.rename(tmp_path / "access.log.1")              # as logrotate does
        assert get(proxy.outbound, "/two").status == 200
        assert [r["path"] for r in log_lines(log, 1)] == ["/two"]
        assert [r["path"] for r in log_lines(tmp_path / "access.log.1", 1)] == ["/one"]
        # a file removed: a new one at the path
        log.unlink()
        assert get(proxy.outbound, "/three").status == 200
        assert [r["path"] for r in log_lines(log, 1)] == ["/three"]
        proxy.proc.send_signal(signal.SIGUSR1)             # reopens (without it, SIGUSR1 would end the proxy)
        time.sleep(0.5)   # SIGUSR1's default action would end the process as the signal arrives
        assert proxy.proc.poll() is None
        assert get(proxy.outbound, "/four").status == 200
        assert [r["path"] for r in log_lines(log, 2)] == ["/three", "/four"]
        assert proxy.stats()["access_log.dropped"] == 0
        status, body = proxy.admin_get("/stats/prometheus")
        assert status == 200 and "\nmeshc_access_log_dropped_total 0\n" in body
    finally:
        proxy.stop()
        backend.stop()


def test_a_host_that_is_not_utf8_is_logged_with_replacement_characters(tmp_path):
    """A Host of bytes that are not UTF-8 (refused with 400, a local reply) still gets its
    access-log line, each such byte as U+FFFD, and no error in the proxy's log (it was a
    traceback, and the line was lost)."""
    from tests.proxy_harness import raw_exchange

    backend, proxy, log = _logging_proxy(tmp_path)
    try:
        answer = raw_exchange(proxy.outbound, b"GET /x HTTP/1.1\r\nHost: sv\xe9c\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
        assert get(proxy.outbound, "/after").status == 200
        lines = log_lines(log, 2)
        assert [(r["authority"], r["response_code"]) for r in lines] == [("sv\ufffdc", 400), ("svc", 200)]
        assert "ERROR" not in proxy.log() and "Traceback" not in proxy.log()
    finally:
        proxy.stop()
        backend.stop()


def test_the_native_access_log_holds_at_most_max_pending_lines_and_counts_the_rest(tmp_path):
    """Between two sweeps the log keeps lines in a list; over its cap a line is dropped and counted
    (meshc_access_log_dropped_total), before any work is done for it. (The real AccessLog and
    Metrics; the request is a stand-in, as a real proxy would need 100 000 requests in a second.)"""
    from types import SimpleNamespace

    from runtime_proxy.net.metrics import Metrics
    from runtime_proxy.net.server import AccessLog

    metrics = Metrics()
    log = AccessLog(str(tmp_path / "access.log"), metrics)
    try:
        log.pending = ["{}\n"] * AccessLog.MAX_PENDING
        log.write(SimpleNamespace(t_start=1.0))      # type: ignore[arg-type]
        assert metrics.access_log_dropped == 1 and len(log.pending) == AccessLog.MAX_PENDING
        assert (tmp_path / "access.log").read_text() == ""    # nothing written before the sweep
        log.flush()
        assert log.pending == [] and len((tmp_path / "access.log").read_text().splitlines()) == AccessLog.MAX_PENDING
        assert "\nmeshc_access_log_dropped_total 1\n" in metrics.prometheus({})
    finally:
        log.close()


def test_envoys_access_log_is_read_in_chunks_keeping_the_partial_last_line(tmp_path):
    """A 24 MiB log at first look is read 1 MiB at a time (its peak memory stays far below the
    file's size), every denial counted once, lines across chunk boundaries included; a partial
    last line is counted when its end is written."""
    import tracemalloc

    from compiler.backends.envoy.names import FILE_ACCESS_LOG
    from compiler.cli.stat import Target

    log = tmp_path / "access.log"
    allowed = json.dumps({"direction": "inbound", "response_code_details": "via_upstream", "pad": "x" * 300}) + "\n"
    denied = json.dumps({"direction": "inbound", "response_code_details": "rbac_access_denied_matched_policy[admin]"})
    block = allowed * 999 + denied + "\n"            # ~330 KB: denials fall on every chunk offset
    copies = (24 << 20) // len(block) + 1
    with log.open("w") as fh:
        for _ in range(copies):
            fh.write(block)
        fh.write(denied[:20])                         # a line being written
    admin = FakeAdmin({
        "/server_info": json.dumps({"version": "x", "node": {"id": "client.default"}}),
        "/config_dump": json.dumps({"configs": [{"typed_config": {"@type": FILE_ACCESS_LOG, "path": str(log)}}]}),
    })
    try:
        target = Target(admin.address)
        target.identify()
    finally:
        admin.close()
    tracemalloc.start()
    try:
        assert target.denials({}) == {"admin": copies}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    with log.open("a") as fh:
        fh.write(denied[20:] + "\n")
    assert target.denials({}) == {"admin": copies + 1}
