"""Policy tests (`test` blocks) name what exists: the caller, the destination of the URL, the
routes, subsets and authorization rules they expect, and a request both targets can take
(E0801-E0814, W0801). The compiled policy
ignores tests; `meshc test` runs them (compiler/verify)."""

from __future__ import annotations

import re

from compiler.core.diagnostics import did_you_mean
from compiler.semantic.checks.names import check_destination
from compiler.semantic.conditions import expand_rules, service_domains, service_namespace
from compiler.semantic.symbols import Context
from compiler.syntax import ast

# http://HOST[:PORT][/PATH][?QUERY]: the authority a caller's application sends as Host
URL = re.compile(r"http://([A-Za-z0-9_.-]+)(?::([0-9]{1,5}))?(/[^#\s]*|\?[^#\s]*)?\Z")
METHOD = re.compile(r"[A-Z]+\Z")
# expectations that only a request through a caller's sidecar (`from service`) can have
OUTBOUND_ONLY = ("route", "to", "to_any", "path", "request_header", "response_header", "timeout", "retries", "mirror")
# Request headers the sidecars write, strip or rewrite themselves (the trace and forwarding headers,
# Envoy's own, the hop-by-hop and framing ones): `meshc test` does not compare them (the set
# envoy_eval.decisions.ignored_request_header leaves out of every Decision; a test holds both equal)
SIDECAR_REQUEST_EXACT = frozenset({"host", "x-request-id", "traceparent", "tracestate", "content-length",
                                   "connection", "keep-alive", "proxy-connection", "te", "trailer",
                                   "transfer-encoding", "upgrade"})
SIDECAR_REQUEST_PREFIXES = ("x-envoy-", "x-forwarded-")
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")     # an HTTP header name (RFC 9110 token)
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")          # control characters but tab


def sidecar_request_header(name: str) -> bool:
    """A request header a sidecar writes, strips or rewrites itself (not compared by `meshc test`)."""
    n = name.lower()
    return n in SIDECAR_REQUEST_EXACT or n.startswith(SIDECAR_REQUEST_PREFIXES)


def url_authority(url: str) -> str | None:
    """The authority of a test's URL (`HOST[:PORT]`, its Host header); None when the URL is not
    http://HOST…"""
    m = URL.match(url)
    if m is None:
        return None
    return m.group(1) + (f":{m.group(2)}" if m.group(2) else "")


def destination_name(ctx: Context, authority: str, caller_namespace: str | None = None) -> str | None:
    """The service whose Host domains hold the URL's authority, as the sidecars of a caller in
    `caller_namespace` look it up (compiler/ir/names.py `service_for_host` and `seen_from`, the
    lookup of `meshc test` and `meshc trace`)."""
    from compiler.ir.names import seen_from, service_for_host  # a program with tests only

    return service_for_host(((name, seen_from(name, service_namespace(svc), service_domains(ctx, svc),
                                              caller_namespace))
                             for name, svc in ctx.services.items() if svc.port is not None), authority)


def rule_names(ctx: Context, authz: ast.Authorization) -> list[str]:
    """The names of a service's authorization rules as the targets carry them (`use` sets expanded)."""
    return [name for _, name, _ in expand_rules(ctx, authz)]


def _sent_to(ctx: Context, dest: str) -> set[str]:
    """The services the routes of `dest` send requests to (their sidecars decide those requests)."""
    out = set()
    block = ctx.routes.get(dest)
    for route in block.routes if block is not None else ():
        if route.to is not None:
            out.add(route.to.scope or route.to.name)
        if route.split is not None:
            out.update(e.target.scope or e.target.name for e in route.split.entries)
    return out


def check_tests(ctx: Context) -> None:
    seen: dict[str, ast.Test] = {}
    for test in ctx.tests:
        name = test.name.value
        if name in seen:
            ctx.diags.add("E0802", f"two tests are named `{name}`", test.name.span,
                          hint="test names are program-wide: a failure names its test, so give each its own name")
        else:
            seen[name] = test
        _check_test(ctx, test)


