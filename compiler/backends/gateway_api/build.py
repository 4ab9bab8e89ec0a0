"""The HTTPRoutes of a program (Gateway API v1.6.1, GAMMA: routes attached to a Service).

One HTTPRoute per service with routes, named after the service, in its namespace, whose
`parentRefs` is the Service (group "", kind Service, the service's port): it configures every
caller's sidecar for requests to that Service. A destination subset is a Service of its own,
`SERVICE-SUBSET` (the GAMMA way to address a version: one Service per version's pods), the
service's implicit `default` subset the Service itself. Each meshc route becomes one rule, each
of its matches one HTTPRouteMatch per method. docs/kubernetes.gateway-api.md lists every
construct, the field it becomes and the diagnostic where it is not exact.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

from compiler import ir
from compiler.backends.gateway_api import order
from compiler.backends.kube import KubeObject, check_dns_label
from compiler.backends.located import located
from compiler.core.diagnostics import Diagnostic
from compiler.ir import scope
from compiler.ir.names import short_name, written_hosts

GROUP = "gateway.networking.k8s.io"
API_VERSION = f"{GROUP}/v1"
# ReferenceGrant's `v1` is served from Gateway API v1.5 on; `v1beta1` (its storage version, not
# deprecated in v1.6.1) by every release since v0.6, as HTTPRoute's `v1` is since v1.0
GRANT_API_VERSION = f"{GROUP}/v1beta1"
KINDS = ("HTTPRoute", "ReferenceGrant")
GRANT_MAX = 16   # a ReferenceGrant's `to` (maxItems)
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
MAX_WEIGHT = 1_000_000
IMPLICIT_SUBSET = "default"
# Status codes Gateway API's retry carries for meshc's conditions (HTTPRouteRetry `codes`, 400-599)
STATUS_CODES = {"5xx": tuple(range(500, 600)), "gateway-error": (502, 503, 504), "retriable-4xx": (409,)}
# What each condition retries besides a status code (compiler/language/retry.py)
NON_STATUS = {"5xx": ("resets", "connect failures", "per-try timeouts"),
              "gateway-error": ("resets", "connect failures", "per-try timeouts"),
              "reset": ("resets", "connect failures"), "connect-failure": ("connect failures",),
              "refused-stream": ("refused streams",)}

ORDER, STANDARD_RETRY, FAULT, PATH, CONDITION, WEIGHT, VALUE, TOO_MANY, TWICE = (
    "E0943", "E0944", "E0945", "E0946", "E0947", "E0948", "E0950", "E0952", "E0953")
CORS = "E0959"   # a route's `cors` the CORS filter cannot say (HTTPCORSFilter, v1.6.1; language §13a)
CORS_APPROX = "W0952"   # a route's `cors` written as the CORS filter: what Gateway API leaves to the implementation
# HTTPCORSFilter (CRD v1.6.1): an origin `scheme://host[:port]` (a `*` in the host is a wildcard), at
# most 64 origins and headers, the methods of HTTPMethodWithWildcard
_CORS_ORIGIN = re.compile(r"(http|https)://([a-z0-9-]+\.)*[a-z0-9-]+(:[0-9]{1,5})?\Z")
CORS_METHODS = METHODS
CORS_MAX_ITEMS = 64
MAX_RULES = 16   # an HTTPRoute's `rules` (maxItems)
# HTTPHeader and HTTPHeaderMatch values (Gateway API v1.6.1): printable ASCII, single spaces or tabs
# between words, at least one character, at most 4096
_HEADER_VALUE = re.compile(r"[!-~]+([\t ]?[!-~]+)*\Z")
RETRY_APPROX, BACKOFF, DEFAULT_RETRIES, SPLIT_KEY, REGEX, AUTHZ, POLICIES, NO_STATUS_RETRY = (
    "W0940", "W0941", "W0942", "W0943", "W0944", "W0945", "W0946", "W0947")
DIRECT, PATH_CHANGE, STRIP_QUERY, ONE_PREFIX = "E0954", "E0955", "E0956", "E0957"
REDIRECT_PORT, FILTER_ORDER, MIRROR_DRAW = "W0948", "W0949", "W0950"


def duration(ms: int) -> str:
    """Gateway API's Duration (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`): `2s`, `1500ms`, `100s500ms`."""
    if ms == 0:
        return "0s"
    seconds, rest = divmod(ms, 1000)
    if rest == 0:
        return f"{seconds}s" if seconds <= 99999 else f"{seconds // 3600}h{seconds % 3600}s"
    if ms <= 99999:
        return f"{ms}ms"
    return f"{seconds}s{rest}ms"


def backend_service(service: ir.Service, subset: str) -> str:
    name = short_name(service.name)   # (the Kubernetes Service of its own namespace)
    return name if subset == IMPLICIT_SUBSET else f"{name}-{subset}"


