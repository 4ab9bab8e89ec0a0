"""The IR as a graph: each service, and for each ordered pair of services (caller, destination)
what the planes do with the caller's requests to the destination.

The decision of a pair is derived from the IR's authorization with the functions the compiler
already has, never with a second evaluator:

- the caller's scope (compiler/ir/scope.py): a destination outside it is never configured in the
  caller's sidecar (both planes answer 404), so the pair is **denied**;
- inside the scope, the destination's rules that can match the caller at all (a rule without
  `from`, or one whose principals its SPIFFE ID satisfies: compiler/semantic/matching.py's
  `principals_cover`; none with `from` when the destination takes plaintext only, since a
  plaintext caller has no verified identity) are weighed as the planes weigh them (any matching
  deny denies, then any matching allow allows, then the default), by whether each rule takes
  *every* request (its path, methods and headers cover everything: `path_covers`,
  `methods_cover`, `conditions_cover`):

  **allowed**  no deny rule can match the caller, and the default is `allow` or an allow rule
               takes every request of the caller: every request is admitted;
  **denied**   a deny rule takes every request of the caller, or no allow rule can match it under
               `default deny`: no request is admitted;
  **partial**  otherwise: some requests are admitted, depending on path, method or headers
               (the rules named in the pair's `reason` say which).

A pair is `named` when a rule of the destination names the caller (a `from` its SPIFFE ID
satisfies, even on a plaintext-only destination where it can never match): that is the policy's
"who may call whom", what the picture draws by default; the rest is what every caller gets (rules
without `from`, a default) and is shown on request.

Routes, splits, retries, timeouts, faults, mirrors and the service's limits, retry budget and
outlier detection apply to every caller alike (a caller's sidecar applies the destination's
routes), so they are described once per service (`ServiceView`), with the services a route sends
to as `RouteLink`s.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler import ir
from compiler.ir.scope import scopes
from compiler.semantic.matching import conditions_cover, methods_cover, path_covers, principals_cover

__all__ = ["ANONYMOUS", "Access", "Graph", "Pair", "RouteLink", "RouteView", "ServiceView", "access", "build"]

ANONYMOUS = "(no identity)"   # the caller of the matrix's last row: a client without a verified identity


@dataclass(frozen=True, slots=True)
class Access:
    """What one destination's authorization does to one caller's requests."""
    decision: str                  # "allowed" | "partial" | "denied"
    reason: str                    # one sentence: which rules or default decided
    admitting: tuple[str, ...]     # the allow rules that can admit the caller ("default allow" for the default)
    denying: tuple[str, ...]       # the deny rules that can match the caller
    named: bool                    # a rule that can match the caller names it (`from`): the policy speaks of
                                   # this caller, rather than of every caller (a health check, a default)


@dataclass(frozen=True, slots=True)
class Pair:
    caller: str
    dest: str
    access: Access


@dataclass(frozen=True, slots=True)
class RouteView:
    name: str
    matches: tuple[str, ...]       # one short text per match, "any request" for an empty one
    targets: tuple[tuple[str, str, int | None], ...]   # (service, subset, weight or None for a `to`)
    key_header: str | None         # a split's key
    settings: tuple[str, ...]      # short texts: timeout, retry, fault, mirror, header changes


@dataclass(frozen=True, slots=True)
class ServiceView:
    name: str
    namespace: str
    identity: str
    port: int
    mtls: str
    subsets: tuple[tuple[str, int], ...]   # (name, endpoint count)
    resilience: tuple[str, ...]    # short texts: limits, retry budget, outlier detection
    routes: tuple[RouteView, ...]
    authz: str                     # one line: the default and the rule counts
    rules: tuple[str, ...]         # every rule, one short text each, in written order
    anonymous: Access              # what a caller without a verified identity gets
    self_access: Access            # the service calling itself through its sidecar


@dataclass(frozen=True, slots=True)
class RouteLink:
    """A route of `source` that sends to (or mirrors to) another service."""
    source: str
    route: str
    target: str
    kind: str                      # "to" | "split" | "mirror"
    label: str


@dataclass(frozen=True, slots=True)
class Graph:
    trust_domain: str
    services: tuple[ServiceView, ...]      # sorted by name
    pairs: tuple[Pair, ...]                # every ordered pair of distinct services, by (caller, dest)
    links: tuple[RouteLink, ...]

    def pair(self, caller: str, dest: str) -> Pair:
        for p in self.pairs:
            if p.caller == caller and p.dest == dest:
                return p
        raise KeyError((caller, dest))


# ---- authorization ---------------------------------------------------------------------------------

def _can_match(rule: ir.AuthzRule, identity: str | None) -> bool:
    """The rule's `from` (if any) can hold for this caller."""
    if rule.principals is None:
        return True
    return identity is not None and principals_cover(rule.principals, (ir.Principal("exact", identity),))


def _takes_every_request(rule: ir.AuthzRule) -> bool:
    """The rule's conditions other than `from` hold for every request."""
    return (path_covers(rule.path, None) and methods_cover(rule.methods, None) and conditions_cover(rule.headers, ())
            and not rule.not_paths and not rule.not_methods)   # an exclusion leaves some request out


