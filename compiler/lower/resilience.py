"""Settings blocks to the IR's resilience settings: limits, outlier detection, the retry budget,
retries and faults. Every setting not written takes its default from compiler/language."""

from __future__ import annotations

from compiler import ir
from compiler.language import defaults
from compiler.syntax import ast


def _values(block: ast.Block | None) -> dict[str, tuple]:
    return {s.key: tuple(v.value for v in s.values) for s in block.settings} if block is not None else {}


def lower_limits(block: ast.Block | None) -> ir.Limits:
    v = _values(block)
    return ir.Limits(v.get("connections", (defaults.LIMIT_CONNECTIONS,))[0],
                     v.get("pending", (defaults.LIMIT_PENDING,))[0],
                     v.get("requests", (defaults.LIMIT_REQUESTS,))[0],
                     v.get("retries", (defaults.LIMIT_RETRIES,))[0])


def lower_outlier(block: ast.Block | None) -> ir.Outlier | None:
    if block is None:
        return None
    v = _values(block)
    return ir.Outlier(v.get("consecutive_5xx", (defaults.OUTLIER_CONSECUTIVE_5XX,))[0],
                      v.get("consecutive_gateway_errors", (defaults.OUTLIER_CONSECUTIVE_GATEWAY_ERRORS,))[0],
                      v.get("interval", (defaults.OUTLIER_INTERVAL_MS,))[0],
                      v.get("ejection", (defaults.OUTLIER_EJECTION_MS,))[0],
                      v.get("max_ejected", (defaults.OUTLIER_MAX_EJECTED_PERCENT,))[0])


def lower_budget(block: ast.Block | None) -> ir.RetryBudget | None:
    if block is None:
        return None
    v = _values(block)
    return ir.RetryBudget(v.get("percent", (defaults.BUDGET_PERCENT,))[0],
                          v.get("min_concurrency", (defaults.BUDGET_MIN_CONCURRENCY,))[0])


def lower_retry(block: ast.Block | None) -> ir.Retry | None:
    if block is None:
        return None
    v = _values(block)
    conditions, codes = [], []
    for word in v.get("on", defaults.RETRY_ON):
        if word.isdigit():
            codes.append(int(word))
        else:
            conditions.append(word)  # the language's names are the IR's (compiler/language/retry.py)
    backoff = v.get("backoff", (defaults.RETRY_BACKOFF_BASE_MS,))
    base = backoff[0]
    top = backoff[1] if len(backoff) > 1 else base * defaults.RETRY_BACKOFF_MAX_FACTOR
    return ir.Retry(v.get("attempts", (defaults.RETRY_ATTEMPTS,))[0], tuple(dict.fromkeys(conditions)),
                    tuple(sorted(set(codes))), v.get("per_try_timeout", (defaults.RETRY_PER_TRY_TIMEOUT_MS,))[0], base, top,
                    "allow_non_idempotent" in v)


def lower_fault(block: ast.Block | None) -> ir.Fault | None:
    if block is None:
        return None
    abort = delay = None
    for s in block.settings:
        pct = s.values[1].value if len(s.values) > 1 else defaults.FAULT_PERCENT
        if s.key == "abort":
            abort = ir.FaultAbort(s.values[0].value, pct)
        else:
            delay = ir.FaultDelay(s.values[0].value, pct)
    return ir.Fault(abort, delay)
