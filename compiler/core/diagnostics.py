"""Diagnostics as values: a code, a severity, a one-line message, a primary span, a hint.

Message style (after cedar-policy): lowercase, no final period, user input in backticks, one line;
anything longer goes to the hint. Every code is registered in :mod:`compiler.core.codes`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from compiler.core.codes import code_info
from compiler.core.source import Span

ERROR = "error"
WARNING = "warning"


def escape_text(text: str) -> str:
    r"""Text with every character that is not printable (controls, format characters such as
    bidirectional overrides, separators other than the space) written as a Python escape:
    `\x01`, `\u202e`. Printable text, non-ASCII letters included, is left as it is."""
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _shown(path: str) -> str:
    """A file name as a terminal may print it (a name may hold control characters too)."""
    return path if path.isprintable() else escape_text(path)


def visible_line(text: str) -> str:
    """A source line for an excerpt, one character per column as the carets count them: C0
    controls as their control pictures (U+2401 for U+0001), other unprintable characters as U+FFFD."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else chr(0x2400 + ord(ch)) if ord(ch) < 0x20
                   else "\u2421" if ch == "\x7f" else "\ufffd" for ch in text)


class Label:
    """A secondary span with a short note, such as the earlier route that shadows this one."""

    __slots__ = ("span", "message")

    def __init__(self, span: Span, message: str):
        self.span, self.message = span, message if message.isprintable() else escape_text(message)

    def __repr__(self) -> str:
        return f"Label({self.span!r}, {self.message!r})"


class Diagnostic:
    """One finding: code, message, primary span (or a path for file-level problems), hint, labels.

    A plain slotted class rather than a dataclass: it is defined at every start-up of the
    command, and dataclass creation is the largest part of meshc's import time.
    """

    __slots__ = ("code", "message", "span", "hint", "labels", "path", "severity")

    def __init__(self, code: str, message: str, span: Span | None, hint: str | None = None,
                 labels: tuple[Label, ...] = (), path: str | None = None, severity: str = ""):
        # Messages quote source text: a control or invisible character in it is shown escaped,
        # in every format (a raw one prints as nothing, or drives the terminal).
        if not message.isprintable():
            message = escape_text(message)
        if hint is not None and not hint.isprintable():
            hint = escape_text(hint)
        self.code, self.message, self.span, self.hint = code, message, span, hint
        self.labels, self.path = labels, path
        self.severity = severity or code_info(code).severity

    def _key(self) -> tuple:
        return (self.code, self.message, self.sort_key(), self.hint, self.severity)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Diagnostic) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        where = self.span.location() if self.span is not None else self.path
        return f"Diagnostic({self.code}, {self.message!r}, {where})"

    @property
    def file(self) -> str | None:
        return self.span.path if self.span is not None else self.path

    def sort_key(self) -> tuple:
        if self.span is None:
            return (self.path or "", 0, 0, self.code)
        return (self.span.path, self.span.start, 0, self.code)

    def to_json(self) -> dict:
        """The machine-readable form (`--format json`); lines and columns are 1-based code points."""
        out: dict = {
            "code": self.code,
            "severity": self.severity,
            "title": code_info(self.code).title,
            "message": self.message,
            "hint": self.hint,
            "file": self.file,
            "line": None,
            "column": None,
            "end_line": None,
            "end_column": None,
            "labels": [],
        }
        if self.span is not None:
            out["line"], out["column"] = self.span.start_line_col()
            out["end_line"], out["end_column"] = self.span.end_line_col()
        for label in self.labels:
            line, col = label.span.start_line_col()
            out["labels"].append({"file": label.span.path, "line": line, "column": col, "message": label.message})
        return out


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate (`closest`), or None when nothing is close."""
    close = closest(name, candidates)
    return f"did you mean `{close}`?" if close is not None else None


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to `name`, or None when nothing is close: a candidate that differs
    only in case first (`STRICT`: `strict`), else the most similar one, as written or ignoring
    case."""
    import difflib  # only a run with a misspelt name pays for it
    words = sorted(set(candidates))
    folded = name.casefold()
    close = [w for w in words if w.casefold() == folded and w != name]
    if not close:
        close = difflib.get_close_matches(name, words, n=1, cutoff=0.6)
    if not close:
        by_folded = {w.casefold(): w for w in reversed(words)}
        close = [by_folded[w] for w in difflib.get_close_matches(folded, list(by_folded), n=1, cutoff=0.6)]
    return close[0] if close else None


