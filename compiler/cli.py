"""The `meshc` command line: a thin shell over compiler.driver.

Exit codes: 0 success (warnings allowed), 1 the input has errors, 2 usage or I/O error,
3 internal error (a short report naming the inputs, never a bare traceback).
"""

from __future__ import annotations

import argparse
import os
import sys

from compiler import __version__

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit 2 with a one-line reason
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"meshc: error: {message}\n")


COMMANDS = ("check", "compile", "explain", "lint", "fmt", "lsp", "ca")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with `only`, just that subcommand (building the others costs time
    that every editor and pre-commit run would pay)."""
    parser = _Parser(prog="meshc", description="Compile .mesh service-mesh policies: check them, "
                                               "and emit the IR (and, with the backends, Envoy and native proxy config).")
    parser.add_argument("--version", action="version", version=f"meshc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(p):
        p.add_argument("files", nargs="+", metavar="FILES",
                       help=".mesh files or directories (searched for .mesh files); together they form one program")
        p.add_argument("--output-format", "--format", dest="output_format", choices=("human", "json", "sarif", "github"),
                       default="human", help="how diagnostics are printed: human (default), json, sarif "
                                             "(SARIF 2.1.0, for code scanning) or github (workflow annotations)")
        p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                       help="colour in human output (default: auto, only on a terminal; NO_COLOR disables)")

    if only in (None, "check"):
        check = sub.add_parser("check", help="check files and report every diagnostic",
                               description="Parse and check a program; print every diagnostic. Writes nothing.")
        common(check)
        check.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are errors (report only)")
    if only in (None, "lint"):
        lint = sub.add_parser("lint", help="check files and apply the lint rules (exit 1 on any finding)",
                              description="Every compiler diagnostic plus the lint rules (`meshc explain --list`), "
                                          "configured by [tool.meshc.lint] in pyproject.toml or [lint] in meshc.toml, "
                                          "suppressed inline by `# meshc: ignore[CODE]`. Exit 0 clean, 1 findings, "
                                          "2 usage, configuration or internal error.")
        common(lint)
        lint.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are findings")
        lint.add_argument("--no-cache", action="store_true", help="neither read nor write .meshc_cache/")
    if only in (None, "fmt"):
        fmt = sub.add_parser("fmt", help="rewrite files in the canonical layout, keeping every comment",
                             description="Rewrite .mesh files in the canonical layout (comments kept; the result is "
                                         "re-parsed and compared with the input before anything is written). "
                                         "`-` formats standard input to standard output.")
        fmt.add_argument("files", nargs="+", metavar="FILES", help=".mesh files or directories, or - for stdin")
        fmt.add_argument("--check", action="store_true",
                         help="write nothing; print a diff and exit 1 when a file would change")
        fmt.add_argument("--color", choices=("auto", "always", "never"), default="auto", help=argparse.SUPPRESS)
        fmt.add_argument("--output-format", "--format", dest="output_format", choices=("human", "json"),
                         default="human", help="how syntax errors are printed (default: human)")
    if only in (None, "explain"):
        explain = sub.add_parser("explain", help="explain a diagnostic code, with a bad and a good example",
                                 description="Print a diagnostic code's severity, title and explanation, "
                                             "with a bad and a good example; without CODE, list every code.")
        explain.add_argument("code", nargs="?", metavar="CODE", help="a code such as E0201 (any case)")
        explain.add_argument("--list", action="store_true", help="list every code with its severity and title")
    if only in (None, "lsp"):
        lsp = sub.add_parser("lsp", help="run the language server (LSP over standard input and output)",
                             description="A language server for editors: diagnostics, hover, go-to-definition, "
                                         "completion and formatting of .mesh files. Needs `pip install 'meshc[lsp]'`.")
        lsp.add_argument("--stdio", action="store_true", help="use standard input and output (the default and only transport)")
    if only in (None, "ca"):  # the development CA: compiler/ca_command.py
        from compiler.ca_command import add_parser

        add_parser(sub)
    if only is None:  # listed for --help only: run() hands `meshc proxy ...` to runtime_proxy as it is
        sub.add_parser("proxy", add_help=False,
                       help="run the native sidecar proxy on a compiled config (`meshc proxy --help`)")
    if only not in (None, "compile"):
        return parser
    comp = sub.add_parser("compile", help="check, lower and write outputs",
                          description="Check a program and, when it has no errors, write the requested outputs "
                                      "atomically into the output directory (nothing is written on error).")
    common(comp)
    comp.add_argument("--target", choices=("ir", "envoy", "native"), default="ir",
                      help="what to write: the IR (default), Envoy bootstrap and xDS files, or native proxy config")
    comp.add_argument("--emit", choices=("ir",), default=None, help=argparse.SUPPRESS)  # the 0.1 spelling of --target ir
    comp.add_argument("--proxy", action="append", metavar="SERVICE",
                      help="with --target envoy|native: the service whose sidecar to configure "
                           "(repeatable), or `all` for every service")
    comp.add_argument("--bootstrap", choices=("static", "xds"), default=None,
                      help="with --target envoy: a self-contained static bootstrap (default for named proxies) "
                           "or one that loads the xds/ files and reloads them on change (default for --proxy all)")
    comp.add_argument("--xds-dir", metavar="PATH",
                      help="with --target envoy: the absolute path where the xds/ files will be at run time "
                           "(default: OUTPUT/xds)")
    comp.add_argument("--certs-dir", metavar="PATH",
                      help="with --target envoy|native: the absolute path of the identity files' root at run time "
                           "(SERVICE/cert.pem, key.pem, ca.pem), over the mesh's `certificates`")
    comp.add_argument("--ir-format", choices=("json", "yaml"), default="json", help="IR serialisation (default: json)")
    comp.add_argument("-o", "--output", metavar="DIR", help="output directory (default: print to standard output)")
    return parser


def expand_paths(args: list[str]) -> tuple[list[str], list[str]]:
    """Files as given, directories as their .mesh files (sorted, recursively); and the missing paths."""
    files, missing = [], []
    for arg in args:
        if os.path.isdir(arg):
            found = []
            for root, dirs, names in os.walk(arg):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(root, n) for n in sorted(names) if n.endswith(".mesh")]
            files += found
        elif os.path.isfile(arg):
            files.append(arg)
        else:
            missing.append(arg)
    return files, missing


def _print_diagnostics(result, args, json_stream=None) -> None:
    """Human diagnostics go to stderr; JSON goes to stdout, unless stdout carries the IR."""
    from compiler.diagnostics import render_human, render_json, summary_line, use_color

    diags = result.diagnostics
    if args.output_format == "json":
        print(render_json(diags), file=json_stream or sys.stdout)
        return
    if args.output_format == "sarif":
        from compiler.formats import render_sarif

        print(render_sarif(diags, __version__), file=json_stream or sys.stdout)
        return
    if args.output_format == "github":
        from compiler.formats import render_github

        if diags:
            print(render_github(diags), file=json_stream or sys.stdout)
        return
    color = use_color(sys.stderr, args.color)
    for d in diags:
        print(render_human(d, color), file=sys.stderr)
        print(file=sys.stderr)
    if diags:
        print(f"meshc: {summary_line(diags)}", file=sys.stderr)


def run(argv: list[str]) -> int:
    if argv and argv[0] == "proxy":  # the native proxy: imports runtime_proxy only, never the compiler
        from runtime_proxy.__main__ import main as proxy_main

        return proxy_main(argv[1:], prog="meshc proxy")
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "explain":  # reads compiler/explanations/, which no other command loads
        from compiler import explain

        return explain.run(args.code, args.list)
    if args.command == "lsp":  # pygls is imported here only: no other command pays for it
        return _lsp()
    if args.command == "ca":  # cryptography is imported here only
        from compiler import ca_command

        return ca_command.run(args)
    if args.command == "fmt" and args.files == ["-"]:
        return _fmt_stdin(args)
    files, missing = expand_paths(args.files)
    for path in missing:
        print(f"meshc: error: no such file or directory: {path}", file=sys.stderr)
    if missing:
        return EXIT_USAGE
    if not files:
        print("meshc: error: no .mesh files found in " + ", ".join(args.files), file=sys.stderr)
        return EXIT_USAGE
    for path in files:  # an unreadable input is an I/O error (2); bad bytes are an input error (1, E0106)
        if not os.access(path, os.R_OK):
            print(f"meshc: error: cannot read {path}: permission denied", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "fmt":
        return _fmt(files, args)
    if args.command == "lint":  # before the driver import: a cached lint never loads the compiler
        return _lint(files, args)
    from compiler import driver

    if args.command == "check":
        result = driver.check_files(files)
        _print_diagnostics(result, args)
        return EXIT_INPUT if result.has_errors and not args.exit_zero else EXIT_OK

    if args.target != "ir":
        return _compile_target(files, args)
    if args.proxy or args.bootstrap or args.xds_dir or args.certs_dir:
        print("meshc: error: --proxy, --bootstrap, --xds-dir and --certs-dir need --target envoy or --target native",
              file=sys.stderr)
        return EXIT_USAGE
    result = driver.compile_files(files)
    _print_diagnostics(result, args, json_stream=sys.stderr if args.output is None else None)
    if result.has_errors:
        return EXIT_INPUT
    from compiler import output

    if args.ir_format == "yaml":
        text = output.ir_yaml(result.ir) if result.ir is not None else output.json_to_yaml(result.ir_json)
    else:
        text = result.ir_json if result.ir_json is not None else output.ir_json(result.ir)
    if args.output is None:
        if isinstance(text, bytes):
            sys.stdout.flush()
            sys.stdout.buffer.write(text)
        else:
            sys.stdout.write(text)
        return EXIT_OK
    try:
        written = output.write_all(args.output, {f"mesh.ir.{args.ir_format}": text})
    except OSError as err:
        print(f"meshc: error: cannot write to {args.output}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    services, routes = result.counts
    for path in written:
        print(f"meshc: wrote {path} ({services} services, {routes} routes)", file=sys.stderr)
    return EXIT_OK


def _fmt(files: list[str], args) -> int:
    """Format files in place (atomically), or with --check report which would change."""
    import difflib

    from compiler.fmt import FormatError, format_text

    changed = unchanged = failed = 0
    for path in files:
        try:
            with open(path, encoding="utf-8", newline="") as fh:
                text = fh.read()
        except UnicodeDecodeError:
            print(f"meshc: error: {path} is not UTF-8 text; not formatted", file=sys.stderr)
            failed += 1
            continue
        try:
            out = format_text(text, path)
        except FormatError as err:
            failed += 1
            if err.diagnostics:
                class _Found:
                    diagnostics = err.diagnostics
                _print_diagnostics(_Found, args)
            else:
                print(f"meshc: {err}", file=sys.stderr)
            continue
        if out == text:
            unchanged += 1
            continue
        changed += 1
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), out.splitlines(True),
                                                       f"{path}", f"{path} (formatted)"))
            continue
        _replace_file(path, out)
    verb = "would reformat" if args.check else "reformatted"
    summary = f"{changed} file{'s' * (changed != 1)} {verb}, {unchanged} left unchanged"
    if failed:
        summary += f", {failed} not formatted (errors above)"
    print(f"meshc: {summary}", file=sys.stderr)
    return EXIT_INPUT if failed or (args.check and changed) else EXIT_OK


def _fmt_stdin(args) -> int:
    from compiler.fmt import FormatError, format_text

    text = sys.stdin.read()
    try:
        sys.stdout.write(format_text(text, "<stdin>"))
    except FormatError as err:
        class _Found:
            diagnostics = err.diagnostics
        _print_diagnostics(_Found, args)
        if not err.diagnostics:
            print(f"meshc: {err}", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK


def _replace_file(path: str, text: str) -> None:
    """Write through a temporary file and a rename, keeping the file's permissions."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    mode = os.stat(path).st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _lsp() -> int:
    try:
        from compiler import lsp
    except ImportError as err:
        if (err.name or "").split(".")[0] not in ("pygls", "lsprotocol"):
            raise
        print("meshc: error: `meshc lsp` needs pygls and lsprotocol, which are not installed: "
              "pip install 'meshc[lsp]'", file=sys.stderr)
        return EXIT_USAGE
    return lsp.main()


