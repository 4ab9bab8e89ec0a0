"""VirtualService: one per destination host, its routes in written order (Istio's HTTP routes are
first-match too), each meshc match expanded into the HTTPMatchRequests Istio ORs.

What Istio does with each field is read from its code (istio/istio, pilot/pkg/networking/core/
route/route.go and route/retry/retry.go at v1.30): docs/kubernetes.istio.md cites each row.
"""

from __future__ import annotations

import re

from compiler import ir
from compiler.backends.istio.values import APP_LABEL, duration, fqdn, istio_hosts
from compiler.backends.located import located
from compiler.core.diagnostics import Diagnostic

# Go's http.StatusText knows these codes: Istio's retryOn takes a number as a status code only when
# it does (retry.go parseRetryOn); any other number would be passed to Envoy as a condition name.
GO_STATUS_CODES = frozenset([*range(100, 104), *range(200, 209), 226, *range(300, 306), 307, 308, *range(400, 419),
                             *range(421, 427), 428, 429, 431, 451, *range(500, 509), 510, 511])
MAX_WEIGHT = 2**31 - 1    # a destination's weight is an int32


def istio_percent(p: float) -> float:
    """A percentage Istio reads as `p`: it keeps `uint32(value * 10000)` millionths (route.go
    translatePercentToFractionalPercent, a truncation), so 0.29 would become 2899. Returns the
    shortest float whose truncated product is the intended count (p has at most four decimals, E0303)."""
    want = round(p * 10000)
    if int(p * 10000) == want:
        return p
    step = 1e-9
    while int((p + step) * 10000) != want:
        step *= 10
    return float(f"{p + step:.10g}")


def _fold(text: str) -> str:
    """An RE2 pattern matching `text` with ASCII letters in either case (meshc's ignore_case)."""
    out = []
    for ch in text:
        if "a" <= ch.lower() <= "z" and ch.isascii():
            out.append(f"[{ch.lower()}{ch.upper()}]")
        else:
            out.append(re.escape(ch) if ch not in "-" else "-")
    return "".join(out)


def _esc(text: str) -> str:
    return "".join(re.escape(ch) if ch not in "-" else "-" for ch in text)


def header_string_match(h: ir.HeaderMatch) -> dict:
    """A string condition (not presence) as Istio's StringMatch: exact/prefix/regex as they are;
    `suffix` and `ignore_case` (which StringMatch lacks) as an equivalent RE2 regex of the whole value."""
    assert h.value is not None
    v = h.value
    if h.ignore_case:
        pattern = {"exact": _fold(v), "prefix": _fold(v) + ".*", "suffix": ".*" + _fold(v)}[h.kind]
        return {"regex": pattern}
    if h.kind == "suffix":
        return {"regex": ".*" + _esc(v)}
    return {h.kind: v}


def _path_alternatives(path: ir.PathMatch | None) -> list[dict | None]:
    """The `uri` of each HTTPMatchRequest a path condition needs: a segment prefix `/a` is `/a`
    exactly or the plain prefix `/a/` (Istio's `prefix` is a plain string prefix on sidecars)."""
    if path is None:
        return [None]
    if path.kind == "segment_prefix":
        if path.value.endswith("/"):
            return [{"prefix": path.value}]
        return [{"exact": path.value}, {"prefix": path.value + "/"}]
    return [{path.kind: path.value}]


