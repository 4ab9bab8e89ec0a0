"""Services to the IR: subsets and their endpoints, the sidecar, mutual TLS, authorization, and
the service's routes (or its implicit one)."""

from __future__ import annotations

from compiler import ir
from compiler.ir import names
from compiler.language import defaults
from compiler.language.endpoints import discovery, parse_endpoint
from compiler.language.settings import sidecar_ports
from compiler.lower.resilience import lower_budget, lower_limits, lower_outlier
from compiler.lower.routes import implicit_route, lower_route
from compiler.semantic.checks.workloads import written_settings
from compiler.semantic.conditions import (
    authorization_rules,
    location,
    service_domains,
    service_identity,
    service_namespace,
)
from compiler.semantic.symbols import Context, resolve_block
from compiler.semantic.written import written
from compiler.syntax import ast


def lower_authorization(ctx: Context, svc: ast.Service) -> ir.Authorization:
    authz = ctx.authorizations.get(svc.name.value)
    if authz is None:
        return ir.Authorization(defaults.AUTHORIZATION_DEFAULT, (), None)
    rules = tuple(lowered for _, lowered in authorization_rules(ctx, svc, authz))
    assert authz.default is not None  # E0601 otherwise
    return ir.Authorization(authz.default.value, rules, location(authz))


def _address(text: str) -> tuple[str, int]:
    """(host, port) of an endpoint or of the sidecar's `app`: each one parses (E0307 otherwise)."""
    address = parse_endpoint(text)
    assert address is not None
    return address


def lower_subset(service: str, name: str, endpoints: tuple[ast.Lit[str], ...], node) -> ir.Subset:
    eps = tuple(ir.Endpoint(*_address(e.value)) for e in endpoints)
    return ir.Subset(name, names.outbound_cluster(service, name), discovery(e.host for e in eps), eps,
                     location(node))


def lower_label_subset(service: str, sub: ast.Subset) -> ir.Subset:
    """A label-selected subset: no endpoints, its labels sorted by key (one block, each key once:
    E0360, E0363)."""
    assert sub.labels is not None
    labels = tuple(sorted((e.key.value, e.value.value) for block in sub.labels for e in block))
    return ir.Subset(sub.name.value, names.outbound_cluster(service, sub.name.value), "labels", (), location(sub),
                     labels)


def lower_sidecar(svc: ast.Service, subset: ast.Subset | None = None) -> ir.Sidecar:
    """The service's own sidecar, or with `subset` a workload's: the service's `sidecar` settings
    overridden, setting by setting, by the subset's own block (§5.9)."""
    w = written(svc.sidecar, "sidecar")
    ports = sidecar_ports(written_settings(svc, subset))
    if subset is not None and subset.sidecar is not None:
        mine = written(subset.sidecar, "sidecar")
        w = {**w, **{s.key: mine[s.key] for s in subset.sidecar.settings}}
    assert svc.port is not None  # E0301 otherwise
    host, port = defaults.APP_HOST, svc.port.value
    if w["app"] is not None:
        host, port = _address(w["app"])
    name = svc.name.value
    cluster = names.inbound_cluster(name) if subset is None else names.inbound_cluster(name, subset.name.value)
    node = name if subset is None else names.workload_node(name, subset.name.value)
    return ir.Sidecar(defaults.LISTEN_HOST, ports["inbound"], ports["outbound"], ports["admin"], host, port,
                      discovery((host,)), cluster, lower_limits(None), w["escaped_slashes"], True, True,
                      w["max_request_headers"], w["max_request_headers_kb"] * 1024, defaults.MAX_REQUEST_BODY_BYTES,
                      w["idle_timeout"], w["request_headers_timeout"], w["stream_idle_timeout"], w["max_connections"],
                      defaults.DRAIN_TIMEOUT_MS, w["access_log"], node)


# What callers' sidecars apply when they connect to a service: the same for every service today.
UPSTREAM = ir.Upstream(defaults.CONNECT_TIMEOUT_MS, defaults.UPSTREAM_IDLE_TIMEOUT_MS,
                       defaults.MAX_RESPONSE_HEADERS_BYTES)


def lower_mtls(ctx: Context, svc: ast.Service) -> ir.Mtls:
    root = ctx.mesh_setting("certificates").rstrip("/") or ""
    mode = ctx.mtls_mode(svc)
    assert mode is not None  # an invalid mode is E0312, and a program with an error is not lowered
    return ir.Mtls(mode, f"{root}/{svc.name.value}")


def lower_service(ctx: Context, svc: ast.Service) -> ir.Service:
    subsets = []
    name = svc.name.value
    if svc.endpoints is not None:
        subsets.append(lower_subset(name, defaults.IMPLICIT_SUBSET, svc.endpoints, svc))
    workloads = tuple(ir.Workload(s.name.value, lower_sidecar(svc, s), location(s.sidecar))
                      for s in svc.subsets if s.sidecar is not None)
    own = {w.subset: w.sidecar for w in workloads}
    for s in svc.subsets:
        if s.labels is not None:
            subsets.append(lower_label_subset(name, s))
        elif s.endpoints is None and s.name.value in own:   # a workload reached at its own inbound listener
            sc = own[s.name.value]
            subsets.append(ir.Subset(s.name.value, names.outbound_cluster(name, s.name.value), "static",
                                     (ir.Endpoint(sc.listen_host, sc.inbound_port),), location(s)))
        else:
            subsets.append(lower_subset(name, s.name.value, s.endpoints or (), s))
    routes_block = ctx.routes.get(svc.name.value)
    if routes_block is not None:
        routes = tuple(lower_route(ctx, r) for r in routes_block.routes)
    else:
        routes = (implicit_route(svc),)
    assert svc.port is not None  # E0301 otherwise
    namespace, port = service_namespace(svc), svc.port.value
    return ir.Service(name, namespace, service_identity(ctx, svc), port, service_domains(ctx, svc),
                      names.sni(names.short_name(name), namespace), location(svc), tuple(subsets),
                      lower_limits(resolve_block(ctx, svc.limits, "limits")),
                      lower_outlier(resolve_block(ctx, svc.outlier, "outlier")),
                      lower_budget(resolve_block(ctx, svc.retry_budget, "retry_budget")), UPSTREAM,
                      lower_sidecar(svc), routes, lower_authorization(ctx, svc), lower_mtls(ctx, svc), workloads)
