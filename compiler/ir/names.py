"""Names decided once, during lowering, and carried in the IR: neither backend nor the native
proxy builds one. Derived from IR names only (never from positions or counters), so a
recompile renames nothing that did not change, and both targets name and count alike."""

from __future__ import annotations

from collections.abc import Iterable


def outbound_cluster(service: str, subset: str) -> str:
    """The cluster of one subset of a destination service (Istio's `outbound|PORT|SUBSET|HOST`,
    without the port: a service has one)."""
    return f"outbound|{subset}|{service}"


def inbound_cluster(service: str, subset: str | None = None) -> str:
    """The cluster of a service's own application, behind its sidecar's inbound listener; of a
    workload's (a subset with its own sidecar), `inbound|SUBSET|SERVICE`."""
    return f"inbound|{service}" if subset is None else f"inbound|{subset}|{service}"


def workload_node(service: str, subset: str) -> str:
    """The proxy of a workload (a subset with its own sidecar): its node id and its files' name.
    Neither name holds a dot, so the first dot splits it."""
    return f"{service}.{subset}"


def domains(service: str, namespace: str, port: int) -> tuple[str, ...]:
    """The `Host` values that address a service: its name and `NAME.NAMESPACE`, each with and
    without the port (Envoy's virtual-host domains; matched case-insensitively)."""
    return (service, f"{service}:{port}", f"{service}.{namespace}", f"{service}.{namespace}:{port}")


def service_for_host(services: Iterable[tuple[str, Iterable[str]]], host: str) -> str | None:
    """The service whose Host domains (`domains`, per (name, domains) of `services`) hold `host`,
    ASCII case-insensitive, as a sidecar's table looks a Host up: the one lookup of `meshc check`'s
    tests, `meshc test` and `meshc trace`. None when no service answers to it."""
    wanted = host.encode("utf-8").lower()
    for name, names in services:
        if any(d.encode("utf-8").lower() == wanted for d in names):
            return str(name)
    return None


def sni(service: str, namespace: str) -> str:
    """The TLS server name a caller's sidecar sends to the service over mTLS."""
    return f"{service}.{namespace}"
