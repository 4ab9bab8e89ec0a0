"""The native backend: the IR -> one config file per sidecar for the native proxy (runtime_proxy/).

`SERVICE.native.json` is the contract of runtime_proxy/config.py (`Config`, schema_version 1): the
IR slice that one sidecar needs, in the IR's units, plus the sidecar's own addresses. This module
transcribes; every decision (defaults, order, resolution) was made before the IR. It writes plain
dicts and never imports pydantic or runtime_proxy (compiling stays fast); the tests validate every
golden config against the pydantic models and the committed JSON Schema.

Each file holds:
- the sidecar's listeners (inbound, outbound, admin on 127.0.0.1 at the service's sidecar ports),
  the local application's address and the `escaped_slashes` setting;
- the service's own authorization (enforced on the inbound listener);
- `mtls`: what the inbound listener accepts (strict / permissive / disable) and the sidecar's
  identity files, or null when it needs none (backends.needs_identity);
- every service of the program as a destination (sorted by name), with the same `Host` domains
  and the same cluster names (`outbound|SUBSET|SERVICE`) as the Envoy target, so that stats and
  routing read alike on both; a destination whose mode is not `disable` is called over mTLS
  (`mtls`, with the Envoy target's SNI `NAME.NAMESPACE`), as Istio's auto mTLS does;
- `version`: a short hash of everything else, which the proxy shows and logs on reload.

Output is deterministic: sorted keys, two-space indentation, the same bytes for the same IR.
Nothing in the IR needs a diagnostic here: the native proxy runs every construct as
docs/language.md specifies it.
"""

from __future__ import annotations

import hashlib
import posixpath

from compiler import ir
from compiler.backends.base import CA_FILE, CERT_FILE, KEY_FILE, Emitted, Options, identity_dir, needs_identity

SCHEMA_VERSION = 1          # runtime_proxy.config.SCHEMA_VERSION (not imported: see above)
LISTEN_HOST = "127.0.0.1"   # sidecar listeners bind the loopback interface only
VERSION_LENGTH = 16         # hex digits of the content hash in `version`


