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
                      json_stream: TextIO | None = None) -> None:
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
    for d in diags:
        print(render_human(d, colored), file=sys.stderr)
        print(file=sys.stderr)
    if diags:
        print(f"meshc: {summary_line(diags)}", file=sys.stderr)
