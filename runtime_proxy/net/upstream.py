"""Upstream connections: one HTTP/1.1 client protocol per connection, and a pool per endpoint.

Callback style on purpose (asyncio.Protocol, no coroutines on the per-request path): a request
is a `user` object (net/exchange.py's Exchange or Mirror; the `User` protocol below) whose methods
the connection calls:

  on_connection(conn)                   a connection is ready for it: write the request
  on_response_head(conn, status)       the head is in conn.lines (the header lines to forward,
                                        formatted, lower-case names) and conn.special (the
                                        (name, value) pairs of http.RESPONSE_SKIP names)
  on_response_body(conn, data)
  on_response_end(conn)                 the connection has already gone back to the pool (or closed)
  on_failure(conn, kind, reason, fresh_retry_ok)
                                        no (complete) response: kind is `connect-failure` or `reset`,
                                        reason Envoy's reset reason; fresh_retry_ok when the
                                        connection was reused from the pool and failed before a
                                        single response byte (informative only)
  on_upstream_write_paused(paused)      the upstream socket's write buffer filled or drained
  on_overflow()                         a connection was free, but the request limit turned it away

A pooled connection keeps reading while idle, so an upstream that closes it is noticed at once
(EOF) and the connection leaves the pool; one that closes it just as it is reused fails the
attempt like any reset, as in Envoy (retried only when the route retries on `reset`).

To an mTLS destination, a connection is made with the sidecar's client context (its certificate,
the mesh CA) and is only "open" once the server's certificate carries exactly the destination's
SPIFFE ID as its URI SAN; a handshake that fails, or another identity, is a connect failure
(`remote connection failure`), as Envoy's SAN matcher makes it. Connections are pooled and kept
alive as plaintext ones are: a handshake costs as much as hundreds of requests on an open one.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING, Literal, NoReturn, Protocol

from httptools import HttpParserError, HttpResponseParser

from runtime_proxy.decide.http import RESPONSE_SKIP
from runtime_proxy.decide.identity import peer_identity
from runtime_proxy.decide.response import RESPONSE_INLINE_BYTES, add_inline_line
from runtime_proxy.net.tls import describe, failure_reason

if TYPE_CHECKING:
    from runtime_proxy.decide.breaker import Breaker
    from runtime_proxy.decide.outlier import OutlierState
    from runtime_proxy.net.metrics import ClusterStats, Metrics

# what a failed TLS handshake raises (a refused TCP connection is not one)
_HANDSHAKE_ERRORS = (ssl.SSLError, ConnectionResetError, ConnectionAbortedError)


class HeadersTooLarge(Exception):
    pass


# ---- who uses a connection (server.py imports this module: these say what is read of its objects) ----

class Client(Protocol):
    """The client side a response is written to (server.Downstream; a mirror's stand-in): it
    gathers writes while `corked`, and sends them as one on `flush`."""
    corked: int
    @property
    def wbuf(self) -> Collection[bytes]: ...
    def flush(self) -> None: ...


class User(Protocol):
    """A request that uses connections (exchange.Exchange, exchange.Mirror): the callbacks above,
    and what tells whether it still waits for one (`_wants`)."""
    @property
    def down(self) -> Client: ...
    @property
    def done(self) -> bool: ...
    @property
    def seq(self) -> int: ...
    @property
    def state(self) -> int: ...
    def on_connection(self, conn: UpstreamConn) -> None: ...
    def on_response_head(self, conn: UpstreamConn, status: int) -> None: ...
    def on_response_body(self, conn: UpstreamConn, data: bytes) -> None: ...
    def on_response_end(self, conn: UpstreamConn) -> None: ...
    def on_failure(self, conn: UpstreamConn | None, kind: str, reason: str, fresh_ok: bool) -> None: ...
    def on_upstream_write_paused(self, paused: bool) -> None: ...
    def on_overflow(self) -> None: ...


class _HasMetrics(Protocol):
    @property
    def metrics(self) -> Metrics: ...


class Cluster(Protocol):
    """The cluster of a pool, as pools and requests use it (server.ClusterState): its breaker
    accounting, outlier detection and statistics."""
    @property
    def name(self) -> str: ...
    @property
    def rt(self) -> _HasMetrics: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def breaker(self) -> Breaker: ...
    @property
    def outlier(self) -> OutlierState | None: ...
    @property
    def stats(self) -> ClusterStats: ...
    def pick(self) -> Pool: ...
    def acquire(self, user: User, pool: Pool, fresh: bool) -> UpstreamConn | Literal[False] | None: ...
    def handoff(self, user: User, conn: UpstreamConn, pending: bool = True) -> None: ...
    def give_back(self, conn: UpstreamConn) -> None: ...
    def cancel_wait(self, user: User, pool: Pool) -> None: ...
    def pending_failed(self, user: User) -> None: ...
    def connection_opened(self, pool: Pool) -> None: ...
    def connection_closed(self, pool: Pool) -> None: ...
    def connect_failed(self, pool: Pool, timeout: bool) -> None: ...
    def client_context(self) -> ssl.SSLContext | None: ...
    def tls_failed(self, pool: Pool, reason: str, detail: str) -> None: ...
    def ejected(self, key: str) -> None: ...


# What UpstreamConn.on_header does with a response header, by its name as received: (lower-case
# name, one of the kinds below). Bounded: names are few; random ones only fill it up to the cap.
_LINE, _SPECIAL, _INLINE, _LENGTH = 0, 1, 2, 3
_NAME_KINDS: dict[bytes, tuple[bytes, int]] = {}
_OWS = (b" ", b"\t")


def _name_kind(name: bytes) -> tuple[bytes, int]:
    ln = name.lower()
    if ln in RESPONSE_SKIP:
        kind = (ln, _SPECIAL)
    elif ln == b"content-length":
        kind = (ln, _LENGTH)
    elif ln in RESPONSE_INLINE_BYTES:
        kind = (ln, _INLINE)
    else:
        kind = (ln, _LINE)
    if len(_NAME_KINDS) < 4096:
        _NAME_KINDS[name] = kind
    return kind


class UpstreamConn(asyncio.BaseProtocol):   # (not asyncio.Protocol: TlsUpstreamConn must not be one)
    __slots__ = ("pool", "transport", "parser", "user", "closed", "got_bytes", "reused", "head_only",
                 "lines", "special", "head_seen", "cur_len", "head_done", "status", "in_body", "close_delimited",
                 "has_length", "idle_since", "max_head", "paused", "inline_seen", "refused", "opened")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made sets it, first
        self.parser = HttpResponseParser(self)
        self.user: User | None = None
        self.closed = False
        self.got_bytes = False
        self.reused = False
        self.head_only = False
        self.lines: list[bytes] = []
        self.special: list[tuple[bytes, bytes]] = []
        self.head_seen = 0       # bytes received while the response head was incomplete
        self.cur_len = 0
        self.head_done = False
        self.has_length = False
        self.status = 0
        self.in_body = False
        self.close_delimited = False
        self.idle_since = 0.0
        self.max_head = pool.max_response_headers
        self.paused = False
        self.inline_seen: dict[bytes, int] | None = None  # Envoy's inline headers seen in this head (set on first use)
        self.refused: str | None = None   # mTLS: why the server was not accepted (its SPIFFE ID is another)
        self.opened = False       # counted as open by the pool (Pool._connected)

    # ---- use by a request ----------------------------------------------------------------------

    def start(self, user: User, head_only: bool) -> None:
        """Give the connection to `user`; the response to a HEAD request has no body."""
        self.user = user
        self.got_bytes = False
        self.head_only = head_only
        self.lines = []
        self.special = []
        self.head_seen = 0
        self.head_done = False
        self.in_body = False
        self.close_delimited = False
        self.has_length = False
        self.inline_seen = None

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def abandon(self) -> None:
        """The request gave up on this connection (timeout, client gone): close it, no callbacks."""
        self.user = None
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def pause(self) -> None:
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    # ---- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # gets a Transport
        self.transport = transport
        tls = self.pool.tls
        if tls is not None:       # the handshake is done; no request byte goes out before this check
            sslobj = transport.get_extra_info("ssl_object")
            found = peer_identity(sslobj.getpeercert()) if sslobj is not None else None
            if found != tls[1]:
                self.refused = f"the server is `{found}`, expected `{tls[1]}`"
                self.closed = True
                transport.abort()

    def data_received(self, data: bytes) -> None:
        user = self.user
        if user is None:  # bytes on an idle connection: nothing can follow them sensibly
            self.closed = True
            self.transport.abort()
            return
        self.got_bytes = True
        self.cur_len = len(data)
        down = user.down        # writes to the client are gathered into one (see Downstream.write)
        down.corked += 1
        try:
            self.parser.feed_data(data)
            # (`self.user is user`: a response that ended in this read may have handed the
            # connection to a waiting request, whose head none of these bytes belong to)
            if not self.head_done and self.user is user:
                self.head_seen += self.cur_len
                if self.head_seen > self.max_head:   # a head that goes on and on
                    raise HeadersTooLarge()
        except (HttpParserError, HeadersTooLarge) as err:
            failed = self.user
            if failed is not None:
                self.user = None
                self.closed = True
                self.transport.abort()
                too_large = isinstance(err, HeadersTooLarge) or isinstance(err.__context__, HeadersTooLarge)
                failed.on_failure(self, "reset", "headers too large" if too_large else "protocol error", False)
        finally:
            down.corked -= 1
            if not down.corked and down.wbuf:
                down.flush()

    def eof_received(self) -> bool:
        user = self.user
        if user is not None and self.close_delimited and self.in_body:
            self.user = None
            self.closed = True
            user.on_response_end(self)   # the body ran to the end of the connection
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened:       # lost before the pool counted it: Pool._connected fails it
            return
        self.pool.lost(self)
        user = self.user
        if user is None:
            return
        self.user = None
        if self.close_delimited and self.in_body:
            user.on_response_end(self)
            return
        reason = "connection termination"
        if self.in_body:
            reason = "connection termination (response body)"
        user.on_failure(self, "reset", reason, self.reused and not self.got_bytes)

    def pause_writing(self) -> None:
        user = self.user
        if user is not None:
            user.on_upstream_write_paused(True)

    def resume_writing(self) -> None:
        user = self.user
        if user is not None:
            user.on_upstream_write_paused(False)

    # ---- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:        # trailers are not forwarded
            return
        kind = _NAME_KINDS.get(name)
        if kind is None:
            kind = _name_kind(name)
        ln, k = kind
        if value[-1:] in _OWS:    # Envoy's codec trims values (llhttp keeps trailing blanks)
            value = value.rstrip(b" \t")
        if k == _LINE:            # formatted here: the client gets these lines as they are
            self.lines.append(b"%s: %s\r\n" % (ln, value))
        elif k == _SPECIAL:
            self.special.append((ln, value))
        elif k == _INLINE:
            self.inline_seen = add_inline_line(self.lines, self.inline_seen, ln, value)
        else:                     # content-length
            self.has_length = True
            self.lines.append(b"%s: %s\r\n" % (ln, value))

    def on_headers_complete(self) -> None:
        if self.head_seen + self.cur_len > self.max_head:   # could be over: count exactly
            size = sum(len(x) for x in self.lines) + sum(len(n) + len(v) + 4 for n, v in self.special)
            if size > self.max_head:
                raise HeadersTooLarge()
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            self.status = 0   # 1xx informational: the real response follows
            self.lines = []
            self.special = []
            self.inline_seen = None
            self.has_length = False
            return
        self.head_done = True
        self.status = status
        user = self.user
        if self.head_only or status == 204 or status == 304:
            self.in_body = False
        else:
            self.in_body = True
            framed = self.has_length
            if not framed:
                for name, _ in self.special:
                    if name == b"transfer-encoding":
                        framed = True
            self.close_delimited = not framed
        if user is not None:
            user.on_response_head(self, status)
        if self.head_only and self.user is not None:
            # httptools cannot be told that a HEAD response has no body: finish it here, and do not
            # reuse the connection (its parser still expects the body the headers announce)
            self._finish(False)

    def on_body(self, body: bytes) -> None:
        user = self.user
        if user is not None:
            user.on_response_body(self, body)

    def on_message_complete(self) -> None:
        if self.status == 0 or self.user is None:
            return   # the end of a 1xx, or of a response already finished (HEAD)
        self._finish(self.parser.should_keep_alive())

    def _finish(self, keep_alive: bool) -> None:
        user = self.user
        self.user = None
        self.in_body = False
        if keep_alive and not self.close_delimited:
            # the request's `requests` unit goes first, so that a request waiting for this
            # connection (pending) can take it over, as when Envoy closes a stream
            end_attempt = getattr(user, "end_attempt", None)
            if end_attempt is not None:
                end_attempt()
            self.pool.release(self)
        else:
            self.closed = True
            self.transport.close()
        user.on_response_end(self)  # type: ignore[union-attr]  # not None: both callers checked self.user


# Where the event loop's TLS layer decrypts a read for a TLS connection, client or upstream side
# (TlsReads): one buffer for all of them, copied out at once. Without it uvloop decrypts each read
# into a new 256 KiB bytes object: an mmap, an mremap and a munmap per read. (uvloop reads into the
# buffer only for a protocol with get_buffer that is not an asyncio.Protocol: neither
# net/server.py's Downstream nor UpstreamConn is one.)
_TLS_READ_BUFFER = memoryview(bytearray(64 * 1024))


class TlsReads(asyncio.BufferedProtocol):
    """The reads of a TLS connection (server.TlsDownstream, TlsUpstreamConn): decrypted into the
    shared buffer, copied out, and handled by the protocol's own data_received."""
    __slots__ = ()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _TLS_READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_TLS_READ_BUFFER[:nbytes].tobytes())  # type: ignore[attr-defined]


