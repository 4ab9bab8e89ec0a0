"""Route selection (docs/language.md section 7): the first route with a matching `match` wins.

A route matches when any of its matches does; a match holds when its method, path, header and
query conditions all do. The query string is parsed only when a condition needs it, once per
request.
"""

from __future__ import annotations

from runtime_proxy.decide.table import CRoute, CService, parse_query


def select_route(service: CService, method: str, path: str, query: str, headers) -> CRoute | None:
    """The route of `service` that takes this request, or None (a 404). `path` is the normalised
    path, `query` the raw query string without `?`, `headers` lower-case name -> list of values."""
    params = None
    for route in service.routes:
        for m in route.matches:
            if m.methods is not None and method not in m.methods:
                continue
            if m.path is not None and not m.path(path):
                continue
            ok = True
            for test in m.headers:
                if not test(headers):
                    ok = False
                    break
            if not ok:
                continue
            if m.query:
                if params is None:
                    params = parse_query(query)
                for test in m.query:
                    if not test(params):
                        ok = False
                        break
                if not ok:
                    continue
            return route
    return None
