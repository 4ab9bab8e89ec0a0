"""Route selection (docs/language.md section 7): the first route with a matching `match` wins.

A route matches when any of its matches does; a match holds when its method, path, header and
query conditions all do. The query string is parsed only when a condition needs it, once per
request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runtime_proxy.decide.table import CRoute, CService, parse_query

if TYPE_CHECKING:
    from runtime_proxy.decide.explain import Explanation
    from runtime_proxy.decide.route_index import ServiceView
    from runtime_proxy.decide.table import HeaderMap


def select_route(service: CService | ServiceView[CRoute], method: str, path: str, query: str,
                 headers: HeaderMap) -> CRoute | None:
    """The route of `service` that takes this request, or None (a 404). `path` is the normalised
    path, `query` the raw query string without `?`, `headers` lower-case name -> list of values."""
    params = None
    for route in service.routes:
        for m in route.matches:
            if m.methods is not None and method not in m.methods:
                continue
            if m.path is not None and not m.path(path):
                continue
            for test in m.headers:   # for/else: fewer steps per request than all() or a flag
                if not test(headers):
                    break
            else:
                if not m.query:
                    return route
                if params is None:
                    params = parse_query(query)
                for qtest in m.query:
                    if not qtest(params):
                        break
                else:
                    return route
    return None


# A view of the route index gets its generated function (compile_select) at its COMPILE_AFTER-th
# request, when its candidates make at most COMPILE_MAX_TESTS tests (select_size): a first
# segment seen once never pays for a compilation, and a large candidate list (a fleet's
# catch-all routes, routes of many matches) is never compiled on the request path, where
# building the function blocks the event loop (about 50 µs per test; the loop of select_route
# costs the same per route tried either way).
COMPILE_AFTER = 8
COMPILE_MAX_TESTS = 128


def select_size(routes: tuple[CRoute, ...]) -> int:
    """How many tests compile_select would write for `routes`: one per match and one per condition."""
    return sum(1 + (m.methods is not None) + (m.path is not None) + len(m.headers) + len(m.query)
               for route in routes for m in route.matches)


def compile_select(routes: tuple[CRoute, ...]) -> Callable[[str, str, str, HeaderMap], CRoute | None]:
    """select_route over `routes` as one generated Python function: the same tests in the same
    order, with the loops unrolled and the plain conditions written inline (a case-sensitive exact
    or prefix path, a header's presence), the others calling the compiled test. Nothing of the
    config goes into the source text: every value is a name bound in the function's globals."""
    ns: dict[str, Any] = {"parse_query": parse_query}
    body = ["def select(method, path, query, headers):", "    params = None"]
    for i, route in enumerate(routes):
        ns[f"R{i}"] = route
        for j, m in enumerate(route.matches):
            at = f"{i}_{j}"
            conds = []
            if m.methods is not None:
                ns[f"M{at}"] = m.methods
                conds.append(f"method in M{at}")
            if m.path is not None:
                spec = m.spec.get("path") or {}
                ns[f"P{at}"] = spec.get("value") if not spec.get("ignore_case", False) else None
                if spec.get("kind") == "exact" and ns[f"P{at}"] is not None:
                    conds.append(f"path == P{at}")
                elif spec.get("kind") == "prefix" and ns[f"P{at}"] is not None:
                    conds.append(f"path.startswith(P{at})")
                else:
                    ns[f"P{at}"] = m.path
                    conds.append(f"P{at}(path)")
            hspecs = m.spec.get("headers") or ()
            for k, test in enumerate(m.headers):
                h = hspecs[k] if len(hspecs) == len(m.headers) else {}
                kind, invert = h.get("kind"), h.get("invert", False)
                if kind in ("present", "absent"):
                    ns[f"H{at}_{k}"] = h["name"].lower()
                    conds.append(f"H{at}_{k} {'in' if (kind == 'present') != invert else 'not in'} headers")
                else:
                    ns[f"H{at}_{k}"] = test
                    conds.append(f"H{at}_{k}(headers)")
            cond = " and ".join(conds) or "True"
            if not m.query:
                body.append(f"    if {cond}:\n        return R{i}")
                continue
            for k, qtest in enumerate(m.query):
                ns[f"Q{at}_{k}"] = qtest
            qcond = " and ".join(f"Q{at}_{k}(params)" for k in range(len(m.query)))
            body.append(f"    if {cond}:\n        if params is None:\n            params = parse_query(query)\n"
                        f"        if {qcond}:\n            return R{i}")
    body.append("    return None")
    exec("\n".join(body), ns)   # (generated from names only, see above)
    return ns["select"]  # type: ignore[no-any-return]


def explain_routes(service: CService, method: str, path: str, query: str, headers: HeaderMap,
                   explain: Explanation) -> CRoute | None:
    """select_route, every route of `service` tried in order (not only the route index's
    candidates), each match's first failing condition noted in `explain`. The same answer as
    select_route (tests/test_decisions.py holds them equal)."""
    from runtime_proxy.decide.explain import describe_header, describe_path, describe_query

    params = parse_query(query)
    chosen = None
    for route in service.routes:
        if chosen is not None:
            explain.note("route", "not tried", f"`{route.name}`: an earlier route matched")
            continue
        for i, m in enumerate(route.matches, 1):
            where = f"`{route.name}`" + (f" match {i}" if len(route.matches) > 1 else "")
            spec = m.spec
            if m.methods is not None and method not in m.methods:
                why: str | None = f"method {method} is not one of {', '.join(sorted(m.methods))}"
            elif m.path is not None and not m.path(path):
                why = f"{describe_path(spec['path'])} does not match `{path}`"
            else:
                why = next((describe_header(h) + " does not hold"
                            for h, test in zip(spec.get("headers") or (), m.headers) if not test(headers)), None)
                if why is None:
                    why = next((describe_query(q) + " does not hold"
                                for q, test in zip(spec.get("query") or (), m.query) if not test(params)), None)
            if why is None:
                explain.note("route", "matched", where)
                chosen = route
                break
            explain.note("route", "skipped", f"{where}: {why}")
    if chosen is None:
        explain.note("route", "none", "no route matches: 404")
    return chosen
