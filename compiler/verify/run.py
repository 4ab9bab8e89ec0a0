"""Run policy tests: every test's request through both targets, hop by hop, then its expectations.

A test `from service X` sends its request to X's sidecar (outbound: the Host picks the
destination D, D's routes pick a route, a fault may answer, a split picks a subset, the route
changes the headers); what the sidecar forwards then meets D's sidecar (inbound: D's
authorization, over mTLS with X's identity when X's sidecar originates mTLS to D). A test `from
identity "…"` or `from unauthenticated` reaches D's inbound listener directly (a caller outside
the mesh: with that certificate, or in plaintext). Each hop is decided by the native proxy's
decision function (native.py) and by the independent Envoy evaluator (envoy_eval); a difference
between the two fails the test with E0821 and names the hop; otherwise the agreed outcome is held
to the expectations (E0820 for each that does not hold).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import orjson

from compiler.core.diagnostics import Diagnostic
from compiler.core.source import Span
from compiler.ir.names import seen_from, service_for_host
from compiler.semantic.checks.tests import URL
from compiler.syntax import ast
from envoy_eval.decisions import REFUSED, Decision, diff
from envoy_eval.evaluator import EnvoyModel, Unsupported
from envoy_eval.files import EnvoyFiles

APP_STATUS = 200     # what the destination's application answers a request its sidecar forwards


@dataclass(frozen=True)
class Request:
    """One hop's request, in the form both evaluators take."""
    kind: str                                  # outbound | inbound
    method: str
    target: str
    host: str
    headers: tuple[tuple[str, str], ...] = ()
    caller: str | None = None                  # inbound over mTLS: the caller's SPIFFE ID


@dataclass(frozen=True)
class Case:
    """A checked test's request, resolved: the caller, the hop's request line and headers."""
    caller_kind: str                           # service | identity | unauthenticated
    caller: str | None                         # the service, or the SPIFFE ID
    method: str
    host: str                                  # the URL's authority (the Host header)
    target: str                                # path and query
    destination: str                           # the service the host names
    headers: tuple[tuple[str, str], ...]
    span: Span | None


def case_of(test: ast.Test, ir) -> Case:
    """A test that `meshc check` accepted (E0801, E0806, E0807 hold the shape)."""
    req = test.request
    assert req is not None and req.method is not None and req.url is not None, "checked: E0801"
    m = URL.match(req.url.value)
    assert m is not None, "checked: E0806"
    target = m.group(3) or "/"
    if target.startswith("?"):
        target = "/" + target
    host = m.group(1) + (f":{m.group(2)}" if m.group(2) else "")
    caller = req.caller.value if req.caller_kind == "service" and req.caller is not None else None
    ns = next((svc.namespace for svc in ir.services if svc.name == caller), None)
    dest = service_for_host(((svc.name, seen_from(svc.name, svc.namespace, svc.domains, ns)) for svc in ir.services),
                            host)
    assert dest is not None, "checked: E0807"
    return Case(req.caller_kind, req.caller.value if req.caller is not None else None, req.method.value,
                host, target, dest,
                tuple((h.name.value, h.value.value) for h in req.headers), req.span)


@dataclass
class Hop:
    where: str                                 # "outbound at frontend's sidecar", "inbound at cart's sidecar"
    request: Request
    native: Decision
    envoy: Decision
    rule: str | None = None                    # inbound: the rule that decided (native), "default"
    envoy_rules: tuple[str, ...] = ()          # inbound: what Envoy's RBAC matched ("default": nothing)
    split: str | None = None                   # outbound: the subset a split picked and how
    steps: tuple = ()                          # the native decision's explanation (decide/explain.py)
    service: str = ""                          # the service whose sidecar decides this hop
    caller_service: str | None = None          # inbound: the caller's service, when it has a sidecar


@dataclass
class Outcome:
    """What one test's request came to."""
    test: ast.Test
    hops: list[Hop] = field(default_factory=list)
    status: int | None = None
    failures: list[Diagnostic] = field(default_factory=list)
    reached: set[str] = field(default_factory=set)       # coverage units

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class Report:
    outcomes: list[Outcome]
    units: list[tuple[str, Span | None]]       # every coverage unit, with where it is written
    reached: set[str]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    @property
    def coverage(self) -> float:
        if not self.units:
            return 100.0
        return 100.0 * sum(1 for u, _ in self.units if u in self.reached) / len(self.units)

    @property
    def unreached(self) -> list[tuple[str, Span | None]]:
        return [(u, s) for u, s in self.units if u not in self.reached]


