"""The proxy's run-time state and its downstream side: listeners, client connections, clusters.

`Runtime` holds what outlives a request: the active config and its compiled table, one
`ClusterState` per subset cluster (breaker, outlier detector, a connection pool per endpoint,
statistics), the access log and the set of client connections. A reload swaps the table for new
requests; a request keeps the table and cluster it started with, so in-flight requests finish
under the config they began with. Cluster state is kept across a reload when the cluster's
endpoints and policy did not change, so breakers, ejections and pooled connections survive it.

`Downstream` is the client side of one connection (asyncio.Protocol with httptools callbacks):
strict HTTP/1.1 parsing (llhttp rejects conflicting Content-Length / Transfer-Encoding, bad
chunk framing and malformed request lines), the request-header size limit (431), keep-alive,
pipelined requests answered in order, and flow control between the two sides.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Literal

from httptools import HttpParserError, HttpParserInvalidMethodError, HttpParserUpgrade, HttpRequestParser

from runtime_proxy.decide.breaker import Breaker
from runtime_proxy.decide.http import RBAC_DENIED_DETAILS
from runtime_proxy.decide.identity import peer_identity, xfcc_line
from runtime_proxy.decide.outlier import OutlierState
from runtime_proxy.decide.request import header_dict
from runtime_proxy.decide.table import TableError
from runtime_proxy.decide.upstream import choose_endpoint
from runtime_proxy.net.exchange import Exchange, envoy_flags
from runtime_proxy.net.metrics import MAX_SOURCES, Metrics, TlsStats
from runtime_proxy.net.timers import TimerWheel
from runtime_proxy.net.tls import Identities
from runtime_proxy.net.tracing import SpanExport, span_export
from runtime_proxy.net.upstream import Pool, TlsReads
from runtime_proxy.net.wire import local_reply, status_line

if TYPE_CHECKING:
    import ssl

    from runtime_proxy.decide.table import Limits, OutlierSettings, RetryBudget, Table, Upstream
    from runtime_proxy.net.shared import Region
    from runtime_proxy.net.upstream import UpstreamConn, User

log = logging.getLogger("runtime_proxy")

_METHODS: dict[bytes, str] = {}
_OWS = (b" ", b"\t")          # optional white space around a header value (RFC 9110 5.5)

LINGER_SECONDS = 1.0   # how long a closing connection still reads what the client sends

# why a client connection stopped reading (bits)
PAUSE_BODY, PAUSE_UPSTREAM, PAUSE_PIPELINE = 1, 2, 4
_PAUSE_REASONS = {"body": PAUSE_BODY, "upstream": PAUSE_UPSTREAM, "pipeline": PAUSE_PIPELINE}


class HeadersTooLarge(Exception):
    pass


class Refused(Exception):
    """Raised by a parser callback: the request is answered `status` and the connection closed."""

    def __init__(self, status: int) -> None:
        Exception.__init__(self, status)
        self.status = status


def parse_error_status(err: HttpParserError) -> int:
    """Envoy's answer to a request llhttp refused: 501 for a transfer coding it does not implement
    (llhttp: "Invalid `Transfer-Encoding` header value", "Request has invalid `Transfer-Encoding`",
    "Empty Transfer-Encoding"; with a Content-Length too it is a framing error, 400), 426 for an
    HTTP version other than 1.1, else 400."""
    cause = err.__context__
    if isinstance(cause, Refused):
        return cause.status
    msg = str(err)
    if "Transfer-Encoding" in msg and "Content-Length" not in msg:
        return 501
    if msg == "Invalid HTTP version":
        return 426
    return 400


# ---- clusters -------------------------------------------------------------------------------------

class ClusterState:
    """One subset cluster as this sidecar calls it: breaker, outlier detection, pools, stats.
    `upstream` holds its connection settings (table.Upstream); `tls` is None (plaintext) or
    (server name, expected SPIFFE ID) for mTLS connections."""

    def __init__(self, rt: Runtime, name: str, endpoints: tuple[tuple[str, int], ...], limits: Limits,
                 budget: RetryBudget | None, outlier: OutlierSettings | None, upstream: Upstream,
                 tls: tuple[str, str] | None = None) -> None:
        self.name = name
        self.loop = rt.loop
        self.rt = rt
        self.signature = (tuple(endpoints), limits, budget, outlier, upstream, tls)
        self.idle_timeout = upstream.idle_timeout_ms / 1000.0
        keys = tuple(f"{h}:{p}" for h, p in endpoints)
        # ejections end at the detector's interval ticks, counted from now, as in Envoy
        self.stats = rt.metrics.cluster(name)
        self.outlier: OutlierState | None
        if rt.shared is None:
            self.breaker = Breaker(limits, budget)
            self.outlier = OutlierState(outlier, keys, tick_origin=time.monotonic(), counts=self.stats.outlier) \
                if outlier is not None else None
        else:   # --workers N: shared with the other workers (net/shared.py)
            self.breaker, self.outlier = rt.shared.cluster(name, self.signature, limits, budget, outlier, keys,
                                                           time.monotonic(), self.stats.outlier)
        self.plist = tuple(Pool(self, h, p, rt.loop, upstream.connect_timeout_ms / 1000.0,
                                upstream.max_response_headers_bytes, tls) for h, p in endpoints)
        self.keys = keys
        self.by_key = {p.key: p for p in self.plist}
        self.rr = -1
        self.retired = False

    def pick(self) -> Pool:
        """The endpoint of the next attempt (decide/upstream.choose_endpoint): round robin over the
        endpoints the outlier detector leaves available."""
        keys = self.keys
        outlier = self.outlier
        if outlier is not None and outlier.ejected_count:
            available = tuple(outlier.available(keys, time.monotonic()))
            if len(available) != len(keys):
                i, self.rr = choose_endpoint(available, self.rr)
                return self.by_key[available[i]]
        if len(keys) == 1:          # no choice to make (the common sidecar: one endpoint)
            return self.plist[0]
        i, self.rr = choose_endpoint(keys, self.rr)
        return self.plist[i]

    def acquire(self, user: User, pool: Pool, fresh: bool) -> UpstreamConn | Literal[False] | None:
        """A connection for `user` (with the request token taken), None when it waits for one
        (the pool calls user.on_connection or user.on_failure later), False on overflow."""
        breaker = self.breaker
        stats = self.stats
        if not fresh:
            conn = pool.take_idle()
            if conn is not None:
                if breaker.try_acquire_request():
                    return conn
                pool.idle.append(conn)
                stats.pending_overflow += 1
                return False
        elif breaker.try_acquire_connection():
            pool.connect((user, user.seq))
            return None
        if not breaker.try_acquire_pending():
            stats.pending_overflow += 1
            return False
        stats.pending_total += 1
        pool.waiters.append(user)
        if pool.connecting < len(pool.waiters):
            if breaker.try_acquire_connection():
                pool.connect(None)
            else:
                stats.cx_overflow += 1
                if self.rt.shared is not None and not pool.active and not pool.connecting:
                    # --workers N: a worker whose pool has no connection at all opens one over the
                    # shared connection limit (counted as an overflow), as Envoy's worker threads do
                    # (ConnPoolImplBase: a pool with no client may always create one); else its
                    # waiters would wait for a connection another worker holds
                    breaker.take_connection()
                    pool.connect(None)
        return None

    def handoff(self, user: User, conn: UpstreamConn, pending: bool = True) -> None:
        """Give a ready connection to a waiting user."""
        breaker = self.breaker
        if pending:
            breaker.release_pending()
        if not breaker.try_acquire_request():
            self.stats.pending_overflow += 1
            conn.idle_since = self.loop.time()
            conn.pool.idle.append(conn)
            user.on_overflow()
            return
        user.on_connection(conn)

    def give_back(self, conn: UpstreamConn) -> None:
        """A connection handed to a user that no longer needs it."""
        self.breaker.release_request()
        conn.pool.release(conn)

    def cancel_wait(self, user: User, pool: Pool | None) -> None:
        if pool is not None and pool.cancel_waiter(user):
            self.breaker.release_pending()

    def pending_failed(self, user: User) -> None:
        self.breaker.release_pending()

    def connection_opened(self, pool: Pool) -> None:
        self.stats.cx_total += 1
        self.stats.cx_active += 1

    def connection_closed(self, pool: Pool) -> None:
        self.breaker.release_connection()
        self.stats.cx_active -= 1
        if self.retired:
            return
        breaker = self.breaker
        for p in self.plist:   # a connection slot is free: serve a pool whose waiters have none
            if p.waiters and p.connecting < len(p.waiters) and breaker.try_acquire_connection():
                p.connect(None)

    def connect_failed(self, pool: Pool, timeout: bool) -> None:
        self.breaker.release_connection()
        self.stats.cx_connect_fail += 1
        if timeout:
            self.stats.cx_connect_timeout += 1

    def client_context(self) -> ssl.SSLContext | None:
        """The TLS context new connections of an mTLS cluster use (the newest identity), or None
        when a reload took the identity files away (the connection then fails as a connect
        failure instead of going out in plaintext)."""
        tls = self.rt.tls
        return tls.current.client if tls is not None else None

    def tls_failed(self, pool: Pool, reason: str, detail: str) -> None:
        """An upstream TLS handshake failed, or the server is not the destination's identity."""
        self.rt.metrics.tls.cluster_failed(self.name, reason)  # type: ignore[union-attr]  # mTLS: TLS stats exist
        log.warning("upstream TLS to %s (%s) failed: %s: %s", pool.key, self.name, reason, detail)

    def ejected(self, key: str) -> None:
        self.stats.ejections_enforced += 1
        log.info("outlier detection: ejected %s from %s", key, self.name)

    def retire(self) -> None:
        """A reload replaced this cluster: no new requests; connections close once idle."""
        self.retired = True
        if self.rt.shared is not None:     # --workers N: its shared entry may be reused once all left it
            self.rt.shared.leave(self.breaker)
        for p in self.plist:
            p.retired = True
            p.close_idle()

    def gauges(self, now: float) -> dict[str, int]:
        out = {"upstream_rq_pending_active": self.breaker.pending,
               "circuit_breakers_default_remaining_retries": max(
                   0, self.breaker.retry_limit() - self.breaker.retries)}
        if self.outlier is not None:
            out["outlier_detection.ejections_active"] = len(self.outlier.ejected(now))
        return out