def reference_grants(grants: dict[tuple[str, str], tuple[dict[str, None], str]],
                     services: dict[str, ir.Service]) -> list[KubeObject]:
    """The ReferenceGrants that let the HTTPRoutes of one namespace send to (and mirror to) the
    Services of another: one per meshc service referred to and per referring namespace, in the
    service's namespace and file, named `SERVICE.from.NAMESPACE` (dots, which neither a service's
    name nor a namespace has: no two grants can share a name), naming exactly the Services the
    routes refer to (the service's own, `SERVICE-SUBSET`), at most GRANT_MAX each (`.2`, ... after)."""
    out: list[KubeObject] = []
    for (service, source_ns), (names, source) in sorted(grants.items()):
        target = services[service]
        listed = sorted(names)
        for i in range(0, len(listed), GRANT_MAX):
            suffix = f".{i // GRANT_MAX + 1}" if i else ""
            spec = {"from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": source_ns}],
                    "to": [{"group": "", "kind": "Service", "name": n} for n in listed[i:i + GRANT_MAX]]}
            name = f"{short_name(service)}.from.{source_ns}{suffix}"
            out.append(KubeObject(GRANT_API_VERSION, "ReferenceGrant", name, target.namespace, {"spec": spec},
                                  source=source, service=service))
    return out


