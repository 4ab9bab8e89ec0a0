"""Rows of `meshc stat` from two scrapes of one proxy, for Envoy and the native proxy alike: both
serve the same Prometheus families (docs/observability.md, "Golden signals"), so nothing here
depends on the plane but where denials by rule come from (the native proxy's
`meshc_rbac_denied_total`, Envoy's access log, both read by compiler/cli/stat.py).

Rows, per proxy:
- `route`: a route of a destination, from `envoy_vhost_route_*{envoy_virtual_host, envoy_route}`:
  requests (responses by code), success rate (not 5xx), latency (`…_upstream_rq_time`), retries,
  timeouts;
- `destination`: a service the proxy calls, its subset clusters (`outbound|SUBSET|SERVICE`)
  summed: final answers (retries not counted), success rate, latency, retries, outlier ejections;
- `inbound`: the proxy's own service, its inbound listener: requests, success rate, latency of
  the local application (cluster `inbound|SERVICE`), authorization denials.

Counts are totals since the proxy started; `window` is the difference between the two scrapes
(rates per second over it); latency percentiles are Prometheus' `histogram_quantile` over the
window's buckets, or over the totals when the window's histogram saw no request (Envoy adds to
its histograms at each stats flush, every 5 s, so its window percentiles cover its flush periods).
A proxy restarted between the scrapes (a counter went down) has its window counted from 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.observe.prom import Labels, quantile

Samples = dict[str, dict[Labels, float]]
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


@dataclass
class Scrape:
    at: float                               # time.monotonic() of the scrape
    samples: Samples
    denied_by_rule: dict[str, int] | None   # rule ("none": the default) -> denials; None: unknown


@dataclass
class Counts:
    requests: float = 0.0
    failures: float = 0.0                   # 5xx
    retries: float = 0.0
    timeouts: float = 0.0
    ejections: float = 0.0
    denied: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)   # le -> cumulative count

    def minus(self, before: Counts) -> Counts:
        """The window since `before`; a counter that went down (the proxy restarted between the
        scrapes) counts from 0, as Prometheus' `increase` treats a counter reset."""
        if any(getattr(self, f) < getattr(before, f) for f in _COUNTERS) or any(
                n < before.buckets.get(le, 0.0) for le, n in self.buckets.items()):
            before = Counts()
        return Counts(self.requests - before.requests, self.failures - before.failures,
                      self.retries - before.retries, self.timeouts - before.timeouts,
                      self.ejections - before.ejections, self.denied - before.denied,
                      {le: n - before.buckets.get(le, 0.0) for le, n in self.buckets.items()})


_COUNTERS = ("requests", "failures", "retries", "timeouts", "ejections", "denied")


def _get(labels: Labels, key: str) -> str | None:
    for k, v in labels:
        if k == key:
            return v
    return None


def _split_cluster(name: str) -> tuple[str, str | None, str | None]:
    """(`outbound`/`inbound`/other, service, subset) of a cluster name (compiler/ir/names.py)."""
    parts = name.split("|")
    if len(parts) == 3 and parts[0] == "outbound":
        return "outbound", parts[2], parts[1]
    if len(parts) == 2 and parts[0] == "inbound":
        return "inbound", parts[1], None
    return "other", None, None


def _add_codes(c: Counts, code: str | None, n: float, per_class: bool) -> None:
    if code is None:
        return
    c.requests += n
    if (code == "5") if per_class else code.startswith("5"):
        c.failures += n


def _collect(samples: Samples, prefix: str, key_of) -> dict[tuple, Counts]:
    """Counts per key from the families `PREFIX_upstream_rq…`; `key_of(labels)` gives the row key
    (None: not counted)."""
    out: dict[tuple, Counts] = {}

    def at(labels: Labels) -> Counts | None:
        key = key_of(labels)
        if key is None:
            return None
        found = out.get(key)
        if found is None:
            found = out[key] = Counts()
        return found

    by_code = samples.get(f"{prefix}_upstream_rq", {})
    by_class = samples.get(f"{prefix}_upstream_rq_xx", {})
    for labels, n in by_code.items():
        c = at(labels)
        if c is not None:
            _add_codes(c, _get(labels, "envoy_response_code"), n, False)
    if not by_code:     # only classes (a plane that keeps no per-code counts)
        for labels, n in by_class.items():
            c = at(labels)
            if c is not None:
                _add_codes(c, _get(labels, "envoy_response_code_class"), n, True)
    for family, attr in (("upstream_rq_retry", "retries"), ("upstream_rq_timeout", "timeouts"),
                         ("outlier_detection_ejections_enforced_total", "ejections")):
        for labels, n in samples.get(f"{prefix}_{family}", {}).items():
            c = at(labels)
            if c is not None:
                setattr(c, attr, getattr(c, attr) + n)
    for labels, n in samples.get(f"{prefix}_upstream_rq_time_bucket", {}).items():
        c = at(tuple(kv for kv in labels if kv[0] != "le"))
        le = _get(labels, "le")
        if c is not None and le is not None:
            bound = float(le)
            c.buckets[bound] = c.buckets.get(bound, 0.0) + n
    return out


