"""A snapshot is checked before it is published: every name one of its resources references
exists in it (route configurations the listeners load over RDS, clusters the routes and
listeners send to, secrets the TLS contexts load over SDS). A broken snapshot is never served."""

from __future__ import annotations

from compiler.control.snapshot import CLUSTER, LISTENER, ROUTE, SECRET, NodeSnapshot


def walk(node, found: dict[str, set[str]]) -> None:
    """Add to `found` (type URL -> names) every name that `node` references."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("cluster", "cluster_name") and isinstance(value, str):
                found[CLUSTER].add(value)
            elif key == "weighted_clusters" and isinstance(value, dict):
                found[CLUSTER].update(c["name"] for c in value.get("clusters", []))
            elif key == "rds" and isinstance(value, dict) and "route_config_name" in value:
                found[ROUTE].add(value["route_config_name"])
            elif key in ("tls_certificate_sds_secret_configs",) and isinstance(value, list):
                found[SECRET].update(s["name"] for s in value if "sds_config" in s)
            elif key == "validation_context_sds_secret_config" and isinstance(value, dict) and "sds_config" in value:
                found[SECRET].add(value["name"])
            walk(value, found)
    elif isinstance(node, list):
        for value in node:
            walk(value, found)


def references(snap: NodeSnapshot) -> dict[str, set[str]]:
    """The names of each type that the snapshot's listeners, routes and clusters reference."""
    found: dict[str, set[str]] = {CLUSTER: set(), ROUTE: set(), SECRET: set()}
    for type_url in (LISTENER, ROUTE, CLUSTER):
        for resource in snap.json.get(type_url, {}).values():
            walk(resource if type_url != CLUSTER else resource.get("transport_socket", {}), found)
    return found


def problems(snap: NodeSnapshot, found: dict[str, set[str]] | None = None) -> list[str]:
    """What the snapshot references and does not contain, one line each (empty: consistent).
    `found`: its `references`, when already known (the snapshot builder keeps them)."""
    out = []
    for type_url, names in (found if found is not None else references(snap)).items():
        have = snap.json.get(type_url, {})
        kind = type_url.rpartition(".")[2]
        out += [f"{snap.node}: {kind} {name!r} is referenced but not in the snapshot"
                for name in sorted(names) if name not in have]
    return out
