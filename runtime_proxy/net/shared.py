"""State the workers of `meshc proxy --workers N` share, as Envoy's worker threads share it:
circuit-breaker counters (connections, pending, requests, retries: what the limits and the retry
budget count) and outlier detection (each endpoint's consecutive-error counts and ejection).

One anonymous shared mapping (mmap, MAP_SHARED), made by the supervisor (runtime_proxy/workers.py)
before it forks the workers, so every worker maps the same pages. It holds a directory of cluster
entries; an entry is found by the SHA-256 of the cluster's name and signature (the endpoints,
limits, budget, outlier settings, upstream and TLS settings, as net/server.py keeps a cluster
across a reload), so the workers that run the same config meet in the same entry.

Breaker counters: one slot per worker and counter, written only by its worker (no lost update,
no lock); a worker compares the sum of all slots with the limit. Two workers that acquire at the
very same moment may both pass the last unit, as two of Envoy's threads may (its check and its
increment are two atomic steps, not one). Outlier detection: the detector's state is loaded from
the entry, changed by the pure decision (decide/outlier.py) and stored back, under one lock;
only with outlier detection configured, for an upstream answer that is an error or that ends an
endpoint's run of errors (a success for an endpoint with nothing counted, the usual answer, is
read without the lock and changes nothing: SharedOutlier.record). The detector's statistics
(`detected_*`, `enforced_*`) stay per worker and are summed by the admin view.

A worker on its own (the default) never imports this module.
"""

from __future__ import annotations

import hashlib
import logging
import math
import mmap
import platform
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from runtime_proxy.decide.breaker import Breaker
from runtime_proxy.decide.outlier import OutlierState, _Host

if TYPE_CHECKING:
    from runtime_proxy.decide.table import Limits, OutlierSettings, RetryBudget

log = logging.getLogger("runtime_proxy")
D = TypeVar("D")

MAX_CLUSTERS = 512          # cluster entries in use at once (a reload that changes a cluster takes
                            # a new one; the old one is free again once no worker uses it)
MAX_HOSTS = 64              # endpoints per cluster whose outlier state is shared
KEY_BYTES = 64              # an endpoint key (`host:port`), UTF-8, zero-padded
COUNTERS = 4                # connections, pending, requests, retries
LISTENERS = ("inbound", "outbound")

# entry: digest (32 bytes), the users (a bit per worker), then int64s: ejected_count,
# ejections_total, ejections_overflow, host count; float64 tick origin; the hosts' generation
# (int64: odd while a store is under way); then the breaker slots; then the hosts
_HEAD = struct.Struct("<32sQqqqqd")
_GENERATION = struct.Struct("<q")
# SharedOutlier.record reads a host's record without the lock, checked by the generation read
# before and after (a seqlock): right where loads are not reordered with loads, nor stores with
# stores, as on x86 (the struct calls in between order what the C compiler does, not the CPU).
_LOCK_FREE_READS = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
_USERS = struct.Struct("<Q")     # the workers using an entry, one bit each
_NEVER = bytes(32)               # the digest of an entry never used
# host: key, c5xx, cgw, backoff, times, ejected_until, ejected_at, unejected_at (NaN: None)
_HOST = struct.Struct(f"<{KEY_BYTES}sqqqqddd")


def _opt(x: float | None) -> float:
    return math.nan if x is None else x


def _none(x: float) -> float | None:
    return None if x != x else x