def _listener(samples: Samples, prefix: str) -> Counts:
    """The inbound (or outbound) listener's requests, 5xx and authorization denials."""
    c = Counts()

    def value(name: str, **want: str) -> float:
        total = 0.0
        for labels, n in samples.get(name, {}).items():
            if _get(labels, "envoy_http_conn_manager_prefix") == prefix and \
                    all(_get(labels, k) == v for k, v in want.items()):
                total += n
        return total

    c.requests = value("envoy_http_downstream_rq_total")
    if "envoy_http_downstream_rq_xx" in samples:
        c.failures = value("envoy_http_downstream_rq_xx", envoy_response_code_class="5")
    else:
        c.failures = value("envoy_http_downstream_rq_5xx")
    c.denied = value("envoy_http_rbac_denied")
    return c


def counts(samples: Samples, proxy: str) -> dict[tuple[str, str, str | None], Counts]:
    """(kind, service, route) -> Counts of one scrape of the proxy of service `proxy`."""
    out: dict[tuple[str, str, str | None], Counts] = {}
    routes = _collect(samples, "envoy_vhost_route",
                      lambda labels: (_get(labels, "envoy_virtual_host"), _get(labels, "envoy_route"))
                      if _get(labels, "envoy_route") is not None else None)
    for (service, route), c in routes.items():
        if service and route:
            out[("route", service, route)] = c

    def destination(labels: Labels):
        name = _get(labels, "envoy_cluster_name")
        side, service, _ = _split_cluster(name or "")
        return (side, service) if service else None

    clusters = _collect(samples, "envoy_cluster", destination)
    for (side, service), c in clusters.items():
        if side == "outbound":
            out[("destination", service, None)] = c
    inbound = _listener(samples, "inbound")
    app = clusters.get(("inbound", proxy))
    if app is not None:
        inbound.buckets = app.buckets
    out[("inbound", proxy, None)] = inbound
    return out


def _rate(n: float, seconds: float) -> float | None:
    return round(n / seconds, 3) if seconds > 0 else None


def _success(c: Counts) -> float | None:
    return round(1 - c.failures / c.requests, 4) if c.requests > 0 else None


def _latency(c: Counts) -> dict[str, float | None]:
    buckets = sorted(c.buckets.items())
    return {name: (round(v, 3) if (v := quantile(q, buckets)) is not None else None) for name, q in QUANTILES}


def _observed(window: Counts) -> bool:
    """The window's histogram saw a request: its +Inf bucket (the count) grew. Not its request
    counter: Envoy adds to its histograms only at each stats flush (5 s), so a window can hold new
    requests and no new bucket counts; the totals are used then."""
    return window.buckets.get(float("inf"), 0.0) > 0


def rows(proxy: str, first: Scrape, second: Scrape) -> list[dict]:
    """The rows of one proxy between two scrapes (the same scrape twice: no window)."""
    seconds = round(second.at - first.at, 3)
    before = counts(first.samples, proxy)
    out = []
    for key, now in sorted(counts(second.samples, proxy).items(), key=lambda kv: _order(kv[0])):
        kind, service, route = key
        window = now.minus(before.get(key, Counts()))
        row: dict[str, object] = {
            "kind": kind, "service": service, "route": route,
            "requests": int(now.requests), "success_rate": _success(now),
            "retries": int(now.retries), "timeouts": int(now.timeouts),
            "ejections": int(now.ejections) if kind == "destination" else None,
            "denied": int(now.denied) if kind == "inbound" else None,
            "window": {"seconds": seconds, "requests": int(window.requests),
                       "requests_per_s": _rate(window.requests, seconds), "success_rate": _success(window),
                       "retries": int(window.retries), "denied": int(window.denied) if kind == "inbound" else None},
            "latency_ms": _latency(window if _observed(window) and seconds > 0 else now),
        }
        if kind == "inbound":
            row["denied_by_rule"] = _by_rule(first.denied_by_rule, second.denied_by_rule)
        out.append(row)
    return out


def _by_rule(before: dict[str, int] | None, now: dict[str, int] | None) -> list[dict] | None:
    if now is None:
        return None
    return [{"rule": rule, "denied": n, "window": n - (before or {}).get(rule, 0)} for rule, n in sorted(now.items())]


def _order(key: tuple[str, str, str | None]) -> tuple:
    kind, service, route = key
    # the proxy's own service first, then each destination followed by its routes
    return (kind != "inbound", service, kind != "destination", route or "")
