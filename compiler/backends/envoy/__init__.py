"""The Envoy backend: the IR to what Envoy 1.40 runs, for the sidecars of chosen services.

Output (paths relative to `-o DIR`), written by the CLI in this order so that a watching Envoy
never sees a reference before its target (a route naming a cluster it does not have yet, a
listener or cluster naming a secret file that does not exist yet):

    xds/SERVICE/sds-identity.json   the sidecar's certificate and key, per proxy (mTLS only)
    xds/SERVICE/sds-mesh_ca.json    the mesh CA it trusts, per proxy (mTLS only)
    xds/cds.json              every cluster: one per subset of every service, one per local app;
                              with mTLS, xds/SERVICE/cds.json per proxy instead (see below)
    xds/SERVICE/lds.json      the sidecar's two listeners (inbound, outbound), per proxy
    xds/rds-outbound.json     the outbound RouteConfiguration every sidecar shares
    SERVICE.envoy.json        the bootstrap, per proxy: `static` (self-contained) or `xds`

With `--bootstrap ads` the output is the bootstraps alone: the resources come from the control
plane (`--xds-server`), not from files.

With mTLS (some service's mode is not `disable`) the clusters of those services present the
calling sidecar's own certificate: a cluster names its SDS file by path, and Envoy offers no
per-proxy indirection that reloads (bootstrap `static_resources.secrets` are read once, and no
certificate provider is built in), so each sidecar gets its own CDS file, and the fleet's CDS
output grows with the square of its size, like static bootstraps. The routes stay shared.

Modules, one job each: names (resource names), values (units), matches (conditions), routes,
clusters, rbac, tls (secrets and transport sockets), listeners (the HCM and the filter order),
bootstrap (bootstraps, xDS files) and limitations (what Envoy cannot express exactly:
diagnostics at the policy's own line). The output is plain dicts with proto field names,
serialised by orjson with sorted keys: the same IR gives the same bytes. This package imports
nothing but the IR and the backend plumbing.
"""

from __future__ import annotations

from compiler import ir
from compiler.backends.base import Emitted, Options, identity_dir, needs_identity
from compiler.backends.envoy import bootstrap, clusters, limitations, listeners, names, routes, tls


def _dumps():
    import orjson

    option = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
    return lambda obj: orjson.dumps(obj, option=option)


def bootstrap_mode(program: ir.Program, proxies: list[str], options: Options) -> str:
    """`--bootstrap` when given; else `xds` when the proxies are every service of the program
    (`--proxy all`): each sidecar holds every destination, so static bootstraps for a whole
    fleet would grow with the square of its size, while the xds layout shares one CDS and one
    RDS file. Named proxies get self-contained `static` bootstraps."""
    if options.bootstrap is not None:
        return options.bootstrap
    return "xds" if set(proxies) == {s.name for s in program.services} else "static"


def xds_dir(options: Options) -> str:
    """Where Envoy finds the xds/ files at run time: `--xds-dir`, else `OUTPUT/xds`."""
    if options.xds_dir is not None:
        return options.xds_dir.rstrip("/") or "/"
    if options.output_dir is not None:
        return f"{options.output_dir.rstrip('/')}/{names.XDS_DIR}"
    return names.XDS_DIR


def emit(program: ir.Program, proxies: list[str], options: Options, sources: dict) -> Emitted:
    """The files of the Envoy sidecars of `proxies` (service names of `program`)."""
    out = Emitted(diagnostics=limitations.check_program(program, sources))
    if out.has_errors:
        return out
    dumps = _dumps()
    mode = bootstrap_mode(program, proxies, options)
    services = {s.name: s for s in program.services}
    if mode == "ads":
        if not options.xds_servers:
            raise ValueError("an `ads` bootstrap needs the control plane's address (Options.xds_servers)")
        for name in proxies:
            # the channel's identity directory: DIR for one sidecar, DIR/SERVICE for several (as --certs-dir)
            identity = options.xds_identity
            if identity is not None and len(proxies) > 1:
                identity = f"{identity.rstrip('/')}/{name}"
            out.files[names.bootstrap_file(name)] = dumps(bootstrap.ads_bootstrap(
                services[name], options.xds_servers, identity, program.trust_domain))
        return out
    where = xds_dir(options)
    sds = {name: tls.sds_files(where, name) for name in proxies if needs_identity(program, services[name])}
    shared_cds = not any(s.mtls.mode != "disable" for s in program.services)

    per_service = [(svc, clusters.service_clusters(svc)) for svc in program.services]
    inbound_clusters = {svc.name: clusters.inbound_cluster(svc) for svc in program.services}
    route_config = routes.outbound_route_configuration(program)
    rds_source = listeners.rds(f"{where}/{names.RDS}")

    def outbound_clusters(proxy: str | None) -> list[dict]:
        """Every destination's clusters, as `proxy` calls them (None: without mTLS, shared)."""
        secrets = sds.get(proxy) if proxy is not None else None
        return [c for svc, cs in per_service for c in clusters.with_mtls(svc, cs, secrets)]

    files = out.files
    for name in proxies:  # secrets first: listeners and clusters name them
        if name in sds:
            for secret_name, secret in tls.secrets(identity_dir(services[name], options)).items():
                files[names.output_path(names.sds(name, secret_name))] = \
                    bootstrap.discovery_response(names.SECRET, [secret], dumps)
    if shared_cds:
        files[names.output_path(names.CDS)] = bootstrap.discovery_response(
            names.CLUSTER, outbound_clusters(None) + list(inbound_clusters.values()), dumps)
    else:
        for name in proxies:
            files[names.output_path(names.proxy_cds(name))] = bootstrap.discovery_response(
                names.CLUSTER, outbound_clusters(name) + list(inbound_clusters.values()), dumps)
    for name in proxies:
        svc = services[name]
        lds = [listeners.inbound_listener(svc, sds.get(name)), listeners.outbound_listener(svc, rds_source)]
        files[names.output_path(names.lds(name))] = bootstrap.discovery_response(names.LISTENER, lds, dumps)
    files[names.output_path(names.RDS)] = bootstrap.discovery_response(names.ROUTE_CONFIGURATION, [route_config], dumps)
    for name in proxies:
        svc = services[name]
        if mode == "xds":
            cds = names.CDS if shared_cds else names.proxy_cds(name)
            doc = bootstrap.xds_bootstrap(svc, where, cds)
        else:
            inline = {"route_config": route_config}
            doc = bootstrap.static_bootstrap(
                svc, [listeners.inbound_listener(svc, sds.get(name)), listeners.outbound_listener(svc, inline)],
                outbound_clusters(name) + [inbound_clusters[name]])
        files[names.bootstrap_file(name)] = dumps(doc)
    return out
