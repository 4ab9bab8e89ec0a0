"""Why a decision came out as it did: the optional hook of the request decision.

`decide_request(..., explain=Explanation())` records each step it takes (the normalised path
and why it changed, the destination, every route tried and the first condition that failed it,
the chosen route's timeout, retries, retry budget, fault and mirror, every authorization rule
with whether it matched and what decided, the fault, split and mirror draws with their
arithmetic). Nothing is recorded, and nothing is paid, without it: the decision's fast path never
looks at the hook but to test it for None (and only where a step is taken: a fault, a split, a
mirror). The rows are plain data for a command that shows a request's trace (`meshc trace`):
`what`, `outcome` and a one-line `detail` for people, `data` (JSON-ready) for tools.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from runtime_proxy.decide.table import CRoute


class Step(NamedTuple):
    what: str          # normalize | host | route | policy | fault | split | mirror | authz
    outcome: str       # matched, skipped, the chosen value, ...
    detail: str        # one line: the condition that failed, the value chosen
    data: dict[str, Any] | None = None   # the same facts as values (numbers, names), for tools


class Explanation:
    """The steps of one decision, in the order they were taken."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def note(self, what: str, outcome: str, detail: str = "", data: dict[str, Any] | None = None) -> None:
        self.steps.append(Step(what, outcome, detail, data))

    def lines(self) -> list[str]:
        return [f"{s.what}: {s.outcome}" + (f" ({s.detail})" if s.detail else "") for s in self.steps]


def describe_path(spec: dict[str, Any]) -> str:
    return f"path {spec['kind']} `{spec['value']}`" + (" ignore_case" if spec.get("ignore_case") else "")


def describe_header(spec: dict[str, Any]) -> str:
    kind = spec["kind"]
    prefix = "not " if spec.get("invert") else ""
    value = f" `{spec['value']}`" if spec.get("value") is not None else ""
    case = " ignore_case" if spec.get("ignore_case") else ""
    return f"{prefix}header `{spec['name']}` {kind}{value}{case}"


def describe_query(spec: dict[str, Any]) -> str:
    value = f" `{spec['value']}`" if spec.get("value") is not None else ""
    return f"query `{spec['name']}` {spec['kind']}{value}"


def ms(value: int) -> str:
    return f"{value} ms"


def route_policy(route: CRoute) -> dict[str, Any]:
    """What a route puts in effect for the requests it takes, as data: its destination (`to` or
    the split's arms), timeout, retries, the destination's retry budget, fault, mirror and header
    changes."""
    targets = [route.to] if route.to is not None else list(route.split.targets if route.split else ())
    budget = targets[0].service.retry_budget if targets else None
    r, f = route.retry, route.fault
    return {
        "route": route.name,
        "source": route.source,
        "to": None if route.to is None else route.to.subset.cluster,
        "split": None if route.split is None else {
            "key_header": route.split.key_header, "total": route.split.total_weight,
            "arms": [{"cluster": t.subset.cluster, "weight": t.weight} for t in route.split.targets]},
        "timeout_ms": route.timeout_ms,
        "retry": None if r is None else {
            "attempts": r.num_retries, "on": list(r.retry_on), "statuses": list(r.retriable_status_codes),
            "per_try_timeout_ms": r.per_try_timeout_ms, "backoff_base_ms": r.backoff_base_ms,
            "backoff_max_ms": r.backoff_max_ms, "allow_non_idempotent": r.allow_non_idempotent},
        "retry_budget": None if budget is None else {"percent": budget.percent,
                                                     "min_concurrency": budget.min_concurrency},
        "fault": None if f is None else {
            "delay_ms": f.delay_ms, "delay_percent": f.delay_percent,
            "abort_status": f.abort_status, "abort_percent": f.abort_percent},
        "mirrors": [{"cluster": m.subset.cluster, "percent": m.percent, "timeout_ms": m.timeout_ms}
                    for m in route.mirrors],
        "request_headers": _changes(route.request_headers),
        "response_headers": _changes(route.response_headers),
    }


def _changes(hc: Any) -> dict[str, Any] | None:
    if hc.empty:
        return None
    return {"set": [list(p) for p in hc.set], "add": [list(p) for p in hc.add], "remove": sorted(hc.remove)}


def explain_policy(route: CRoute | None, explain: Explanation) -> None:
    """The chosen route's settings, one step (`policy`), right after the route steps."""
    if route is None:
        return
    data = route_policy(route)
    parts = [f"timeout {ms(route.timeout_ms)}" if route.timeout_ms else "no timeout"]
    r = route.retry
    parts.append("no retries" if r is None else f"{r.num_retries} retries on {', '.join(r.retry_on)}")
    b = data["retry_budget"]
    if b is not None:
        parts.append(f"retry budget {b['percent']:g} % (min {b['min_concurrency']})")
    if route.fault is not None:
        parts.append("fault")
    for m in route.mirrors:
        parts.append(f"mirror {m.percent:g} %")
    explain.note("policy", route.name, ", ".join(parts), data)
