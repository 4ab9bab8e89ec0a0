"""The admin listener: readiness, the active config, statistics, and a reload trigger.

  GET  /ready        200 `LIVE` while serving, 503 `DRAINING` after SIGTERM (Envoy's answers)
  GET  /config       the active config as JSON, with its version, file and load time
  GET  /stats        Envoy-style `name: value` lines (`?format=json` for JSON)
  GET  /metrics      Prometheus text (also `/stats/prometheus`, Envoy's path)
  GET  /clusters     JSON: per cluster, its endpoints, breaker counters and ejected endpoints
  GET  /certs        JSON: the mTLS mode and the certificate in use (SPIFFE ID, serial, expiry,
                     files), `certificate` null without identity files
  POST /reload       reload the config file now (as SIGHUP); 200 with the new version, or 400
                     with the reason it was refused

Not on the request hot path, so plain and simple: one request at a time per connection.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

from httptools import HttpParserError, HttpRequestParser

from runtime_proxy.net.wire import status_line

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from runtime_proxy.net.server import Runtime


Answer = tuple[int, bytes, str]   # (status, body, content type)


class AdminApp(Protocol):
    """What the admin listener uses of the proxy (__main__.ProxyApp, which imports this module)."""
    @property
    def rt(self) -> Runtime: ...
    @property
    def config_path(self) -> str: ...
    def admin_request(self, method: str, path: str, query: str) -> Answer | Awaitable[Answer]: ...
    def reload(self, reason: str, done: Callable[[bool, str], None] | None = None) -> None: ...


class AdminProtocol(asyncio.Protocol):
    def __init__(self, app: AdminApp) -> None:
        self.app = app
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made sets it, first
        self.parser = HttpRequestParser(self)
        self.url = b""
        self.pending: asyncio.Future[Answer] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # gets a Transport
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except HttpParserError:
            self.respond(400, b"bad request\n", "text/plain", close=True)

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        target = self.url.decode("latin-1")
        path, _, query = target.partition("?")
        keep = self.parser.should_keep_alive()
        if path == "/reload" and method == "POST":   # answered when the reload is over
            self.app.reload("admin /reload", lambda ok, message: self.respond(
                200 if ok else 400, (message + "\n").encode(), "text/plain", close=not keep))
            return
        try:
            answer = self.app.admin_request(method, path, query)
        except Exception as err:  # an admin bug must not take the proxy down
            answer = 500, f"admin error: {type(err).__name__}: {err}\n".encode(), "text/plain"
        if isinstance(answer, tuple):
            self.respond(*answer, close=not keep)
            return
        # an answer still to come (the supervisor of --workers asks its workers): the loop goes on
        self.pending = asyncio.ensure_future(answer)
        self.pending.add_done_callback(lambda task: self.respond(*self._answered(task), close=not keep))

    @staticmethod
    def _answered(task: asyncio.Future[Answer]) -> Answer:
        try:
            return task.result()
        except Exception as err:  # (as above)
            return 500, f"admin error: {type(err).__name__}: {err}\n".encode(), "text/plain"

    def respond(self, status: int, body: bytes, ctype: str, close: bool = False) -> None:
        if self.transport.is_closing():
            return
        head = (status_line(status) + b"content-type: " + ctype.encode() + b"\r\n"
                + b"content-length: %d\r\n" % len(body) + (b"connection: close\r\n" if close else b"") + b"\r\n")
        self.transport.write(head + body)
        if close:
            self.transport.close()


def handle(app: AdminApp, method: str, path: str, query: str) -> tuple[int, bytes, str]:
    """One admin request: (status, body, content type)."""
    rt = app.rt
    if path == "/ready":
        if rt.draining:
            return 503, b"DRAINING\n", "text/plain"
        return 200, b"LIVE\n", "text/plain"
    # here, after /ready (which a readiness probe asks all the time): a proxy nobody asks for JSON
    # never loads orjson (with its imports, 1.3 MB of RSS)
    import orjson

    if path == "/config":
        cfg = rt.table
        shown = {"version": cfg.version, "service": cfg.service, "file": app.config_path,
                 "loaded_at": round(rt.loaded_at, 3), "config": rt.config_data}
        return 200, orjson.dumps(shown, option=orjson.OPT_INDENT_2) + b"\n", "application/json"
    if path == "/stats":
        items = rt.metrics.stats_items(rt.gauges())
        if "format=json" in query:
            body = orjson.dumps({"stats": [{"name": n, "value": v} for n, v in items]})
            return 200, body, "application/json"
        return 200, "".join(f"{n}: {v}\n" for n, v in items).encode(), "text/plain"
    if path in ("/metrics", "/stats/prometheus"):
        return 200, rt.metrics.prometheus(rt.gauges()).encode(), "text/plain; version=0.0.4"
    if path == "/clusters":
        now = time.monotonic()
        out: dict[str, Any] = {}
        for cluster in list(rt.clusters.values()) + [rt.app_cluster]:
            out[cluster.name] = {
                "endpoints": list(cluster.keys),
                "breaker": cluster.breaker.snapshot(),
                "ejected": cluster.outlier.ejected(now) if cluster.outlier is not None else [],
                "idle_connections": {p.key: len(p.idle) for p in cluster.plist},
            }
        return 200, orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n", "application/json"
    if path == "/certs":
        out = {"mode": rt.table.mtls_mode,
               "certificate": rt.tls.current.info() if rt.tls is not None else None}
        return 200, orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n", "application/json"
    if path == "/reload":
        return 405, b"use POST\n", "text/plain"
    if path == "/":
        return 200, b"/ready /config /stats /metrics /clusters /certs /reload (POST)\n", "text/plain"
    return 404, b"not found\n", "text/plain"