def access(dest: ir.Service, identity: str | None) -> Access:
    """What `dest`'s authorization does to the requests of a caller with this verified identity
    (None: a caller without one, or any caller of a destination that takes plaintext only)."""
    # named: a rule names this caller, even one that a plaintext caller can never satisfy (W0604)
    named = any(r.principals is not None and _can_match(r, identity) for r in dest.authorization.rules)
    plaintext = identity is not None and dest.mtls.mode == "disable"
    if plaintext:
        identity = None
    rules = [r for r in dest.authorization.rules if _can_match(r, identity)]
    denies = [r for r in rules if r.action == "deny"]
    allows = [r for r in rules if r.action == "allow"]
    default_allow = dest.authorization.default == "allow"
    admitting = tuple(r.name for r in allows) + (("default allow",) if default_allow else ())
    denying = tuple(r.name for r in denies)
    total_deny = next((r for r in denies if _takes_every_request(r)), None)
    if total_deny is not None:
        return Access("denied", f"deny rule `{total_deny.name}` takes every request", admitting, denying, named)
    if not admitting:
        why = ("no allow rule names it" if identity is not None else
               "the service takes plaintext only (mtls disable): a `from` rule never matches" if plaintext else
               "every allow rule needs a verified identity")
        return Access("denied", f"default deny: {why}", admitting, denying, named)
    total_allow = next((r for r in allows if _takes_every_request(r)), None)
    if not denies and (default_allow or total_allow is not None):
        why = "by the default (allow)" if total_allow is None else f"by rule `{total_allow.name}`"
        return Access("allowed", f"every request, {why}", admitting, denying, named)
    parts = []
    if allows:
        parts.append("allowed by " + ", ".join(f"`{r.name}`" for r in allows))
    if default_allow:
        parts.append("allowed by the default")
    if denies:
        parts.append("denied by " + ", ".join(f"`{r.name}`" for r in denies))
    return Access("partial", "some requests: " + "; ".join(parts), admitting, denying, named)


# ---- text ------------------------------------------------------------------------------------------

def _ms(ms: int) -> str:
    if ms and ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def _pct(p: float) -> str:
    return f"{p:g}%"


def _path(p: ir.PathMatch) -> str:
    text = {"exact": p.value, "prefix": p.value + "*", "segment_prefix": p.value.rstrip("/") + "/**",
            "regex": "~" + p.value}[p.kind]
    return text + (" (any case)" if p.ignore_case else "")


def _header(h: ir.HeaderMatch) -> str:
    if h.kind == "present":
        return f"{h.name}?"
    if h.kind == "absent":
        return f"!{h.name}"
    op = {"exact": "=", "prefix": "^=", "suffix": "$=", "regex": "~"}[h.kind]
    return f"{h.name}{'!' if h.invert else ''}{op}{h.value}"


def _query(q: ir.QueryMatch) -> str:
    if q.kind == "present":
        return f"?{q.name}"
    return f"?{q.name}{'=' if q.kind == 'exact' else '~'}{q.value}"


def match_text(m: ir.Match) -> str:
    parts = []
    if m.callers is not None:
        parts.append("from " + "|".join(m.callers))
    if m.methods is not None:
        parts.append("|".join(m.methods))
    if m.path is not None:
        parts.append(_path(m.path))
    parts += [_header(h) for h in m.headers]
    parts += [_query(q) for q in m.query]
    return " ".join(parts) or "any request"


def _retry(r: ir.Retry) -> list[str]:
    out = [f"retry {r.num_retries}x on {','.join(r.retry_on + tuple(map(str, r.retriable_status_codes)))}"]
    if r.per_try_timeout_ms:
        out.append(f"per try {_ms(r.per_try_timeout_ms)}")
    return [*out, f"backoff {_ms(r.backoff_base_ms)}..{_ms(r.backoff_max_ms)}"]


def _route(svc: ir.Service, r: ir.Route) -> RouteView:
    targets: tuple[tuple[str, str, int | None], ...]
    if r.redirect is not None or r.direct_response is not None:   # the route answers itself: no target
        return RouteView(r.name, tuple(match_text(m) for m in r.matches), (), None, (_answer(r),))
    if r.split is not None:
        targets = tuple((t.service, t.subset, t.weight) for t in r.split.targets)
        key = r.split.key_header
    else:
        assert r.to is not None  # exactly one of `to` and `split`
        targets = ((r.to.service, r.to.subset, None),)
        key = None
    settings = ["timeout " + (_ms(r.timeout_ms) if r.timeout_ms else "none")]
    if r.rewrite is not None:
        settings.append("rewrite " + " ".join(filter(None, (
            r.rewrite.path.kind + " " + r.rewrite.path.substitution if r.rewrite.path is not None else "",
            "host " + r.rewrite.host if r.rewrite.host else ""))))
    if r.retry is not None:
        settings += _retry(r.retry)
    if r.fault is not None:
        if r.fault.abort is not None:
            settings.append(f"fault abort {r.fault.abort.http_status} {_pct(r.fault.abort.percent)}")
        if r.fault.delay is not None:
            settings.append(f"fault delay {_ms(r.fault.delay.duration_ms)} {_pct(r.fault.delay.percent)}")
    for m in r.mirrors:
        target = m.subset if m.service == svc.name else f"{m.service}.{m.subset}"
        settings.append(f"mirror {target} {_pct(m.percent)}")
    changes = sum(len(h.remove) + len(h.set) + len(h.add) for h in (r.request_headers, r.response_headers))
    if changes:
        settings.append(f"{changes} header change{'s' if changes > 1 else ''}")
    return RouteView(r.name, tuple(match_text(m) for m in r.matches), targets, key, tuple(settings))


