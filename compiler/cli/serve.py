"""`meshc serve FILES [--listen HOST:PORT] [--watch SECONDS]`: the control plane
(docs/control-plane.md). The only command that imports grpc and the Envoy protos."""

from __future__ import annotations

import asyncio
import sys

from compiler.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from compiler.cli.report import print_diagnostics


def serve(files: list[str], args) -> int:
    from compiler.language.endpoints import parse_endpoint

    if parse_endpoint(args.listen) is None:
        print(f"meshc: error: --listen {args.listen}: not HOST:PORT (an IPv4 address, [IPv6] or a DNS name, and a "
              "port of 1-65535)", file=sys.stderr)
        return EXIT_USAGE
    if args.watch < 0:
        print(f"meshc: error: --watch {args.watch:g}: not a number of seconds >= 0", file=sys.stderr)
        return EXIT_USAGE
    # gRPC's core logs its own line for a port it cannot bind; meshc says it in one line of its
    # own (GRPC_VERBOSITY=ERROR in the environment brings gRPC's logs back).
    import os

    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    # A large program's compile forks a second process (compiler/sharding.py), and gRPC's core is
    # not fork-safe: the server compiles in one process.
    os.environ["MESHC_JOBS"] = "1"
    try:
        from compiler.control import serve as control
    except ImportError as err:
        if (err.name or "").split(".")[0] not in ("grpc", "envoy", "google", "xds", "udpa", "validate"):
            raise
        print("meshc: error: `meshc serve` needs grpcio and xds-protos, which are not installed: "
              "pip install 'meshc[control]'", file=sys.stderr)
        return EXIT_USAGE

    def report(event: str, diagnostics: list, problems: list[str]) -> None:
        if diagnostics:
            print_diagnostics(diagnostics, args.output_format, args.color, json_stream=sys.stderr)
        for problem in problems:
            print(f"meshc serve: inconsistent snapshot: {problem}", file=sys.stderr)
        if event == "rejected":
            print("meshc serve: the edit does not compile; still serving the last good snapshot", file=sys.stderr)
        else:
            print(f"meshc serve: {event}", file=sys.stderr)
        sys.stderr.flush()

    builder = control.snapshot.Builder()   # kept: each reload rebuilds only what an edit touched
    try:
        snapshots, diagnostics, watch = control.build(files, builder)
    except control.BuildError as err:
        report("", err.diagnostics, err.problems)
        return EXIT_INPUT
    if diagnostics:
        print_diagnostics(diagnostics, args.output_format, args.color, json_stream=sys.stderr)
    control.release_memory()

    async def run() -> int:   # the grpc.aio server belongs to the loop it is made on
        server = control.Server(files, snapshots, report, watch, builder=builder)
        try:
            port = server.bind(args.listen)
        except OSError:
            print(f"meshc: error: cannot listen on {args.listen} (address in use or not available)",
                  file=sys.stderr)
            return EXIT_USAGE
        host = args.listen.rpartition(":")[0]

        def ready() -> None:
            print(f"meshc serve: serving {len(snapshots)} sidecar(s) ({', '.join(sorted(snapshots))}) over ADS "
                  f"on {host}:{port}", file=sys.stderr, flush=True)

        await server.run(args.watch, ready)
        print("meshc serve: stopped", file=sys.stderr, flush=True)
        return EXIT_OK

    return asyncio.run(run())