class Region:
    """The shared mapping and its lock; made before the fork, used by every worker."""

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self.workers = workers
        self.generation_at = _HEAD.size
        self.slots_at = _HEAD.size + _GENERATION.size
        self.hosts_at = self.slots_at + COUNTERS * workers * 8
        self.hosts_at += -self.hosts_at % 8
        self.entry_size = self.hosts_at + MAX_HOSTS * _HOST.size
        self.entry_size += -self.entry_size % 8
        # first the listeners' open connections (one slot per listener and worker), then the clusters
        self.clusters_at = len(LISTENERS) * workers * 8
        self.mm = mmap.mmap(-1, self.clusters_at + MAX_CLUSTERS * self.entry_size)   # anonymous, shared
        self.lock = multiprocessing.get_context("fork").Lock()
        self.worker = -1                                             # set in each worker

    def entry(self, name: str, signature: Any) -> int | None:
        """The offset of the entry of this cluster, this worker marked as a user; made on first use,
        in a new entry or one that no worker uses any more and that holds nothing (every counter at
        zero). None when all are taken."""
        digest = hashlib.sha256(f"{name}\0{signature!r}".encode()).digest()
        mm = self.mm
        bit = 1 << self.worker
        with self.lock:
            free = None
            for i in range(MAX_CLUSTERS):
                at = self.clusters_at + i * self.entry_size
                seen = mm[at:at + 32]
                if seen == digest:
                    _USERS.pack_into(mm, at + 32, _USERS.unpack_from(mm, at + 32)[0] | bit)
                    return at
                if seen == _NEVER:                  # never used: neither is any after it
                    if free is None:
                        free = at
                    break
                if free is None and not _USERS.unpack_from(mm, at + 32)[0] and not any(
                        memoryview(mm)[at + self.slots_at:at + self.hosts_at].cast("q")):
                    free = at                       # left by every worker, nothing in flight
            if free is None:
                return None
            # the generation goes on (even, higher) rather than back to zero: a reader of the
            # entry's earlier cluster must not see a value it read before (SharedOutlier.record)
            generation = (_GENERATION.unpack_from(mm, free + self.generation_at)[0] | 1) + 1
            mm[free:free + self.entry_size] = bytes(self.entry_size)
            _HEAD.pack_into(mm, free, digest, bit, 0, 0, 0, 0, 0.0)
            _GENERATION.pack_into(mm, free + self.generation_at, generation)
            return free

    def leave(self, breaker: Breaker) -> None:
        """This worker's cluster of `breaker` was replaced by a reload (server.ClusterState.retire):
        its entry may serve another cluster once no worker uses it and nothing is in flight."""
        if isinstance(breaker, SharedBreaker):
            with self.lock:
                at = breaker.at
                _USERS.pack_into(self.mm, at + 32, _USERS.unpack_from(self.mm, at + 32)[0] & ~(1 << self.worker))

    def cluster(self, name: str, signature: Any, limits: Limits, budget: RetryBudget | None,
                outlier: OutlierSettings | None, keys: tuple[str, ...], tick_origin: float,
                counts: dict[str, int]) -> tuple[Breaker, OutlierState | None]:
        """The breaker and outlier detector of a cluster, shared with the other workers (private
        ones, with a warning, when the mapping is full or the cluster has too many endpoints)."""
        at = self.entry(name, signature)
        if at is None:
            log.warning("cluster %s: more than %d clusters; its limits and outlier detection are this "
                        "worker's own", name, MAX_CLUSTERS)
            return Breaker(limits, budget), (OutlierState(outlier, keys, tick_origin, counts)
                                             if outlier is not None else None)
        breaker = SharedBreaker(self, at, limits, budget)
        if outlier is None:
            return breaker, None
        if len(keys) > MAX_HOSTS:
            log.warning("cluster %s: more than %d endpoints; its outlier detection is this worker's own",
                        name, MAX_HOSTS)
            return breaker, OutlierState(outlier, keys, tick_origin, counts)
        if any(len(key.encode()) > KEY_BYTES for key in keys):   # (stored cut short, it would never match)
            log.warning("cluster %s: an endpoint key longer than %d bytes; its outlier detection is this "
                        "worker's own", name, KEY_BYTES)
            return breaker, OutlierState(outlier, keys, tick_origin, counts)
        return breaker, SharedOutlier(self, at, outlier, keys, tick_origin, counts)


    def downstream_class(self, cls: type[D]) -> type[D]:
        """`cls` (net/server.Downstream or a subclass) whose connections count against the
        listener's `max_connections` over all the workers, as Envoy's listener limit counts them
        over its worker threads: a connection past it is accepted and closed at once."""
        view = memoryview(self.mm).cast("q")
        n, worker = self.workers, self.worker

        class Shared(cls):  # type: ignore[valid-type,misc]  # a subclass of the class given
            __slots__ = ()
            def connection_made(self, transport: Any) -> None:
                first = LISTENERS.index(self.listener) * n
                view[first + worker] += 1
                super().connection_made(transport)
                if not self.closing and sum(view[first:first + n]) > self.rt.max_connections:
                    self.lstats.cx_overflow += 1
                    self.abort()

            def connection_lost(self, exc: Exception | None) -> None:
                view[LISTENERS.index(self.listener) * n + worker] -= 1
                super().connection_lost(exc)

        Shared.__name__ = Shared.__qualname__ = f"Shared{cls.__name__}"
        return Shared


