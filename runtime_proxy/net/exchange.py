"""One request through the proxy, from its parsed headers to the last byte of its response.

An `Exchange` is created by the downstream connection (runtime_proxy/net/server.py) when a
request's headers are complete. It asks the one request decision what to do
(runtime_proxy/decide/request.py: a local reply, or a cluster, a route and the head to send) and
the state decision how (runtime_proxy/decide/upstream.py: the endpoint, retries under the budget),
and does the I/O: timers, random draws, upstream connections.
It is also the upstream connection's `user` (runtime_proxy/net/upstream.py): attempts are strictly
one after the other, so one object serves them all, and `conn is self.conn` tells a live
callback from one of a connection this request has let go.

The request body streams: chunks go to the upstream connection as they arrive, and are also kept
(up to REPLAY_LIMIT bytes, Envoy's default buffer limit) so that a retry or the mirror can send
them again; a larger body turns retries and the mirror off for that request, as in Envoy.

This is the per-request hot path, written for CPython's speed: attributes default on the class
(an instance sets only what differs), headers go upstream as the bytes that came in, and the
route timeout is a timer-wheel slot rather than an event-loop timer.
"""

from __future__ import annotations

import os
import time
from _random import Random as _Random
from bisect import bisect_left as _bisect
from typing import TYPE_CHECKING, Protocol

from runtime_proxy.decide.cors import merge as merge_cors
from runtime_proxy.decide.cors import merge_text
from runtime_proxy.decide.headers import shadow_host
from runtime_proxy.decide.http import BODY_OVERFLOW, BODY_STREAM_IDLE, BODY_TIMEOUT, reset_body
from runtime_proxy.decide.request import RBAC_DENIALS, decide_request
from runtime_proxy.decide.response import local_reply_changes, response_lines
from runtime_proxy.decide.retry import CONNECT_FAILURE, PER_TRY_TIMEOUT, Outcome
from runtime_proxy.decide.upstream import LIMIT, NOT_RETRIABLE, OVERFLOW, UpstreamState, decide_retry
from runtime_proxy.net.metrics import RQ_TIME_BUCKETS
from runtime_proxy.net.timers import TICKS
from runtime_proxy.net.wire import DATE, SERVER, local_reply, status_line

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Mapping

    from runtime_proxy.decide.request import Decision
    from runtime_proxy.decide.table import CMirror, CRoute, HeaderMap, Table
    from runtime_proxy.net.metrics import ListenerStats, Metrics, RouteStats
    from runtime_proxy.net.timers import TimerWheel
    from runtime_proxy.net.tracing import SpanExport
    from runtime_proxy.net.upstream import Cluster, Pool, UpstreamConn

_EMPTY_BODY = b"content-length: 0\r\n"   # a response head's line (net/upstream.py formats them)
REPLAY_LIMIT = 1024 * 1024       # bytes of request body kept for retries and the mirror
UNSENT_HIGH = 256 * 1024         # body bytes waiting for a connection before the client is paused

# The generator itself (random.py's imports would cost every serving proxy 0.4 MB of RSS), seeded
# from os.urandom, and again in each forked worker of --workers N, as random.py's own is.
_generator = _Random()
os.register_at_fork(after_in_child=_generator.seed)
_random = _generator.random
_getrandbits = _generator.getrandbits
_monotonic = time.monotonic
_time_ns = time.time_ns

# attempt states
IDLE, WAITING, SENT, BACKOFF = 0, 1, 2, 3

# x-request-id: a random UUID version 4 (RFC 9562), as Envoy's. The ids are made in batches from
# os.urandom, entirely in C (the version and variant bits set by translating every 16th byte, the
# hex digits placed around the dashes by strided slice assignment), so that a request pays for a
# list.pop(); a batch costs one system call and about 150 ns per id.
RID_BATCH = 512
_RID_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))     # byte 6: 0100xxxx
_RID_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))     # byte 8: 10xxxxxx
# where the 32 hex digits of one id go in its 36 characters (8-4-4-4-12) plus a separating space
_RID_PLACES = tuple(j + (j >= 8) + (j >= 12) + (j >= 16) + (j >= 20) for j in range(32))
_RID_BLANK = b"-" * 36 + b" "


