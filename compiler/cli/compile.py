"""`meshc check` and `meshc compile`: the compile API (compiler/api.py) behind the command line.

`compile --emit STAGE` prints any stage of a compile, or writes it into `-o DIR`: the tokens and
the AST of every file of the program (which need only parsing), the IR, or a backend's files.
"""

from __future__ import annotations

import os
import sys

from compiler.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE, keep_until_exit
from compiler.cli.report import print_diagnostics, print_outcome

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from collections.abc import Mapping

    from compiler.backends.base import Link


def check(files: list[str], args) -> int:
    from compiler import api

    target = getattr(args, "target", None)
    if getattr(args, "channel", None) and target != "gateway-api":
        print("meshc: error: --channel needs --target gateway-api", file=sys.stderr)
        return EXIT_USAGE
    comp = api.compile(files) if target else api.check(files)
    keep_until_exit(comp)
    diags, extra = comp.diagnostics, ""
    if target and not comp.has_errors:
        # `--target istio|gateway-api`: the target's objects, validated as `compile` validates
        # them (compiler/kubeschema/), never written
        from compiler.backends.base import Options

        emitted = comp.emit(target, None, Options(channel=args.channel))
        diags = sorted(diags + emitted.diagnostics, key=lambda d: d.sort_key())
        report = emitted.validation   # (compiler/kubeschema Report)
        if report is not None:
            objects, evaluations = getattr(report, "objects", 0), getattr(report, "rule_evaluations", 0)
            extra = (f", validated {objects} {target} object{'' if objects == 1 else 's'} "
                     f"({evaluations} CEL rule evaluations of {len(getattr(report, 'rules', ()))} rules)")
    if not comp.has_errors and _has_asserts(comp):
        # `assert` blocks (docs/testing.md): proven on the compiled program through the native
        # proxy's decision; nothing of it is imported or computed for a program without one
        from compiler.verify.asserts import prove

        found, proven = prove(api.compile(files, shard=False))
        diags = sorted(diags + found, key=lambda d: d.sort_key())
        extra += f", proved {proven} of {len(found) + proven} assert{'' if len(found) + proven == 1 else 's'}"
    print_diagnostics(diags, args.output_format, args.color, quiet=args.quiet)
    print_outcome(diags, args, "checked", comp.files, comp.declared, extra)
    has_errors = any(d.severity == "error" for d in diags)
    return EXIT_INPUT if has_errors and not args.exit_zero else EXIT_OK


def _has_asserts(comp) -> bool:
    if comp.context is not None:
        return bool(comp.context.asserts)
    # a sharded check keeps no symbol table: look for the keyword at the start of a line
    return any(text.startswith("assert") or "\nassert" in text
               for text in (source.text for source in comp.sources.values()))


def compile_command(files: list[str], args) -> int:
    stage = args.emit
    if args.channel and stage != "gateway-api":
        print("meshc: error: --channel is for --target gateway-api", file=sys.stderr)
        return EXIT_USAGE
    if stage in ("envoy", "native"):
        return _emit_target(files, args)
    if stage in ("istio", "gateway-api"):
        return _emit_kube(files, args)
    if args.proxy or args.bootstrap or args.xds_dir or args.certs_dir or args.xds_server or args.xds_identity:
        print("meshc: error: --proxy, --bootstrap, --xds-dir, --xds-server, --xds-identity and --certs-dir need "
              "--emit envoy or --emit native", file=sys.stderr)
        return EXIT_USAGE
    if stage in ("tokens", "ast"):
        return _emit_syntax(files, args)
    from compiler import api

    comp = api.compile(files)
    keep_until_exit(comp)
    print_diagnostics(comp.diagnostics, args.output_format, args.color,
                      json_stream=sys.stderr if args.output is None else None)
    if comp.has_errors:
        return EXIT_INPUT
    text = comp.ir_yaml() if args.ir_format == "yaml" else comp.ir_json()
    keep_until_exit(text)
    services, routes = comp.counts
    return _deliver(args, {f"mesh.ir.{args.ir_format}": text}, f"({services} services, {routes} routes)")


def _emit_syntax(files: list[str], args) -> int:
    """`--emit tokens|ast`: the parsed files (the program's imports included), before any check."""
    from compiler import api

    comp = api.parse(files)
    print_diagnostics(comp.diagnostics, args.output_format, args.color,
                      json_stream=sys.stderr if args.output is None else None)
    if comp.has_errors:
        return EXIT_INPUT
    if args.emit == "tokens":
        lines = []
        for path, found in comp.tokens():
            source = comp.sources[path]
            for t in found:
                line, col = source.line_col(t.start)
                lines.append(f"{path}:{line}:{col}\t{t.kind}\t{t.text}\n")
        return _deliver(args, {"mesh.tokens": "".join(lines)}, f"({len(lines)} tokens)")
    import orjson

    from compiler.syntax.ast import to_data

    program = comp.program
    assert program is not None  # a parse keeps its files
    doc = {"modules": [to_data(m) for m in program.modules]}
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    return _deliver(args, {"mesh.ast.json": text}, f"({len(program.modules)} files)")


