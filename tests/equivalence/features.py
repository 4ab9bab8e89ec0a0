"""The features of a policy that one request can exercise, and which pairs of them the equivalence
suite has seen combined.

A feature is one row of `FEATURES`: its name, the listener it lives on (`outbound`: the caller's
routes; `inbound`: the sidecar's own authorization and mTLS; `both`), whether its effect is seen by
the model layer's decisions or only by the real planes (`live_only`: state such as circuit
breakers and outlier detection, which no single decision of the model shows), what a request must
do to exercise it (`about`), and its detector. A detector reads one `Exercise`: the request, its
decision (compared in both planes before it is read), the native decision's own explanation of
that request (`runtime_proxy/decide/explain.py`: every step it took or tested) and the native
table it was decided on. It says whether the request took or tested the feature's step, not
whether the policy merely has it:

- a route condition counts when it was evaluated for this request (the routes before the one that
  took the request are evaluated match by match; in a match the conditions are tested in the
  order method, path, headers, query, and the first that fails ends it: a condition after it was
  not evaluated; a route after the one that matched is not tried);
- a route's setting (timeout, retries, fault, mirror, header changes, the destination's retry
  budget, limits and outlier detection) counts when the route that took the request has it and it
  applied: forwarded upstream for everything but a fault's abort and the response header changes
  (which a local reply of the chosen route gets too); a fault or a mirror counts when it was
  certain (drawn 100 %), a split by how it picked (the key header or the draw);
- authorization: the rule or default that decided, and each condition kind of each rule that was
  tested (deny rules in order up to the first that matched, then, if none did, the allow rules up
  to the first that matched; in a rule `from`, method, path, headers, the first failing one ends
  it); mTLS: the listener's mode and the peer of an accepted connection;
- normalisation: the path changed by it, an escaped slash decoded or kept (`escaped_slashes`);
  tracing: the hop traced a routable request (the table traces and the request was decided past
  normalisation).

A pair of features is covered when one request's compared decision exercised both. Pairs that
cannot interact (`cannot_interact`: on different listeners, mutually exclusive outcomes, steps an
earlier one ends) are left out of the denominator, each with its reason (`excluded()`). Layers:
`model` (tests/test_equivalence_model.py, the evaluator of the Envoy JSON against the native
decision function) and `live` (tests/test_equivalence_live.py and the layer fed by `meshc serve`:
real Envoy and real native processes, the request's features read from the native decision of
that same request on the config the live proxy runs). A pair is covered overall when some layer
covered it.

Adding a feature: one row of `FEATURES` with its detector (reading `Exercise`; add a derived
field there if several rows need it), the pairs it cannot form in `EXCLUDED` (with a reason) or
through its `side`, and, so that the nightly profile reaches every pair, its recipe in
`tests/equivalence/policies.py` (`FOCUS_RECIPES`): what a focused policy and request add to
exercise it. `tests/test_equivalence_features.py` holds every row to a request that exercises it.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from compiler.language import defaults as language_defaults
from compiler.language.settings import BLOCKS

_RETRY_DEFAULTS = {s.key: s.default for s in BLOCKS["retry"].settings}
_LIMITS_DEFAULTS = {s.key: s.default for s in BLOCKS["limits"].settings}
DEFAULT_BACKOFF_MS = _RETRY_DEFAULTS["backoff"]
DEFAULT_LIMITS = (_LIMITS_DEFAULTS["connections"], _LIMITS_DEFAULTS["pending"], _LIMITS_DEFAULTS["requests"],
                  _LIMITS_DEFAULTS["retries"])


# ---- what one request did ---------------------------------------------------------------------------

@dataclass
class Exercise:
    """One compared request, as the detectors read it. `steps` are the native explanation's rows
    (`Step(what, outcome, detail, data)`), `table` the native table (runtime_proxy/decide/table.py)."""
    request: Any                   # tests/equivalence/policies.GenRequest
    decision: Any                  # envoy_eval/decisions.Decision, equal in both planes
    steps: list
    table: Any
    route: Any = None              # the CRoute that took an outbound request
    service: Any = None            # its CService
    conditions: set[str] = field(default_factory=set)     # route conditions evaluated: method, path.KIND, header, query
    authz_conditions: set[str] = field(default_factory=set)   # rule conditions tested: from, method, path, header
    authz: dict | None = None      # the deciding authz step's data (allowed, rule, default, peer)
    normalize: dict | None = None  # the normalize step's data

    @property
    def forwarded(self) -> bool:
        return self.decision.status is None

    @property
    def accepted(self) -> bool:
        """An inbound request whose connection the listener accepted and whose head parsed."""
        return self.request.kind == "inbound" and self.normalize is not None

    def step(self, what: str, outcome: str | None = None):
        return next((s for s in self.steps if s.what == what and (outcome is None or s.outcome == outcome)), None)

    def normalized_by(self, prefix: str) -> bool:
        return self.normalize is not None and any(s["step"].startswith(prefix) for s in self.normalize["steps"])


def _why_kind(why: str) -> str:
    """The condition kind a failure reason of the explanation names (routing.explain_routes,
    authz.explain_rules)."""
    if why.startswith(("no verified identity", "caller ")):
        return "from"
    if why.startswith("method "):
        return "method"
    if why.startswith("path "):
        return "path"
    if why.startswith(("header ", "not header ")):
        return "header"
    if why.startswith("query "):
        return "query"
    return "?"


_ROUTE_ORDER = ("method", "path", "header", "query")
_RULE_ORDER = ("from", "method", "path", "header")


def _path_kind(kind: str) -> str:
    return "path.exact" if kind == "exact" else "path.regex" if kind == "regex" else "path.prefix"


def _route_conditions(service, steps) -> set[str]:
    """The route conditions evaluated, replaying the explanation's route rows (one per match tried,
    one `not tried` per route after the chosen one) against the service's routes."""
    rows = iter([s for s in steps if s.what == "route" and s.outcome in ("matched", "skipped", "not tried")])
    out: set[str] = set()
    for route in service.routes:
        for m in route.matches:
            row = next(rows, None)
            if row is None or row.outcome == "not tried":
                return out
            spec = m.spec
            present = {"method": m.methods is not None, "path": spec.get("path") is not None,
                       "header": bool(m.headers), "query": bool(m.query)}
            failed = None if row.outcome == "matched" else _why_kind(row.detail.split(": ", 1)[1])
            for kind in _ROUTE_ORDER:
                if present[kind]:
                    out.add(_path_kind(spec["path"]["kind"]) if kind == "path" else kind)
                if kind == failed:
                    break
            if row.outcome == "matched":
                return out
    return out


