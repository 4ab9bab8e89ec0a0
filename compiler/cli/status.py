"""`meshc status [--server HOST:PORT] [--identity DIR] [--output-format human|json]`: what a running `meshc serve`
reports (docs/control-plane.md, "meshc status"). Exit 0 every proxy up to date and the last reload
good, 1 a proxy rejected a version or is behind or never acknowledged, or the last edit did not
compile, 2 usage or a server that does not answer (one line, within the 3 s deadline)."""

from __future__ import annotations

import json
import sys

from compiler.cli.control_extra import missing_extra, quiet_grpc
from compiler.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE


def status(args) -> int:
    from compiler.language.endpoints import parse_endpoint

    if parse_endpoint(args.server) is None:
        print(f"meshc: error: --server {args.server}: not HOST:PORT", file=sys.stderr)
        return EXIT_USAGE
    quiet_grpc()
    try:
        from compiler.control import status as control
    except ImportError as err:
        return missing_extra(err, "status")
    try:
        data = control.fetch(args.server, identity=args.identity)
    except control.Unreachable as err:
        print(f"meshc: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.output_format == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(control.human(data))
    return EXIT_OK if control.healthy(data) else EXIT_INPUT
