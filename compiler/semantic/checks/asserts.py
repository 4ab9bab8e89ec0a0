"""Asserts (docs/testing.md): each names one known destination, known callers and
well-formed conditions. Proving them is `meshc check`'s later step (compiler/verify/asserts.py),
which runs only on a program without errors."""

from __future__ import annotations

from compiler.core.diagnostics import did_you_mean
from compiler.semantic.checks.values import _Values
from compiler.semantic.symbols import Context
from compiler.syntax import ast


def check_asserts(ctx: Context) -> None:
    if not ctx.asserts:
        return
    values = _Values(ctx)
    for a in ctx.asserts:
        if len(a.destinations) != 1:
            where = a.destinations[1].span if a.destinations else a.kind.span
            ctx.diags.add("E0850", f"an assert names {'no destination' if not a.destinations else 'two destinations'}",
                          where, hint="write one `to SERVICE` line: an assert speaks about one destination; "
                                      "write another assert for another")
        for dest in a.destinations:
            if dest.value not in ctx.services and ("service", dest.value) not in ctx.broken:
                ctx.diags.add("E0201", f"unknown service `{dest.value}` in an assert", dest.span,
                              hint=did_you_mean(dest.value, ctx.services))
        for cond in a.conditions:
            if isinstance(cond, ast.FromCond) and cond.kind == "service":
                for v in cond.values:
                    if v.value not in ctx.services and ("service", v.value) not in ctx.broken:
                        ctx.diags.add("E0201", f"unknown service `{v.value}` in `from service`", v.span,
                                      hint=did_you_mean(v.value, ctx.services))
        values.conditions(a.conditions, "assert")
