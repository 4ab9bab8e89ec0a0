"""Settings blocks to the IR's resilience settings: limits, outlier detection, the retry budget,
retries and faults. Every setting not written takes its default from its description
(compiler/language/settings.py)."""

from __future__ import annotations

from compiler import ir
from compiler.language import defaults
from compiler.language.settings import BLOCKS, FAULT, RETRY
from compiler.syntax import ast

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from typing import Any


# The values below are of the kind each setting's forms give (compiler/language/settings.py), and
# in range: lowering runs only on a program the checks passed.
_DEFAULTS: dict[str, dict[str, Any]] = {}   # kind -> every setting's default (a block not written)


def _written(block: ast.Block | None, kind: str) -> dict[str, Any]:
    """Each setting of a block of `kind`: its first value as written (True for a flag), else its
    default. Read only: the dict of an unwritten block is shared (lowering runs per service)."""
    if block is None:
        found = _DEFAULTS.get(kind)
        if found is None:
            found = _DEFAULTS[kind] = {s.key: s.default for s in BLOCKS[kind].settings}
        return found
    written = {s.key: s.values for s in block.settings}
    out = {}
    for s in BLOCKS[kind].settings:
        values = written.get(s.key)
        out[s.key] = s.default if values is None else values[0].value if values else True
    return out


def lower_limits(block: ast.Block | None) -> ir.Limits:
    w = _written(block, "limits")
    return ir.Limits(w["connections"], w["pending"], w["requests"], w["retries"])


def lower_outlier(block: ast.Block | None) -> ir.Outlier | None:
    if block is None:
        return None
    w = _written(block, "outlier")
    return ir.Outlier(w["consecutive_5xx"], w["consecutive_gateway_errors"], w["interval"], w["ejection"],
                      w["max_ejected"])


def lower_budget(block: ast.Block | None) -> ir.RetryBudget | None:
    if block is None:
        return None
    w = _written(block, "retry_budget")
    return ir.RetryBudget(w["percent"], w["min_concurrency"])


def lower_retry(block: ast.Block | None) -> ir.Retry | None:
    if block is None:
        return None
    written = {s.key: s.values for s in block.settings}
    w = _written(block, "retry")
    conditions, codes = [], []
    on = written.get("on")
    for word in RETRY.default("on") if on is None else [v.value for v in on]:
        if word.isdigit():
            codes.append(int(word))
        else:
            conditions.append(word)  # the language's names are the IR's (compiler/language/retry.py)
    base = w["backoff"]
    backoff = written.get("backoff", ())
    top = backoff[1].value if len(backoff) > 1 else base * defaults.RETRY_BACKOFF_MAX_FACTOR
    return ir.Retry(w["attempts"], tuple(dict.fromkeys(conditions)), tuple(sorted(set(codes))), w["per_try_timeout"],
                    base, top, "allow_non_idempotent" in written)


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
