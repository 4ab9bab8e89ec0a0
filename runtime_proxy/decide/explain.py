"""Why a decision came out as it did: the optional hook of the request decision.

`decide_request(..., explain=Explanation())` records each step it takes (the normalised path,
the destination, every route tried and the first condition that failed it, the authorization
rules that matched or why not, the fault and split draws). Nothing is recorded, and nothing is
paid, without it: the decision's fast path never looks at the hook but to test it for None.
The rows are plain data for a command that shows a request's trace.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Step(NamedTuple):
    what: str          # normalize | host | route | authz | fault | split
    outcome: str       # matched, skipped, the chosen value, ...
    detail: str        # one line: the condition that failed, the value chosen


class Explanation:
    """The steps of one decision, in the order they were taken."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def note(self, what: str, outcome: str, detail: str = "") -> None:
        self.steps.append(Step(what, outcome, detail))

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
