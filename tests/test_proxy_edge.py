"""HTTP/1 edge cases of the native proxy next to a real Envoy (issue 18, points 1, 2, 4, 5 and 6).

One policy (a sidecar for `client` whose application is a loopback backend, and a destination
`api` on another) is compiled by the real compiler into both targets; a real Envoy 1.40 runs the
xDS output and the native proxy runs the native config. Each case sends the same bytes, over a
raw socket, into the same listener of both planes and asserts, per plane, the status of the
first answer and whether an upstream (the application or `api`) received a request, as
docs/semantics.md states them. Where the native proxy is stricter than Envoy (more than one Host
line: 400, "Known limits" in docs/semantics.md) the case says so with its own expectation per
plane.

The last test floods the native proxy with oversized heads from 16 clients and bounds its RSS
growth (point 6): the refused heads were kept alive by the 1 s linger of their connections.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.envoy_support import requires_envoy
from tests.planes_support import BothPlanes
from tests.proxy_backend import Backend
from tests.proxy_harness import config, route, run_proxy, service, subset

POLICY = """
service client {
  port 8000
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" }
}
service api {
  port 8080
  endpoints ["127.0.0.1:@API@"]
}
routes api { route all { to api } }
authorization client {
  default allow
  deny tagged { header "x-deny" present }
}
"""

PLANES = ("envoy", "native")
IDLE = 0.3      # seconds without a byte that end an answer kept alive
# ... where only the first answer's head is read (its status and `connection` header: the whole
# head is in before the idle time starts)
FIRST_HEAD_IDLE = 0.1
# Envoy's delayed close (its default 1 s: after an answer with `connection: close`, how long it
# waits for the client to close first) shortened, so that each refused head is not a second of the
# suite; it changes when Envoy closes, not whether it does, nor what it answers.
DELAYED_CLOSE = "0.1s"


class Planes(BothPlanes):
    """Both data planes on one policy, in front of the same two backends."""

    def __init__(self, tmp: Path):
        super().__init__(tmp, POLICY, ("app", "api"), hcm={"delayed_close_timeout": DELAYED_CLOSE})
        self.app, self.api = self.backends["app"], self.backends["api"]
        self.ports = {plane: {listener: self.listener_ports[plane, listener] for listener in ("inbound", "outbound")}
                      for plane in ("envoy", "native")}

    def received(self) -> list[dict]:
        """What the upstreams received since the last call (and forget it)."""
        out = []
        for b in (self.app, self.api):
            with b.lock:
                out += b.requests
                b.requests = []
        return out

    def send(self, plane: str, listener: str, pieces: list[bytes], timeout: float = 3.0, idle: float = IDLE) -> Answer:
        self.received()
        answer = exchange(self.ports[plane][listener], pieces, timeout, idle)
        time.sleep(0.05)            # anything forwarded has reached its backend by now
        answer.forwarded = self.received()
        return answer


class Answer:
    def __init__(self, data: bytes, closed: bool, elapsed: float):
        self.data = data
        self.closed = closed        # the proxy closed the connection (else the read timed out)
        self.elapsed = elapsed
        self.forwarded: list[dict] = []

    @property
    def statuses(self) -> list[int]:
        return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", self.data)]

    @property
    def status(self) -> int:
        return self.statuses[0] if self.statuses else 0

    def __repr__(self) -> str:
        return f"Answer({self.data[:300]!r}, closed={self.closed}, forwarded={self.forwarded})"


def exchange(port: int, pieces: list[bytes], timeout: float, idle: float = IDLE) -> Answer:
    """Send `pieces` (a short pause between them) and read until the proxy closes or `timeout`;
    an answer without `connection: close` is over once nothing more comes for `idle` seconds."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = b""
    closed = False
    try:
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(0.1)
            s.sendall(piece)
        s.settimeout(max(0.1, timeout - (time.monotonic() - t0)))
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            out += chunk
            if b"\r\n\r\n" in out and b"connection: close" not in out:
                s.settimeout(idle)
            else:
                s.settimeout(max(0.1, timeout - (time.monotonic() - t0)))
    except (TimeoutError, ConnectionResetError):
        pass
    finally:
        s.close()
    return Answer(out, closed, time.monotonic() - t0)


@pytest.fixture(scope="module")
def planes(tmp_path_factory):
    p = Planes(tmp_path_factory.mktemp("edge"))
    yield p
    p.close()


def post(te_lines: list[bytes], extra: bytes = b"", body: bytes = b"3\r\nabc\r\n0\r\n\r\n") -> bytes:
    head = b"".join(b"Transfer-Encoding: " + v + b"\r\n" for v in te_lines)
    return b"POST /p HTTP/1.1\r\nHost: api\r\n" + head + extra + b"\r\n" + body


