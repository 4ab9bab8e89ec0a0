"""Lint rules: findings that are not errors in the language but that a reviewer would flag.

Each rule is a function `(ctx, add)` over a checked program (on a program with errors, a rule
that cannot read a broken value is skipped); `add(code, message,
span, hint, labels)` records a finding. The compiler's own warnings (W-codes) are reported by
`meshc check` already and are part of every lint run; these rules (L-codes) are lint-only.
Rules read the AST (for precise spans) through the lowering helpers (for resolved values), so
they agree with what the backends emit.
"""

from __future__ import annotations

import os

from compiler.core.diagnostics import Label
from compiler.language import defaults
from compiler.semantic.conditions import lower_path
from compiler.semantic.matching import path_matches
from compiler.semantic.program import resolve_import
from compiler.semantic.symbols import Context, route_retry_block
from compiler.semantic.written import retry_timing
from compiler.syntax import ast

TYPE_CHECKING = False   # (typing is not imported: `meshc lint` starts without it)
if TYPE_CHECKING:
    from compiler import ir


def _timeout_ms(route: ast.Route) -> int:
    if route.timeout is None:
        return defaults.ROUTE_TIMEOUT_MS
    return route.timeout.value or 0


def _retry_span(route: ast.Route):
    return route.retry.span if route.retry is not None else route.name.span


def _ms(value: float) -> str:
    return f"{value:g} ms"


def retries_exceed_timeout(ctx: Context, add) -> None:
    """L0101: every try at its per-try timeout, plus the longest backoffs, outlasts the route."""
    for block in ctx.routes.values():
        for route in block.routes:
            retry = route_retry_block(ctx, route)
            timeout = _timeout_ms(route)
            if retry is None or timeout <= 0:
                continue
            retries, per_try, base, top = retry_timing(retry)
            if per_try <= 0 or per_try >= timeout:
                continue  # (at or over the timeout: E0401 says it already)
            tries = retries + 1
            backoff = sum(min((2 ** n - 1) * base, top) for n in range(1, retries + 1))
            worst = tries * per_try + backoff
            if worst > timeout:
                add("L0101", f"route `{route.name.value}` may time out before its last retry: {tries} tries of "
                             f"{_ms(per_try)} plus up to {_ms(backoff)} of backoff take "
                             f"{_ms(worst)}, more than its timeout of {_ms(timeout)}",
                    _retry_span(route),
                    f"raise the route timeout to {worst} ms, or lower `attempts` or `per_try_timeout`")


def fault_delay_over_timeout(ctx: Context, add) -> None:
    """L0102: a fault delay at least as long as the route timeout."""
    for block in ctx.routes.values():
        for route in block.routes:
            setting = route.fault.get("delay") if route.fault is not None else None
            timeout = _timeout_ms(route)
            if setting is None or not setting.values or timeout <= 0:
                continue
            delay_ms = setting.values[0].value
            if delay_ms >= timeout:
                add("L0102", f"fault delay `{_ms(delay_ms)}` of route `{route.name.value}` is not "
                             f"shorter than its timeout `{_ms(timeout)}`",
                    setting.span,
                    "the delay runs before the route timeout starts, so a delayed request can take "
                    f"{_ms(delay_ms + timeout)}: a caller that budgets the route timeout gives up "
                    "first; make the delay shorter than the timeout")


def split_key_also_matched(ctx: Context, add) -> None:
    """L0103: a split's key header is also a match condition of a route of the same block."""
    for block in ctx.routes.values():
        for route in block.routes:
            if route.split is None or route.split.key_header is None:
                continue
            key = route.split.key_header.value.lower()
            for other in block.routes:
                conds = [c for m in other.matches for c in m.conditions
                         if isinstance(c, ast.HeaderCond) and c.name.value.lower() == key]
                if conds:
                    add("L0103", f"split key header `{key}` of route `{route.name.value}` is also matched by "
                                 f"route `{other.name.value}`",
                        route.split.key_header.span,
                        "routing on the key's value changes which keys reach the split, so its weights no longer "
                        "describe the traffic: use a separate header for the split key",
                        (Label(conds[0].span, f"route `{other.name.value}` matches on `{key}` here"),))
                    break


def retries_without_outlier(ctx: Context, add) -> None:
    """L0201: a route retries to a service that has no outlier detection."""
    for block in ctx.routes.values():
        for route in block.routes:
            if route_retry_block(ctx, route) is None:
                continue
            refs = ([route.to] if route.to is not None
                    else [e.target for e in route.split.entries] if route.split else [])
            for ref in refs:
                target = ctx.subset_of(ref)
                if target is None:
                    continue
                svc = ctx.services.get(target[0])
                if svc is not None and svc.outlier is None:
                    add("L0201", f"route `{route.name.value}` retries to `{target[0]}`, which has no outlier detection",
                        _retry_span(route),
                        "without it a retry may go back to the failing endpoint: "
                        f"add `outlier {{ consecutive_5xx 5 }}` (or `outlier std.standard` from std/resilience) "
                        f"to service `{target[0]}`",
                        (Label(svc.name.span, f"service `{target[0]}` declared here"),))
                    break