def request_ids(n: int = RID_BATCH) -> list[bytes]:
    """`n` random UUIDv4s in their canonical text form (lower-case hex, 8-4-4-4-12)."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_RID_VERSION)
    raw[8::16] = raw[8::16].translate(_RID_VARIANT)
    digits = raw.hex().encode()
    out = bytearray(_RID_BLANK * n)
    for j, place in enumerate(_RID_PLACES):
        out[place::37] = digits[j::32]
    return bytes(out).split()


_rids: list[bytes] = []
if hasattr(os, "register_at_fork"):       # a forked child never sends the parent's ids again
    os.register_at_fork(after_in_child=_rids.clear)


class RandomDraws:
    """The proxy's random draws for the request decision (decide.request.Draws' methods): each
    drawn when the decision asks for it, so a request pays for the draws it needs only."""
    __slots__ = ()

    def fault_delay(self) -> float:
        return _random()

    def fault_abort(self) -> float:
        return _random()

    def split(self) -> int:
        return _getrandbits(64)

    def mirror(self) -> float:
        return _random()

    def request_id(self) -> bytes:
        try:
            return _rids.pop()
        except IndexError:      # the batch is used up (the try costs nothing in CPython 3.11+)
            _rids[:] = request_ids()
            return _rids.pop()

    def trace_ids(self) -> int:
        return _getrandbits(192)


DRAWS = RandomDraws()


# ---- what a request uses of the proxy (server.py imports this module: these say what is read) ----

class ClientConnection(Protocol):
    """The client connection of a request (server.Downstream)."""
    outbound: bool
    listener: str
    peer_ip: str
    lstats: ListenerStats
    source: str | None           # the peer's verified SPIFFE ID (mTLS)
    xfcc: bytes | None
    paused: int
    corked: int
    wbuf: list[bytes]
    def write(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def abort(self) -> None: ...
    def pause_reading_for(self, reason: str) -> None: ...
    def resume_reading_for(self, reason: str) -> None: ...
    def exchange_done(self, ex: Exchange, aborted: bool) -> None: ...


class RequestLog(Protocol):
    """The access log (server.AccessLog)."""
    def write(self, ex: Exchange) -> None: ...


class ProxyState(Protocol):
    """The proxy's run-time state, as a request reads it (server.Runtime)."""
    loop: asyncio.AbstractEventLoop
    table: Table
    wheel: TimerWheel
    metrics: Metrics
    max_request_body: int
    identity_header: str | None
    inbound_counts: dict[int, int]
    route_counts: dict[CRoute, dict[int, int]]
    route_stats: dict[CRoute, RouteStats]
    @property
    def access_log(self) -> RequestLog | None: ...
    @property
    def tracer(self) -> SpanExport | None: ...
    @property
    def clusters(self) -> Mapping[str, Cluster]: ...
    @property
    def app_cluster(self) -> Cluster: ...
    def inbound_counts_for(self, source: str) -> dict[int, int]: ...


def envoy_flags(flags: str) -> str:
    """`%RESPONSE_FLAGS%` as Envoy writes it (the access log's `response_flags`, a span's
    `response_flags`): `-` for none. `RBAC` is the proxy's own mark of an authorization denial,
    for which Envoy's RBAC filter sets no response flag (its details name the rule instead)."""
    if not flags or flags == "RBAC":
        return "-"
    return flags