class SharedBreaker(Breaker):
    """decide/breaker.Breaker over the shared slots: each counter is the sum of the workers'
    slots; this worker changes only its own."""

    def __init__(self, region: Region, at: int, limits: Limits, budget: RetryBudget | None) -> None:
        # (not Breaker.__init__: its counters are the shared slots, never reset by a new worker)
        self.limits = limits
        self.budget = budget
        self.max_connections = limits.max_connections
        self.max_pending = limits.max_pending_requests
        self.max_requests = limits.max_requests
        self.max_retries = limits.max_retries
        self.at = at
        n = region.workers
        base = (at + region.slots_at) // 8
        view = memoryview(region.mm).cast("q")
        self._view = view
        self._n = n
        # per counter: (first slot, end, this worker's slot)
        self._c = tuple((base + k * n, base + (k + 1) * n, base + k * n + region.worker) for k in range(COUNTERS))

    def _sum(self, k: int) -> int:
        a, b, _ = self._c[k]
        return sum(self._view[a:b])

    def _take(self, k: int, limit: int) -> bool:
        a, b, own = self._c[k]
        view = self._view
        if sum(view[a:b]) >= limit:
            return False
        view[own] += 1
        return True

    def _give(self, k: int) -> None:
        own = self._c[k][2]
        if self._view[own] > 0:
            self._view[own] -= 1

    @property
    def connections(self) -> int:
        return self._sum(0)

    @connections.setter
    def connections(self, value: int) -> None:
        raise AttributeError("a shared counter changes only through the acquire and release methods")

    @property
    def pending(self) -> int:
        return self._sum(1)

    @pending.setter
    def pending(self, value: int) -> None:
        raise AttributeError("a shared counter changes only through the acquire and release methods")

    @property
    def requests(self) -> int:
        return self._sum(2)

    @requests.setter
    def requests(self, value: int) -> None:
        raise AttributeError("a shared counter changes only through the acquire and release methods")

    @property
    def retries(self) -> int:
        return self._sum(3)

    @retries.setter
    def retries(self, value: int) -> None:
        raise AttributeError("a shared counter changes only through the acquire and release methods")

    def try_acquire_connection(self) -> bool:
        return self._take(0, self.max_connections)

    def release_connection(self) -> None:
        self._give(0)

    def take_connection(self) -> None:
        """Hold one connection over the limit (a worker's first connection to an endpoint)."""
        self._view[self._c[0][2]] += 1

    def try_acquire_pending(self) -> bool:
        return self._take(1, self.max_pending)

    def release_pending(self) -> None:
        self._give(1)

    def try_acquire_request(self) -> bool:
        return self._take(2, self.max_requests)

    def release_request(self) -> None:
        self._give(2)

    def try_acquire_retry(self) -> bool:
        return self._take(3, self.retry_limit())

    def take_retry(self) -> None:
        self._view[self._c[3][2]] += 1

    def release_retry(self) -> None:
        self._give(3)


