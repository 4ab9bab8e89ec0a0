"""Matches and authorization rules as the backends will see them: their IR, computed once per
AST node and shared by the checks (which reason about exactly what is emitted: shadowed routes,
rules that never apply) and the lowering. Pure functions; they cope with a program that has
errors (an unresolved `from service` is left out)."""

from __future__ import annotations

from compiler import ir
from compiler.language import defaults
from compiler.language.identity import namespace_prefix, spiffe_id
from compiler.semantic.symbols import Context
from compiler.syntax import ast


def location(node) -> ir.Location:
    """Where an AST node was written, as the IR's provenance."""
    span = getattr(node, "span", None)
    if span is None:
        return ir.Location("<unknown>", 0, 0)
    line, column = span.start_line_col()
    return ir.Location(span.path, line, column)


def service_namespace(svc: ast.Service) -> str:
    return svc.namespace.value if svc.namespace is not None else defaults.NAMESPACE


def service_domains(ctx: Context, svc: ast.Service) -> tuple[str, ...]:
    """The Host domains of a service with a port (compiler/ir/names.py `domains`)."""
    from compiler.ir.names import domains, short_name

    assert svc.port is not None
    return domains(short_name(svc.name.value), service_namespace(svc), svc.port.value,
                   ctx.mesh_setting("cluster_domain"),
                   (h.value for h in svc.hosts or ()))


def service_identity(ctx: Context, svc: ast.Service) -> str:
    """The SPIFFE ID of a service: written with `identity`, else its service account's."""
    if svc.identity is not None:
        return svc.identity.value
    return spiffe_id(ctx.trust_domain, service_namespace(svc), svc.name.value.rpartition("/")[2])


# ---- matches ------------------------------------------------------------------------------------

def lower_path(cond: ast.PathCond) -> ir.PathMatch:
    """`prefix` is segment-aware; a prefix that already ends in `/` is the same as a raw one."""
    value, ignore_case = cond.value.value, cond.ignore_case
    if cond.kind == "prefix":
        if value.endswith("/"):
            return ir.PathMatch("prefix", value, ignore_case)
        return ir.PathMatch("segment_prefix", value, ignore_case)
    if cond.kind == "raw_prefix":
        return ir.PathMatch("prefix", value, ignore_case)
    return ir.PathMatch(cond.kind, value, ignore_case)


def lower_header(cond: ast.HeaderCond) -> ir.HeaderMatch:
    name = cond.name.value.lower()
    kind = cond.test
    if kind in ("present", "absent"):
        if cond.invert:  # `not header x present` is `absent`, and the reverse
            kind = "absent" if kind == "present" else "present"
        return ir.HeaderMatch(name, kind, None, False, False)
    assert cond.value is not None  # every other test has its operand (the grammar says so)
    return ir.HeaderMatch(name, kind, cond.value.value, cond.invert, cond.ignore_case)


def lower_query(cond: ast.QueryCond) -> ir.QueryMatch:
    return ir.QueryMatch(cond.name.value, cond.test, cond.value.value if cond.value is not None else None)


def lower_match(match: ast.Match | None) -> ir.Match:
    path = None
    headers, query, methods, callers = [], [], None, None
    for cond in (match.conditions if match is not None else ()):
        if isinstance(cond, ast.PathCond):
            path = lower_path(cond)
        elif isinstance(cond, ast.HeaderCond):
            headers.append(lower_header(cond))
        elif isinstance(cond, ast.QueryCond):
            query.append(lower_query(cond))
        elif isinstance(cond, ast.MethodCond):
            listed = tuple(dict.fromkeys(m.value for m in cond.methods))
            methods = listed if methods is None else tuple(m for m in methods if m in listed)
        elif isinstance(cond, ast.CallerCond):
            callers = tuple(sorted(dict.fromkeys(c.value for c in cond.callers)))
    return ir.Match(path, tuple(headers), tuple(query), methods, callers)


