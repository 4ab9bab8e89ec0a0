"""Small native configs for the decision-module tests: one destination service `svc` with
subsets `a`, `b`, `c`, validated by the pydantic models and compiled into a table."""

from __future__ import annotations

from runtime_proxy.config.model import Config
from runtime_proxy.decide.table import Table, compile_config


def route(name="r", *, matches=None, to="a", split=None, retry=None, fault=None, mirror=None, mirrors=None,
          request_headers=None, response_headers=None, timeout_ms=15000) -> dict:
    r = {"name": name, "source": LOC, "matches": matches or [{}], "timeout_ms": timeout_ms}
    if split is not None:
        r["split"] = split
    else:
        r["to"] = {"service": "svc", "subset": to}
    if mirror is not None:
        mirrors = [mirror]
    for key, value in (("retry", retry), ("fault", fault), ("mirrors", mirrors),
                       ("request_headers", request_headers), ("response_headers", response_headers)):
        if value is not None:
            r[key] = value
    return r


def split(*weights: tuple[str, int], key_header: str | None = "x-k") -> dict:
    return {"targets": [{"service": "svc", "subset": s, "weight": w} for s, w in weights],
            "key_header": key_header, "total_weight": sum(w for _, w in weights)}


LOC = {"file": "t.mesh", "line": 1, "column": 1}
UPSTREAM = {"connect_timeout_ms": 1000, "idle_timeout_ms": 3_600_000, "max_response_headers_bytes": 61_440}
LIMITS = {"max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3}


def address(port: int = 0) -> dict:
    return {"host": "127.0.0.1", "port": port}


def config(routes=(), rules=(), default="allow", escaped_slashes="reject", outlier=None,
           retry_budget=None) -> dict:
    """The JSON data of a valid config (checked by the pydantic models, as the proxy's loader does)."""
    subsets = [{"name": n, "cluster": f"outbound|{n}|svc", "discovery": "static",
                "endpoints": [{"host": "127.0.0.1", "port": 9000 + i}], "source": LOC}
               for i, n in enumerate("abc")]
    data = {
        "schema_version": 3, "version": "test", "service": "svc", "namespace": "ns",
        "identity": "spiffe://td/ns/ns/sa/svc",
        "listeners": {"inbound": address(), "outbound": address(), "admin": address()},
        "app": {"host": "127.0.0.1", "port": 8080, "discovery": "static", "cluster": "inbound|svc",
                "limits": LIMITS, "upstream": UPSTREAM},
        "normalization": {"escaped_slashes": escaped_slashes},
        "proxy": {"max_request_headers": 100, "max_request_headers_bytes": 61_440, "max_request_body_bytes": 0,
                  "idle_timeout_ms": 3_600_000, "request_headers_timeout_ms": 10_000,
                  "stream_idle_timeout_ms": 300_000, "max_connections": 4096, "drain_timeout_ms": 5000},
        "authorization": {"default": default, "rules": list(rules)},
        "mtls": {"mode": "disable", "files": None},
        "services": [{
            "name": "svc", "namespace": "ns", "identity": "spiffe://td/ns/ns/sa/svc", "port": 8080,
            "domains": ["svc", "svc:8080", "svc.ns", "svc.ns:8080"], "sni": "svc.ns", "source": LOC,
            "subsets": subsets,
            "limits": {"max_connections": 4, "max_pending_requests": 3, "max_requests": 2, "max_retries": 1},
            "outlier": outlier, "retry_budget": retry_budget, "upstream": UPSTREAM,
            "routes": list(routes) or [route()], "mtls": False,
        }],
    }
    return Config.model_validate(data).model_dump(mode="json")


def table(**kwargs) -> Table:
    return compile_config(config(**kwargs))


def service(**kwargs):
    return table(**kwargs).services["svc"]
