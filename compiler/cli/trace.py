"""`meshc trace FILES… [--from SERVICE] 'METHOD URL' [-H 'name: value']… [--identity ID] [--seed N]`:
one request explained through both hops, by the proxy's own decision (compiler/cli/trace_run.py),
printed for people (compiler/cli/trace_render.py) or as JSON (`--output-format json`, `schema` 1).

Exit codes as every command: 0 the request was traced (whatever its answer: a 403 or a 404 is a
trace, not an error), 1 errors in the program or a request that cannot be traced (an unknown
`--from` service, a malformed URL or header), 2 usage.
"""

from __future__ import annotations

import os
import sys

from compiler.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE


def split_positionals(values: list[str]) -> tuple[list[str], str | None, str | None]:
    """(FILES, the request, an error): the request is the one argument that is not a path and
    reads as 'METHOD URL' (a space in it), wherever it is among the files."""
    requests = [v for v in values if " " in v.strip() and not os.path.exists(v)]
    if len(requests) != 1:
        what = "no request" if not requests else "more than one request (" + ", ".join(map(repr, requests)) + ")"
        return values, None, f"{what}: give one 'METHOD URL' argument, e.g. 'GET http://reviews/reviews/0'"
    files = [v for v in values if v is not requests[0]]
    if not files:
        return files, None, "no FILES: give the .mesh files or directories of the program"
    return files, requests[0], None


def trace(args) -> int:
    files_args, request_text, problem = split_positionals(args.positionals)
    if problem is not None:
        print(f"meshc: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from compiler.cli.trace_run import TraceInputError, parse_request

    try:
        request = parse_request(request_text or "", args.header or [])
    except TraceInputError as err:
        print(f"meshc: error: {err}", file=sys.stderr)
        return EXIT_INPUT
    from compiler.cli.inputs import input_files

    files, code = input_files(files_args)
    if code != EXIT_OK:
        return code
    from compiler import api
    from compiler.cli.report import print_diagnostics

    comp = api.compile(files)
    if comp.has_errors:
        print_diagnostics(comp.diagnostics, args.output_format, "auto")
        return EXIT_INPUT
    from compiler.cli.trace_run import run

    try:
        result = run(comp, request, args.caller, args.identity, args.seed)
    except TraceInputError as err:
        print(f"meshc: error: {err}", file=sys.stderr)
        return EXIT_INPUT
    data = result.data()
    if args.output_format == "json":
        import orjson

        sys.stdout.flush()
        sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        return EXIT_OK
    from compiler.cli.trace_render import render

    sys.stdout.write(render(data))
    return EXIT_OK
