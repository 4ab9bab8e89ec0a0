"""The native backend: the IR -> one config file per sidecar for the native proxy (runtime_proxy/).

`SERVICE.native.json` is the contract of runtime_proxy/config/model.py (`Config`, schema version
2): the IR slice that one sidecar needs. It transcribes, and mostly not even that: routes,
subsets, limits, outlier detection, retry budgets, connection settings and authorization are the
IR's own nodes, serialised as they are (orjson writes the dataclasses field by field), so the
native config has the IR's shapes and units and cannot drift from it (tests/test_native_schema.py
holds the contract's models to the IR's fields). Only the envelope is built here:

- the sidecar's listeners, its local application (address, cluster, thresholds, connection
  settings) and its limits on clients, all from the IR's `Sidecar`;
- the service's own authorization (enforced on the inbound listener);
- `mtls`: what the inbound listener accepts and the sidecar's identity files, or null files when
  it needs none (backends.base.needs_identity);
- the destinations of the sidecar's scope (compiler/ir/scope.py; sorted by name) with the IR's
  names (clusters, Host domains as the sidecar's namespace sees them: `names.seen_from`, SNI) and
  their routes as this sidecar takes them (`routes_for`:
  a route's `caller` conditions are resolved here, so the config holds only its own routes),
  so that stats and routing read alike in both targets; a
  service that its destinations' routes send to but that is outside the scope is there with no
  domains and no routes (its subsets only), so a request addressed to it gets the answer of an
  unknown Host, 404, as in Envoy; a destination whose mode is not `disable` is called over mTLS,
  as Istio's auto mTLS does;
- `version`: a short hash of everything else, which the proxy shows and logs on reload.

Every default the proxy applies comes from here (the IR's defaults), never from the proxy. The
output is deterministic: sorted keys in the envelope, the IR's field order inside its nodes, two-
space indentation. It never imports pydantic or runtime_proxy (compiling stays fast); the tests
validate every golden config against the pydantic models and the committed JSON Schema. Nothing in
the IR needs a diagnostic here: the native proxy runs every construct as docs/language.md says.
"""

from __future__ import annotations

import hashlib
import posixpath

from compiler import ir
from compiler.backends.base import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    Emitted,
    Options,
    identity_dir,
    mtls_anywhere,
    needs_identity,
)
from compiler.ir import names, scope, workloads

SCHEMA_VERSION = 3          # runtime_proxy.config.model.SCHEMA_VERSION (not imported: see above)
VERSION_LENGTH = 16         # hex digits of the content hash in `version`


