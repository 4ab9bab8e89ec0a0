"""The second decision: what depends on the state of a destination cluster (docs/language.md §5.4
to §5.6, §10). Which endpoint an attempt goes to (round robin over what outlier detection leaves,
all of them under Envoy's panic threshold), and whether an attempt that failed is tried again:
the route's conditions, its attempt count, a body too large to replay, and the retry budget (or
`max_retries`) over the requests in flight, then the jittered backoff.

Pure: each function reads a snapshot of the state, taken by the I/O layer at the moment it
decides (runtime_proxy/net/server.py ClusterState, runtime_proxy/net/exchange.py), and returns
what to do; the I/O layer then takes the unit it was granted from the live counters
(breaker.py) and keeps the outlier detector's record (outlier.py). The request decision that
comes first is runtime_proxy/decide/request.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from runtime_proxy.decide.retry import Outcome, backoff_ms, budget_limit, retriable

if TYPE_CHECKING:
    from runtime_proxy.decide.table import CRetry, Limits, RetryBudget

# why a failed attempt is not retried (RetryVerdict.reason); "retry" when it is
RETRY, NOT_RETRIABLE, LIMIT, NOT_REPLAYABLE, OVERFLOW = "retry", "not-retriable", "limit", "not-replayable", "overflow"


class UpstreamState(NamedTuple):
    """A snapshot of one cluster, as a retry decision reads it."""
    requests: int          # requests in flight to the cluster
    pending: int           # requests waiting for a connection
    retries: int           # retries in flight (each holds its unit until its attempt ends)
    limits: Limits
    budget: RetryBudget | None


class RetryVerdict(NamedTuple):
    retry: bool
    reason: str            # RETRY, or why not: NOT_RETRIABLE, LIMIT, NOT_REPLAYABLE, OVERFLOW
    backoff_ms: float      # the wait before the next attempt (when retried)


def choose_endpoint(available: tuple[str, ...], rr: int) -> tuple[int, int]:
    """(index into `available`, the new round-robin counter): the next endpoint in turn among
    those outlier detection leaves (outlier.OutlierState.available)."""
    n = len(available)
    if n == 1:
        return 0, rr
    rr += 1
    return rr % n, rr


def decide_retry(state: UpstreamState, retry: CRetry | None, outcome: Outcome, attempts: int, replayable: bool,
                 draw: float) -> RetryVerdict:
    """Whether attempt number `attempts` of a request on a route retrying under `retry` (a
    table.CRetry), which ended with `outcome`, is tried again, in Envoy's order of checks:
    the conditions, the attempt count (`attempts > num_retries`: limit), a body kept for replay,
    then the retry budget (or `max_retries`) over the cluster's requests in flight. `draw` in
    [0, 1) jitters the backoff."""
    if retry is None or not retriable(retry, outcome):
        return RetryVerdict(False, NOT_RETRIABLE, 0.0)
    if attempts > retry.num_retries:
        return RetryVerdict(False, LIMIT, 0.0)
    if not replayable:
        return RetryVerdict(False, NOT_REPLAYABLE, 0.0)
    if state.retries >= budget_limit(state.budget, state.limits, state.requests + state.pending):
        return RetryVerdict(False, OVERFLOW, 0.0)
    return RetryVerdict(True, RETRY, backoff_ms(retry, attempts, draw))