def match_requests(m: ir.Match, route: ir.Route, sources: dict, diags: list[Diagnostic]) -> list[dict]:
    """The HTTPMatchRequests (ORed) equivalent to one meshc match (ANDed conditions)."""
    headers: dict[str, dict] = {}
    without: dict[str, dict] = {}
    clash = False

    def put(into: dict[str, dict], name: str, test: dict) -> None:
        """One test per header and map. The same test twice is one; in `headers`, presence ({}) is
        implied by any string test (which never holds on an absent header), so it gives way."""
        nonlocal clash
        have = into.get(name)
        if have is None or have == test or (into is headers and have == {}):
            into[name] = test
        elif not (into is headers and test == {}):
            clash = True

    for h in m.headers:
        if h.kind == "absent":
            put(without, h.name, {})
        elif h.kind == "present":
            put(headers, h.name, {})
        elif h.invert:
            # Istio inverts with treat_missing_header_as_empty (route.go TranslateRouteMatch): an absent
            # header would pass; meshc's `not header` requires it present, so both are written.
            put(headers, h.name, {})
            put(without, h.name, header_string_match(h))
        else:
            put(headers, h.name, header_string_match(h))
    if clash:
        diags.append(located("E0902", f"route `{route.name}` tests one header twice in one match, which Istio "
                                      "cannot write", route.source, sources,
                             hint="Istio's `headers` and `withoutHeaders` are maps by header name: one condition "
                                  "per header and per map; combine the two into one `regex`"))
    query: dict[str, dict] = {}
    query_clash = False
    for q in m.query:
        test = {} if q.kind == "present" else {q.kind: q.value}
        have = query.get(q.name)
        # the same test twice is one; presence is implied by a value test (never true when absent)
        if have is None or have == test or have == {}:
            query[q.name] = test
        elif test != {}:
            query_clash = True
    if query_clash:
        diags.append(located("E0917", f"route `{route.name}` tests one query parameter twice in one match, "
                                      "which Istio cannot write", route.source, sources,
                             hint="Istio's `queryParams` is a map by parameter name: one condition per "
                                  "parameter; combine the two into one `regex`"))
    base: dict = {}
    if headers:
        base["headers"] = headers
    if without:
        base["withoutHeaders"] = without
    if query:
        base["queryParams"] = query
    if m.path is not None and m.path.ignore_case:
        base["ignoreUriCase"] = True
    out = []
    for uri in _path_alternatives(m.path):
        for method in m.methods or (None,):
            # a `caller` condition: Istio's sourceLabels, the calling workloads' `app` label (one
            # request per caller, ORed); a caller of a name declared in several namespaces
            # (`NAMESPACE/NAME`) is its short name in its namespace (a `/` is no label value)
            for caller in m.callers or (None,):
                req = dict(base)
                if uri is not None:
                    req["uri"] = uri
                if method is not None:
                    req["method"] = {"exact": method}
                if caller is not None:
                    namespace, _, name = caller.rpartition("/")
                    req["sourceLabels"] = {APP_LABEL: name}
                    if namespace:
                        req["sourceNamespace"] = namespace
                out.append(req)
    return out


def _destination(service: ir.Service, subset: str) -> dict:
    return {"host": fqdn(service), "subset": subset}


def _header_value(value: str) -> str:
    """A literal header value for Envoy, which Istio hands it as it is: Envoy reads `%…%` as a
    substitution (and rejects a lone `%`), so `%` is written `%%` (as meshc's Envoy output does)."""
    return value.replace("%", "%%")


def _header_ops(changes: ir.HeaderChanges, what: str, route: ir.Route, sources: dict,
                diags: list[Diagnostic]) -> dict:
    """Istio's HeaderOperations: remove, set (overwrite), add (append): route.go
    TranslateHeadersOperations, in that order, which is meshc's."""
    ops: dict = {}
    empty = [n for n, v in (*changes.set, *changes.add) if v == ""]
    if empty:
        diags.append(located("W0908", f"Istio skips the empty value of {what} header `{empty[0]}` of route "
                                      f"`{route.name}`: the header is left as it was", route.source, sources,
                             hint="Envoy drops a header option with an empty value unless `keep_empty_value` is "
                                  "set, which Istio's `headers` cannot say; meshc sets (or adds) it empty"))
    if changes.set:
        ops["set"] = {n: _header_value(v) for n, v in changes.set}
    if changes.add:
        names = [n for n, _ in changes.add]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            diags.append(located("E0903", f"route `{route.name}` adds {what} header `{dup[0]}` twice, which "
                                          "Istio cannot write", route.source, sources,
                                 hint="Istio's `headers.add` is a map by header name: one value per header"))
        ops["add"] = {n: _header_value(v) for n, v in changes.add}
    if changes.remove:
        ops["remove"] = list(changes.remove)
    return ops