def _authz_conditions(table, steps) -> set[str]:
    """The rule conditions tested before the decision, as the decision tests them (authz.decide:
    deny rules up to the first that matches, then allow rules up to the first that matches)."""
    rows = [s.data for s in steps if s.what == "authz" and s.data is not None and "action" in s.data]
    rules = {r.name: r for r in table.authorization.deny + table.authorization.allow}
    out: set[str] = set()
    denied = any(r["matched"] for r in rows if r["action"] == "deny")
    for action in ("deny", "allow"):
        if action == "allow" and denied:
            break
        for r in rows:
            if r["action"] != action:
                continue
            rule = rules[r["rule"]]
            present = {"from": rule.principals is not None, "method": rule.methods is not None,
                       "path": rule.path is not None, "header": bool(rule.headers)}
            failed = None if r["matched"] else _why_kind(r["why"])
            for kind in _RULE_ORDER:
                if present[kind]:
                    out.add(kind)
                if kind == failed:
                    break
            if r["matched"]:
                return out
    return out


def exercise(request, decision, steps, table) -> Exercise:
    """The `Exercise` of one compared request (see the module docstring)."""
    x = Exercise(request, decision, list(steps), table)
    norm = x.step("normalize", "path")
    x.normalize = norm.data if norm is not None else None
    host = x.step("host", "service")
    if host is not None:
        x.service = table.services.get(host.detail)
        if x.service is not None:
            x.conditions = _route_conditions(x.service, x.steps)
            policy = x.step("policy")
            if policy is not None:
                x.route = next((r for r in x.service.routes if r.name == policy.outcome), None)
    decided = [s for s in x.steps if s.what == "authz" and s.data is not None and "allowed" in s.data]
    if decided:
        x.authz = decided[-1].data
        x.authz_conditions = _authz_conditions(table, x.steps)
    return x


