"""The picture of a policy graph: a standalone SVG, or a self-contained HTML page around the same
SVG (inline CSS and script, a Content-Security-Policy that forbids every network fetch).

Every position is computed here (compiler/tooling/graph/layout.py), in whole pixels, with text in
a monospace font whose width is known, so the output is the same bytes for the same program and
nothing is measured in the browser. Queryable attributes, for tests and users:

    .node[data-service=NAME][data-namespace=NS]             a service
    path.pair[data-from=C][data-to=D][data-decision=allowed|partial|denied][data-named=true|false]
    path.link[data-from=S][data-to=T][data-kind=to|split|mirror]   a route that sends to another service
    rect.cell[data-from=C][data-to=D][data-decision=...]    the matrix of every pair
"""

from __future__ import annotations

import itertools
from html import escape

from compiler.tooling.graph.layout import Box, layered
from compiler.tooling.graph.model import ANONYMOUS, Access, Graph, RouteView, ServiceView

__all__ = ["html_page", "svg_document"]

CARD_W = 330
CHAR_W = 6.63            # DejaVu Sans Mono at 11px: 0.6025 em
MAX_CHARS = int((CARD_W - 20) / CHAR_W)
HEAD = 28
LINE = 15
GAP_X = 110
GAP_Y = 26
MARGIN = 24
LEGEND_H = 92
CELL = 24

DOT = " \u00b7 "
OPEN = "\u25cb"          # the matrix's mark of a pair admitted only as any caller is (no rule names the caller)
DECISIONS = ("allowed", "partial", "denied")
SYMBOL = {"allowed": "\u2713", "partial": "\u25d0", "denied": "\u2715"}
LEGEND = (
    ("allowed", "allowed: every request of this caller is admitted"),
    ("partial", "partial: some requests (the rules depend on path, method or headers)"),
    ("denied", "denied: no request (hidden unless a rule names the caller; see the matrix)"),
    ("link", "a route of the service sends (or mirrors) to another service"),
)


def _a(value: object) -> str:
    return escape(str(value), quote=True)


def _fit(text: str, limit: int = MAX_CHARS) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit - 1] + "\u2026", True)


# ---- the cards -------------------------------------------------------------------------------------

Line = tuple[str, str, tuple[tuple[str, int], ...]]   # (class, text, a split's (label, weight) for its bar)


def _wrap(cls: str, text: str, sep: str = DOT, indent: str = "    ", most: int = 3) -> list[Line]:
    """One logical line as at most `most` card lines, broken between `sep`-separated parts;
    what does not fit ends in an ellipsis (the whole text is in the line's tooltip and the
    details panel)."""
    room = MAX_CHARS - len(indent)
    parts: list[tuple[str, str]] = []   # (what joins it to the part before on one line, the part)
    for i, part in enumerate(text.split(sep)):
        joiner = sep if i else ""
        while len(part) > room and "," in part[:room]:
            cut = part.rindex(",", 0, room) + 1   # a long list: broken after a comma
            parts.append((joiner, part[:cut]))
            joiner, part = "", part[cut:]
        parts.append((joiner, part))
    lines: list[str] = []
    current = parts[0][1]
    for joiner, part in parts[1:]:
        if len(current) + len(joiner) + len(part) <= MAX_CHARS:
            current += joiner + part
        else:
            lines.append(current + (joiner.rstrip() if joiner.strip() == "," else ""))
            current = indent + part
    lines.append(current)
    if len(lines) > most:
        lines = lines[:most - 1] + [lines[most - 1] + sep + "\u2026"]
    return [(cls, line, ()) for line in lines]