def _check_test(ctx: Context, test: ast.Test) -> None:
    req = test.request
    if req is None or req.method is None or req.url is None or not req.caller_kind:
        missing = ("has no `request { … }` block" if req is None else
                   "names no caller (`from service NAME`, `from identity \"…\"` or `from unauthenticated`)"
                   if not req.caller_kind else "has no request line, such as `GET \"http://SERVICE/PATH\"`")
        ctx.diags.add("E0801", f"test `{test.name.value}` {missing}", test.name.span,
                      hint='write `request { from service CALLER  GET "http://SERVICE/PATH" }`')
        return
    if not test.expect:
        ctx.diags.add("W0801", f"test `{test.name.value}` expects nothing", test.name.span,
                      hint="add `expect { status 200 }` or what the request should meet; without an "
                           "expectation the test passes whenever both targets agree")
    if req.caller_kind == "service" and req.caller is not None and req.caller.value not in ctx.services:
        ctx.diags.add("E0803", f"unknown caller `{req.caller.value}` in test `{test.name.value}`", req.caller.span,
                      hint=did_you_mean(req.caller.value, ctx.services))
    if req.caller_kind == "identity" and req.caller is not None and not req.caller.value.startswith("spiffe://"):
        ctx.diags.add("E0804", f"`{req.caller.value}` is not a SPIFFE ID", req.caller.span,
                      hint='write `from identity "spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT"`')
    if METHOD.match(req.method.value) is None:
        ctx.diags.add("E0805", f"`{req.method.value}` is not a request method", req.method.span,
                      hint="methods are upper case: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS")
    _check_sendable(ctx, req)
    authority = url_authority(req.url.value)
    dest = None
    if authority is None:
        ctx.diags.add("E0806", f"`{req.url.value}` is not an http:// URL", req.url.span,
                      hint='write `"http://SERVICE/PATH"` (a port and a query may follow: `"http://svc:8080/a?b=1"`)')
    else:
        caller = ctx.services.get(req.caller.value) if req.caller_kind == "service" and req.caller else None
        dest = destination_name(ctx, authority, service_namespace(caller) if caller is not None else None)
        if dest is None:
            first = authority.split(":")[0].split(".")[0]
            svc = ctx.services.get(first)
            # a name several namespaces declare (keys NAMESPACE/NAME): a Host names one by NAME.NAMESPACE
            from compiler.ir.names import host_of

            twins = [k for k in ctx.services if "/" in k and k.rpartition("/")[2] == first]
            ctx.diags.add("E0807", f"no service answers to `{authority}`", req.url.span,
                          hint=f"`{first}` answers to {_domains_text(ctx, svc)}" if svc is not None and
                          svc.port is not None else
                          "a caller outside their namespaces names them by their namespace: "
                          + " or ".join(f"`{host_of(k)}`" for k in twins) if twins else
                          did_you_mean(first, [k for k in ctx.services if "/" not in k])
                          or "a service answers to NAME, NAME.NAMESPACE, NAME.NAMESPACE.svc[.CLUSTER_DOMAIN] "
                          "and its `hosts`, with or without :PORT")
    svc = ctx.services.get(dest) if dest is not None else None
    for ex in test.expect:
        if req.caller_kind != "service" and ex.kind in OUTBOUND_ONLY:
            ctx.diags.add("E0808", f"`{ex.kind.replace('_any', '')}` needs a caller with a sidecar", ex.span,
                          hint="only `from service NAME` sends the request through a sidecar's routes; "
                               "a caller outside the mesh reaches the destination's authorization alone")
            continue
        _check_expectation(ctx, ex, dest if svc is not None else None)


def _check_sendable(ctx: Context, req: ast.TestRequest) -> None:
    """A request both targets can take as written (E0814): header names that are tokens, values
    of latin-1 without control characters, an ASCII identity, no protocol switch."""
    if req.caller_kind == "identity" and req.caller is not None and (
            not req.caller.value.isascii() or CONTROL.search(req.caller.value) or " " in req.caller.value):
        ctx.diags.add("E0814", f"the identity `{req.caller.value}` has a character a certificate's URI cannot carry",
                      req.caller.span, hint="a SPIFFE ID is ASCII without spaces or control characters "
                                            "(percent-encode anything else)")
    if req.method is not None and req.method.value == "CONNECT":
        ctx.diags.add("E0814", "a test cannot send `CONNECT`", req.method.span,
                      hint="CONNECT opens a tunnel rather than sending a request: the sidecars route and authorize "
                           "HTTP requests; test another method")
    for h in req.headers:
        name, value = h.name.value, h.value.value
        if TOKEN.match(name) is None:
            ctx.diags.add("E0814", f"`{name}` is not a header name" if name else "a header without a name", h.name.span,
                          hint="a header name is a token: letters, digits and !#$%&'*+.^_`|~- , no spaces")
        elif name.lower() == "host":
            ctx.diags.add("E0814", "a test's `host` header would contradict its URL", h.name.span,
                          hint="the URL's host (and port) is the `Host` header: write the host in the URL")
        elif name.lower() == "upgrade":
            ctx.diags.add("E0814", "a test cannot send `upgrade`", h.name.span,
                          hint="an `upgrade` header asks to switch protocols; the sidecars route and authorize "
                               "HTTP requests: leave it out")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            ctx.diags.add("E0814", f"the value of header `{name}` has a character outside latin-1", h.value.span,
                          hint="HTTP header values are bytes: write them in latin-1 (ASCII, or percent-encode)")
            continue
        if CONTROL.search(value):
            ctx.diags.add("E0814", f"the value of header `{name}` has a control character", h.value.span,
                          hint="a header value cannot hold a line end or another control character (a tab may)")


