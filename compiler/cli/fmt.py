"""`meshc fmt`: files rewritten in the canonical layout (compiler/syntax/fmt.py), atomically."""

from __future__ import annotations

import sys

from compiler.cli.exits import EXIT_INPUT, EXIT_OK
from compiler.cli.report import print_diagnostics


def fmt(files: list[str], args) -> int:
    """Format files in place (atomically), or with --check report which would change."""
    import difflib

    from compiler.cli.output import replace_file
    from compiler.core.source import UnusableSource, read_source_bytes
    from compiler.syntax.fmt import FormatError, format_text

    changed = unchanged = failed = 0
    for path in files:
        try:
            text = read_source_bytes(path).decode("utf-8")  # line ends as they are
        except UnicodeDecodeError:
            print(f"meshc: error: {path} is not UTF-8 text; not formatted", file=sys.stderr)
            failed += 1
            continue
        except UnusableSource as err:
            print(f"meshc: error: {path} is {err.reason}; not formatted", file=sys.stderr)
            failed += 1
            continue
        try:
            out = format_text(text, path)
        except FormatError as err:
            failed += 1
            _report(err, args)
            continue
        if out == text:
            unchanged += 1
            continue
        changed += 1
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), out.splitlines(True),
                                                       f"{path}", f"{path} (formatted)"))
            continue
        replace_file(path, out)
    verb = "would reformat" if args.check else "reformatted"
    summary = f"{changed} file{'s' * (changed != 1)} {verb}, {unchanged} left unchanged"
    if failed:
        summary += f", {failed} not formatted (errors above)"
    print(f"meshc: {summary}", file=sys.stderr)
    return EXIT_INPUT if failed or (args.check and changed) else EXIT_OK


def fmt_stdin(args) -> int:
    from compiler.core.source import MAX_SOURCE_BYTES, MAX_SOURCE_TEXT
    from compiler.syntax.fmt import FormatError, format_text

    text = sys.stdin.read(MAX_SOURCE_BYTES + 1)  # bounded: `meshc fmt - < /dev/zero` ends
    if len(text) > MAX_SOURCE_BYTES:
        print(f"meshc: error: standard input is larger than {MAX_SOURCE_TEXT}, the limit for one source file; "
              "not formatted", file=sys.stderr)
        return EXIT_INPUT
    try:
        sys.stdout.write(format_text(text, "<stdin>"))
    except FormatError as err:
        _report(err, args)
        return EXIT_INPUT
    return EXIT_OK


def _report(err, args) -> None:
    """A file that does not format: its syntax errors, or the formatter's own complaint."""
    if err.diagnostics:
        print_diagnostics(err.diagnostics, args.output_format, args.color)
    else:
        print(f"meshc: {err}", file=sys.stderr)
