"""Per-sidecar scoping: which destinations the sidecar of a service receives (docs/semantics.md,
"Scope"). One derivation, read by both backends (the Envoy clusters and virtual hosts, the native
config's services), and through them by `meshc serve`, `meshc compile --proxy S|all`, and the
Kubernetes `Sidecar` egress to come.

A service C can call D (D is in C's scope) when D's authorization *can admit* C:

- D has no authorization block, or `default allow`: it admits every caller (a deny rule never
  removes a destination from a scope: it may hold only for some paths, methods or headers);
- else some `allow` rule of D has no `from`, or a `from` principal that C's SPIFFE ID satisfies:
  an exact principal equal to it (`from service C`, `from identity "ID"`), or a prefix it starts
  with (`from namespace`, `from same_namespace`, `from identity "…/*"`). The rule's other
  conditions (path, method, header) are ignored: when in doubt, in scope. So is the transport: a
  `from` rule that only a caller over mTLS can satisfy keeps D in scope even where C would reach
  it in plaintext (W0604 reports such rules).

A caller also needs the clusters of what the routes of its destinations send to (a `to`, a split
target, a mirror, possibly subsets of a service outside its scope): those services' clusters are
in the scope too, but not their Host (no virtual host, no native destination with domains), so a
request addressed to them gets the out-of-scope answer: what a Host that names no service gets,
404 with an empty body, in both planes.

`full` says the scope is every service of the program: such sidecars can share one file of
clusters and one of routes in the file layout of `--proxy all`.

Caller-specific routes (a `caller` condition in a match, Istio's `sourceLabels`): a sidecar
receives the routes of its destinations as its own service calls them (`routes_for`): a match
for other callers is left out, a match for it loses the condition, and a route left without a
match is left out. `own_routes` says some destination of its scope names the caller in such a
condition: its route table is its own, so it does not share a file of routes with other
sidecars; every other sidecar of the scope sees the routes without the caller-specific matches,
the same for all of them. A sidecar whose scope holds a service of a name declared in several
namespaces (`NAMESPACE/NAME`) has its own route table too: that service answers to its short name
only in its own namespace's sidecars (compiler/ir/names.py `seen_from`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from compiler.ir.conditions import rules_admit
from compiler.ir.model import Authorization, Program, Route, Service

__all__ = ["Scope", "admits", "admits_identity", "named_callers", "routes_for", "scope", "scopes"]


@dataclass(frozen=True, slots=True)
class Scope:
    """What one caller's sidecar receives."""
    caller: str
    hosts: tuple[str, ...]      # the destinations it can call by Host, sorted: Envoy virtual hosts, native
                                # destinations with their domains and routes
    services: tuple[str, ...]   # every service whose clusters (subsets) it needs, sorted: `hosts` and the
                                # services their routes send to (`to`, split targets, mirrors)
    full: bool                  # `hosts` is every service of the program
    own_routes: bool = False    # a destination of `hosts` has routes for this caller (`caller`), or a
                                # namespace-qualified name (names.seen_from): its route table is its own


def named_callers(dest: Service) -> frozenset[str]:
    """The callers that `caller` conditions of `dest`'s routes name."""
    return frozenset(c for r in dest.routes for m in r.matches if m.callers is not None for c in m.callers)


def routes_for(dest: Service, caller: str) -> tuple[Route, ...]:
    """The routes of `dest` as the sidecar of `caller` takes them: its matches for other callers
    left out, the `caller` condition of its own removed, a route left without a match left out.
    The routes themselves when none has a caller condition (no copy)."""
    if all(m.callers is None for r in dest.routes for m in r.matches):
        return dest.routes
    out = []
    for r in dest.routes:
        if all(m.callers is None for m in r.matches):
            out.append(r)
            continue
        kept = tuple(m if m.callers is None else replace(m, callers=None) for m in r.matches
                     if m.callers is None or caller in m.callers)
        if kept:
            out.append(replace(r, matches=kept))
    return tuple(out)


def _admits_everyone(dest: Service) -> bool:
    return _open(dest.authorization)


def _open(authz: Authorization) -> bool:
    return authz.default == "allow" or any(r.action == "allow" and r.principals is None for r in authz.rules)


def admits(dest: Service, caller: Service) -> bool:
    """Whether `dest`'s authorization can admit `caller` (the derivation of this module)."""
    return admits_identity(dest.authorization, caller.identity)


def admits_identity(authz: Authorization, ident: str) -> bool:
    """Whether an authorization can admit a caller with the SPIFFE ID `ident` (`admits`)."""
    return rules_admit(authz.default, authz.rules, ident)


def _targets(dest: Service) -> set[str]:
    """The services whose subsets the routes of `dest` send to, `dest` included."""
    out = {dest.name}
    for r in dest.routes:
        if r.to is not None:
            out.add(r.to.service)
        if r.split is not None:
            out.update(t.service for t in r.split.targets)
        for m in r.mirrors:
            out.add(m.service)
    return out


def scopes(program: Program, callers: list[str] | None = None) -> dict[str, Scope]:
    """The scope of each caller (default: every service), by name. Built from one index of the
    program's rules, so the whole fleet costs about one pass per caller over the destinations
    that restrict by a prefix, not one over every rule."""
    everyone: list[str] = []
    exact: dict[str, set[str]] = {}
    prefixes: list[tuple[str, str]] = []
    targets: dict[str, set[str]] = {}
    named: dict[str, frozenset[str]] = {}
    for dest in program.services:
        targets[dest.name] = _targets(dest)
        callers_named = named_callers(dest)
        if callers_named:
            named[dest.name] = callers_named
        if _admits_everyone(dest):
            everyone.append(dest.name)
            continue
        for rule in dest.authorization.rules:
            if rule.action != "allow" or rule.principals is None:
                continue
            for p in rule.principals:
                if p.kind == "exact":
                    exact.setdefault(p.value, set()).add(dest.name)
                else:
                    prefixes.append((p.value, dest.name))
    total = len(program.services)
    qualified = any("/" in s.name for s in program.services)
    by_name = {s.name: s for s in program.services}
    out: dict[str, Scope] = {}
    for name in callers if callers is not None else list(by_name):
        ident = by_name[name].identity
        hosts = set(everyone)
        hosts.update(exact.get(ident, ()))
        hosts.update(d for prefix, d in prefixes if ident.startswith(prefix))
        needed: set[str] = set()
        for h in hosts:
            needed |= targets[h]
        own = any(name in named.get(h, ()) for h in hosts) if named else False
        own = own or (qualified and any("/" in h for h in hosts))   # a short name is its namespace's (names.seen_from)
        out[name] = Scope(name, tuple(sorted(hosts)), tuple(sorted(needed)), len(hosts) == total, own)
    return out


def scope(program: Program, caller: str) -> Scope:
    """The scope of one caller's sidecar."""
    return scopes(program, [caller])[caller]
