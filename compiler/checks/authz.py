"""Authorization logic: rules that can never apply (W0601), have no effect (W0602), or repeat (W0603)."""

from __future__ import annotations

from compiler.diagnostics import Label
from compiler.lower import authorization_rules
from compiler.matching import rule_covers
from compiler.symbols import Context


def check_authorization(ctx: Context) -> None:
    for name, authz in ctx.authorizations.items():
        if authz.default is None:
            continue
        svc = ctx.services.get(name)
        lowered = authorization_rules(ctx, svc, authz)
        denies = [(r, lr) for r, lr in lowered if lr.action == "deny"]
        allows = [(r, lr) for r, lr in lowered if lr.action == "allow"]
        default = authz.default.value
        named: dict[str, object] = {}
        for item in authz.items:  # names become RBAC policy names: they must be unique
            key = f"use {item.ref}" if hasattr(item, "ref") else (item.name.value if item.name else None)
            if key is None:
                continue
            node = item.ref if hasattr(item, "ref") else item.name
            if key in named:
                what = f"rule set `{item.ref}` is used twice" if hasattr(item, "ref") else f"rule `{key}` is declared twice"
                ctx.diags.add("E0202", f"{what} in authorization `{name}`", node.span,
                              labels=(Label(named[key].span, "first here"),))
            else:
                named[key] = node
        for i, (rule, lr) in enumerate(lowered):
            span = rule.span if rule.span is not None and rule.span.source is authz.span.source else authz.service.span
            twin = next(((r, o) for r, o in lowered[:i] if o.action == lr.action and _same(o, lr)), None)
            if twin is not None:
                ctx.diags.add("W0603", f"rule `{lr.name}` repeats rule `{twin[1].name}`", span,
                              labels=(Label(twin[0].span, "same rule here"),) if twin[0].span else ())
                continue
            if lr.action == "allow":
                cover = next(((r, d) for r, d in denies if rule_covers(d, lr)), None)
                if cover is not None:
                    ctx.diags.add("W0601", f"allow rule `{lr.name}` can never apply", span,
                                  labels=(Label(cover[0].span, f"deny rule `{cover[1].name}` matches every request it "
                                                               "matches, and deny wins"),) if cover[0].span else (),
                                  hint="narrow the deny rule, or remove the allow rule")
                elif default == "allow":
                    ctx.diags.add("W0602", f"allow rule `{lr.name}` has no effect under `default allow`", span,
                                  hint="whatever no deny rule takes is allowed already; did you mean `default deny`?")
            elif default == "deny" and not allows:
                ctx.diags.add("W0602", f"deny rule `{lr.name}` has no effect under `default deny`", span,
                              hint="with no allow rule everything is denied already; did you mean `default allow`?")


def _same(a, b) -> bool:
    return (a.principals, a.path, a.methods, a.headers) == (b.principals, b.path, b.methods, b.headers)