def _emit_target(files: list[str], args) -> int:
    """`--emit envoy|native`: the IR through a backend, all files written or none."""
    if not args.proxy:
        print(f"meshc: error: --emit {args.emit} needs --proxy SERVICE (repeatable) or --proxy all", file=sys.stderr)
        return EXIT_USAGE
    for option, value in (("--xds-dir", args.xds_dir), ("--certs-dir", args.certs_dir),
                          ("--xds-identity", args.xds_identity)):
        if value is not None and not os.path.isabs(value):
            print(f"meshc: error: {option} must be an absolute path (the proxies resolve it at run time): {value}",
                  file=sys.stderr)
            return EXIT_USAGE
    usable, xds_servers = _ads_options(args)
    if not usable:
        return EXIT_USAGE
    from compiler import api
    from compiler.backends.base import Options

    comp = api.compile(files)
    keep_until_exit(comp)
    if comp.has_errors:
        print_diagnostics(comp.diagnostics, args.output_format, args.color)
        return EXIT_INPUT
    program = comp.ir
    assert program is not None  # lowered: there is no error
    from compiler.ir.workloads import proxy_names

    names = proxy_names(program)   # a service's own sidecar, and `SERVICE.SUBSET` for each workload's
    proxies = _proxies(args.proxy, names)
    if proxies is None:
        return EXIT_USAGE
    out_dir = os.path.abspath(args.output) if args.output is not None else None
    options = Options(bootstrap=args.bootstrap, xds_dir=args.xds_dir, output_dir=out_dir, certs_dir=args.certs_dir,
                      xds_servers=xds_servers, xds_identity=args.xds_identity)
    emitted = comp.emit(args.emit, proxies, options)
    keep_until_exit(emitted)
    diags = sorted(comp.diagnostics + emitted.diagnostics, key=lambda d: d.sort_key())
    print_diagnostics(diags, args.output_format, args.color,
                      json_stream=sys.stderr if args.output is None else None)
    if emitted.has_errors:
        return EXIT_INPUT
    if args.emit == "envoy" and args.bootstrap != "ads":
        _note_missing_identities(program, proxies, options, args.files, args.certs_dir)
    services, routes = comp.counts
    plural = "proxy" if len(proxies) == 1 else "proxies"
    if args.output is None:
        import orjson

        doc = {name: orjson.loads(data) if isinstance(data, bytes) else {"symlink": data.target}
               for name, data in emitted.outputs().items()}
        return _deliver(args, {"": orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
                                                | orjson.OPT_SORT_KEYS)}, "")
    code = _deliver(args, emitted.outputs(), f"for {len(proxies)} {plural} to {args.output} "
                                             f"({services} services, {routes} routes)", count=True,
                    whole=len(proxies) == len(names))
    if code == EXIT_OK and args.emit == "envoy" and args.bootstrap != "ads":
        _remove_stale_scopes(args.output, emitted.outputs())
    return code


def _emit_kube(files: list[str], args) -> int:
    """`--target istio|gateway-api`: Kubernetes YAML for the whole program (compiler/backends/kube/),
    one file per service in `-o DIR`, or every document on standard output; all or nothing."""
    if args.proxy or args.bootstrap or args.xds_dir or args.certs_dir or args.xds_server or args.xds_identity:
        print(f"meshc: error: --proxy, --bootstrap, --xds-dir, --xds-server, --xds-identity and --certs-dir are "
              f"for --emit envoy|native, not --target {args.emit} (which configures every workload)", file=sys.stderr)
        return EXIT_USAGE
    from compiler import api
    from compiler.backends.base import Options

    comp = api.compile(files)
    if comp.has_errors:
        print_diagnostics(comp.diagnostics, args.output_format, args.color)
        return EXIT_INPUT
    out_dir = os.path.abspath(args.output) if args.output is not None else None
    emitted = comp.emit(args.emit, None, Options(output_dir=out_dir, channel=args.channel))
    diags = sorted(comp.diagnostics + emitted.diagnostics, key=lambda d: d.sort_key())
    print_diagnostics(diags, args.output_format, args.color,
                      json_stream=sys.stderr if args.output is None else None)
    if emitted.has_errors:
        return EXIT_INPUT
    services, routes = comp.counts
    if args.output is None:
        return _deliver(args, {"": b"".join(emitted.files.values()).decode("utf-8")}, "")
    return _deliver(args, emitted.outputs(), f"for --target {args.emit} to {args.output} "
                                             f"({services} services, {routes} routes)", count=True, whole=True)