def _rules_of(ctx: Context, authz: ast.Authorization):
    """(rule, where to report) for the rules of a block, `use` sets expanded and reported at the `use`."""
    for item in authz.items:
        if isinstance(item, ast.Rule):
            yield item, None
        else:
            policy = ctx.policies.get(("rules", str(item.ref)))
            if policy is not None and isinstance(policy.body, tuple):
                for rule in policy.body:
                    yield rule, item


def _rule_name(rule: ast.Rule) -> str:
    return f"`{rule.name.value}`" if rule.name is not None else f"({rule.action})"


def authz_prefix_without_boundary(ctx: Context, add) -> None:
    """L0301: an authorization rule on a raw prefix that does not end at a segment boundary."""
    for authz in ctx.authorizations.values():
        for rule, used in _rules_of(ctx, authz):
            for cond in rule.conditions:
                if isinstance(cond, ast.PathCond) and cond.kind == "raw_prefix" and not cond.value.value.endswith("/"):
                    value = cond.value.value
                    add("L0301", f"{rule.action} rule {_rule_name(rule)} trusts the raw prefix `{value}`, which also "
                                 f"matches `{value}x` and `{value}-internal`",
                        (used or cond).span,
                        f"write `path prefix \"{value}\"` (it stops at a segment boundary: `{value}` and `{value}/…`)")


def deny_bypassed_by_escaped_slashes(ctx: Context, add) -> None:
    """L0302: deny rules on paths, on a sidecar that keeps escaped slashes as they are."""
    for name, authz in ctx.authorizations.items():
        svc = ctx.services.get(name)
        sidecar = svc.sidecar if svc is not None else None
        setting = sidecar.get("escaped_slashes") if sidecar is not None else None
        if setting is None or setting.values[0].value != "keep":
            continue  # (a value that is no choice, `KEEP`, is E0312's: unknown, so no guess here)
        for rule, used in _rules_of(ctx, authz):
            path = next((c for c in rule.conditions if isinstance(c, ast.PathCond)), None)
            if rule.action != "deny" or path is None:
                continue
            example = _escaped(lower_path(path).value)
            add("L0302", f"deny rule {_rule_name(rule)} can be bypassed with an escaped slash: under "
                         f"`escaped_slashes keep`, `{example}` is not denied",
                (used or path).span,
                "an application that decodes `%2F` serves it as the denied path: use `escaped_slashes reject` "
                "(the default) or `decode` on this service's sidecar",
                (Label(setting.span, "escaped slashes are kept here"),))


def deny_bypassed_by_path_variants(ctx: Context, add) -> None:
    """L0303: a deny rule on a case-sensitive path (exact or prefix) that a differently written
    path the application may still serve as the denied one passes: another case, a `;params`
    segment, a double percent-encoding. The same for the path an allow rule excludes with `not
    path`: those forms are not excluded, so the rule allows them."""
    fix = "allow what is public under `default deny` instead of denying what is not"
    after = ("; the application must not strip `;params` from segments or percent-decode twice "
             "(docs/semantics.md, \"Path case, `;params` and double encoding\")")
    for authz in ctx.authorizations.values():
        for rule, used in _rules_of(ctx, authz):
            if rule.action == "deny":
                path = next((c for c in rule.conditions if isinstance(c, ast.PathCond)), None)
                found = _passing_forms(path)
                if path is None or found is None:
                    continue
                value, shown, does, written = found
                case_fix = (f"add `ignore_case` (`path {written} ignore_case`) to deny every case, or "
                            if written else "")
                add("L0303", f"deny rule {_rule_name(rule)} does not deny {shown}, which an application that {does} "
                             f"serves as `{value}`",
                    (used or path).span, case_fix + fix + after)
                continue
            if rule.action != "allow" or authz.default is None or authz.default.value != "deny":
                continue   # (under `default allow` an allow rule's exclusion denies nothing)
            allowed = next((lower_path(c) for c in rule.conditions if isinstance(c, ast.PathCond)), None)
            for cond in rule.conditions:
                excluded = cond.cond if isinstance(cond, ast.NotCond) else None
                # only the forms that the rule's own path still takes: `path prefix "/api/"  not path
                # exact "/api/"` does not allow `/API/`, which its case-sensitive prefix refuses
                found = _passing_forms(excluded, allowed) if isinstance(excluded, ast.PathCond) else None
                if found is None:
                    continue
                value, shown, does, written = found
                case_fix = (f"add `ignore_case` (`not path {written} ignore_case`) to exclude every case, or "
                            if written else "")
                add("L0303", f"allow rule {_rule_name(rule)} excludes `{value}` but not {shown}, which an "
                             f"application that {does} serves as `{value}`: the rule allows them",
                    (used or cond).span, case_fix + "name what the rule allows instead of what it does not" + after)


