"""The native proxy's limits on its clients, with real sockets (docs/native-proxy.md, issue 18):
the header-count limit (counted while the head is read, so a flood of header lines is refused
before its end), and the connection cap under a low limit on open files (lowered to what the
descriptors allow, so the connections held keep working and a client beyond the cap is closed at
once instead of hanging in the listen queue). The same limits
through both planes are in tests/test_equivalence_scenarios.py, section 9."""

from __future__ import annotations

import socket
import time

import pytest
from proxy_backend import Backend
from proxy_harness import config, raw_exchange, route, run_proxy, service, start_proxy, subset, write_config


@pytest.fixture(scope="module")
def backend():
    b = Backend("a")
    yield b
    b.stop()


def cfg(backend, **proxy):
    return config([service("svc", [subset("v1", [backend.port], "svc")], [route("all", to=("svc", "v1"))])],
                  app_port=backend.port, proxy=proxy)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


def head(lines: int) -> bytes:
    """A request head with `lines` header lines in all (Host first)."""
    return b"GET /a HTTP/1.1\r\nHost: svc\r\n" + b"".join(b"x-%d: v\r\n" % i for i in range(lines - 1)) + b"\r\n"


def test_default_header_count_limit_is_envoys_100(backend, tmp_path):
    with run_proxy(cfg(backend), tmp_path) as proxy:
        at_limit = head(100).replace(b"x-0: v", b"Connection: close", 1)   # still 100 lines
        assert status_of(raw_exchange(proxy.outbound, at_limit)) == 200
        out = raw_exchange(proxy.outbound, head(101))
        assert status_of(out) == 431 and out.endswith(b"Request Header Fields Too Large"), out
        # 5,000 tiny header lines (30 KiB, within the size limit), sent in pieces and never ended:
        # refused as soon as a read leaves more than 100 lines, not buffered to the size limit
        s = socket.create_connection(("127.0.0.1", proxy.outbound), timeout=3)
        s.sendall(b"GET /a HTTP/1.1\r\nHost: svc\r\n")
        answered = b""
        try:
            for i in range(50):
                s.sendall(b"".join(b"x-%d: v\r\n" % (i * 100 + j) for j in range(100)))
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answered = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            pass
        s.close()
        assert status_of(answered) == 431, answered
        assert proxy.stats()["http.outbound.downstream_rq_bad_request"] == 2
    assert backend.hits == 1


def test_connection_cap_is_lowered_to_what_the_file_limit_allows(backend, tmp_path):
    """With RLIMIT_NOFILE at 150 (soft) and 200 (hard), the proxy raises the soft limit to 200 and
    holds at most (200 - 64) / 4 = 34 client connections per listener (4096 configured): the 35th
    is closed at once, the 34 keep working, and a new client is served once one of them closes."""
    path = write_config(tmp_path / "cfg.json", cfg(backend))
    proxy = start_proxy(path, tmp_path, nofile=(150, 200))
    held: list[socket.socket] = []
    try:
        assert "max_connections 4096 per listener lowered to 34" in proxy.log()
        held = [socket.create_connection(("127.0.0.1", proxy.outbound)) for _ in range(34)]
        time.sleep(0.3)
        try:
            over = raw_exchange(proxy.outbound, head(2), timeout=2.0)
        except ConnectionResetError:   # closed with the request unread: a reset, as from Envoy
            over = b""
        assert over == b"", over                                   # closed without an answer
        for sock in held[:3]:
            sock.settimeout(3.0)
            sock.sendall(head(2))
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        held.pop().close()
        time.sleep(0.3)
        again = raw_exchange(proxy.outbound, head(2).replace(b"Host: svc", b"Host: svc\r\nConnection: close"))
        assert status_of(again) == 200, again
        assert proxy.stats()["http.outbound.downstream_cx_overflow"] == 1
    finally:
        for sock in held:
            sock.close()
        proxy.stop()
