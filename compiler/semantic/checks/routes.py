"""Route-level logic: impossible timeouts, unreachable routes, services that need routes."""

from __future__ import annotations

from compiler.core.diagnostics import Label
from compiler.language.settings import SIDECAR
from compiler.semantic.conditions import route_matches
from compiler.semantic.matching import CoverIndex, example_request
from compiler.semantic.symbols import Context, route_retry_block, subset_names
from compiler.syntax import ast


def check_timeouts(ctx: Context, route: ast.Route) -> None:
    if route.timeout is None:
        from compiler.language.defaults import ROUTE_TIMEOUT_MS
        timeout = ROUTE_TIMEOUT_MS
    elif route.timeout.value is None:
        timeout = 0  # `timeout none`
    else:
        timeout = route.timeout.value
    retry = route_retry_block(ctx, route)
    if retry is None or timeout <= 0:
        return
    per_try = retry.get("per_try_timeout")
    written = "" if route.timeout is not None else " (the default)"
    if per_try is not None and per_try.values[0].value >= timeout:
        ctx.diags.add("E0401", f"per-try timeout `{per_try.values[0].value} ms` is not less than the route timeout "
                      f"`{timeout} ms`{written}", per_try.span,
                      labels=(Label(route.timeout.span, "route timeout"),) if route.timeout is not None else (),
                      hint="the route gives up before a slow try could be retried: shorten the per-try timeout "
                           "or raise the route timeout")
    backoff = retry.get("backoff")
    if backoff is not None and backoff.values[0].value >= timeout:
        ctx.diags.add("W0402", f"retry backoff `{backoff.values[0].value} ms` is not shorter than the route timeout "
                      f"`{timeout} ms`{written}", backoff.span, hint="no retry could start before the route times out")


def check_mirror(ctx: Context, route: ast.Route) -> None:
    if not route.mirrors:
        return
    targets = [route.to] if route.to is not None else [e.target for e in route.split.entries] if route.split else []
    seen: dict[object, ast.Mirror] = {}
    for m in route.mirrors:
        mirrored = ctx.subset_of(m.target)
        if mirrored is not None and any(ctx.subset_of(t) == mirrored for t in targets):
            ctx.diags.add("W0403", f"route `{route.name.value}` mirrors to `{m.target}`, which it already sends "
                          "requests to", m.span, hint="mirror to another subset, such as a new version")
        if mirrored is not None and mirrored in seen:
            ctx.diags.add("W0430", f"route `{route.name.value}` mirrors to `{m.target}` twice", m.span,
                          hint="that subset would get two copies of a request both mirrors copy: keep one "
                               "`mirror` line per subset",
                          labels=(Label(seen[mirrored].span, "first mirrored here"),))
        elif mirrored is not None:
            seen[mirrored] = m


# what a route that answers itself (a redirect, a direct response) cannot have: it forwards nothing
_FORWARDING = ("to", "split", "timeout", "retry", "fault", "mirrors", "rewrite", "request_headers")


def check_answer(ctx: Context, route: ast.Route) -> None:
    """E0420: a route that answers itself with a redirect or a direct response forwards nothing, so
    what only a forwarded request has (a destination, a timeout, retries, a mirror, a rewrite,
    request header changes) cannot go with it, nor can a fault (its abort would be a second answer;
    write the answer instead). E0421: a prefix replacement needs the prefix the route matched.
    W0421: a redirect that changes nothing sends every client back to the same URL."""
    answers = [(w, n) for w, n in (("redirect", route.redirect), ("respond", route.respond)) if n is not None]
    if len(answers) > 1:
        ctx.diags.add("E0420", f"route `{route.name.value}` has both `redirect` and `respond`", answers[1][1].span,
                      hint="a route answers one way: a redirect, or a direct response")
    if answers:
        what, node = answers[0]
        for field in _FORWARDING:
            other = getattr(route, field)
            if field == "mirrors":   # a tuple, one per `mirror` line
                field, other = "mirror", other[0] if other else None
            if other is not None:
                span = getattr(other, "span", None) or node.span
                ctx.diags.add("E0420", f"route `{route.name.value}` answers with `{what}` and also has `{field}`", span,
                              labels=(Label(node.span, "the route answers here: nothing is forwarded"),),
                              hint=f"remove `{field}`, or move it to a route that forwards"
                                   + (": a fault's abort would be a second answer" if field == "fault" else ""))
    for block in (route.redirect, route.rewrite):
        if block is None:
            continue
        prefix = block.get("prefix")
        if prefix is not None:
            check_prefix_route(ctx, route, block, prefix)
    if route.redirect is not None and not any(route.redirect.get(k) is not None
                                              for k in ("scheme", "host", "port", "path", "prefix", "regex")):
        ctx.diags.add("W0421", f"route `{route.name.value}` redirects every request to the URL it asked for",
                      route.redirect.span, hint="a client that follows it loops: change the `scheme`, `host`, "
                                                "`port`, `path` or `prefix`")