class TlsUpstreamConn(UpstreamConn, TlsReads):
    """An upstream connection over mTLS: an UpstreamConn whose reads are TlsReads."""
    __slots__ = ()


def _wants(dedicated: tuple[User, int]) -> bool:
    """Whether the user a connection was opened for still waits for it (the same attempt)."""
    user, seq = dedicated
    return not user.done and user.seq == seq and user.state == 1   # exchange.WAITING


class Pool:
    """The connections of one cluster to one endpoint. Breaker accounting (connections, pending
    requests) belongs to the cluster (runtime_proxy/net/server.py's ClusterState); the pool asks it."""

    __slots__ = ("cluster", "host", "port", "idle", "waiters", "connecting", "active", "loop",
                 "connect_timeout", "max_response_headers", "retired", "key", "tls")

    def __init__(self, cluster: Cluster, host: str, port: int, loop: asyncio.AbstractEventLoop, connect_timeout: float,
                 max_response_headers: int, tls: tuple[str, str] | None = None) -> None:
        self.cluster = cluster
        self.host = host
        self.port = port
        self.key = f"{host}:{port}"
        self.idle: list[UpstreamConn] = []
        self.waiters: deque[User] = deque()
        self.connecting = 0
        self.active = 0            # open connections (connecting ones not included)
        self.loop = loop
        self.connect_timeout = connect_timeout
        self.max_response_headers = max_response_headers
        self.retired = False
        self.tls = tls             # None, or (server name, the destination's SPIFFE ID) for mTLS

    def take_idle(self) -> UpstreamConn | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    def release(self, conn: UpstreamConn) -> None:
        """A connection finished a response and may be reused."""
        if self.retired or conn.closed:
            conn.closed = True
            conn.transport.close()
            return
        if conn.paused:
            conn.paused = False
            conn.transport.resume_reading()   # an idle connection must read, to notice a close
        waiters = self.waiters
        if waiters:
            user = waiters.popleft()
            conn.reused = True
            self.cluster.handoff(user, conn)
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def lost(self, conn: UpstreamConn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        self.active -= 1
        self.cluster.connection_closed(self)

    def connect(self, dedicated: tuple[User, int] | None = None) -> None:
        """Open one connection; it goes to `dedicated` (user, attempt sequence number) when given
        and that attempt still waits, else to the first waiter."""
        self.connecting += 1
        loop = self.loop
        tls = self.tls
        conn = UpstreamConn(self) if tls is None else TlsUpstreamConn(self)
        if tls is None:
            task = loop.create_task(loop.create_connection(lambda: conn, self.host, self.port))
        elif (ctx := self.cluster.client_context()) is None:   # never plaintext to an mTLS destination
            task = loop.create_task(_fail(ConnectionRefusedError("no identity files for mTLS")))
        else:             # the connect timeout covers the handshake too, as Envoy's does
            task = loop.create_task(loop.create_connection(
                lambda: conn, self.host, self.port, ssl=ctx,
                server_hostname=tls[0] or "", ssl_handshake_timeout=self.connect_timeout))
        timer = loop.call_later(self.connect_timeout, task.cancel)
        task.add_done_callback(lambda t: self._connected(t, conn, timer, dedicated))

    def _connected(self, task: asyncio.Task[object], conn: UpstreamConn, timer: asyncio.TimerHandle,
                   dedicated: tuple[User, int] | None) -> None:
        timer.cancel()
        self.connecting -= 1
        cluster = self.cluster
        if task.cancelled():
            reason, timeout = "connection timeout", True
        else:
            err = task.exception()
            if err is None and conn.refused is not None:
                cluster.tls_failed(self, "san_mismatch", conn.refused)
                err = ConnectionRefusedError(conn.refused)
            elif err is not None and self.tls is not None and isinstance(err, _HANDSHAKE_ERRORS):
                cluster.tls_failed(self, failure_reason(err), describe(err))
            elif err is None and self.tls is not None:
                cluster.rt.metrics.tls.cluster_handshake(cluster.name)  # type: ignore[union-attr]  # mTLS: TLS stats exist
            if err is None and conn.closed:   # closed by the server before it could be used
                err = ConnectionResetError("closed while connecting")
            if err is None:
                conn.opened = True
                self.active += 1
                cluster.connection_opened(self)
                conn.reused = False
                if dedicated is not None and _wants(dedicated):
                    cluster.handoff(dedicated[0], conn, pending=False)
                elif self.waiters:
                    cluster.handoff(self.waiters.popleft(), conn)
                else:
                    conn.idle_since = self.loop.time()
                    self.idle.append(conn)
                return
            timeout = isinstance(err, (TimeoutError, asyncio.TimeoutError)) or \
                getattr(err, "errno", None) == errno.ETIMEDOUT
            reason = "connection timeout" if timeout else "remote connection failure"
        cluster.connect_failed(self, timeout)
        if dedicated is not None:
            if _wants(dedicated):
                dedicated[0].on_failure(None, "connect-failure", reason, False)
            return
        # fail the waiters that no connection still being opened will serve
        waiters = self.waiters
        while len(waiters) > self.connecting:
            user = waiters.pop()
            cluster.pending_failed(user)
            user.on_failure(None, "connect-failure", reason, False)

    def cancel_waiter(self, user: User) -> bool:
        try:
            self.waiters.remove(user)
        except ValueError:
            return False
        return True

    def close_idle(self, older_than: float | None = None) -> None:
        now = self.loop.time()
        keep: list[UpstreamConn] = []
        for conn in self.idle:
            if older_than is None or now - conn.idle_since > older_than:
                conn.closed = True
                conn.transport.close()
            else:
                keep.append(conn)
        self.idle = keep


async def _fail(err: BaseException) -> NoReturn:
    raise err
