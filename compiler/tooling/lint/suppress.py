"""Inline suppression: `# meshc: ignore[L0201]` (or `ignore[L0201, W0501]`) at the end of the line a
finding points at, or alone on the line just above it. A suppression must name its codes: a
bare `ignore` would hide findings nobody has read. Errors cannot be suppressed."""

from __future__ import annotations

import re

from compiler.core.diagnostics import Diagnostic

_COMMENT = re.compile(r"#\s*meshc:\s*ignore\[([A-Za-z0-9_,\s]+)\]")


def suppressed_codes(line: str) -> set[str]:
    found: set[str] = set()
    for m in _COMMENT.finditer(line):
        found.update(c.strip().upper() for c in m.group(1).split(",") if c.strip())
    return found


def is_suppressed(diag: Diagnostic) -> bool:
    if diag.span is None or diag.severity == "error":
        return False
    line, _ = diag.span.start_line_col()
    source = diag.span.source
    if diag.code in suppressed_codes(source.line_text(line)):
        return True
    if line > 1:
        above = source.line_text(line - 1)
        if above.lstrip().startswith("#") and diag.code in suppressed_codes(above):
            return True
    return False
