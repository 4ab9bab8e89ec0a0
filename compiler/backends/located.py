"""Diagnostics raised by a backend, located at an IR node's provenance (`Location`).

The excerpt comes from the compilation's own sources (the texts it parsed), never from reading a
file again; an IR whose sources are not at hand (read from a file) still gives `FILE:LINE:COL`.
"""

from __future__ import annotations

from compiler import ir
from compiler.core.diagnostics import Diagnostic
from compiler.core.source import SourceFile, Span


def located(code: str, message: str, where: ir.Location | None, sources: dict[str, SourceFile],
            hint: str | None = None) -> Diagnostic:
    """A diagnostic at `where`, with an excerpt when its file is among `sources`."""
    if where is None:
        return Diagnostic(code, message, None, hint)
    src = sources.get(where.file)
    starts = src.line_starts() if src is not None else ()
    if src is None or not 1 <= where.line <= len(starts):
        return Diagnostic(code, message, None, hint, path=str(where))
    start = starts[where.line - 1] + where.column - 1
    end = src.text.find("\n", start)
    end = len(src.text) if end == -1 else end
    # Underline the first word at the location (the keyword of the construct).
    word_end = start
    while word_end < end and not src.text[word_end].isspace():
        word_end += 1
    return Diagnostic(code, message, Span(src, start, max(word_end, start + 1)), hint)
