"""Sidecars that share a host (docs/language.md §5.9): their ports must differ (E0350).

A workload (a subset with its own `sidecar` block) that writes no `endpoints` is reached at its
own inbound listener on the loopback interface: the program puts it on the same host as its
callers, and so on the same host as every other such workload. Their bound ports (inbound,
outbound, admin) must all differ, and none may be the port of another one's local application
(an `app` on the loopback interface), nor may two of them have their applications on one port.
Sidecars with written endpoints (or the services' own) may run anywhere, so they are not
compared: the defaults (15006, 15001, 15000) are the same for all.
"""

from __future__ import annotations

from compiler.language.endpoints import parse_endpoint
from compiler.language.settings import SIDECAR_PORTS, sidecar_ports
from compiler.semantic.symbols import Context
from compiler.syntax import ast

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def written_settings(svc: ast.Service, sub: ast.Subset | None = None) -> dict[str, object]:
    """The written settings of the service's own sidecar, or of a workload's as its sidecar runs
    them: the subset's block over the service's, and a subset's `ports` over the service's three
    ports (lowering reads this too)."""
    values = {s.key: s.values[0].value for s in (svc.sidecar.settings if svc.sidecar is not None else ())}
    if sub is None or sub.sidecar is None:
        return values
    if sub.sidecar.get("ports") is not None:
        for k in SIDECAR_PORTS:
            values.pop(k, None)
    values.update({s.key: s.values[0].value for s in sub.sidecar.settings})
    return values


def _in_range(values: dict[str, object]) -> bool:
    """Whether every port is one (else E0302 says so)."""
    for k in (*SIDECAR_PORTS, "ports"):
        v = values.get(k)
        if v is not None and (not isinstance(v, int) or v == ast.TOO_LARGE
                              or not 1 <= v <= (65533 if k == "ports" else 65535)):
            return False
    return True


def _merged_clash(ctx: Context, node: str, svc: ast.Service, sub: ast.Subset, values: dict[str, object]) -> bool:
    """E0312 when a workload's ports collide only once its block is laid over the service's (each
    block alone is checked by check_values); whether they collide at all (reported or not)."""
    assert sub.sidecar is not None
    ports = sidecar_ports(values)
    if len(set(ports.values())) == 3:
        return False
    alone = sidecar_ports({s.key: s.values[0].value for s in sub.sidecar.settings})
    # the ports the subset's block gives that meet one the service's block gives (none: the service's
    # block collides by itself, and check_values said so; the subset's block alone: said so too)
    mine = [k for k in SIDECAR_PORTS if sub.sidecar.get(k) is not None or sub.sidecar.get("ports") is not None]
    clashes = [(k, other) for k in mine for other in SIDECAR_PORTS if other not in mine and ports[k] == ports[other]]
    if len(set(alone.values())) == 3 and clashes:
        key, other = clashes[0]
        setting = sub.sidecar.get(key) or sub.sidecar.get("ports")
        assert setting is not None
        ctx.diags.add("E0312", f"the sidecar of {node}: its {key} port `{ports[key]}` is also its {other} port "
                      "(from the service's `sidecar` block)", setting.values[0].span,
                      hint="a workload's block is laid over the service's, setting by setting: write the other "
                           "port in the subset's block too, or `ports N` for all three")
    return True


def check_workloads(ctx: Context) -> None:
    taken: dict[int, str] = {}   # port -> what holds it ("the inbound port of reviews.v1")
    for name, svc in sorted(ctx.local_services(), key=lambda kv: kv[0]):
        for sub in svc.subsets:
            if sub.sidecar is None:
                continue
            values = written_settings(svc, sub)
            if not _in_range(values):
                continue   # (E0302)
            _merged_clash(ctx, f"{name}.{sub.name.value}", svc, sub, values)
            if sub.endpoints is not None:
                continue   # (not on this host: written endpoints)
            block = sub.sidecar

            def at(key: str, block: ast.Block = block) -> ast.Lit | ast.Block:
                """The subset's own setting that gave the value, else its block."""
                setting = block.get(key) or (block.get("ports") if key in SIDECAR_PORTS else None)
                return setting.values[0] if setting is not None else block

            node = f"{name}.{sub.name.value}"
            ports = sidecar_ports(values)
            written_app = values.get("app")
            app = parse_endpoint(written_app) if isinstance(written_app, str) else \
                (("127.0.0.1", svc.port.value) if svc.port is not None else None)
            mine: list[tuple[int, str, str]] = [(p, f"the {k} port of {node}", k) for k, p in ports.items()]
            clashes = [(key, f"{key} `{port}` ({taken[port]})") for port, _, key in mine if port in taken]
            if clashes:
                ctx.diags.add("E0350", f"the sidecar of {node} takes ports another sidecar on this host holds: "
                              + ", ".join(text for _, text in clashes), at(clashes[0][0]).span,
                              hint="sidecars on one host need their own ports: give this one "
                                   "`ports N` (N, N+1 and N+2), or `inbound`, `outbound` and `admin`")
            for port, what, _ in mine:
                taken.setdefault(port, what)
            if app is not None and app[0] in LOOPBACK and isinstance(app[1], int):
                held = taken.get(app[1])
                if held is not None and not held.endswith(f"of {node}"):   # (another's port or application)
                    ctx.diags.add("E0350", f"the application of {node} listens on `{app[1]}`, also {held}",
                                  at("app").span, hint="give the application another port with `app \"HOST:PORT\"`")
                taken.setdefault(app[1], f"the application port of {node}")