class GatewayApiTarget:
    name: str = "gateway-api"
    kinds: tuple[str, ...] = KINDS

    def __init__(self, channel: str = "standard"):
        self.channel = channel

    def build(self, program: ir.Program, sources: dict) -> tuple[list[KubeObject], list[Diagnostic]]:
        diags: list[Diagnostic] = []
        objects: list[KubeObject] = []
        services = {s.name: s for s in program.services}
        # (the Service's meshc service, the referring HTTPRoute's namespace) -> its Services referred to,
        # and where the first reference was written
        grants: dict[tuple[str, str], tuple[dict[str, None], str]] = {}
        for svc in program.services:
            diags += _service_policies(svc, sources)
            hosts = written_hosts(svc.domains, svc.port)
            if hosts:
                diags.append(located("W0951", f"the hosts {', '.join(f'`{h}`' for h in hosts)} of `{svc.name}` are "
                                     "not carried: a mesh HTTPRoute (parentRef the Service) takes the Service's "
                                     "own traffic, and GAMMA implementations ignore `hostnames`", svc.source, sources,
                                     hint="route these names to the Service with DNS (a CNAME, an ExternalName "
                                          "Service) or at a Gateway; meshc's sidecars route them themselves"))
            svc = _every_caller(svc, sources, diags)
            if not svc.routes:
                continue
            if len(svc.routes) > MAX_RULES:
                extra = svc.routes[MAX_RULES]
                diags.append(located(TOO_MANY, f"`{svc.name}` has {len(svc.routes)} routes, and an HTTPRoute has at "
                                     f"most {MAX_RULES} rules", extra.source, sources,
                                     hint="several HTTPRoutes of one Service are ordered by creation time, not as "
                                          "written: merge routes that share a destination and policy"))
                continue
            rules, rule_matches = [], []
            wanted: dict[tuple[str, str], tuple[dict[str, None], str]] = {}
            for route in svc.routes:
                rule, found = self._rule(route, svc, services, sources, wanted)
                diags += found
                rules.append(rule)
                rule_matches.append(rule["matches"])
            safe, conflicts = order.plan(rule_matches)
            written: list[dict[str, Any]] = []
            counts: list[int] = []
            rule_sources: list[str] = []   # each written rule's route (one route may be several rules)
            for rule, matches, route in zip(rules, safe, svc.routes):
                rule["matches"] = matches
                pieces, found = _one_rule_per_match(rule, route, sources)
                diags += found
                written += pieces
                rule_sources += [str(route.source)] * len(pieces)
                counts.append(len(pieces))
            for rule, name in zip(written, rule_names([r.name for r in svc.routes], counts)):
                if name is not None:
                    rule["name"] = name
            rules = written
            diags += _order(svc, conflicts, sources)
            if len(rules) > MAX_RULES:
                diags.append(located(TOO_MANY, f"`{svc.name}` takes {len(rules)} HTTPRoute rules (one per match of "
                                     "a route that replaces its path prefix), and an HTTPRoute has at most "
                                     f"{MAX_RULES}", svc.routes[0].source, sources,
                                     hint="merge routes that share a destination and policy, or give a prefix "
                                          "replacement fewer matches (methods count one each)"))
                continue
            forwarding = [r for r in svc.routes if r.redirect is None and r.direct_response is None]
            if any(r.retry is None for r in forwarding):
                first = next(r for r in forwarding if r.retry is None)
                diags.append(located(DEFAULT_RETRIES, f"route `{first.name}` of `{svc.name}` makes no retries, which "
                                     "an HTTPRoute cannot say: the implementation's default retries apply",
                                     first.source, sources,
                                     hint="Gateway API's `retry.attempts` is at least 1 and its absence leaves the "
                                          "choice to the implementation (Istio retries twice on connect failures "
                                          "and 503)"))
            spec = {"parentRefs": [{"group": "", "kind": "Service", "name": short_name(svc.name), "port": svc.port}],
                    "rules": rules}
            objects.append(KubeObject(API_VERSION, "HTTPRoute", short_name(svc.name), svc.namespace, {"spec": spec},
                                      source=str(svc.routes[0].source), service=svc.name,
                                      parts=("spec.rules", tuple(rule_sources))))
            for key, (names, source) in wanted.items():
                grants.setdefault(key, ({}, source))[0].update(names)
        objects += reference_grants(grants, services)
        return objects, diags

    # ---- one route

    def _rule(self, route: ir.Route, svc: ir.Service, services: dict[str, ir.Service],
              sources: dict, grants: dict) -> tuple[dict[str, Any], list[Diagnostic]]:
        diags: list[Diagnostic] = []
        where = route.source
        rule: dict[str, Any] = {}
        matches: list[dict[str, Any]] = []
        for m in route.matches:
            matches += _matches(m, route, sources, diags)
        rule["matches"] = matches
        refs: list[dict[str, Any]] = []
        if route.to is not None:
            refs.append(self._ref(route.to.service, route.to.subset, None, svc, services, route, sources, diags,
                                  grants))
        elif route.split is not None:
            for t in route.split.targets:
                ref = self._ref(t.service, t.subset, t.weight, svc, services, route, sources, diags, grants)
                own = _destination_filters(t, route, sources, diags)
                if own:
                    ref["filters"] = own
                refs.append(ref)
            if route.split.key_header is not None:
                diags.append(located(SPLIT_KEY, f"route `{route.name}` splits by header "
                                     f"`{route.split.key_header}`, which Gateway API cannot carry: each request "
                                     "is assigned by weight at random", where, sources,
                                     hint="a user may see both versions; pin users with header matches instead"))
        filters: list[dict[str, Any]] = []
        if route.redirect is not None:
            # RequestRedirect "must not be used together with backendRefs": the rule has none
            filters.append({"type": "RequestRedirect", "requestRedirect": _redirect(route, sources, diags)})
        elif route.direct_response is not None:
            diags.append(located(DIRECT, f"route `{route.name}` answers `{route.direct_response.status}` itself, "
                                 "which an HTTPRoute cannot say", where, sources,
                                 hint="Gateway API has no direct response; use `--target istio` "
                                      "(VirtualService `directResponse`) or send the route to a service"))
        else:
            rule["backendRefs"] = refs
        if route.rewrite is not None:
            rewrite = _rewrite(route, sources, diags)
            if rewrite:
                filters.append({"type": "URLRewrite", "urlRewrite": rewrite})
        for key, changes in (("requestHeaderModifier", route.request_headers),
                             ("responseHeaderModifier", route.response_headers)):
            modifier = _header_modifier(changes, route, sources, diags)
            if modifier:
                filters.append({"type": key[0].upper() + key[1:], key: modifier})
        if len(route.mirrors) > 1 and any(m.percent < 100 for m in route.mirrors):
            diags.append(located(MIRROR_DRAW, f"route `{route.name}` mirrors shares of its requests to several "
                                 "destinations, and Gateway API does not say whether one draw decides them all",
                                 where, sources,
                                 hint="meshc (and Envoy, so Istio) copy a request to every mirror whose share the "
                                      "request's one draw falls within; an implementation may draw per mirror"))
        for each in route.mirrors:   # one RequestMirror filter per mirror, in written order
            mirror = {"backendRef": self._ref(each.service, each.subset, None, svc, services, route,
                                              sources, diags, grants)}
            if each.percent < 100:
                mirror.update(_fraction(each.percent))
            filters.append({"type": "RequestMirror", "requestMirror": mirror})
        if filters:
            rule["filters"] = filters
        if route.redirect is None and route.direct_response is None:   # (a route that answers itself has none)
            timeouts = {"request": duration(route.timeout_ms)}
            if route.retry is not None:
                rule.update(self._retry(route, sources, diags, timeouts))
            rule["timeouts"] = timeouts
        if route.fault is not None:
            diags.append(located(FAULT, f"route `{route.name}` injects faults, which an HTTPRoute cannot carry",
                                 where, sources, hint="Gateway API has no fault injection; use `--target istio` "
                                                      "(VirtualService `fault`) or remove the fault"))
        if route.cors is not None:
            cors = _cors(route, sources, diags)
            if cors is not None:
                rule["filters"] = [{"type": "CORS", "cors": cors}, *rule.get("filters", ())]
        return rule, diags

    def _ref(self, service: str, subset: str, weight: int | None, owner: ir.Service,
             services: dict[str, ir.Service], route: ir.Route, sources: dict,
             diags: list[Diagnostic], grants: dict) -> dict[str, Any]:
        """A backendRef; one to another namespace's Service is noted in `grants` (reference_grants)."""
        target = services[service]
        name = backend_service(target, subset)
        if subset != IMPLICIT_SUBSET:
            diags += check_dns_label(name, "the Service of a subset", route.source, sources, rfc1035=True)
        ref: dict[str, Any] = {"group": "", "kind": "Service", "name": name, "port": target.port}
        if target.namespace != owner.namespace:
            ref["namespace"] = target.namespace
            grants.setdefault((service, owner.namespace), ({}, str(route.source)))[0][name] = None
        if weight is not None:
            if weight > MAX_WEIGHT:
                diags.append(located(WEIGHT, f"split weight {weight} of route `{route.name}` is above "
                                     f"{MAX_WEIGHT:,}, Gateway API's largest weight", route.source, sources,
                                     hint="scale the weights down in the same proportions"))
            ref["weight"] = weight
        return ref

    def _retry(self, route: ir.Route, sources: dict, diags: list[Diagnostic],
               timeouts: dict[str, str]) -> dict[str, Any]:
        retry = route.retry
        assert retry is not None
        where = route.source
        if self.channel != "experimental":
            diags.append(located(STANDARD_RETRY, f"route `{route.name}` retries, and the standard channel's "
                                 "HTTPRoute has no `retry`", where, sources,
                                 hint="compile with `--channel experimental` (HTTPRoute `retry` is experimental in "
                                      "Gateway API v1.6.1)"))
            return {}
        codes = set(retry.retriable_status_codes)
        for cond in retry.retry_on:
            codes.update(STATUS_CODES.get(cond, ()))
        others = sorted({what for c in retry.retry_on for what in NON_STATUS.get(c, ())})
        if not codes:
            diags.append(located(NO_STATUS_RETRY, f"route `{route.name}` retries only on {', '.join(others)}, and "
                                 "Gateway API retries on status codes only: no retry is written, the "
                                 "implementation's default applies", where, sources,
                                 hint="Gateway API's HTTPRouteRetry has `codes`, no connection conditions (Istio "
                                      "retries connect failures and refused streams by default)"))
            return {}
        if others:
            diags.append(located(RETRY_APPROX, f"route `{route.name}` also retries on {', '.join(others)}, which "
                                 "Gateway API leaves to the implementation: only the status codes are written",
                                 where, sources))
        # every backoff: Gateway API's is only the minimum wait, whatever the maximum
        maximum = "" if retry.backoff_max_ms == 10 * retry.backoff_base_ms else \
            f" (its maximum, {duration(retry.backoff_max_ms)}, is not carried)"
        diags.append(located(BACKOFF, f"route `{route.name}`'s backoff {duration(retry.backoff_base_ms)} is "
                             f"written as Gateway API's `backoff`, the minimum wait between attempts: the growth "
                             f"and the maximum are the implementation's{maximum}", where, sources))
        out: dict[str, Any] = {"attempts": retry.num_retries, "codes": sorted(codes),
                               "backoff": duration(retry.backoff_base_ms)}
        if retry.per_try_timeout_ms:
            timeouts["backendRequest"] = duration(retry.per_try_timeout_ms)
        return {"retry": out}


