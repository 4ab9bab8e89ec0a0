"""Names decided once, during lowering, and carried in the IR: neither backend nor the native
proxy builds one. Derived from IR names only (never from positions or counters), so a
recompile renames nothing that did not change, and both targets name and count alike."""

from __future__ import annotations


def outbound_cluster(service: str, subset: str) -> str:
    """The cluster of one subset of a destination service (Istio's `outbound|PORT|SUBSET|HOST`,
    without the port: a service has one)."""
    return f"outbound|{subset}|{service}"


def inbound_cluster(service: str) -> str:
    """The cluster of a service's own application, behind its sidecar's inbound listener."""
    return f"inbound|{service}"


def domains(service: str, namespace: str, port: int) -> tuple[str, ...]:
    """The `Host` values that address a service: its name and `NAME.NAMESPACE`, each with and
    without the port (Envoy's virtual-host domains; matched case-insensitively)."""
    return (service, f"{service}:{port}", f"{service}.{namespace}", f"{service}.{namespace}:{port}")


def sni(service: str, namespace: str) -> str:
    """The TLS server name a caller's sidecar sends to the service over mTLS."""
    return f"{service}.{namespace}"
