"""The Envoy backend: the IR to what Envoy 1.40 runs, for the sidecars of chosen services.

Output (paths relative to `-o DIR`), written by the CLI in this order so that a watching Envoy
never sees a reference before its target (a route naming a cluster it does not have yet, a
listener naming a routes file or a listener or cluster naming a secret file that does not exist
yet):

    xds/SERVICE/sds-identity.json   the sidecar's certificate and key, per proxy (mTLS only)
    xds/SERVICE/sds-mesh_ca.json    the mesh CA it trusts, per proxy (mTLS only)
    xds/cds.json              the clusters of the sidecars whose scope is the whole program (below),
                              and their applications'; xds/scopes/KEY/cds.json for those of another
                              scope; with mTLS, xds/SERVICE/cds.json per proxy instead (see below)
    xds/SERVICE/cds.json      without mTLS: a symbolic link (Emitted.links) to the sidecar's
                              scope's CDS file, the path its bootstrap names; the scope's file
                              itself when the sidecar is alone in its scope (below), and its own
                              file in a compile of some of the sidecars (not `--proxy all`)
    xds/rds-outbound.json     the outbound RouteConfiguration of the sidecars of full scope;
                              xds/scopes/KEY/rds-outbound.json for those of another scope;
                              xds/SERVICE/rds-outbound.json for a sidecar that routes of its
                              destinations name as their `caller` (its route table is its own),
                              and for a sidecar alone in its scope
    xds/SERVICE/lds.json      the sidecar's two listeners (inbound, outbound), per proxy
    SERVICE.envoy.json        the bootstrap, per proxy: `static` (self-contained) or `xds`

SERVICE is the proxy's name (compiler/ir/workloads.py): a service's, or `SERVICE.SUBSET` for a
workload's own sidecar, which has its service's scope, identity files and routes.

Scoping (compiler/ir/scope.py): a sidecar gets the virtual hosts of the destinations it can call
and the clusters those need, plus its own application's cluster. Sidecars with the same scope
share its files; KEY names a scope by its destinations (names.scope_key), so the output grows
with the distinct scopes times their destinations: at most the caller->destination pairs, and
one shared file when every sidecar can call every service (as before scoping). The listener
names its RDS file (LDS reloads: a sidecar whose scope changes switches files without restart);
the bootstrap names the sidecar's own CDS path, a link to its scope's file that the CLI replaces
(a rename, which Envoy's watch sees) when the sidecar changes scope or the scope's file changes
(compiler/cli/output.py), so a scope change needs no restart either; the CLI then removes the
scope directories no sidecar names any more. A scope that only one of the sidecars compiled has
(not the whole program's) keeps its files in that sidecar's directory: no scope directory and,
without mTLS, no link (in a fine-grained mesh most scopes are a sidecar's own: at 10,000 services
that each admit one caller, 20,000 fewer directories and links); the sidecar moving into or out of
a shared scope is a rename over its CDS path and a listener naming another routes file, as any
scope change. A compile of some of the sidecars gives each its own CDS file (below).

With `--bootstrap ads` the output is the bootstraps alone: the resources come from the control
plane (`--xds-server`), not from files.

With mTLS (some service's mode is not `disable`) the clusters of those services present the
calling sidecar's own certificate: a cluster names its SDS file by path, and Envoy offers no
per-proxy indirection that reloads (bootstrap `static_resources.secrets` are read once, and no
certificate provider is built in), so each sidecar gets its own CDS file (its scoped clusters
and its own application's). The routes stay shared among the sidecars of full scope.

Modules, one job each: names (resource names), values (units), matches (conditions), routes,
clusters, rbac, tls (secrets and transport sockets), listeners (the HCM and the filter order),
bootstrap (bootstraps, xDS files) and limitations (what Envoy cannot express exactly:
diagnostics at the policy's own line). The output is plain dicts with proto field names,
serialised by orjson with sorted keys and no indentation: the same IR gives the same bytes.
This package imports nothing but the IR and the backend plumbing.
"""

from __future__ import annotations

from compiler import ir
from compiler.backends.base import Emitted, Link, Options, identity_dir, mtls_anywhere, needs_identity
from compiler.backends.envoy import bootstrap, clusters, limitations, listeners, names, routes, tls
from compiler.backends.envoy.tls import Sds
from compiler.ir import scope, workloads


def _dumps():
    import orjson

    # Compact: indentation was three quarters of the bytes of a fleet's files (514 MB against
    # 125 MB at 10,000 services), all of it written, hashed and read by Envoy. `jq . FILE` reads one.
    option = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    return lambda obj: orjson.dumps(obj, option=option)


