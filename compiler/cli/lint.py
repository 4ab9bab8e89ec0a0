"""`meshc lint`: every diagnostic plus the lint rules (compiler/tooling/lint/), exit 1 on any finding."""

from __future__ import annotations

import os
import sys

from compiler.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from compiler.cli.report import print_diagnostics, print_outcome


def lint(files: list[str], args) -> int:
    from compiler.tooling.lint import lint_program
    from compiler.tooling.lint.config import ConfigError, find_config

    try:
        config = find_config()
        run = lint_program(files, config, use_cache=not args.no_cache)
    except ConfigError as err:
        print(f"meshc: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # ruff's contract: 2 for internal errors too
        if os.environ.get("MESHC_DEBUG"):
            raise
        print(f"meshc: internal error: {type(err).__name__}: {err} (set MESHC_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_USAGE
    findings = run.findings
    print_diagnostics(findings, args.output_format, args.color, quiet=args.quiet)
    if not findings:  # lint succeeds only without findings: a warning fails it too
        print_outcome(findings, args, "linted", run.files, run.services)
    return EXIT_INPUT if findings and not args.exit_zero else EXIT_OK