def retries(route: ir.Route, sources: dict, diags: list[Diagnostic]) -> dict:
    """HTTPRetry. Without a retry, `attempts: 0` (Istio's default, a route without `retries`, retries
    twice: retry.go ConvertPolicy). With one, `retryIgnorePreviousHosts: false`: Istio otherwise adds
    the previous-hosts predicate, which meshc's Envoy output does not set."""
    r = route.retry
    if r is None:
        return {"attempts": 0}
    bad = [c for c in r.retriable_status_codes if c not in GO_STATUS_CODES]
    if bad:
        diags.append(located("E0904", f"Istio cannot retry on status `{bad[0]}` of route `{route.name}`",
                             route.source, sources,
                             hint="Istio's `retryOn` takes a number as a status code only when Go's "
                                  "net/http names it (http.StatusText); others become condition names Envoy rejects"))
    out: dict = {"attempts": r.num_retries,
                 "retryOn": ",".join([*r.retry_on, *(str(c) for c in r.retriable_status_codes)]),
                 "retryIgnorePreviousHosts": False}
    if r.per_try_timeout_ms:
        out["perTryTimeout"] = duration(r.per_try_timeout_ms)
    out["backoff"] = duration(r.backoff_base_ms)
    if r.backoff_max_ms != 10 * r.backoff_base_ms:
        diags.append(located("W0902", f"Istio sets only the backoff's base of route `{route.name}`: its maximum is "
                                      f"{duration(10 * r.backoff_base_ms)} (10 x the base), not "
                                      f"{duration(r.backoff_max_ms)}", route.source, sources,
                             hint="Istio's `retries.backoff` is Envoy's base_interval; Envoy's max_interval "
                                  "defaults to 10 x the base"))
    return out


def virtual_service(svc: ir.Service, services: dict[str, ir.Service], sources: dict,
                    diags: list[Diagnostic]) -> dict:
    """The spec of the VirtualService of `svc` (hosts: its FQDN, then its written `hosts` Istio can
    say; E0913 for the others)."""
    carried, refused = istio_hosts(svc)
    for h in refused:
        why = ("Istio's hosts have no port" if ":" in h else
               "Istio resolves a short name against the namespace" if "." not in h and "*" not in h else
               "Istio's VirtualService takes `*` only as the first label, and not `*` alone for the mesh")
        diags.append(located("E0913", f"host `{h}` of service `{svc.name}` cannot be written for Istio: {why}",
                             svc.source, sources,
                             hint="write an exact DNS name (with a dot) or `*.SUFFIX` in `hosts`, or leave "
                                  "this host out of the Istio output"))
    http = []
    for route in svc.routes:
        item: dict = {"name": route.name}
        matches = [req for m in route.matches for req in match_requests(m, route, sources, diags)]
        if all(matches):   # an empty HTTPMatchRequest takes every request: then the route has no `match`
            item["match"] = matches
        if route.redirect is not None or route.direct_response is not None:
            # a route that answers itself: no destination, timeout, retry, fault or mirror (E0420)
            if route.redirect is not None:
                item["redirect"] = redirect(route, sources, diags)
            else:
                assert route.direct_response is not None
                item["directResponse"] = direct_response(route.direct_response)
            headers = _route_headers(route, sources, diags)
            if headers:
                item["headers"] = headers
            http.append(item)
            continue
        if route.to is not None:
            item["route"] = [{"destination": _destination(services[route.to.service], route.to.subset)}]
        else:
            assert route.split is not None
            item["route"] = _split(route, services, sources, diags)
        if route.rewrite is not None:
            item["rewrite"] = rewrite(route.rewrite)
        if route.timeout_ms:
            item["timeout"] = duration(route.timeout_ms)
        item["retries"] = retries(route, sources, diags)
        if route.fault is not None:
            fault: dict = {}
            if route.fault.delay is not None:
                fault["delay"] = {"fixedDelay": duration(route.fault.delay.duration_ms),
                                  "percentage": {"value": istio_percent(route.fault.delay.percent)}}
            if route.fault.abort is not None:
                fault["abort"] = {"httpStatus": route.fault.abort.http_status,
                                  "percentage": {"value": istio_percent(route.fault.abort.percent)}}
            item["fault"] = fault
        if route.mirrors:   # Envoy's request_mirror_policies, in written order (one draw decides all: §12)
            item["mirrors"] = [{"destination": _destination(services[mirror.service], mirror.subset),
                                "percentage": {"value": istio_percent(mirror.percent)}} for mirror in route.mirrors]
        headers = _route_headers(route, sources, diags)
        if headers:
            item["headers"] = headers
        if route.cors is not None:
            item["corsPolicy"] = cors_policy(route.cors)
        http.append(item)
    return {"hosts": [fqdn(svc), *carried], "http": http}