def _passing_forms(path: ast.PathCond | None,
                   within: ir.PathMatch | None = None) -> tuple[str, str, str, str | None] | None:
    """For a case-sensitive exact or prefix path of more than `/`: (its value, the forms that
    pass it (those `within` takes, when given), what an application does to serve them as it, the
    condition as written when another case is one of them (`ignore_case` is then a fix)), or None
    when no form passes."""
    if path is None or path.kind == "regex" or path.ignore_case:
        return None
    p = lower_path(path)
    if p.value == "/" or not p.value.startswith("/"):
        return None  # every path (or E0314 says it already)
    forms = [f for f in path_variants(p.kind, p.value, _after(within, p.value))
             if within is None or path_matches(within, f[1])]
    if not forms:
        return None
    written = f'{path.kind} "{path.value.value}"' if forms[0][0] == "ignores case" else None
    return p.value, _or([f"`{form}`" for _, form in forms]), _or([what for what, _ in forms]), written


def path_variants(kind: str, value: str, start: int = 1) -> list[tuple[str, str]]:
    """(what the application does, a path it then serves as `value`) for the forms that pass a
    case-sensitive condition of IR kind `kind` on `value` (a path of more than `/`), written
    differently from `value[start]` on (the part after what an allow rule's own path takes)."""
    forms = []
    swapped = value[:start] + value[start:].swapcase() if value.isascii() else value
    if swapped != value:
        forms.append(("ignores case", swapped))
    inner = value.find("/", start)
    if inner > 0:
        forms.append(("strips `;params`", value[:inner] + ";x" + value[inner:]))
    elif kind != "prefix":  # a raw prefix also takes `/admin;x`
        forms.append(("strips `;params`", value + ";x"))
    forms.append(("decodes twice", f"{value[:start]}%25{ord(value[start]):02X}{value[start + 1:]}"))
    return forms


def _after(within: ir.PathMatch | None, value: str) -> int:
    """Where an excluded path `value` goes on past what the rule's own path `within` takes (after
    its `/`): `/api/admin` under `path prefix "/api"` varies from `admin` on; 1 otherwise."""
    if within is None or within.kind not in ("prefix", "segment_prefix") or within.ignore_case:
        return 1
    base = within.value.rstrip("/")
    if len(value) > len(base) + 1 and value.startswith(base + "/"):
        return len(base) + 1
    return 1


def _or(items: list[str]) -> str:
    """`a, b or c`."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _escaped(path: str) -> str:
    """The path with its first inner slash written as `%2F` (or `/x%2F..` for a one-segment path)."""
    inner = path.find("/", 1)
    if 0 < inner < len(path) - 1:
        return path[:inner] + "%2F" + path[inner + 1:]
    return "/x%2F.." + path


def _references(ctx: Context) -> set[tuple[str, str]]:
    """(kind, qualified name) of every named policy that something refers to."""
    used: set[tuple[str, str]] = set()
    for item in ctx.program.items():
        if isinstance(item, ast.Service):
            for kind, node in (("limits", item.limits), ("outlier", item.outlier), ("retry_budget", item.retry_budget)):
                if isinstance(node, ast.Ref):
                    used.add((kind, str(node)))
        elif isinstance(item, ast.Routes):
            for route in item.routes:
                if isinstance(route.retry, ast.Ref):
                    used.add(("retry", str(route.retry)))
        elif isinstance(item, ast.Authorization):
            for entry in item.items:
                if isinstance(entry, ast.UseRules):
                    used.add(("rules", str(entry.ref)))
    return used


def unused_policies(ctx: Context, add) -> None:
    """L0401: a named policy of the user's files that nothing uses."""
    used = _references(ctx)
    for (kind, name), policy in ctx.policies.items():
        if name.startswith("std.") or (kind, name) in used:
            continue
        add("L0401", f"{kind} policy `{name}` is never used", policy.name.span,
            f"use it (e.g. `{_usage(kind, name)}`) or remove it")


def _usage(kind: str, name: str) -> str:
    return {"retry": f"retry {name}", "rules": f"use {name}"}.get(kind, f"{kind} {name}")


def unused_imports(ctx: Context, add) -> None:
    """L0402: an import that contributes nothing: no service, routes or authorization, and none of
    its named policies is used."""
    used = _references(ctx)
    by_path = {m.path: m for m in ctx.program.modules}
    for module in ctx.program.modules:
        importer_key = module.path if module.path in ctx.program.stdlib_paths else os.path.abspath(module.path)
        for item in module.items:
            if not isinstance(item, ast.Import):
                continue
            _, display = resolve_import(importer_key, item.path.value)
            target = by_path.get(display)
            if target is None:
                continue
            declares = [i for i in target.items
                        if isinstance(i, (ast.Service, ast.Routes, ast.Authorization, ast.Mesh))]
            if declares:
                continue
            std = display in ctx.program.stdlib_paths
            names = [(i.kind, ("std." if std else "") + i.name.value)
                     for i in target.items if isinstance(i, ast.Policy)]
            if not any(n in used for n in names):
                add("L0402", f"import `{item.path.value}` is not used: nothing it declares is referred to", item.span,
                    "remove the import")


RULES = (
    retries_exceed_timeout,
    fault_delay_over_timeout,
    split_key_also_matched,
    retries_without_outlier,
    authz_prefix_without_boundary,
    deny_bypassed_by_escaped_slashes,
    deny_bypassed_by_path_variants,
    unused_policies,
    unused_imports,
)
