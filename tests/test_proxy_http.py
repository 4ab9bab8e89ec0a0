"""HTTP/1.1 on the wire, through a running proxy process: strict parsing (malformed requests get a
400 or 431 and never reach the upstream), keep-alive on both sides, pipelining, the upstream
connection pool noticing connections the upstream closed, and the size limits."""

from __future__ import annotations

import os
import socket
import time

import pytest
from proxy_backend import Backend
from proxy_harness import Client, config, get, raw_exchange, route, run_proxy, service, subset


@pytest.fixture(scope="module")
def backend():
    b = Backend("a")
    yield b
    b.stop()


@pytest.fixture(scope="module")
def proxy(backend, tmp_path_factory):
    cfg = config([service("svc", [subset("v1", [backend.port], "svc")], [route("all", to=("svc", "v1"))])],
                 app_port=backend.port,
                 proxy={"max_request_headers_bytes": 8192, "max_request_body_bytes": 100_000},
                 upstream={"max_response_headers_bytes": 8192})
    with run_proxy(cfg, tmp_path_factory.mktemp("http")) as p:
        yield p


@pytest.fixture(autouse=True)
def _reset(backend):
    backend.reset()


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


GOOD = b"GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n"

MALFORMED = {
    "bad request line": b"GET /a HTTP/1.1 extra\r\nHost: svc\r\n\r\n",
    "lower-case method": b"get /a HTTP/1.1\r\nHost: svc\r\n\r\n",
    "space before colon": b"GET /a HTTP/1.1\r\nHost : svc\r\n\r\n",
    "CL and TE": (b"POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\n0\r\n\r\n"),
    "two Content-Lengths": b"POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "bad Content-Length": b"POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: 3x\r\n\r\nabc",
    "bad chunk size": b"POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk without CRLF": b"POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
    "TE not chunked": b"POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "obs-fold": b"GET /a HTTP/1.1\r\nHost: svc\r\nX: a\r\n b\r\n\r\n",
    "control character": b"GET /a HTTP/1.1\r\nHost: svc\r\nX: a\x01b\r\n\r\n",
    "no Host": b"GET /a HTTP/1.1\r\nX: 1\r\n\r\n",
    "fragment": b"GET /a#frag HTTP/1.1\r\nHost: svc\r\n\r\n",
    "not origin form": b"GET svc/a HTTP/1.1\r\nHost: svc\r\n\r\n",
    "escaped slash": b"GET /a%2Fb HTTP/1.1\r\nHost: svc\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_requests_get_400_and_never_reach_the_upstream(proxy, backend, name):
    """As Envoy (tests/test_equivalence_live.py): its codec errors have the reason phrase as
    the body, a transfer coding other than chunked is 501."""
    out = raw_exchange(proxy.outbound, MALFORMED[name])
    assert status_of(out) == (501 if name == "TE not chunked" else 400), out[:200]
    assert b"connection: close" in out
    assert backend.hits == 0 and backend.parse_errors == 0


def test_absolute_form_as_envoy_and_repeated_host_refused(proxy, backend):
    """Envoy takes an absolute-form target's authority as the Host (allow_absolute_url). More
    than one Host line is a 400 (RFC 9112 3.2), stricter than Envoy, which joins them
    (docs/semantics.md; both planes in tests/test_proxy_edge.py)."""
    # (`connection: close`: raw_exchange reads until the proxy closes, 3 s for a kept-alive answer)
    out = raw_exchange(proxy.outbound, b"GET http://svc/a?q HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n")
    assert status_of(out) == 200, out[:200]
    assert backend.requests[-1]["target"] == "/a?q"
    assert ("host", "svc") in backend.requests[-1]["headers"]
    out = raw_exchange(proxy.outbound, b"GET /a HTTP/1.1\r\nHost: svc\r\nHost: svc\r\n\r\n")
    assert status_of(out) == 400 and b"connection: close" in out, out[:200]
    assert backend.hits == 1


def test_bad_chunk_after_the_head_went_upstream_is_cut_off(proxy, backend):
    s = socket.create_connection(("127.0.0.1", proxy.outbound), timeout=3)
    s.sendall(b"POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    time.sleep(0.2)                  # the head and a first chunk stream upstream
    s.sendall(b"zz\r\n")
    out = s.recv(65536)
    s.close()
    assert status_of(out) == 400
    time.sleep(0.1)
    assert backend.hits == 0        # the upstream never saw a complete request


def test_oversized_request_headers_get_431(proxy, backend):
    big = b"GET /a HTTP/1.1\r\nHost: svc\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n"
    assert status_of(raw_exchange(proxy.outbound, big)) == 431
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(100))
    many = b"GET /a HTTP/1.1\r\nHost: svc\r\n" + headers + b"\r\n"
    assert status_of(raw_exchange(proxy.outbound, many)) == 431
    # a head that never ends, sent in pieces
    s = socket.create_connection(("127.0.0.1", proxy.outbound), timeout=3)
    s.sendall(b"GET /a HTTP/1.1\r\nHost: svc\r\nX-Long: ")
    for _ in range(10):
        s.sendall(b"w" * 1000)
    out = s.recv(65536)
    s.close()
    assert status_of(out) == 431
    assert backend.hits == 0


def test_request_body_limit_is_413(proxy, backend):
    r = get(proxy.outbound, "/big", method="POST", body=b"z" * 200_000)
    assert r.status == 413
    assert backend.hits == 0


def test_oversized_response_headers_are_502(proxy, backend):
    r = get(proxy.outbound, "/a", headers={"x-test-big-header": "9000"})
    assert r.status == 502
    assert get(proxy.outbound, "/a").status == 200


def test_http10_is_426_and_upgrade_is_403(proxy, backend):
    assert status_of(raw_exchange(proxy.outbound, b"GET /a HTTP/1.0\r\nHost: svc\r\n\r\n")) == 426
    up = b"GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    assert status_of(raw_exchange(proxy.outbound, up)) == 403
    assert backend.hits == 0


def test_keep_alive_reuses_both_connections(proxy, backend):
    c = Client(proxy.outbound)
    conns = {c.request("GET", f"/k{i}").json()["conn"] for i in range(5)}
    c.close()
    assert len(conns) == 1
    assert proxy.stats()["http.outbound.downstream_cx_total"] >= 1


def test_pipelined_requests_are_answered_in_order(proxy, backend):
    reqs = b"".join(b"GET /p%d HTTP/1.1\r\nHost: svc\r\n\r\n" % i for i in range(3))
    s = socket.create_connection(("127.0.0.1", proxy.outbound), timeout=3)
    s.sendall(reqs + b"GET /last HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    assert out.count(b"HTTP/1.1 200 OK") == 4
    order = [out.index(t) for t in (b'"/p0"', b'"/p1"', b'"/p2"', b'"/last"')]
    assert order == sorted(order)


def test_expect_100_continue(proxy, backend):
    s = socket.create_connection(("127.0.0.1", proxy.outbound), timeout=3)
    s.sendall(b"POST /e HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(b"hello")
    out = first[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
    while b'"body_len": 5' not in out:
        out += s.recv(65536)
    s.close()
    assert status_of(out) == 200
    assert "expect" not in dict(backend.requests[0]["headers"])


def test_an_upstream_connection_closed_while_idle_is_not_reused(proxy, backend):
    c = Client(proxy.outbound)
    first = c.request("GET", "/1").json()["conn"]
    assert backend.close_idle() >= 1          # the upstream closes its idle keep-alive connections
    time.sleep(0.05)
    r = c.request("GET", "/2")
    assert r.status == 200 and r.json()["conn"] != first
    c.close()


def test_a_reused_connection_that_fails_before_any_byte_is_a_503_as_in_envoy(proxy, backend):
    """Envoy does not send a request again on its own when a reused upstream connection closes
    without an answer: 503 `connection termination` unless the route retries on `reset`
    (tests/test_equivalence_live.py)."""
    c = Client(proxy.outbound)
    for i in range(3):
        assert c.request("GET", f"/warm{i}").status == 200
    backend.drop_reused = True      # a second request on any connection: closed without an answer
    r = c.request("GET", "/after")
    assert r.status == 503, r
    assert r.body.endswith(b"reset reason: connection termination")
    c.close()


def test_a_chunked_body_over_the_limit_in_the_first_read_is_413(proxy, backend):
    body = b"".join(b"%x\r\n%s\r\n" % (50_000, b"q" * 50_000) for _ in range(3)) + b"0\r\n\r\n"
    out = raw_exchange(proxy.outbound, b"POST /c HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert status_of(out) == 413
    assert backend.hits == 0
    assert get(proxy.outbound, "/after").status == 200


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/PID/maps")
def test_the_serving_process_loads_neither_orjson_nor_hashlib_until_asked(backend, tmp_path):
    """The resident memory of a plaintext sidecar: serving requests and readiness probes loads
    neither orjson (1.3 MB with its imports: the admin's JSON answers and the access log load it)
    nor hashlib (0.7 MB: the first mTLS client does)."""
    cfg = config([service("svc", [subset("v1", [backend.port], "svc")], [route("all", to=("svc", "v1"))])],
                 app_port=backend.port)
    with run_proxy(cfg, tmp_path) as proxy:
        assert get(proxy.outbound, "/x").status == 200
        assert proxy.admin_get("/ready")[0] == 200

        def mapped() -> str:
            with open(f"/proc/{proxy.proc.pid}/maps") as fh:
                return fh.read()
        assert "orjson" not in mapped() and "_hashlib" not in mapped()
        assert proxy.stats()["http.outbound.downstream_rq_2xx"] >= 1   # a JSON answer: now it is loaded
        assert "orjson" in mapped()


def test_pooled_connection_handed_over_mid_read_keeps_its_head_limit(tmp_path):
    """A response whose last read is larger than the response head limit, finished while another
    request waits for the (only) connection: the waiting request gets the connection and its own
    response (regression: the whole read was counted as the next response's head, a 502)."""
    import threading

    body = os.urandom(16_384)
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    accepted = []

    def serve(conn: socket.socket) -> None:
        buf = b""
        n = 0
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = conn.recv(65536)
                    except OSError:       # the proxy stopped
                        return
                    if not data:
                        return
                    buf += data
                buf = buf.split(b"\r\n\r\n", 1)[1]
                n += 1
                if n == 1:
                    time.sleep(0.2)   # the second request is sent, and waits for this connection
                # head and body in one write: the proxy reads them (and the response's end) at once
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nx-n: %d\r\n\r\n%s" % (len(body), n, body))

    def accept() -> None:
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            accepted.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    one = {"max_connections": 1, "max_pending_requests": 8, "max_requests": 8, "max_retries": 3}
    cfg = config([service("svc", [subset("v1", [port], "svc")], [route("all", to=("svc", "v1"))], limits=one)],
                 app_port=port, upstream={"max_response_headers_bytes": 1024})
    try:
        with run_proxy(cfg, tmp_path) as p:
            results: list = [None, None]

            def fetch(i: int) -> None:
                results[i] = get(p.outbound, f"/{i}")

            first = threading.Thread(target=fetch, args=(0,))
            first.start()
            time.sleep(0.05)
            second = threading.Thread(target=fetch, args=(1,))
            second.start()
            first.join(5)
            second.join(5)
            assert [(r.status, r.body) for r in results] == [(200, body), (200, body)], \
                [(r.status, r.body[:200]) for r in results]
            assert sorted(r.header("x-n") for r in results) == ["1", "2"]
            assert len(accepted) == 1      # one pooled connection served both
    finally:
        lsock.close()