def emit(program: ir.Program, proxies: list[str], options: Options, sources=None) -> Emitted:
    """One `SERVICE.native.json` per service named in `proxies`."""
    import orjson

    destinations = [destination(svc) for svc in program.services]
    files: dict[str, bytes] = {}
    for name in proxies:
        svc = program.service(name)
        config = sidecar_config(svc, destinations, mtls(svc, options) if needs_identity(program, svc) else
                                {"mode": svc.mtls.mode, "files": None})
        files[f"{name}.native.json"] = orjson.dumps(
            config, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    return Emitted(files=files)


def sidecar_config(svc: ir.Service, destinations: list[dict], mtls_section: dict) -> dict:
    """The whole config of `svc`'s sidecar; `destinations` are every service, already lowered,
    `mtls_section` its `mtls` (see `mtls`)."""
    import orjson

    side = svc.sidecar
    config = {
        "schema_version": SCHEMA_VERSION,
        "service": svc.name,
        "namespace": svc.namespace,
        "identity": svc.identity,
        "listeners": {
            "inbound": address(side.inbound_port),
            "outbound": address(side.outbound_port),
            "admin": address(side.admin_port),
        },
        "app": {"host": side.app_host, "port": side.app_port},
        "normalization": {"escaped_slashes": side.escaped_slashes},
        "authorization": authorization(svc.authorization),
        "mtls": mtls_section,
        "services": destinations,
    }
    digest = hashlib.sha256(orjson.dumps(config, option=orjson.OPT_SORT_KEYS)).hexdigest()
    config["version"] = digest[:VERSION_LENGTH]
    return config


def mtls(svc: ir.Service, options: Options) -> dict:
    """The sidecar's mode and identity files (for a sidecar that needs them)."""
    directory = identity_dir(svc, options)
    return {"mode": svc.mtls.mode, "files": {
        "directory": directory,
        "cert": posixpath.join(directory, CERT_FILE),
        "key": posixpath.join(directory, KEY_FILE),
        "ca": posixpath.join(directory, CA_FILE),
    }}


def address(port: int) -> dict:
    return {"host": LISTEN_HOST, "port": port}


def cluster_name(service: str, subset: str) -> str:
    """The Envoy target's cluster name of a subset (compiler/backends/envoy/names.py)."""
    return f"outbound|{subset}|{service}"


def domains(svc: ir.Service) -> list[str]:
    """The `Host` values that address the service: the Envoy target's virtual-host domains."""
    name, ns, port = svc.name, svc.namespace, svc.port
    return [name, f"{name}:{port}", f"{name}.{ns}", f"{name}.{ns}:{port}"]


# ---- destinations ------------------------------------------------------------------------------

def destination(svc: ir.Service) -> dict:
    return {
        "name": svc.name,
        "namespace": svc.namespace,
        "identity": svc.identity,
        "port": svc.port,
        "domains": domains(svc),
        "source": svc.source,
        "subsets": [subset(svc.name, s) for s in svc.subsets],
        "limits": {
            "max_connections": svc.limits.max_connections,
            "max_pending_requests": svc.limits.max_pending_requests,
            "max_requests": svc.limits.max_requests,
            "max_retries": svc.limits.max_retries,
        },
        "outlier": outlier(svc.outlier) if svc.outlier is not None else None,
        "retry_budget": ({"percent": svc.retry_budget.percent,
                          "min_concurrency": svc.retry_budget.min_concurrency}
                         if svc.retry_budget is not None else None),
        "routes": [route(r) for r in svc.routes],
        "mtls": svc.mtls.mode != "disable",
        "sni": f"{svc.name}.{svc.namespace}",
    }


def subset(service: str, s: ir.Subset) -> dict:
    return {
        "name": s.name,
        "cluster": cluster_name(service, s.name),
        "discovery": s.discovery,
        "endpoints": [{"host": e.host, "port": e.port} for e in s.endpoints],
        "source": s.source,
    }


def outlier(o: ir.Outlier) -> dict:
    return {
        "consecutive_5xx": o.consecutive_5xx,
        "consecutive_gateway_errors": o.consecutive_gateway_errors,
        "interval_ms": o.interval_ms,
        "base_ejection_ms": o.base_ejection_ms,
        "max_ejection_percent": o.max_ejection_percent,
    }


# ---- routes ---------------------------------------------------------------------------------------

def route(r: ir.Route) -> dict:
    return {
        "name": r.name,
        "source": r.source,
        "matches": [match(m) for m in r.matches],
        "to": {"service": r.to.service, "subset": r.to.subset} if r.to is not None else None,
        "split": split(r.split) if r.split is not None else None,
        "timeout_ms": r.timeout_ms,
        "retry": retry(r.retry) if r.retry is not None else None,
        "fault": fault(r.fault) if r.fault is not None else None,
        "mirror": ({"service": r.mirror.service, "subset": r.mirror.subset, "percent": r.mirror.percent}
                   if r.mirror is not None else None),
        "request_headers": header_changes(r.request_headers),
        "response_headers": header_changes(r.response_headers),
    }


def match(m: ir.Match) -> dict:
    return {
        "path": path_match(m.path),
        "headers": [header_match(h) for h in m.headers],
        "query": [{"name": q.name, "kind": q.kind, "value": q.value} for q in m.query],
        "methods": list(m.methods) if m.methods is not None else None,
    }


def path_match(p: ir.PathMatch | None) -> dict | None:
    return {"kind": p.kind, "value": p.value} if p is not None else None


def header_match(h: ir.HeaderMatch) -> dict:
    return {"name": h.name, "kind": h.kind, "value": h.value, "invert": h.invert,
            "ignore_case": h.ignore_case}


def split(s: ir.Split) -> dict:
    return {
        "targets": [{"service": t.service, "subset": t.subset, "weight": t.weight} for t in s.targets],
        "key_header": s.key_header,
        "total_weight": s.total_weight,
    }


def retry(r: ir.Retry) -> dict:
    return {
        "num_retries": r.num_retries,
        "retry_on": list(r.retry_on),
        "retriable_status_codes": list(r.retriable_status_codes),
        "per_try_timeout_ms": r.per_try_timeout_ms,
        "backoff_base_ms": r.backoff_base_ms,
        "backoff_max_ms": r.backoff_max_ms,
        "allow_non_idempotent": r.allow_non_idempotent,
    }


def fault(f: ir.Fault) -> dict:
    return {
        "abort": ({"http_status": f.abort.http_status, "percent": f.abort.percent}
                  if f.abort is not None else None),
        "delay": ({"duration_ms": f.delay.duration_ms, "percent": f.delay.percent}
                  if f.delay is not None else None),
    }


def header_changes(c: ir.HeaderChanges) -> dict:
    return {
        "remove": list(c.remove),
        "set": [[n, v] for n, v in c.set],
        "add": [[n, v] for n, v in c.add],
    }


# ---- the sidecar's own service ------------------------------------------------------------------

def authorization(a: ir.Authorization) -> dict:
    return {
        "default": a.default,
        "rules": [authz_rule(r) for r in a.rules],
        "source": a.source,
    }


def authz_rule(r: ir.AuthzRule) -> dict:
    return {
        "name": r.name,
        "action": r.action,
        "source": r.source,
        "principals": ([{"kind": p.kind, "value": p.value} for p in r.principals]
                       if r.principals is not None else None),
        "path": path_match(r.path),
        "methods": list(r.methods) if r.methods is not None else None,
        "headers": [header_match(h) for h in r.headers],
    }