def bootstrap_mode(program: ir.Program, proxies: list[str], options: Options) -> str:
    """`--bootstrap` when given; else `xds` when the proxies are every service of the program
    (`--proxy all`): a sidecar may hold every destination, so static bootstraps for a whole
    fleet could grow with the square of its size, while the xds layout shares one CDS and one
    RDS file among the sidecars of full scope. Named proxies get self-contained `static`
    bootstraps."""
    if options.bootstrap is not None:
        return options.bootstrap
    return "xds" if every_sidecar(program, proxies) else "static"


def every_sidecar(program: ir.Program, proxies: list[str]) -> bool:
    """Whether `proxies` are all of the program's sidecars (`--proxy all`)."""
    return set(proxies) == set(workloads.proxy_names(program))


def xds_dir(options: Options) -> str:
    """Where Envoy finds the xds/ files at run time: `--xds-dir`, else `OUTPUT/xds`."""
    if options.xds_dir is not None:
        return options.xds_dir.rstrip("/") or "/"
    if options.output_dir is not None:
        return f"{options.output_dir.rstrip('/')}/{names.XDS_DIR}"
    return names.XDS_DIR


def emit(program: ir.Program, proxies: list[str], options: Options, sources: dict) -> Emitted:
    """The files of the Envoy sidecars of `proxies` (their names: services, or `SERVICE.SUBSET` for a
    workload's own sidecar; compiler/ir/workloads.py)."""
    out = Emitted(diagnostics=limitations.check_program(program, sources))
    if out.has_errors:
        return out
    dumps = _dumps()
    mode = bootstrap_mode(program, proxies, options)
    services = {s.name: s for s in program.services}
    sidecars = workloads.views(program, list(proxies))   # each proxy: its service, with its own sidecar
    if mode == "ads":
        if not options.xds_servers:
            raise ValueError("an `ads` bootstrap needs the control plane's address (Options.xds_servers)")
        for name in proxies:
            # the channel's identity directory: DIR for one sidecar, DIR/SERVICE for several (as --certs-dir;
            # a workload's sidecar has its service's identity)
            identity = options.xds_identity
            if identity is not None and len(proxies) > 1:
                identity = f"{identity.rstrip('/')}/{workloads.service_of(name)}"
            out.files[names.bootstrap_file(name)] = dumps(bootstrap.ads_bootstrap(
                sidecars[name], options.xds_servers, identity, program.trust_domain, program.tracing))
        return out
    where = xds_dir(options)
    anywhere = mtls_anywhere(program)
    sds = {name: tls.sds_files(where, name) for name in proxies if needs_identity(program, sidecars[name], anywhere)}
    # A scope's CDS file holds the applications' clusters of the sidecars sharing it: only a compile
    # of every sidecar writes it (one of some, `--proxy a --bootstrap xds` into a fleet's directory,
    # gives each compiled sidecar its own file, leaving the shared ones to the sidecars not compiled)
    shared_cds = not anywhere and every_sidecar(program, proxies)
    by_service = scope.scopes(program, list(dict.fromkeys(workloads.service_of(p) for p in proxies)))
    scopes = {p: by_service[workloads.service_of(p)] for p in proxies}
    cluster_names = routes.cluster_map(program)

    per_service: dict[str, list[dict]] = {}
    vhosts: dict[tuple[str, str | None, str | None], dict] = {}
    named = {s.name: scope.named_callers(s) for s in program.services}

    def service_clusters(name: str) -> list[dict]:
        if name not in per_service:
            per_service[name] = clusters.service_clusters(services[name])
        return per_service[name]

    def route_config(hosts: tuple[str, ...], caller: str | None = None) -> dict:
        """`caller`: the service whose sidecars' own routes these are (Scope.own_routes), else None."""
        ns = services[caller].namespace if caller is not None else None   # (a short name's, ir/names.py seen_from)
        keys = [(h, caller if caller is not None and caller in named.get(h, ()) else None,
                 ns if "/" in h else None) for h in hosts]
        for key in keys:
            if key not in vhosts:
                vhosts[key] = routes.virtual_host(services[key[0]], cluster_names, key[1], key[2])
        return routes.outbound_route_configuration_of([vhosts[key] for key in keys])

    def outbound_clusters(proxy: str, secrets: Sds | None) -> list[dict]:
        """The clusters of `proxy`'s scope, as it calls them (with `secrets`, its own mTLS files)."""
        return [c for name in scopes[proxy].services
                for c in clusters.with_mtls(services[name], service_clusters(name), secrets)]

    # the sidecars by scope (its destinations): one RDS file per scope (a sidecar with routes of
    # its own: its own file), and without mTLS one CDS file
    groups: dict[tuple[str, ...], list[str]] = {}
    route_groups: dict[tuple[tuple[str, ...], str | None], list[str]] = {}
    for name in proxies:
        groups.setdefault(scopes[name].hosts, []).append(name)
        own = scopes[name].caller if scopes[name].own_routes else None   # (a service's workloads share its routes)
        route_groups.setdefault((scopes[name].hosts, own), []).append(name)

    def alone(proxy: str) -> bool:
        """A scope of this sidecar only (not the whole program's): its files stand in the sidecar's
        own directory, without a scope directory or a link (in a fine-grained mesh most scopes
        have one sidecar: a directory, a link and a file fewer per sidecar, which each cost
        the compile a system call and the disk an inode)."""
        return options.alone_scope_in_own_dir and not scopes[proxy].full and len(groups[scopes[proxy].hosts]) == 1

    def rds_file(proxy: str) -> str:
        if scopes[proxy].own_routes:
            return names.proxy_rds(scopes[proxy].caller)
        if alone(proxy):
            return names.proxy_rds(proxy)
        return names.RDS if scopes[proxy].full else names.scope_rds(scopes[proxy].hosts)

    def cds_file(proxy: str) -> str:
        """The CDS file of `proxy`'s clusters (the bootstrap names names.proxy_cds: this file, or a
        link to it)."""
        if not shared_cds or alone(proxy):
            return names.proxy_cds(proxy)
        return names.CDS if scopes[proxy].full else names.scope_cds(scopes[proxy].hosts)

    files = out.files
    for name in proxies:  # secrets first: listeners and clusters name them
        if name in sds:
            for secret_name, secret in tls.secrets(identity_dir(sidecars[name], options)).items():
                files[names.output_path(names.sds(name, secret_name))] = \
                    bootstrap.discovery_response(names.SECRET, [secret], dumps)
    if shared_cds:   # one file per scope: its clusters and the applications of the sidecars sharing it
        for members in groups.values():
            files[names.output_path(cds_file(members[0]))] = bootstrap.discovery_response(
                names.CLUSTER, outbound_clusters(members[0], None)
                + [clusters.inbound_cluster(sidecars[name]) for name in sorted(members)]
                + bootstrap.collector(program.tracing), dumps)
        # each sidecar's own CDS path, named by its bootstrap: a link to its scope's file, replaced
        # (and so reloaded by Envoy) when its scope or that file changes
        for name in proxies:
            if not alone(name):   # (alone, its scope's file is that path)
                out.links[names.output_path(names.proxy_cds(name))] = Link(names.link_target(
                    names.proxy_cds(name), cds_file(name)))
    else:            # one file per sidecar: its clusters name its own secrets
        for name in proxies:
            files[names.output_path(cds_file(name))] = bootstrap.discovery_response(
                names.CLUSTER, outbound_clusters(name, sds.get(name)) + [clusters.inbound_cluster(sidecars[name])]
                + bootstrap.collector(program.tracing), dumps)
    for (hosts, own), members in route_groups.items():   # routes before the listeners that name them
        path = names.output_path(rds_file(members[0]))
        out.links_before = out.links_before or path
        files[path] = bootstrap.discovery_response(names.ROUTE_CONFIGURATION, [route_config(hosts, own)], dumps)
    cors = any(r.cors is not None for s in program.services for r in s.routes)   # the CORS filter's there
    for name in proxies:
        svc = sidecars[name]
        rds_source = listeners.rds(f"{where}/{rds_file(name)}")
        lds = [listeners.inbound_listener(svc, sds.get(name), program.tracing),
               listeners.outbound_listener(svc, rds_source, program.tracing, cors)]
        files[names.output_path(names.lds(name))] = bootstrap.discovery_response(names.LISTENER, lds, dumps)
    for name in proxies:
        svc = sidecars[name]
        if mode == "xds":
            doc = bootstrap.xds_bootstrap(svc, where, names.proxy_cds(name), program.tracing)
        else:
            inline = {"route_config": route_config(scopes[name].hosts, scopes[name].caller)}
            doc = bootstrap.static_bootstrap(
                svc, [listeners.inbound_listener(svc, sds.get(name), program.tracing),
                      listeners.outbound_listener(svc, inline, program.tracing, cors)],
                outbound_clusters(name, sds.get(name)) + [clusters.inbound_cluster(svc)], program.tracing)
        files[names.bootstrap_file(name)] = dumps(doc)
    return out