def _domains_text(ctx: Context, svc: ast.Service) -> str:
    return ", ".join(f"`{d}`" for d in service_domains(ctx, svc)) + \
        " (ASCII case-insensitive), as its callers' sidecars look the Host up"


def _check_expectation(ctx: Context, ex: ast.Expectation, dest: str | None) -> None:
    kind = ex.kind
    if kind == "request_header" and sidecar_request_header(ex.values[0].value):
        name = ex.values[0].value.lower()
        ctx.diags.add("E0813", f"`{name}` is the sidecars' own header: `meshc test` does not compare it",
                      ex.values[0].span,
                      hint="the sidecars write, strip or rewrite the trace, forwarding, `x-envoy-` and hop-by-hop "
                           "headers themselves; expect a header the route sets or the caller sends")
        return
    if kind == "status":
        code = ex.values[0]
        if not (100 <= code.value <= 599 or code.value == 0):
            ctx.diags.add("E0809", f"`{code.value}` is not an HTTP status", code.span,
                          hint="statuses are 100 to 599 (403 denied, 404 no route, 503 no endpoint, a fault's "
                               "abort), or 0: the destination refused the connection")
    elif kind == "route":
        ref: ast.Ref = ex.values[0]
        service = ref.scope or dest
        block = ctx.routes.get(service) if service else None
        if service and dest and service != dest:
            ctx.diags.add("E0810", f"route `{ref}` belongs to `{service}`, but the request goes to `{dest}`",
                          ref.span, hint=f"name a route of `routes {dest}`")
        elif block is None:
            if service in ctx.services and ref.name == "default":
                pass    # the implicit route of a service without a routes block
            elif service and ("routes", service) not in ctx.broken:
                ctx.diags.add("E0810", f"service `{service}` has no routes block", ref.span,
                              hint=did_you_mean(service, ctx.routes)
                              or f"its one route is the implicit `{service}.default`")
        else:
            names = [r.name.value for r in block.routes]
            if ref.name not in names:
                ctx.diags.add("E0810", f"`routes {service}` has no route `{ref.name}`", ref.span,
                              hint=did_you_mean(ref.name, names) or "routes: " + ", ".join(f"`{n}`" for n in names))
    elif kind in ("to", "to_any"):
        for ref in ex.values:
            check_destination(ctx, ref, "a test's expectation")
    elif kind == "mirror" and ex.values:
        check_destination(ctx, ex.values[0], "a test's expectation")
    elif kind in ("denied_by", "allowed_by"):
        lit: ast.Lit[str] = ex.values[0]
        service, _, rule = lit.value.partition(".")
        authz = ctx.authorizations.get(service)
        if not rule:
            ctx.diags.add("E0811", f"`{lit.value}` names no rule", lit.span,
                          hint=f"write `{kind} authorization SERVICE.RULE` (or `SERVICE.default`)")
        elif authz is None:
            if ("authorization", service) not in ctx.broken:
                ctx.diags.add("E0811", f"service `{service}` has no authorization block", lit.span,
                              hint=did_you_mean(service, ctx.authorizations)
                              or "without one, every request is allowed and no rule decides")
        elif rule != "default":
            names = rule_names(ctx, authz)
            if rule not in names:
                ctx.diags.add("E0811", f"authorization `{service}` has no rule `{rule}`", lit.span,
                              hint=did_you_mean(rule, names + ["default"])
                              or "rules: " + ", ".join(f"`{n}`" for n in names + ["default"]))
        if dest is not None and service != dest and authz is not None and service not in _sent_to(ctx, dest):
            ctx.diags.add("E0812", f"`{lit.value}` is a rule of `{service}`, but the request goes to `{dest}`",
                          lit.span, hint=f"the destination's own rules decide: name one of `authorization {dest}`")