# name -> (listener, request bytes, envoy's status, native's status, did the upstream get it)
# (both planes: the same status and the same forwarding unless the two statuses differ)
CASES = {
    # point 1: more than one Host line (RFC 9112 3.2: 400). Envoy joins them (`api,evil` reaches
    # the app on inbound; no service is called that on outbound: 404); the native proxy refuses.
    "two Host lines, inbound": ("inbound", b"GET /p HTTP/1.1\r\nHost: api\r\nHost: evil\r\n\r\n", 200, 400),
    "two Host lines, outbound": ("outbound", b"GET /p HTTP/1.1\r\nHost: api\r\nHost: api\r\n\r\n", 404, 400),
    "Host and an empty Host": ("inbound", b"GET /p HTTP/1.1\r\nHost: api\r\nhost: \r\n\r\n", 200, 400),
    # point 2: Envoy implements the coding `chunked` alone: 501 for any other list
    "TE gzip, chunked": ("inbound", post([b"gzip, chunked"]), 501, 501),
    "TE cow, chunked": ("inbound", post([b"cow, chunked"]), 501, 501),
    "TE identity, chunked": ("inbound", post([b"identity, chunked"]), 501, 501),
    "TE ,chunked": ("inbound", post([b",chunked"]), 501, 501),
    "TE lines cow + chunked": ("inbound", post([b"cow", b"chunked"]), 501, 501),
    "TE lines chunked + chunked": ("inbound", post([b"chunked", b"chunked"]), 501, 501),
    "TE chunked, gzip": ("inbound", post([b"chunked, gzip"]), 501, 501),
    "TE chunked, chunked": ("inbound", post([b"chunked, chunked"]), 501, 501),
    "TE chunked,": ("inbound", post([b"chunked,"]), 501, 501),
    "TE identity": ("inbound", post([b"identity"]), 501, 501),
    "TE gzip, outbound": ("outbound", post([b"gzip, chunked"]), 501, 501),
    "TE empty": ("inbound", post([b""], body=b""), 501, 501),
    "TE Chunked (case)": ("inbound", post([b"Chunked"]), 200, 200),
    "TE gzip with Content-Length": ("inbound", post([b"gzip"], b"Content-Length: 3\r\n", b"abc"), 400, 400),
    # point 4: HTTP/0.9 and versions other than 1.1: 426, and close
    "HTTP/0.9 line": ("inbound", b"GET /p\r\n", 426, 426),
    "HTTP/0.9 line, LF": ("inbound", b"GET /p\n", 426, 426),
    "HTTP/0.9 line, outbound": ("outbound", b"GET /p\r\n", 426, 426),
    "HTTP/0.9 line and headers": ("inbound", b"GET /p\r\nHost: api\r\n\r\n", 426, 426),
    "HTTP/0.9 explicit": ("inbound", b"GET /p HTTP/0.9\r\nHost: api\r\n\r\n", 426, 426),
    "HTTP/1.0": ("inbound", b"GET /p HTTP/1.0\r\nHost: api\r\n\r\n", 426, 426),
    "HTTP/1.2": ("inbound", b"GET /p HTTP/1.2\r\nHost: api\r\n\r\n", 426, 426),
    "HTTP/2.0": ("inbound", b"GET /p HTTP/2.0\r\nHost: api\r\n\r\n", 426, 426),
    # point 5: Host values with bytes an authority cannot have: 400 on both listeners
    "Host with a space": ("inbound", b"GET /p HTTP/1.1\r\nHost: api evil\r\n\r\n", 400, 400),
    "Host with a slash": ("inbound", b"GET /p HTTP/1.1\r\nHost: api/admin\r\n\r\n", 400, 400),
    "Host with a space, outbound": ("outbound", b"GET /p HTTP/1.1\r\nHost: api evil\r\n\r\n", 400, 400),
    "Host with a slash, outbound": ("outbound", b"GET /p HTTP/1.1\r\nHost: api/admin\r\n\r\n", 400, 400),
    "Host with ?": ("inbound", b"GET /p HTTP/1.1\r\nHost: api?x\r\n\r\n", 400, 400),
    "Host with #": ("inbound", b"GET /p HTTP/1.1\r\nHost: api#x\r\n\r\n", 400, 400),
    "Host with a backslash": ("inbound", b"GET /p HTTP/1.1\r\nHost: api\\x\r\n\r\n", 400, 400),
    "Host with a quote": ("inbound", b"GET /p HTTP/1.1\r\nHost: a\"pi\r\n\r\n", 400, 400),
    "Host with a tab": ("inbound", b"GET /p HTTP/1.1\r\nHost: api\tx\r\n\r\n", 400, 400),
    "Host with UTF-8": ("inbound", b"GET /p HTTP/1.1\r\nHost: api\xc3\xa9\r\n\r\n", 400, 400),
    # ... and the authority characters both accept
    "Host with sub-delims": ("inbound", b"GET /p HTTP/1.1\r\nHost: a_p-i.~!$&'()*+,;=\r\n\r\n", 200, 200),
    "Host with @, % and two ports": ("inbound", b"GET /p HTTP/1.1\r\nHost: a@p%41i:80:90\r\n\r\n", 200, 200),
    "Host IPv6": ("inbound", b"GET /p HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 200, 200),
    "Host empty": ("inbound", b"GET /p HTTP/1.1\r\nHost: \r\n\r\n", 200, 200),
    # point 5: absolute form without a path, asterisk form
    "absolute, query, no path": ("inbound", b"GET http://api?x=1 HTTP/1.1\r\nHost: api\r\n\r\n", 404, 404),
    "absolute, query, no path, outbound": ("outbound", b"GET http://api?x=1 HTTP/1.1\r\nHost: api\r\n\r\n",
                                           404, 404),
    "absolute, query, no path, body": ("outbound", b"POST http://api?x=1 HTTP/1.1\r\nHost: api\r\n"
                                                   b"Content-Length: 3\r\n\r\nabc", 404, 404),
    "absolute, no path": ("outbound", b"GET http://api HTTP/1.1\r\nHost: other\r\n\r\n", 200, 200),
    "absolute, two ports": ("outbound", b"GET http://api:80:90/ HTTP/1.1\r\nHost: api\r\n\r\n", 400, 400),
    "absolute, empty port": ("outbound", b"GET http://api:/ HTTP/1.1\r\nHost: api\r\n\r\n", 400, 400),
    "absolute, bad port": ("outbound", b"GET http://api:x/ HTTP/1.1\r\nHost: api\r\n\r\n", 400, 400),
    "absolute, quote in the host": ("outbound", b"GET http://a\"pi/ HTTP/1.1\r\nHost: api\r\n\r\n", 400, 400),
    "OPTIONS *": ("inbound", b"OPTIONS * HTTP/1.1\r\nHost: api\r\n\r\n", 404, 404),
    "OPTIONS *, outbound": ("outbound", b"OPTIONS * HTTP/1.1\r\nHost: api\r\n\r\n", 404, 404),
    "OPTIONS *, unknown host": ("outbound", b"OPTIONS * HTTP/1.1\r\nHost: nosuch\r\n\r\n", 404, 404),
    "GET *": ("inbound", b"GET * HTTP/1.1\r\nHost: api\r\n\r\n", 400, 400),
    # ... Envoy's connection manager answers a path not starting with `/` before any filter: a
    # deny rule that holds is not reached
    "OPTIONS *, deny rule holds": ("inbound", b"OPTIONS * HTTP/1.1\r\nHost: api\r\nx-deny: 1\r\n\r\n", 404, 404),
    "absolute, query, no path, deny rule holds": ("inbound", b"GET http://api?x=1 HTTP/1.1\r\nHost: api\r\n"
                                                             b"x-deny: 1\r\n\r\n", 404, 404),
    "denied": ("inbound", b"GET /p HTTP/1.1\r\nHost: api\r\nx-deny: 1\r\n\r\n", 403, 403),
}


@requires_envoy
@pytest.mark.parametrize("name", list(CASES))
def test_edge_case_as_semantics_says(planes, name):
    listener, data, envoy_status, native_status = CASES[name]
    expected = {"envoy": envoy_status, "native": native_status}
    for plane in PLANES:
        answer = planes.send(plane, listener, [data], idle=FIRST_HEAD_IDLE)
        assert answer.status == expected[plane], (plane, answer)
        # the upstream got the request exactly when the answer is the upstream's 200
        assert bool(answer.forwarded) == (expected[plane] == 200), (plane, answer)
        if expected[plane] >= 400 and expected[plane] not in (403, 404):   # a refused head closes the connection
            assert answer.closed and b"connection: close" in answer.data, (plane, answer)


@requires_envoy
def test_repeated_host_reaches_the_app_joined_by_envoy_and_never_from_native(planes):
    """The difference docs/semantics.md states: Envoy forwards `host: api,evil`, the native proxy
    answers 400 and the application gets nothing."""
    data = b"GET /p HTTP/1.1\r\nHost: api\r\nHost: evil\r\n\r\n"
    envoy = planes.send("envoy", "inbound", [data])
    assert [h for h in envoy.forwarded[0]["headers"] if h[0] == "host"] == [("host", "api,evil")]
    native = planes.send("native", "inbound", [data])
    assert native.status == 400 and native.forwarded == [] and native.data.endswith(b"Bad Request")


@requires_envoy
@pytest.mark.parametrize("pieces", [
    [b"GET /p\r\n"],
    [b"GET /p", b"\r\n"],                  # the line end in a read of its own
    [b"GE", b"T /p\r\n"],
    [b"GET /p\r\nHost: api\r\n"],          # header lines after it, the head unfinished
], ids=["one read", "line end apart", "method apart", "headers unfinished"])
def test_http09_line_is_answered_at_once(planes, pieces):
    """Point 4: a request line without a version was left waiting for header lines until the
    idle timeout (1 h); both planes answer 426 and close at once."""
    for plane in PLANES:
        answer = planes.send(plane, "inbound", pieces, timeout=5.0)
        assert answer.statuses == [426] and answer.closed, (plane, answer)
        assert answer.elapsed < 3.0, (plane, answer)       # Envoy closes after its delayed close (DELAYED_CLOSE)
        assert answer.forwarded == []


@requires_envoy
def test_http09_line_after_pipelined_requests_is_answered_in_order(planes):
    data = (b"GET /p HTTP/1.1\r\nHost: api\r\n\r\nGET /q HTTP/1.1\r\nHost: api\r\n\r\nGET /r\r\n")
    for plane in PLANES:
        answer = planes.send(plane, "inbound", [data], timeout=5.0)
        assert answer.statuses == [200, 200, 426] and answer.closed, (plane, answer)
        assert [r["target"] for r in answer.forwarded] == ["/p", "/q"], (plane, answer)


@requires_envoy
def test_http11_request_line_split_is_not_taken_for_http09(planes):
    """The recognition of HTTP/0.9 lines must not catch a request line split across reads."""
    for pieces in ([b"GET /p HTTP/1.1", b"\r\nHost: api\r\n\r\n"], [b"GET /p", b" HTTP/1.1\r\n", b"Host: api\r\n\r\n"],
                   [b"GET /p HTTP/1.1\r\n", b"Host: api\r\n\r\n"]):
        for plane in PLANES:
            answer = planes.send(plane, "inbound", pieces, timeout=1.5)
            assert answer.statuses == [200], (plane, pieces, answer)


# ---- point 6: memory under a flood of oversized heads ---------------------------------------------

FLOOD_CLIENTS = 16
# 16,000 heads by default (about 3 s), 32,000 with MESHC_EQUIVALENCE=nightly: a refused head kept
# alive by the 1 s linger makes the RSS grow with the heads of the last second, which the flood
# reaches within its first second either way.
FLOOD_PER_CLIENT = 2000 if os.environ.get("MESHC_EQUIVALENCE") == "nightly" else 1000
# RSS growth allowed over the flood. Measured (2 cores, 32,000 heads of 98 KB): 31 -> 37 MB with
# the fix; 31 -> 294 MB after only 4,800 heads before it (every refused head stayed referenced by
# its connection's 1 s linger timer). 40 MB leaves room for allocator noise and a slower machine.
FLOOD_RSS_GROWTH_MB = 40


def rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the RSS from /proc")
def test_oversized_head_flood_keeps_rss_bounded(tmp_path):
    backend = Backend("a")
    cfg = config([service("svc", [subset("v1", [backend.port], "svc")], [route("all", to=("svc", "v1"))])],
                 app_port=backend.port)          # the default limit: 60 KiB of request headers
    head = b"GET /a HTTP/1.1\r\nHost: svc\r\nX-Big: " + b"v" * 98_000 + b"\r\n\r\n"
    try:
        with run_proxy(cfg, tmp_path) as proxy:
            pid = proxy.proc.pid
            for _ in range(20):                 # the usual request path first, so its memory counts in `before`
                exchange(proxy.outbound, [b"GET /a HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n"], 5.0)
            before = rss_mb(pid)
            statuses: list[bytes] = []
            peak = [before]

            def client() -> None:
                for _ in range(FLOOD_PER_CLIENT):
                    s = socket.create_connection(("127.0.0.1", proxy.outbound), timeout=10)
                    try:
                        s.sendall(head)
                        statuses.append(s.recv(64)[9:12])
                    except OSError as err:      # a reset after the answer: counted as what it is
                        statuses.append(type(err).__name__.encode())
                    finally:
                        s.close()

            threads = [threading.Thread(target=client) for _ in range(FLOOD_CLIENTS)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                peak[0] = max(peak[0], rss_mb(pid))
                time.sleep(0.1)
            for t in threads:
                t.join()
            after = rss_mb(pid)
            assert statuses.count(b"431") == FLOOD_CLIENTS * FLOOD_PER_CLIENT, set(statuses)
            assert max(peak[0], after) - before < FLOOD_RSS_GROWTH_MB, (before, peak[0], after)
            ok = exchange(proxy.outbound, [b"GET /a HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n"], 5.0)
            assert ok.status == 200, ok        # and it still serves
    finally:
        backend.stop()
