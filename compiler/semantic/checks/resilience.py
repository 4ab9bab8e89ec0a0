"""Retry safety: retries of non-idempotent requests (W0501) and retries without a budget (W0502)."""

from __future__ import annotations

from compiler.language.retry import PRE_SEND_CONDITIONS, RETRY_CONDITIONS
from compiler.language.settings import RETRY_BUDGET
from compiler.semantic.conditions import route_matches
from compiler.semantic.symbols import Context, resolve_block, route_retry_block
from compiler.syntax import ast

NON_IDEMPOTENT = ("POST", "PATCH")


def budget_example() -> str:
    """W0502's suggestion: a retry budget with its defaults written out."""
    from compiler.syntax import render  # only when W0502 fires: `meshc check` starts without it

    return "retry_budget { " + " ".join(f"{s.key} {render.scalar(s.forms[0], s.default)}"
                                        for s in RETRY_BUDGET.settings) + " }"


def check_retry_limits(ctx: Context) -> None:
    """W0503: `limits { retries N }` next to a retry budget does nothing."""
    for _, svc in ctx.local_services():
        if svc.retry_budget is None:
            continue
        limits = resolve_block(ctx, svc.limits, "limits")
        setting = limits.get("retries") if limits is not None else None
        if setting is not None and setting.values[0].value != ast.TOO_LARGE:  # (E0302 from the parser)
            span = setting.span if isinstance(svc.limits, ast.Block) else svc.limits.span
            ctx.diags.add("W0503", f"`retries {setting.values[0].value}` of service `{svc.name.value}` is ignored: "
                          "its retry budget decides", span,
                          hint="remove the retry limit, or the retry budget")


def check_retries(ctx: Context) -> None:
    check_retry_limits(ctx)
    for block in ctx.routes.values():
        for route in block.routes:
            retry = route_retry_block(ctx, route)
            if retry is None:
                continue
            assert route.retry is not None  # it has a retry block
            where = route.retry.span
            on = retry.get("on")
            words = [v.value for v in on.values] if on is not None else ["5xx"]
            post_send = [w for w in words if w not in PRE_SEND_CONDITIONS and (w in RETRY_CONDITIONS or w.isdigit())]
            if post_send and retry.get("allow_non_idempotent") is None:
                methods = [m.methods for m in route_matches(ctx, route)]
                risky = sorted({x for ms in methods if ms is not None for x in ms if x in NON_IDEMPOTENT})
                if any(ms is None for ms in methods):
                    what = "any method, POST included"
                elif risky:
                    what = " and ".join(f"`{m}`" for m in risky) + " requests"
                else:
                    what = None
                if what:
                    ctx.diags.add("W0501", f"route `{route.name.value}` retries on `{post_send[0]}` and matches "
                                  f"{what}", where,
                                  hint="restrict the route with `method [GET, HEAD, …]`, retry only on "
                                       "`connect-failure`/`refused-stream`, or add `allow_non_idempotent` to the retry")
            for service in _destinations(route):
                svc = ctx.services.get(service)
                if svc is not None and svc.retry_budget is None:
                    ctx.diags.add("W0502", f"route `{route.name.value}` retries to service `{service}`, "
                                  "which has no retry budget", where,
                                  hint=f"add `{budget_example()}` to service `{service}`")


def _destinations(route: ast.Route) -> list[str]:
    refs = [route.to] if route.to is not None else [e.target for e in route.split.entries] if route.split else []
    return list(dict.fromkeys(r.scope or r.name for r in refs))