class Planes:
    """Both targets' configuration of every sidecar a test needs, emitted once."""

    def __init__(self, comp, services: list[str]):
        from compiler.backends.base import Options
        from compiler.verify.native import NativeModel

        xds = "/meshc-test/xds"
        options = Options(bootstrap="xds", xds_dir=xds, output_dir=os.path.dirname(xds))
        envoy = comp.emit("envoy", services, options)
        native = comp.emit("native", services, options)
        self.diagnostics = [d for d in envoy.diagnostics + native.diagnostics if d.severity == "error"]
        files = dict(envoy.files)
        for rel, link in envoy.links.items():
            files[rel] = envoy.files[os.path.normpath(os.path.join(os.path.dirname(rel), link.target))]
        self.configs = {s: orjson.loads(native.files[f"{s}.native.json"]) for s in services}
        self.native = {} if self.diagnostics else {
            s: NativeModel(_Compiled(self.configs[s]), validate=False) for s in services}
        parsed: dict[str, dict] = {}     # the files the sidecars share are parsed once
        self.envoy = {} if self.diagnostics else {
            s: EnvoyModel(EnvoyFiles(files, s, parsed), own_uri=self.configs[s]["identity"]) for s in services}


class _Compiled:
    """What NativeModel reads of a compilation: the native config."""
    def __init__(self, native: dict):
        self.native = native


def coverage_units(ir) -> list[tuple[str, object]]:
    """(unit, source Location) for each route of a routes block, each split arm of weight > 0,
    each authorization rule and each authorization block's default."""
    units: list[tuple[str, object]] = []
    for svc in ir.services:
        for route in svc.routes:
            if route.source == svc.source:     # the implicit route of a service without a routes block
                continue
            units.append((f"route {svc.name}.{route.name}", route.source))
            if route.split is not None:
                for t in route.split.targets:
                    if t.weight > 0:
                        units.append((f"split {svc.name}.{route.name} -> {t.service}.{t.subset}", route.source))
        authz = svc.authorization
        if authz.source is not None:
            for rule in authz.rules:
                units.append((f"rule {svc.name}.{rule.name}", rule.source))
            units.append((f"default {svc.name}", authz.source))
    return list(dict.fromkeys(units))


def run_tests(comp) -> Report:
    """Every test of a checked, lowered compilation (`api.compile`)."""
    ctx, ir = comp.context, comp.ir
    tests = list(ctx.tests)
    cases = [case_of(t, ir) for t in tests]
    destinations = {c.destination for c in cases}
    # a route may send a destination's requests to another service: its sidecar decides them then
    by_name = {svc.name: svc for svc in ir.services}
    for name in list(destinations):
        for route in by_name[name].routes if name in by_name else ():
            if route.to is not None:
                destinations.add(route.to.service)
            if route.split is not None:
                destinations.update(t.service for t in route.split.targets)
    needed = sorted({c.caller for c in cases if c.caller_kind == "service" and c.caller is not None}
                    | destinations)
    planes = Planes(comp, needed) if needed else None
    outcomes = []
    for t, case in zip(tests, cases):
        outcome = Outcome(t)
        if planes is not None and planes.diagnostics:
            outcome.failures = list(planes.diagnostics)
        elif planes is not None:
            _run_one(ir, planes, outcome, case)
        outcomes.append(outcome)
    units = [(u, _span_of(comp, loc)) for u, loc in coverage_units(ir)]
    reached = set().union(*(o.reached for o in outcomes)) if outcomes else set()
    return Report(outcomes, units, reached)


def _span_of(comp, loc) -> Span | None:
    """The span of the construct at an IR Location (its first word), when its file was parsed here."""
    source = comp.sources.get(loc.file) if loc is not None else None
    starts = source.line_starts() if source is not None else ()
    if source is None or not 1 <= loc.line <= len(starts):
        return None
    start = starts[loc.line - 1] + loc.column - 1
    end = start
    while end < len(source.text) and not source.text[end].isspace():
        end += 1
    return Span(source, start, max(end, start + 1))


