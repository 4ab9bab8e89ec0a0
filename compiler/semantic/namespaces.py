"""Services of one name in several namespaces (docs/language.md §5.1, "One name in several
namespaces").

A service is named by its name alone while that name is declared in one namespace: nothing changes
for such a program. A name declared in several namespaces (`reviews` in `prod` and in `staging`)
names a service by `NAMESPACE/NAME` everywhere after this pass: its key in the symbol table, in
the IR (compiler/ir/names.py `qualified`), its clusters, files and stat names.

References are resolved here, once, before any check: the program's items are rebuilt with every
service reference replaced by the key of the service it names (the parsed items are never changed:
`meshc serve`'s item cache owns them). A reference is

- `NAMESPACE/NAME`: the service `NAME` of that namespace (E0216 when `NAME` is declared but not
  there; an unknown `NAME` is left to the checks that report unknown services);
- `NAME` alone, for a name declared in one namespace: that service;
- `NAME` alone, for a name declared in several: the one of the namespace the reference is written
  for, as Kubernetes resolves a short DNS name in the caller's namespace: in `routes S { … }` and
  `authorization S { … }`, S's namespace. Elsewhere (a `routes` or `authorization` head, a `rules`
  policy, an assert, a test), or when that namespace has none of them: E0215, naming the
  candidates.

A `/` in a declared name (a service, subset, route, policy or rule) is E0217: the namespace of a
service is its `namespace` setting.
"""

from __future__ import annotations

from dataclasses import replace

from compiler.core.diagnostics import Collector
from compiler.language import defaults
from compiler.semantic.program import Program
from compiler.syntax import ast

__all__ = ["qualify"]

_QUIET = "/"   # the context of a block whose head names no service: its references are reported no more


def _namespace(svc: ast.Service) -> str:
    return svc.namespace.value if svc.namespace is not None else defaults.NAMESPACE


def _needed(program: Program) -> bool:
    """Whether any reference may be qualified or any name is declared in two namespaces: a cheap
    look at the words the lexer has met (compiler/syntax/parse.py SLASHED_WORDS), then at the
    user's sources (a `/` right after a name character outside a string and a
    comment is rare; the stdlib declares no service and is never qualified). A false positive
    costs one walk of the items only: `qualify` returns the program itself when nothing changed."""
    import re

    seen: dict[str, str] = {}
    for item in program.items():
        if isinstance(item, ast.Service):
            ns = _namespace(item)
            if seen.setdefault(item.name.value, ns) != ns:
                return True
    from compiler.syntax.parse import SLASHED_WORDS

    if not SLASHED_WORDS:   # no word with a `/` was ever lexed here: no reference can be qualified
        return False
    slash = re.compile(r'(?<![/"\w.-])[A-Za-z_][\w-]*/[A-Za-z_]')
    for path, source in program.sources.items():
        if path in program.stdlib_paths:
            continue
        text = source.text
        for m in slash.finditer(text):   # (mostly none; a comment's `docs/x.md` is skipped here)
            if _code_at(text[text.rfind("\n", 0, m.start()) + 1:m.start()]):
                return True
    return False


def _code_at(line: str) -> bool:
    """Whether what follows `line` (the start of a line) is outside a string and a comment."""
    in_string = escaped = False
    for ch in line:
        if escaped:
            escaped = False
        elif in_string and ch == "\\":
            escaped = True
        elif ch == '"':
            in_string = not in_string
        elif ch == "#" and not in_string:
            return False
    return not in_string


def qualify(program: Program, diags: Collector) -> tuple[Program, set[tuple[str, str]]]:
    """The program with every service reference resolved to its service's key, and the
    (kind, name) pairs of references already reported here (the checks stay quiet about them).
    The program itself when nothing needs resolving (no copy): no name declared in two namespaces,
    no `NAMESPACE/NAME` reference and nothing reported. `meshc check` shards only such a program
    (compiler/sharding.py), so this must not depend on comments or the stdlib's text."""
    if not _needed(program):
        return program, set()
    r = _Resolver(program, diags)
    modules = [replace(m, items=tuple(r.item(i) for i in m.items)) if m.path not in program.stdlib_paths else m
               for m in program.modules]
    if not r.touched:
        return program, set()
    return Program(modules, program.sources, program.stdlib_paths), r.reported


