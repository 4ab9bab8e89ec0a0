"""Fault injection decision (docs/language.md section 11): the delay, then the abort.

Each part applies to its own random share of the route's requests: a percentage p applies when
`rand * 100 < p` (so 100 % always, 0 % never), with independent draws for the delay and the abort.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime_proxy.decide.explain import Explanation
    from runtime_proxy.decide.table import CFault


def decide(fault: CFault | None, rand_delay: float, rand_abort: float) -> tuple[int, int | None]:
    """(delay in ms, abort status or None) for one request. `fault` is a compiled table.CFault or
    None."""
    if fault is None:
        return 0, None
    delay = fault.delay_ms if fault.delay_ms and rand_delay * 100.0 < fault.delay_percent else 0
    abort = fault.abort_status if (fault.abort_status is not None
                                   and rand_abort * 100.0 < fault.abort_percent) else None
    return delay, abort


def explain_decide(fault: CFault, rand_delay: float, rand_abort: float, explain: Explanation) -> tuple[int, int | None]:
    """`decide`, with each part's draw and arithmetic noted (`fault` steps): the same answer."""
    delay, abort = decide(fault, rand_delay, rand_abort)
    if fault.delay_ms:
        explain.note("fault", "delay" if delay else "no delay",
                     f"{fault.delay_ms} ms for {fault.delay_percent:g} % of requests: draw {rand_delay:.4f} x 100 "
                     f"{'<' if delay else '>='} {fault.delay_percent:g}",
                     {"part": "delay", "delay_ms": fault.delay_ms, "percent": fault.delay_percent,
                      "draw": rand_delay, "applied": bool(delay), "random": 0.0 < fault.delay_percent < 100.0})
    if fault.abort_status is not None:
        explain.note("fault", "abort" if abort is not None else "no abort",
                     f"{fault.abort_status} for {fault.abort_percent:g} % of requests: draw {rand_abort:.4f} x 100 "
                     f"{'<' if abort is not None else '>='} {fault.abort_percent:g}",
                     {"part": "abort", "status": fault.abort_status, "percent": fault.abort_percent,
                      "draw": rand_abort, "applied": abort is not None,
                      "random": 0.0 < fault.abort_percent < 100.0})
    return delay, abort