def _path_modifier(p: ir.PathRewrite, route: ir.Route, what: str, sources: dict,
                   diags: list[Diagnostic]) -> dict[str, Any] | None:
    """HTTPPathModifier: ReplaceFullPath, or ReplacePrefixMatch (which replaces the matched PathPrefix
    segment by segment, `/` included, as meshc's segment prefix does). A regex, or the prefix of a
    plain-prefix or case-insensitive match, has no form (E0955)."""
    if p.kind == "path":
        return {"type": "ReplaceFullPath", "replaceFullPath": p.substitution}
    if p.kind == "prefix" and (p.segment or p.pattern == "/") and not p.ignore_case:
        if p.substitution != "/" and p.substitution.endswith("/"):
            # Gateway API joins the replacement and the rest with one `/` (v1.6.1's table: `/foo/bar`,
            # prefix `/foo`, `/xyz/` -> `/xyz/bar`), meshc appends the rest as it is (`/xyz//bar`, W0420)
            diags.append(located(ONE_PREFIX, f"route `{route.name}`'s {what} replaces prefix `{p.pattern}` with "
                                 f"`{p.substitution}`, which ends in `/`: meshc makes `{p.pattern}/x` "
                                 f"`{p.substitution}/x`, and Gateway API's ReplacePrefixMatch `{p.substitution}x`",
                                 route.source, sources,
                                 hint=f"write `prefix \"{p.substitution.rstrip('/')}\"` (the same path under both)"))
            return None
        return {"type": "ReplacePrefixMatch", "replacePrefixMatch": p.substitution}
    why = "by a regex" if p.kind == "regex" else "of a plain or case-insensitive prefix"
    diags.append(located(PATH_CHANGE, f"route `{route.name}`'s {what} replaces the path {why}, which Gateway "
                         "API cannot say", route.source, sources,
                         hint="an HTTPPathModifier replaces the whole path or a PathPrefix match (whole "
                              "segments); use `--target envoy` for a regex"))
    return None


def _redirect(route: ir.Route, sources: dict, diags: list[Diagnostic]) -> dict[str, Any]:
    """HTTPRequestRedirectFilter: scheme, hostname, port, path, statusCode (301-308)."""
    r = route.redirect
    assert r is not None
    out: dict[str, Any] = {}
    if r.scheme:
        out["scheme"] = r.scheme
    if r.host:
        out["hostname"] = r.host
    if r.path is not None:
        path = _path_modifier(r.path, route, "redirect", sources, diags)
        if path is not None:
            out["path"] = path
    if r.port:
        out["port"] = r.port
    else:
        diags.append(located(REDIRECT_PORT, f"route `{route.name}` redirects keeping the request's port, and "
                             "Gateway API derives the Location's port itself", route.source, sources,
                             hint="without `port`, Gateway API uses the scheme's well-known port (with `scheme`) "
                                  "or the listener's, the Service port, where meshc keeps the Host's own; write "
                                  "`port` to make the two agree"))
    out["statusCode"] = r.status
    if r.strip_query:
        diags.append(located(STRIP_QUERY, f"route `{route.name}` redirects without the query, which an "
                             "HTTPRoute cannot say", route.source, sources,
                             hint="HTTPRequestRedirectFilter has no field for the query"))
    return out