# ---- detectors ---------------------------------------------------------------------------------------

def _applied(x: Exercise) -> bool:
    """An outbound request that its route sent upstream."""
    return x.route is not None and x.forwarded


def _retries(x: Exercise) -> bool:
    return _applied(x) and x.route.retry is not None and x.route.retry.num_retries > 0


def _fault(x: Exercise, outcome: str) -> bool:
    s = x.step("fault", outcome)
    return s is not None and not s.data["random"]


def _split(x: Exercise, keyed: bool) -> bool:
    s = x.step("split")
    return _applied(x) and s is not None and s.data["keyed"] == keyed


def _targets(x: Exercise) -> list:
    r = x.route
    return [r.to.service] if r.to is not None else [t.service for t in r.split.targets if t.weight > 0]


def _authz(x: Exercise, allowed: bool, by_rule: bool) -> bool:
    return x.authz is not None and x.authz["allowed"] == allowed and (x.authz["rule"] is not None) == by_rule


def _mode(x: Exercise, mode: str) -> bool:
    return x.accepted and x.table.mtls_mode == mode


@dataclass(frozen=True)
class Feature:
    name: str
    side: str                                   # outbound | inbound | both
    detect: Callable[[Exercise], bool]
    about: str                                  # when a request exercises it
    live_only: bool = False                     # the model layer's decisions do not show it