# ---- the access log -------------------------------------------------------------------------------

# Envoy's response code details for the local replies whose response flags say why
# (`%RESPONSE_CODE_DETAILS%`; the access log's `response_code_details`).
FLAG_DETAILS = {
    "NR": "route_not_found",
    "FI": "fault_filter_abort",
    "UT": "response_timeout",
    "UO": "upstream_reset_before_response_started{overflow}",
    "SI": "stream_idle_timeout",
}


class AccessLog:
    """One JSON object per line and request, with the fields and values of the Envoy target's
    access log (compiler/backends/envoy/access_log.py; docs/observability.md): kept in a list and
    written only by the once-a-second sweep and at exit, so a request never waits for the file.
    Over MAX_PENDING lines between two sweeps, a line is dropped and counted
    (`meshc_access_log_dropped_total`). The sweep reopens the path when the file there is another
    one or is gone (logrotate renamed it), or when SIGUSR1 asked to."""

    MAX_PENDING = 100_000

    def __init__(self, path: str, metrics: Metrics) -> None:
        import orjson  # here: a proxy without an access log never loads it (1.3 MB of RSS)

        self.dumps = orjson.dumps
        self.path = path
        self.metrics = metrics
        self.pending: list[str] = []
        self.reopen_asked = False
        # (open for the proxy's life: close() closes it)
        self.fh = sys.stdout if path == "-" else open(path, "a", encoding="utf-8")  # noqa: SIM115
        self.ident = self._ident()

    def _ident(self) -> tuple[int, int] | None:
        if self.fh is sys.stdout:
            return None
        st = os.fstat(self.fh.fileno())
        return st.st_dev, st.st_ino

    def _moved(self) -> bool:
        """The path names another file than the one open, or none (renamed away, removed)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self.ident

    def _reopen(self) -> None:
        self.reopen_asked = False
        try:
            fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as e:   # (the directory is gone: keep writing to the file open)
            log.warning("access log %s: cannot reopen: %s", self.path, (e.strerror or str(e)).lower())
            return
        old, self.fh = self.fh, fh
        self.ident = self._ident()
        try:
            old.close()
        except OSError:
            pass

    def write(self, ex: Exchange) -> None:
        if not ex.t_start:    # began before a reload turned the log on: its start is unknown
            return
        if len(self.pending) >= self.MAX_PENDING:
            self.metrics.access_log_dropped += 1
            return
        d = ex.decision
        route = ex.route
        cluster = ex.cluster
        now = time.time()
        start = now - (time.monotonic() - ex.t_start)
        inbound = ex.inbound
        if d is not None and d.routed_path:   # as Envoy's %REQ(:PATH)%: after the route's rewrite
            path = d.routed_path
        elif d is not None and d.path:
            path = f"{d.path}?{d.query}" if d.query else d.path
        else:
            path = ex.target
        host = ex.headers.get("host")
        if cluster is not None:
            cluster_name: str | None = cluster.name
        elif inbound and d is not None and d.service:   # Envoy's inbound route took it before RBAC
            cluster_name = ex.rt.table.app.cluster
        elif d is not None and d.cluster:
            cluster_name = d.cluster
        elif route is not None and route.to is not None:   # a fault's abort: the route's, as Envoy's
            cluster_name = route.to.subset.cluster
        else:
            cluster_name = None
        record = {
            "start_time": self.second(int(start)) + f".{int(start * 1000) % 1000:03d}Z",
            "direction": ex.down.listener,
            "method": ex.method,
            "path": path,
            "authority": (d.up_host if d is not None and d.up_host else host[0]) if host else None,   # after a rewrite
            "response_code": ex.status,
            "response_code_details": response_code_details(ex),
            "response_flags": envoy_flags(ex.flags),
            "service": d.service if route is not None and d is not None else None,
            "route": route.name if route is not None else None,
            "upstream_cluster": cluster_name,
            "upstream_host": ex.upstream_key or None,
            "attempts": ex.attempts,
            "duration_ms": int((now - start) * 1000),
            "request_id": request_id(ex),
            "peer_identity": ex.down.source if inbound else None,
        }
        try:
            line = self.dumps(record)
        except TypeError:   # a request's bytes that are not UTF-8 (kept as surrogates): each as U+FFFD
            line = self.dumps({k: v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                               if isinstance(v, str) else v for k, v in record.items()})
        self.pending.append(line.decode() + "\n")

    _second = (-1, "")

    def second(self, t: int) -> str:
        """`YYYY-MM-DDTHH:MM:SS` of the Unix second `t` (formatted once a second)."""
        if self._second[0] != t:
            self._second = (t, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)))
        return self._second[1]

    def flush(self) -> None:
        """The sweep's (and close's): reopen if asked or rotated, then write the lines kept."""
        if self.fh is not sys.stdout and (self.reopen_asked or self._moved()):
            self._reopen()
        lines = self.pending
        if not lines:
            return
        self.pending = []
        try:
            self.fh.write("".join(lines))
            self.fh.flush()
        except (OSError, ValueError):
            self.metrics.access_log_dropped += len(lines)

    def close(self) -> None:
        self.flush()
        if self.fh is not sys.stdout:
            self.fh.close()


def response_code_details(ex: Exchange) -> str | None:
    """Envoy's `%RESPONSE_CODE_DETAILS%` for this request, as far as the proxy knows it."""
    if not ex.status:
        return None
    if not ex.answered_locally:
        return "via_upstream"
    if ex.details:
        return ex.details
    flags = ex.flags
    if flags == "RBAC":
        rule = ex.decision.rule if ex.decision is not None else None
        return f"{RBAC_DENIED_DETAILS}{rule or 'none'}]"
    for flag in flags.split(","):        # (`DI,UT`: the delay says nothing of the reply)
        if flag in FLAG_DETAILS:
            return FLAG_DETAILS[flag]
    route = ex.route
    if route is not None and route.to is None and route.split is None:
        return "direct_response"         # a redirect or a direct response: the route answered (Envoy's word)
    return "local_reply"