class Collector:
    """Collects diagnostics from every pass; passes never raise on bad input."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def add(self, code: str, message: str, span: Span | None, hint: str | None = None,
            labels: tuple[Label, ...] = (), path: str | None = None) -> None:
        self.items.append(Diagnostic(code, message, span, hint, labels, path))

    def extend(self, diags: Iterable[Diagnostic]) -> None:
        self.items.extend(diags)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == ERROR for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        seen = set()
        out = []
        for d in sorted(self.items, key=Diagnostic.sort_key):
            key = (d.code, d.message, d.sort_key())
            if key not in seen:
                seen.add(key)
                out.append(d)
        return out


# ---- rendering ---------------------------------------------------------------------------

_COLORS = {"error": "\x1b[1;31m", "warning": "\x1b[1;33m", "blue": "\x1b[1;34m", "bold": "\x1b[1m", "reset": "\x1b[0m"}
_NO_COLORS = dict.fromkeys(_COLORS, "")


def use_color(stream=None, choice: str = "auto") -> bool:
    """Colour only on a terminal, never when NO_COLOR is set (unless forced)."""
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty()


def render_human(diag: Diagnostic, color: bool = False) -> str:
    """rustc-style rendering: headline, location, source excerpt with carets, labels and hint."""
    c = _COLORS if color else _NO_COLORS
    sev = diag.severity
    lines = [f"{c[sev]}{sev}[{diag.code}]{c['reset']}{c['bold']}: {diag.message}{c['reset']}"]
    if diag.span is None:
        if diag.path:
            lines.append(f"  {c['blue']}-->{c['reset']} {_shown(diag.path)}")
    else:
        src = diag.span.source
        line, col = diag.span.start_line_col()
        end_line, end_col = diag.span.end_line_col()
        shown = [(line, col, end_col if end_line == line else None, "^", "")]
        for label in diag.labels:
            if label.span.source is src:
                l_line, l_col = label.span.start_line_col()
                l_end_line, l_end_col = label.span.end_line_col()
                shown.append((l_line, l_col, l_end_col if l_end_line == l_line else None, "-", label.message))
        width = len(str(max(s[0] for s in shown)))
        pad = " " * width
        lines.append(f"{pad}{c['blue']}-->{c['reset']} {_shown(src.path)}:{line}:{col}")
        lines.append(f"{pad} {c['blue']}|{c['reset']}")
        previous = None
        for s_line, s_col, s_end, mark, note in sorted(shown, key=lambda s: (s[0], s[3] == "^")):
            if previous is not None and s_line > previous + 1:
                lines.append(f"{c['blue']}...{c['reset']}")
            text = visible_line(src.line_text(s_line).expandtabs(1))
            if s_line != previous:
                lines.append(f"{c['blue']}{s_line:>{width}} |{c['reset']} {text}")
            end = s_end if s_end is not None else len(text) + 1
            length = max(1, end - s_col)
            tone = c[sev] if mark == "^" else c["blue"]
            note = f" {note}" if note else ""
            lines.append(f"{pad} {c['blue']}|{c['reset']} {' ' * (s_col - 1)}{tone}{mark * length}{note}{c['reset']}")
            previous = s_line
        lines.append(f"{pad} {c['blue']}|{c['reset']}")
        for label in diag.labels:
            if label.span.source is not src:
                lines.append(f"{pad} {c['blue']}= note:{c['reset']} {label.message} at {_shown(label.span.location())}")
    if diag.hint:
        indent = " " * (len(str(diag.span.start_line_col()[0])) if diag.span else 1)
        lines.append(f"{indent} {c['blue']}={c['reset']} {c['bold']}hint:{c['reset']} {diag.hint}")
    return "\n".join(lines)


def summary_line(diags: list[Diagnostic]) -> str:
    errors = sum(d.severity == ERROR for d in diags)
    warnings = sum(d.severity == WARNING for d in diags)

    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    return f"{plural(errors, 'error')}, {plural(warnings, 'warning')}"


def render_json(diags: list[Diagnostic]) -> str:
    import json  # only `--format json` pays for it

    return json.dumps({"diagnostics": [d.to_json() for d in diags], "summary": {
        "errors": sum(d.severity == ERROR for d in diags),
        "warnings": sum(d.severity == WARNING for d in diags)}}, indent=2, sort_keys=True)