FEATURES: tuple[Feature, ...] = (
    # -- route matching (outbound): a condition evaluated for the request
    Feature("match.path.exact", "outbound", lambda x: "path.exact" in x.conditions,
            "an exact path condition of a route was evaluated"),
    Feature("match.path.prefix", "outbound", lambda x: "path.prefix" in x.conditions,
            "a prefix (segment or raw) path condition was evaluated"),
    Feature("match.path.regex", "outbound", lambda x: "path.regex" in x.conditions,
            "a regex path condition was evaluated"),
    Feature("match.header", "outbound", lambda x: "header" in x.conditions, "a header condition was evaluated"),
    Feature("match.query", "outbound", lambda x: "query" in x.conditions, "a query condition was evaluated"),
    Feature("match.method", "outbound", lambda x: "method" in x.conditions, "a method condition was evaluated"),
    # -- which destination the Host named (language §5.1): one of two services of one name
    Feature("namespace.twin", "outbound", lambda x: x.service is not None and "/" in x.service.name,
            "routed by a destination whose name another namespace declares too (NAMESPACE/NAME)"),
    # -- where the chosen route sends it
    Feature("split.keyed", "outbound", lambda x: _split(x, True), "a split picked by its key header"),
    Feature("split.random", "outbound", lambda x: _split(x, False), "a split picked by the random draw"),
    # -- the chosen route's settings, applied
    Feature("timeout", "outbound",
            lambda x: _applied(x) and x.route.timeout_ms != language_defaults.ROUTE_TIMEOUT_MS,
            "forwarded on a route with a written timeout (or `timeout none`)"),
    Feature("retry", "outbound", _retries, "forwarded on a route that retries"),
    Feature("retry.on_status", "outbound", lambda x: _retries(x) and bool(x.route.retry.retriable_status_codes),
            "forwarded on a route that retries on given status codes"),
    Feature("retry.per_try_timeout", "outbound", lambda x: _retries(x) and x.route.retry.per_try_timeout_ms > 0,
            "forwarded on a route whose retries have a per-try timeout"),
    Feature("retry.backoff", "outbound", lambda x: _retries(x) and x.route.retry.backoff_base_ms != DEFAULT_BACKOFF_MS,
            "forwarded on a route whose retries have a written backoff"),
    Feature("retry_budget", "outbound",
            lambda x: _retries(x) and any(s.retry_budget is not None for s in _targets(x)),
            "forwarded on a route that retries, to a destination with a retry budget"),
    Feature("fault.delay", "outbound", lambda x: _fault(x, "delay"), "delayed by the route's fault (100 %)"),
    Feature("fault.abort", "outbound", lambda x: _fault(x, "abort"), "aborted by the route's fault (100 %)"),
    Feature("mirror", "outbound", lambda x: _applied(x) and (s := x.step("mirror", "copied")) is not None
            and not s.data["random"], "forwarded and mirrored (100 %)"),
    Feature("request_headers", "outbound", lambda x: _applied(x) and not x.route.request_headers.empty,
            "forwarded with the route's request header changes"),
    Feature("response_headers", "outbound", lambda x: x.route is not None and not x.route.response_headers.empty
            and x.step("cors", "preflight") is None,
            "answered (upstream or by a local reply of the chosen route) with its response header changes"),
    # CORS (language §13a): a preflight answered by the proxy, an actual request's response with the headers
    Feature("cors.preflight", "outbound", lambda x: x.step("cors", "preflight") is not None,
            "a CORS preflight from an allowed origin, answered 200 by the proxy"),
    Feature("cors.actual", "outbound", lambda x: x.step("cors", "actual") is not None,
            "a request from an allowed origin, answered with the CORS headers (upstream or a local reply)"),
    Feature("limits", "outbound", lambda x: _applied(x) and any(
        (s.limits.max_connections, s.limits.max_pending_requests, s.limits.max_requests, s.limits.max_retries)
        != DEFAULT_LIMITS for s in _targets(x)), "forwarded to a destination with written limits", live_only=True),
    Feature("outlier", "outbound", lambda x: _applied(x) and any(s.outlier is not None for s in _targets(x)),
            "forwarded to a destination with outlier detection (its answer counted)", live_only=True),
    # -- both listeners
    Feature("path.normalized", "both", lambda x: x.normalize is not None and x.normalize["changed"],
            "normalisation changed the path"),
    Feature("escaped_slashes.decode", "both", lambda x: x.normalized_by("escaped slashes decoded"),
            "an escaped slash decoded (`escaped_slashes decode`)"),
    Feature("escaped_slashes.keep", "both", lambda x: x.normalized_by("escaped slashes kept"),
            "an escaped slash kept as written (`escaped_slashes keep`)"),
    Feature("tracing", "both", lambda x: x.table.tracing is not None and x.normalize is not None,
            "decided by a sidecar that traces (sampling any share)"),
    # -- authorization (inbound): what decided, and each condition kind tested
    Feature("authz.allow", "inbound", lambda x: _authz(x, True, True), "allowed by an allow rule"),
    Feature("authz.deny", "inbound", lambda x: _authz(x, False, True), "denied by a deny rule"),
    Feature("authz.default_allow", "inbound", lambda x: _authz(x, True, False), "allowed by the default"),
    Feature("authz.default_deny", "inbound", lambda x: _authz(x, False, False), "denied by the default"),
    Feature("authz.from", "inbound", lambda x: "from" in x.authz_conditions, "a `from` condition was tested"),
    Feature("authz.method", "inbound", lambda x: "method" in x.authz_conditions, "a method condition was tested"),
    Feature("authz.path", "inbound", lambda x: "path" in x.authz_conditions, "a path condition was tested"),
    Feature("authz.header", "inbound", lambda x: "header" in x.authz_conditions, "a header condition was tested"),
    # -- mTLS: the listener's mode and the accepted peer
    Feature("mtls.strict", "inbound", lambda x: _mode(x, "strict"), "accepted by a `strict` listener"),
    Feature("mtls.permissive", "inbound", lambda x: _mode(x, "permissive"), "accepted by a `permissive` listener"),
    Feature("mtls.disable", "inbound", lambda x: _mode(x, "disable"), "accepted by a plaintext listener"),
    Feature("peer.identity", "inbound", lambda x: x.accepted and x.request.caller is not None,
            "accepted over mTLS with the caller's SPIFFE ID"),
    Feature("peer.plaintext", "inbound", lambda x: x.accepted and x.request.caller is None,
            "accepted from a plaintext caller without identity"),
)
BY_NAME = {f.name: f for f in FEATURES}