class Exchange:
    """One request. It is also the request head the decision reads (decide.request.RequestHead's
    attributes: inbound, method, target, raw, headers, content_length, chunked, reject, peer, xfcc)."""
    # ---- per-request state: class-level defaults, set on the instance only when they change ----
    inbound = False
    is_head = False
    route: CRoute | None = None
    route_counts: dict[int, int] | None = None
    rstats: RouteStats | None = None     # the outbound route's statistics (Envoy's vhost.S.route.R)
    cluster: Cluster = None  # type: ignore[assignment]  # forward() sets it, before any attempt
    pool: Pool = None  # type: ignore[assignment]  # attempt() sets it, before any use
    conn: UpstreamConn | None = None
    state = IDLE
    attempts = 0
    seq = 0
    count_attempts = False
    retry_held = False
    holds_request = False
    replayable = True
    replay_size = 0
    unsent_size = 0
    body_size = 0
    body_done = False
    dispatched = False
    reject = 0                   # a status the downstream parser decided already (426, 403)
    expect_continue = False
    up_head = b""
    up_tail = b"\r\n"
    t_first_send = 0.0
    t_send = 0.0
    deadline = 0.0               # the route timeout, as a time.monotonic() (0: none)
    try_deadline = 0.0           # the current attempt's per-try timeout (0: none)
    wslot = 0                    # the timer-wheel slot this request is armed in (0: none)
    other_timer: asyncio.TimerHandle | None = None   # fault delay or retry backoff
    resp_started = False
    resp_chunked = False
    status = 0
    done = False
    upstream_key = ""
    flags = ""
    details = ""                 # Envoy's response code details, where the flags do not say (access log)
    answered_locally = False     # the response was the proxy's own (access log)
    up_ms = -1
    bytes_out = 0
    peer: str | None = None      # the caller's verified SPIFFE ID (inbound)
    xfcc: bytes | None = None    # the connection's x-forwarded-client-cert line (inbound over mTLS)
    mirrored = False
    decision: Decision | None = None
    replay: list[bytes] | tuple[()] = ()   # request body chunks kept for retries and the mirror (a list once there are)
    unsent: list[bytes] | tuple[()] = ()   # body chunks not yet written to the current attempt's connection
    t_start = 0.0                # when the head was parsed (for the access log only)
    t_wall = 0                   # the same in ns since the epoch (for an exported span only)

    def __init__(self, down: ClientConnection, rt: ProxyState, method: str, target: str, raw: list[tuple[bytes, bytes]],
                 headers: HeaderMap, content_length: int | None, chunked: bool, close_after: bool) -> None:
        self.down = down
        self.rt = rt
        self.method = method
        self.target = target
        self.raw = raw              # [(name bytes as sent, value bytes)]
        self.headers = headers      # lower-case name -> [values], for the decisions
        self.content_length = content_length
        self.chunked = chunked
        self.close_after = close_after
        self.inbound = not down.outbound
        self.xfcc = down.xfcc
        if rt.access_log is not None:
            self.t_start = _monotonic()
        if rt.tracer is not None:
            self.t_wall = _time_ns()
        if method == "HEAD":
            self.is_head = True
        down.lstats.rq_active += 1

    # ---- the request body, from the downstream parser ----------------------------------------------

    def on_request_body(self, data: bytes) -> None:
        if self.done:
            return
        n = len(data)
        self.body_size += n
        if self.replayable:
            self.replay_size += n
            if self.replay_size > REPLAY_LIMIT:
                self.replayable = False
                self.replay = ()
            elif self.replay:
                self.replay.append(data)
            else:
                self.replay = [data]
        max_body = self.rt.max_request_body
        if max_body and self.body_size > max_body:
            if self.dispatched:
                self.abandon_attempt()
                self.local(413, b"Payload Too Large", close=True)
            else:          # not started (or queued behind another request): start() answers
                self.reject = 413
                self.replayable = False
                self.replay = self.unsent = ()
            return
        if self.reject:
            return         # refused already: the body goes nowhere
        conn = self.conn
        if conn is not None and self.state == SENT:
            conn.write(b"%x\r\n%s\r\n" % (n, data) if self.chunked else data)
        else:
            if self.unsent:
                self.unsent.append(data)
            else:
                self.unsent = [data]
            self.unsent_size += n
            if self.unsent_size > UNSENT_HIGH:
                self.down.pause_reading_for("body")

    def on_request_end(self) -> None:
        self.body_done = True
        if self.done:
            return
        if self.chunked and self.state == SENT and self.conn is not None:
            self.conn.write(b"0\r\n\r\n")
        d = self.decision
        if d is not None and d.mirrors and self.cluster is not None:   # forwarded, with mirror copies
            self.maybe_mirror()

    # ---- dispatch ------------------------------------------------------------------------------

    def start(self) -> None:
        """Decide the request (headers are complete; the body may still be coming), then do it."""
        self.dispatched = True
        rt = self.rt
        down = self.down
        if self.inbound:
            # the verified SPIFFE ID of an mTLS peer; a plaintext peer has none (the identity header
            # is only read on a sidecar whose inbound listener has no TLS: Runtime.apply)
            peer = down.source
            if peer is None and rt.identity_header is not None:
                values = self.headers.get(rt.identity_header)
                if values is not None and len(values) == 1:
                    peer = values[0]
            self.peer = peer
        d = self.decision = decide_request(rt.table, self, DRAWS)   # this exchange is the head
        if d.expect_continue:
            self.expect_continue = True
        counter = d.counter
        if counter is not None:
            lstats = down.lstats
            setattr(lstats, counter, getattr(lstats, counter) + 1)
            if counter in RBAC_DENIALS:     # denials by the deciding rule (None: the default)
                rt.metrics.rbac_denied(rt.table.service, d.rule)
        if self.inbound and d.service:
            self.route_counts = rt.inbound_counts if self.peer is None else rt.inbound_counts_for(self.peer)
        route = d.route
        if route is not None:
            self.route = route
            self.route_counts = rt.route_counts.get(route)
            self.rstats = rt.route_stats.get(route)
        if d.flags:
            self.flags = d.flags
        if d.delay_ms:
            self.add_flag("DI")
            self.other_timer = rt.loop.call_later(d.delay_ms / 1000.0, self.after_delay)
            return
        if d.status:
            self.local(d.status, d.body, d.extra, close=d.close)
            return
        self.forward(d)

    def after_delay(self) -> None:
        """A fault's delay is over: its abort, or the request goes on."""
        self.other_timer = None
        if self.done:
            return
        d: Decision = self.decision  # type: ignore[assignment]  # start() decided, then waited
        if d.status:
            self.down.lstats.aborts_injected += 1
            self.add_flag("FI")
            self.local(d.status, d.body, close=d.close)
        else:
            self.forward(d)

    def forward(self, d: Decision) -> None:
        """Send the request where the decision says: an outbound route's subset, or the local app."""
        route = d.route
        if route is None:
            self.cluster = self.rt.app_cluster
        else:
            self.cluster = self.rt.clusters[d.cluster]  # type: ignore[index]  # forwarded: a cluster is named
            self.count_attempts = True     # the outbound routes include x-envoy-attempt-count both ways
        self.up_head, self.up_tail = d.up_head, d.up_tail
        if d.mirrors and self.body_done:
            self.maybe_mirror()
        if self.expect_continue:
            self.down.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        now = self.t_first_send = _monotonic()
        if route is not None and route.timeout_ms:
            self.deadline = now + route.timeout_ms / 1000.0   # armed by the attempt (see arm)
        self.attempt(False)

    # ---- attempts ------------------------------------------------------------------------------------

    def attempt(self, fresh: bool) -> None:
        """Start one attempt: pick an endpoint, get a connection (or wait for one)."""
        cluster = self.cluster
        if not fresh:
            self.attempts += 1
            self.pool = cluster.pick()
        pool = self.pool
        self.upstream_key = pool.key
        self.state = WAITING
        self.seq += 1
        conn = cluster.acquire(self, pool, fresh)
        if conn is None:   # waiting for a connection (the pool calls on_connection or on_failure)
            if self.deadline:
                self.arm()
            return
        if conn is False:
            self.state = IDLE
            self.overflow()
            return
        self.on_connection(conn)

    def on_connection(self, conn: UpstreamConn) -> None:
        """A connection for the current attempt (the request token is held)."""
        if self.done or self.state != WAITING:
            conn.pool.cluster.give_back(conn)
            return
        self.holds_request = True
        self.conn = conn
        self.state = SENT
        stats = self.cluster.stats
        stats.rq_total += 1
        stats.rq_active += 1
        rstats = self.rstats
        if rstats is not None:
            rstats.rq_total += 1
        conn.start(self, self.is_head)
        now = self.t_send = _monotonic()
        if self.count_attempts:     # an outbound route: attempt count, per-try timeout, expected timeout
            retry = self.route.retry  # type: ignore[union-attr]  # counting attempts: an outbound route
            per_try = retry.per_try_timeout_ms if retry is not None else 0
            if per_try:
                self.try_deadline = now + per_try / 1000.0
                self.arm()
            elif self.deadline and not self.wslot:
                self.arm()
            if self.deadline:
                left = int((self.deadline - now) * 1000)
                if per_try and per_try < left:
                    left = per_try
                head = b"%sx-envoy-attempt-count: %d\r\nx-envoy-expected-rq-timeout-ms: %d\r\n" % (
                    self.up_head, self.attempts, left if left > 0 else 0)
            elif per_try:
                head = b"%sx-envoy-attempt-count: %d\r\nx-envoy-expected-rq-timeout-ms: %d\r\n" % (
                    self.up_head, self.attempts, per_try)
            else:
                head = b"%sx-envoy-attempt-count: %d\r\n" % (self.up_head, self.attempts)
        else:
            head = self.up_head
        unsent = self.unsent
        if unsent:
            if self.chunked:
                body = b"".join([b"%x\r\n%s\r\n" % (len(c), c) for c in unsent])
            else:
                body = b"".join(unsent)
            self.unsent = ()
            if self.unsent_size > UNSENT_HIGH:
                self.down.resume_reading_for("body")
            self.unsent_size = 0
            if self.body_done and self.chunked:
                body += b"0\r\n\r\n"
            conn.write(head + self.up_tail + body)
        elif self.body_done and self.chunked:
            conn.write(head + self.up_tail + b"0\r\n\r\n")
        else:
            conn.write(head + self.up_tail)

    def end_attempt(self) -> None:
        """The current attempt is over: its per-try timeout and request token go (the wheel slot
        stays; a wake-up for a deadline that is gone re-arms for the next one)."""
        self.try_deadline = 0.0
        if self.holds_request:
            self.holds_request = False
            cluster = self.cluster
            cluster.breaker.release_request()
            cluster.stats.rq_active -= 1
            if self.down.paused:      # a connection that was full no longer holds the client back
                self.down.resume_reading_for("upstream")

    def on_upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self.down.pause_reading_for("upstream")
        else:
            self.down.resume_reading_for("upstream")

    # ---- the upstream's response -----------------------------------------------------------------

    def on_response_head(self, conn: UpstreamConn, status: int) -> None:
        if conn is not self.conn:
            return
        now = _monotonic()
        cluster = self.cluster
        outlier = cluster.outlier
        if outlier is not None and outlier.record(self.upstream_key, status, None, now):
            cluster.ejected(self.upstream_key)
        route = self.route
        if route is not None and route.retry is not None and status in route.retry.statuses:
            overloaded = False
            for name, _ in conn.special:
                if name == b"x-envoy-overloaded":
                    overloaded = True
            if self.retry(Outcome(status, None, overloaded)):
                codes = cluster.stats.retry_codes      # Envoy's `retry.upstream_rq_<code>`
                codes[status] = codes.get(status, 0) + 1
                if not (self.body_done and (not conn.in_body or _EMPTY_BODY in conn.lines)):
                    # A body still to come (or a request still being sent): Envoy resets the
                    # stream, which closes the connection. Drained and pooled instead, it could
                    # end while the retry waits for a connection and be handed to it: the retry
                    # would go out on it, and the end of the answer it no longer wants would end
                    # the request unanswered.
                    conn.abandon()
                return
        elif self.retry_held:    # a retried attempt answered with what is not retried: a success
            self.retry_held = False
            cluster.breaker.release_retry()
            cluster.stats.retry_success += 1
            if self.rstats is not None:
                self.rstats.retry_success += 1
        # the final answer: charged to the cluster and the route (self.charge, inlined)
        codes = cluster.stats.codes
        codes[status] = codes.get(status, 0) + 1
        rstats = self.rstats
        if rstats is not None:
            codes = rstats.codes
            codes[status] = codes.get(status, 0) + 1
        self.status = status
        self.up_ms = up_ms = int((now - self.t_first_send) * 1000)
        # the response head: the upstream's header lines less the hop-by-hop ones, re-framed
        lines = response_lines(route, conn.lines, conn.special, self.decision.arm_response)  # type: ignore[union-attr]
        cors = self.decision.cors  # type: ignore[union-attr]
        if cors:   # a CORS request (decide/cors.py): set in place, or after the router's lines
            lines, cors = merge_cors(lines, cors)
        has_length = conn.has_length if lines is conn.lines else \
            any(line.startswith(b"content-length: ") for line in lines)
        parts = [status_line(status)]
        parts += lines
        if not has_length and not (self.is_head or status == 204 or status == 304 or status < 200):
            self.resp_chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        if not self.body_done:
            self.close_after = True   # the client is still sending: the connection cannot be reused
        if self.count_attempts:
            parts.append(b"x-envoy-upstream-service-time: %d\r\nx-envoy-attempt-count: %d\r\n"
                         b"%sserver: envoy\r\n%s\r\n" % (
                             up_ms, self.attempts, cors, b"connection: close\r\n" if self.close_after else b""))
        else:
            parts.append(b"x-envoy-upstream-service-time: %d\r\n%sserver: envoy\r\n%s\r\n" % (
                up_ms, cors, b"connection: close\r\n" if self.close_after else b""))
        self.resp_started = True
        self.down.write(b"".join(parts))

    def on_response_body(self, conn: UpstreamConn, data: bytes) -> None:
        if conn is not self.conn:
            return
        self.bytes_out += len(data)
        if self.resp_chunked:
            self.down.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.down.write(data)

    def on_response_end(self, conn: UpstreamConn) -> None:
        if conn is not self.conn:
            return
        self.conn = None
        self.state = IDLE
        self.end_attempt()
        if self.resp_chunked:
            self.down.write(b"0\r\n\r\n")
        # Envoy's upstream_rq_time: whole milliseconds from the dispatch to the answer's end
        # (UpstreamStats.observe, inlined)
        ms = int((_monotonic() - self.t_first_send) * 1000)
        i = _bisect(RQ_TIME_BUCKETS, ms)
        stats = self.cluster.stats
        stats.buckets[i] += 1
        stats.time_sum += ms
        rstats = self.rstats
        if rstats is not None:
            rstats.buckets[i] += 1
            rstats.time_sum += ms
        self.finish()

    def on_failure(self, conn: UpstreamConn | None, kind: str, reason: str, fresh_ok: bool) -> None:
        """No (complete) response from the upstream on this attempt."""
        if conn is None:
            if self.state != WAITING:
                return
        elif conn is not self.conn:
            return
        self.conn = None
        self.state = IDLE
        cluster = self.cluster
        if self.resp_started:      # the response broke off mid-body: the client sees a reset
            self.end_attempt()
            self.add_flag("UR")
            self.down.abort()
            self.finish(aborted=True)
            return
        # A kept-alive connection the upstream closed as it was reused fails the attempt like any
        # reset: Envoy does not send it again unless the route retries on `reset` (equivalence
        # suite; `fresh_ok` is only informative).
        self.end_attempt()
        if kind != CONNECT_FAILURE:
            cluster.stats.rq_rx_reset += 1
        outlier = cluster.outlier
        if outlier is not None and outlier.record(self.upstream_key, None, kind, _monotonic()):
            cluster.ejected(self.upstream_key)
        if self.retry(Outcome(None, kind)):
            return
        # (after the last retry allowed, Envoy's flags list URX too, in alphabetical order)
        self.add_flag("UF" if kind == CONNECT_FAILURE else "UC")
        if reason != "headers too large":
            self.details = "upstream_reset_before_response_started{" + reason.replace(" ", "_") + "}"
        if reason == "headers too large":   # proxy.max_response_headers_bytes: Envoy's 502
            self.charge(502)
            self.local(502, reset_body("protocol error", self.attempts > 1))
        else:
            self.charge(503)
            self.local(503, reset_body(reason, self.attempts > 1))

    # ---- timeouts ----------------------------------------------------------------------------------

    def arm(self) -> None:
        """Put this request in the timer wheel's slot of its earliest deadline."""
        d = self.deadline
        t = self.try_deadline
        if t and (not d or t < d):
            d = t
        slot = int(d * TICKS) + 1 if d else 0
        old = self.wslot
        if slot == old:
            return
        wheel = self.rt.wheel
        buckets = wheel.buckets
        if old:
            bucket = buckets.get(old)
            if bucket is not None:
                bucket.discard(self)
                if not bucket:
                    del buckets[old]
        if slot:
            if slot <= wheel.last:
                slot = wheel.last + 1
            bucket = buckets.get(slot)
            if bucket is None:
                bucket = buckets[slot] = set()
            bucket.add(self)
            if wheel.handle is None:
                wheel.start()
        self.wslot = slot

    def on_deadline(self) -> None:
        """The timer wheel's call: a deadline has passed, or moved (then re-arm)."""
        self.wslot = 0
        if self.done:
            return
        now = _monotonic()
        if self.try_deadline and now >= self.try_deadline:
            self.try_deadline = 0.0
            self.on_per_try_timeout()
        elif self.deadline and now >= self.deadline:
            self.on_route_timeout()
        else:
            self.arm()

    def on_per_try_timeout(self) -> None:
        if self.done:
            return
        cluster = self.cluster
        cluster.stats.rq_per_try_timeout += 1
        self.abandon_attempt()
        if self.resp_started:
            self.add_flag("UT")
            self.down.abort()
            self.finish(aborted=True)
            return
        outlier = cluster.outlier
        if outlier is not None and outlier.record(self.upstream_key, None, PER_TRY_TIMEOUT, _monotonic()):
            cluster.ejected(self.upstream_key)
        if self.retry(Outcome(None, PER_TRY_TIMEOUT)):
            return
        self.add_flag("UT")
        self.details = "upstream_per_try_timeout"
        self.charge(504)
        self.local(504, BODY_TIMEOUT)

    def on_route_timeout(self) -> None:
        if self.done:
            return
        cluster = self.cluster
        cluster.stats.rq_timeout += 1
        rstats = self.rstats
        if rstats is not None:
            rstats.rq_timeout += 1
        state = self.state
        was_sent = state == SENT
        self.abandon_attempt()
        if was_sent and cluster.outlier is not None and \
                cluster.outlier.record(self.upstream_key, None, PER_TRY_TIMEOUT, _monotonic()):
            cluster.ejected(self.upstream_key)
        self.add_flag("UT")
        if self.resp_started:
            self.down.abort()
            self.finish(aborted=True)
            return
        if was_sent or state == WAITING:   # Envoy charges the attempt in flight (none in a backoff)
            self.charge(504)
        self.local(504, BODY_TIMEOUT)

    def on_stream_idle(self) -> None:
        """Nothing moved to or from the client for the stream idle timeout (the sweep's call):
        Envoy's answer, 408 while the request is still coming, else 504, or a reset once the
        response started. It bounds `timeout none` as every other route timeout."""
        if self.done:
            return
        self.down.lstats.rq_idle_timeout += 1
        self.abandon_attempt()
        self.add_flag("SI")
        if self.resp_started:
            self.down.abort()
            self.finish(aborted=True)
            return
        self.local(504 if self.body_done else 408, BODY_STREAM_IDLE)

    def abandon_attempt(self) -> None:
        """Let go of the current attempt, whatever its state (no callbacks will follow)."""
        state = self.state
        self.state = IDLE
        if state == SENT:
            conn = self.conn
            self.conn = None
            if conn is not None:
                conn.abandon()
        elif state == WAITING:
            self.cluster.cancel_wait(self, self.pool)
        t = self.other_timer
        if t is not None:
            self.other_timer = None
            t.cancel()
        self.end_attempt()
        if self.retry_held:
            self.retry_held = False
            self.cluster.breaker.release_retry()

    # ---- retries -----------------------------------------------------------------------------------

    def retry(self, outcome: Outcome) -> bool:
        """Schedule the next attempt when the route's policy, the attempt count, the body and the
        retry budget allow it; False when the request ends with what it has.

        A retry holds its unit of the retry budget (or `max_retries`) from this decision, through
        the backoff, until its attempt ends (the next decision, or the end of the request), as
        Envoy's RetryStateImpl does (`resetRetry` at each `shouldRetry`).

        `upstream_rq_retry_success` counts as Envoy's `shouldRetry` does: a retried attempt
        (a retry still held) whose outcome the conditions do not retry, whatever its status
        (a 404 after a 503 counts; a retriable answer past the attempt limit does not)."""
        held = self.retry_held
        if held:
            self.retry_held = False
            self.cluster.breaker.release_retry()
        route = self.route
        if route is None or route.retry is None:
            return False
        cluster = self.cluster
        b = cluster.breaker
        verdict = decide_retry(UpstreamState(b.requests, b.pending, b.retries, b.limits, b.budget), route.retry,
                               outcome, self.attempts, self.replayable, _random())
        stats = cluster.stats
        rstats = self.rstats
        if not verdict.retry:
            if verdict.reason == NOT_RETRIABLE:
                if held:
                    stats.retry_success += 1
                    if rstats is not None:
                        rstats.retry_success += 1
            elif verdict.reason == LIMIT:
                stats.retry_limit_exceeded += 1
                if rstats is not None:
                    rstats.retry_limit_exceeded += 1
                self.add_flag("URX")   # Envoy's flag for a response after the last attempt allowed
            elif verdict.reason == OVERFLOW:
                stats.retry_overflow += 1
                if rstats is not None:
                    rstats.retry_overflow += 1
            return False
        b.take_retry()
        stats.retry += 1
        if rstats is not None:
            rstats.retry += 1
        self.end_attempt()
        self.conn = None         # (a retried answer's connection: closed or kept in on_response_head)
        self.retry_held = True
        self.state = BACKOFF
        self.other_timer = self.rt.loop.call_later(verdict.backoff_ms / 1000.0, self.after_backoff)
        return True

    def after_backoff(self) -> None:
        self.other_timer = None      # the retry stays held while its attempt runs (see retry)
        if self.done:
            return
        self.unsent = list(self.replay)
        self.unsent_size = self.replay_size
        self.attempt(False)

    # ---- endings -----------------------------------------------------------------------------------

    def on_overflow(self) -> None:
        """The pool had a connection for the waiting attempt, but the request limit did not."""
        if self.done or self.state != WAITING:
            return
        self.state = IDLE
        self.overflow()

    def overflow(self) -> None:
        """A circuit breaker refused the attempt: Envoy's overflow 503 (never retried)."""
        self.end_attempt()
        self.add_flag("UO")
        self.charge(503)
        self.local(503, BODY_OVERFLOW, b"x-envoy-overloaded: true\r\n")

    def charge(self, status: int) -> None:
        """The final outcome of a request the router sent upstream, to its cluster and route:
        the upstream's answer, or the router's own 502/503/504 after a reset, connect failure,
        overflow or timeout (Envoy's chargeUpstreamCode and chargeUpstreamAbort; a fault's abort,
        a missing route or an authorization denial are not charged)."""
        self.cluster.stats.charge(status)
        rstats = self.rstats
        if rstats is not None:
            rstats.charge(status)

    def local(self, status: int, body: bytes = b"", extra: bytes = b"", close: bool = False) -> None:
        """Answer with a local reply (nothing of it came from an upstream). A request whose body
        is still coming gets `connection: close`, as from Envoy. Once a route is chosen, its
        response header changes apply to the local reply too (a fault's abort, a timeout, a
        reset), as in Envoy."""
        if self.done or self.resp_started:
            return
        if close or not self.body_done:
            self.close_after = True
        if self.count_attempts and self.attempts:   # the router's replies (5xx after attempts)
            extra += b"x-envoy-attempt-count: %d\r\n" % self.attempts
        self.status = status
        self.resp_started = True
        self.answered_locally = True
        self.bytes_out = len(body)
        route = self.route
        d = self.decision
        arm = d.arm_response if d is not None else None
        cors = d.cors if d is not None else b""
        if cors and d.status == 200 and status == 200:   # type: ignore[union-attr]  # a CORS preflight: Envoy's order
            self.down.write(b"%s%s%s%s%scontent-length: 0\r\n\r\n" % (
                status_line(200), cors, DATE.get(), SERVER, b"connection: close\r\n" if self.close_after else b""))
        elif route is not None and (not route.response_headers.empty or arm is not None):
            extra = local_reply_changes(body, extra, route.response_headers, arm)
            if cors:   # set after the route's changes, as Envoy's CORS filter
                extra = merge_text(extra, cors)
            self.down.write(local_reply(status, body, extra, self.close_after, self.is_head, ctype=False))
        else:
            if cors:
                extra = merge_text(extra, cors)
            self.down.write(local_reply(status, body, extra, self.close_after, self.is_head))
        self.finish()

    def finish(self, aborted: bool = False) -> None:
        if self.done:
            return
        self.done = True
        slot = self.wslot
        if slot:
            buckets = self.rt.wheel.buckets
            bucket = buckets.get(slot)
            if bucket is not None:
                bucket.discard(self)
                if not bucket:
                    del buckets[slot]
            self.wslot = 0
        if self.state != IDLE or self.retry_held or self.other_timer is not None:
            self.abandon_attempt()
        elif self.holds_request:
            self.end_attempt()
        down = self.down
        lstats = down.lstats
        lstats.rq_active -= 1
        status = self.status
        if status:
            lstats.count_status(status)
            counts = self.route_counts
            if counts is None:
                counts = self.rt.metrics.route(down.listener, self.decision.service if self.decision else "", "")
            counts[status] = counts.get(status, 0) + 1
        log = self.rt.access_log
        if log is not None:
            log.write(self)
        tracer = self.rt.tracer
        if tracer is not None:
            d = self.decision
            if d is not None and d.span is not None and d.span.sampled and self.t_wall:
                tracer.record(d.span, self.inbound, d.host, self.t_wall, self.span_attributes(d))
        down.exchange_done(self, aborted)

    def add_flag(self, flag: str) -> None:
        """One more response flag: Envoy keeps every flag a request got (`DI,UC`, `URX,UT`),
        listed in alphabetical order."""
        flags = self.flags
        if not flags:
            self.flags = flag
        elif flag not in flags.split(","):
            self.flags = ",".join(sorted([*flags.split(","), flag]))

    def span_attributes(self, d: Decision) -> dict[str, str]:
        """An exported span's attributes: Envoy's names and string values (docs/observability.md)."""
        cluster = d.cluster or "-"
        agent = self.headers.get("user-agent")
        return {"component": "proxy", "guid:x-request-id": d.request_id.decode("utf-8", "replace"),
                "http.method": self.method, "http.protocol": "HTTP/1.1",
                "http.url": f"http://{d.host}{self.target}", "user_agent": agent[0] if agent else "-",
                "peer.address": self.down.peer_ip, "upstream_cluster": cluster, "upstream_cluster.name": cluster,
                "http.status_code": str(self.status), "response_flags": envoy_flags(self.flags)}

    def cancel(self) -> None:
        """The client went away, or the connection is failing: drop the request."""
        if self.done:
            return
        if self.dispatched:
            self.down.lstats.rq_rx_reset += 1
        self.flags = self.flags or "DC"
        self.abandon_attempt()
        self.resp_started = True
        self.finish(aborted=True)

    # ---- the mirror --------------------------------------------------------------------------------

    def maybe_mirror(self) -> None:
        """Fire the copies of the route's mirrors the decision chose, in the route's order, once the
        whole body is known (at most once a request)."""
        mirrors: tuple[CMirror, ...] = self.decision.mirrors  # type: ignore[union-attr]  # decided
        if not self.replayable or self.mirrored:
            return
        self.mirrored = True      # (whether this request is copied was decided with its route)
        d: Decision = self.decision  # type: ignore[assignment]  # decided
        shadow = shadow_host(d.up_host or d.host).encode("latin-1", "replace")   # (a rewritten Host's, as Envoy)
        lines = self.up_head.split(b"\r\n")
        out = [lines[0]]
        for line in lines[1:]:
            if line[:5].lower() == b"host:":
                out.append(b"host: " + shadow)
            elif line:
                out.append(line)
        body = b"".join(self.replay)
        if body or self.content_length is not None:
            tail = b"content-length: %d\r\n\r\n" % len(body)
        else:
            tail = b"\r\n" if self.chunked else self.up_tail
        data = b"\r\n".join(out) + b"\r\nx-envoy-internal: true\r\n" + tail + body
        for mirror in mirrors:
            cluster = self.rt.clusters.get(mirror.subset.cluster)
            if cluster is not None:
                Mirror(cluster, data, self.is_head, mirror.timeout_ms / 1000.0)


