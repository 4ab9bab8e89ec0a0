"""`meshc serve FILES [--listen HOST:PORT] [--watch SECONDS] [--ca DIR [--cert-hours H]]`: the
control plane (docs/control-plane.md). With `meshc status`, the only command that imports grpc and
the Envoy protos; with --ca it loads `cryptography` too (compiler/control/sds.py)."""

from __future__ import annotations

import asyncio
import sys

from compiler.cli.control_extra import missing_extra, quiet_grpc
from compiler.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from compiler.cli.report import print_diagnostics

MAX_REQUEST_RATE = 1_000_000   # requests per second per stream: beyond that no limit is meant
# The shortest certificate lifetime: 3.6 s, replaced after 2.4 s. The rotation loop wakes at least
# once a second, so a shorter one could expire before it is replaced; the tests use 0.002 (7.2 s)
# to run across several rotations in seconds.
MIN_CERT_HOURS = 0.001


def serve(files: list[str], args) -> int:
    from compiler.language.endpoints import parse_endpoint

    if parse_endpoint(args.listen) is None:
        print(f"meshc: error: --listen {args.listen}: not HOST:PORT (an IPv4 address, [IPv6] or a DNS name, and a "
              "port of 1-65535)", file=sys.stderr)
        return EXIT_USAGE
    if args.watch < 0:
        print(f"meshc: error: --watch {args.watch:g}: not a number of seconds >= 0", file=sys.stderr)
        return EXIT_USAGE
    if args.max_streams < 1:
        print(f"meshc: error: --max-streams {args.max_streams}: not a number of streams >= 1", file=sys.stderr)
        return EXIT_USAGE
    if not args.max_request_rate > 0 or args.max_request_rate == float("inf"):
        print(f"meshc: error: --max-request-rate {args.max_request_rate:g}: not a number of requests per second > 0",
              file=sys.stderr)
        return EXIT_USAGE
    if args.max_request_rate > MAX_REQUEST_RATE:   # (its burst, 10 s of it, must stay a number)
        print(f"meshc: error: --max-request-rate {args.max_request_rate:g}: at most {MAX_REQUEST_RATE:,} requests "
              "per second", file=sys.stderr)
        return EXIT_USAGE
    if args.cert_hours is not None and args.ca is None:
        print("meshc: error: --cert-hours is for --ca (the lifetime of the certificates the server issues)",
              file=sys.stderr)
        return EXIT_USAGE
    hours = 24.0 if args.cert_hours is None else args.cert_hours
    if not hours > 0 or hours > 24 * 366:
        print(f"meshc: error: --cert-hours {hours:g}: not a number of hours > 0 (at most a year)",
              file=sys.stderr)
        return EXIT_USAGE
    if hours < MIN_CERT_HOURS:
        print(f"meshc: error: --cert-hours {hours:g}: at least {MIN_CERT_HOURS:g} (3.6 s; rotation is checked once "
              "a second)", file=sys.stderr)
        return EXIT_USAGE
    import os

    # A large program's compile forks a second process (compiler/sharding.py), and gRPC's core is
    # not fork-safe: the server compiles in one process.
    os.environ["MESHC_JOBS"] = "1"
    quiet_grpc()
    try:
        from compiler.control import serve as control
    except ImportError as err:
        return missing_extra(err, "serve")

    def report(event: str, diagnostics: list, problems: list[str]) -> None:
        if diagnostics:
            print_diagnostics(diagnostics, args.output_format, args.color, json_stream=sys.stderr)
        for problem in problems:
            print(f"meshc serve: inconsistent snapshot: {problem}", file=sys.stderr)
        if event == "rejected":
            print("meshc serve: the edit does not compile; still serving the last good snapshot", file=sys.stderr)
        elif event:   # ("" at start: the diagnostics or problems alone, then exit 1)
            print(f"meshc serve: {event}", file=sys.stderr)
        sys.stderr.flush()

    issuer = None
    if args.ca is not None:   # certificates over SDS, mTLS on the channel (loads cryptography)
        from compiler.ca.certs import CaError, CaFileError
        from compiler.control import sds

        try:
            issuer = sds.Issuer(args.ca, hours)
        except CaFileError as err:
            print(f"meshc: error: --ca: {err}", file=sys.stderr)
            return EXIT_USAGE
        except CaError as err:
            print(f"meshc: error: --ca: {err}", file=sys.stderr)
            return EXIT_INPUT
    builder = control.snapshot.Builder()   # kept: each reload rebuilds only what an edit touched
    try:
        snapshots, diagnostics, watch = control.build(files, builder, native=())   # (native configs: on demand)
    except control.BuildError as err:
        report("", err.diagnostics, err.problems)
        return EXIT_INPUT
    if diagnostics:
        print_diagnostics(diagnostics, args.output_format, args.color, json_stream=sys.stderr)
    if issuer is not None:
        problems = issuer.check(snapshots)
        if problems:
            report("", [], problems)
            return EXIT_INPUT
    control.release_memory()

    async def run() -> int:   # the grpc.aio server belongs to the loop it is made on
        limits = control.Limits(max_streams=args.max_streams, request_rate=args.max_request_rate,
                                burst=max(1, int(args.max_request_rate * 10)))
        server = control.Server(files, snapshots, report, watch, limits, issuer, builder=builder)
        try:
            port = server.bind(args.listen)
        except OSError:
            print(f"meshc: error: cannot listen on {args.listen} (address in use or not available)",
                  file=sys.stderr)
            return EXIT_USAGE
        host = args.listen.rpartition(":")[0]

        def ready() -> None:
            tls = "" if issuer is None else (f", mutual TLS as {issuer.server.spiffe_id}, certificates from "
                                             f"{args.ca} valid {hours:g} h")
            print(f"meshc serve: serving {len(snapshots)} sidecar(s) ({', '.join(sorted(snapshots))}) over ADS "
                  f"on {host}:{port}{tls}", file=sys.stderr, flush=True)

        await server.run(args.watch, ready)
        print("meshc serve: stopped", file=sys.stderr, flush=True)
        return EXIT_OK

    return asyncio.run(run())
