"""A deterministic layered layout: services in columns by call depth, left to right.

The edges that place the services are the ones the picture shows by default: a caller the
destination's rules name and admit (`Access.named`, not denied), and a route that sends to
another service. Cycles are broken by the greedy order of Eades, Lin and Smyth (sinks last,
sources first, else the most outgoing), every tie by name; each service goes one column after
the deepest of its callers before it in that order; a few barycentre sweeps order each column.
Everything is integer arithmetic on names and counts: the same program gives the same layout.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Box", "layered"]


@dataclass(frozen=True, slots=True)
class Box:
    name: str
    column: int
    x: int
    y: int
    width: int
    height: int


def _greedy_order(names: list[str], edges: set[tuple[str, str]]) -> list[str]:
    left: list[str] = []
    right: list[str] = []
    rest = set(names)
    while rest:
        changed = True
        while changed:
            changed = False
            for n in sorted(rest):
                if not any(a == n and b in rest for a, b in edges):   # a sink
                    right.insert(0, n)
                    rest.discard(n)
                    changed = True
            for n in sorted(rest):
                if not any(b == n and a in rest for a, b in edges):   # a source
                    left.append(n)
                    rest.discard(n)
                    changed = True
        if rest:
            def score(n: str) -> tuple[int, str]:
                out = sum(a == n and b in rest for a, b in edges)
                into = sum(b == n and a in rest for a, b in edges)
                return (-(out - into), n)
            best = min(rest, key=score)
            left.append(best)
            rest.discard(best)
    return left + right


def _centre(n: str, ref: int, index: dict[str, int], neighbours: dict[str, list[str]],
            column: dict[str, int]) -> tuple[int, int, str]:
    """Where `n` goes in its column: the mean position of its neighbours in column `ref` (in
    thousandths), or where it is when it has none there."""
    near = [index[m] for m in neighbours[n] if column[m] == ref]
    if not near:
        return (index[n] * 1000, 0, n)
    return (sum(near) * 1000 // len(near), 1, n)


def layered(names: list[str], edges: set[tuple[str, str]], heights: dict[str, int], width: int,
            gap_x: int, gap_y: int, left: int, top: int) -> dict[str, Box]:
    """Boxes for `names` (each `width` wide and `heights[name]` tall) in columns, `gap_x` apart,
    stacked `gap_y` apart and centred vertically, from (`left`, `top`); the names no edge meets
    in rows below."""
    edges = {(a, b) for a, b in edges if a != b and a in heights and b in heights}
    linked = sorted({n for e in edges for n in e})
    alone = sorted(set(names) - set(linked))
    boxes = _columns(linked, edges, heights, width, gap_x, gap_y, left, top)
    # The services no drawn edge meets: a grid under the columns, as wide as they are (3 at least).
    per_row = max(3, max((b.column for b in boxes.values()), default=-1) + 1)
    y = max((b.y + b.height + gap_y * 2 for b in boxes.values()), default=top)
    for start in range(0, len(alone), per_row):
        row = alone[start:start + per_row]
        for c, n in enumerate(row):
            boxes[n] = Box(n, c, left + c * (width + gap_x), y, width, heights[n])
        y += max(heights[n] for n in row) + gap_y
    return boxes


def _columns(names: list[str], edges: set[tuple[str, str]], heights: dict[str, int], width: int,
             gap_x: int, gap_y: int, left: int, top: int) -> dict[str, Box]:
    order = _greedy_order(names, edges)
    rank = {n: i for i, n in enumerate(order)}
    forward = {(a, b) for a, b in edges if rank[a] < rank[b]}
    column: dict[str, int] = {}
    for n in order:
        column[n] = max((column[a] + 1 for a, b in forward if b == n and a in column), default=0)
    count = max(column.values(), default=-1) + 1
    columns: list[list[str]] = [sorted(n for n in names if column[n] == c) for c in range(count)]
    neighbours: dict[str, list[str]] = {n: [] for n in names}
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    for sweep in range(4):
        index = {n: i for col in columns for i, n in enumerate(col)}
        span = range(1, count) if sweep % 2 == 0 else range(count - 2, -1, -1)
        for c in span:
            ref = c - 1 if sweep % 2 == 0 else c + 1
            keys = {n: _centre(n, ref, index, neighbours, column) for n in columns[c]}
            columns[c] = sorted(columns[c], key=keys.__getitem__)
            index.update({n: i for i, n in enumerate(columns[c])})
    tallest = max((sum(heights[n] for n in col) + gap_y * (len(col) - 1) for col in columns), default=0)
    boxes: dict[str, Box] = {}
    for c, col in enumerate(columns):
        total = sum(heights[n] for n in col) + gap_y * (len(col) - 1)
        y = top + (tallest - total) // 2
        for n in col:
            boxes[n] = Box(n, c, left + c * (width + gap_x), y, width, heights[n])
            y += heights[n] + gap_y
    return boxes
