"""A snapshot is checked before it is published: every name one of its resources references
exists in it (route configurations the listeners load over RDS, clusters the routes and
listeners send to, secrets the TLS contexts load over SDS). A broken snapshot is never served."""

from __future__ import annotations

from compiler.control.snapshot import CLUSTER, LISTENER, ROUTE, SECRET, NodeSnapshot, walk


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
