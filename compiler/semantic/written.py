"""Settings blocks as their values are meant: each setting as written, else its default (from its
description in compiler/language/settings.py). Read by the lowering, which builds the IR from
them, and by the lint rules, which reason with the same numbers without building IR objects (the
IR's classes cost `meshc lint` about 10 ms to load).

The values are of the kind each setting's forms give, and in range only on a program the checks
passed: a caller on a program with errors gets what was written.
"""

from __future__ import annotations

from compiler.language import defaults
from compiler.language.settings import BLOCKS
from compiler.syntax import ast

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from typing import Any

_DEFAULTS: dict[str, dict[str, Any]] = {}   # kind -> every setting's default (a block not written)


def written(block: ast.Block | None, kind: str) -> dict[str, Any]:
    """Each setting of a block of `kind`: its first value as written (True for a flag), else its
    default. Read only: the dict of an unwritten block is shared (lowering runs per service)."""
    if block is None:
        found = _DEFAULTS.get(kind)
        if found is None:
            found = _DEFAULTS[kind] = {s.key: s.default for s in BLOCKS[kind].settings}
        return found
    values_of = {s.key: s.values for s in block.settings}
    out = {}
    for s in BLOCKS[kind].settings:
        values = values_of.get(s.key)
        out[s.key] = s.default if values is None else values[0].value if values else True
    return out


def retry_timing(block: ast.Block) -> tuple[int, int, int, int]:
    """(retries, per-try timeout, backoff base, backoff maximum) of a retry block, in ms: the
    maximum is the second value of `backoff`, else the base times the default factor."""
    w = written(block, "retry")
    base = w["backoff"]
    backoff = {s.key: s.values for s in block.settings}.get("backoff", ())
    top = backoff[1].value if len(backoff) > 1 else base * defaults.RETRY_BACKOFF_MAX_FACTOR
    return w["attempts"], w["per_try_timeout"], base, top