def check_prefix_route(ctx: Context, route: ast.Route, block: ast.Block, prefix: ast.Setting) -> None:
    """A `prefix` replacement replaces the prefix that the route's `path prefix` (or `raw_prefix`)
    matched: every match of the route needs one, the same (E0421). A plain string prefix (`raw_prefix`,
    or a prefix ending in `/`) is replaced as a string: a replacement that drops its final `/` joins
    segments (W0420)."""
    matches = route_matches(ctx, route)
    paths = {(m.path.kind, m.path.value, m.path.ignore_case) if m.path is not None else None for m in matches}
    only = next(iter(paths)) if len(paths) == 1 else None
    if only is None or only[0] not in ("prefix", "segment_prefix") or (only[0] == "prefix" and only[1] == "/"):
        found = ("no `path prefix`" if None in paths or (only is not None and only[1] == "/")
                 else "several different paths" if len(paths) > 1 else f"a `path {only[0]}` match" if only else "")
        ctx.diags.add("E0421", f"`prefix` in the {block.kind} of route `{route.name.value}` has {found} to replace",
                      prefix.span, hint="a prefix replacement replaces what `path prefix \"/OLD\"` matched: give every "
                                        "match of the route the same `path prefix`, or replace the whole path with "
                                        "`path`, or a pattern with `regex`" if block.kind == "rewrite" else
                                        "a prefix replacement replaces what `path prefix \"/OLD\"` matched: give every "
                                        "match of the route the same `path prefix`, or replace the whole path with "
                                        "`path`")
        return
    value = prefix.values[0].value
    if only[0] == "prefix" and only[1].endswith("/") and not value.endswith("/"):
        ctx.diags.add("W0420", f"`prefix` replacement `{value}` drops the `/` that ends the matched prefix "
                      f"`{only[1]}`", prefix.values[0].span,
                      hint=f"a prefix ending in `/` is replaced as a string: `{only[1]}x` becomes `{value}x`; "
                           f"write `\"{value}/\"`, or match `path prefix \"{only[1].rstrip('/') or '/'}\"` "
                           "to replace segment by segment")
    elif only[0] == "segment_prefix" and value != "/" and value.endswith("/"):
        ctx.diags.add("W0420", f"`prefix` replacement `{value}` ends in `/`: `{only[1]}/x` becomes `{value}/x`",
                      prefix.values[0].span, hint=f"the matched prefix `{only[1]}` is replaced segment by segment: "
                                                  f"write `\"{value.rstrip('/')}\"`")


def check_unreachable(ctx: Context, block: ast.Routes) -> None:
    """A route whose every match is covered by a match of an earlier route never matches (W0401).

    The route named is the earliest that covers the route's first match. The earlier matches are
    indexed (matching.CoverIndex), so each match is compared only with those that can cover it,
    not with every earlier one: near-linear in the routes of a realistic table."""
    index = CoverIndex()
    for route in block.routes:
        matches = route_matches(ctx, route)
        coverers = []
        for m in matches:
            hit = index.first_cover(m)
            if hit is None:
                break
            coverers.append(hit)
        else:
            first = coverers[0]
            witness = example_request(matches[0])
            such_as = f", such as {witness}" if witness else ""
            ctx.diags.add("W0401", f"route `{route.name.value}` can never match", route.name.span,
                          labels=(Label(first.name.span, f"route `{first.name.value}` already takes every request "
                                                          f"it would match{such_as}"),),
                          hint=f"routes are tried in written order: move `{route.name.value}` above "
                               f"`{first.name.value}`, or make the earlier match stricter")
        index.add(route, matches)


