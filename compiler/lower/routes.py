"""Routes to the IR: destinations resolved to (service, subset), the route timeout and retry
policy filled in, header changes in their application order."""

from __future__ import annotations

from compiler import ir
from compiler.language import defaults
from compiler.lower.resilience import lower_fault, lower_retry
from compiler.semantic.conditions import location, lower_match, route_matches
from compiler.semantic.symbols import Context, route_retry_block, subset_names
from compiler.syntax import ast


def lower_headers(ops: ast.HeaderOps | None) -> ir.HeaderChanges:
    remove: list[str] = []
    set_: list[tuple[str, str]] = []
    add: list[tuple[str, str]] = []
    for op in (ops.ops if ops is not None else ()):
        name = op.name.value.lower()
        if op.op == "remove":
            remove.append(name)
            continue
        assert op.value is not None  # `set` and `add` take a value (the grammar says so)
        if op.op == "set":
            set_.append((name, op.value.value))
        else:
            add.append((name, op.value.value))
    return ir.HeaderChanges(tuple(dict.fromkeys(remove)), tuple(set_), tuple(add))


def _subset(ctx: Context, ref: ast.Ref) -> tuple[str, str]:
    """(service, subset) of a destination: each one resolves (E0201, E0203, E0208 otherwise)."""
    found = ctx.subset_of(ref)
    assert found is not None
    return found


def _str(block: ast.Block | None, key: str) -> str:
    s = block.get(key) if block is not None else None
    return s.values[0].value if s is not None else ""


def lower_path_change(ctx: Context, route: ast.Route, block: ast.Block) -> ir.PathRewrite | None:
    """The path change of a redirect or a rewrite: `path`, `prefix` (the matched prefix, which
    every match of the route shares: E0421) or `regex`."""
    for s in block.settings:
        if s.key == "path":
            return ir.PathRewrite("path", "", s.values[0].value)
        if s.key == "regex":
            return ir.PathRewrite("regex", s.values[0].value, s.values[1].value)
        if s.key == "prefix":
            m = route_matches(ctx, route)[0].path
            assert m is not None  # every match has the same path prefix (E0421)
            return ir.PathRewrite("prefix", m.value, s.values[0].value, m.kind == "segment_prefix", m.ignore_case)
    return None


def lower_answer(ctx: Context, route: ast.Route) -> tuple[ir.Redirect | None, ir.DirectResponse | None,
                                                          ir.Rewrite | None]:
    redirect = direct = rewrite = None
    r = route.redirect
    if r is not None:
        status = r.get("status")
        port = r.get("port")
        redirect = ir.Redirect(status.values[0].value if status is not None else defaults.REDIRECT_STATUS,
                               _str(r, "scheme"), _str(r, "host"), port.values[0].value if port is not None else 0,
                               lower_path_change(ctx, route, r), r.get("strip_query") is not None)
    if route.respond is not None:
        body = route.respond.body.value if route.respond.body is not None else ""
        direct = ir.DirectResponse(route.respond.status.value, body)
    if route.rewrite is not None:
        rewrite = ir.Rewrite(lower_path_change(ctx, route, route.rewrite), _str(route.rewrite, "host"))
    return redirect, direct, rewrite


def lower_route(ctx: Context, route: ast.Route) -> ir.Route:
    to = split = None
    if route.redirect is not None or route.respond is not None:
        pass   # the route answers itself (nothing else forwards: E0420)
    elif route.to is not None:
        service, subset = _subset(ctx, route.to)
        to = ir.SubsetRef(service, subset)
    else:
        assert route.split is not None  # a route has `to` or `split` (E0301 otherwise)
        targets = []
        for entry in route.split.entries:
            service, subset = _subset(ctx, entry.target)
            targets.append(ir.WeightedSubset(
                service, subset, entry.weight.value,
                lower_headers(entry.request_headers) if entry.request_headers is not None else None,
                lower_headers(entry.response_headers) if entry.response_headers is not None else None))
        key = route.split.key_header.value.lower() if route.split.key_header is not None else None
        split = ir.Split(tuple(targets), key, sum(t.weight for t in targets))
    if route.timeout is None:
        timeout = defaults.ROUTE_TIMEOUT_MS
    else:
        timeout = route.timeout.value or 0
    redirect, direct, rewrite = lower_answer(ctx, route) if (
        route.redirect is not None or route.respond is not None or route.rewrite is not None) else (None, None, None)
    return ir.Route(route.name.value, location(route), route_matches(ctx, route), to, split, timeout,
                    lower_retry(route_retry_block(ctx, route)), lower_fault(route.fault),
                    lower_mirrors(ctx, route.mirrors, timeout),
                    lower_headers(route.request_headers), lower_headers(route.response_headers),
                    redirect, direct, rewrite,
                    lower_cors(route.cors) if route.cors is not None else None)


def lower_cors(cors: ast.Cors) -> ir.Cors:
    """A route's CORS policy (docs/language.md §13a): lists as written, each entry once."""
    def once(lits) -> tuple[str, ...]:
        return tuple(dict.fromkeys(x.value for x in lits or ()))

    origins = tuple(dict.fromkeys(ir.CorsOrigin(o.test, o.value.value) for o in cors.origins))
    return ir.Cors(origins, once(cors.methods), once(cors.headers), once(cors.expose),
                   cors.max_age.value // 1000 if cors.max_age is not None else None, cors.credentials is not None)


def lower_mirrors(ctx: Context, mirrors: tuple[ast.Mirror, ...], timeout: int) -> tuple[ir.Mirror, ...]:
    """The route's mirrors in written order (docs/language.md §12)."""
    out = []
    for m in mirrors:
        service, subset = _subset(ctx, m.target)
        pct = m.percent.value if m.percent is not None else defaults.MIRROR_PERCENT
        # a copy needs a bound even on a `timeout none` route, or copies to a slow mirror pile up
        out.append(ir.Mirror(service, subset, pct, timeout or defaults.MIRROR_TIMEOUT_MS))
    return tuple(out)


def implicit_route(svc: ast.Service) -> ir.Route:
    """A service without a routes block (and one subset) sends everything to that subset."""
    return ir.Route(defaults.IMPLICIT_ROUTE, location(svc), (lower_match(None),),
                    ir.SubsetRef(svc.name.value, subset_names(svc)[0]), None, defaults.ROUTE_TIMEOUT_MS,
                    None, None, (), ir.HeaderChanges((), (), ()), ir.HeaderChanges((), (), ()))
