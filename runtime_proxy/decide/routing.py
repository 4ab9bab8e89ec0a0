"""Route selection (docs/language.md section 7): the first route with a matching `match` wins.

A route matches when any of its matches does; a match holds when its method, path, header and
query conditions all do. The query string is parsed only when a condition needs it, once per
request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