class _Resolver:
    def __init__(self, program: Program, diags: Collector) -> None:
        self.diags = diags
        self.reported: set[tuple[str, str]] = set()
        # a name in two namespaces, a NAMESPACE/NAME reference or a diagnostic: the copy is needed
        self.touched = False
        self.where: dict[str, list[str]] = {}   # name -> its namespaces, in program order
        for item in program.items():
            if isinstance(item, ast.Service) and "/" not in item.name.value:
                spaces = self.where.setdefault(item.name.value, [])
                if _namespace(item) not in spaces:
                    spaces.append(_namespace(item))
                    self.touched = self.touched or len(spaces) > 1
        self.spaces_of: dict[str, str] = {}     # key -> namespace
        for name, spaces in self.where.items():
            for ns in spaces:
                self.spaces_of[self.key(name, ns)] = ns

    def key(self, name: str, namespace: str) -> str:
        return f"{namespace}/{name}" if len(self.where.get(name, ())) > 1 else name

    # ---- one reference ---------------------------------------------------------------------
    def ref_text(self, text: str, context: str | None, span) -> str:
        """The key of the service `text` names, written where bare names mean `context`'s
        namespace (None: nowhere); `text` itself when it names no declared service."""
        if "/" in text:
            self.touched = True
            ns, _, name = text.partition("/")
            spaces = self.where.get(name)
            if spaces is None:
                return text
            if ns not in spaces:
                self._report("E0216", f"no service `{name}` in namespace `{ns}`: `{name}` is declared in "
                              + _listed(spaces), text, span,
                              "write " + " or ".join(f"`{s}/{name}`" for s in spaces))
                return text
            return self.key(name, ns)
        spaces = self.where.get(text)
        if spaces is None or len(spaces) == 1:
            return text
        if context is not None and context in spaces:
            return self.key(text, context)
        if context == _QUIET:
            return text
        here = "" if context is None else f", none of them in `{context}`"
        self._report("E0215", f"service name `{text}` is ambiguous: it is declared in {_listed(spaces)}{here}",
                     text, span, "name one with its namespace: " + " or ".join(f"`{s}/{text}`" for s in spaces))
        return text

    def _report(self, code: str, message: str, text: str, span, hint: str) -> None:
        self.diags.add(code, message, span, hint=hint)
        self.reported.add(("service", text))
        self.touched = True

    def lit(self, lit: ast.Lit, context: str | None) -> ast.Lit:
        new = self.ref_text(lit.value, context, lit.span)
        return lit if new == lit.value else ast.Lit(new, lit.span)

    def ref(self, ref: ast.Ref, context: str | None) -> ast.Ref:
        """A destination `SERVICE` or `SERVICE.SUBSET` (also `NS/SERVICE[.SUBSET]`)."""
        if ref.scope is None:
            new = self.ref_text(ref.name, context, ref.span)
            return ref if new == ref.name else replace(ref, name=new)
        new = self.ref_text(ref.scope, context, ref.span)
        return ref if new == ref.scope else replace(ref, scope=new)

    def declared(self, what: str, name: ast.Lit | None) -> None:
        if name is not None and "/" in name.value:
            self.touched = True
            self.diags.add("E0217", f"{what} name `{name.value}` has a `/`: only a reference to a service may "
                           "name its namespace", name.span,
                           hint="declare the service by its name and write its namespace inside: "
                                "`service NAME { namespace \"NAMESPACE\" … }`" if what == "service" else
                                f"a {what} name is letters, digits, `_` and `-`")

    # ---- items -------------------------------------------------------------------------------
    def item(self, item):
        if isinstance(item, ast.Service):
            self.declared("service", item.name)
            for sub in item.subsets:
                self.declared("subset", sub.name)
            if "/" in item.name.value:
                return item
            new = self.key(item.name.value, _namespace(item))
            return item if new == item.name.value else replace(item, name=ast.Lit(new, item.name.span))
        if isinstance(item, ast.Routes):
            head = self.lit(item.service, None)
            ctx = self.spaces_of.get(head.value, _QUIET)   # (a head E0215 reported: nothing again inside)
            routes = tuple(self.route(r, ctx) for r in item.routes)
            return replace(item, service=head, routes=routes)
        if isinstance(item, ast.Authorization):
            head = self.lit(item.service, None)
            ctx = self.spaces_of.get(head.value, _QUIET)
            items = tuple(self.rule(i, ctx) if isinstance(i, ast.Rule) else i for i in item.items)
            return replace(item, service=head, items=items)
        if isinstance(item, ast.Policy):
            self.declared(f"{item.kind} policy", item.name)
            if isinstance(item.body, tuple):
                return replace(item, body=tuple(self.rule(r, None) for r in item.body))
            return item
        if isinstance(item, ast.Assert):
            return replace(item, destinations=tuple(self.lit(d, None) for d in item.destinations),
                           conditions=tuple(self.cond(c, None) for c in item.conditions))
        if isinstance(item, ast.Test):
            return self.test(item)
        return item

    def route(self, r: ast.Route, ctx: str | None) -> ast.Route:
        self.declared("route", r.name)
        changes: dict = {}
        if r.to is not None:
            changes["to"] = self.ref(r.to, ctx)
        if r.split is not None:
            changes["split"] = replace(r.split, entries=tuple(replace(e, target=self.ref(e.target, ctx))
                                                              for e in r.split.entries))
        if r.mirrors:
            changes["mirrors"] = tuple(replace(m, target=self.ref(m.target, ctx)) for m in r.mirrors)
        if r.matches:
            changes["matches"] = tuple(replace(m, conditions=tuple(self.cond(c, ctx) for c in m.conditions))
                                       for m in r.matches)
        return replace(r, **changes) if changes else r

    def cond(self, c, ctx: str | None):
        if isinstance(c, ast.CallerCond):
            return replace(c, callers=tuple(self.lit(v, ctx) for v in c.callers))
        if isinstance(c, ast.FromCond) and c.kind == "service":
            return replace(c, values=tuple(self.lit(v, ctx) for v in c.values))
        return c

    def rule(self, rule: ast.Rule, ctx: str | None) -> ast.Rule:
        self.declared("rule", rule.name)
        return replace(rule, conditions=tuple(self.cond(c, ctx) for c in rule.conditions))

    def test(self, t: ast.Test) -> ast.Test:
        request = t.request
        if request is not None and request.caller_kind == "service" and request.caller is not None:
            request = replace(request, caller=self.lit(request.caller, None))
        expect = []
        for e in t.expect:
            if e.kind in ("to", "to_any", "route", "mirror"):
                e = replace(e, values=tuple(self.ref(v, None) if isinstance(v, ast.Ref) else v for v in e.values))
            elif e.kind in ("denied_by", "allowed_by"):
                # `SERVICE.RULE`: the service part (a namespace-qualified one holds no dot)
                v = e.values[0]
                service, dot, rule = v.value.rpartition(".")
                if dot:
                    new = self.ref_text(service, None, v.span)
                    if new != service:
                        e = replace(e, values=(ast.Lit(f"{new}.{rule}", v.span),) + e.values[1:])
            expect.append(e)
        return replace(t, request=request, expect=tuple(expect))


def _listed(spaces: list[str]) -> str:
    shown = [f"`{s}`" for s in spaces]
    return ("namespaces " + ", ".join(shown[:-1]) + " and " + shown[-1]) if len(shown) > 1 else "namespace " + shown[0]
