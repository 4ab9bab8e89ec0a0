"""AST to IR: resolve names, write in every default, order routes, convert units.

Lowering runs only on a program without errors, so it may assume that every reference
resolves and every value is in range. The `lower_*` helpers for matches and rules are pure and
also used by the checks (shadowing, authorization reasoning) on programs that may have errors.
"""

from __future__ import annotations

import re

from compiler import ast, defaults, ir
from compiler.symbols import Context, subset_names

# Retry conditions as written -> their canonical name (Envoy's `retry_on` token).
RETRY_CONDITIONS = {
    "5xx": "5xx", "gateway-error": "gateway-error", "reset": "reset", "connect-failure": "connect-failure",
    "refused-stream": "refused-stream", "retriable-4xx": "retriable-4xx",
}
# Conditions that only arise before the upstream saw the request: safe for any method.
PRE_SEND_CONDITIONS = frozenset({"connect-failure", "refused-stream"})


def span_location(node) -> str:
    span = getattr(node, "span", None)
    return span.location() if span is not None else "<unknown>"


def service_identity(ctx: Context, svc: ast.Service) -> str:
    if svc.identity is not None:
        return svc.identity.value
    ns = svc.namespace.value if svc.namespace is not None else defaults.NAMESPACE
    return f"spiffe://{ctx.trust_domain}/ns/{ns}/sa/{svc.name.value}"


def service_namespace(svc: ast.Service) -> str:
    return svc.namespace.value if svc.namespace is not None else defaults.NAMESPACE


# ---- matches ------------------------------------------------------------------------------------

def lower_path(cond: ast.PathCond) -> ir.PathMatch:
    """`prefix` is segment-aware; a prefix that already ends in `/` is the same as a raw one."""
    value = cond.value.value
    if cond.kind == "prefix":
        if value.endswith("/"):
            return ir.PathMatch("prefix", value)
        return ir.PathMatch("segment_prefix", value)
    if cond.kind == "raw_prefix":
        return ir.PathMatch("prefix", value)
    return ir.PathMatch(cond.kind, value)


def lower_header(cond: ast.HeaderCond) -> ir.HeaderMatch:
    name = cond.name.value.lower()
    kind = cond.test
    if kind in ("present", "absent"):
        if cond.invert:  # `not header x present` is `absent`, and the reverse
            kind = "absent" if kind == "present" else "present"
        return ir.HeaderMatch(name, kind, None, False, False)
    return ir.HeaderMatch(name, kind, cond.value.value, cond.invert, cond.ignore_case)


def lower_query(cond: ast.QueryCond) -> ir.QueryMatch:
    return ir.QueryMatch(cond.name.value, cond.test, cond.value.value if cond.value is not None else None)


def lower_match(match: ast.Match | None) -> ir.Match:
    path = None
    headers, query, methods = [], [], None
    for cond in (match.conditions if match is not None else ()):
        if isinstance(cond, ast.PathCond):
            path = lower_path(cond)
        elif isinstance(cond, ast.HeaderCond):
            headers.append(lower_header(cond))
        elif isinstance(cond, ast.QueryCond):
            query.append(lower_query(cond))
        elif isinstance(cond, ast.MethodCond):
            listed = tuple(dict.fromkeys(m.value for m in cond.methods))
            methods = listed if methods is None else tuple(m for m in methods if m in listed)
    return ir.Match(path, tuple(headers), tuple(query), methods)


def lower_matches(route: ast.Route) -> tuple[ir.Match, ...]:
    if not route.matches:
        return (lower_match(None),)
    return tuple(lower_match(m) for m in route.matches)


def route_matches(ctx: Context, route: ast.Route) -> tuple[ir.Match, ...]:
    """lower_matches, computed once per route for the checks and the lowering together."""
    key = ("matches", id(route))
    found = ctx.memo.get(key)
    if found is None:
        found = ctx.memo[key] = lower_matches(route)
    return found


# ---- authorization ------------------------------------------------------------------------------

