"""Every name resolves: services, subsets, named policies (E0201-E0209)."""

from __future__ import annotations

from compiler.core.diagnostics import did_you_mean
from compiler.language.identity import MAX_NAME_LENGTH
from compiler.semantic.symbols import Context, subset_names
from compiler.syntax import ast

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from collections.abc import Iterator


def check_policy_ref(ctx: Context, ref: ast.Ref, kind: str) -> None:
    policy = ctx.policies.get((kind, str(ref)))
    if policy is None and (f"policy {kind}", ref.name) in ctx.broken and ref.scope is None:
        return  # its declaration has a syntax error, already reported
    if policy is None:
        other = next((p for (k, n), p in ctx.policies.items() if n == str(ref)), None)
        if other is not None:
            ctx.diags.add("E0207", f"`{ref}` is {_a(other.kind)} policy, not {_a(kind)} policy", ref.span,
                          hint=f"use a policy declared with `policy {kind} NAME {{ … }}`")
            return
        same_kind = [n for (k, n) in ctx.policies if k == kind]
        hint = did_you_mean(str(ref), same_kind)
        if hint is None and ref.scope == "std":
            hint = 'standard-library policies need an import, such as `import "std/resilience"`'
        if hint is None and same_kind:
            hint = f"{kind} policies in this program: " + ", ".join(f"`{n}`" for n in sorted(same_kind)[:8])
        ctx.diags.add("E0204", f"unknown {kind} policy `{ref}`", ref.span, hint=hint)


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def check_destination(ctx: Context, ref: ast.Ref, what: str) -> None:
    service_name = ref.scope or ref.name
    svc = ctx.services.get(service_name)
    if svc is None and ("service", service_name) in ctx.broken:
        return
    if svc is None:
        ctx.diags.add("E0201", f"unknown service `{service_name}` in {what}", ref.span,
                      hint=did_you_mean(service_name, ctx.services))
        return
    names = subset_names(svc)
    if ref.scope is None:
        if len(names) != 1:
            ctx.diags.add("E0208", f"service `{service_name}` has {len(names)} subsets: name one in {what}", ref.span,
                          hint="write " + " or ".join(f"`{service_name}.{n}`" for n in names[:3]))
        return
    if ref.name not in names:
        hint = did_you_mean(ref.name, names) or (
            f"subsets of `{service_name}`: " + ", ".join(f"`{n}`" for n in names))
        ctx.diags.add("E0203", f"service `{service_name}` has no subset `{ref.name}`", ref.span, hint=hint)


def check_references(ctx: Context) -> None:
    for name, block in ctx.routes.items():
        if name not in ctx.services and ("service", name) not in ctx.broken:
            ctx.diags.add("E0209", f"routes for unknown service `{name}`", block.service.span,
                          hint=did_you_mean(name, ctx.services) or "declare the service with `service NAME { … }`")
        for route in block.routes:
            if route.to is not None:
                check_destination(ctx, route.to, f"route `{route.name.value}`")
            if route.split is not None:
                for entry in route.split.entries:
                    check_destination(ctx, entry.target, f"the split of route `{route.name.value}`")
            for m in route.mirrors:
                check_destination(ctx, m.target, f"the mirror of route `{route.name.value}`")
            if isinstance(route.retry, ast.Ref):
                check_policy_ref(ctx, route.retry, "retry")
    for _, svc in ctx.local_services():
        for attr, kind in (("limits", "limits"), ("outlier", "outlier"), ("retry_budget", "retry_budget")):
            node = getattr(svc, attr)
            if isinstance(node, ast.Ref):
                check_policy_ref(ctx, node, kind)
    for name, authz in ctx.authorizations.items():
        if name not in ctx.services and ("service", name) not in ctx.broken:
            ctx.diags.add("E0209", f"authorization for unknown service `{name}`", authz.service.span,
                          hint=did_you_mean(name, ctx.services) or "declare the service with `service NAME { … }`")
        for item in authz.items:
            if isinstance(item, ast.UseRules):
                check_policy_ref(ctx, item.ref, "rules")
    for rule in all_rules(ctx):
        for cond in rule.conditions:
            if isinstance(cond, ast.FromCond) and cond.kind == "service":
                for v in cond.values:
                    if v.value not in ctx.services and ("service", v.value) not in ctx.broken:
                        ctx.diags.add("E0201", f"unknown service `{v.value}` in `from service`", v.span,
                                      hint=did_you_mean(v.value, ctx.services))


def all_rules(ctx: Context) -> Iterator[ast.Rule]:
    """Every rule written in the program: in authorization blocks and in `rules` policies."""
    for authz in ctx.authorizations.values():
        for item in authz.items:
            if isinstance(item, ast.Rule):
                yield item
    for policy in ctx.policies.values():
        if isinstance(policy.body, tuple):  # a `rules` policy
            yield from policy.body


def check_name_lengths(ctx: Context) -> None:
    """Every name the program declares, and every namespace, is at most MAX_NAME_LENGTH
    characters (E0210): it becomes a DNS label, a file name, a cluster and a stat name. Every
    declaration is checked, a duplicate one too; the standard library's are short."""
    for module in ctx.program.modules:
        if module.path in ctx.program.stdlib_paths:
            continue
        for item in module.items:
            if isinstance(item, ast.Service):
                _name_length(ctx, "service", item.name)
                for sub in item.subsets:
                    _name_length(ctx, "subset", sub.name)
                if item.namespace is not None:
                    _name_length(ctx, "namespace", item.namespace)
            elif isinstance(item, ast.Routes):
                for route in item.routes:
                    _name_length(ctx, "route", route.name)
            elif isinstance(item, ast.Policy):
                _name_length(ctx, f"{item.kind} policy", item.name)
                if isinstance(item.body, tuple):
                    _rule_name_lengths(ctx, item.body)
            elif isinstance(item, ast.Authorization):
                _rule_name_lengths(ctx, [i for i in item.items if isinstance(i, ast.Rule)])


def _rule_name_lengths(ctx: Context, rules) -> None:
    for rule in rules:
        if rule.name is not None:
            _name_length(ctx, "rule", rule.name)
        for cond in rule.conditions:
            if isinstance(cond, ast.FromCond) and cond.kind == "namespace":
                for v in cond.values:
                    _name_length(ctx, "namespace", v)


def _name_length(ctx: Context, what: str, name: ast.Lit) -> None:
    if len(name.value) <= MAX_NAME_LENGTH:
        return
    shown = name.value[:24] + "…"
    ctx.diags.add("E0210", f"{what} name `{shown}` is {len(name.value):,} characters long, more than "
                  f"{MAX_NAME_LENGTH}", name.span,
                  hint=f"names become DNS labels, SPIFFE IDs, Envoy cluster and stat names and file names: "
                       f"shorten it to at most {MAX_NAME_LENGTH} characters")
