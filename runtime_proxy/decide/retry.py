"""Retry decisions: which outcomes are retried, the backoff before a retry, the retry budget.

Pure functions: the random draw is an argument. The rules are Envoy 1.40's router
(`RetryStateImpl::wouldRetryFromHeaders` / `wouldRetryFromReset`, JitteredExponentialBackOffStrategy,
`ResourceManagerImpl::RetryBudget`), which docs/language.md section 10 and 5.6 describe.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol

# Failure kinds the I/O layer reports when no response came from the upstream.
CONNECT_FAILURE = "connect-failure"      # no connection could be made (refused, unreachable, connect timeout)
RESET = "reset"                          # the connection was reset or closed before a response
PER_TRY_TIMEOUT = "per-try-timeout"      # the attempt ran past the route's per-try timeout
REFUSED_STREAM = "refused-stream"        # HTTP/2 REFUSED_STREAM (never seen over HTTP/1.1)
OVERFLOW = "overflow"                    # a circuit breaker refused the attempt: never retried

_ANY_RESET = frozenset({CONNECT_FAILURE, RESET, PER_TRY_TIMEOUT, REFUSED_STREAM})

# condition -> (statuses it retries, failure kinds it retries). Envoy counts every upstream reset
# (connect failure and per-try timeout included) as a "5xx" for both `5xx` and `gateway-error`, and
# `reset` covers every reset reason but an overflow.
CONDITIONS: dict[str, tuple[frozenset[int], frozenset[str]]] = {
    "5xx": (frozenset(range(500, 600)), _ANY_RESET),
    "gateway-error": (frozenset({502, 503, 504}), _ANY_RESET),
    "reset": (frozenset(), _ANY_RESET),
    "connect-failure": (frozenset(), frozenset({CONNECT_FAILURE})),
    "refused-stream": (frozenset(), frozenset({REFUSED_STREAM})),
    "retriable-4xx": (frozenset({409}), frozenset()),
}


# What these decisions read of a route's retry policy (table.CRetry), of a retry budget
# (table.RetryBudget) and of a destination's limits (table.Limits). table.py imports this module,
# so it is not imported here.
class RetryPolicy(Protocol):
    @property
    def statuses(self) -> frozenset[int]: ...
    @property
    def failures(self) -> frozenset[str]: ...
    @property
    def backoff_base_ms(self) -> int: ...
    @property
    def backoff_max_ms(self) -> int: ...
    @property
    def backoff_cap_exponent(self) -> int: ...


class Budget(Protocol):
    @property
    def percent(self) -> float: ...
    @property
    def min_concurrency(self) -> int: ...


class RetryLimit(Protocol):
    @property
    def max_retries(self) -> int: ...


class Outcome(NamedTuple):
    """What one attempt produced: a response status, or a failure kind (and no status)."""
    status: int | None
    failure: str | None = None           # CONNECT_FAILURE | RESET | PER_TRY_TIMEOUT | REFUSED_STREAM | OVERFLOW
    overloaded: bool = False             # the upstream's response carried `x-envoy-overloaded`: never retried


def compile_conditions(retry_on: Iterable[str],
                       status_codes: Iterable[int]) -> tuple[frozenset[int], frozenset[str]]:
    """The statuses and failure kinds that a policy with these conditions retries."""
    statuses: set[int] = set(status_codes)
    failures: set[str] = set()
    for cond in retry_on:
        s, f = CONDITIONS[cond]
        statuses |= s
        failures |= f
    return frozenset(statuses), frozenset(failures)


def retriable(retry: RetryPolicy, outcome: Outcome) -> bool:
    """Whether an attempt with this outcome is retried under `retry`'s conditions (a compiled
    table.CRetry; the attempt count, the budget and the timeouts are checked by the caller)."""
    if outcome.status is not None:
        return not outcome.overloaded and outcome.status in retry.statuses
    return outcome.failure in retry.failures


def cap_exponent(base_ms: int, max_ms: int) -> int:
    """The retry number from which Envoy's backoff interval stops growing: the first n with
    (2^n - 1) x base > max (Envoy stops doubling once the interval passed the maximum)."""
    n = 1
    while ((1 << n) - 1) * base_ms <= max_ms:
        n += 1
    return n


def backoff_ms(retry: RetryPolicy, n: int, rand: float) -> float:
    """Wait before retry number `n` (1, 2, ...): Envoy's jittered exponential backoff,
    `min(random % ((2^m - 1) x base), max)` with m = min(n, the capping exponent), in whole
    milliseconds: below (2^n - 1) x base, never above max (and equal to max with the probability
    of the draw landing past it once the interval outgrew the maximum)."""
    base, cap = retry.backoff_base_ms, retry.backoff_max_ms
    m = min(max(n, 1), retry.backoff_cap_exponent)
    interval = ((1 << m) - 1) * base
    return float(min(int(rand * interval), cap))


def budget_limit(budget: Budget | None, limits: RetryLimit, active_requests: int) -> int:
    """How many retries may be in flight: max(min_concurrency, percent x active) with a budget
    (Envoy truncates the product), else `limits.max_retries`."""
    if budget is None:
        return limits.max_retries
    return max(int(budget.percent / 100.0 * active_requests), budget.min_concurrency)


def budget_allows(budget: Budget | None, limits: RetryLimit, active_requests: int, retries_in_flight: int) -> bool:
    """Whether one more retry may start. `active_requests` counts requests in flight and pending
    to the destination (as Envoy's budget does); `retries_in_flight` the retries already running."""
    return retries_in_flight < budget_limit(budget, limits, active_requests)
