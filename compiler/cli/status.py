"""`meshc status [--server HOST:PORT] [--identity DIR] [--output-format human|json]`: what a running `meshc serve`
reports (docs/control-plane.md, "meshc status"). Exit 0 every proxy up to date and the last reload
good, 1 a proxy rejected a version or is behind or never acknowledged, or the last edit did not
compile, 2 usage or a server that does not answer (one line, within the 3 s deadline)."""

from __future__ import annotations

import json
import sys

from compiler.cli.control_extra import missing_extra, quiet_grpc
from compiler.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE


def fetch_from_serve(args, command: str, unreachable: int, hint: str = "") -> tuple[dict | None, int]:
    """What `meshc serve` at `--server` reports (`meshc status`, and `meshc stat` to find the
    proxies): (data, EXIT_OK), or (None, the exit code) after one line on standard error: usage
    for a bad `--server`, `unreachable` for a server that does not answer (`hint` after the reason)."""
    from compiler.language.endpoints import parse_endpoint

    if parse_endpoint(args.server) is None:
        print(f"meshc: error: --server {args.server}: not HOST:PORT", file=sys.stderr)
        return None, EXIT_USAGE
    quiet_grpc()
    try:
        from compiler.control import status as control
    except ImportError as err:
        return None, missing_extra(err, command)
    try:
        return control.fetch(args.server, identity=args.identity), EXIT_OK
    except control.Unreachable as err:
        print(f"meshc: error: {err}{hint}", file=sys.stderr)
        return None, unreachable


def status(args) -> int:
    data, code = fetch_from_serve(args, "status", EXIT_USAGE)
    if data is None:
        return code
    from compiler.control import status as control

    if args.output_format == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(control.human(data))
    return EXIT_OK if control.healthy(data) else EXIT_INPUT