def _fail(outcome: Outcome, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
    outcome.failures.append(Diagnostic(code, message, span or outcome.test.name.span, hint))


def _run_one(ir, planes: Planes, outcome: Outcome, case: Case) -> None:
    host, target, dest, headers = case.host, case.target, case.destination, case.headers
    identity: str | None
    services = {s.name: s for s in ir.services}
    inbound_headers = headers
    inbound_target = target
    out_hop = None
    dests = [dest]                             # the services whose sidecars decide the inbound hop
    try:
        if case.caller_kind == "service":
            caller = str(case.caller)
            out_req = Request("outbound", case.method, target, host, headers)
            why: dict = {}
            native = planes.native[caller].decide(out_req, why=why)
            envoy = planes.envoy[caller].decide(out_req)
            out_hop = Hop(f"outbound at {caller}'s sidecar", out_req, native, envoy, steps=tuple(why.get("steps", ())),
                          service=caller)
            split = next((s for s in why.get("steps", ()) if s.what == "split"), None)
            if split is not None:
                out_hop.split = f"{split.outcome} {split.detail}"
            outcome.hops.append(out_hop)
            if native != envoy:
                _disagree(outcome, out_hop)
                return
            _reach_outbound(outcome, native, planes.configs[caller], split)
            if native.status is not None:
                outcome.status = native.status
                _expect(outcome, services, out_hop, None)
                return
            clusters = {sub["cluster"]: svc["name"] for svc in planes.configs[caller]["services"]
                        for sub in svc["subsets"]}
            picked = [native.cluster] if native.cluster else list(native.candidates or ())
            going_to = {clusters.get(c) for c in picked}
            if going_to != {dest}:       # a route of D that sends elsewhere: that service's sidecar decides
                # a random split among several services: each candidate's sidecar decides its share
                dests = sorted(x for x in going_to if x) or [dest]
                for d in dests:
                    if d not in planes.native:
                        _fail(outcome, "E0820", f"the request goes to `{d}`, whose sidecar the test cannot run",
                              case.span)
                        return
            inbound_target = native.path or target
            inbound_headers = tuple(native.upstream_headers or ())
        in_hops = []
        for d in dests:
            if case.caller_kind == "service":
                caller = str(case.caller)
                mtls = next((s["mtls"] for s in planes.configs[caller]["services"] if s["name"] == d), False)
                identity = planes.configs[caller]["identity"] if mtls else None
            elif case.caller_kind == "identity":
                identity = case.caller
            else:
                identity = None
            in_req = Request("inbound", case.method, inbound_target, host, inbound_headers, identity)
            why = {}
            native = planes.native[d].decide(in_req, why=why)
            envoy_why: list = []
            envoy = planes.envoy[d].decide(in_req, why=envoy_why)
            hop = Hop(f"inbound at {d}'s sidecar", in_req, native, envoy, service=d,
                      caller_service=case.caller if case.caller_kind == "service" else None)
            hop.rule = why.get("rule") or "default"
            hop.envoy_rules = _envoy_decider(envoy, envoy_why)
            in_hops.append((hop, envoy_why))
    except Unsupported as err:
        _fail(outcome, "E0821", f"the Envoy evaluator cannot decide this request: {err}", case.span)
        return
    for hop, envoy_why in in_hops:
        outcome.hops.append(hop)
        if hop.native != hop.envoy:
            _disagree(outcome, hop)
            return
        if hop.envoy_rules and hop.rule not in hop.envoy_rules and _named_in_envoy(hop.rule or "", envoy_why):
            _fail(outcome, "E0821", f"the targets disagree on which authorization rule decided ({hop.where}): "
                  f"native `{hop.rule}`, Envoy {', '.join(f'`{r}`' for r in hop.envoy_rules)}", case.span)
            return
        outcome.reached.add(f"rule {hop.service}.{hop.rule}" if hop.rule != "default" else f"default {hop.service}")
    if len(in_hops) == 1:
        hop = in_hops[0][0]
        outcome.status = APP_STATUS if hop.native.status is None else hop.native.status
        _expect(outcome, services, out_hop, hop)
        return
    # several services may get the request: every expectation must hold on each arm
    assert out_hop is not None, "only a caller's sidecar splits"
    test = outcome.test
    failed: list[tuple[ast.Expectation, str, str]] = []
    for hop, _ in in_hops:
        outcome.status = APP_STATUS if hop.native.status is None else hop.native.status
        for ex in test.expect:
            problem = _check(ex, outcome, services, out_hop.native, hop)
            if problem is not None and all(f[0] is not ex for f in failed):
                failed.append((ex, hop.service, problem))
    first_failed = next((h for h, _ in in_hops if any(f[1] == h.service for f in failed)), None)
    shown = first_failed or in_hops[0][0]
    outcome.status = APP_STATUS if shown.native.status is None else shown.native.status
    key = _split_key(services, out_hop.native)
    pin = (f"pin the arm with the split's key header (`header \"{key}\" \"N\"`)" if key else
           "give the split a key header and pin the arm with it")
    for ex, arm, problem in failed:
        _fail(outcome, "E0820", f"test `{test.name.value}` failed when the split sends the request to `{arm}`: "
              f"{problem}", ex.span,
              hint=f"the split sends the request at random to {_names(h.service for h, _ in in_hops)}, and every "
                   f"expectation must hold on each; {pin}")


def _split_key(services, d: Decision) -> str | None:
    """The key header of the split of the route that took an outbound request."""
    if d.route is None:
        return None
    svc, _, name = d.route.rpartition("/")   # (SERVICE may be NAMESPACE/NAME)
    route = next((r for r in services[svc].routes if r.name == name), None) if svc in services else None
    split = route.split if route is not None else None
    return split.key_header if split is not None else None


def _envoy_decider(envoy: Decision, why: list) -> tuple[str, ...]:
    """The policies that decided in Envoy's RBAC filters, ("default",) when none matched."""
    if envoy.status == 403:
        for action, names in why:
            if action == "DENY" and names:
                return tuple(names)
        return ("default",)
    allows = [names for action, names in why if action == "ALLOW"]
    if allows and allows[-1]:
        return tuple(allows[-1])
    return ("default",)


def _named_in_envoy(rule: str, why: list) -> bool:
    return rule == "default" or any(rule in names for _, names in why)


def _disagree(outcome: Outcome, hop: Hop) -> None:
    lines = diff(hop.envoy, hop.native)
    _fail(outcome, "E0821", f"the targets disagree ({hop.where}): " + "; ".join(
        line.replace(" != ", " (envoy) != ", 1) + " (native)" for line in lines),
        outcome.test.request.span if outcome.test.request is not None else None,
        hint="a bug of meshc (the native proxy and the Envoy configuration decide this request differently); "
             "please report it with the policy")


def _reach_outbound(outcome: Outcome, d: Decision, config: dict, split) -> None:
    if d.route is None:
        return
    svc, _, route = d.route.rpartition("/")
    outcome.reached.add(f"route {svc}.{route}")
    if split is None:
        return
    subsets = {sub["cluster"]: f"{s['name']}.{sub['name']}" for s in config["services"] for sub in s["subsets"]}
    picked = [d.cluster] if d.cluster else list(d.candidates or ())
    for c in picked:
        if c in subsets:
            outcome.reached.add(f"split {svc}.{route} -> {subsets[c]}")


def _ref_name(ref: ast.Ref, services) -> str:
    """`svc.subset` of a destination written `svc.subset` or `svc` (its one subset)."""
    if ref.scope:
        return f"{ref.scope}.{ref.name}"
    svc = services.get(ref.name)
    return f"{ref.name}.{svc.subsets[0].name}" if svc is not None else ref.name


def _expect(outcome: Outcome, services, out_hop: Hop | None, in_hop: Hop | None) -> None:
    out = out_hop.native if out_hop is not None else None
    test = outcome.test
    for ex in test.expect:
        problem = _check(ex, outcome, services, out, in_hop)
        if problem is not None:
            _fail(outcome, "E0820", f"test `{test.name.value}` failed: {problem}", ex.span)


def _show_status(status: int | None) -> str:
    return "the connection refused (0)" if status == REFUSED else str(status)


def _check(ex: ast.Expectation, outcome: Outcome, services, out: Decision | None, in_hop: Hop | None) -> str | None:
    """None when the expectation holds, else what happened instead."""
    kind = ex.kind
    want: Any
    got: Any
    if kind == "status":
        want = ex.values[0].value
        if outcome.status != want:
            return f"expected status {want}, got {_show_status(outcome.status)}{_why_status(outcome, in_hop)}"
        return None
    if kind in ("denied_by", "allowed_by"):
        want = ex.values[0].value
        if in_hop is None:
            return f"expected the request to be {kind.replace('_by', '')} by `{want}`, but it never reached " \
                   f"authorization (status {_show_status(outcome.status)})"
        denied = in_hop.native.status == 403
        got = f"{in_hop.service}.{in_hop.rule}"
        if (kind == "denied_by") != denied:
            return f"expected {kind.replace('_', ' ')} `{want}`, but it was {'denied' if denied else 'allowed'} " \
                   f"by `{got}`"
        if got != want:
            return f"expected {kind.replace('_', ' ')} `{want}`, got `{got}`"
        return None
    if out is None:
        return None   # a caller outside the mesh: rejected by the check (E0808)
    if kind == "route":
        want = f"{ex.values[0].scope}.{ex.values[0].name}" if ex.values[0].scope else ex.values[0].name
        got = ".".join(out.route.rpartition("/")[::2]) if out.route else None   # SERVICE.ROUTE
        if want.count(".") == 0 and got is not None:
            got = got.rpartition(".")[2]
        if got != want:
            return f"expected route `{want}`, got {f'`{got}`' if got else 'no route'}{_why_local(out, outcome.hops[0])}"
        return None
    if kind in ("to", "to_any"):
        want_set = {_ref_name(r, services) for r in ex.values}
        if out.status is not None:
            return f"expected the request forwarded to {_names(want_set)}, but it was answered {out.status}"
        subsets = _subsets(services)
        if out.cluster is not None:
            got_set = {subsets.get(out.cluster, out.cluster)}
        else:
            got_set = {subsets.get(c, c) for c in out.candidates or ()}
        if got_set != want_set:
            how = "picked" if out.cluster is not None else "picked at random among"
            return f"expected {'one of ' if kind == 'to_any' else ''}{_names(want_set)}, {how} {_names(got_set)}"
        return None
    if kind == "path":
        want = ex.values[0].value
        if out.path != want:
            return f"expected the forwarded path `{want}`, got {f'`{out.path}`' if out.path else 'none'}"
        return None
    if kind in ("request_header", "response_header"):
        name = ex.values[0].value.lower()
        lines = (out.upstream_headers if kind == "request_header" else out.response_headers) or ()
        if kind == "response_header" and out.response_headers is None and out.cors:
            lines = out.cors   # a local reply (a CORS preflight, an abort) shows only its CORS headers
        values = [v for n, v in lines if n == name]
        side = "the upstream request" if kind == "request_header" else "the response"
        if ex.test == "absent":
            return None if not values else f"expected no `{name}` in {side}, got {', '.join(map(repr, values))}"
        if ex.test == "present":
            return None if values else f"expected `{name}` in {side}, it is absent"
        want = ex.values[1].value.encode("utf-8").decode("latin-1")
        if want not in values:
            got = ", ".join(f"`{v}`" for v in values) or "none"
            return f"expected `{name}: {ex.values[1].value}` in {side}, got {got}"
        return None
    if kind == "timeout":
        want = ex.values[0].value or 0
        if out.timeout_ms != want:
            return f"expected timeout {_ms(want)}, got {_ms(out.timeout_ms)}"
        return None
    if kind == "retries":
        want = ex.values[0].value
        got = out.retry.num_retries if out.retry is not None else 0
        if got != want:
            return f"expected {want} retries, got {got}"
        return None
    if kind == "mirror":
        subsets = _subsets(services)
        got = tuple((subsets.get(c, c), p) for c, p in out.mirror or ())
        if not ex.values:
            return None if not got else f"expected no mirror, got {_mirrors(got)}"
        # one of the route's mirrors (a route may have several: docs/language.md §12)
        want = ((_ref_name(ex.values[0], services), float(ex.values[1].value) if ex.values[1] is not None else 100.0),)
        if want[0] not in got:
            return f"expected mirror {_mirrors(want)}, got {_mirrors(got) if got else 'none'}"
        return None
    return None


def _subsets(services) -> dict[str, str]:
    return {sub.cluster: f"{s.name}.{sub.name}" for s in services.values() for sub in s.subsets}


def _names(names) -> str:
    return ", ".join(f"`{n}`" for n in sorted(names)) or "nothing"


def _mirrors(pairs) -> str:
    return ", ".join(f"`{n}` {p:g}%" for n, p in pairs)


def _ms(ms: int | None) -> str:
    return "none" if not ms else f"{ms}ms"


def _why_local(d: Decision, hop: Hop | None = None) -> str:
    if d.status == 404:
        return " (404: " + _why_404(hop) + ")"
    return ""


def _why_404(hop: Hop | None) -> str:
    host = next((s for s in hop.steps if s.what == "host"), None) if hop is not None else None
    if host is not None and host.outcome == "unknown":
        return (f"{host.detail} at the caller's sidecar: a sidecar knows only the services its service may "
                "call, by their authorization")
    return "no route matches at the caller's sidecar"


def _why_status(outcome: Outcome, in_hop: Hop | None) -> str:
    if in_hop is not None and in_hop.native.status == 403:
        return f" (denied by `{in_hop.rule}` at the destination)"
    first = outcome.hops[0].native if outcome.hops else None
    if first is not None and first.status == 404 and first.kind == "outbound":
        return f" ({_why_404(outcome.hops[0])})"
    if first is not None and first.fault is not None and first.status:
        return " (the route's fault aborted it)"
    return ""