def lower_matches(route: ast.Route) -> tuple[ir.Match, ...]:
    if not route.matches:
        return (lower_match(None),)
    return tuple(lower_match(m) for m in route.matches)


def route_matches(ctx: Context, route: ast.Route) -> tuple[ir.Match, ...]:
    """lower_matches, computed once per route for the checks and the lowering together."""
    key = ("matches", id(route))
    found = ctx.memo.get(key)
    if found is None:
        found = ctx.memo[key] = lower_matches(route)
    return found


# ---- authorization ------------------------------------------------------------------------------

def lower_principals(ctx: Context, svc: ast.Service | None, cond: ast.FromCond) -> tuple[ir.Principal, ...]:
    td = ctx.trust_domain
    out = []
    if cond.kind == "identity":
        for v in cond.values:
            if v.value.endswith("/*"):
                out.append(ir.Principal("prefix", v.value[:-1]))
            else:
                out.append(ir.Principal("exact", v.value))
    elif cond.kind == "namespace":
        out = [ir.Principal("prefix", namespace_prefix(td, v.value)) for v in cond.values]
    elif cond.kind == "service":
        for v in cond.values:
            peer = ctx.services.get(v.value)
            if peer is not None:
                out.append(ir.Principal("exact", service_identity(ctx, peer)))
    elif cond.kind == "same_namespace" and svc is not None:
        out = [ir.Principal("prefix", namespace_prefix(td, service_namespace(svc)))]
    return tuple(dict.fromkeys(out))


def lower_rule(ctx: Context, svc: ast.Service | None, rule: ast.Rule, name: str) -> ir.AuthzRule:
    principals = path = methods = None
    headers = []
    not_paths: list[ir.PathMatch] = []
    not_methods: list[str] = []
    for cond in rule.conditions:
        if isinstance(cond, ast.FromCond):
            principals = lower_principals(ctx, svc, cond)
        elif isinstance(cond, ast.PathCond):
            path = lower_path(cond)
        elif isinstance(cond, ast.MethodCond):
            methods = tuple(dict.fromkeys(m.value for m in cond.methods))
        elif isinstance(cond, ast.HeaderCond):
            headers.append(lower_header(cond))
        elif isinstance(cond, ast.NotCond):
            if isinstance(cond.cond, ast.PathCond):
                not_paths.append(lower_path(cond.cond))
            else:
                not_methods.extend(m.value for m in cond.cond.methods)
    return ir.AuthzRule(name, rule.action, location(rule), principals, path, methods, tuple(headers),
                        tuple(dict.fromkeys(not_paths)), tuple(dict.fromkeys(not_methods)))


def expand_rules(ctx: Context, authz: ast.Authorization) -> list[tuple[ast.Rule, str, ast.Rule | ast.UseRules]]:
    """The rules of an authorization block in written order, `use` sets expanded in place: each
    with its name and the item of the block it comes from (the rule itself, or the `use`)."""
    out: list[tuple[ast.Rule, str, ast.Rule | ast.UseRules]] = []
    counter = 0
    for item in authz.items:
        if isinstance(item, ast.Rule):
            counter += 1
            out.append((item, item.name.value if item.name else f"{item.action}-{counter}", item))
        else:
            rules = ctx.policy(item.ref, "rules") or ()
            for i, rule in enumerate(rules, 1):
                counter += 1
                out.append((rule, f"{item.ref}.{rule.name.value if rule.name else f'{rule.action}-{i}'}", item))
    return out


def authorization_rules(ctx: Context, svc: ast.Service | None,
                        authz: ast.Authorization) -> list[tuple[ast.Rule | ast.UseRules, ir.AuthzRule]]:
    """(the block's item it comes from, its IR) for each rule, `use` sets expanded; computed once."""
    key = ("rules", id(authz))
    found = ctx.memo.get(key)
    if found is None:
        found = ctx.memo[key] = [(origin, lower_rule(ctx, svc, rule, name))
                                 for rule, name, origin in expand_rules(ctx, authz)]
    return found
