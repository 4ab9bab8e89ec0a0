"""Printing diagnostics in the format asked for (`--output-format`): human on standard error;
json, sarif and github on standard output, unless standard output carries a compile's output."""

from __future__ import annotations

import sys

from compiler import __version__
from compiler.core.diagnostics import Diagnostic

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from typing import TextIO


def print_diagnostics(diags: list[Diagnostic], output_format: str, color: str = "auto",
                      json_stream: TextIO | None = None, quiet: bool = False) -> None:
    from compiler.core.diagnostics import render_human, render_json, summary_line, use_color

    stream = json_stream or sys.stdout
    if output_format == "json":
        print(render_json(diags), file=stream)
        return
    if output_format == "sarif":
        from compiler.tooling.formats import render_sarif

        print(render_sarif(diags, __version__), file=stream)
        return
    if output_format == "github":
        from compiler.tooling.formats import render_github

        if diags:
            print(render_github(diags), file=stream)
        return
    colored = use_color(sys.stderr, color)
    # In chunks rather than a print per line: standard error is line-buffered, so that would be
    # a write per line (tens of thousands of diagnostics for a fleet with warnings).
    parts: list[str] = []
    for d in diags:
        parts += (render_human(d, colored), "\n\n")
        if len(parts) >= 1000:
            sys.stderr.write("".join(parts))
            parts.clear()
    if parts:
        sys.stderr.write("".join(parts))
    if diags and not quiet:
        print(f"meshc: {summary_line(diags)}", file=sys.stderr)


def print_outcome(diags: list[Diagnostic], args, verb: str, files: int, services: int, extra: str = "") -> None:
    """The one line a successful `check` or `lint` ends with, on standard output as ruff's "All
    checks passed!" (the diagnostics, and the error tally of a failed run, are on standard error):
    what was read, and the warnings. Never with --quiet, in a machine format or after an error."""
    if args.quiet or args.output_format != "human" or any(d.severity == "error" for d in diags):
        return
    warnings = len(diags)
    found = (f"no errors, {warnings} warning{'' if warnings == 1 else 's'}" if warnings
             else "all checks passed")
    print(f"meshc: {verb} {files} file{'' if files == 1 else 's'}, {services} "
          f"service{'' if services == 1 else 's'}{extra}: {found}")