def _remove_stale_scopes(out_dir: str, outputs: Mapping[str, object]) -> None:
    """Remove the directories xds/scopes/KEY that no sidecar's files in `out_dir` name any more
    (a scope whose last sidecar moved to another scope), once every new file is in place: each
    sidecar's bootstrap names its own CDS link and its listeners their routes, so a running Envoy
    has followed them to the new scope's files already. A scope of `outputs` (this compile's
    files) is named by the sidecars it was written for: only the others are looked up."""
    import shutil

    from compiler.backends.envoy import names

    xds = os.path.join(out_dir, names.XDS_DIR)
    root = os.path.join(xds, names.SCOPES)
    try:
        present = os.listdir(root)
    except OSError:
        return
    prefix = f"{names.XDS_DIR}/{names.SCOPES}/"
    written = {path[len(prefix):].split("/", 1)[0] for path in outputs if path.startswith(prefix)}
    if all(key in written for key in present):
        return
    used = _scope_dirs_in_use(xds) | written
    stale = sorted(k for k in present if k not in used and os.path.isdir(os.path.join(root, k)))
    for key in stale:
        shutil.rmtree(os.path.join(root, key), ignore_errors=True)
    if stale:
        print(f"meshc: removed {len(stale)} stale scope director{'y' if len(stale) == 1 else 'ies'} under {root}",
              file=sys.stderr)


def _scope_dirs_in_use(xds_dir: str) -> set[str]:
    """The KEYs of xds_dir/scopes/KEY that the sidecars' files under `xds_dir` name: a CDS link
    (SERVICE/cds.json) pointing into it, or a listener file (SERVICE/lds.json) naming its routes."""
    from compiler.backends.envoy import names

    used: set[str] = set()
    try:
        entries = os.listdir(xds_dir)
    except OSError:
        return used
    # A namespace's directory holds its qualified sidecars' (NAMESPACE/NAME), and may be a sidecar's
    # own directory too (a service named as its namespace: xds/prod/lds.json and xds/prod/reviews/):
    # every directory one level down is looked into, whatever the one above holds.
    for entry in list(entries):
        if entry != names.SCOPES and os.path.isdir(os.path.join(xds_dir, entry)):
            try:
                entries += [f"{entry}/{sub}" for sub in os.listdir(os.path.join(xds_dir, entry))
                            if os.path.isdir(os.path.join(xds_dir, entry, sub))]
            except OSError:
                pass
    for entry in entries:
        cds = os.path.join(xds_dir, entry, names.CDS)
        if os.path.islink(cds):
            parts = os.path.normpath(os.path.join(entry, os.readlink(cds))).split(os.sep)
            if len(parts) == 3 and parts[0] == names.SCOPES:
                used.add(parts[1])
        try:
            with open(os.path.join(xds_dir, entry, "lds.json"), encoding="utf-8") as fh:
                text = fh.read()
        except OSError:
            continue
        start = 0
        while (at := text.find(f"/{names.SCOPES}/", start)) >= 0:
            start = at + len(names.SCOPES) + 2
            used.add(text[start:start + names.SCOPE_KEY_LENGTH])
    return used


def _ads_options(args) -> tuple[bool, tuple[tuple[str, int], ...]]:
    """`--bootstrap ads` and `--xds-server` (repeatable: the server's replicas), which go together:
    (False, ()) after a usage error, else (True, each replica's (host, port), or () without them)."""
    ads = args.bootstrap == "ads"
    if args.xds_identity is not None and not ads:
        print("meshc: error: --xds-identity is for --bootstrap ads (the identity of the mTLS channel to "
              "`meshc serve --ca`)", file=sys.stderr)
        return False, ()
    if args.xds_server is None:
        if ads:
            print("meshc: error: --bootstrap ads needs --xds-server HOST:PORT, the control plane's address "
                  "(`meshc serve --listen`)", file=sys.stderr)
            return False, ()
        return True, ()
    if not ads:
        print("meshc: error: --xds-server is for --bootstrap ads (a bootstrap that receives its resources from "
              "the control plane); `--bootstrap xds` reads files", file=sys.stderr)
        return False, ()
    if args.emit != "envoy":
        hint = (" (the native proxy needs no bootstrap: `meshc proxy --xds-server HOST:PORT --node SERVICE`)"
                if args.emit == "native" else "")
        print(f"meshc: error: --bootstrap ads is for --emit envoy, not --emit {args.emit}{hint}", file=sys.stderr)
        return False, ()
    for option, value in (("--xds-dir", args.xds_dir), ("--certs-dir", args.certs_dir)):
        if value is not None:
            print(f"meshc: error: {option} is not used by --bootstrap ads: the resources (and later the "
                  "certificates) come from the control plane, not from files", file=sys.stderr)
            return False, ()
    from compiler.language.endpoints import parse_endpoint

    addresses: list[tuple[str, int]] = []
    for given in args.xds_server:
        address = parse_endpoint(given)
        if address is None:
            print(f"meshc: error: --xds-server {given}: not HOST:PORT (an IPv4 address, [IPv6] or a DNS "
                  "name, and a port of 1-65535)", file=sys.stderr)
            return False, ()
        if address in addresses:
            print(f"meshc: error: --xds-server {given} is given twice", file=sys.stderr)
            return False, ()
        addresses.append(address)
    return True, tuple(addresses)


