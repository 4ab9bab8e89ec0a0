"""`meshc graph`: a picture of the policy (compiler/tooling/graph/), from the IR of one compile.

The format is `--format`, else the suffix of `-o` (`.html`, `.htm` or `.svg`); `-o -` (or no
`-o`) writes to standard output. The file is written atomically and only without an error (a program without
services is one: nothing to draw).
"""

from __future__ import annotations

import os
import sys

from compiler.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from compiler.cli.report import print_diagnostics

SUFFIXES = {".html": "html", ".htm": "html", ".svg": "svg"}


def _format(args) -> str | None:
    if args.format is not None:
        return str(args.format)
    if args.output in (None, "-"):
        return "html"
    suffix = os.path.splitext(args.output)[1].lower()
    return SUFFIXES.get(suffix)


def graph(files: list[str], args) -> int:
    fmt = _format(args)
    if fmt is None:
        print(f"meshc: error: cannot tell the format from {args.output!r}: name it .html or .svg, or pass "
              "--format html|svg", file=sys.stderr)
        return EXIT_USAGE
    from compiler import api
    from compiler.tooling.graph.model import build
    from compiler.tooling.graph.render import html_page, svg_document

    comp = api.compile(files)
    print_diagnostics(comp.diagnostics, args.output_format, args.color,
                      json_stream=sys.stderr if args.output in (None, "-") else None)
    if comp.has_errors:
        return EXIT_INPUT
    program = comp.ir
    assert program is not None  # lowered: there is no error
    picture = build(program)
    if not picture.services:
        print("meshc: error: no services to draw: the program declares no `service`", file=sys.stderr)
        return EXIT_INPUT
    text = html_page(picture, " ".join(args.files)) if fmt == "html" else svg_document(picture)
    data = text.encode("utf-8")
    if args.output in (None, "-"):
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        return EXIT_OK
    from compiler.cli.output import write_all

    path = os.path.abspath(args.output)
    try:
        write_all(os.path.dirname(path), {os.path.basename(path): data})
    except OSError as err:
        print(f"meshc: error: cannot write {args.output}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    pairs = len(picture.pairs)
    print(f"meshc: wrote {args.output} ({fmt}, {len(picture.services)} services, {pairs} caller pairs)",
          file=sys.stderr)
    return EXIT_OK
