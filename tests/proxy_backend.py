"""A loopback HTTP/1.1 backend for the proxy tests: real sockets, keep-alive, TCP_NODELAY.

Each server runs on its own thread with its own event loop and answers every request with a
JSON echo: `{"backend", "method", "target", "headers": [[name, value], ...], "body_len", "hit",
"conn"}`. The request controls the answer through headers (they pass the proxy unchanged):

  x-test-status: N          answer with status N
  x-test-delay-ms: N        wait N ms before answering
  x-test-reset: 1           close the connection without answering (after a delay, if any)
  x-test-fail-on: NAME      status 500 only on the backend called NAME (others answer 200)
  x-test-body-size: N       a body of N bytes ("x" repeated) instead of the echo
  x-test-chunked: 1         send the body chunked, in pieces of at most 1000 bytes
  x-test-big-header: N      add a response header `x-big` of N bytes
  x-test-id: ID and         the failure headers above (status, delay, reset, fail-on) apply only
  x-test-fail-first: N      to the first N attempts carrying this ID, counted across every
                            Backend of the process; later attempts answer 200 at once. Mirror
                            copies (a `-shadow` Host) are neither counted nor failed.

The test thread reads `requests` (every request received, in arrival order, with its body and
its arrival time `t`, a time.monotonic()) and
can change behaviour: `drop_reused` closes a connection, without answering, when a second request
arrives on it (an upstream that closed a keep-alive connection as the proxy reused it), and
`close_idle()` closes every idle keep-alive connection from the server side.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter

import httptools

# Attempts seen per `x-test-id`, across every Backend of the process (a retry may reach another
# endpoint of the subset).
_ATTEMPTS: Counter = Counter()
_ATTEMPTS_LOCK = threading.Lock()
_FAILURE_HEADERS = ("x-test-status", "x-test-delay-ms", "x-test-reset", "x-test-fail-on")


def _apply_fail_first(h: dict) -> dict:
    """The request's control headers for this attempt: without the failure ones once the first
    `x-test-fail-first` attempts of its `x-test-id` have been served."""
    if "x-test-fail-first" not in h or "x-test-id" not in h:
        return h
    if "-shadow" in h.get("host", ""):
        return {k: v for k, v in h.items() if k not in _FAILURE_HEADERS}
    with _ATTEMPTS_LOCK:
        _ATTEMPTS[h["x-test-id"]] += 1
        n = _ATTEMPTS[h["x-test-id"]]
    if n <= int(h["x-test-fail-first"]):
        return h
    return {k: v for k, v in h.items() if k not in _FAILURE_HEADERS}


class _Conn(asyncio.Protocol):
    def __init__(self, server: Backend):
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.served = 0
        self.busy = False
        self.id = 0

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.conn_seq += 1
        self.id = self.server.conn_seq
        self.server.conns.add(self)

    def connection_lost(self, exc):
        self.server.conns.discard(self)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.server.parse_errors += 1
            self.transport.close()

    def on_message_begin(self):
        self.headers = []
        self.target = b""
        self.body = []
        self.busy = True

    def on_url(self, url):
        self.target += url

    def on_header(self, name, value):
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        server = self.server
        self.served += 1
        body = b"".join(self.body)
        record = {"backend": server.name, "method": self.parser.get_method().decode(),
                  "target": self.target.decode("latin-1"), "headers": self.headers,
                  "body_len": len(body), "conn": self.id}
        with server.lock:
            server.hits += 1
            record["hit"] = server.hits
            server.requests.append(dict(record, body=body, t=time.monotonic()))
        if server.drop_reused and self.served > 1:
            self.transport.close()
            return
        h = _apply_fail_first(dict(self.headers))
        delay = int(h.get("x-test-delay-ms", "0")) / 1000
        if delay:
            asyncio.get_running_loop().call_later(delay, self._answer, h, record)
        else:
            self._answer(h, record)

    def _answer(self, h, record):
        if self.transport.is_closing():
            return
        if h.get("x-test-reset"):
            self.transport.close()
            return
        status = int(h.get("x-test-status", "200"))
        if "x-test-fail-on" in h:
            status = 500 if h["x-test-fail-on"] == self.server.name else 200
        if "x-test-body-size" in h:
            body = b"x" * int(h["x-test-body-size"])
            ctype = b"text/plain"
        else:
            body = json.dumps(record).encode()
            ctype = b"application/json"
        head = [b"HTTP/1.1 %d X\r\nx-backend: %s\r\ncontent-type: %s\r\n" % (
            status, self.server.name.encode(), ctype)]
        if self.server.close_after_response:
            head.append(b"connection: close\r\n")
        if "x-test-big-header" in h:
            head.append(b"x-big: " + b"y" * int(h["x-test-big-header"]) + b"\r\n")
        if h.get("x-test-chunked"):
            head.append(b"transfer-encoding: chunked\r\n\r\n")
            self.transport.write(b"".join(head))
            for i in range(0, len(body), 1000):
                piece = body[i:i + 1000]
                self.transport.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.transport.write(b"0\r\n\r\n")
        else:
            head.append(b"content-length: %d\r\n\r\n" % len(body))
            self.transport.write(b"".join(head) + (b"" if record["method"] == "HEAD" else body))
        self.busy = False
        if self.server.close_after_response:
            self.transport.close()


class Backend:
    """One HTTP server on 127.0.0.1 (port 0: any free port) on its own thread."""

    def __init__(self, name: str, port: int = 0):
        self.name = name
        self.requests: list[dict] = []
        self.hits = 0
        self.parse_errors = 0
        self.conn_seq = 0
        self.conns: set[_Conn] = set()
        self.drop_reused = False
        self.close_after_response = False
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start():
            self.server = await self.loop.create_server(lambda: _Conn(self), "127.0.0.1", port)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.thread = threading.Thread(target=self._run, args=(start,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, start):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.hits = 0
            self.parse_errors = 0
        self.drop_reused = False
        self.close_after_response = False

    def close_idle(self) -> int:
        """Close every keep-alive connection that has no request in progress; the count closed."""
        done = threading.Event()
        count = [0]

        def run():
            for conn in list(self.conns):
                if not conn.busy:
                    conn.transport.close()
                    count[0] += 1
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(5)
        return count[0]

    def stop(self) -> None:
        def run():
            self.server.close()
            for conn in list(self.conns):
                conn.transport.abort()
            self.loop.stop()

        self.loop.call_soon_threadsafe(run)
        self.thread.join(5)