def _note_missing_identities(program, proxies: list[str], options, files: list[str], certs_dir: str | None) -> None:
    """One note on standard error, not an error, when identity files that sidecars with mTLS need
    are missing on this host: Envoy starts without them (and `envoy --mode validate` says OK) and
    fails every handshake, where the native proxy refuses to start. Compiles often run on another
    host (CI) than the sidecars, so this cannot be an error; `meshc doctor` checks the host that
    runs them."""
    from compiler.backends.base import IDENTITY_FILES, identity_dir, mtls_anywhere, needs_identity
    from compiler.ir.workloads import service_of

    missing = []
    anywhere = mtls_anywhere(program)
    services = {s.name: s for s in program.services}
    for name in dict.fromkeys(service_of(p) for p in proxies):   # (a workload has its service's identity)
        svc = services[name]
        if needs_identity(program, svc, anywhere):
            directory = identity_dir(svc, options)
            missing += [os.path.join(directory, f) for f in IDENTITY_FILES
                        if not os.path.exists(os.path.join(directory, f))]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        certs = f" --certs-dir {certs_dir}" if certs_dir else ""
        print(f"meshc: note: identity files are missing on this host ({missing[0]}{more}): Envoy starts without "
              f"them and fails every mTLS handshake; where the sidecars run, `meshc doctor {' '.join(files)}{certs}` "
              "checks them", file=sys.stderr)


def _proxies(asked: list[str], names: list[str]) -> list[str] | None:
    """The sidecars to configure (`all`: every proxy of the program), or None after a usage error.
    `names` are the program's proxies: services, and `SERVICE.SUBSET` for workloads (ir/workloads.py)."""
    if "all" in asked:
        return names
    known = set(names)
    proxies: list[str] = []
    for name in asked:
        if name not in known:
            from compiler.core.diagnostics import did_you_mean

            own = [n for n in names if n.startswith(name + ".")]
            hint = (f"its workloads have their own: {', '.join(own)}" if own else did_you_mean(name, names))
            what = f"no sidecar `{name}`" if own or "." in name else f"no service `{name}`"
            print(f"meshc: error: --proxy {name}: {what} in the program"
                  + (f" ({hint})" if hint else ""), file=sys.stderr)
            return None
        if name not in proxies:
            proxies.append(name)
    return proxies


def _deliver(args, files: Mapping[str, str | bytes | Link], what: str, count: bool = False,
             whole: bool | None = None) -> int:
    """Print the one output on standard output, or write every output into `-o DIR`. `whole`
    (a target's output, not the IR's): the files are recorded in `DIR/.meshc-manifest`, and when
    they are the whole output (True), the files an earlier compile recorded and this one did not
    write are removed (compiler/cli/output.py `write_tracked`)."""
    if args.output is None:
        (text,) = files.values()
        if isinstance(text, bytes):
            sys.stdout.flush()
            sys.stdout.buffer.write(text)
        else:
            sys.stdout.write(str(text))   # (one output: never a link)
        return EXIT_OK
    from compiler.cli.output import report_stale, write_all, write_tracked

    removed: list[str] = []
    kept: list[str] = []
    unremoved: list[str] = []
    try:
        if whole is None:
            written = write_all(args.output, files)
        else:
            written, removed, kept, unremoved = write_tracked(args.output, files, whole)
    except OSError as err:
        where = err.filename if isinstance(err.filename, str) else args.output
        print(f"meshc: error: cannot write to {where}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    if count:
        print(f"meshc: wrote {len(written)} files {what}", file=sys.stderr)
        report_stale(args.output, removed, kept, unremoved, "compile")
    else:
        for path in written:
            print(f"meshc: wrote {path} {what}", file=sys.stderr)
    return EXIT_OK
