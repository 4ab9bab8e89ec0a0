"""The `[control]` extra (grpcio, xds-protos) that `meshc serve` and `meshc status` import: the one
message when it is not installed."""

from __future__ import annotations

import os
import sys

from compiler.cli.exits import EXIT_USAGE

# The top-level packages of grpcio and xds-protos: an ImportError naming another one is a bug.
_EXTRA_PACKAGES = ("grpc", "envoy", "google", "xds", "udpa", "validate")


def quiet_grpc() -> None:
    """gRPC's core logs its own lines (a port it cannot bind, ...); meshc says them in one line
    of its own (GRPC_VERBOSITY=ERROR in the environment brings gRPC's logs back)."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def missing_extra(err: ImportError, command: str) -> int:
    """After `from compiler.control import …` failed: say that `meshc COMMAND` needs the extra
    and return the exit code, or re-raise an ImportError that is not about the extra."""
    if (err.name or "").split(".")[0] not in _EXTRA_PACKAGES:
        raise err
    print(f"meshc: error: `meshc {command}` needs grpcio and xds-protos, which are not installed: "
          "pip install 'meshc[control]'", file=sys.stderr)
    return EXIT_USAGE
