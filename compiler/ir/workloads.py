"""The proxies of a program: one per service's own sidecar and one per workload (a subset with its
own sidecar, docs/language.md §5.9). Read by both backends, `meshc compile --proxy`, `meshc serve`
and `meshc doctor`, so that a proxy is named and laid out the same way everywhere.

A proxy is named by its node id: `SERVICE` for the service's own sidecar (which serves the subsets
that are not workloads, and exists only when there is one), `SERVICE.SUBSET` for a workload's.
Files are named after the proxy (`reviews.v1.envoy.json`, `xds/reviews.v1/lds.json`,
`reviews.v1.native.json`), so a program without workloads keeps its layout.

Everything but the sidecar is the service's: identity (and identity files), authorization, routes,
scope. A backend sees a workload's proxy as its service with the workload's sidecar (`view`).
"""

from __future__ import annotations

from dataclasses import replace

from compiler.ir.model import Program, Service

__all__ = ["has_own_sidecar", "proxy_names", "service_of", "view", "views"]


def has_own_sidecar(svc: Service) -> bool:
    """Whether the service's own sidecar runs: some subset of it is not a workload."""
    return len(svc.workloads) < len(svc.subsets)


def proxy_names(program: Program) -> list[str]:
    """Every proxy of the program, service by service (the service's own, then its workloads')."""
    out: list[str] = []
    for svc in program.services:
        if has_own_sidecar(svc):
            out.append(svc.name)
        out += [w.sidecar.node for w in svc.workloads]
    return out


def service_of(proxy: str) -> str:
    """The service a proxy belongs to (service and subset names hold no dot)."""
    return proxy.partition(".")[0]


def view(svc: Service, proxy: str) -> Service:
    """`svc` as proxy `proxy` of it runs it: with the workload's sidecar for `SERVICE.SUBSET`."""
    if proxy == svc.name:
        return svc
    for w in svc.workloads:
        if w.sidecar.node == proxy:
            return replace(svc, sidecar=w.sidecar)
    raise KeyError(proxy)


def views(program: Program, proxies: list[str]) -> dict[str, Service]:
    """Each proxy of `proxies` (names of `proxy_names`) as its service seen by that proxy."""
    services = {s.name: s for s in program.services}
    return {p: view(services[service_of(p)], p) for p in proxies}
