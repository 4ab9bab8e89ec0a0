"""`meshc import istio FILES… -o DIR`: Istio and Kubernetes YAML to formatted `.mesh` files.

The translation is compiler/tooling/istio_import; this module expands FILES (directories: their
`.yaml` and `.yml` files, sorted), prints the diagnostics in the format asked for and writes the
files atomically, all or none, only without an error (exit 1 with errors, 2 usage or I/O), with
a manifest as `meshc compile -o DIR` keeps one (its own, `.meshc-import-manifest`): a file an
earlier import wrote and this one does not is removed, unless it was edited since (then kept, with
a warning); what a compile wrote into the same directory is never touched.
"""

from __future__ import annotations

import os
import sys

from compiler.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE


def yaml_files(args: list[str]) -> tuple[list[str], int]:
    files: list[str] = []
    for arg in args:
        if os.path.isdir(arg):
            for root, dirs, names in os.walk(arg):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [os.path.join(root, n) for n in sorted(names) if n.endswith((".yaml", ".yml"))]
        elif os.path.exists(arg):
            files.append(arg)
        else:
            print(f"meshc: error: no such file or directory: {arg}", file=sys.stderr)
            return files, EXIT_USAGE
    if not files:
        print("meshc: error: no .yaml or .yml files found in " + ", ".join(args), file=sys.stderr)
        return files, EXIT_USAGE
    return files, EXIT_OK


def import_command(args) -> int:
    from compiler.cli.report import print_diagnostics
    from compiler.tooling.istio_import import import_istio

    files, code = yaml_files(args.files)
    if code != EXIT_OK:
        return code
    result = import_istio(files, out_dir=args.output, trust_domain=args.trust_domain)
    print_diagnostics(result.diagnostics, args.output_format, args.color, quiet=args.quiet)
    if result.has_errors:
        return EXIT_INPUT
    from compiler.cli.output import IMPORT_MANIFEST, report_stale, write_tracked

    try:   # the .mesh files of an earlier import that this one no longer writes are removed
        written, removed, kept, unremoved = write_tracked(args.output, result.files, whole=True,
                                                          manifest=IMPORT_MANIFEST)
    except OSError as err:
        print(f"meshc: error: cannot write {args.output}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    if not args.quiet:
        report_stale(args.output, removed, kept, unremoved, "import", IMPORT_MANIFEST)
    if args.output_format == "human" and not args.quiet:
        print(f"meshc: imported {len(files)} file{'' if len(files) == 1 else 's'} into {len(written)} .mesh "
              f"file{'' if len(written) == 1 else 's'} in {args.output}; next: meshc lint {args.output}")
    return EXIT_OK