def _lint(files: list[str], args) -> int:
    from compiler.lint import lint_files
    from compiler.lint.config import ConfigError, find_config

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

    class _Found:
        diagnostics = findings

    _print_diagnostics(_Found, args)
    return EXIT_INPUT if findings and not args.exit_zero else EXIT_OK


def _compile_target(files: list[str], args) -> int:
    """`compile --target envoy|native`: the IR through a backend into files, all written or none."""
    if not args.proxy:
        print(f"meshc: error: --target {args.target} needs --proxy SERVICE (repeatable) or --proxy all", file=sys.stderr)
        return EXIT_USAGE
    if args.output is None:
        print(f"meshc: error: --target {args.target} writes several files: give an output directory with -o DIR",
              file=sys.stderr)
        return EXIT_USAGE
    if args.xds_dir is not None and not os.path.isabs(args.xds_dir):
        print(f"meshc: error: --xds-dir must be an absolute path (Envoy resolves it at run time): {args.xds_dir}",
              file=sys.stderr)
        return EXIT_USAGE
    if args.certs_dir is not None and not os.path.isabs(args.certs_dir):
        print(f"meshc: error: --certs-dir must be an absolute path (the proxies resolve it at run time): {args.certs_dir}",
              file=sys.stderr)
        return EXIT_USAGE
    from compiler import backends, driver, output

    result = driver.compile_files(files)
    if result.has_errors:
        _print_diagnostics(result, args)
        return EXIT_INPUT
    program = result.ir
    if program is None:  # a sharded compile returns JSON only
        import orjson

        from compiler import ir

        program = ir.from_data(orjson.loads(result.ir_json))
    names = [s.name for s in program.services]
    if "all" in args.proxy:
        proxies = names
    else:
        known = set(names)
        proxies = []
        for name in args.proxy:
            if name not in known:
                from compiler.diagnostics import did_you_mean

                hint = did_you_mean(name, names)
                print(f"meshc: error: --proxy {name}: no service `{name}` in the program"
                      + (f" ({hint})" if hint else ""), file=sys.stderr)
                return EXIT_USAGE
            if name not in proxies:
                proxies.append(name)
    out_dir = os.path.abspath(args.output)
    options = backends.Options(bootstrap=args.bootstrap, xds_dir=args.xds_dir, output_dir=out_dir,
                               certs_dir=args.certs_dir)
    sources = result.program.sources if result.program is not None else {}
    emitted = backends.emit(args.target, program, proxies, options, sources)
    result.diagnostics = sorted(result.diagnostics + emitted.diagnostics, key=lambda d: d.sort_key())
    _print_diagnostics(result, args)
    if emitted.has_errors:
        return EXIT_INPUT
    try:
        written = output.write_all(args.output, emitted.files)
    except OSError as err:
        print(f"meshc: error: cannot write to {args.output}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    services, routes = result.counts
    print(f"meshc: wrote {len(written)} files for {len(proxies)} "
          f"{'proxy' if len(proxies) == 1 else 'proxies'} to {args.output} "
          f"({services} services, {routes} routes)", file=sys.stderr)
    return EXIT_OK


def entry() -> None:
    """The `meshc` command: main(), then exit without tearing the heap down.

    A large program leaves millions of long-lived objects behind: the cyclic garbage collector
    would walk them again and again (a third of a second per thousand services), and freeing them
    one by one at exit costs as much. A one-shot command needs neither: the compiler makes no
    reference cycles worth collecting, and the operating system reclaims the memory at once.
    """
    import gc

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
