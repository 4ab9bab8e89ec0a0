"""Source files and spans: offsets are kept, line/column are computed only when a diagnostic needs them."""

from __future__ import annotations

import os
import stat
from bisect import bisect_right

# The largest source file meshc reads: 64 MiB. The 10,000-service benchmark program
# (benchmarks/compile_scale.py) is about 17 MB in one file; an endless file (/dev/zero, a /proc
# file) or a mistaken import of a huge file stops here instead of filling memory.
MAX_SOURCE_BYTES = 64 * 1024 * 1024
MAX_SOURCE_TEXT = "64 MiB"

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class UnusableSource(Exception):
    """A path that names something other than a regular file, or a file over MAX_SOURCE_BYTES.
    `reason` completes "`PATH` is ..." / "imported file `PATH` is ..."."""

    def __init__(self, reason: str, too_large: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.too_large = too_large


def read_source_bytes(path: str) -> bytes:
    """The bytes of a source file: only a regular file, at most MAX_SOURCE_BYTES.

    Opened without blocking (a FIFO with no writer would block an ordinary open) and judged on
    the opened descriptor (no race between a check and the open); the read is bounded whatever
    size the file reports (a /proc file says 0 and streams). Raises OSError as open() does, and
    UnusableSource."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a file")
            raise UnusableSource(f"not a regular file: it is {kind}")
        if st.st_size > MAX_SOURCE_BYTES:
            raise UnusableSource(_too_large(st.st_size), too_large=True)
        chunks = []
        total = 0
        want = st.st_size + 1  # one read for the whole file, and one that finds its end
        while True:
            chunk = os.read(fd, min(want, MAX_SOURCE_BYTES + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_SOURCE_BYTES:
                raise UnusableSource(_too_large(None), too_large=True)
            want = 1 << 20
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int | None) -> str:
    what = f" ({size:,} bytes)" if size is not None else ""
    return f"larger than {MAX_SOURCE_TEXT}{what}, the limit for one source file"


def read_source(path: str) -> str:
    """The text of a source file as open(path, encoding="utf-8").read() gives it (CR LF and
    a lone CR read as LF), with the limits of read_source_bytes. Raises OSError,
    UnusableSource and UnicodeDecodeError (whose `start` is the offset in the file)."""
    text = read_source_bytes(path).decode("utf-8")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


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
