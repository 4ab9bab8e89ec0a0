"""Settings blocks to the IR's resilience settings: limits, outlier detection, the retry budget,
retries and faults. Every setting not written takes its default from its description
(compiler/language/settings.py)."""

from __future__ import annotations

from compiler import ir
from compiler.language.settings import FAULT, RETRY
from compiler.semantic.written import retry_timing, written
from compiler.syntax import ast

# `written` gives each setting as written, else its default (compiler/semantic/written.py); the
# values are in range: lowering runs only on a program the checks passed.


def lower_limits(block: ast.Block | None) -> ir.Limits:
    w = written(block, "limits")
    return ir.Limits(w["connections"], w["pending"], w["requests"], w["retries"])


def lower_outlier(block: ast.Block | None) -> ir.Outlier | None:
    if block is None:
        return None
    w = written(block, "outlier")
    return ir.Outlier(w["consecutive_5xx"], w["consecutive_gateway_errors"], w["interval"], w["ejection"],
                      w["max_ejected"])


def lower_budget(block: ast.Block | None) -> ir.RetryBudget | None:
    if block is None:
        return None
    w = written(block, "retry_budget")
    return ir.RetryBudget(w["percent"], w["min_concurrency"])


def lower_retry(block: ast.Block | None) -> ir.Retry | None:
    if block is None:
        return None
    on = {s.key: s.values for s in block.settings}.get("on")
    conditions, codes = [], []
    for word in RETRY.default("on") if on is None else [v.value for v in on]:
        if word.isdigit():
            codes.append(int(word))
        else:
            conditions.append(word)  # the language's names are the IR's (compiler/language/retry.py)
    attempts, per_try, base, top = retry_timing(block)
    allow_non_idempotent = any(s.key == "allow_non_idempotent" for s in block.settings)
    return ir.Retry(attempts, tuple(dict.fromkeys(conditions)), tuple(sorted(set(codes))), per_try,
                    base, top, allow_non_idempotent)


def lower_fault(block: ast.Block | None) -> ir.Fault | None:
    if block is None:
        return None
    abort = delay = None
    for s in block.settings:
        pct = s.values[1].value if len(s.values) > 1 else FAULT.default(s.key)
        if s.key == "abort":
            abort = ir.FaultAbort(s.values[0].value, pct)
        else:
            delay = ir.FaultDelay(s.values[0].value, pct)
    return ir.Fault(abort, delay)
