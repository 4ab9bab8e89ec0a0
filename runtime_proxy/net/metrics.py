"""Counters, gauges and the upstream-time histogram, and their two renderings.

The hot path only adds to slotted attributes and small dicts; everything else happens when the
admin listener renders `/stats` (Envoy's `name: value` text, or JSON) or `/metrics` (Prometheus
text). Names follow Envoy's where Envoy has the statistic, with Envoy's Prometheus spelling
(`envoy_cluster_upstream_rq_retry{envoy_cluster_name="…"}`), so that one dashboard reads both
proxies; what Envoy has no name for is under `meshc_`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Protocol

# Envoy's default histogram buckets for upstream_rq_time (milliseconds).
RQ_TIME_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
                   300000, 600000, 1800000, 3600000)

# Counters a route and a cluster both have: (attribute, Envoy statistic name).
UPSTREAM_COUNTERS = (
    ("rq_total", "upstream_rq_total"),
    ("retry", "upstream_rq_retry"),
    ("retry_success", "upstream_rq_retry_success"),
    ("retry_overflow", "upstream_rq_retry_overflow"),
    ("retry_limit_exceeded", "upstream_rq_retry_limit_exceeded"),
    ("rq_timeout", "upstream_rq_timeout"),
)
ROUTE_COUNTERS = UPSTREAM_COUNTERS

# Cluster counters: (attribute, Envoy statistic name).
CLUSTER_COUNTERS = UPSTREAM_COUNTERS + (
    ("pending_overflow", "upstream_rq_pending_overflow"),
    ("pending_total", "upstream_rq_pending_total"),
    ("rq_per_try_timeout", "upstream_rq_per_try_timeout"),
    ("rq_rx_reset", "upstream_rq_rx_reset"),
    ("cx_total", "upstream_cx_total"),
    ("cx_overflow", "upstream_cx_overflow"),
    ("cx_connect_fail", "upstream_cx_connect_fail"),
    ("cx_connect_timeout", "upstream_cx_connect_timeout"),
    ("cx_destroy_remote", "upstream_cx_destroy_remote"),
    ("ejections_enforced", "outlier_detection.ejections_enforced_total"),
    ("mirror_total", "upstream_rq_mirror_total"),
)
# The outlier detector's counts by kind (decide.outlier.OutlierState.counts): key, Envoy's name.
OUTLIER_COUNTERS = tuple((f"{which}_{kind}", f"outlier_detection.ejections_{which}_{kind}")
                         for which in ("detected", "enforced")
                         for kind in ("consecutive_5xx", "consecutive_gateway_failure"))


class UpstreamStats:
    """What Envoy's router charges to a route (`vhost.SERVICE.route.ROUTE.*`, the route's
    `stat_prefix`) and to a cluster alike: attempts sent (`upstream_rq_total`), the final outcome
    of each request by status (`upstream_rq_<code>`: an upstream answer that is not retried, or
    the router's 503/504 after a reset, connect failure, overflow or timeout), retries, route
    timeouts, and the time from the request's dispatch to the end of the upstream answer that
    ended it (`upstream_rq_time`, whole milliseconds as Envoy records them)."""
    __slots__ = tuple(a for a, _ in UPSTREAM_COUNTERS) + ("codes", "buckets", "time_sum")
    # the counters of UPSTREAM_COUNTERS, set to 0 by __init__
    rq_total: int
    retry: int
    retry_success: int
    retry_overflow: int
    retry_limit_exceeded: int
    rq_timeout: int

    def __init__(self) -> None:
        for attr, _ in UPSTREAM_COUNTERS:
            setattr(self, attr, 0)
        self.codes: dict[int, int] = {}
        self.buckets = [0] * (len(RQ_TIME_BUCKETS) + 1)
        self.time_sum = 0

    def charge(self, status: int) -> None:
        """The final outcome of a request that reached the router's upstream part
        (Exchange.on_response_head has it inlined)."""
        codes = self.codes
        codes[status] = codes.get(status, 0) + 1

    def observe(self, ms: int) -> None:
        """The time of an upstream answer that ended its request (whole milliseconds; the count
        is the buckets' sum). Exchange.on_response_end has it inlined."""
        self.buckets[bisect_left(RQ_TIME_BUCKETS, ms)] += 1
        self.time_sum += ms


class RouteStats(UpstreamStats):
    """Per route of a destination service; kept across reloads."""
    __slots__ = ()


class ClusterStats(UpstreamStats):
    """Per subset cluster (the Envoy cluster name); kept across reloads."""
    __slots__ = tuple(a for a, _ in CLUSTER_COUNTERS[len(UPSTREAM_COUNTERS):]) + (
        "retry_codes", "outlier", "cx_active", "rq_active")
    # the counters of CLUSTER_COUNTERS past UPSTREAM_COUNTERS, set to 0 by __init__
    pending_overflow: int
    pending_total: int
    rq_per_try_timeout: int
    rq_rx_reset: int
    cx_total: int
    cx_overflow: int
    cx_connect_fail: int
    cx_connect_timeout: int
    cx_destroy_remote: int
    ejections_enforced: int
    mirror_total: int

    def __init__(self) -> None:
        super().__init__()
        for attr, _ in CLUSTER_COUNTERS[len(UPSTREAM_COUNTERS):]:
            setattr(self, attr, 0)
        # upstream answers that were retried, by status (Envoy's `retry.upstream_rq_<code>`)
        self.retry_codes: dict[int, int] = {}
        self.outlier: dict[str, int] = {}     # OUTLIER_COUNTERS, kept by the cluster's detector
        self.cx_active = 0
        self.rq_active = 0


LISTENER_COUNTERS = (
    ("cx_total", "downstream_cx_total"),
    ("rq_total", "downstream_rq_total"),
    ("rq_rx_reset", "downstream_rq_rx_reset"),
    ("bad_request", "downstream_rq_bad_request"),      # ours: 400/431/413 before routing
    ("rq_header_timeout", "downstream_rq_header_timeout"),   # a head unfinished past the timeout: 408
    ("rq_idle_timeout", "downstream_rq_idle_timeout"),       # the stream idle timeout fired
    ("cx_overflow", "downstream_cx_overflow"),         # closed at once: the listener was at max_connections
    ("aborts_injected", "fault.aborts_injected"),
    ("delays_injected", "fault.delays_injected"),
    ("no_route", "no_route"),
)

# Responses by class: (attribute, class digit); Envoy's `downstream_rq_<N>xx`, in Prometheus
# `envoy_http_downstream_rq_xx{envoy_response_code_class="N"}`.
LISTENER_CLASSES = (("rq_1xx", "1"), ("rq_2xx", "2"), ("rq_3xx", "3"), ("rq_4xx", "4"), ("rq_5xx", "5"))
# Authorization, as Envoy's RBAC filters count it (decide/request.py RBAC_*): the attributes a
# decision adds to, rendered as `rbac.allowed` and `rbac.denied`.
LISTENER_RBAC = ("rbac_allowed", "rbac_denied", "rbac_allowed_twice", "rbac_allowed_denied")


class ListenerStats:
    __slots__ = tuple(a for a, _ in LISTENER_COUNTERS) + tuple(a for a, _ in LISTENER_CLASSES) + LISTENER_RBAC + (
        "cx_active", "rq_active")
    # the counters of LISTENER_COUNTERS, set to 0 by __init__
    cx_total: int
    rq_total: int
    rq_1xx: int
    rq_2xx: int
    rq_3xx: int
    rq_4xx: int
    rq_5xx: int
    rq_rx_reset: int
    bad_request: int
    rq_header_timeout: int
    rq_idle_timeout: int
    cx_overflow: int
    rbac_allowed: int
    rbac_denied: int
    rbac_allowed_twice: int
    rbac_allowed_denied: int
    aborts_injected: int
    delays_injected: int
    no_route: int

    def __init__(self) -> None:
        for attr, _ in LISTENER_COUNTERS + LISTENER_CLASSES:
            setattr(self, attr, 0)
        for attr in LISTENER_RBAC:
            setattr(self, attr, 0)
        self.cx_active = 0
        self.rq_active = 0

    def rbac(self) -> tuple[int, int]:
        """Envoy's `rbac.allowed` and `rbac.denied` (summed over the RBAC filters)."""
        return (self.rbac_allowed + 2 * self.rbac_allowed_twice + self.rbac_allowed_denied,
                self.rbac_denied + self.rbac_allowed_denied)

    def count_status(self, status: int) -> None:
        self.rq_total += 1
        c = status // 100
        if c == 2:
            self.rq_2xx += 1
        elif c == 5:
            self.rq_5xx += 1
        elif c == 4:
            self.rq_4xx += 1
        elif c == 3:
            self.rq_3xx += 1
        else:
            self.rq_1xx += 1


MAX_SOURCES = 256        # distinct source identities counted per service; the rest count as `other`


class CertificateInfo(Protocol):
    """What the statistics show of the certificate in use (tls.Identity; tls.py imports this module)."""
    @property
    def uri(self) -> str: ...
    @property
    def serial(self) -> str: ...
    @property
    def not_after(self) -> float: ...


# A refused or failed handshake (tls.failure_reason, and `san_mismatch`: a server that is not the
# destination's identity) -> the Envoy statistic that counts it (`listener.ADDRESS.ssl.*` inbound,
# `cluster.NAME.ssl.*` outbound; checked against Envoy 1.40). `timeout` has no Envoy counterpart
# (the Envoy sidecar sets no handshake timeout): only meshc_tls_handshake_failures_total has it.
ENVOY_SSL_FAILURES = {
    "no_certificate": "fail_verify_no_cert",
    "expired": "fail_verify_error", "unknown_ca": "fail_verify_error", "self_signed": "fail_verify_error",
    "not_yet_valid": "fail_verify_error", "bad_purpose": "fail_verify_error", "verify_failed": "fail_verify_error",
    "san_mismatch": "fail_verify_san",
    "not_tls": "connection_error", "protocol_version": "connection_error", "peer_alert": "connection_error",
    "connection_closed": "connection_error", "error": "connection_error",
}
ENVOY_SSL_STATS = ("connection_error", "fail_verify_error", "fail_verify_no_cert", "fail_verify_san")


class TlsStats:
    """Mutual TLS: handshakes and refusals by side (`downstream`: the inbound listener;
    `upstream`: connections to destinations) and reason (tls.failure_reason), plaintext
    connections a permissive listener took, identity rotations, and the active certificate."""
    __slots__ = ("handshakes", "failures", "clusters", "cluster_failures", "plaintext", "rotations_ok",
                 "rotations_rejected", "identity")

    def __init__(self) -> None:
        self.handshakes = {"downstream": 0, "upstream": 0}
        self.failures: dict[tuple[str, str], int] = {}
        self.clusters: dict[str, int] = {}                       # upstream handshakes by cluster
        self.cluster_failures: dict[tuple[str, str], int] = {}   # (cluster, reason) -> count
        self.plaintext = 0
        self.rotations_ok = 0
        self.rotations_rejected = 0
        self.identity: CertificateInfo | None = None      # tls.Identity in use (serial, expiry)

    def failed(self, side: str, reason: str) -> None:
        key = (side, reason)
        self.failures[key] = self.failures.get(key, 0) + 1

    def cluster_handshake(self, cluster: str) -> None:
        self.handshakes["upstream"] += 1
        self.clusters[cluster] = self.clusters.get(cluster, 0) + 1

    def cluster_failed(self, cluster: str, reason: str) -> None:
        self.failed("upstream", reason)
        key = (cluster, reason)
        self.cluster_failures[key] = self.cluster_failures.get(key, 0) + 1

    def envoy_listener(self) -> dict[str, int]:
        """The inbound listener's Envoy `ssl.*` counters."""
        out = dict.fromkeys(("handshake",) + ENVOY_SSL_STATS, 0)
        out["handshake"] = self.handshakes["downstream"]
        for (side, reason), n in self.failures.items():
            stat = ENVOY_SSL_FAILURES.get(reason)
            if side == "downstream" and stat is not None:
                out[stat] += n
        return out

    def envoy_clusters(self) -> dict[str, dict[str, int]]:
        """Each mTLS cluster's Envoy `ssl.*` counters (those with a connection attempt)."""
        out: dict[str, dict[str, int]] = {}
        for name in set(self.clusters) | {c for c, _ in self.cluster_failures}:
            out[name] = dict.fromkeys(("handshake",) + ENVOY_SSL_STATS, 0)
            out[name]["handshake"] = self.clusters.get(name, 0)
        for (name, reason), n in self.cluster_failures.items():
            stat = ENVOY_SSL_FAILURES.get(reason)
            if stat is not None:
                out[name][stat] += n
        return out


class Metrics:
    def __init__(self) -> None:
        self.clusters: dict[str, ClusterStats] = {}
        # (destination service, route name) -> its statistics (Envoy: virtual host, route stat_prefix)
        self.vhost_routes: dict[tuple[str, str], RouteStats] = {}
        self.listeners = {"inbound": ListenerStats(), "outbound": ListenerStats()}
        # (listener, service, route, source identity) -> {status: count}; route "" for replies
        # before a route matched; the source identity (`unknown`: none) only on inbound requests
        self.routes: dict[tuple[str, str, str, str | None], dict[int, int]] = {}
        self.sources: dict[str, set[str]] = {}     # service -> source identities counted
        # (service, rule) -> inbound requests that authorization denied; rule "none": the default
        # (Envoy's response code details say `rbac_access_denied_matched_policy[none]` then)
        self.denied: dict[tuple[str, str], int] = {}
        self.reloads_ok = 0
        self.access_log_dropped = 0                # lines the access log dropped (server.AccessLog)
        self.reloads_rejected = 0
        self.config_version = ""
        self.tls: TlsStats | None = None           # set when the sidecar has identity files
        self.inbound_address = ""                  # Envoy's listener address label: HOST_PORT

    def cluster(self, name: str) -> ClusterStats:
        stats = self.clusters.get(name)
        if stats is None:
            stats = self.clusters[name] = ClusterStats()
        return stats

    def vhost_route(self, service: str, route: str) -> RouteStats:
        key = (service, route)
        stats = self.vhost_routes.get(key)
        if stats is None:
            stats = self.vhost_routes[key] = RouteStats()
        return stats

    def route(self, listener: str, service: str, route: str, source: str | None = None) -> dict[int, int]:
        key = (listener, service, route, source)
        counts = self.routes.get(key)
        if counts is None:
            counts = self.routes[key] = {}
        return counts

    def rbac_denied(self, service: str, rule: str | None) -> None:
        """One inbound request denied by `rule` (None: the default)."""
        key = (service, rule or "none")
        self.denied[key] = self.denied.get(key, 0) + 1

    def inbound(self, service: str, source: str | None) -> dict[int, int]:
        """The counts of inbound requests to `service` from the peer `source` (None: no verified
        identity). Identities come from the mesh CA, so they are few; a bound keeps it so."""
        if source is None:
            source = "unknown"
        else:
            seen = self.sources.get(service)
            if seen is None:
                seen = self.sources[service] = set()
            if source not in seen:
                if len(seen) >= MAX_SOURCES:
                    source = "other"
                else:
                    seen.add(source)
        return self.route("inbound", service, "inbound", source)

    # ---- rendering (admin listener only) ----------------------------------------------------

    def stats_items(self, gauges: dict[str, dict[str, int]]) -> list[tuple[str, int]]:
        """Envoy-style flat statistics: `cluster.NAME.upstream_rq_retry`, `http.outbound.…`,
        `vhost.SERVICE.route.ROUTE.…`."""
        items: list[tuple[str, int]] = []
        for name in sorted(self.clusters):
            c = self.clusters[name]
            prefix = f"cluster.{name}."
            for attr, stat in CLUSTER_COUNTERS:
                items.append((prefix + stat, getattr(c, attr)))
            for key, stat in OUTLIER_COUNTERS:
                items.append((prefix + stat, c.outlier.get(key, 0)))
            _upstream_codes(items, prefix, c.codes)
            _upstream_codes(items, prefix + "retry.", c.retry_codes)
            items.append((f"cluster.{name}.upstream_cx_active", c.cx_active))
            items.append((f"cluster.{name}.upstream_rq_active", c.rq_active))
            for gauge, value in sorted(gauges.get(name, {}).items()):
                items.append((f"cluster.{name}.{gauge}", value))
        for (service, route), r in sorted(self.vhost_routes.items()):
            prefix = f"vhost.{service}.route.{route}."
            for attr, stat in ROUTE_COUNTERS:
                items.append((prefix + stat, getattr(r, attr)))
            _upstream_codes(items, prefix, r.codes)
        for lname, ls in self.listeners.items():
            for attr, stat in LISTENER_COUNTERS:
                items.append((f"http.{lname}.{stat}", getattr(ls, attr)))
            for attr, digit in LISTENER_CLASSES:
                items.append((f"http.{lname}.downstream_rq_{digit}xx", getattr(ls, attr)))
            allowed, denied = ls.rbac()
            items.append((f"http.{lname}.rbac.allowed", allowed))
            items.append((f"http.{lname}.rbac.denied", denied))
            items.append((f"http.{lname}.downstream_rq_completed", _completed(ls)))
            items.append((f"http.{lname}.downstream_cx_active", ls.cx_active))
            items.append((f"http.{lname}.downstream_rq_active", ls.rq_active))
        for (lname, service, route, source), counts in sorted(self.routes.items(), key=_route_key):
            # the flat name keeps its old form for callers without an identity (plaintext)
            via = f".{source}" if source is not None and source != "unknown" else ""
            for code, n in sorted(counts.items()):
                items.append((f"route.{lname}.{service or '-'}.{route or '-'}{via}.rq_{code}", n))
        for (service, rule), n in sorted(self.denied.items()):
            items.append((f"rbac.{service}.{rule}.denied", n))
        items.append(("server.config_reload_ok", self.reloads_ok))
        items.append(("server.config_reload_rejected", self.reloads_rejected))
        items.append(("access_log.dropped", self.access_log_dropped))
        tls = self.tls
        if tls is not None:
            for side in ("downstream", "upstream"):
                items.append((f"tls.{side}.handshake", tls.handshakes[side]))
            for (side, reason), n in sorted(tls.failures.items()):
                items.append((f"tls.{side}.handshake_failure.{reason}", n))
            items.append(("tls.downstream.plaintext", tls.plaintext))
            items.append(("tls.rotation_ok", tls.rotations_ok))
            items.append(("tls.rotation_rejected", tls.rotations_rejected))
            if tls.identity is not None:
                items.append(("tls.certificate.expiration_unix_time_seconds", int(tls.identity.not_after)))
            for stat, n in tls.envoy_listener().items():
                items.append((f"listener.{self.inbound_address}.ssl.{stat}", n))
            for name, stats in sorted(tls.envoy_clusters().items()):
                for stat, n in stats.items():
                    items.append((f"cluster.{name}.ssl.{stat}", n))
        return items

    def prometheus(self, gauges: dict[str, dict[str, int]]) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str, samples: Iterable[tuple[str, object]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                out.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")

        names = sorted(self.clusters)
        cl = [(f'envoy_cluster_name="{_esc(n)}"', self.clusters[n]) for n in names]
        for attr, stat in CLUSTER_COUNTERS:
            prom = "envoy_cluster_" + stat.replace(".", "_")
            family(prom, "counter", f"cluster {stat}", [(label, getattr(c, attr)) for label, c in cl])
        for key, stat in OUTLIER_COUNTERS:
            family("envoy_cluster_" + stat.replace(".", "_"), "counter", f"cluster {stat}",
                   [(label, c.outlier.get(key, 0)) for label, c in cl])
        _upstream_families(out, "envoy_cluster_", cl)
        _code_families(out, "envoy_cluster_retry_", [(label, c.retry_codes) for label, c in cl])
        family("envoy_cluster_upstream_cx_active", "gauge", "open upstream connections",
               [(label, c.cx_active) for label, c in cl])
        family("envoy_cluster_upstream_rq_active", "gauge", "upstream requests in flight",
               [(label, c.rq_active) for label, c in cl])
        gauge_names = sorted({g for per in gauges.values() for g in per})
        for g in gauge_names:
            family("envoy_cluster_" + g.replace(".", "_"), "gauge", f"cluster {g}",
                   [(f'envoy_cluster_name="{_esc(n)}"', gauges[n][g]) for n in names
                    if n in gauges and g in gauges[n]])
        _histogram(out, "envoy_cluster_upstream_rq_time", cl)
        rl = [(f'envoy_virtual_host="{_esc(s)}",envoy_route="{_esc(r)}"', stats)
              for (s, r), stats in sorted(self.vhost_routes.items())]
        for attr, stat in ROUTE_COUNTERS:
            family("envoy_vhost_route_" + stat, "counter", f"route {stat}",
                   [(label, getattr(r, attr)) for label, r in rl])
        _upstream_families(out, "envoy_vhost_route_", rl)
        _histogram(out, "envoy_vhost_route_upstream_rq_time", rl)
        lst = [(f'envoy_http_conn_manager_prefix="{ln}"', ls) for ln, ls in self.listeners.items()]
        for attr, stat in LISTENER_COUNTERS:
            prom = "envoy_http_" + stat.replace(".", "_")
            family(prom, "counter", f"listener {stat}", [(label, getattr(ls, attr)) for label, ls in lst])
        rbac = [(label, ls.rbac()) for label, ls in lst]
        family("envoy_http_rbac_allowed", "counter", "requests an RBAC filter allowed (one per filter)",
               [(label, allowed) for label, (allowed, _) in rbac])
        family("envoy_http_rbac_denied", "counter", "requests authorization denied",
               [(label, denied) for label, (_, denied) in rbac])
        family("envoy_http_downstream_rq_xx", "counter", "downstream responses by class",
               [(f'envoy_response_code_class="{digit}",{label}', getattr(ls, attr))
                for label, ls in lst for attr, digit in LISTENER_CLASSES])
        family("envoy_http_downstream_rq_completed", "counter", "downstream responses",
               [(label, _completed(ls)) for label, ls in lst])
        family("envoy_http_downstream_cx_active", "gauge", "open downstream connections",
               [(label, ls.cx_active) for label, ls in lst])
        family("envoy_http_downstream_rq_active", "gauge", "downstream requests in flight",
               [(label, ls.rq_active) for label, ls in lst])
        family("meshc_route_requests_total", "counter",
               "requests by listener, service, route, status and (inbound) source identity",
               [(f'listener="{ln}",service="{_esc(s)}",route="{_esc(r)}",'
                 + (f'source_identity="{_esc(src)}",' if src is not None else "") + f'code="{code}"', n)
                for (ln, s, r, src), counts in sorted(self.routes.items(), key=_route_key)
                for code, n in sorted(counts.items())])
        family("meshc_rbac_denied_total", "counter",
               "inbound requests denied by authorization, by service and deciding rule (`none`: the default)",
               [(f'service="{_esc(svc)}",rule="{_esc(rule)}"', n) for (svc, rule), n in sorted(self.denied.items())])
        family("meshc_config_reloads_total", "counter", "config reloads by result",
               [('result="ok"', self.reloads_ok), ('result="rejected"', self.reloads_rejected)])
        family("meshc_access_log_dropped_total", "counter",
               "access log lines dropped: over the lines held between two writes, or the file refused them",
               [("", self.access_log_dropped)])
        family("meshc_config_info", "gauge", "the active config version",
               [(f'version="{_esc(self.config_version)}"', 1)])
        tls = self.tls
        if tls is not None:
            family("meshc_tls_handshakes_total", "counter", "completed mTLS handshakes by side",
                   [(f'side="{side}"', n) for side, n in tls.handshakes.items()])
            family("meshc_tls_handshake_failures_total", "counter",
                   "refused or failed TLS handshakes by side and reason",
                   [(f'side="{side}",reason="{reason}"', n) for (side, reason), n in sorted(tls.failures.items())])
            listener = tls.envoy_listener()
            address = f'envoy_listener_address="{_esc(self.inbound_address)}"'
            clusters = sorted(tls.envoy_clusters().items())
            for stat in ("handshake",) + ENVOY_SSL_STATS:
                family(f"envoy_listener_ssl_{stat}", "counter", f"inbound listener ssl.{stat}",
                       [(address, listener[stat])])
                family(f"envoy_cluster_ssl_{stat}", "counter", f"cluster ssl.{stat}",
                       [(f'envoy_cluster_name="{_esc(n)}"', c[stat]) for n, c in clusters])
            family("meshc_tls_plaintext_connections_total", "counter",
                   "plaintext connections a permissive inbound listener accepted", [("", tls.plaintext)])
            family("meshc_tls_rotations_total", "counter", "identity file changes by result",
                   [('result="ok"', tls.rotations_ok), ('result="rejected"', tls.rotations_rejected)])
            ident = tls.identity
            if ident is not None:
                family("meshc_tls_certificate_info", "gauge", "the certificate in use",
                       [(f'identity="{_esc(ident.uri)}",serial="{_esc(ident.serial)}"', 1)])
                family("meshc_tls_certificate_expiration_unix_time_seconds", "gauge",
                       "when the certificate in use expires", [("", int(ident.not_after))])
        return "\n".join(out) + "\n"


def _completed(ls: ListenerStats) -> int:
    return ls.rq_1xx + ls.rq_2xx + ls.rq_3xx + ls.rq_4xx + ls.rq_5xx


def _upstream_codes(items: list[tuple[str, int]], prefix: str, codes: dict[int, int]) -> None:
    """Envoy's flat code statistics under `prefix`: `upstream_rq_<code>`, `upstream_rq_<N>xx`
    and `upstream_rq_completed` (their sum)."""
    for code in sorted(codes):
        items.append((f"{prefix}upstream_rq_{code}", codes[code]))
    for digit, n in sorted(_classes(codes).items()):
        items.append((f"{prefix}upstream_rq_{digit}xx", n))
    items.append((f"{prefix}upstream_rq_completed", sum(codes.values())))


def _classes(codes: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for code, n in codes.items():
        out[code // 100] = out.get(code // 100, 0) + n
    return out


def _code_families(out: list[str], prefix: str, rows: list[tuple[str, dict[int, int]]]) -> None:
    """Envoy's Prometheus spelling of the code statistics: `PREFIXupstream_rq{envoy_response_code}`,
    `PREFIXupstream_rq_xx{envoy_response_code_class}`, `PREFIXupstream_rq_completed` (the sum);
    the code label first, as Envoy writes it. Only the codes seen (Envoy's are dynamic)."""
    name = prefix + "upstream_rq"
    out.append(f"# TYPE {name} counter")
    out += [f'{name}{{envoy_response_code="{code}",{label}}} {codes[code]}'
            for label, codes in rows for code in sorted(codes)]
    out.append(f"# TYPE {name}_xx counter")
    out += [f'{name}_xx{{envoy_response_code_class="{digit}",{label}}} {n}'
            for label, codes in rows for digit, n in sorted(_classes(codes).items())]
    out.append(f"# TYPE {name}_completed counter")
    out += [f"{name}_completed{{{label}}} {sum(codes.values())}" for label, codes in rows if codes]


def _upstream_families(out: list[str], prefix: str, rows: Sequence[tuple[str, UpstreamStats]]) -> None:
    _code_families(out, prefix, [(label, s.codes) for label, s in rows])


def _histogram(out: list[str], name: str, rows: Sequence[tuple[str, UpstreamStats]]) -> None:
    """`upstream_rq_time` in milliseconds, with Envoy's default buckets."""
    out.append(f"# TYPE {name} histogram")
    for label, c in rows:
        acc = 0
        for bound, count in zip(RQ_TIME_BUCKETS, c.buckets):
            acc += count
            out.append(f'{name}_bucket{{{label},le="{bound}"}} {acc}')
        acc += c.buckets[-1]
        out.append(f'{name}_bucket{{{label},le="+Inf"}} {acc}')
        out.append(f"{name}_sum{{{label}}} {c.time_sum}")
        out.append(f"{name}_count{{{label}}} {acc}")


def _route_key(item: tuple[tuple[str, str, str, str | None], dict[int, int]]) -> tuple[str, str, str, str]:
    (listener, service, route, source), _ = item
    return (listener, service, route, source or "")


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
