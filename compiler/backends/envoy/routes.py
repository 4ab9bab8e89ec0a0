"""IR routes to the shared outbound `RouteConfiguration`: one virtual host per destination
service, one Envoy route per IR match, in IR order (Envoy takes the first route that matches, as
the language does)."""

from __future__ import annotations

from compiler import ir
from compiler.backends.envoy import names
from compiler.backends.envoy.answers import answer, rewrite_fields
from compiler.backends.envoy.matches import route_match
from compiler.backends.envoy.values import duration, fractional_percent, header_value
from compiler.ir.names import seen_from
from compiler.ir.scope import routes_for

# Envoy 1.40's own `retry_on` vocabulary (its router documentation). Envoy accepts any other
# token silently and ignores it (ENVOY_NOTES §6), so a condition of the IR (`ir.RETRY_ON`, the
# language's list) that is not one of these must never reach the output; the front end only
# produces the IR's (E0310), and a violation is a compiler bug, not a user error.
ENVOY_RETRY_ON = frozenset({"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
                            "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
                            "retriable-headers", "http3-post-connect-failure"})
STATUS_CODES_TOKEN = "retriable-status-codes"


def retry_policy(r: ir.Retry) -> dict:
    """`config.route.v3.RetryPolicy`. Status codes need the `retriable-status-codes` token."""
    unknown = [t for t in r.retry_on if t not in ir.RETRY_ON or t not in ENVOY_RETRY_ON]
    if unknown:
        raise ValueError(f"retry condition(s) {unknown} are not Envoy retry_on tokens "
                         "(the front end must have rejected them: E0310)")
    if not r.retry_on and not r.retriable_status_codes:
        raise ValueError("a retry without conditions (the front end must have rejected it: E0310)")
    tokens = list(r.retry_on)
    out: dict = {
        "num_retries": r.num_retries,
        "retry_back_off": {"base_interval": duration(r.backoff_base_ms), "max_interval": duration(r.backoff_max_ms)},
    }
    if r.retriable_status_codes:
        tokens.append(STATUS_CODES_TOKEN)
        out["retriable_status_codes"] = list(r.retriable_status_codes)
    out["retry_on"] = ",".join(tokens)
    if r.per_try_timeout_ms > 0:
        out["per_try_timeout"] = duration(r.per_try_timeout_ms)
    return out


def fault_config(f: ir.Fault) -> dict:
    """The per-route `HTTPFault`, which replaces the filter-level (empty) one for this route. Envoy
    draws the delay and the abort independently and delays before it aborts, as the language
    says."""
    out: dict = {"@type": names.FAULT}
    if f.abort is not None:
        out["abort"] = {"http_status": f.abort.http_status, "percentage": fractional_percent(f.abort.percent)}
    if f.delay is not None:
        out["delay"] = {"fixed_delay": duration(f.delay.duration_ms), "percentage": fractional_percent(f.delay.percent)}
    return out


def _header_options(changes: ir.HeaderChanges) -> list[dict]:
    """`set` overwrites (or adds), `add` appends; Envoy applies the list in order after the
    removals, which is the language's order: remove, then set, then add. An empty value needs
    `keep_empty_value`: without it Envoy skips the option altogether (no header, nothing
    replaced), where the language sets or adds an empty value."""
    def option(action: str, k: str, v: str) -> dict:
        out: dict = {"append_action": action, "header": {"key": k, "value": header_value(v)}}
        if v == "":
            out["keep_empty_value"] = True
        return out

    return ([option("OVERWRITE_IF_EXISTS_OR_ADD", k, v) for k, v in changes.set]
            + [option("APPEND_IF_EXISTS_OR_ADD", k, v) for k, v in changes.add])


def cluster_map(program: ir.Program) -> dict[tuple[str, str], str]:
    """(service, subset) -> the subset's cluster name, as the IR names it."""
    return {(svc.name, sub.name): sub.cluster for svc in program.services for sub in svc.subsets}


def cluster_of(clusters: dict[tuple[str, str], str], service: str, subset: str) -> str:
    return clusters[service, subset]


def header_changes(out: dict, side: str, changes: ir.HeaderChanges) -> None:
    """`SIDE_headers_to_remove` and `SIDE_headers_to_add` of a route or a weighted cluster."""
    if changes.remove:
        out[f"{side}_headers_to_remove"] = list(changes.remove)
    if changes.set or changes.add:
        out[f"{side}_headers_to_add"] = _header_options(changes)


def _weighted_cluster(t: ir.WeightedSubset, clusters: dict[tuple[str, str], str]) -> dict:
    """One arm of a split, with its own header changes: Envoy applies a weighted cluster's before
    the route's (measured with Envoy 1.40), which is the language's order (§8)."""
    out: dict = {"name": cluster_of(clusters, t.service, t.subset), "weight": t.weight}
    if t.request_headers is not None:
        header_changes(out, "request", t.request_headers)
    if t.response_headers is not None:
        header_changes(out, "response", t.response_headers)
    return out