def _rewrite(route: ir.Route, sources: dict, diags: list[Diagnostic]) -> dict[str, Any]:
    """HTTPURLRewriteFilter: hostname (a host without a port), path."""
    rw = route.rewrite
    assert rw is not None
    out: dict[str, Any] = {}
    if rw.host:
        if ":" in rw.host:
            diags.append(located(PATH_CHANGE, f"route `{route.name}` rewrites the Host to `{rw.host}`, with a "
                                 "port, which an HTTPRoute cannot say", route.source, sources,
                                 hint="URLRewrite's `hostname` is a host name without a port"))
        else:
            out["hostname"] = rw.host
    if rw.path is not None:
        path = _path_modifier(rw.path, route, "rewrite", sources, diags)
        if path is not None:
            out["path"] = path
    return out


def _cors(route: ir.Route, sources: dict, diags: list[Diagnostic]) -> dict[str, Any] | None:
    """The HTTPCORSFilter of a route's `cors` (docs/language.md §13a), where it says what meshc's
    sidecar answers, with W0952 for what Gateway API leaves to the implementation; else E0959 with
    the reason, and None."""
    c = route.cors
    assert c is not None
    why = None
    default_port = {"http": ":80", "https": ":443"}
    for o in c.origins:
        if o.test != "exact":
            why = (f"its origin `{o.test} \"{o.value}\"` is not an exact origin: the CORS filter's origins are "
                   "`scheme://host[:port]` with `*` wildcards in the host, no prefix or regex")
        elif o.value == "*":
            why = ("it allows every origin (`exact \"*\"`), which Gateway API may answer with "
                   "`access-control-allow-origin: *` where meshc echoes the caller's origin")
        elif len(o.value) > 253 or not _CORS_ORIGIN.match(o.value):
            why = (f"its origin `{o.value}` is not one the CORS filter compares as written: an origin there is "
                   "`http(s)://host[:port]` of lower-case DNS labels (a `*` is a wildcard, an IP literal in "
                   "brackets is refused), at most 253 characters")
        elif o.value.endswith(default_port[o.value.split(":", 1)[0]]):
            why = (f"its origin `{o.value}` writes the scheme's default port, and Gateway API assumes that port "
                   "for an origin without one: it would allow the origin without the port too")
        if why:
            break
    if why is None:
        if c.max_age_s is None:
            why = ("it writes no `max_age`, and the CORS filter then sends `Access-Control-Max-Age: 5` "
                   "(meshc sends none)")
        elif "*" in c.headers:
            why = ("it allows `headers [\"*\"]`, which meshc answers with the preflight's own "
                   "`Access-Control-Request-Headers` (empty when there is none), and Gateway API with `*`, the "
                   "request's headers, or no header")
        elif "*" in c.expose:
            why = "it exposes `*`, which Gateway API may not send (with credentials it must not)"
        elif any(m not in CORS_METHODS for m in c.methods):
            bad = next(m for m in c.methods if m not in CORS_METHODS)
            why = f"it allows method `{bad}`, which the CORS filter's `allowMethods` does not list"
        elif max(len(c.origins), len(set(c.headers)), len(set(c.expose))) > CORS_MAX_ITEMS:
            why = f"it lists more than {CORS_MAX_ITEMS} origins or headers, the CORS filter's most"
        elif any(len(h) > 256 for h in (*c.headers, *c.expose)):
            why = "it names a header longer than 256 characters, the CORS filter's longest"
    if why is None:
        changed = _names(route.response_headers)
        if route.split is not None:
            for t in route.split.targets:
                changed |= _names(t.response_headers)
        written = sorted(n for n in changed if n.lower().startswith("access-control-"))
        if written:
            why = (f"the route also changes `{written[0]}`, which the CORS filter writes too, and Gateway API "
                   "does not order the two (meshc writes the CORS headers last)")
    if why is not None:
        diags.append(located(CORS, f"route `{route.name}`'s `cors` cannot be written as Gateway API's CORS filter: "
                             f"{why}", route.source, sources,
                             hint="the CORS filter takes exact origins (`http(s)://host[:port]`), a written "
                                  "`max_age` and named headers; else use `--target istio` (VirtualService "
                                  "`corsPolicy`)"))
        return None
    out: dict[str, Any] = {"allowOrigins": list(dict.fromkeys(o.value for o in c.origins))}
    if c.credentials:
        out["allowCredentials"] = True
    if c.methods:
        out["allowMethods"] = list(dict.fromkeys(c.methods))
    if c.headers:
        out["allowHeaders"] = list(dict.fromkeys(c.headers))
    if c.expose:
        out["exposeHeaders"] = list(dict.fromkeys(c.expose))
    out["maxAge"] = c.max_age_s
    diags.append(located(CORS_APPROX, f"route `{route.name}`'s `cors` is written as Gateway API's CORS filter, which "
                         "leaves to the implementation the status of a preflight (200 or 204), whether a preflight "
                         "from an origin not allowed is answered (meshc forwards it to the route's destination), "
                         "and how an Origin that a browser does not send (upper case, the scheme's default port) "
                         "compares", route.source, sources,
                         hint="the answers to browsers are meshc's: the allowed origin echoed, the lists, "
                              "credentials and max age as written"))
    return out


def _names(changes: ir.HeaderChanges | None) -> set[str]:
    if changes is None:
        return set()
    return {*changes.remove, *(n for n, _ in changes.set), *(n for n, _ in changes.add)}


