"""Small native configs for the decision-module tests: one destination service `svc` with
subsets `a`, `b`, `c`, built through the pydantic models and compiled into a table."""

from __future__ import annotations

from runtime_proxy.config.model import Config
from runtime_proxy.decide.table import Table, compile_config


def route(name="r", *, matches=None, to="a", split=None, retry=None, fault=None, mirror=None,
          request_headers=None, response_headers=None, timeout_ms=15000) -> dict:
    r = {"name": name, "source": f"t.mesh:1:{len(name)}", "matches": matches or [{}], "timeout_ms": timeout_ms}
    if split is not None:
        r["split"] = split
    else:
        r["to"] = {"service": "svc", "subset": to}
    for key, value in (("retry", retry), ("fault", fault), ("mirror", mirror),
                       ("request_headers", request_headers), ("response_headers", response_headers)):
        if value is not None:
            r[key] = value
    return r


def split(*weights: tuple[str, int], key_header: str | None = "x-k") -> dict:
    return {"targets": [{"service": "svc", "subset": s, "weight": w} for s, w in weights],
            "key_header": key_header, "total_weight": sum(w for _, w in weights)}


def config(routes=(), rules=(), default="allow", escaped_slashes="reject", outlier=None,
           retry_budget=None) -> Config:
    subsets = [{"name": n, "cluster": f"outbound|{n}|svc", "discovery": "static",
                "endpoints": [{"host": "127.0.0.1", "port": 9000 + i}], "source": "t.mesh:1:1"}
               for i, n in enumerate("abc")]
    data = {
        "schema_version": 1, "version": "test", "service": "svc", "namespace": "ns",
        "identity": "spiffe://td/ns/ns/sa/svc",
        "listeners": {"inbound": {"port": 0}, "outbound": {"port": 0}, "admin": {"port": 0}},
        "app": {"host": "127.0.0.1", "port": 8080},
        "normalization": {"escaped_slashes": escaped_slashes},
        "authorization": {"default": default, "rules": list(rules)},
        "services": [{
            "name": "svc", "namespace": "ns", "identity": "spiffe://td/ns/ns/sa/svc", "port": 8080,
            "domains": ["svc", "svc:8080", "svc.ns", "svc.ns:8080"], "source": "t.mesh:1:1",
            "subsets": subsets,
            "limits": {"max_connections": 4, "max_pending_requests": 3, "max_requests": 2, "max_retries": 1},
            "outlier": outlier, "retry_budget": retry_budget,
            "routes": list(routes) or [route()],
        }],
    }
    return Config.model_validate(data)


def table(**kwargs) -> Table:
    return compile_config(config(**kwargs))


def service(**kwargs):
    return table(**kwargs).services["svc"]