_NOT_UPSTREAM = "an aborted request never goes upstream (the fault answers before the route sends it)"
_PREFLIGHT = ("a CORS preflight is answered by the proxy before the fault filter and the router: nothing of the "
              "route's forwarding, fault or response changes acts on it")
_ONE_DECISION = "one request is decided by one rule or by the default"
_ONE_MODE = "a listener has one mTLS mode"
# Pairs that cannot interact besides those on different listeners (`side`), with the reason.
EXCLUDED: dict[frozenset[str], str] = {
    frozenset(("split.keyed", "split.random")): "a split picks by its key header or by the draw, never both",
    **{frozenset(("cors.preflight", f)): _PREFLIGHT
       for f in ("split.keyed", "split.random", "timeout", "retry", "retry.on_status", "retry.per_try_timeout",
                 "retry.backoff", "retry_budget", "fault.delay", "fault.abort", "mirror", "request_headers",
                 "response_headers", "limits", "outlier")},
    frozenset(("cors.preflight", "cors.actual")): "a CORS request is either a preflight or an actual request",
    **{frozenset(("fault.abort", f)): _NOT_UPSTREAM
       for f in ("split.keyed", "split.random", "timeout", "retry", "retry.on_status", "retry.per_try_timeout",
                 "retry.backoff", "retry_budget", "mirror", "request_headers", "limits", "outlier")},
    **{frozenset(p): _ONE_DECISION
       for p in itertools.combinations(("authz.allow", "authz.deny", "authz.default_allow", "authz.default_deny"), 2)},
    **{frozenset(p): _ONE_MODE for p in itertools.combinations(("mtls.strict", "mtls.permissive", "mtls.disable"), 2)},
    frozenset(("mtls.strict", "peer.plaintext")): "a strict listener refuses a plaintext caller",
    frozenset(("mtls.disable", "peer.identity")): "a plaintext listener refuses a TLS caller",
    frozenset(("peer.identity", "peer.plaintext")): "a connection is either mTLS or plaintext",
    frozenset(("escaped_slashes.decode", "escaped_slashes.keep")): "a sidecar has one `escaped_slashes`",
}
LAYERS = ("model", "live")


def cannot_interact(a: str, b: str) -> str | None:
    """Why features `a` and `b` can never be exercised by one request, or None."""
    sides = {BY_NAME[a].side, BY_NAME[b].side}
    if sides == {"outbound", "inbound"}:
        return "one request meets either the caller's routes (outbound) or the sidecar's authorization (inbound)"
    return EXCLUDED.get(frozenset((a, b)))


def in_layer(feature: Feature, layer: str) -> bool:
    return layer == "live" or not feature.live_only


def interacting(layer: str | None = None) -> list[tuple[str, str]]:
    """Every pair (sorted names) that can interact, in `layer` (None: any)."""
    names = sorted(f.name for f in FEATURES if layer is None or in_layer(f, layer))
    return [p for p in itertools.combinations(names, 2) if cannot_interact(*p) is None]


def excluded() -> list[tuple[str, str, str]]:
    """(a, b, reason) for every pair left out of the denominator."""
    return [(a, b, why) for a, b in itertools.combinations(sorted(BY_NAME), 2)
            if (why := cannot_interact(a, b)) is not None]


def detect(x: Exercise, layer: str) -> frozenset[str]:
    return frozenset(f.name for f in FEATURES if in_layer(f, layer) and f.detect(x))


# ---- counting -----------------------------------------------------------------------------------------

_lock = threading.Lock()
covered: dict[str, set[tuple[str, str]]] = {layer: set() for layer in LAYERS}
seen: dict[str, dict[str, int]] = {layer: {} for layer in LAYERS}     # feature -> requests that exercised it


