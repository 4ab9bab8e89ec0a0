"""`meshc fmt`: the canonical layout of compiler/syntax/render.py, with every comment kept.

The renderer works on the AST, which has no comments; each output line remembers the node it
renders (render.Line). A comment is put back beside the node it was written beside:

- a comment at the end of a line stays at the end of the line of its node; if that node is
  now joined onto one line with others (a block written over several lines, say), it moves
  onto its own line just above;
- a comment on a line of its own goes just above the next node of the same block (so it
  travels with that node when settings are put in canonical order), or above the block's
  closing `}` when nothing follows it, or at the end of the file.

Before anything is written the result proves itself: it must parse to the same AST as the input
and hold the same comments. A failure is a bug in meshc, reported as such, and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.core.diagnostics import Collector
from compiler.core.source import SourceFile
from compiler.syntax import render
from compiler.syntax.parse import parse_source


class FormatError(Exception):
    """The input does not parse (`diagnostics` says why), or formatting would lose something."""

    def __init__(self, message: str, diagnostics=()):
        super().__init__(message)
        self.diagnostics = list(diagnostics)


@dataclass
class Comment:
    line: int           # 1-based source line
    text: str           # from `#` to the end of the line, trailing blanks removed
    standalone: bool    # alone on its line


def comments_of(text: str) -> list[Comment]:
    """Every comment of a source text, in order (`#` outside a string, to the end of the line)."""
    found = []
    for number, line in enumerate(text.split("\n"), start=1):
        in_string = escaped = False
        for i, ch in enumerate(line):
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "#":
                found.append(Comment(number, line[i:].rstrip(), not line[:i].strip()))
                break
    return found


def format_text(text: str, path: str = "<input>") -> str:
    """The formatted text, or FormatError (syntax errors in `diagnostics`)."""
    source = SourceFile(path, text)
    diags = Collector()
    module = parse_source(source, diags)
    if diags.has_errors:
        raise FormatError(f"{path} has syntax errors", diags.sorted())
    out = _layout(module, source, comments_of(text))
    _prove(module, text, out, path)
    return out


def _prove(module, text: str, out: str, path: str) -> None:
    diags = Collector()
    again = parse_source(SourceFile(path, out), diags)
    if diags.has_errors or again != module:
        raise FormatError(f"internal error: formatting {path} would change its meaning; nothing was written "
                          "(this is a bug in meshc, please report it with the file)")
    if sorted(c.text for c in comments_of(out)) != sorted(c.text for c in comments_of(text)):
        raise FormatError(f"internal error: formatting {path} would lose a comment; nothing was written "
                          "(this is a bug in meshc, please report it with the file)")


# ---- placing comments ----------------------------------------------------------------------------

def _range(node) -> tuple[int, int] | None:
    span = getattr(node, "span", None)
    if span is None:
        return None
    return span.start_line_col()[0], span.end_line_col()[0]


def _depth(line: str) -> int:
    return (len(line) - len(line.lstrip(" "))) // len(render.INDENT)


def _layout(module, source: SourceFile, comments: list[Comment]) -> str:
    lines = render.module_lines(module)
    # What the formatter knows of each output line, by index: the node it renders, its kind, and
    # the source lines that node was written on (only for nodes with a span).
    nodes = [ln.node if isinstance(ln, render.Line) else None for ln in lines]
    kinds = [ln.kind if isinstance(ln, render.Line) else None for ln in lines]
    ranges = {i: r for i, r in enumerate(map(_range, nodes)) if r is not None}
    before: dict[int, list[Comment]] = {}    # output line index -> comments on lines above it
    after: dict[int, list[Comment]] = {}     # output line index -> comment at its end
    at_end: list[Comment] = []

    def innermost(wanted: tuple[str, ...], line: int, strict: bool) -> int | None:
        best, size = None, None
        for i, kind in enumerate(kinds):
            r = ranges.get(i)
            if r is None or kind not in wanted:
                continue
            inside = r[0] < line < r[1] if strict else r[0] <= line <= r[1]
            if inside and (size is None or r[1] - r[0] < size):
                best, size = i, r[1] - r[0]
        return best

    def children(open_index: int | None) -> list[int]:
        """Indexes of the first output line of each node directly inside a block (or the file)."""
        if open_index is None:
            depth, start, stop = 0, 0, len(lines)
        else:
            depth, start = _depth(lines[open_index]) + 1, open_index + 1
            stop = close_of(open_index)
        return [j for j in range(start, stop) if lines[j] and _depth(lines[j]) == depth
                and kinds[j] in ("line", "open") and j in ranges]

    def close_of(open_index: int) -> int:
        node = nodes[open_index]
        return next(j for j in range(open_index + 1, len(lines)) if kinds[j] == "close" and nodes[j] is node)

    for c in comments:
        if not c.standalone:
            i = innermost(("line",), c.line, strict=False)
            if i is not None:
                r = ranges[i]
                if r[0] == r[1] == c.line and i not in after:
                    after[i] = [c]
                else:
                    before.setdefault(i, []).append(c)
                continue
            i = innermost(("open",), c.line, strict=False)
            if i is not None:
                r = ranges[i]
                target = i if c.line == r[0] else close_of(i) if c.line == r[1] else None
                if target is not None and target not in after:
                    after[target] = [c]
                else:
                    before.setdefault(close_of(i), []).append(c)
                continue
            at_end.append(c)
            continue
        i = innermost(("line",), c.line, strict=True)
        if i is not None:
            before.setdefault(i, []).append(c)
            continue
        container = innermost(("open",), c.line, strict=True)
        following = [j for j in children(container) if ranges[j][0] > c.line]
        if following:
            target = min(following, key=lambda j: ranges[j][0])
            before.setdefault(target, []).append(c)
        elif container is not None:
            before.setdefault(close_of(container), []).append(c)
        else:
            at_end.append(c)

    out: list[str] = []
    for i, ln in enumerate(lines):
        depth = _depth(ln) if ln else 0
        if kinds[i] == "close":
            depth += 1  # a comment above a closing `}` belongs to the block's body
        indent = render.INDENT * depth
        group = before.get(i, [])
        top = bool(ln) and _depth(ln) == 0
        for k, c in enumerate(group):
            if top and k and _blank_between(source, group[k - 1].line, c.line):
                out.append("")  # paragraphs of comments between items stay apart
            out.append(indent + c.text)
        if group and top and i in ranges and _blank_between(source, group[-1].line, ranges[i][0]):
            out.append("")
        text = str(ln)
        if i in after:
            text += "  " + after[i][0].text
        out.append(text)
    if at_end:
        if out:
            out.append("")
        out += [c.text for c in at_end]
    return "\n".join(out) + "\n" if out else ""


def _blank_between(source: SourceFile, comment_line: int, node_line: int) -> bool:
    """A blank line separated a top-level comment from what comes below it (a file header, say)."""
    return any(not source.line_text(n).strip() for n in range(comment_line + 1, node_line))