def _route_lines(r: RouteView, own: str) -> list[Line]:
    out = _wrap("route", f"{r.name}: " + " or ".join(r.matches), sep=" ", most=3)
    targets = []
    for service, subset, weight in r.targets:
        name = subset if service == own else f"{service}.{subset}"
        targets.append(name if weight is None else f"{name} {weight}")
    head = "  \u2192 " + " / ".join(targets)
    if r.key_header is not None:
        head += f" by {r.key_header}"
    out += _wrap("rset", DOT.join([head, *r.settings]), most=4)
    if len(r.targets) > 1:
        bar = tuple((sub if svc == own else f"{svc}.{sub}", w or 0) for svc, sub, w in r.targets)
        out.append(("split", "", bar))
    return out


def _card_lines(s: ServiceView) -> list[Line]:
    subsets = " ".join(f"{name}\u00d7{count}" for name, count in s.subsets)
    lines = _wrap("meta", DOT.join([f"mtls {s.mtls}", f"port {s.port}", f"subsets {subsets}"]))
    lines += [line for text in s.resilience for line in _wrap("res", text, sep=", ")]
    for r in s.routes:
        lines += _route_lines(r, s.name)
    lines += _wrap("authz", "authz: " + s.authz, sep=", ")
    lines += _wrap("anyone", "any caller: " + _access_words(s.anonymous), sep=", ")
    return lines


def _access_words(acc: Access) -> str:
    if acc.decision == "allowed":
        return "every request"
    if acc.decision == "denied":
        return "no request"
    return "some requests (" + ", ".join(n.rsplit(".", 1)[-1] for n in acc.admitting) + ")"


def _height(s: ServiceView) -> int:
    return HEAD + 6 + LINE * len(_card_lines(s))


SPLIT_COLOURS = ("#5c6bc0", "#26a69a", "#ab47bc", "#ef6c00", "#8d6e63", "#78909c")


def _split_bar(bar: tuple[tuple[str, int], ...], y: int, width: int) -> str:
    total = sum(w for _, w in bar) or 1
    x0, span = 20, width - 40
    out = [f'<g class="split-bar" transform="translate(0,{y - 10})">']
    x = x0
    for i, (label, weight) in enumerate(bar):
        w = span * weight // total if i < len(bar) - 1 else x0 + span - x
        if w <= 0:
            continue
        text = f"{label} {weight * 100 / total:.4g}%"
        out.append(f'<rect class="segment" data-subset="{_a(label)}" data-weight="{weight}" x="{x}" y="0" '
                   f'width="{w}" height="12" fill="{SPLIT_COLOURS[i % len(SPLIT_COLOURS)]}">'
                   f"<title>{_a(text)}</title></rect>")
        if len(text) * 6.1 + 4 <= w:
            out.append(f'<text class="segment-label" x="{x + w // 2}" y="10" text-anchor="middle">{_a(text)}</text>')
        x += w
    out.append("</g>")
    return "".join(out)


def _card(s: ServiceView, box: Box) -> str:
    out = [f'<g class="node" id="node-{_a(s.name)}" data-service="{_a(s.name)}" data-namespace="{_a(s.namespace)}" '
           f'tabindex="0" transform="translate({box.x},{box.y})">',
           f"<title>{_a(s.name)} \u2014 {_a(s.identity)}</title>",
           f'<rect class="card" width="{box.width}" height="{box.height}" rx="6"/>',
           f'<path class="head" d="M0 {HEAD}V6a6 6 0 0 1 6-6H{box.width - 6}a6 6 0 0 1 6 6V{HEAD}Z"/>',
           f'<text class="name" x="10" y="19">{_a(s.name)}</text>',
           f'<text class="ns" x="{box.width - 10}" y="19" text-anchor="end">{_a(s.namespace)}</text>']
    y = HEAD + 15
    for cls, text, bar in _card_lines(s):
        if bar:
            out.append(_split_bar(bar, y, box.width))
        else:
            shown, cut = _fit(text)
            tip = f"<title>{_a(text)}</title>" if cut else ""
            out.append(f'<text class="line {cls}" x="10" y="{y}" xml:space="preserve">{tip}{_a(shown)}</text>')
        y += LINE
    out.append("</g>")
    return "\n".join(out)


# ---- the edges -------------------------------------------------------------------------------------