def check_callers(ctx: Context, dest: str, block: ast.Routes) -> None:
    """W0410: a `caller` that the destination's authorization can never admit: the destination is
    not in that caller's scope (compiler/ir/scope.py), so its sidecar has none of its routes."""
    svc, authz = ctx.services.get(dest), ctx.authorizations.get(dest)
    if svc is None or authz is None or authz.default is None:
        return
    from compiler.ir.conditions import rules_admit
    from compiler.semantic.conditions import authorization_rules, service_identity

    rules = tuple(r for _, r in authorization_rules(ctx, svc, authz))
    for route in block.routes:
        for m in route.matches:
            for c in m.conditions:
                if not isinstance(c, ast.CallerCond):
                    continue
                for v in c.callers:
                    caller = ctx.services.get(v.value)
                    default = authz.default.value
                    if caller is not None and not rules_admit(default, rules, service_identity(ctx, caller)):
                        ctx.diags.add("W0410", f"route `{route.name.value}` is for caller `{v.value}`, which "
                                      f"`authorization {dest}` never admits", v.span,
                                      labels=(Label(authz.service.span, "no allow rule here can admit it"),),
                                      hint=f"`{v.value}`'s sidecar cannot call `{dest}` and holds none of its "
                                           f"routes: allow `{v.value}` in `authorization {dest}`, or remove it "
                                           "from the condition")


def stream_idle_timeout(svc: ast.Service | None) -> tuple[int, ast.Setting | None]:
    """The stream idle timeout of a service's own sidecar (ms), and the setting that wrote it; with
    workloads (language §5.9), the shortest of its sidecars' (a subset's block over the service's)."""
    s = svc.sidecar.get("stream_idle_timeout") if svc is not None and svc.sidecar is not None else None
    own = (s.values[0].value, s) if s is not None else (SIDECAR.default("stream_idle_timeout"), None)
    if svc is None:
        return own
    found = [own] if svc.endpoints is not None or any(sub.sidecar is None for sub in svc.subsets) else []
    for sub in svc.subsets:
        mine = sub.sidecar.get("stream_idle_timeout") if sub.sidecar is not None else None
        if mine is not None and isinstance(mine.values[0].value, int):
            found.append((mine.values[0].value, mine))
        elif sub.sidecar is not None:
            found.append(own)
    return min(found, key=lambda f: f[0]) if found else own


def check_stream_idle(ctx: Context, route: ast.Route, stream_idle: tuple[int, ast.Setting | None]) -> None:
    """W0404: a route timeout longer than the stream idle timeout of its service's own sidecar,
    whose inbound listener every request of the route passes: a silent response is ended there
    first. (`timeout none` is not reported: it means no bound on the whole request, and the stream
    idle timeout bounding silence is its documented meaning.)"""
    if route.timeout is None or route.timeout.value is None:
        return
    idle, setting = stream_idle
    if route.timeout.value > idle > 0:
        written = "" if setting is not None else " (the default)"
        ctx.diags.add("W0404", f"route timeout `{route.timeout.value} ms` is longer than the stream idle timeout "
                      f"`{idle} ms`{written} of the service's sidecar", route.timeout.span,
                      labels=(Label(setting.span, "stream idle timeout"),) if setting is not None else (),
                      hint="a response that sends nothing for that long is ended with 504 before the route timeout: "
                           "raise `stream_idle_timeout` in the service's `sidecar` block")


def check_routes(ctx: Context) -> None:
    for name, block in ctx.routes.items():
        if ctx.reuse is None:
            check_block(ctx, name, block)
        else:   # the language server, `meshc serve`: an unchanged block that read unchanged items
            ctx.reuse.unit(ctx, "routes", block, check_block, ctx, name, block)
    for name, svc in ctx.local_services():
        subsets = subset_names(svc)
        if not ctx.has_routes(name) and len(subsets) > 1 and ("routes", name) not in ctx.broken:
            ctx.diags.add("E0402", f"service `{name}` has {len(subsets)} subsets but no routes", svc.name.span,
                          hint=f"add `routes {name} {{ route default {{ to {name}.{subsets[0]} }} }}` or a split")


def check_block(ctx: Context, name: str, block: ast.Routes) -> None:
    """The checks of one routes block. Besides the block, it reads the program only through the
    context's symbol tables and its `mesh` block (compiler/semantic/reuse.py relies on it)."""
    stream_idle = stream_idle_timeout(ctx.services.get(name))
    seen: dict[str, ast.Route] = {}
    for route in block.routes:
        first = seen.get(route.name.value)
        if first is not None:
            ctx.diags.add("E0202", f"route `{route.name.value}` is declared twice in `routes {name}`",
                          route.name.span, labels=(Label(first.name.span, "first declared here"),))
        seen.setdefault(route.name.value, route)
        check_timeouts(ctx, route)
        check_stream_idle(ctx, route, stream_idle)
        check_mirror(ctx, route)
        if route.redirect is not None or route.respond is not None or route.rewrite is not None:
            check_answer(ctx, route)
    check_unreachable(ctx, block)
    check_callers(ctx, name, block)
    if not block.routes:
        ctx.diags.add("E0301", f"`routes {name}` has no routes", block.service.span,
                      hint="add a route, or remove the block to send everything to the service's only subset")
