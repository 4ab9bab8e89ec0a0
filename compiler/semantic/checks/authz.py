"""Authorization logic: rules that can never apply (W0601), have no effect (W0602), repeat (W0603), or
name identities that a plaintext caller does not have (W0604)."""

from __future__ import annotations

from compiler.core.diagnostics import Label
from compiler.semantic.conditions import authorization_rules
from compiler.semantic.matching import rule_covers, rule_never_matches
from compiler.semantic.symbols import Context
from compiler.syntax import ast

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from typing import Any


def check_authorization(ctx: Context) -> None:
    for name, authz in ctx.authorizations.items():
        if ctx.reuse is None:
            check_block(ctx, name, authz)
        else:   # the language server, `meshc serve`: an unchanged block that read unchanged items
            ctx.reuse.unit(ctx, "authorization", authz, check_block, ctx, name, authz)


def check_block(ctx: Context, name: str, authz: ast.Authorization) -> None:
    """The checks of one authorization block. Besides the block, it reads the program only through
    the context's symbol tables and its `mesh` block (compiler/semantic/reuse.py relies on it)."""
    reported: set[tuple[str, int]] = set()  # (code, id of a `use`)

    def add(code: str, origin: ast.Rule | ast.UseRules, message: str, **kw: Any) -> None:
        # A `use` stands for several rules: one diagnostic of a kind per `use` is enough.
        key = (code, id(origin))
        if isinstance(origin, ast.UseRules):
            if key in reported:
                return
            reported.add(key)
        ctx.diags.add(code, message, origin.span, **kw)

    check_rule_names(ctx, name, authz)
    if authz.default is not None:
        _check_rules(ctx, name, authz, authz.default.value, add)


def _check_rules(ctx: Context, name: str, authz: ast.Authorization, default: str, add: Any) -> None:
    svc = ctx.services.get(name)
    lowered = authorization_rules(ctx, svc, authz)
    denies = [(r, lr) for r, lr in lowered if lr.action == "deny"]
    allows = [(r, lr) for r, lr in lowered if lr.action == "allow"]
    named = _first_items(authz)
    duplicate_uses = {id(item) for item in authz.items
                      if isinstance(item, ast.UseRules) and named.get(f"use {item.ref}") is not item.ref}
    mode = ctx.mtls_mode(svc) if svc is not None else "strict"
    for i, (origin, lr) in enumerate(lowered):
        if id(origin) in duplicate_uses:
            continue  # reported as E0202 already
        if lr.principals and mode not in ("strict", None):  # () is E0301's; None: E0312's
            add("W0604", origin, _plaintext_message(lr, name, mode),
                hint="set `mtls strict` on the service (or in the mesh block) once every caller has a sidecar")
        twin = next(((o, other) for o, other in lowered[:i] if other.action == lr.action and _same(other, lr)),
                    None)
        if twin is not None:
            add("W0603", origin, f"rule `{lr.name}` repeats rule `{twin[1].name}`",
                labels=(Label(twin[0].span, "same rule here"),))
            continue
        if rule_never_matches(lr):
            add("W0610", origin, f"{lr.action} rule `{lr.name}` never matches: its `not` conditions exclude "
                "every request it names", hint="remove the `not path` or `not method` that repeats the rule's "
                "own `path` or `method`, or narrow it")
            continue
        if lr.action == "allow":
            cover = next(((o, d) for o, d in denies if rule_covers(d, lr)), None)
            if cover is not None:
                add("W0601", origin, f"allow rule `{lr.name}` can never apply",
                    labels=(Label(cover[0].span, f"deny rule `{cover[1].name}` matches every request it "
                                                 "matches, and deny wins"),),
                    hint="narrow the deny rule, or remove the allow rule")
            elif default == "allow":
                add("W0602", origin, f"allow rule `{lr.name}` has no effect under `default allow`",
                    hint="whatever no deny rule takes is allowed already; did you mean `default deny`?")
        elif default == "deny" and not allows:
            add("W0602", origin, f"deny rule `{lr.name}` has no effect under `default deny`",
                hint="with no allow rule everything is denied already; did you mean `default allow`?")


def _plaintext_message(rule, service: str, mode: str) -> str:
    """W0604: what a caller without a verified identity does to this rule."""
    if mode == "disable":
        return (f"{rule.action} rule `{rule.name}` names caller identities, but service `{service}` has mTLS "
                "disabled: no caller has a verified identity, so the rule never matches")
    effect = "bypass this deny rule" if rule.action == "deny" else "are never admitted by this rule"
    return (f"{rule.action} rule `{rule.name}` names caller identities, but service `{service}` also accepts "
            f"plaintext callers (`mtls permissive`), which have no identity and {effect}")


def _first_items(authz: ast.Authorization) -> dict[str, object]:
    """The first `use` of each rule set and the first rule of each written name."""
    named: dict[str, object] = {}
    for item in authz.items:
        if isinstance(item, ast.UseRules):
            named.setdefault(f"use {item.ref}", item.ref)
        elif item.name is not None:
            named.setdefault(item.name.value, item.name)
    return named


def check_rule_names(ctx: Context, name: str, authz: ast.Authorization) -> None:
    """Rule names become RBAC policy names: a rule set used twice, or two rules with one name, is
    E0202. Generated names (`allow-2`) count too, so a written name cannot take one of them."""
    first_use: dict[str, ast.UseRules] = {}
    for item in authz.items:
        if isinstance(item, ast.UseRules):
            first = first_use.setdefault(str(item.ref), item)
            if first is not item:
                ctx.diags.add("E0202", f"rule set `{item.ref}` is used twice in authorization `{name}`",
                              item.ref.span, labels=(Label(first.ref.span, "first here"),))
    first_rule: dict[str, ast.Rule | ast.UseRules] = {}
    for origin, lowered in authorization_rules(ctx, ctx.services.get(name), authz):
        if isinstance(origin, ast.UseRules) and first_use[str(origin.ref)] is not origin:
            continue  # a repeated `use`: reported above
        first_origin = first_rule.setdefault(lowered.name, origin)
        if first_origin is not origin:
            ctx.diags.add("E0202", f"rule `{lowered.name}` is declared twice in authorization `{name}`",
                          _name_or_item(origin).span, labels=(Label(_name_or_item(first_origin).span, "first here"),),
                          hint="rule names must be unique; an unnamed rule is called `allow-N` or `deny-N` by its "
                               "position")


def _name_or_item(origin: ast.Rule | ast.UseRules) -> ast.Lit[str] | ast.Rule | ast.UseRules:
    return origin.name if isinstance(origin, ast.Rule) and origin.name is not None else origin


def _same(a, b) -> bool:
    return ((a.principals, a.path, a.methods, a.headers, set(a.not_paths), set(a.not_methods))
            == (b.principals, b.path, b.methods, b.headers, set(b.not_paths), set(b.not_methods)))