def _route_headers(route: ir.Route, sources: dict, diags: list[Diagnostic],
                   request_changes: ir.HeaderChanges | None = None,
                   response_changes: ir.HeaderChanges | None = None) -> dict:
    """Istio's `headers` (of a route, or of one destination when the changes are given)."""
    headers = {}
    request = _header_ops(request_changes or route.request_headers, "request", route, sources, diags)
    response = _header_ops(response_changes or route.response_headers, "response", route, sources, diags)
    if request:
        headers["request"] = request
    if response:
        headers["response"] = response
    return headers


# HTTPRedirect.redirectCode: route.go translateRedirect knows these (any other drops the redirect)
REDIRECT_CODES = (301, 302, 303, 307, 308)


def redirect(route: ir.Route, sources: dict, diags: list[Diagnostic]) -> dict:
    """HTTPRedirect, which Istio makes into Envoy's RedirectAction field for field (route.go
    translateRedirect): `authority` host_redirect, `uri` path_redirect, `scheme`, `port`,
    `redirectCode`. Its `uri` replaces the whole path: a prefix or regex replacement has no form
    (`%PREFIX()%` is read only for routes made from Gateway API, E0910), nor has `strip_query` (E0911)."""
    r = route.redirect
    assert r is not None
    out: dict = {}
    if r.path is not None:
        if r.path.kind == "path":
            out["uri"] = r.path.substitution
        else:
            what = "a prefix" if r.path.kind == "prefix" else "a regex"
            diags.append(located("E0910", f"route `{route.name}` redirects replacing {what} of the path, which "
                                          "Istio's HTTPRedirect cannot say", route.source, sources,
                                 hint="Istio's `redirect.uri` replaces the whole path; write `path \"...\"` (one "
                                      "route per path), or use `--target envoy` / `--target gateway-api`"))
    if r.host:
        out["authority"] = r.host
    if r.scheme:
        out["scheme"] = r.scheme
    if r.port:
        out["port"] = r.port
    if r.status != 301:
        out["redirectCode"] = r.status
    if r.strip_query:
        diags.append(located("E0911", f"route `{route.name}` redirects without the query, which Istio's "
                                      "HTTPRedirect cannot say", route.source, sources,
                             hint="Istio's HTTPRedirect has no `strip_query`: the Location keeps the request's "
                                  "query"))
    return out


def direct_response(d: ir.DirectResponse) -> dict:
    """HTTPDirectResponse: Envoy's direct_response (route.go), the body inline."""
    out: dict = {"status": d.status}
    if d.body:
        out["body"] = {"string": d.body}
    return out


def _literal_substitution(text: str) -> str:
    return text.replace("\\", "\\\\")


def rewrite(rw: ir.Rewrite) -> dict:
    """HTTPRewrite. The path always as `uriRegexRewrite` (Envoy's regex_rewrite, as meshc's Envoy
    output): Istio's `uri` is Envoy's prefix_rewrite of the matched prefix, and a segment prefix
    `/a` is written as the two matches `/a` and `/a/` (the second would lose its `/`). `authority`
    is Envoy's host_rewrite_literal."""
    out: dict = {}
    p = rw.path
    if p is not None:
        if p.kind == "path":
            out["uriRegexRewrite"] = {"match": "^.*$", "rewrite": _literal_substitution(p.substitution)}
        elif p.kind == "regex":
            out["uriRegexRewrite"] = {"match": p.pattern, "rewrite": p.substitution}
        else:
            tail = "/?" if p.segment and p.substitution == "/" else ""
            pattern = ("(?i)" if p.ignore_case else "") + "^" + re.escape(p.pattern) + tail
            out["uriRegexRewrite"] = {"match": pattern, "rewrite": _literal_substitution(p.substitution)}
    if rw.host:
        out["authority"] = rw.host
    return out


