"""Source files and spans: offsets are kept, line/column are computed only when a diagnostic needs them."""

from __future__ import annotations

from bisect import bisect_right


class SourceFile:
    """The text of one input file and the offsets at which its lines start."""

    __slots__ = ("path", "text", "_line_starts")

    def __init__(self, path: str, text: str):
        self.path = path
        self.text = text
        self._line_starts: list[int] | None = None

    def line_starts(self) -> list[int]:
        if self._line_starts is None:
            starts = [0]
            find = self.text.find
            i = find("\n")
            while i != -1:
                starts.append(i + 1)
                i = find("\n", i + 1)
            self._line_starts = starts
        return self._line_starts

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and column (in code points) of an offset."""
        starts = self.line_starts()
        line = bisect_right(starts, offset) - 1
        return line + 1, offset - starts[line] + 1

    def line_text(self, line: int) -> str:
        starts = self.line_starts()
        start = starts[line - 1]
        end = starts[line] - 1 if line < len(starts) else len(self.text)
        return self.text[start:end].rstrip("\r")

    def __repr__(self) -> str:
        return f"SourceFile({self.path!r})"


class Span:
    """A half-open range of offsets in one source file.

    A plain slotted class rather than a dataclass: the parser makes one per AST node, and this
    constructor is twice as fast. Spans never take part in AST equality.
    """

    __slots__ = ("source", "start", "end")

    def __init__(self, source: SourceFile, start: int, end: int):
        self.source = source
        self.start = start
        self.end = end

    def __repr__(self) -> str:
        return f"Span({self.source.path!r}, {self.start}, {self.end})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Span) and self.source is other.source
                and self.start == other.start and self.end == other.end)

    def __hash__(self) -> int:
        return hash((id(self.source), self.start, self.end))

    @property
    def path(self) -> str:
        return self.source.path

    def start_line_col(self) -> tuple[int, int]:
        return self.source.line_col(self.start)

    def end_line_col(self) -> tuple[int, int]:
        return self.source.line_col(max(self.start, self.end))

    def location(self) -> str:
        """`file:line:col`, the form used in diagnostics and in provenance metadata."""
        line, col = self.start_line_col()
        return f"{self.source.path}:{line}:{col}"

    def text(self) -> str:
        return self.source.text[self.start:self.end]
