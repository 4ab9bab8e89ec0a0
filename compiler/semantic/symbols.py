"""The program's symbol table: services, routes and authorization blocks, named policies.

Built once from the loaded modules; duplicate declarations are reported here (E0202) and the
first declaration wins, so later passes can rely on unique names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.core.diagnostics import Collector, Label
from compiler.language import defaults
from compiler.language.settings import MESH, Setting
from compiler.semantic.program import Program
from compiler.syntax import ast

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from typing import Any


@dataclass
class Context:
    """What every check and the lowering read: the program, its symbols and the diagnostics."""

    program: Program
    diags: Collector
    services: dict[str, ast.Service] = field(default_factory=dict)
    routes: dict[str, ast.Routes] = field(default_factory=dict)
    authorizations: dict[str, ast.Authorization] = field(default_factory=dict)
    # by (kind, qualified name): `("retry", "std.idempotent")`; kinds have separate namespaces
    policies: dict[tuple[str, str], ast.Policy] = field(default_factory=dict)
    mesh: ast.Mesh | None = None
    asserts: list[ast.Assert] = field(default_factory=list)   # in program order (docs/testing.md)
    tests: list[ast.Test] = field(default_factory=list)     # policy tests, in program order
    # Lowered pieces shared by the checks and the lowering, keyed by id() of the AST node
    # (nodes live as long as the context; their deep hashes would cost more than the work).
    # Each kind of key has its own kind of value (compiler/semantic/conditions.py).
    memo: dict[tuple[str, int], Any] = field(default_factory=dict)
    # Sharded analysis (compiler/sharding.py): services declared in another shard are present as
    # stubs (names, subsets, identity) so that references resolve; they are neither checked nor
    # lowered here. `routed` names every service with a routes block anywhere in the program.
    remote: set[str] = field(default_factory=set)
    # (kind, name) of items that failed to parse: references to them are not reported again.
    broken: set[tuple[str, str]] = field(default_factory=set)
    routed: set[str] | None = None
    trust_domain_override: str | None = None
    # The language server's check results kept between analyses of one document
    # (compiler/semantic/reuse.py); None everywhere else.
    reuse: Any = None

    def local_services(self):
        """The services this context checks and lowers: all of them, except remote stubs."""
        if not self.remote:
            return self.services.items()
        return [(n, s) for n, s in self.services.items() if n not in self.remote]

    def has_routes(self, service: str) -> bool:
        return service in self.routes or (self.routed is not None and service in self.routed)

    @property
    def trust_domain(self) -> str:
        if self.trust_domain_override is not None:
            return self.trust_domain_override
        return self.mesh_setting("trust_domain")

    def mesh_setting(self, key: str) -> str:
        """The value of a one-value `mesh { key value }` setting, or its default."""
        if self.mesh is not None:
            s = _setting(self.mesh.settings, key)
            if s is not None:
                return s.values[0].value
        return MESH.default(key)

    def mtls_mode(self, svc: ast.Service) -> str | None:
        """The service's own `mtls`, else the mesh-wide one, else the default; None when the value
        that applies is not a mode (E0312 says so), so that no check reasons from a guessed one."""
        if svc.mtls is not None:
            return known_choice(MESH["mtls"], svc.mtls.value)
        return known_choice(MESH["mtls"], self.mesh_setting("mtls"))

    def policy(self, ref: ast.Ref, kind: str):
        """The body of the named policy of this kind, or None if it is missing or of another kind."""
        p = self.policies.get((kind, str(ref)))
        return p.body if p is not None else None

    def subset_of(self, ref: ast.Ref) -> tuple[str, str] | None:
        """(service, subset) named by `service.subset`, or by `service` alone when it has one subset."""
        svc = self.services.get(ref.scope or ref.name)
        if svc is None:
            return None
        names = subset_names(svc)
        if ref.scope is None:
            return (svc.name.value, names[0]) if len(names) == 1 else None
        return (svc.name.value, ref.name) if ref.name in names else None


def known_choice(setting: Setting, value: str) -> str | None:
    """A written value of a setting with choices (compiler/language/settings.py), or None when it
    is not one of them: E0312 reports it, and every check that depends on the setting treats it
    as unknown rather than as a default or a near choice."""
    return value if value in setting.choices else None


def _setting(settings, key):
    for s in settings:
        if s.key == key:
            return s
    return None


def subset_names(svc: ast.Service) -> list[str]:
    """Written subsets, or the implicit `default` subset of service-level `endpoints`."""
    names = [s.name.value for s in svc.subsets]
    if svc.endpoints is not None:
        names.insert(0, defaults.IMPLICIT_SUBSET)
    return names


def build_context(program: Program, diags: Collector) -> Context:
    from compiler.semantic.namespaces import qualify

    program, reported = qualify(program, diags)   # services of one name in several namespaces
    ctx = Context(program, diags)
    ctx.broken.update(reported)
    kinds = {"service": ctx.services, "routes": ctx.routes, "authorization": ctx.authorizations}
    for module in program.modules:
        ctx.broken.update(module.broken)
        std = module.path in program.stdlib_paths
        for item in module.items:
            if isinstance(item, ast.Service):
                _declare(ctx, ctx.services, item.name, item, "service")
            elif isinstance(item, ast.Routes):
                _declare(ctx, ctx.routes, item.service, item, "routes block for")
            elif isinstance(item, ast.Authorization):
                _declare(ctx, ctx.authorizations, item.service, item, "authorization block for")
            elif isinstance(item, ast.Policy):
                qualified = ("std." if std else "") + item.name.value
                _declare(ctx, ctx.policies, ast.Lit(qualified, item.name.span), item, f"{item.kind} policy",
                         key=(item.kind, qualified))
            elif isinstance(item, ast.Assert):
                ctx.asserts.append(item)
            elif isinstance(item, ast.Test):
                if not std:
                    ctx.tests.append(item)
            elif isinstance(item, ast.Mesh):
                if ctx.mesh is not None:
                    diags.add("E0202", "the mesh block is declared twice", item.span,
                              labels=(Label(ctx.mesh.span, "first declared here"),),
                              hint="a program has one `mesh` block")
                else:
                    ctx.mesh = item
    del kinds
    return ctx


def _declare(ctx: Context, table: dict, name: ast.Lit, node, what: str, key=None) -> None:
    key = name.value if key is None else key
    first = table.get(key)
    if first is not None:
        first_span = first.name.span if hasattr(first, "name") else first.service.span
        ctx.diags.add("E0202", f"{what} `{name.value}` is declared twice", name.span,
                      labels=(Label(first_span, "first declared here"),),
                      hint="names are program-wide: rename one, or merge the two declarations")
        return
    table[key] = node


def resolve_block(ctx: Context, node, kind: str) -> ast.Block | None:
    """A settings block written inline, or the body of the named policy of `kind` it refers to
    (None when that policy does not exist)."""
    if isinstance(node, ast.Ref):
        return ctx.policy(node, kind)
    return node


def route_retry_block(ctx: Context, route: ast.Route) -> ast.Block | None:
    """The retry block of a route, through a named policy if need be; None when the route does
    not retry (no retry, `retry none`, or a policy with `attempts 0` such as `std.none`)."""
    if route.retry is None or isinstance(route.retry, ast.Lit):
        return None
    block = resolve_block(ctx, route.retry, "retry")
    attempts = block.get("attempts") if block is not None else None
    if attempts is not None and attempts.values[0].value == 0:
        return None
    return block
