"""The exit codes of every `meshc` command (README, "Commands")."""

EXIT_OK = 0          # success; warnings allowed
EXIT_INPUT = 1       # the input has errors (diagnostics printed), or a lint finding, or a `meshc doctor`
                     # error finding (the host is not ready for the sidecars: H-codes, docs/identity.md)
EXIT_USAGE = 2       # usage or I/O error: a bad option, a missing or unreadable path, an unwritable output
EXIT_INTERNAL = 3    # a bug in meshc: a short report naming the inputs (MESHC_DEBUG=1 for the traceback)
EXIT_UNREACHABLE = 4  # `meshc stat`: no proxy could be reached (nor `meshc serve`, when it was to name them)
EXIT_CHANGED = 5     # `meshc diff`: the behaviour changed (witness requests printed)
EXIT_UNKNOWN = 6     # `meshc diff`: no change found, but the answer is not complete for some destination

# Set by entry() (compiler/cli/__init__.py): that process ends with os._exit, so the commands may
# keep their large results (keep_until_exit) rather than free them object by object on return (an
# AST of a thousand services takes ~5 % of its `meshc check` to free).
ONE_SHOT = False
_KEPT: list = []


def keep_until_exit(*results: object) -> None:
    """Hold results to the end of a one-shot process (a no-op in a long-lived caller, tests' run())."""
    if ONE_SHOT:
        _KEPT.extend(results)