def cors_policy(c: ir.Cors) -> dict:
    """Istio's `corsPolicy` of a route (docs/kubernetes.istio.md): the same origin matchers (RE2
    regexes), lists and max age as the Envoy target's per-route CorsPolicy, which istiod writes
    from it; `unmatchedPreflights` stays Istio's default (FORWARD), as the mesh's own behaviour."""
    out: dict = {"allowOrigins": [{o.test: o.value} for o in c.origins]}
    if c.methods:
        out["allowMethods"] = list(c.methods)
    if c.headers:
        out["allowHeaders"] = list(c.headers)
    if c.expose:
        out["exposeHeaders"] = list(c.expose)
    if c.max_age_s is not None:
        out["maxAge"] = f"{c.max_age_s}s"
    if c.credentials:
        out["allowCredentials"] = True
    return out


def _split(route: ir.Route, services: dict[str, ir.Service], sources: dict, diags: list[Diagnostic]) -> list[dict]:
    split = route.split
    assert split is not None
    if split.key_header is not None:
        diags.append(located("W0901", f"Istio splits route `{route.name}` at random by weight: it has no split key "
                                      f"(`by header \"{split.key_header}\"` is not carried)", route.source, sources,
                             hint="Istio's weighted destinations have no key; a request with the same key may "
                                  "go to another subset (DestinationRule consistentHash picks endpoints, not subsets)"))
    # Istio ignores zero weights when there are other destinations (route.go applyHTTPRouteDestination)
    targets = [t for t in split.targets if t.weight > 0]
    weights = [t.weight for t in targets]
    if max(weights) > MAX_WEIGHT:
        from math import gcd

        g = 0
        for w in weights:
            g = gcd(g, w)
        weights = [w // g for w in weights]
        if max(weights) > MAX_WEIGHT:
            scale = max(weights) / MAX_WEIGHT
            weights = [max(1, int(w / scale)) for w in weights]
            diags.append(located("W0903", f"the weights of route `{route.name}` are above Istio's limit "
                                          f"({MAX_WEIGHT}): scaled down, the shares change slightly", route.source,
                                 sources, hint="Istio's weights are 32-bit signed integers"))
    out = []
    for t, w in zip(targets, weights, strict=True):
        dest: dict = {"destination": _destination(services[t.service], t.subset)}
        if len(targets) > 1:
            dest["weight"] = w
        if t.request_headers is not None or t.response_headers is not None:
            empty = ir.HeaderChanges(remove=(), set=(), add=())
            headers = _route_headers(route, sources, diags, t.request_headers or empty, t.response_headers or empty)
            if headers:
                dest["headers"] = headers
                if len(targets) == 1:
                    _single_destination_order(route, t, sources, diags)
        out.append(dest)
    return out


def _names(changes: ir.HeaderChanges | None) -> set[str]:
    if changes is None:
        return set()
    return {*changes.remove, *(n for n, _ in changes.set), *(n for n, _ in changes.add)}


def _single_destination_order(route: ir.Route, t: ir.WeightedSubset, sources: dict,
                              diags: list[Diagnostic]) -> None:
    """With one destination Istio appends the destination's header changes to the route's (route.go
    applyHTTPRouteDestination: a single weighted cluster becomes the route's cluster), so they come
    after the route's, where meshc applies them first: exact only when no header the destination sets
    or adds is also changed by the route."""
    for mine, route_changes, what in ((t.request_headers, route.request_headers, "request"),
                                      (t.response_headers, route.response_headers, "response")):
        # (a destination's removal comes first either way: Envoy removes before it sets or adds)
        written = {n for n, _ in (*mine.set, *mine.add)} if mine is not None else set()
        common = sorted(written & _names(route_changes))
        if common:
            diags.append(located("E0912", f"route `{route.name}` changes {what} header `{common[0]}` both for "
                                          f"`{t.service}.{t.subset}` and for the route, and Istio would apply "
                                          "the route's change first", route.source, sources,
                                 hint="with a single destination Istio merges its header changes after the "
                                      "route's; change the header in one place only"))
            return