def lower_principals(ctx: Context, svc: ast.Service | None, cond: ast.FromCond) -> tuple[ir.Principal, ...]:
    td = ctx.trust_domain
    out = []
    if cond.kind == "identity":
        for v in cond.values:
            if v.value.endswith("/*"):
                out.append(ir.Principal("prefix", v.value[:-1]))
            else:
                out.append(ir.Principal("exact", v.value))
    elif cond.kind == "namespace":
        out = [ir.Principal("prefix", f"spiffe://{td}/ns/{v.value}/") for v in cond.values]
    elif cond.kind == "service":
        for v in cond.values:
            peer = ctx.services.get(v.value)
            if peer is not None:
                out.append(ir.Principal("exact", service_identity(ctx, peer)))
    elif cond.kind == "same_namespace" and svc is not None:
        out = [ir.Principal("prefix", f"spiffe://{td}/ns/{service_namespace(svc)}/")]
    return tuple(dict.fromkeys(out))


def lower_rule(ctx: Context, svc: ast.Service | None, rule: ast.Rule, name: str) -> ir.AuthzRule:
    principals = path = methods = None
    headers = []
    for cond in rule.conditions:
        if isinstance(cond, ast.FromCond):
            principals = lower_principals(ctx, svc, cond)
        elif isinstance(cond, ast.PathCond):
            path = lower_path(cond)
        elif isinstance(cond, ast.MethodCond):
            methods = tuple(dict.fromkeys(m.value for m in cond.methods))
        elif isinstance(cond, ast.HeaderCond):
            headers.append(lower_header(cond))
    return ir.AuthzRule(name, rule.action, span_location(rule), principals, path, methods, tuple(headers))


def expand_rules(ctx: Context, authz: ast.Authorization) -> list[tuple[ast.Rule, str, object]]:
    """The rules of an authorization block in written order, `use` sets expanded in place: each
    with its name and the item of the block it comes from (the rule itself, or the `use`)."""
    out = []
    counter = 0
    for item in authz.items:
        if isinstance(item, ast.Rule):
            counter += 1
            out.append((item, item.name.value if item.name else f"{item.action}-{counter}", item))
        else:
            rules = ctx.policy(item.ref, "rules") or ()
            for i, rule in enumerate(rules, 1):
                counter += 1
                out.append((rule, f"{item.ref}.{rule.name.value if rule.name else f'{rule.action}-{i}'}", item))
    return out


def authorization_rules(ctx: Context, svc: ast.Service | None,
                        authz: ast.Authorization) -> list[tuple[object, ir.AuthzRule]]:
    """(the block's item it comes from, its IR) for each rule, `use` sets expanded; computed once."""
    key = ("rules", id(authz))
    found = ctx.memo.get(key)
    if found is None:
        found = ctx.memo[key] = [(origin, lower_rule(ctx, svc, rule, name))
                                 for rule, name, origin in expand_rules(ctx, authz)]
    return found


def lower_authorization(ctx: Context, svc: ast.Service) -> ir.Authorization:
    authz = ctx.authorizations.get(svc.name.value)
    if authz is None:
        return ir.Authorization(defaults.AUTHORIZATION_DEFAULT, (), None)
    rules = tuple(lowered for _, lowered in authorization_rules(ctx, svc, authz))
    return ir.Authorization(authz.default.value, rules, span_location(authz))


# ---- resilience ---------------------------------------------------------------------------------

def _values(block: ast.Block | None) -> dict[str, tuple]:
    return {s.key: tuple(v.value for v in s.values) for s in block.settings} if block is not None else {}


def resolve_block(ctx: Context, node, kind: str) -> ast.Block | None:
    if isinstance(node, ast.Ref):
        return ctx.policy(node, kind)
    return node


def lower_limits(block: ast.Block | None) -> ir.Limits:
    v = _values(block)
    return ir.Limits(v.get("connections", (defaults.LIMIT_CONNECTIONS,))[0],
                     v.get("pending", (defaults.LIMIT_PENDING,))[0],
                     v.get("requests", (defaults.LIMIT_REQUESTS,))[0],
                     v.get("retries", (defaults.LIMIT_RETRIES,))[0])


