"""Diagnostics raised by a backend, located at the IR node's `source` (`file:line:col`)."""

from __future__ import annotations

from compiler.core.diagnostics import Diagnostic
from compiler.core.source import SourceFile, Span


def located(code: str, message: str, source: str | None, sources: dict[str, SourceFile],
            hint: str | None = None) -> Diagnostic:
    """A diagnostic at `source`, with an excerpt when the file is among `sources` (or readable)."""
    if not source:
        return Diagnostic(code, message, None, hint)
    path, line, col = _split(source)
    src = sources.get(path)
    if src is None:
        try:
            with open(path, encoding="utf-8") as fh:
                src = SourceFile(path, fh.read())
        except (OSError, UnicodeDecodeError):
            return Diagnostic(code, message, None, hint, path=source)
    starts = src.line_starts()
    if not 1 <= line <= len(starts):
        return Diagnostic(code, message, None, hint, path=source)
    start = starts[line - 1] + col - 1
    end = src.text.find("\n", start)
    end = len(src.text) if end == -1 else end
    # Underline the first word at the location (the keyword of the construct).
    word_end = start
    while word_end < end and not src.text[word_end].isspace():
        word_end += 1
    return Diagnostic(code, message, Span(src, start, max(word_end, start + 1)), hint)


def _split(source: str) -> tuple[str, int, int]:
    path, line, col = source.rsplit(":", 2)
    return path, int(line), int(col)