class _NoClient:
    """What a mirror has for a client: nothing is ever written to it."""
    corked = 0
    wbuf = ()

    def flush(self) -> None:
        pass


class Mirror:
    """A fire-and-forget copy of a request: its response is dropped, but its outcome counts as
    Envoy counts a shadow's (measured with Envoy 1.40, tests/test_mirror_outlier.py): a status,
    a reset or connect failure and a timeout after the copy was sent go to the mirror subset's
    outlier detection (the ejection then steers that subset's real traffic), like the copy's
    circuit-breaker request unit and the cluster's statistics."""
    __slots__ = ("cluster", "data", "is_head", "conn", "state", "timer", "done", "pool", "seq", "t_send", "answered")
    down = _NoClient()

    def __init__(self, cluster: Cluster, data: bytes, is_head: bool, timeout: float) -> None:
        self.cluster = cluster
        self.data = data
        self.is_head = is_head
        self.conn: UpstreamConn | None = None
        self.done = False
        self.seq = 1
        self.t_send = 0.0
        self.answered = False
        cluster.stats.mirror_total += 1
        self.pool = cluster.pick()
        self.state = WAITING
        self.timer = cluster.loop.call_later(timeout, self.on_timeout)
        conn = cluster.acquire(self, self.pool, False)
        if conn is False:
            self.state = IDLE
            self.stop()
        elif conn is not None:
            self.on_connection(conn)

    def on_connection(self, conn: UpstreamConn) -> None:
        if self.done:
            conn.pool.cluster.give_back(conn)
            return
        self.state = SENT
        self.conn = conn
        self.cluster.stats.rq_total += 1
        self.cluster.stats.rq_active += 1
        self.t_send = _monotonic()
        conn.start(self, self.is_head)
        conn.write(self.data)

    def on_response_head(self, conn: UpstreamConn, status: int) -> None:
        cluster = self.cluster
        cluster.stats.charge(status)
        self.answered = True
        self.outcome(status, None)

    def outcome(self, status: int | None, failure: str | None) -> None:
        """The copy's result, counted by the mirror subset's outlier detection as Envoy does."""
        outlier = self.cluster.outlier
        if outlier is not None and outlier.record(self.pool.key, status, failure, _monotonic()):
            self.cluster.ejected(self.pool.key)

    def on_response_body(self, conn: UpstreamConn, data: bytes) -> None:
        pass

    def on_response_end(self, conn: UpstreamConn) -> None:
        self.conn = None
        if self.answered:    # timed as the router times an answer: from the dispatch to its end
            self.cluster.stats.observe(int((_monotonic() - self.t_send) * 1000))
        self.stop()

    def on_failure(self, conn: UpstreamConn | None, kind: str, reason: str, fresh_ok: bool) -> None:
        self.conn = None
        if not self.answered:     # Envoy charges the copy's 503 (`upstream_rq_503`)
            self.cluster.stats.charge(503)
            self.outcome(None, kind)
        self.stop()

    def on_upstream_write_paused(self, paused: bool) -> None:
        pass

    def on_timeout(self) -> None:
        """The copy's timeout (the route's): counted as the router counts a timed-out attempt."""
        if self.state == SENT and not self.answered:   # Envoy charges a 504 and `upstream_rq_timeout`
            stats = self.cluster.stats
            stats.charge(504)
            stats.rq_timeout += 1
            self.outcome(None, PER_TRY_TIMEOUT)
        self.stop()

    def on_overflow(self) -> None:
        self.state = IDLE
        self.stop()

    def stop(self) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        if self.state == WAITING:
            self.cluster.cancel_wait(self, self.pool)
        elif self.state == SENT:
            self.cluster.breaker.release_request()
            self.cluster.stats.rq_active -= 1
            if self.conn is not None:
                self.conn.abandon()
        self.state = IDLE