def lower_outlier(block: ast.Block | None) -> ir.Outlier | None:
    if block is None:
        return None
    v = _values(block)
    return ir.Outlier(v.get("consecutive_5xx", (defaults.OUTLIER_CONSECUTIVE_5XX,))[0],
                      v.get("consecutive_gateway_errors", (defaults.OUTLIER_CONSECUTIVE_GATEWAY_ERRORS,))[0],
                      v.get("interval", (defaults.OUTLIER_INTERVAL_MS,))[0],
                      v.get("ejection", (defaults.OUTLIER_EJECTION_MS,))[0],
                      v.get("max_ejected", (defaults.OUTLIER_MAX_EJECTED_PERCENT,))[0])


def lower_budget(block: ast.Block | None) -> ir.RetryBudget | None:
    if block is None:
        return None
    v = _values(block)
    return ir.RetryBudget(v.get("percent", (defaults.BUDGET_PERCENT,))[0],
                          v.get("min_concurrency", (defaults.BUDGET_MIN_CONCURRENCY,))[0])


def lower_retry(block: ast.Block | None) -> ir.Retry | None:
    if block is None:
        return None
    v = _values(block)
    conditions, codes = [], []
    for word in v.get("on", defaults.RETRY_ON):
        if word.isdigit():
            codes.append(int(word))
        else:
            conditions.append(RETRY_CONDITIONS[word])
    backoff = v.get("backoff", (defaults.RETRY_BACKOFF_BASE_MS,))
    base = backoff[0]
    top = backoff[1] if len(backoff) > 1 else base * defaults.RETRY_BACKOFF_MAX_FACTOR
    return ir.Retry(v.get("attempts", (defaults.RETRY_ATTEMPTS,))[0], tuple(dict.fromkeys(conditions)),
                    tuple(sorted(set(codes))), v.get("per_try_timeout", (defaults.RETRY_PER_TRY_TIMEOUT_MS,))[0], base, top,
                    "allow_non_idempotent" in v)


def route_retry_block(ctx: Context, route: ast.Route) -> ast.Block | None:
    """The retry block of a route, through a named policy if need be; None when the route does
    not retry (no retry, `retry none`, or a policy with `attempts 0` such as `std.none`)."""
    if route.retry is None or isinstance(route.retry, ast.Lit):
        return None
    block = resolve_block(ctx, route.retry, "retry")
    attempts = block.get("attempts") if block is not None else None
    if attempts is not None and attempts.values[0].value == 0:
        return None
    return block


def lower_fault(block: ast.Block | None) -> ir.Fault | None:
    if block is None:
        return None
    abort = delay = None
    for s in block.settings:
        pct = s.values[1].value if len(s.values) > 1 else defaults.FAULT_PERCENT
        if s.key == "abort":
            abort = ir.FaultAbort(s.values[0].value, pct)
        else:
            delay = ir.FaultDelay(s.values[0].value, pct)
    return ir.Fault(abort, delay)


def lower_headers(ops: ast.HeaderOps | None) -> ir.HeaderChanges:
    remove, set_, add = [], [], []
    for op in (ops.ops if ops is not None else ()):
        name = op.name.value.lower()
        if op.op == "remove":
            remove.append(name)
        elif op.op == "set":
            set_.append((name, op.value.value))
        else:
            add.append((name, op.value.value))
    return ir.HeaderChanges(tuple(dict.fromkeys(remove)), tuple(set_), tuple(add))


# ---- routes and services ------------------------------------------------------------------------

def lower_route(ctx: Context, route: ast.Route) -> ir.Route:
    to = split = mirror = None
    if route.to is not None:
        service, subset = ctx.subset_of(route.to)
        to = ir.SubsetRef(service, subset)
    else:
        targets = []
        for entry in route.split.entries:
            service, subset = ctx.subset_of(entry.target)
            targets.append(ir.WeightedSubset(service, subset, entry.weight.value))
        key = route.split.key_header.value.lower() if route.split.key_header is not None else None
        split = ir.Split(tuple(targets), key, sum(t.weight for t in targets))
    if route.mirror is not None:
        service, subset = ctx.subset_of(route.mirror.target)
        pct = route.mirror.percent.value if route.mirror.percent is not None else defaults.MIRROR_PERCENT
        mirror = ir.Mirror(service, subset, pct)
    if route.timeout is None:
        timeout = defaults.ROUTE_TIMEOUT_MS
    else:
        timeout = route.timeout.value or 0
    return ir.Route(route.name.value, span_location(route), route_matches(ctx, route), to, split, timeout,
                    lower_retry(route_retry_block(ctx, route)), lower_fault(route.fault), mirror,
                    lower_headers(route.request_headers), lower_headers(route.response_headers))


