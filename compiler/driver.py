"""The compiler as a library: files in, diagnostics and IR out. The CLI is a thin shell over it."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

from compiler import ir
from compiler.checks import run_checks
from compiler.diagnostics import Collector, Diagnostic
from compiler.lower import lower_program
from compiler.program import Program, load_program
from compiler.symbols import Context, build_context


# Below this many bytes in the files named on the command line, the program is not even
# planned for sharding (compiler/parallel.py decides on the whole program, imports included).
SHARD_MIN_ROOT_BYTES = 1_000_000


class InternalError(Exception):
    """A bug in meshc (the IR self-check failed); reported with exit code 3."""


@dataclass
class Result:
    program: Program | None           # None when the analysis was sharded (compiler/parallel.py)
    context: Context | None
    diagnostics: list[Diagnostic]
    ir: ir.Program | None = None
    ir_json: bytes | None = None      # set directly by a sharded compile, which has no IR objects
    counts: tuple[int, int] = (0, 0)  # services and routes compiled

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


def analyse(paths: list[str], lower: bool, shard: bool = True) -> Result:
    """Parse, check and (when asked and there are no errors) lower a program.

    Large programs are analysed on two cores (compiler/parallel.py); `MESHC_JOBS=1` or
    `shard=False` keeps everything in this process. Both give the same diagnostics and IR.
    """
    if shard and _large_enough_to_shard(paths):
        from compiler import parallel

        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            sharded = parallel.analyse(paths, lower, force=os.environ.get("MESHC_FORCE_SHARDS") == "1")
        finally:
            if gc_was_enabled:
                gc.enable()
        if sharded is not None:
            diags, text, services, routes = sharded
            return Result(None, None, diags, ir_json=text, counts=(services, routes))
    diags = Collector()
    # Parsing allocates millions of small objects that all live to the end: collecting
    # them again and again is pure overhead (measured: about a third of a large compile).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        program = load_program(paths, diags)
        ctx = build_context(program, diags)
        run_checks(ctx)
        result = Result(program, ctx, diags.sorted())
        if lower and not result.has_errors:
            from compiler.ir_check import check_ir

            result.ir = lower_program(ctx)
            problems = check_ir(result.ir)
            if problems:
                raise InternalError("IR self-check failed: " + "; ".join(problems[:5]))
            result.counts = (len(result.ir.services), sum(len(s.routes) for s in result.ir.services))
        return result
    finally:
        if gc_was_enabled:
            gc.enable()


def _large_enough_to_shard(paths: list[str]) -> bool:
    """A cheap first gate (file sizes, no reading): small programs skip the sharding plan."""
    if os.environ.get("MESHC_FORCE_SHARDS") == "1":
        return True
    try:
        return sum(os.path.getsize(p) for p in paths) >= SHARD_MIN_ROOT_BYTES
    except OSError:
        return False


def check_files(paths: list[str]) -> Result:
    return analyse(paths, lower=False)


def compile_files(paths: list[str]) -> Result:
    return analyse(paths, lower=True)