def _answer(r: ir.Route) -> str:
    """A short text of a route's own answer: `redirect 301 https://…` or `respond 503`."""
    if r.redirect is not None:
        d = r.redirect
        where = (f"{d.scheme or '…'}://{d.host or '…'}{f':{d.port}' if d.port else ''}"
                 + (f" {d.path.kind} {d.path.substitution}" if d.path is not None else ""))
        return f"redirect {d.status} {where}"
    assert r.direct_response is not None
    return f"respond {r.direct_response.status}"


def _resilience(svc: ir.Service) -> tuple[str, ...]:
    lim = svc.limits
    retries = "" if svc.retry_budget is not None else f", retries {lim.max_retries}"
    out = [f"limits: conn {lim.max_connections}, pending {lim.max_pending_requests}, req {lim.max_requests}{retries}"]
    if svc.retry_budget is not None:
        out.append(f"retry budget: {_pct(svc.retry_budget.percent)}, min {svc.retry_budget.min_concurrency}")
    o = svc.outlier
    if o is not None:
        gw = f", {o.consecutive_gateway_errors}x gateway error" if o.consecutive_gateway_errors else ""
        out.append(f"outlier: {o.consecutive_5xx}x 5xx{gw}, every {_ms(o.interval_ms)}, "
                   f"eject {_ms(o.base_ejection_ms)}, max {_pct(o.max_ejection_percent)}")
    return tuple(out)


def _rule(r: ir.AuthzRule) -> str:
    parts = [r.action, r.name]
    if r.principals is not None:
        parts.append("from " + " | ".join(p.value + ("*" if p.kind == "prefix" else "") for p in r.principals))
    if r.methods is not None:
        parts.append("|".join(r.methods))
    if r.path is not None:
        parts.append(_path(r.path))
    parts += [_header(h) for h in r.headers]
    parts += ["not " + _path(p) for p in r.not_paths]
    if r.not_methods:
        parts.append("not " + "|".join(r.not_methods))
    return " ".join(parts)


def _service(svc: ir.Service) -> ServiceView:
    authz = svc.authorization
    if authz.source is None:
        line = "no authorization: every caller allowed"
    else:
        allows = sum(r.action == "allow" for r in authz.rules)
        line = f"default {authz.default}, {allows} allow, {len(authz.rules) - allows} deny"
    return ServiceView(
        name=svc.name, namespace=svc.namespace, identity=svc.identity, port=svc.port, mtls=svc.mtls.mode,
        subsets=tuple((s.name, len(s.endpoints)) for s in svc.subsets),
        resilience=_resilience(svc), routes=tuple(_route(svc, r) for r in svc.routes), authz=line,
        rules=tuple(_rule(r) for r in authz.rules), anonymous=access(svc, None),
        self_access=access(svc, svc.identity))


def _subset(name: str) -> str:
    """A subset of the service an edge points at, as a label says it (`default`: nothing)."""
    return "" if name == "default" else name + " "


def _links(svc: ir.Service) -> list[RouteLink]:
    out = []
    for r in svc.routes:
        if r.to is not None and r.to.service != svc.name:
            out.append(RouteLink(svc.name, r.name, r.to.service, "to", f"{r.name}: to {_subset(r.to.subset)}".rstrip()))
        if r.split is not None:
            total = r.split.total_weight
            for t in r.split.targets:
                if t.service != svc.name:
                    out.append(RouteLink(svc.name, r.name, t.service, "split",
                                         f"{r.name}: {_subset(t.subset)}{t.weight}/{total}"))
        for m in r.mirrors:
            if m.service != svc.name:
                out.append(RouteLink(svc.name, r.name, m.service, "mirror",
                                     f"{r.name}: mirror {_subset(m.subset)}{_pct(m.percent)}"))
    return out


def build(program: ir.Program) -> Graph:
    """The graph of a lowered program."""
    scoped = scopes(program)
    pairs = []
    for caller in program.services:
        hosts = set(scoped[caller.name].hosts)
        for dest in program.services:
            if dest.name == caller.name:
                continue
            if dest.name not in hosts:
                acc = Access("denied", f"outside {caller.name}'s scope: its sidecar answers 404", (), (), False)
            else:
                acc = access(dest, caller.identity)
            pairs.append(Pair(caller.name, dest.name, acc))
    links = [link for svc in program.services for link in _links(svc)]
    return Graph(program.trust_domain, tuple(_service(s) for s in program.services), tuple(pairs), tuple(links))
