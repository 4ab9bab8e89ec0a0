"""A timer wheel for the per-request timeouts.

Every request has a route timeout (15 s by default) that almost never fires. Instead of an
event-loop timer per timeout, a request puts itself in the bucket of the tick at which its
earliest deadline (route or per-try) has passed, and takes itself out when it ends: a set insert
and a set discard, done inline by runtime_proxy/net/exchange.py, with no Python call in between. One
loop timer ticks every RESOLUTION seconds while a bucket is armed and calls `on_deadline()` of
the requests whose tick came; a request woken for a deadline that moved re-arms itself. Timers
fire at most one resolution late, far below what a policy can express (whole milliseconds).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio

RESOLUTION = 0.002           # seconds per tick
TICKS = 1 / RESOLUTION       # ticks per second: the slot of a deadline d is int(d * TICKS) + 1

_monotonic = time.monotonic


class Armed(Protocol):
    """What the wheel holds (exchange.Exchange)."""
    def on_deadline(self) -> None: ...


class TimerWheel:
    __slots__ = ("loop", "buckets", "last", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buckets: dict[int, set[Armed]] = {}   # slot -> objects with an `on_deadline()` method
        self.last = int(_monotonic() * TICKS)   # the last slot that fired
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Tick while something is armed (called by whoever arms the first bucket)."""
        if self.handle is None:
            self.last = max(self.last, int(_monotonic() * TICKS) - 1)
            self.handle = self.loop.call_later(RESOLUTION, self.tick)

    def add(self, obj: Armed, deadline: float) -> int:
        """Arm `obj` for the absolute time `deadline` (time.monotonic()); returns its slot."""
        slot = int(deadline * TICKS) + 1
        if slot <= self.last:
            slot = self.last + 1
        bucket = self.buckets.get(slot)
        if bucket is None:
            bucket = self.buckets[slot] = set()
        bucket.add(obj)
        if self.handle is None:
            self.start()
        return slot

    def remove(self, obj: Armed, slot: int) -> None:
        bucket = self.buckets.get(slot)
        if bucket is not None:
            bucket.discard(obj)
            if not bucket:
                del self.buckets[slot]

    def tick(self) -> None:
        now = int(_monotonic() * TICKS)
        buckets = self.buckets
        due: list[set[Armed]] = []
        if now - self.last > len(buckets):   # a long gap: walk the armed slots, not the time
            for slot in sorted(s for s in buckets if s <= now):
                due.append(buckets.pop(slot))
        else:
            for slot in range(self.last + 1, now + 1):
                bucket = buckets.pop(slot, None)
                if bucket:
                    due.append(bucket)
        self.last = now
        self.handle = None
        for bucket in due:
            for obj in bucket:
                obj.on_deadline()
        if buckets and self.handle is None:
            self.handle = self.loop.call_later(RESOLUTION, self.tick)