def emit(program: ir.Program, proxies: list[str], options: Options, sources=None) -> Emitted:
    """One `PROXY.native.json` per proxy named in `proxies` (`SERVICE`, or `SERVICE.SUBSET` for a
    workload's own sidecar: compiler/ir/workloads.py)."""
    import orjson

    services = {svc.name: svc for svc in program.services}
    callable_: dict[str, dict] = {}
    reached: dict[str, dict] = {}

    def destinations(name: str) -> list[dict]:
        """The destinations of `name`'s scope: callable by Host, or only reached by their routes."""
        s = scopes[name]
        hosts = set(s.hosts)
        out = []
        ns = services[s.caller].namespace
        for dest in s.services:
            if dest in hosts:
                d = services[dest]
                seen = {"domains": names.seen_from(dest, d.namespace, d.domains, ns)} if "/" in dest else {}
                if s.caller in named[dest]:   # routes of its own service (`caller`): only its sidecars'
                    out.append({**destination(d), "routes": scope.routes_for(d, s.caller), **seen})
                    continue
                if dest not in callable_:
                    callable_[dest] = destination(d)
                    if named[dest]:       # the routes without the other callers' matches
                        callable_[dest]["routes"] = scope.routes_for(d, "")
                out.append({**callable_[dest], **seen} if seen else callable_[dest])
            else:
                if dest not in reached:
                    reached[dest] = {**destination(services[dest]), "domains": (), "routes": ()}
                out.append(reached[dest])
        return out

    from compiler.backends.located import located

    labelled = [located("E0750", f"subset `{sub.name}` of service `{svc.name}` selects Kubernetes pods by label: the "
                                 "native proxy needs its endpoints", sub.source, sources or {},
                        hint="a label-selected subset is for `--target istio`; for the native proxy, write "
                             "`endpoints [...]`")
                for svc in program.services for sub in svc.subsets if sub.labels]
    if labelled:   # docs/language.md, "Label-selected subsets"
        return Emitted(diagnostics=labelled)
    sidecars = workloads.views(program, list(proxies))
    by_service = scope.scopes(program, list(dict.fromkeys(workloads.service_of(p) for p in proxies)))
    scopes = {p: by_service[workloads.service_of(p)] for p in proxies}
    named = {s.name: scope.named_callers(s) for s in program.services}
    files: dict[str, bytes] = {}
    anywhere = mtls_anywhere(program)
    for name in proxies:
        svc = sidecars[name]
        files_section = identity_files(svc, options) if needs_identity(program, svc, anywhere) else None
        config = sidecar_config(svc, destinations(name), {"mode": svc.mtls.mode, "files": files_section},
                                program.tracing)
        files[f"{name}.native.json"] = orjson.dumps(
            config, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    return Emitted(files=files)


def sidecar_config(svc: ir.Service, destinations: list[dict], mtls: dict, tracing: ir.Tracing | None = None) -> dict:
    """The whole config of `svc`'s sidecar; `destinations` are those of its scope (see `destination`),
    `mtls` its mode and identity files, `tracing` the mesh's (written only when there is one)."""
    import orjson

    side = svc.sidecar
    config = {
        "schema_version": SCHEMA_VERSION,
        "service": svc.name,
        "namespace": svc.namespace,
        "identity": svc.identity,
        "listeners": {
            "inbound": address(side, side.inbound_port),
            "outbound": address(side, side.outbound_port),
            "admin": address(side, side.admin_port),
        },
        "app": {"host": side.app_host, "port": side.app_port, "discovery": side.app_discovery,
                "cluster": side.app_cluster, "limits": side.app_limits, "upstream": svc.upstream},
        "normalization": {"escaped_slashes": side.escaped_slashes},
        "proxy": {"max_request_headers": side.max_request_headers,
                  "max_request_headers_bytes": side.max_request_headers_bytes,
                  "max_request_body_bytes": side.max_request_body_bytes,
                  "idle_timeout_ms": side.idle_timeout_ms,
                  "request_headers_timeout_ms": side.request_headers_timeout_ms,
                  "stream_idle_timeout_ms": side.stream_idle_timeout_ms,
                  "max_connections": side.max_connections, "drain_timeout_ms": side.drain_timeout_ms,
                  # written only when set: a config without it means "no access log"
                  **({"access_log": side.access_log} if side.access_log else {})},
        "authorization": svc.authorization,
        "mtls": mtls,
        "services": destinations,
    }
    if tracing is not None:
        config["tracing"] = tracing
    # the hash of the file's content without `version` (the envelope sorted, the IR nodes in field order)
    digest = hashlib.sha256(orjson.dumps(config, option=orjson.OPT_SORT_KEYS)).hexdigest()
    config["version"] = digest[:VERSION_LENGTH]
    return config


def identity_files(svc: ir.Service, options: Options) -> dict:
    """Where the sidecar's identity files are at run time (`--certs-dir` over `certificates`)."""
    directory = identity_dir(svc, options)
    return {"directory": directory, "cert": posixpath.join(directory, CERT_FILE),
            "key": posixpath.join(directory, KEY_FILE), "ca": posixpath.join(directory, CA_FILE)}


def address(side: ir.Sidecar, port: int) -> dict:
    return {"host": side.listen_host, "port": port}


def destination(svc: ir.Service) -> dict:
    """A service as every caller's sidecar sees it: the IR's nodes, and whether to call it over mTLS."""
    return {
        "name": svc.name,
        "namespace": svc.namespace,
        "identity": svc.identity,
        "port": svc.port,
        "domains": svc.domains,
        "sni": svc.sni,
        "source": svc.source,
        "subsets": svc.subsets,
        "limits": svc.limits,
        "outlier": svc.outlier,
        "retry_budget": svc.retry_budget,
        "upstream": svc.upstream,
        "routes": svc.routes,
        "mtls": svc.mtls.mode != "disable",
    }