def implicit_route(svc: ast.Service) -> ir.Route:
    """A service without a routes block (and one subset) sends everything to that subset."""
    return ir.Route(defaults.IMPLICIT_ROUTE, span_location(svc), (lower_match(None),),
                    ir.SubsetRef(svc.name.value, subset_names(svc)[0]), None, defaults.ROUTE_TIMEOUT_MS,
                    None, None, None, ir.HeaderChanges((), (), ()), ir.HeaderChanges((), (), ()))


_DNS_NAME = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z")
_IPV4ISH = re.compile(r"[0-9.]+\Z")


def parse_endpoint(text: str) -> tuple[str, int] | None:
    """`host:port` with an IPv4 address, `[IPv6]` or a DNS name; None when malformed."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or not is_ip(host) or ":" not in host:
            return None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host or ":" in host:
            return None  # an IPv6 address needs brackets
        if _IPV4ISH.match(host):
            if not is_ip(host):
                return None  # 256.1.1.1 is neither an address nor a name
        elif not _DNS_NAME.match(host):
            return None
    if not (port.isascii() and port.isdigit()) or len(port) > 5 or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def is_ip(host: str) -> bool:
    import ipaddress  # only endpoints pay for it

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def lower_subset(name: str, endpoints: tuple[ast.Lit, ...], node) -> ir.Subset:
    eps = tuple(ir.Endpoint(*parse_endpoint(e.value)) for e in endpoints)
    discovery = "static" if all(is_ip(e.host) for e in eps) else "dns"
    return ir.Subset(name, discovery, eps, span_location(node))


def lower_sidecar(svc: ast.Service) -> ir.Sidecar:
    v = _values(svc.sidecar)
    host, port = defaults.APP_HOST, svc.port.value
    if "app" in v:
        host, port = parse_endpoint(v["app"][0])
    return ir.Sidecar(v.get("inbound", (defaults.SIDECAR_INBOUND_PORT,))[0],
                      v.get("outbound", (defaults.SIDECAR_OUTBOUND_PORT,))[0],
                      v.get("admin", (defaults.SIDECAR_ADMIN_PORT,))[0], host, port,
                      v.get("escaped_slashes", (defaults.ESCAPED_SLASHES,))[0], True, True)


def lower_mtls(ctx: Context, svc: ast.Service) -> ir.Mtls:
    root = ctx.mesh_setting("certificates", defaults.CERTIFICATES).rstrip("/") or ""
    return ir.Mtls(ctx.mtls_mode(svc), f"{root}/{svc.name.value}")


def lower_service(ctx: Context, svc: ast.Service) -> ir.Service:
    subsets = []
    if svc.endpoints is not None:
        subsets.append(lower_subset(defaults.IMPLICIT_SUBSET, svc.endpoints, svc))
    subsets += [lower_subset(s.name.value, s.endpoints or (), s) for s in svc.subsets]
    routes_block = ctx.routes.get(svc.name.value)
    if routes_block is not None:
        routes = tuple(lower_route(ctx, r) for r in routes_block.routes)
    else:
        routes = (implicit_route(svc),)
    return ir.Service(svc.name.value, service_namespace(svc), service_identity(ctx, svc), svc.port.value,
                      span_location(svc), tuple(subsets),
                      lower_limits(resolve_block(ctx, svc.limits, "limits")),
                      lower_outlier(resolve_block(ctx, svc.outlier, "outlier")),
                      lower_budget(resolve_block(ctx, svc.retry_budget, "retry_budget")),
                      lower_sidecar(svc), routes, lower_authorization(ctx, svc), lower_mtls(ctx, svc))


def lower_program(ctx: Context) -> ir.Program:
    services = tuple(lower_service(ctx, svc) for _, svc in sorted(ctx.local_services(), key=lambda kv: kv[0]))
    return ir.Program(ir.SCHEMA_VERSION, ctx.trust_domain, services)