def route_action(r: ir.Route, clusters: dict[tuple[str, str], str]) -> dict:
    """The `RouteAction` of an IR route, shared by the Envoy routes of its matches."""
    out: dict = {"timeout": duration(r.timeout_ms)}  # `0s` disables the timeout (`timeout none`)
    if r.to is not None:
        out["cluster"] = cluster_of(clusters, r.to.service, r.to.subset)
    else:
        split = r.split
        assert split is not None  # exactly one of `to` and `split`
        weighted: dict = {"clusters": [_weighted_cluster(t, clusters) for t in split.targets]}
        if split.key_header is not None:
            # Envoy's header_name pick is the language's: `value mod total` over cumulative
            # weights when the header is one unsigned 64-bit integer, random otherwise (§3).
            weighted["header_name"] = split.key_header
        out["weighted_clusters"] = weighted
    if r.retry is not None:
        out["retry_policy"] = retry_policy(r.retry)
    if r.rewrite is not None:
        out.update(rewrite_fields(r.rewrite))
    if r.mirrors:
        # in written order; Envoy decides each with the same draw, the stream id (docs/language.md §12)
        out["request_mirror_policies"] = [{
            "cluster": cluster_of(clusters, m.service, m.subset),
            "runtime_fraction": {"default_value": fractional_percent(m.percent)},
        } for m in r.mirrors]
    return out


def envoy_routes(service: str, r: ir.Route, clusters: dict[tuple[str, str], str]) -> list[dict]:
    """The Envoy routes of one IR route: one per match, each with the same action, metadata and
    per-route configuration (the dicts are shared: they are serialised, never mutated)."""
    metadata = {"route": r.name, "service": service, "source": str(r.source)}
    common: dict = {
        "metadata": {"filter_metadata": {names.METADATA_KEY: metadata}},
        **(answer(r) or {"route": route_action(r, clusters)}),
        # the route's statistics, `vhost.SERVICE.route.ROUTE.*` (Prometheus: `envoy_vhost_route_*`
        # with `envoy_virtual_host`, `envoy_route`); shared by the Envoy routes of its matches.
        # Route names are NAME tokens: no dot, which would break Envoy's tag extraction.
        "stat_prefix": r.name,
    }
    if r.fault is not None:
        common["typed_per_filter_config"] = {names.FAULT_FILTER: fault_config(r.fault)}
    if r.cors is not None:
        common.setdefault("typed_per_filter_config", {})[names.CORS_FILTER] = cors_policy(r.cors)
    for side, changes in (("request", r.request_headers), ("response", r.response_headers)):
        if changes.remove:
            common[f"{side}_headers_to_remove"] = list(changes.remove)
        if changes.set or changes.add:
            common[f"{side}_headers_to_add"] = _header_options(changes)
    # A match with an empty method list can never match (the front end rejects `method []`).
    count = len(r.matches)
    return [{"match": route_match(m), "name": names.route(service, r.name, i, count), **common}
            for i, m in enumerate(r.matches) if m.methods is None or m.methods]


def virtual_host(svc: ir.Service, clusters: dict[tuple[str, str], str], caller: str | None = None,
                 caller_namespace: str | None = None) -> dict:
    """The virtual host of a destination service, matched by the service's `Host` domains as a
    caller of `caller_namespace` sees them (compiler/ir/names.py `seen_from`), with
    its routes as the sidecar of `caller` takes them (compiler/ir/scope.py `routes_for`; None: a
    caller that no `caller` condition names)."""
    name = svc.name
    routes: list[dict] = []
    for r in routes_for(svc, caller or ""):
        routes += envoy_routes(name, r, clusters)
    return {
        "domains": list(seen_from(name, svc.namespace, svc.domains, caller_namespace)),
        "include_attempt_count_in_response": True,
        "include_request_attempt_count": True,
        "metadata": {"filter_metadata": {names.METADATA_KEY: {"service": name, "source": str(svc.source)}}},
        "name": name,
        "routes": routes,
    }


def outbound_route_configuration(program: ir.Program) -> dict:
    """The `RouteConfiguration` of an outbound listener whose scope is every service (a scoped
    one: `outbound_route_configuration_of` over the scope's virtual hosts). `routes S` is what any
    caller's sidecar does with a request to S, so a virtual host is the same in every scope."""
    clusters = cluster_map(program)
    return outbound_route_configuration_of([virtual_host(svc, clusters) for svc in program.services])


def outbound_route_configuration_of(virtual_hosts: list[dict]) -> dict:
    """The outbound `RouteConfiguration` holding `virtual_hosts` (in the program's order: by name).
    A Host that no virtual host answers to gets Envoy's 404 with an empty body: so does a
    destination outside the scope."""
    return {"name": names.OUTBOUND_ROUTES, "virtual_hosts": virtual_hosts}


def inbound_route_configuration(svc: ir.Service) -> dict:
    """The inline route configuration of a service's inbound listener: every request that
    authorization admits goes to the local application, without a timeout or retries of its
    own (the caller's sidecar applies the route's)."""
    return {
        "name": names.INBOUND_ROUTES,
        "virtual_hosts": [{
            "domains": ["*"],
            "name": svc.name,
            "routes": [{
                "match": {"prefix": "/"},
                "name": f"{svc.name}/inbound",
                "route": {"cluster": svc.sidecar.app_cluster, "timeout": duration(0)},
            }],
        }],
    }


def cors_policy(c: ir.Cors) -> dict:
    """A route's `CorsPolicy` for the CORS filter (docs/language.md §13a): the origins as string
    matchers (a regex as RE2, whole value), the lists joined with ",", the max age in seconds."""
    kinds = {"exact": "exact", "prefix": "prefix"}
    origins = [{kinds[o.test]: o.value} if o.test in kinds else {"safe_regex": {"regex": o.value}}
               for o in c.origins]
    out: dict = {"@type": names.CORS_POLICY, "allow_origin_string_match": origins}
    if c.methods:
        out["allow_methods"] = ",".join(c.methods)
    if c.headers:
        out["allow_headers"] = ",".join(c.headers)
    if c.expose:
        out["expose_headers"] = ",".join(c.expose)
    if c.max_age_s is not None:
        out["max_age"] = str(c.max_age_s)
    if c.credentials:
        out["allow_credentials"] = True
    return out
