"""`meshc lint`: every diagnostic plus the lint rules (compiler/tooling/lint/), exit 1 on any finding."""

from __future__ import annotations

import os
import sys

from compiler.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from compiler.cli.report import print_diagnostics


def lint(files: list[str], args) -> int:
    from compiler.tooling.lint import lint_files
    from compiler.tooling.lint.config import ConfigError, find_config

    try:
        config = find_config()
        findings, _ = lint_files(files, config, use_cache=not args.no_cache)
    except ConfigError as err:
        print(f"meshc: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # ruff's contract: 2 for internal errors too
        if os.environ.get("MESHC_DEBUG"):
            raise
        print(f"meshc: internal error: {type(err).__name__}: {err} (set MESHC_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_USAGE
    print_diagnostics(findings, args.output_format, args.color)
    return EXIT_INPUT if findings and not args.exit_zero else EXIT_OK
