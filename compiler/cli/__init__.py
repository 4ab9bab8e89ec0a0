"""The `meshc` command line: a thin shell over the compile API (compiler/api.py).

One module per command (check and compile in compile.py, fmt, lint, ca, doctor); `parser.py` declares
the arguments, `inputs.py` expands FILES, `report.py` prints diagnostics, `output.py` writes files
atomically. Exit codes (exits.py): 0 success (warnings allowed), 1 the input has errors, 2 usage or
I/O error, 3 internal error (a short report naming the inputs, never a bare traceback).
"""

from __future__ import annotations

import os
import sys

from compiler import __version__
from compiler.cli.exits import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE


def run(argv: list[str]) -> int:
    if argv and argv[0] == "proxy":  # the native proxy: imports runtime_proxy only, never the compiler
        from runtime_proxy.__main__ import main as proxy_main

        return proxy_main(argv[1:], prog="meshc proxy")
    from compiler.cli.parser import COMMANDS, build_parser

    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    if argv and argv[0] == "trace":   # its FILES and its request may stand on both sides of the options
        args, extra = parser.parse_known_args(argv)
        unknown = [e for e in extra if e.startswith("-") and e != "-"]
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.positionals += extra
    else:
        args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "explain":  # reads compiler/tooling/explanations/, which no other command loads
        from compiler.tooling import explain

        return explain.run(args.code, args.list)
    if args.command == "lsp":  # pygls is imported here only: no other command pays for it
        return _lsp()
    if args.command == "ca":  # cryptography is imported here only
        from compiler.cli import ca

        return ca.run(args)
    if args.command == "fmt" and args.files == ["-"]:
        from compiler.cli.fmt import fmt_stdin

        return fmt_stdin(args)
    if args.command == "stat":  # live traffic: the proxies' admin endpoints (grpc only to ask `meshc serve`)
        from compiler.cli.stat import stat

        return stat(args)
    if args.command == "diff":  # two sides, each files, a directory or a git revision
        from compiler.cli.diff import run_diff

        return run_diff(args)
    if args.command == "status":  # a client of `meshc serve`: grpc, imported by compiler.control only
        from compiler.cli.status import status

        return status(args)
    if args.command == "trace":  # its FILES and its request share the positionals
        from compiler.cli.trace import trace

        return trace(args)
    if args.command == "import":  # YAML in, .mesh out: compiler/tooling/istio_import
        from compiler.cli.import_ import import_command

        return import_command(args)
    from compiler.cli.inputs import input_files

    files, code = input_files(args.files)
    if code != EXIT_OK:
        return code
    if args.command == "fmt":
        from compiler.cli.fmt import fmt

        return fmt(files, args)
    if args.command == "lint":  # before the compiler: a cached lint never loads it
        from compiler.cli.lint import lint

        return lint(files, args)
    if args.command == "doctor":  # loads cryptography, as `meshc ca`
        from compiler.cli.doctor import doctor

        return doctor(files, args)
    if args.command == "serve":  # grpc and the Envoy protos are imported here (and by `status`) only
        from compiler.cli.serve import serve

        return serve(files, args)
    if args.command == "graph":
        from compiler.cli.graph import graph

        return graph(files, args)
    if args.command == "test":
        from compiler.cli.test import test_command

        return test_command(files, args)
    from compiler.cli.compile import check, compile_command

    if args.command == "check":
        return check(files, args)
    return compile_command(files, args)


def _lsp() -> int:
    try:
        from compiler.tooling.lsp import server
    except ImportError as err:
        if (err.name or "").split(".")[0] not in ("pygls", "lsprotocol"):
            raise
        print("meshc: error: `meshc lsp` needs pygls and lsprotocol, which are not installed: "
              "pip install 'meshc[lsp]'", file=sys.stderr)
        return EXIT_USAGE
    return server.main()


def entry() -> None:
    """The `meshc` command: main(), then exit without tearing the heap down.

    A large program leaves millions of long-lived objects behind: the cyclic garbage collector
    would walk them again and again (a third of a second per thousand services), and freeing them
    one by one at exit costs as much. A one-shot command needs neither: the compiler makes no
    reference cycles worth collecting, and the operating system reclaims the memory at once.
    """
    import gc

    from compiler.cli import exits

    exits.ONE_SHOT = True
    gc.disable()
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as err:  # a bug: short report, traceback only on request
        if os.environ.get("MESHC_DEBUG"):
            raise
        inputs = " ".join(a for a in argv if not a.startswith("-") and os.path.exists(a)) or "(none)"
        print(f"meshc: internal error: {type(err).__name__}: {err}\n"
              f"  inputs: {inputs}\n"
              f"  this is a bug in meshc {__version__}; please report it with the inputs above "
              "(set MESHC_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