def _ports(boxes: dict[str, Box], ends: list[tuple[str, str, str, str, int]]) -> dict[tuple[str, str, int], int]:
    """Spread the edges that meet one side of a card along it, ordered by where their other end is.
    `ends` holds (service, side, other service, key, index)."""
    by_side: dict[tuple[str, str], list[tuple[int, str, int]]] = {}
    for service, side, other, key, index in ends:
        by_side.setdefault((service, side), []).append((boxes[other].y + boxes[other].height // 2, key, index))
    out: dict[tuple[str, str, int], int] = {}
    for (service, side), items in by_side.items():
        box = boxes[service]
        items.sort()
        top, bottom = box.y + HEAD // 2, box.y + box.height - 10
        for i, (_, _key, index) in enumerate(items):
            out[(service, side, index)] = top + (bottom - top) * (i + 1) // (len(items) + 1)
    return out


def _geometry(a: Box, b: Box) -> tuple[str, str]:
    """The sides an edge from `a` to `b` leaves and enters by."""
    if b.column > a.column:
        return "right", "left"
    if b.column < a.column:
        return "left", "right"
    return "left", "left"


class _Gaps:
    """Where an edge may cross a column it does not stop at: above its first card, between two
    cards, below its last; each crossing a few pixels from the one before in the same gap."""

    def __init__(self, boxes: dict[str, Box]):
        by_column: dict[int, list[Box]] = {}
        for b in boxes.values():
            by_column.setdefault(b.column, []).append(b)
        self.x = {c: col[0].x for c, col in by_column.items()}
        self.gaps: dict[int, list[int]] = {}
        for c, col in by_column.items():
            col.sort(key=lambda b: b.y)
            ys = [col[0].y - 12]
            ys += [(upper.y + upper.height + lower.y) // 2 for upper, lower in itertools.pairwise(col)]
            ys.append(col[-1].y + col[-1].height + 12)
            self.gaps[c] = ys
        self.used: dict[tuple[int, int], int] = {}

    def cross(self, column: int, near: int) -> int:
        y = min(self.gaps[column], key=lambda g: (abs(g - near), g))
        n = self.used.get((column, y), 0)
        self.used[(column, y)] = n + 1
        return y + (n + 1) // 2 * 5 * (1 if n % 2 else -1)


def _curve(xa: int, ya: int, xb: int, yb: int) -> str:
    d = (xb - xa) // 2
    return f"C{xa + d} {ya} {xb - d} {yb} {xb} {yb}"


def _path(a: Box, b: Box, y1: int, y2: int, gaps: _Gaps | None) -> str:
    """A path of cubic curves from `a` to `b`, through the gaps of the columns between them (or
    one curve, without `gaps`)."""
    out_side, in_side = _geometry(a, b)
    x1 = a.x + a.width if out_side == "right" else a.x
    x2 = b.x if in_side == "left" else b.x + b.width
    end = x2 + (-3 if in_side == "left" else 3)   # the arrowhead ends at the card's edge
    if out_side == in_side:  # the same column: bulge to the left
        bulge = 50 + abs(y2 - y1) // 6
        return f"M{x1} {y1}C{x1 - bulge} {y1} {x2 - bulge} {y2} {end} {y2}"
    step = 1 if b.column > a.column else -1
    between = list(range(a.column + step, b.column, step)) if gaps is not None else []
    points = [(x1, y1)]
    for i, c in enumerate(between):
        assert gaps is not None
        near = y1 + (y2 - y1) * (i + 1) // (len(between) + 1)
        y = gaps.cross(c, near)
        left, right = gaps.x[c], gaps.x[c] + a.width
        points += [(left, y), (right, y)] if step == 1 else [(right, y), (left, y)]
    points.append((end, y2))
    d = f"M{x1} {y1}"
    for i in range(1, len(points)):
        (xa, ya), (xb, yb) = points[i - 1], points[i]
        d += f"L{xb} {yb}" if i % 2 == 0 else _curve(xa, ya, xb, yb)
    return d


def _pair_class(acc: Access) -> str:
    cls = f"edge pair {acc.decision}"
    if acc.named:
        cls += " named"
    elif acc.decision != "denied":
        cls += " anyone"
    return cls


def _edges(graph: Graph, boxes: dict[str, Box]) -> tuple[list[str], list[str]]:
    """The edges, and the labels of the route edges (drawn over the cards)."""
    drawn: list[tuple[str, str, str, str, str, str]] = []   # (kind, from, to, class, title, extra attributes)
    for p in graph.pairs:
        acc = p.access
        title = f"{p.caller} \u2192 {p.dest}: {acc.decision} \u2014 {acc.reason}"
        attrs = (f'data-decision="{acc.decision}" data-named="{"true" if acc.named else "false"}" '
                 f'marker-end="url(#arrow-{acc.decision})"')
        drawn.append(("pair", p.caller, p.dest, _pair_class(acc), title, attrs))
    for link in graph.links:
        title = f"{link.source} \u2192 {link.target}: route {link.label}"
        drawn.append(("link", link.source, link.target, f"edge link {link.kind}", title,
                      f'data-kind="{link.kind}" data-route="{_a(link.route)}" marker-end="url(#arrow-link)"'))
    shown = [kind == "link" or "named" in cls.split() for kind, _, _, cls, _, _ in drawn]
    ends = []
    for index, (kind, a, b, _, _, _) in enumerate(drawn):
        if not shown[index]:
            continue  # hidden by default: meets the card at the middle of its side
        out_side, in_side = _geometry(boxes[a], boxes[b])
        ends.append((a, out_side, b, f"{b}>{kind}", index))
        ends.append((b, in_side, a, f"{a}<{kind}", index))
    ports = _ports(boxes, ends)
    gaps = _Gaps(boxes)
    paths: dict[int, str] = {}
    for index in sorted(range(len(drawn)), key=lambda i: (not shown[i], i)):  # the gaps go to the shown first
        _, a, b, _, _, _ = drawn[index]
        ba, bb = boxes[a], boxes[b]
        out_side, in_side = _geometry(ba, bb)
        y1 = ports.get((a, out_side, index), ba.y + ba.height // 2)
        y2 = ports.get((b, in_side, index), bb.y + bb.height // 2)
        # an edge shown only on request takes the gaps of at most a few columns, else one curve
        near = shown[index] or abs(ba.column - bb.column) <= 4
        paths[index] = _path(ba, bb, y1, y2, gaps if near else None)
    out = []
    labels = []
    for index, (kind, a, b, cls, title, attrs) in enumerate(drawn):
        d = paths[index]
        out.append(f'<path class="{cls}" data-from="{_a(a)}" data-to="{_a(b)}" {attrs} d="{d}">'
                   f"<title>{_a(title)}</title></path>")
        if kind == "link":   # by the card it leaves, on the side it leaves by
            ba, bb = boxes[a], boxes[b]
            y1 = ports.get((a, _geometry(ba, bb)[0], index), ba.y + ba.height // 2)
            right = _geometry(ba, bb)[0] == "right"
            x, anchor = (ba.x + ba.width + 6, "start") if right else (ba.x - 6, "end")
            text = title.split(": route ", 1)[1]
            labels.append(f'<text class="link-label" data-from="{_a(a)}" data-to="{_a(b)}" x="{x}" y="{y1 - 5}" '
                          f'text-anchor="{anchor}">{_a(text)}</text>')
    return out, labels


# ---- the legend and the matrix -------------------------------------------------------------------

def _legend(x: int, y: int) -> tuple[str, int]:
    out = [f'<g class="legend" transform="translate({x},{y})">']
    for i, (cls, text) in enumerate(LEGEND):
        ly = 12 + i * 17
        kind = "link" if cls == "link" else cls
        out.append(f'<path class="edge {kind} sample" d="M0 {ly}H44" marker-end="url(#arrow-{cls})"/>')
        out.append(f'<text class="legend-text" x="56" y="{ly + 4}">{_a(text)}</text>')
    out.append("</g>")
    width = 56 + int(max(len(t) for _, t in LEGEND) * 6.9)
    return "\n".join(out), width


def _matrix(graph: Graph, x: int, y: int) -> tuple[str, int, int]:
    names = [s.name for s in graph.services]
    label_w = int(max(len(n) for n in [*names, ANONYMOUS]) * 7.2) + 16
    head_h = int(max(len(n) for n in names) * 5.2) + 44
    out = [f'<g class="matrix" transform="translate({x},{y})">',
           '<text class="section" x="0" y="0">Who may call whom: rows are callers, columns destinations</text>',
           f'<text class="legend-text" x="0" y="20">{SYMBOL["allowed"]} allowed   {SYMBOL["partial"]} partial (a rule '
           f'names the caller)   {OPEN} only what every caller may do   {SYMBOL["denied"]} denied   '
           '(dashed: the service itself; a caller without identity)</text>']
    for j, name in enumerate(names):
        cx = label_w + j * CELL + CELL // 2
        out.append(f'<text class="col-label" transform="translate({cx + 4},{head_h - 6}) rotate(-45)">'
                   f"{_a(name)}</text>")
    rows = [*names, ANONYMOUS]
    by_service = {s.name: s for s in graph.services}
    pairs = {(p.caller, p.dest): p.access for p in graph.pairs}
    for i, caller in enumerate(rows):
        ry = head_h + i * CELL
        out.append(f'<text class="row-label" x="{label_w - 8}" y="{ry + 14}" text-anchor="end">{_a(caller)}</text>')
        for j, dest in enumerate(names):
            if caller == ANONYMOUS:
                acc, extra = by_service[dest].anonymous, " anon"
            elif caller == dest:
                acc, extra = by_service[dest].self_access, " self"
            else:
                acc, extra = pairs[(caller, dest)], ""
            if acc.decision != "denied" and not acc.named and caller != ANONYMOUS:
                extra += " open"
            cx = label_w + j * CELL
            who = "a caller without a verified identity" if caller == ANONYMOUS else caller
            title = f"{who} \u2192 {dest}: {acc.decision} \u2014 {acc.reason}"
            if "open" in extra:
                title += " (no rule names the caller: what every caller may do)"
            out.append(f'<g class="cell-group"><rect class="cell {acc.decision}{extra}" data-from="{_a(caller)}" '
                       f'data-to="{_a(dest)}" data-decision="{acc.decision}" x="{cx}" y="{ry}" width="{CELL - 2}" '
                       f'height="{CELL - 2}" rx="3"><title>{_a(title)}</title></rect>'
                       f'<text class="cell-mark" x="{cx + (CELL - 2) // 2}" y="{ry + 13}" text-anchor="middle">'
                       f"{OPEN if 'open' in extra else SYMBOL[acc.decision]}</text></g>")
    out.append("</g>")
    width = max(label_w + len(names) * CELL, 640)
    return "\n".join(out), width, head_h + len(rows) * CELL


# ---- the document ----------------------------------------------------------------------------------

STYLE = """
.graph { font-family: "DejaVu Sans", "Liberation Sans", sans-serif; background: #fff; }
.card { fill: #fbfbfd; stroke: #9aa3b5; stroke-width: 1.2; }
.head { fill: #e6ebf5; }
.node:hover .card, .node.selected .card { stroke: #1f4bb8; stroke-width: 2.4; }
.node { cursor: pointer; outline: none; }
.name { font-size: 14px; font-weight: bold; fill: #1a2333; }
.ns { font-size: 11px; fill: #5b6578; }
.line { font-family: "DejaVu Sans Mono", monospace; font-size: 11px; fill: #263041; white-space: pre; }
.line.res { fill: #6a4c93; }
.line.route { fill: #123a7a; font-weight: bold; }
.line.rset { fill: #3d4657; }
.line.authz, .line.anyone { fill: #7a3b2e; }
.edge { fill: none; stroke-width: 2; }
.edge.allowed { stroke: #2e7d32; }
.edge.partial { stroke: #c77700; stroke-dasharray: 7 4; }
.edge.denied { stroke: #c62828; stroke-dasharray: 2 4; stroke-width: 1.6; }
.link { stroke: #1565c0; stroke-width: 2.4; }
.link.mirror { stroke-dasharray: 1 5; stroke-linecap: round; }
.pair.anyone, .pair.denied:not(.named) { display: none; }
.show-anyone .pair.anyone, .show-denied .pair.denied, .pair.related { display: inline; }
.has-selection .edge:not(.related):not(.sample) { opacity: 0.12; }
.edge.related { stroke-width: 3; }
.link-label { font-size: 11px; fill: #1565c0; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
.arrow-allowed { fill: #2e7d32; } .arrow-partial { fill: #c77700; } .arrow-denied { fill: #c62828; }
.arrow-link { fill: #1565c0; }
.legend-text { font-size: 12px; fill: #263041; }
.section { font-size: 14px; font-weight: bold; fill: #1a2333; }
.col-label, .row-label { font-size: 12px; fill: #263041; }
.segment-label { font-size: 10px; fill: #fff; font-weight: bold; pointer-events: none; }
.segment { stroke: #fff; stroke-width: 1; }
.cell { stroke: #fff; }
.cell.allowed { fill: #c8e6c9; } .cell.partial { fill: #ffe0b2; } .cell.denied { fill: #ffcdd2; }
.cell.open { fill: #f1f3f7; }
.cell.self, .cell.anon { stroke: #9aa3b5; stroke-dasharray: 2 2; }
.cell-mark { font-size: 12px; fill: #263041; pointer-events: none; }
.cell.selected-row { stroke: #1f4bb8; stroke-width: 2; }
"""


def _defs() -> str:
    out = ["<defs>"]
    for name in (*DECISIONS, "link"):
        out.append(f'<marker id="arrow-{name}" class="arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" '
                   f'markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0 0L10 5L0 10Z"/></marker>')
    out.append("</defs>")
    return "\n".join(out)


def _body(graph: Graph) -> tuple[str, int, int]:
    """The inside of the SVG: legend, edges, cards, matrix; and its size."""
    heights = {s.name: _height(s) for s in graph.services}
    shown = {(p.caller, p.dest) for p in graph.pairs if p.access.named and p.access.decision != "denied"}
    shown |= {(link.source, link.target) for link in graph.links}
    top = MARGIN + LEGEND_H
    boxes = layered([s.name for s in graph.services], shown, heights, CARD_W, GAP_X, GAP_Y, MARGIN + 60, top)
    legend, legend_w = _legend(MARGIN, MARGIN)
    graph_w = max((b.x + b.width for b in boxes.values()), default=0) + MARGIN
    graph_h = max((b.y + b.height for b in boxes.values()), default=top)
    matrix, matrix_w, matrix_h = _matrix(graph, MARGIN, graph_h + 48)
    width = max(graph_w, MARGIN + legend_w, MARGIN * 2 + matrix_w)
    height = graph_h + 48 + matrix_h + MARGIN
    by_name = {s.name: s for s in graph.services}
    edges, labels = _edges(graph, boxes)
    parts = [legend, '<g class="edges">', *edges, "</g>", '<g class="nodes">',
             *(_card(by_name[n], boxes[n]) for n in sorted(boxes)), "</g>", '<g class="labels">', *labels, "</g>",
             matrix]
    return "\n".join(parts), width, height


def _svg(graph: Graph, xmlns: bool, extra_class: str = "") -> str:
    body, width, height = _body(graph)
    ns = ' xmlns="http://www.w3.org/2000/svg"' if xmlns else ""
    return (f'<svg{ns} class="graph{extra_class}" id="graph" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="the policy graph">\n'
            f"{_defs()}\n<style>{STYLE}</style>\n"
            f'<rect class="background" width="{width}" height="{height}" fill="#fff"/>\n{body}\n</svg>\n')


def svg_document(graph: Graph) -> str:
    """A standalone SVG file: the edges a rule names, the cards and the matrix of every pair."""
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + _svg(graph, xmlns=True)


# ---- the page --------------------------------------------------------------------------------------

PAGE_STYLE = """
body { margin: 0; font-family: "DejaVu Sans", "Liberation Sans", sans-serif; color: #1a2333; background: #f3f5f9; }
header { padding: 12px 20px 8px; background: #fff; border-bottom: 1px solid #d5dae4; }
h1 { font-size: 18px; margin: 0 0 4px; }
header p { margin: 2px 0; font-size: 13px; color: #3d4657; }
.controls label { margin-right: 18px; font-size: 13px; }
main { padding: 12px; }
#picture { overflow: auto; background: #fff; border: 1px solid #d5dae4; }
#details { position: fixed; right: 16px; top: 16px; width: 380px; max-height: calc(100vh - 32px); overflow: auto;
           background: #fff; border: 1px solid #9aa3b5; box-shadow: 0 4px 18px rgba(0, 0, 0, 0.18);
           padding: 10px 14px; font-size: 13px; }
#details[hidden] { display: none; }
#details h2 { font-size: 16px; margin: 4px 0; }
#details h3 { font-size: 13px; margin: 10px 0 4px; }
#details ul { margin: 0; padding-left: 18px; }
#details code { font-family: "DejaVu Sans Mono", monospace; font-size: 12px; }
.d-allowed { color: #2e7d32; } .d-partial { color: #a86400; } .d-denied { color: #c62828; }
"""

SCRIPT = """
(function () {
  var svg = document.getElementById("graph");
  var panel = document.getElementById("details");
  var current = null;
  function all(selector) { return Array.prototype.slice.call(document.querySelectorAll(selector)); }
  function select(name) {
    current = name;
    all(".related").forEach(function (e) { e.classList.remove("related"); });
    all(".node.selected").forEach(function (e) { e.classList.remove("selected"); });
    all("#details section").forEach(function (s) { s.hidden = s.getAttribute("data-service") !== name; });
    panel.hidden = name === null;
    svg.classList.toggle("has-selection", name !== null);
    if (name === null) { return; }
    all(".node").forEach(function (n) {
      if (n.getAttribute("data-service") === name) { n.classList.add("selected"); }
    });
    all(".edge").forEach(function (e) {
      if (e.getAttribute("data-from") === name || e.getAttribute("data-to") === name) { e.classList.add("related"); }
    });
  }
  all(".node").forEach(function (n) {
    var name = n.getAttribute("data-service");
    n.addEventListener("click", function (ev) { ev.stopPropagation(); select(current === name ? null : name); });
    n.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); select(current === name ? null : name); }
    });
  });
  all("rect.cell").forEach(function (c) {
    c.addEventListener("click", function (ev) { ev.stopPropagation(); select(c.getAttribute("data-to")); });
  });
  svg.addEventListener("click", function () { select(null); });
  [["show-denied", "show-denied"], ["show-anyone", "show-anyone"]].forEach(function (pair) {
    var box = document.getElementById(pair[0]);
    box.addEventListener("change", function () { svg.classList.toggle(pair[1], box.checked); });
  });
})();
"""


def _details(graph: Graph) -> str:
    out = []
    incoming: dict[str, list[tuple[str, Access]]] = {}
    outgoing: dict[str, list[tuple[str, Access]]] = {}
    for p in graph.pairs:
        incoming.setdefault(p.dest, []).append((p.caller, p.access))
        outgoing.setdefault(p.caller, []).append((p.dest, p.access))
    for s in graph.services:
        o = [f'<section data-service="{_a(s.name)}" hidden>', f"<h2>{_a(s.name)}</h2>",
             f"<p>namespace <code>{_a(s.namespace)}</code>, port {s.port}, mtls <code>{_a(s.mtls)}</code><br>"
             f"identity <code>{_a(s.identity)}</code></p>",
             "<h3>Subsets</h3><ul>", *(f"<li><code>{_a(n)}</code>: {c} endpoint{'s' if c > 1 else ''}</li>"
                                       for n, c in s.subsets), "</ul>",
             "<h3>Resilience</h3><ul>", *(f"<li>{_a(t)}</li>" for t in s.resilience), "</ul>",
             "<h3>Routes (first match wins)</h3><ul>"]
        for r in s.routes:
            targets = ", ".join(f"{svc}.{sub}" + ("" if w is None else f" weight {w}") for svc, sub, w in r.targets)
            key = f" by header <code>{_a(r.key_header)}</code>" if r.key_header else ""
            o.append(f"<li><b>{_a(r.name)}</b>: <code>{_a(' or '.join(r.matches))}</code> \u2192 {_a(targets)}{key}"
                     f"<br>{_a(DOT.join(r.settings))}</li>")
        o.append(f"</ul><h3>Authorization</h3><p>{_a(s.authz)}</p><ul>")
        o += [f"<li><code>{_a(rule)}</code></li>" for rule in s.rules]
        o.append("</ul><h3>Who may call it</h3><ul>")
        rows = [*incoming.get(s.name, []), (f"{s.name} (itself)", s.self_access), (ANONYMOUS, s.anonymous)]
        o += [f'<li><span class="d-{acc.decision}">{SYMBOL[acc.decision]} {_a(caller)}</span>: {_a(acc.reason)}</li>'
              for caller, acc in rows]
        o.append("</ul><h3>What it may call</h3><ul>")
        o += [f'<li><span class="d-{acc.decision}">{SYMBOL[acc.decision]} {_a(dest)}</span>: {_a(acc.reason)}</li>'
              for dest, acc in outgoing.get(s.name, [])]
        o.append("</ul></section>")
        out.append("\n".join(o))
    return "\n".join(out)


def html_page(graph: Graph, title: str) -> str:
    """A self-contained page: the SVG, the legend's switches and a details panel; no network at all."""
    named = sum(p.access.named and p.access.decision != "denied" for p in graph.pairs)
    counts = {d: sum(p.access.decision == d for p in graph.pairs) for d in DECISIONS}
    summary = (f"{len(graph.services)} services, trust domain <code>{_a(graph.trust_domain)}</code>; of "
               f"{len(graph.pairs)} caller\u2192service pairs {counts['allowed']} allowed, "
               f"{counts['partial']} partial, {counts['denied']} denied; {named} drawn by default "
               "(a rule names the caller).")
    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        f"<title>meshc graph: {_a(title)}</title>\n<style>{PAGE_STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>meshc graph: {_a(title)}</h1>\n<p>{summary}</p>\n"
        "<p>An edge is a caller the destination's rules name and admit. Edges of every caller (rules without "
        "<code>from</code>, such as health checks, or a default allow) and denied pairs are hidden unless "
        "switched on or a service is selected; the matrix below the graph shows every pair. Routes, retries, "
        "timeouts, faults, mirrors, limits, retry budgets and outlier detection are the destination's: every "
        "caller's sidecar applies them alike, so each card lists them once.</p>\n"
        "<p>Click a service (or a cell of the matrix) for its routes, its rules and who may call it and what it "
        "may call; hover over an edge or a cell for the rules that decide it; click the background to close.</p>\n"
        '<p class="controls"><label><input type="checkbox" id="show-denied"> show denied pairs</label>'
        '<label><input type="checkbox" id="show-anyone"> show what every caller may do</label></p>\n'
        "</header>\n<main>\n<div id=\"picture\">\n"
        f"{_svg(graph, xmlns=False)}</div>\n<aside id=\"details\" hidden>\n{_details(graph)}\n</aside>\n</main>\n"
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )
