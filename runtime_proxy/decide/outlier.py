"""Passive outlier detection (docs/language.md section 5.5), per destination subset.

The rules are Envoy 1.40's consecutive-errors detector (`DetectorImpl`, split of local and
external errors off, as in the Envoy target):

- every result of an endpoint counts: a 5xx increments its consecutive-5xx count, a 502/503/504
  also its consecutive-gateway-error count (any other 5xx resets the latter), anything else resets
  both. A connect failure or reset counts as a 503, a per-try timeout as a 504;
- the result that brings a count to its threshold asks for an ejection, and that count starts
  again from zero whether or not the ejection happens;
- an ejection happens when the endpoint is not ejected already and, with it, at most
  `max_ejection_percent` of the subset's endpoints would be ejected;
- an ejected endpoint returns after `base_ejection x times ejected`, capped at
  max(300 s, base) (Envoy's default `max_ejection_time`); its counts restart from zero;
- "times ejected" goes down by one for every `interval` the endpoint then stays in service;
- Envoy's load balancer ignores ejections when fewer than half of a subset's endpoints are
  available (the default 50 % panic threshold): `available` then returns every endpoint.

Envoy returns endpoints at its `interval` timer ticks (docs/language.md: "ejections are
re-evaluated, and ejected endpoints returned, every interval"). Given `tick_origin` (the time the
detector started, as Envoy arms its timer when the cluster is created), an endpoint returns at the
first tick `tick_origin + k x interval` at or after the end of its ejection time, as in Envoy;
without it, at the exact end (up to one interval earlier). Pure state: `now` (a float of seconds,
from time.monotonic()) is an argument.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from runtime_proxy.decide.retry import CONNECT_FAILURE, OVERFLOW, PER_TRY_TIMEOUT, REFUSED_STREAM, RESET

if TYPE_CHECKING:
    from runtime_proxy.decide.table import OutlierSettings

DEFAULT_MAX_EJECTION_MS = 300_000
PANIC_THRESHOLD_PERCENT = 50.0

# failure kind -> the status Envoy's detector records for it (resultToHttpCode)
_FAILURE_STATUS = {CONNECT_FAILURE: 503, RESET: 503, REFUSED_STREAM: 503, PER_TRY_TIMEOUT: 504}


class _Host:
    __slots__ = ("c5xx", "cgw", "ejected_until", "ejected_at", "backoff", "unejected_at", "times")

    def __init__(self) -> None:
        self.c5xx = 0                  # consecutive 5xx
        self.cgw = 0                   # consecutive gateway errors
        self.ejected_until: float | None = None      # while ejected
        self.ejected_at: float | None = None
        self.backoff = 0               # Envoy's ejection-time multiplier
        self.unejected_at: float | None = None
        self.times = 0                 # ejections in total (stats)


class OutlierState:
    """The detector of one subset. `endpoint_keys` (optional) are its endpoints; `available`
    updates them, and until they are known the endpoints seen by `record` count."""

    def __init__(self, outlier: OutlierSettings, endpoint_keys: Iterable[str] = (),
                 tick_origin: float | None = None, counts: dict[str, int] | None = None) -> None:
        self.outlier = outlier
        self.tick_origin = tick_origin
        self.consecutive_5xx = outlier.consecutive_5xx
        self.consecutive_gateway = outlier.consecutive_gateway_errors   # 0: not used
        self.interval = outlier.interval_ms / 1000.0
        self.base = outlier.base_ejection_ms / 1000.0
        self.max_ejection = max(DEFAULT_MAX_EJECTION_MS, outlier.base_ejection_ms) / 1000.0
        self.max_percent = outlier.max_ejection_percent
        self.hosts: dict[str, _Host] = {}                  # endpoint key (`host:port`) -> its state
        self.endpoints: tuple[str, ...] = tuple(endpoint_keys)
        self.ejected_count = 0
        self.ejections_total = 0
        self.ejections_overflow = 0
        # Envoy's detector statistics, `detected_KIND` and `enforced_KIND` (KIND: consecutive_5xx,
        # consecutive_gateway_failure): a detection on an endpoint not ejected already, and the
        # ejection it made (none past max_ejected). The caller's dict outlives a reload.
        self.counts: dict[str, int] = {} if counts is None else counts

    # ---- bookkeeping --------------------------------------------------------------------------

    def _host(self, key: str) -> _Host:
        h = self.hosts.get(key)
        if h is None:
            h = self.hosts[key] = _Host()
        return h

    def _total(self) -> int:
        return len(self.endpoints) or len(self.hosts)

    def _expire(self, h: _Host, now: float) -> None:
        """Return an endpoint whose ejection time is over."""
        if h.ejected_until is not None and now >= h.ejected_until:
            h.unejected_at = h.ejected_until      # the exact end, whenever it is noticed
            h.ejected_until = None
            h.c5xx = h.cgw = 0
            self.ejected_count -= 1

    def _decay(self, h: _Host, now: float) -> None:
        """One step down of the multiplier per interval spent in service since the return."""
        if h.unejected_at is not None and h.backoff > 0 and self.interval > 0:
            steps = int((now - h.unejected_at) / self.interval)
            if steps > 0:
                h.backoff = max(0, h.backoff - steps)
                h.unejected_at += steps * self.interval

    def _detected(self, h: _Host, now: float, kind: str) -> bool:
        if h.ejected_until is not None:
            return False
        counts = self.counts
        key = "detected_" + kind
        counts[key] = counts.get(key, 0) + 1
        if not self._try_eject(h, now):
            return False
        key = "enforced_" + kind
        counts[key] = counts.get(key, 0) + 1
        return True

    def _try_eject(self, h: _Host, now: float) -> bool:
        if h.ejected_until is not None:
            return False
        if self.ejected_count:
            for other in self.hosts.values():
                self._expire(other, now)
        total = self._total()
        if total <= 0 or 100.0 * (self.ejected_count + 1) / total > self.max_percent:
            self.ejections_overflow += 1
            return False
        self._decay(h, now)
        if h.backoff * self.base < self.max_ejection + self.base:
            h.backoff += 1
        h.ejected_at = now
        until = now + min(self.base * h.backoff, self.max_ejection)
        if self.tick_origin is not None and self.interval > 0:   # the first interval tick from then on
            ticks = -(-(until - self.tick_origin) // self.interval)
            until = self.tick_origin + max(ticks, 0) * self.interval
        h.ejected_until = until
        h.times += 1
        self.ejected_count += 1
        self.ejections_total += 1
        return True

    # ---- the contract -------------------------------------------------------------------------

    def record(self, endpoint_key: str, status: int | None, failure: str | None, now: float) -> bool:
        """Count one result of `endpoint_key`: a response status, or a failure kind without one.
        True when this result ejected the endpoint."""
        if status is None:
            if failure is None or failure == OVERFLOW:
                return False
            status = _FAILURE_STATUS.get(failure, 503)
        elif status < 500 or status > 599:   # the common answer, in short (the same as below)
            h = self.hosts.get(endpoint_key)
            if h is not None and h.ejected_until is None:
                h.c5xx = h.cgw = 0
                return False
        h = self._host(endpoint_key)
        self._expire(h, now)
        ejected = False
        if 500 <= status <= 599:
            if status in (502, 503, 504):
                h.cgw += 1
                if self.consecutive_gateway and h.cgw == self.consecutive_gateway:
                    ejected = self._detected(h, now, "consecutive_gateway_failure")
                    h.cgw = 0
            else:
                h.cgw = 0
            h.c5xx += 1
            if h.c5xx == self.consecutive_5xx:
                ejected = self._detected(h, now, "consecutive_5xx") or ejected
                h.c5xx = 0
        else:
            h.c5xx = h.cgw = 0
        return ejected

    def is_ejected(self, endpoint_key: str, now: float) -> bool:
        h = self.hosts.get(endpoint_key)
        if h is None:
            return False
        self._expire(h, now)
        return h.ejected_until is not None

    def available(self, endpoint_keys: Iterable[str], now: float) -> list[str]:
        """The endpoints to balance over: those not ejected, or all of them when fewer than half
        are (Envoy's panic threshold)."""
        keys = endpoint_keys if isinstance(endpoint_keys, tuple) else tuple(endpoint_keys)
        if keys != self.endpoints:
            self.endpoints = keys
        if not self.ejected_count:
            return list(keys)
        out = [k for k in keys if not self.is_ejected(k, now)]
        if len(out) * 100.0 < PANIC_THRESHOLD_PERCENT * len(keys):
            return list(keys)
        return out

    def ejected(self, now: float) -> list[str]:
        """The endpoints ejected at `now` (for the admin interface)."""
        return [k for k in list(self.hosts) if self.is_ejected(k, now)]
