"""Names decided once, during lowering, and carried in the IR: neither backend nor the native
proxy builds one. Derived from IR names only (never from positions or counters), so a
recompile renames nothing that did not change, and both targets name and count alike."""

from __future__ import annotations

from collections.abc import Iterable


def qualified(name: str, namespace: str) -> str:
    """The name of a service whose name is declared in several namespaces: `NAMESPACE/NAME`
    (compiler/semantic/namespaces.py). Every other service is named by its name alone."""
    return f"{namespace}/{name}"


def short_name(service: str) -> str:
    """The service's own name, without the namespace a qualified name carries: what its Kubernetes
    names, its SNI and its default SPIFFE ID are made of."""
    return service.rpartition("/")[2]


def seen_from(service: str, namespace: str, domains_: tuple[str, ...], caller_namespace: str | None) -> tuple[str, ...]:
    """The Host domains of a destination as a caller of `caller_namespace` sees them (None: a
    caller of no namespace, such as a test request from no service). A service whose name is
    declared in several namespaces (a qualified name) answers to its short name, `NAME` and
    `NAME:PORT` (the first two of `domains`), only in its own namespace's sidecars, as Kubernetes
    resolves a short name in the caller's namespace; every other service to all of its domains."""
    if "/" not in service or caller_namespace == namespace:
        return domains_
    return domains_[2:]


def host_of(service: str) -> str:
    """The Host every caller reaches `service` (a key) by: its name, or for a name several
    namespaces declare (`NAMESPACE/NAME`) `NAME.NAMESPACE`: a short name means the caller's
    namespace's one (language §5.1)."""
    namespace, _, name = service.rpartition("/")
    return f"{name}.{namespace}" if namespace else service


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


def domains(service: str, namespace: str, port: int, cluster_domain: str = "cluster.local",
            hosts: Iterable[str] = ()) -> tuple[str, ...]:
    """The `Host` values that address a service (Envoy's virtual-host domains; matched
    case-insensitively): its name, `NAME.NAMESPACE`, the Kubernetes forms `NAME.NAMESPACE.svc` and
    `NAME.NAMESPACE.svc.CLUSTER_DOMAIN`, each with and without the port, then its written `hosts`:
    an exact name or a `*.SUFFIX` wildcard with and without the port (one written with the port as
    it is), a `PREFIX.*` wildcard or the catch-all `*` as written (they match any port)."""
    base = (service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.{cluster_domain}")
    out = [d for b in base for d in (b, f"{b}:{port}")]
    for h in hosts:
        h = h.lower()
        if h == "*" or h.endswith("*") or ":" in h:
            out.append(h)
        else:
            out += (h, f"{h}:{port}")
    return tuple(dict.fromkeys(out))


def written_hosts(domains_: tuple[str, ...], port_: int) -> list[str]:
    """A service's written `hosts [...]` as written (lower-cased), read back from its domains
    (`domains` above: the eight Kubernetes names first, then each written host, an
    exact name or `*.SUFFIX` followed by its `:PORT` form)."""
    out: list[str] = []
    port = f":{port_}"
    for d in domains_[8:]:
        if d.endswith(port) and d[:-len(port)] in out:
            continue
        out.append(d)
    return out


class HostIndex:
    """Envoy 1.40's virtual host selection over (name, domains) pairs: an exact domain, else the
    longest `*SUFFIX` wildcard, else the longest `PREFIX*` wildcard, else `*`; a wildcard never
    matches by its empty part alone (`*.a.com` does not take `.a.com`), and a domain claimed twice
    keeps its first owner (the checks make that an error). ASCII case-insensitive."""
    __slots__ = ("exact", "suffixes", "prefixes", "star")

    def __init__(self, services: Iterable[tuple[str, Iterable[str]]]) -> None:
        self.exact: dict[bytes, str] = {}
        suffixes: list[tuple[bytes, str]] = []
        prefixes: list[tuple[bytes, str]] = []
        self.star: str | None = None
        for name, names in services:
            for d in names:
                key = d.encode("utf-8").lower()
                if key == b"*":
                    self.star = self.star or str(name)
                elif key.startswith(b"*"):
                    suffixes.append((key[1:], str(name)))
                elif key.endswith(b"*"):
                    prefixes.append((key[:-1], str(name)))
                else:
                    self.exact.setdefault(key, str(name))
        # longest first; a stable sort keeps the first owner of equal wildcards first
        self.suffixes = sorted(suffixes, key=lambda x: -len(x[0]))
        self.prefixes = sorted(prefixes, key=lambda x: -len(x[0]))

    def lookup(self, host: str) -> str | None:
        wanted = host.encode("utf-8").lower()
        name = self.exact.get(wanted)
        if name is not None:
            return name
        for suffix, name in self.suffixes:
            if len(wanted) > len(suffix) and wanted.endswith(suffix):
                return name
        for prefix, name in self.prefixes:
            if len(wanted) > len(prefix) and wanted.startswith(prefix):
                return name
        return self.star


def service_for_host(services: Iterable[tuple[str, Iterable[str]]], host: str) -> str | None:
    """The service whose Host domains (`domains`, per (name, domains) of `services`) hold `host`,
    as a sidecar's table looks a Host up (`HostIndex`: exact, then wildcards, then `*`): the one
    lookup of `meshc check`'s tests, `meshc test` and `meshc trace`. None when no service answers
    to it."""
    return HostIndex(services).lookup(host)


def sni(service: str, namespace: str) -> str:
    """The TLS server name a caller's sidecar sends to the service over mTLS."""
    return f"{service}.{namespace}"
