"""Istio's units and names: durations, hosts, the workload selector, provenance."""

from __future__ import annotations

from compiler import ir
from compiler.ir.names import short_name, written_hosts

API_NETWORKING = "networking.istio.io/v1"
API_SECURITY = "security.istio.io/v1"
API_ENVOYFILTER = "networking.istio.io/v1alpha3"   # EnvoyFilter has no v1

# The pod label a workload of a meshc service carries, and that every selector of the output uses
# (Istio's own convention, `app`: docs/kubernetes.istio.md "Workloads").
APP_LABEL = "app"
# The label of a static endpoint (a ServiceEntry's endpoint) naming its subset.
SUBSET_LABEL = "meshc.dev/subset"
# The ServiceEntry's port name, and the protocol Istio gives it (meshc routes HTTP).
PORT_NAME = "http"

_DURATIONS: dict[int, str] = {}


def duration(ms: int) -> str:
    """A duration both a protobuf Duration and Kubernetes' CEL `duration()` read: `2s`, `0.250s`."""
    text = _DURATIONS.get(ms)
    if text is None:
        seconds, millis = divmod(ms, 1000)
        text = _DURATIONS[ms] = f"{seconds}s" if millis == 0 else f"{seconds}.{millis:03d}s"
    return text


def fqdn(svc: ir.Service) -> str:
    """The Kubernetes host of a service, `NAME.NAMESPACE.svc.cluster.local`."""
    return f"{short_name(svc.name)}.{svc.namespace}.svc.cluster.local"


def istio_hosts(svc: ir.Service) -> tuple[list[str], list[str]]:
    """(the written hosts a VirtualService's `hosts` carries, those it cannot): Istio takes a DNS
    name with at least one dot (a dotless name is a short name, resolved against the namespace) or a
    `*.SUFFIX` wildcard; not a port, a `PREFIX.*` wildcard, nor `*` for the mesh (validation.go)."""
    carried, refused = [], []
    for h in written_hosts(svc.domains, svc.port):
        if h == "*" or h.endswith(".*") or ":" in h or "." not in h:
            refused.append(h)
        else:
            carried.append(h)
    return carried, refused


def selector(svc: ir.Service) -> dict:
    return {"matchLabels": {APP_LABEL: short_name(svc.name)}}


def where(loc: ir.Location | None) -> str | None:
    return None if loc is None else str(loc)


def percent(value: float) -> dict:
    return {"value": value}
