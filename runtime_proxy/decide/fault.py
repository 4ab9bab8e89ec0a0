"""Fault injection decision (docs/language.md section 11): the delay, then the abort.

Each part applies to its own random share of the route's requests: a percentage p applies when
`rand * 100 < p` (so 100 % always, 0 % never), with independent draws for the delay and the abort.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