def _destination_filters(t: ir.WeightedSubset, route: ir.Route, sources: dict,
                         diags: list[Diagnostic]) -> list[dict[str, Any]]:
    """A split destination's own header changes: its backendRef's RequestHeaderModifier and
    ResponseHeaderModifier. Gateway API does not order a backendRef's filters against the rule's:
    exact when the two change no header in common, else W0949 (meshc applies the destination's first)."""
    out = []
    for key, mine, theirs in (("requestHeaderModifier", t.request_headers, route.request_headers),
                              ("responseHeaderModifier", t.response_headers, route.response_headers)):
        if mine is None:
            continue
        modifier = _header_modifier(mine, route, sources, diags)
        if modifier:
            out.append({"type": key[0].upper() + key[1:], key: modifier})
        common = sorted(_names(mine) & _names(theirs))
        if common:
            diags.append(located(FILTER_ORDER, f"route `{route.name}` changes header `{common[0]}` for "
                                 f"`{t.service}.{t.subset}` and for the route, and Gateway API leaves the order of "
                                 "the two changes to the implementation", route.source, sources,
                                 hint="meshc applies the destination's change first, then the route's; change the "
                                      "header in one place only"))
    return out


def rule_names(routes: list[str], counts: list[int]) -> list[str | None]:
    """Each rule's `name` (optional in Gateway API, a DNS label unique in the HTTPRoute), for routes
    written as `counts` rules each: the route's name in lower case with `_` as `-`, and a route
    written as several rules (one per match) `NAME-1`, `NAME-2`, … Where such a name is another
    rule's (a route `old_1` next to `old`'s `old-1`), the route of several rules takes `-r` (repeated
    as needed) before the numbers (`old-r1`, `old-r2`); a single rule whose name an earlier one has
    (routes `A` and `a`) takes `-2`, `-3`, … None (no name) where the route's name is not a DNS label."""
    bases = [n.lower().replace("_", "-") for n in routes]
    label = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
    natural = {b for b, c in zip(bases, counts) if c == 1}   # the names single rules take as they are
    used: set[str] = set()
    out: list[str | None] = []
    for base, count in zip(bases, counts):
        if not label.match(base):
            out += [None] * count
            continue
        if count == 1:
            name, k = base, 1
            while name in used:
                k += 1
                name = f"{base}-{k}"
                while name in natural:
                    k += 1
                    name = f"{base}-{k}"
            used.add(name)
            out.append(name)
            continue
        infix = ""
        while True:
            names = [f"{base}-{infix}{k + 1}" for k in range(count)]
            if not any(n in used or n in natural for n in names):
                break
            infix += "r"
        used.update(names)
        out += names
    return out


def _fraction(percent: float) -> dict[str, Any]:
    if float(percent).is_integer():
        return {"percent": int(percent)}
    return {"fraction": {"numerator": round(percent * 10000), "denominator": 1_000_000}}


def _value_ok(value: str, route: ir.Route, what: str, sources: dict, diags: list[Diagnostic]) -> bool:
    if len(value) <= 4096 and _HEADER_VALUE.match(value):
        return True
    why = ("it is empty" if not value else "it is longer than 4096 characters" if len(value) > 4096
           else "it has a character other than printable ASCII, or spaces at its ends or in a row")
    diags.append(located(VALUE, f"route `{route.name}`: {what} value `{value}` cannot be written in an HTTPRoute: "
                         f"{why}", route.source, sources,
                         hint="Gateway API's header values are printable ASCII words separated by single spaces"))
    return False


