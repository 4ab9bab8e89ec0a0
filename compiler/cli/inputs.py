"""The FILES arguments of a command: directories searched for `.mesh` files, every path checked."""

from __future__ import annotations

import os
import sys

from compiler.cli.exits import EXIT_OK, EXIT_USAGE


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


def _not_found(path: str) -> str:
    """Why a path that is neither a file nor a directory is refused: it does not exist, or it is a
    device, a FIFO or a socket (which meshc never reads: E0107 for an import)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return f"no such file or directory: {path}"
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), "not a file")
    return f"not a regular file: {path} (it is {kind}; meshc reads only regular .mesh files)"


def input_files(args: list[str]) -> tuple[list[str], int]:
    """The files a command reads, and EXIT_OK; or a usage error already printed and EXIT_USAGE
    (a missing path, no .mesh file, a file this process may not read). Bad bytes in a file are
    an input error, reported later as E0106."""
    files, missing = expand_paths(args)
    for path in missing:
        print(f"meshc: error: {_not_found(path)}", file=sys.stderr)
    if missing:
        return files, EXIT_USAGE
    if not files:
        print("meshc: error: no .mesh files found in " + ", ".join(args), file=sys.stderr)
        return files, EXIT_USAGE
    for path in files:
        if not os.access(path, os.R_OK):
            print(f"meshc: error: cannot read {path}: permission denied", file=sys.stderr)
            return files, EXIT_USAGE
    return files, EXIT_OK
