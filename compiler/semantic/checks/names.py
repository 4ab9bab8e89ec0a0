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
            for mirror in route.mirrors:
                check_destination(ctx, mirror.target, f"the mirror of route `{route.name.value}`")
            if isinstance(route.retry, ast.Ref):
                check_policy_ref(ctx, route.retry, "retry")
            for m in route.matches:
                for c in m.conditions:
                    if isinstance(c, ast.CallerCond):
                        _check_callers(ctx, c, route)
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


def _check_callers(ctx: Context, cond: ast.CallerCond, route: ast.Route) -> None:
    for v in cond.callers:
        if v.value not in ctx.services and ("service", v.value) not in ctx.broken:
            ctx.diags.add("E0214", f"unknown caller `{v.value}` in route `{route.name.value}`", v.span,
                          hint=did_you_mean(v.value, ctx.services) or "`caller` names a declared service: the one "
                          "whose sidecar takes the route")


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


# A DNS name as a Host names it: labels of letters, digits and inner hyphens, at most 63 each.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS = rf"{_LABEL}(?:\.{_LABEL})*"


def _host_problem(text: str, port: int | None) -> tuple[str, str, str] | None:
    """What is wrong with a written host: (code, message, hint), or None when it is one."""
    import re

    host, sep, written_port = text.partition(":")
    if sep and not written_port.isdigit():
        return ("E0211", f"`{text}` is not a hostname: the part after `:` must be a port",
                "write `NAME`, `NAME:PORT`, `*.SUFFIX`, `PREFIX.*` or `*`")
    if (host == "*" or host.endswith(".*")) and sep:
        return ("E0211", f"`{text}` has a port after a wildcard that already matches any port", f"write `{host}`")
    body = host[2:] if host.startswith("*.") else host[:-2] if host.endswith(".*") else host
    if host != "*" and "*" in body:
        return ("E0211", f"`{text}` has a wildcard inside the name: `*` stands only for the whole first label, "
                         "the whole last label or the whole host",
                "write `*.example.com` (any name under example.com), `api.*` (api under any suffix) or `*` "
                "(every Host no other service claims)")
    if host != "*" and (len(body) > 253 or not re.fullmatch(_DNS, body.lower())):
        return ("E0211", f"`{text}` is not a hostname",
                "a hostname is dot-separated labels of letters, digits and inner hyphens, at most 63 characters "
                "each, such as `api.example.com`")
    if sep and port is not None and int(written_port) != port:
        return ("E0213", f"`{text}` names port {int(written_port)}, but the service listens on {port}",
                f"write `{host}` (it answers with and without `:{port}`), or change the service's port")
    return None


def check_hosts(ctx: Context) -> None:
    """Every written host is a hostname or a wildcard of Envoy's forms (E0211) with the service's
    port if any (E0213), and no Host domain belongs to two services (E0212): Envoy rejects a route
    configuration in which two virtual hosts share a domain."""
    from compiler.core.diagnostics import Label
    from compiler.semantic.conditions import service_domains, service_namespace

    owners: dict[str, tuple[str, object]] = {}  # lower-cased domain -> (service, the span that claims it)
    reported: set[tuple[str, object]] = set()   # one E0212 per claim and first owner (not one per port form)
    local = {name for name, _ in ctx.local_services()}
    # in the order of the text (a sharded run holds the other process's services as stubs, after its own)
    for name, svc in sorted(ctx.services.items(), key=lambda item: (item[1].span.path, item[1].span.start)):
        if svc.hosts == () and name in local:
            ctx.diags.add("E0301", f"the hosts list of service `{name}` is empty", svc.name.span,
                          hint="list more Host names, or leave `hosts` out: the service's own names need none")
        if svc.port is None:
            continue
        bad = False
        for h in svc.hosts or ():
            problem = _host_problem(h.value, svc.port.value)
            if problem is not None:
                bad = True
                if name in local:
                    ctx.diags.add(problem[0], problem[1], h.span, hint=problem[2])
        if bad:
            continue
        written = {h.value.lower(): h.span for h in svc.hosts or ()}
        for i, d in enumerate(service_domains(ctx, svc)):
            span = written.get(d) or written.get(d.rpartition(":")[0]) or svc.name.span
            first = owners.get(d)
            if i < 2 and "/" in name:
                # the short name of a service whose name several namespaces declare: its own namespace's
                # callers only (ir/names.py `seen_from`), so one claim per namespace
                short = owners.get(f"{d} {service_namespace(svc)}")
                first = first if first is not None and "/" not in first[0] else short
                if first is None:
                    owners[f"{d} {service_namespace(svc)}"] = owners[f"{d} "] = (name, span)
                    continue
            elif first is None:
                first = owners.get(f"{d} ")   # another namespace's short name: every caller of it sees d too
            if first is None:
                owners[d] = (name, span)
            elif first[0].lower() != name.lower() and name in local and (first[0], span) not in reported:
                reported.add((first[0], span))  # (names that differ only in case: E0702 of the Envoy backend)
                ctx.diags.add("E0212", f"Host `{d}` is claimed by services `{first[0]}` and `{name}`", span,
                              labels=(Label(first[1], f"`{first[0]}` claims it here"),),  # type: ignore[arg-type]
                              hint="a Host names one service: remove it from one of them, or give one of them "
                                   "another name or namespace")