def _header_modifier(changes: ir.HeaderChanges, route: ir.Route, sources: dict,
                     diags: list[Diagnostic]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Gateway API's `set`, `add` and `remove` are maps by header name, and it does not order them:
    # one header changed twice (added twice, or removed or set and also added) has no equivalent
    touched: dict[str, int] = {}
    for name in [*changes.remove, *(n for n, _ in changes.set), *(n for n, _ in changes.add)]:
        touched[name] = touched.get(name, 0) + 1
    twice = sorted(n for n, count in touched.items() if count > 1)
    if twice:
        diags.append(located(TWICE, f"route `{route.name}` changes header {', '.join(f'`{n}`' for n in twice)} "
                             "more than once, which an HTTPRoute's header filter cannot say", route.source, sources,
                             hint="Gateway API's `set`, `add` and `remove` each name a header once, and are not "
                                  "ordered among themselves: write one value (join values with `,` where the "
                                  "header allows it)"))
    if changes.set:
        out["set"] = [{"name": n, "value": v} for n, v in changes.set
                      if _value_ok(v, route, f"header `{n}`", sources, diags)]
    if changes.add:
        out["add"] = [{"name": n, "value": v} for n, v in changes.add
                      if _value_ok(v, route, f"header `{n}`", sources, diags)]
    if changes.remove:
        out["remove"] = list(changes.remove)
    return out


def _every_caller(svc: ir.Service, sources: dict, diags: list[Diagnostic]) -> ir.Service:
    """An HTTPRoute of a Service (GAMMA) routes every caller alike: the routes as a caller that no
    `caller` condition names takes them (compiler/ir/scope.py `routes_for`), and W0411 for each
    route whose caller-specific matches are not carried."""
    if not scope.named_callers(svc):
        return svc
    for route in svc.routes:
        named = sorted({c for m in route.matches for c in m.callers or ()})
        if named:
            diags.append(located("W0411", f"route `{route.name}` of `{svc.name}` has matches for "
                                 + ", ".join(f"`{c}`" for c in named) + " alone (`caller`), which an HTTPRoute "
                                 "cannot carry: they are left out, and those callers route as every other one",
                                 route.source, sources, hint="`--target istio` writes them as sourceLabels"))
    others = scope.routes_for(svc, "")
    if not others:
        diags.append(located("E0958", f"every route of `{svc.name}` is for named callers (`caller`): meshc answers "
                             "the other callers 404, and a Service without an HTTPRoute forwards them",
                             svc.routes[0].source, sources,
                             hint="add a route without a `caller` condition (such as a last `route rest { to "
                                  f"{svc.name}.default }}`) for the other callers"))
    return dataclasses.replace(svc, routes=others)


def _matches(m: ir.Match, route: ir.Route, sources: dict, diags: list[Diagnostic]) -> list[dict[str, Any]]:
    where = route.source
    out: dict[str, Any] = {}
    p = m.path
    if p is None:
        out["path"] = {"type": "PathPrefix", "value": "/"}
    elif p.ignore_case:
        diags.append(located(PATH, f"route `{route.name}` compares its path ignoring case, which Gateway API "
                             "cannot", where, sources))
    elif p.kind == "exact":
        out["path"] = {"type": "Exact", "value": p.value}
    elif p.kind == "segment_prefix" or (p.kind == "prefix" and p.value == "/"):
        out["path"] = {"type": "PathPrefix", "value": p.value}
    elif p.kind == "prefix":
        diags.append(located(PATH, f"route `{route.name}`'s path prefix `{p.value}` is a plain string prefix, "
                             "and Gateway API's PathPrefix matches whole segments (ignoring a trailing `/`)",
                             where, sources, hint=f"write `prefix \"{p.value.rstrip('/') or '/'}\"` if "
                                                  f"`{p.value.rstrip('/') or '/'}` itself may match too"))
    else:
        out["path"] = {"type": "RegularExpression", "value": p.value}
        diags.append(_regex_warning(route, "path", sources))
    headers = []
    for h in m.headers:
        if h.invert or h.kind == "absent" or h.ignore_case:
            what = "`not header`" if h.invert else "`absent`" if h.kind == "absent" else "`ignore_case`"
            diags.append(located(CONDITION, f"route `{route.name}`'s header `{h.name}` condition uses {what}, "
                                 "which an HTTPRoute match cannot express", where, sources))
            continue
        value = h.value if h.kind == "exact" else _regex(h.kind, h.value)
        if not _value_ok(value or "", route, f"the condition on header `{h.name}`", sources, diags):
            continue
        if h.kind == "exact":
            headers.append({"type": "Exact", "name": h.name, "value": value})
        else:
            headers.append({"type": "RegularExpression", "name": h.name, "value": value})
            diags.append(_regex_warning(route, f"header `{h.name}`", sources))
    if headers:
        out["headers"] = headers
    query = []
    for q in m.query:
        if q.kind == "exact" and not q.value:
            diags.append(located(VALUE, f"route `{route.name}`: the condition on query `{q.name}` compares with an "
                                 "empty value, which an HTTPRoute cannot say", route.source, sources,
                                 hint="a query parameter match's value has at least one character"))
        elif q.kind == "exact":
            query.append({"type": "Exact", "name": q.name, "value": q.value})
        else:
            query.append({"type": "RegularExpression", "name": q.name, "value": _regex(q.kind, q.value)})
            diags.append(_regex_warning(route, f"query `{q.name}`", sources))
    if query:
        out["queryParams"] = query
    if m.methods is None:
        return [out]
    bad = [x for x in m.methods if x not in METHODS]
    if bad:
        diags.append(located(CONDITION, f"route `{route.name}` matches method {', '.join(f'`{x}`' for x in bad)}, "
                             f"which Gateway API's `method` does not list", where, sources))
    return [{**out, "method": x} for x in m.methods if x in METHODS]


def _regex(kind: str, value: str | None) -> str:
    import re2

    if kind == "present" or value is None:
        return ".*"
    if kind == "prefix":
        return re2.escape(value) + ".*"
    if kind == "suffix":
        return ".*" + re2.escape(value)
    return value


def _regex_warning(route: ir.Route, what: str, sources: dict) -> Diagnostic:
    return located(REGEX, f"route `{route.name}`'s {what} condition is written as a RegularExpression match, whose "
                   "dialect Gateway API leaves to the implementation", route.source, sources,
                   hint="meshc writes RE2 (Istio's and Envoy Gateway's dialect); other implementations may differ")


def _prefix_replaced(p: ir.PathRewrite, path: str) -> str:
    """meshc's prefix replacement of `path` (docs/language.md §8.3; runtime_proxy/decide/answer.py)."""
    rest = path[len(p.pattern):]
    if p.segment and p.substitution == "/" and rest[:1] == "/":
        rest = rest[1:]
    return p.substitution + rest


def _one_rule_per_match(rule: dict[str, Any], route: ir.Route,
                        sources: dict) -> tuple[list[dict[str, Any]], list[Diagnostic]]:
    """The HTTPRoute rules of a route: the rule itself, or, when it replaces its path prefix
    (ReplacePrefixMatch, which the CRD allows only in a rule with exactly one PathPrefix match) and
    has several matches, one rule per match with the same backends and filters.

    Exact under Gateway API's precedence: the matches keep their ranks and their order (a match's
    tie-break, its rule and index, becomes the position of its own rule, in the same order), and
    every rule of the route does what the route does. A match that `order.plan` added to keep the
    written order may have another path than the route's prefix: an `Exact` path `/a/b` gets the
    path meshc makes of it (ReplaceFullPath), a longer `PathPrefix` `/a/b` the replacement of
    `/a/b` (ReplacePrefixMatch: meshc's replacement of `/a/b/REST` is that of `/a/b` followed by
    `/REST`). E0957 where that replacement is not a path Gateway API takes (a doubled `/`)."""
    key = next((k for f in rule.get("filters", ()) for k in ("requestRedirect", "urlRewrite")
                if f.get(k, {}).get("path", {}).get("type") == "ReplacePrefixMatch"), None)
    matches = rule["matches"]
    if key is None or (len(matches) == 1 and matches[0].get("path", {}).get("type") == "PathPrefix"):
        return [rule], []
    changed = route.redirect if key == "requestRedirect" else route.rewrite
    assert changed is not None and changed.path is not None
    p = changed.path
    out, diags = [], []
    for m in matches:
        kind, value = order.path_kind(m), (m.get("path") or {"value": "/"})["value"]
        piece = copy.deepcopy(rule)
        piece["matches"] = [m]
        if not (kind == "PathPrefix" and value == (p.pattern if p.segment else "/")):
            # a match order.plan added on a longer path: the replacement of that path
            replaced = _prefix_replaced(p, value)
            if "//" in replaced or not replaced.startswith("/"):
                diags.append(located(ONE_PREFIX, f"route `{route.name}` replaces its path prefix, and Gateway API's "
                                     f"precedence needs a rule of it for `{value}`, whose replacement `{replaced}` "
                                     "an HTTPPathModifier cannot carry", route.source, sources,
                                     hint="make the route's replacement a path without `//`, or order the routes so "
                                          "that the earlier one's match is at least as specific as the later one's"))
                continue
            modifier = ({"type": "ReplaceFullPath", "replaceFullPath": replaced} if kind == "Exact"
                        else {"type": "ReplacePrefixMatch", "replacePrefixMatch": replaced})
            for f in piece["filters"]:
                if key in f:
                    f[key]["path"] = modifier
        out.append(piece)
    return out, diags


def _order(svc: ir.Service, conflicts: list[order.Conflict], sources: dict) -> list[Diagnostic]:
    out = []
    for c in conflicts:
        earlier, later = svc.routes[c.earlier.rule], svc.routes[c.later.rule]
        regex = c.reason == "regex"
        if c.reason == "limit":
            message = (f"keeping route `{earlier.name}` before `{later.name}` under Gateway API's precedence would "
                       f"take more than {order.MAX_MATCHES} matches in `{earlier.name}`")
        elif c.request is not None and not regex and c.written_rule is not None and c.gateway_rule != c.written_rule:
            message = (f"Gateway API would send {order.show(c.request)} to route "
                       f"`{svc.routes[c.gateway_rule or 0].name}`, where the written order sends it to "
                       f"`{svc.routes[c.written_rule].name}`")
        elif c.request is not None and regex:
            message = (f"{order.show(c.request)} matches routes `{earlier.name}` and `{later.name}`, and Gateway API "
                       "leaves the rank of a regex path to the implementation: it may not go to "
                       f"`{earlier.name}` as written")
        else:
            message = (f"Gateway API may rank route `{later.name}` before `{earlier.name}` for a request both match "
                       "(its precedence, not the written order, decides)")
        out.append(located(ORDER, message, earlier.source, sources,
                           hint="Gateway API ranks matches by exact path, longest prefix, method, header count, "
                                "query count (regex paths: the implementation's choice); make the earlier route's "
                                "match at least as specific as the later one's, or the two disjoint"))
    return out


def _service_policies(svc: ir.Service, sources: dict) -> list[Diagnostic]:
    out = []
    if svc.authorization.source is not None:
        out.append(located(AUTHZ, f"the authorization of `{svc.name}` is not part of an HTTPRoute and is not "
                           "written", svc.authorization.source, sources,
                           hint="enforce it with the mesh's own policy (`--target istio` writes an "
                                "AuthorizationPolicy)"))
    policies = []
    if svc.limits != svc.sidecar.app_limits:
        # (the app's thresholds are Envoy's defaults, which are also `limits`' own: other values were written)
        policies.append("connection limits")
    if svc.outlier is not None:
        policies.append("outlier detection")
    if svc.retry_budget is not None:
        policies.append("a retry budget")
    if svc.mtls.mode != "disable":
        policies.append(f"mTLS `{svc.mtls.mode}`")
    if policies:
        out.append(located(POLICIES, f"`{svc.name}` has {', '.join(policies)}, which Gateway API does not carry: "
                           "not written", svc.source, sources,
                           hint="these are the mesh implementation's own policies (`--target istio` writes a "
                                "DestinationRule and a PeerAuthentication)"))
    return out