def request_id(ex: Exchange) -> str:
    """The request's x-request-id: the client's, else the one the proxy added (a new one for a
    request answered before it was forwarded, as Envoy generates one for every request); with
    tracing, the one the hop forwards (its trace reason written in, as Envoy's header map has it)."""
    d = ex.decision
    if d is not None and d.request_id:
        return d.request_id.decode("latin-1")
    values = ex.headers.get("x-request-id")
    if values:
        return values[0]
    at = ex.up_head.find(b"\r\nx-request-id: ")
    if at >= 0:
        return ex.up_head[at + 16:ex.up_head.index(b"\r\n", at + 16)].decode("latin-1")
    import uuid

    return str(uuid.uuid4())


# ---- the run-time state ---------------------------------------------------------------------------

FD_RESERVE = 64       # descriptors kept for the listeners, the admin, config files, logs, DNS
FD_PER_CONNECTION = 4   # a client connection and its upstream one, on each of the two listeners


def fd_connection_cap() -> int:
    """Raise the soft limit on open files to the hard one, and return how many client connections
    each listener can hold within it (every one may need an upstream connection too, and there are
    two listeners): `max_connections` is lowered to this, so that the proxy never accepts more
    than it has descriptors for: the connections it holds can always open their upstream ones, and a
    client beyond the cap is closed at once instead of waiting unanswered in the listen queue."""
    try:
        import resource
    except ImportError:       # not POSIX: no limit to raise or respect
        return 2**31 - 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return 2**31 - 1
    return max(1, (soft - FD_RESERVE) // FD_PER_CONNECTION)


class Runtime:
    def __init__(self, loop: asyncio.AbstractEventLoop, table: Table, config_data: dict[str, Any],
                 access_log: str | None = None, identity_header: str | None = None,
                 shared: Region | None = None) -> None:
        self.loop = loop
        self.shared = shared        # --workers N: breakers and outlier detection shared (net/shared.py)
        self.wheel = TimerWheel(loop)
        self.metrics = Metrics()
        self.fd_cap = fd_connection_cap()
        self.clusters: dict[str, ClusterState] = {}
        self.app_cluster: ClusterState = None  # type: ignore[assignment]  # apply() below sets it
        self.access_log_option = access_log        # --access-log: over the config's `proxy.access_log`
        self.access_log: AccessLog | None = None
        # --identity-header: only for a sidecar without TLS on its inbound listener (see apply)
        self.identity_header_option = identity_header.lower() if identity_header else None
        self.identity_header: str | None = None
        self.tls: Identities | None = None        # the identity files' contexts, when configured
        self.tracer: SpanExport | None = None     # span export (`tracing { otlp … }`), when configured
        self.downstreams: set[Downstream] = set()
        self.draining = False
        self.table: Table = None  # type: ignore[assignment]  # apply() below sets it
        self.loaded_at = 0.0
        self.config_data: dict[str, Any] = {}
        self.apply(table, config_data)

    def apply(self, table: Table, config_data: dict[str, Any]) -> None:
        """Make the config compiled as `table` (`config_data`: its JSON) the one new requests use.
        Raises tls.TlsError, having changed nothing, when its identity files cannot be used,
        table.TableError when its access log cannot be opened (Envoy refuses such listeners too),
        and tracing.TracingError when it asks for span export without the OpenTelemetry packages."""
        opened = self._access_log_for(table.proxy.access_log)
        try:
            identities = self._identities(table)
            tracer = span_export(table.service, config_data.get("tracing"), self.tracer)
        except BaseException:
            if opened is not None and opened is not self.access_log:
                opened.close()
            raise
        self.tls = identities
        if opened is not self.access_log:
            if self.access_log is not None:
                self.access_log.close()
            self.access_log = opened
        if self.tracer is not None and self.tracer is not tracer:
            old_tracer = self.tracer
            threading.Thread(target=old_tracer.close, name="span-export-close", daemon=True).start()
        self.tracer = tracer
        # a header names the caller only where no TLS can: a verified identity always wins
        self.identity_header = self.identity_header_option if table.mtls_mode == "disable" else None
        proxy = table.proxy
        self.max_request_headers = proxy.max_request_headers_bytes
        self.max_header_count = proxy.max_request_headers
        self.max_request_body = proxy.max_request_body_bytes
        self.idle_timeout = proxy.idle_timeout_ms / 1000.0
        self.request_headers_timeout = proxy.request_headers_timeout_ms / 1000.0
        self.stream_idle_timeout = proxy.stream_idle_timeout_ms / 1000.0
        # per listener; never more than the file descriptors allow (see fd_connection_cap)
        self.max_connections = min(proxy.max_connections, self.fd_cap)
        if self.max_connections < proxy.max_connections:
            log.warning("max_connections %d per listener lowered to %d: the limit on open files allows no more",
                        proxy.max_connections, self.max_connections)
        self.drain_timeout = proxy.drain_timeout_ms / 1000.0
        old = self.clusters
        new: dict[str, ClusterState] = {}
        for svc in table.services.values():
            tls = (svc.sni, svc.identity) if svc.mtls else None
            for sub in svc.subsets.values():
                new[sub.cluster] = self._cluster(old.get(sub.cluster), sub.cluster, sub.endpoints,
                                                 svc.limits, svc.retry_budget, svc.outlier, svc.upstream, tls)
        a = table.app
        app = self._cluster(self.app_cluster, a.cluster, ((a.host, a.port),), a.limits, None, None, a.upstream)
        for name, state in old.items():
            if new.get(name) is not state:
                state.retire()
        if self.app_cluster is not None and self.app_cluster is not app:
            self.app_cluster.retire()
        self.clusters = new
        self.app_cluster = app
        metrics = self.metrics
        self.route_counts = {route: metrics.route("outbound", svc.name, route.name)
                             for svc in table.services.values() for route in svc.routes}
        self.route_stats = {route: metrics.vhost_route(svc.name, route.name)
                            for svc in table.services.values() for route in svc.routes}
        self.inbound_counts = metrics.inbound(table.service, None)
        self.source_counts: dict[str, dict[int, int]] = {}     # source identity -> inbound counts
        self.config_data = config_data
        self.table = table
        self.loaded_at = time.time()
        metrics.config_version = table.version

    def _cluster(self, old: ClusterState | None, name: str, endpoints: tuple[tuple[str, int], ...], limits: Limits,
                 budget: RetryBudget | None, outlier: OutlierSettings | None, upstream: Upstream,
                 tls: tuple[str, str] | None = None) -> ClusterState:
        sig = (tuple(endpoints), limits, budget, outlier, upstream, tls)
        if old is not None and not old.retired and old.signature == sig:
            return old
        return ClusterState(self, name, endpoints, limits, budget, outlier, upstream, tls)

    def _identities(self, table: Table) -> Identities | None:
        """The identity for `table`: the current one when its files and SPIFFE ID are the same
        (a rotation is the poll's business), else freshly loaded (TlsError when unusable)."""
        files = table.identity_files
        if files is None:
            return None
        cur = self.tls
        if cur is not None and cur.current.files == files and cur.current.uri == table.identity:
            return cur
        if self.metrics.tls is None:
            self.metrics.tls = TlsStats()
        if cur is not None:
            cur.replace(files, table.identity)
            return cur
        return Identities.load(files, table.identity, self.metrics.tls)

    def inbound_counts_for(self, source: str) -> dict[int, int]:
        """The inbound request counts of a peer with an identity (one dict look-up a request)."""
        counts = self.source_counts.get(source)
        if counts is None:
            counts = self.metrics.inbound(self.table.service, source)
            if len(self.source_counts) < MAX_SOURCES:   # (an identity header may say anything)
                self.source_counts[source] = counts
        return counts

    def gauges(self) -> dict[str, dict[str, int]]:
        now = time.monotonic()
        out = {name: c.gauges(now) for name, c in self.clusters.items()}
        if self.app_cluster is not None:
            out[self.app_cluster.name] = self.app_cluster.gauges(now)
        return out

    def active_requests(self) -> int:
        return sum(ls.rq_active for ls in self.metrics.listeners.values())

    def sweep(self) -> None:
        """Once a second: close idle client and upstream connections past their idle timeouts,
        answer heads unfinished past the request-headers timeout (408) and end requests on which
        nothing moved for the stream idle timeout (so each fires up to two seconds late)."""
        now = self.loop.time()
        limit = self.idle_timeout
        head_limit = self.request_headers_timeout
        stream_limit = self.stream_idle_timeout
        for down in list(self.downstreams):
            ex = down.current
            if ex is None:
                down.mark = None          # (holds no finished request, nor its buffers)
                if down.partial and now - down.head_at > head_limit and not down.closing:
                    down.lstats.rq_header_timeout += 1
                    down.reject(408, b"request header timeout")
                elif now - down.last_active > limit:
                    down.close()
            else:
                # what moved since the last sweep: the request's body in, the response out
                mark = (ex, ex.body_size, ex.bytes_out)
                if mark != down.mark:
                    down.mark = mark
                    down.quiet_since = now
                elif now - down.quiet_since > stream_limit:
                    ex.on_stream_idle()
        for cluster in list(self.clusters.values()) + [self.app_cluster]:
            for pool in cluster.plist:
                if pool.idle:
                    pool.close_idle(cluster.idle_timeout)
        if self.access_log is not None:
            self.access_log.flush()
        if self.tls is not None:
            self.tls.poll()

    def _access_log_for(self, configured: str | None) -> AccessLog | None:
        """The access log of `--access-log`, else of the config: the one open when its path is the
        same, else the file opened (TableError when it cannot be)."""
        path = self.access_log_option or configured
        old = self.access_log
        if (old.path if old is not None else None) == path:
            return old
        if not path:
            return None
        try:
            return AccessLog(path, self.metrics)
        except OSError as e:
            where = "--access-log" if self.access_log_option else "$.proxy.access_log"
            raise TableError(f"{where}: cannot open {path}: {(e.strerror or str(e)).lower()}") from None

    def start_drain(self) -> None:
        """SIGTERM: stop taking requests on kept-alive connections; finish the ones in flight."""
        self.draining = True
        for down in list(self.downstreams):
            self._close_when_done(down)

    def end_plaintext_inbound(self) -> int:
        """A reload made the inbound listener `strict`: plaintext connections accepted before it
        take no further request (the one in flight finishes), as Envoy drains a replaced listener."""
        ended = 0
        for down in list(self.downstreams):
            if down.listener == "inbound" and not isinstance(down, TlsDownstream):
                if down.current is None:
                    down.close()
                else:
                    down.current.close_after = True   # closed once its response is written
                ended += 1
        return ended

    @staticmethod
    def _close_when_done(down: Downstream) -> None:
        ex = down.current
        if ex is None:
            down.close()
        elif not ex.resp_started:
            ex.close_after = True


# ---- the client side ------------------------------------------------------------------------------

class Downstream(asyncio.BaseProtocol):   # (not asyncio.Protocol: TlsDownstream must not be one)
    __slots__ = ("rt", "listener", "outbound", "lstats", "transport", "parser", "peer_ip", "current", "parsing",
                 "queue", "new", "closing", "paused", "last_active", "raw", "url",
                 "partial", "max_head", "upgraded", "eof", "too_large", "corked", "wbuf",
                 "cur_len", "source", "xfcc", "max_count", "head_at", "mark", "quiet_since")

    def __init__(self, rt: Runtime, listener: str) -> None:
        self.rt = rt
        self.listener = listener
        self.outbound = listener == "outbound"
        self.lstats = rt.metrics.listeners[listener]
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made sets it, first
        self.parser: HttpRequestParser = None  # type: ignore[assignment]  # likewise
        self.peer_ip = "127.0.0.1"
        self.current: Exchange | None = None
        self.parsing: Exchange | None = None
        self.queue: deque[Exchange] | None = None
        self.new: list[Exchange] = []
        self.closing = False
        self.paused = 0
        self.last_active = 0.0
        self.raw: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.partial = 0
        self.max_head = rt.max_request_headers
        self.max_count = rt.max_header_count
        self.head_at = 0.0        # when the unfinished head began (loop time), while `partial`
        self.mark: tuple[Exchange, int, int] | None = None   # the sweep's view of the current request
        self.quiet_since = 0.0
        self.upgraded = False
        self.eof = False
        self.too_large = False
        self.cur_len = 0
        self.corked = 0           # > 0: writes are gathered, and sent as one when uncorked
        self.wbuf: list[bytes] = []
        self.source: str | None = None    # the peer's verified SPIFFE ID (mTLS only)
        self.xfcc: bytes | None = None    # the x-forwarded-client-cert line for the app (mTLS only)

    # ---- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # gets a Transport
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0]
        self.parser = HttpRequestParser(self)
        self.last_active = self.rt.loop.time()
        self.rt.downstreams.add(self)
        lstats = self.lstats
        lstats.cx_total += 1
        lstats.cx_active += 1
        if lstats.cx_active > self.rt.max_connections:   # Envoy's listener limit: accepted, closed at once
            lstats.cx_overflow += 1
            self.abort()
        elif self.rt.draining:
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.closing or self.upgraded:
            return
        self.cur_len = len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            self.upgraded = True     # the parser stops here: nothing after this request is read
        except HttpParserInvalidMethodError:
            self.reject(400)
            return
        except HttpParserError as err:
            self.reject(431 if self.too_large else parse_error_status(err))
            return
        if self.parsing is None and (self.url or self.raw or not (self.new or self.current)) and \
                (self.partial or self.url or self.raw or data.strip(b"\r\n")) and not self.http09(data):
            # a head is still incomplete (or began: a method's first letters are in no callback;
            # blank lines between requests begin nothing, as in Envoy's codec; an HTTP/0.9 line is
            # answered by http09)
            if not self.partial:
                self.head_at = self.rt.loop.time()   # the request-headers timeout runs from here
            self.partial += self.cur_len
            if self.partial > self.max_head:   # the head so far is already too large
                self.reject(431)
                return
        new = self.new
        if new:
            self.new = []
            for ex in new:
                if self.closing:
                    ex.cancel()
                elif self.current is None:
                    self.current = ex
                    ex.start()
                else:
                    if self.queue is None:
                        self.queue = deque()
                    self.queue.append(ex)
                    self.pause_reading_for("pipeline")

    def http09(self, data: bytes) -> bool:
        """A request line without an HTTP version (HTTP/0.9, `GET /p CRLF`) is answered 426 and the
        connection closed, as by Envoy, in order after the requests before it. llhttp takes such a
        line as the start of a head and waits for header lines that never come (it sets the
        version 0.9 only at the byte after the line end), so the line is recognised here: the
        read ends with the URL and a line end; or it is only the line end after a URL that ended
        the previous read, on a connection that has not sent a version yet."""
        version = self.parser.get_http_version()
        if version != "0.9":
            if self.raw or data[-1:] != b"\n":
                return False
            line = data.rstrip(b"\r\n")
            url = self.url
            if not (line.endswith(b" " + url) or (version == "0.0" and url.endswith(line))):
                return False
        ex = Exchange(self, self.rt, self.parser.get_method().decode("latin-1"), self.url.decode("latin-1"),
                      [], {}, None, False, True)
        ex.reject = 426
        ex.body_done = True
        self.url = b""
        self.raw = []
        self.partial = 0
        self.upgraded = True      # nothing after this line is read (the connection closes after the 426)
        self.new.append(ex)       # started (or queued behind the requests before it) by data_received
        return True

    def eof_received(self) -> bool:
        self.eof = True
        if self.current is None and not self.new:  # noqa: SIM103 - each answer says what it does
            return False          # closes the connection
        return True               # half-closed: answer what was asked, then close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        rt = self.rt
        rt.downstreams.discard(self)
        self.lstats.cx_active -= 1
        pending: list[Exchange] = []
        if self.current is not None:
            pending.append(self.current)
        if self.queue:
            pending.extend(self.queue)
        if self.parsing is not None:
            pending.append(self.parsing)
        pending.extend(self.new)
        self.current = None
        self.queue = None
        self.parsing = None
        self.new = []
        for ex in pending:
            ex.cancel()

    def pause_writing(self) -> None:
        ex = self.current
        if ex is not None and ex.conn is not None:
            ex.conn.pause()

    def resume_writing(self) -> None:
        ex = self.current
        if ex is not None and ex.conn is not None:
            ex.conn.resume()

    # ---- httptools callbacks -------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.parsing is None:      # (not trailers: they are not forwarded)
            if value[-1:] in _OWS:    # llhttp keeps trailing white space; Envoy's codec trims it
                value = value.rstrip(b" \t")
            raw = self.raw
            raw.append((name, value))
            if len(raw) > self.max_count:   # stops the parser here: the rest of a flood is never parsed
                self.too_large = True
                raise HeadersTooLarge()

    def on_headers_complete(self) -> None:
        if self.partial + self.cur_len > self.max_head:   # could be over the limit: count exactly
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.raw)
            if size > self.max_head:
                self.too_large = True
                raise HeadersTooLarge()
        parser = self.parser
        mb = parser.get_method()
        method = _METHODS.get(mb)
        if method is None:
            method = _METHODS[mb] = mb.decode("latin-1")
        hdict, self.raw = header_dict(self.raw)
        req_cl = None
        chunked = False
        if "transfer-encoding" in hdict:
            # llhttp accepts any list of codings ending in `chunked` (and no Content-Length with
            # it), and drops the others; Envoy implements `chunked` alone: 501 for the rest
            te = hdict["transfer-encoding"]
            if len(te) != 1 or te[0].lower() != "chunked":
                raise Refused(501)
            chunked = True
        elif "content-length" in hdict:
            req_cl = int(hdict["content-length"][0])
        ex = Exchange(self, self.rt, method, self.url.decode("latin-1"), self.raw, hdict,
                      req_cl, chunked, not parser.should_keep_alive() or self.eof)
        self.raw = []             # the next message's (no on_message_begin: one call less a request)
        self.url = b""
        self.partial = 0
        version = parser.get_http_version()
        if version != "1.1":
            ex.reject = 426           # Envoy refuses HTTP/1.0 by default, and 0.9 and 2.0 on an HTTP/1 port
        elif parser.should_upgrade() and method != "CONNECT":
            ex.reject = 403                                # no upgrade is configured: Envoy's 403
        self.parsing = ex
        self.new.append(ex)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is not None:
            ex.on_request_body(body)

    def on_message_complete(self) -> None:
        ex = self.parsing
        if ex is not None:
            self.parsing = None
            ex.on_request_end()

    # ---- used by the exchange --------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.corked:
            self.wbuf.append(data)
        elif not self.closing:
            self.transport.write(data)

    def flush(self) -> None:
        """Send the writes gathered while `corked` (an upstream connection corks its client while it
        parses a read: a response's head and body usually arrive together, and one write, one
        system call and one segment, is much cheaper than two)."""
        buf = self.wbuf
        self.wbuf = []
        if not self.closing:
            self.transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def abort(self) -> None:
        if not self.closing:
            self.closing = True
            self.wbuf = []
            self.transport.abort()

    def close(self, linger: bool = False) -> None:
        """Close after what was written. With `linger`, the client may still be sending (a reply
        came before its request ended): send FIN first and read on (discarding) until the client
        closes or LINGER_SECONDS pass, because closing with unread data makes the kernel send a
        reset, which can destroy the reply in the client's receive buffer (Envoy's delayed close)."""
        if not self.closing:
            if self.wbuf:
                buf = self.wbuf
                self.wbuf = []
                self.transport.write(b"".join(buf))
            self.closing = True
            if linger and self.transport.can_write_eof():
                if self.paused:
                    self.paused = 0
                    self.transport.resume_reading()
                self.transport.write_eof()
                self.rt.loop.call_later(LINGER_SECONDS, self.transport.close)
            else:
                self.transport.close()

    def pause_reading_for(self, reason: str) -> None:
        bit = _PAUSE_REASONS[reason]
        if not self.paused and not self.closing:
            self.transport.pause_reading()
        self.paused |= bit

    def resume_reading_for(self, reason: str) -> None:
        bit = _PAUSE_REASONS[reason]
        if self.paused & bit:
            self.paused &= ~bit
            if not self.paused and not self.closing:
                self.transport.resume_reading()

    def exchange_done(self, ex: Exchange, aborted: bool) -> None:
        if ex is not self.current:
            return
        self.current = None
        self.last_active = self.rt.loop.time()
        if self.closing:
            return
        if aborted or ex.close_after or self.rt.draining or ((self.eof or self.upgraded) and not self.queue):
            self.close(linger=not aborted and (self.parsing is not None or not ex.body_done))
            return
        queue = self.queue
        if queue:
            nxt = queue.popleft()
            if not queue:
                self.resume_reading_for("pipeline")
            self.current = nxt
            nxt.start()

    def reject(self, status: int, body: bytes = b"") -> None:
        """A request the parser refused: 400 (or 431, or the request-headers timeout's 408), then
        close. Nothing of it went upstream as a complete request; a request already streaming
        upstream is cut off. The body is the reason phrase unless given."""
        self.lstats.bad_request += 1
        self.lstats.count_status(status)
        current = self.current
        can_reply = current is None or not current.resp_started
        if self.parsing is not None and self.parsing is not current:
            self.parsing.cancel()
        self.parsing = None
        for ex in self.new:
            ex.cancel()
        self.new = []
        if self.queue:
            for ex in self.queue:
                ex.cancel()
            self.queue = None
        self.closing = True          # nothing more is read or started on this connection
        if current is not None:
            self.current = None
            current.cancel()
        # Nothing of the refused head stays referenced while the connection lingers (LINGER_SECONDS:
        # the timer keeps this object alive even after the client closed): a flood of oversized
        # heads would otherwise hold one head per connection closed in the last second (issue 18:
        # 16 clients of 98 KB heads took the RSS from 33 MB to 380 MB). Nothing parses after this.
        self.raw = []
        self.url = b""
        self.parser = None  # type: ignore[assignment]  # (its buffers with it) data_received reads no more
        if can_reply:   # Envoy's codec errors answer with the reason phrase as the body
            self.transport.write(local_reply(status, body or status_line(status)[13:-2], close=True))
        self.closing = False
        self.close(linger=True)     # the client may be sending still


class TlsDownstream(Downstream, TlsReads):
    """A client connection of the inbound listener over mTLS (the handshake is done when the
    event loop calls connection_made): the peer's identity and the XFCC line are read once here,
    never per request. `own_id` is the SPIFFE ID of the certificate this handshake presented.
    Its reads are TlsReads (net/upstream.py): each decrypted read is copied out of the shared
    buffer and handled as Downstream.data_received handles a plaintext one."""
    __slots__ = ("own_id",)

    def __init__(self, rt: Runtime, own_id: str) -> None:
        Downstream.__init__(self, rt, "inbound")
        self.own_id = own_id

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # gets a Transport
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            cert = sslobj.getpeercert()
            self.source = peer_identity(cert)
            self.xfcc = xfcc_line(self.own_id, sslobj.getpeercert(True), cert)
            self.rt.metrics.tls.handshakes["downstream"] += 1  # type: ignore[union-attr]  # mTLS: TLS stats exist
        Downstream.connection_made(self, transport)