class SharedOutlier(OutlierState):
    """decide/outlier.OutlierState whose endpoint state lives in the shared entry: each public
    call loads it, runs the pure decision and stores it back, under the region's lock."""

    def __init__(self, region: Region, at: int, outlier: OutlierSettings, keys: Iterable[str],
                 tick_origin: float, counts: dict[str, int]) -> None:
        self._region = region
        self._at = at
        self._depth = 0
        self._ec = 0
        # endpoint key -> (the offset of its host record, the key as stored there), for `record`'s
        # reading without the lock; learnt from each load and store (a host keeps its place)
        self._slots: dict[str, tuple[int, bytes]] = {}
        with region.lock:
            head = _HEAD.unpack_from(region.mm, at)
            if head[6] == 0.0:           # the first worker's start is the detector's (one interval timer)
                _HEAD.pack_into(region.mm, at, *head[:6], tick_origin)
            else:
                tick_origin = head[6]
        super().__init__(outlier, keys, tick_origin=tick_origin, counts=counts)
        self._depth = 0

    @property
    def ejected_count(self) -> int:
        if self._depth:
            return self._ec
        return struct.unpack_from("<q", self._region.mm, self._at + 40)[0]   # (the fast check of pick())

    @ejected_count.setter
    def ejected_count(self, value: int) -> None:
        self._ec = value

    def _load(self) -> None:
        mm, at, region = self._region.mm, self._at, self._region
        _, _, ec, total, overflow, nhosts, _ = _HEAD.unpack_from(mm, at)
        self._ec, self.ejections_total, self.ejections_overflow = ec, total, overflow
        hosts: dict[str, _Host] = {}
        slots = self._slots
        pos = at + region.hosts_at
        for _ in range(nhosts):
            key, c5, cgw, backoff, times, until, eat, uat = _HOST.unpack_from(mm, pos)
            h = _Host()
            h.c5xx, h.cgw, h.backoff, h.times = c5, cgw, backoff, times
            h.ejected_until, h.ejected_at, h.unejected_at = _none(until), _none(eat), _none(uat)
            name = key.rstrip(b"\0").decode()
            hosts[name] = h
            slots[name] = (pos, key)
            pos += _HOST.size
        self.hosts = hosts

    def _store(self) -> None:
        mm, at, region = self._region.mm, self._at, self._region
        generation_at = at + region.generation_at
        generation = _GENERATION.unpack_from(mm, generation_at)[0] | 1   # (| 1: odd, whatever a store cut short left)
        _GENERATION.pack_into(mm, generation_at, generation)       # odd: the hosts are being written
        hosts = list(self.hosts.items())[:MAX_HOSTS]
        head = _HEAD.unpack_from(mm, at)
        _HEAD.pack_into(mm, at, head[0], head[1], self._ec, self.ejections_total, self.ejections_overflow,
                        len(hosts), head[6])
        pos = at + region.hosts_at
        slots = self._slots
        for key, h in hosts:
            stored = key.encode()[:KEY_BYTES]
            _HOST.pack_into(mm, pos, stored, h.c5xx, h.cgw, h.backoff, h.times,
                            _opt(h.ejected_until), _opt(h.ejected_at), _opt(h.unejected_at))
            slots[key] = (pos, stored.ljust(KEY_BYTES, b"\0"))
            pos += _HOST.size
        _GENERATION.pack_into(mm, generation_at, generation + 1)   # even: written

    def _shared(self, call: Any, *args: Any) -> Any:
        if self._depth:
            return call(*args)
        with self._region.lock:
            self._load()
            self._depth = 1
            try:
                return call(*args)
            finally:
                self._depth = 0
                self._store()

    def record(self, endpoint_key: str, status: int | None, failure: str | None, now: float) -> bool:
        if status is not None and (status < 500 or status > 599) and not self._depth and _LOCK_FREE_READS:
            # The common answer: a success for an endpoint that is not ejected and has no error
            # counted changes nothing (the decision sets both counts to zero), so its record is
            # read without the lock, load and store (4.0 µs a response, measured, against 0.5).
            # The generation, even and the same before and after the read, says no store was
            # under way meanwhile: the record read is one state of it, and the success comes
            # after that state in the detector's order. Anything else takes the lock.
            slot = self._slots.get(endpoint_key)
            if slot is not None:
                mm = self._region.mm
                generation_at = self._at + self._region.generation_at
                generation = _GENERATION.unpack_from(mm, generation_at)[0]
                if not generation & 1:
                    key, c5, cgw, _, _, until, _, _ = _HOST.unpack_from(mm, slot[0])
                    if (not c5 and not cgw and until != until and key == slot[1]     # (NaN: not ejected)
                            and _GENERATION.unpack_from(mm, generation_at)[0] == generation):
                        return False
        return self._shared(super().record, endpoint_key, status, failure, now)

    def is_ejected(self, endpoint_key: str, now: float) -> bool:
        return self._shared(super().is_ejected, endpoint_key, now)

    def available(self, endpoint_keys: Iterable[str], now: float) -> list[str]:
        return self._shared(super().available, endpoint_keys, now)

    def ejected(self, now: float) -> list[str]:
        return self._shared(super().ejected, now)