def record(layer: str, names: Iterable[str]) -> None:
    """One compared request of `layer` exercised `names`."""
    names = sorted(names)
    with _lock:
        for n in names:
            seen[layer][n] = seen[layer].get(n, 0) + 1
        covered[layer].update(itertools.combinations(names, 2))


def observe(layer: str, request, decision, steps, table) -> frozenset[str]:
    """Detect and record the features of one compared request; returns them."""
    names = detect(exercise(request, decision, steps, table), layer)
    record(layer, names)
    return names


def uncovered(layer: str | None = None) -> list[tuple[str, str]]:
    got = covered[layer] if layer is not None else covered["model"] | covered["live"]
    return [p for p in interacting(layer) if p not in got]


def used() -> bool:
    return any(seen[layer] for layer in LAYERS)


def _pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:.1f} %" if d else "-"


def summary() -> str:
    """The pairs line printed under the suite's summary line."""
    total = interacting()
    got = len(total) - len(uncovered())
    parts = []
    for layer in LAYERS:
        if seen[layer]:
            d = len(interacting(layer))
            n = d - len(uncovered(layer))
            parts.append(f"{layer} {n} of {d} ({_pct(n, d)})")
    return (f"pairs: {got} of {len(total)} that can interact covered ({_pct(got, len(total))}; "
            + ", ".join(parts) + f"; {len(FEATURES)} features, {len(excluded())} pairs cannot interact)")


def report() -> str:
    """Every feature with how many requests exercised it per layer, the uncovered pairs, and the
    pairs that cannot interact with their reasons (MESHC_EQUIVALENCE_PAIRS)."""
    lines = [summary(), "", "features (requests that exercised each: model, live):"]
    for f in FEATURES:
        lines.append(f"  {f.name:24} {seen['model'].get(f.name, 0):7} {seen['live'].get(f.name, 0):7}  {f.about}"
                     + ("  [live only]" if f.live_only else ""))
    missing = uncovered()
    lines += ["", f"uncovered pairs ({len(missing)}):"] + [f"  {a} x {b}" for a, b in missing]
    for layer in LAYERS:
        if seen[layer]:
            lines += ["", f"uncovered in the {layer} layer ({len(uncovered(layer))}):"]
            lines += [f"  {a} x {b}" for a, b in uncovered(layer)]
    lines += ["", f"pairs that cannot interact ({len(excluded())}):"]
    lines += [f"  {a} x {b}: {why}" for a, b, why in excluded()]
    return "\n".join(lines)


def report_requested() -> str | None:
    """`MESHC_EQUIVALENCE_PAIRS`: `-` to print the report after the summary, or a file to write it to."""
    return os.environ.get("MESHC_EQUIVALENCE_PAIRS") or None


# ---- steering the generators ---------------------------------------------------------------------------

FOCUS_SIZE = 6        # at most this many features in one focused policy
_groups: list[frozenset[str]] = []


def focus_groups() -> list[frozenset[str]]:
    """Sets of features for generated policies to combine (tests/equivalence/policies.py
    `FOCUS_RECIPES`), that together hold every pair that can interact and that the recipes reach:
    greedily, the first pair no group holds yet, then further such pairs whose features can all
    interact with those chosen, up to `FOCUS_SIZE` features. A fixed list (a generator draws
    from it: hypothesis needs a strategy's draws to depend on nothing but earlier draws)."""
    if _groups:
        return _groups
    from tests.equivalence.policies import FOCUS_RECIPES

    todo = [p for p in interacting() if p[0] in FOCUS_RECIPES and p[1] in FOCUS_RECIPES]
    held: set[tuple[str, str]] = set()
    for first in todo:
        if first in held:
            continue
        chosen = set(first)
        for a, b in todo:
            if len(chosen) >= FOCUS_SIZE:
                break
            new = {a, b} - chosen
            if (a, b) in held or not new or len(chosen) + len(new) > FOCUS_SIZE:
                continue
            if all(cannot_interact(x, y) is None for x in new for y in chosen | new if x != y):
                chosen |= new
        held.update(itertools.combinations(sorted(chosen), 2))
        _groups.append(frozenset(chosen))
    return _groups
