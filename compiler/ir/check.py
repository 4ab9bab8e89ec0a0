"""The IR self-check: invariants every backend relies on. A failure is a compiler bug (exit 3),
never a user error: the checks before lowering must have caught every bad input."""

from __future__ import annotations

from compiler import ir

PATH_KINDS = {"exact", "prefix", "segment_prefix", "regex"}
HEADER_KINDS = {"exact", "prefix", "suffix", "regex", "present", "absent"}


def check_ir(program: ir.Program, known_subsets: set[tuple[str, str]] | None = None) -> list[str]:
    """Problems found in the IR (empty when it is sound). `known_subsets` adds (service, subset)
    pairs declared outside `program`, for a shard that holds part of the services."""
    problems: list[str] = []
    subsets = {(s.name, sub.name) for s in program.services for sub in s.subsets} | (known_subsets or set())
    names = [s.name for s in program.services]
    if names != sorted(set(names)):
        problems.append("services are not unique and sorted by name")

    def pct(value: float, where: str) -> None:
        if not 0 <= value <= 100:
            problems.append(f"{where}: percentage {value} outside 0..100")

    def ref(service: str, subset: str, where: str) -> None:
        if (service, subset) not in subsets:
            problems.append(f"{where}: unknown subset {service}.{subset}")

    clusters = [sub.cluster for s in program.services for sub in s.subsets] + \
        [s.sidecar.app_cluster for s in program.services] + \
        [w.sidecar.app_cluster for s in program.services for w in s.workloads]
    if len(clusters) != len(set(clusters)):
        problems.append("cluster names are not unique")
    for svc in program.services:
        if not svc.domains or svc.name.rpartition("/")[2] not in svc.domains:
            problems.append(f"service {svc.name}: its domains do not name it")
        up = svc.upstream
        if min(up.connect_timeout_ms, up.idle_timeout_ms, up.max_response_headers_bytes) <= 0:
            problems.append(f"service {svc.name}: connection settings must be positive")
        if not svc.subsets or any(not sub.endpoints and not sub.labels for sub in svc.subsets):
            problems.append(f"service {svc.name}: a subset without endpoints")
        if any(sub.labels and (sub.endpoints or sub.discovery != "labels") for sub in svc.subsets):
            problems.append(f"service {svc.name}: a label-selected subset with endpoints")
        if not svc.routes:
            problems.append(f"service {svc.name}: no routes")
        if svc.mtls.mode not in ("strict", "permissive", "disable"):
            problems.append(f"service {svc.name}: unknown mtls mode {svc.mtls.mode!r}")
        route_names = [r.name for r in svc.routes]
        if len(route_names) != len(set(route_names)):
            problems.append(f"service {svc.name}: duplicate route names")
        for route in svc.routes:
            where = f"route {svc.name}/{route.name}"
            answers = route.redirect is not None or route.direct_response is not None
            if answers and (route.to is not None or route.split is not None or route.mirrors):
                problems.append(f"{where}: a route that answers itself forwards nothing")
            if not answers and (route.to is None) == (route.split is None):
                problems.append(f"{where}: needs exactly one of to/split")
            if route.to is not None:
                ref(route.to.service, route.to.subset, where)
            if route.split is not None:
                total = sum(t.weight for t in route.split.targets)
                if total <= 0 or total != route.split.total_weight:
                    problems.append(f"{where}: bad split total")
                for t in route.split.targets:
                    ref(t.service, t.subset, where)
            if not route.matches:
                problems.append(f"{where}: no matches")
            for m in route.matches:
                if m.path is not None and (m.path.kind not in PATH_KINDS
                                           or (m.path.ignore_case and m.path.kind == "regex")):
                    problems.append(f"{where}: bad path match {m.path}")
                for h in m.headers:
                    if h.kind not in HEADER_KINDS or h.name != h.name.lower():
                        problems.append(f"{where}: bad header match {h}")
            if route.timeout_ms < 0:
                problems.append(f"{where}: negative timeout")
            if route.retry is not None:
                r = route.retry
                if r.num_retries < 1 or r.backoff_base_ms <= 0 or r.backoff_max_ms < r.backoff_base_ms:
                    problems.append(f"{where}: bad retry {r}")
                if route.timeout_ms and r.per_try_timeout_ms >= route.timeout_ms:
                    problems.append(f"{where}: per-try timeout not below the route timeout")
            if route.fault is not None:
                if route.fault.abort is not None:
                    pct(route.fault.abort.percent, where)
                if route.fault.delay is not None:
                    pct(route.fault.delay.percent, where)
            for mi in route.mirrors:
                ref(mi.service, mi.subset, where)
                pct(mi.percent, where)
                if mi.timeout_ms <= 0:
                    problems.append(f"{where}: a mirror copy needs a timeout")
        authz = svc.authorization
        if authz.default not in ("allow", "deny") or any(r.action not in ("allow", "deny") for r in authz.rules):
            problems.append(f"service {svc.name}: bad authorization actions")
        if any(r.path is not None and r.path.ignore_case and r.path.kind == "regex" for r in authz.rules):
            problems.append(f"service {svc.name}: `ignore_case` on a regex path")
        if svc.outlier is not None:
            pct(svc.outlier.max_ejection_percent, f"service {svc.name} outlier")
        if svc.retry_budget is not None:
            pct(svc.retry_budget.percent, f"service {svc.name} retry budget")
        for sc in (svc.sidecar, *(w.sidecar for w in svc.workloads)):
            if len({sc.inbound_port, sc.outbound_port, sc.admin_port}) != 3:
                problems.append(f"service {svc.name}: sidecar {sc.node} ports collide")
            if min(sc.max_request_headers, sc.max_request_headers_bytes, sc.idle_timeout_ms,
                   sc.request_headers_timeout_ms, sc.stream_idle_timeout_ms, sc.max_connections) <= 0 \
                    or sc.max_request_body_bytes < 0:
                problems.append(f"service {svc.name}: sidecar limits out of range")
    return problems
