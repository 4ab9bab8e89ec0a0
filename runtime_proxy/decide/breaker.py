"""Circuit breakers (docs/language.md section 5.4): counters per destination subset cluster.

One `Breaker` per (calling sidecar, subset cluster), as Envoy keeps one resource manager per
cluster. Each `try_acquire_*` either takes one unit and returns True, or takes nothing and
returns False (the request then fails with the overflow 503); every successful acquire is paired
with one `release_*`. Retries are admitted by the service's retry budget when it has one
(`max_retries` is then ignored, as in Envoy), else by `limits.max_retries`. State, but no I/O
and no clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime_proxy.decide.retry import budget_limit

if TYPE_CHECKING:
    from runtime_proxy.decide.table import Limits, RetryBudget


class Breaker:
    __slots__ = ("max_connections", "max_pending", "max_requests", "max_retries", "limits", "budget",
                 "connections", "pending", "requests", "retries")

    def __init__(self, limits: Limits, budget: RetryBudget | None = None) -> None:
        self.limits = limits
        self.budget = budget                                 # table.RetryBudget | None
        self.max_connections = limits.max_connections
        self.max_pending = limits.max_pending_requests
        self.max_requests = limits.max_requests
        self.max_retries = limits.max_retries
        self.connections = 0
        self.pending = 0
        self.requests = 0
        self.retries = 0

    # connections -------------------------------------------------------------------------------
    def try_acquire_connection(self) -> bool:
        if self.connections >= self.max_connections:
            return False
        self.connections += 1
        return True

    def release_connection(self) -> None:
        if self.connections > 0:
            self.connections -= 1

    def take_connection(self) -> None:
        """Hold one connection over the limit (a worker's first connection to an endpoint, as
        Envoy's pools may always open one: net/server.py, with --workers N)."""
        self.connections += 1

    # requests waiting for a connection --------------------------------------------------------
    def try_acquire_pending(self) -> bool:
        if self.pending >= self.max_pending:
            return False
        self.pending += 1
        return True

    def release_pending(self) -> None:
        if self.pending > 0:
            self.pending -= 1

    # requests in flight --------------------------------------------------------------------------
    def try_acquire_request(self) -> bool:
        if self.requests >= self.max_requests:
            return False
        self.requests += 1
        return True

    def release_request(self) -> None:
        if self.requests > 0:
            self.requests -= 1

    # retries in flight ---------------------------------------------------------------------------
    def retry_limit(self) -> int:
        """Retries that may be in flight now: the budget over active + pending requests, or
        `max_retries`."""
        return budget_limit(self.budget, self.limits, self.requests + self.pending)

    def try_acquire_retry(self) -> bool:
        if self.retries >= self.retry_limit():
            return False
        self.retries += 1
        return True

    def take_retry(self) -> None:
        """Hold one retry that upstream.decide_retry admitted (against these same counters)."""
        self.retries += 1

    def release_retry(self) -> None:
        if self.retries > 0:
            self.retries -= 1

    def snapshot(self) -> dict[str, int]:
        """The counters and their limits, for the admin interface."""
        return {"connections": self.connections, "pending": self.pending, "requests": self.requests,
                "retries": self.retries, "max_connections": self.max_connections,
                "max_pending_requests": self.max_pending, "max_requests": self.max_requests,
                "max_retries": self.retry_limit()}
