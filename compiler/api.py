"""The compiler as a library: the one compile API that the CLI, the language server, lint, the CA,
sharding and the tests all use.

Sources go in as paths or as texts held in memory (`Text`); a `Compilation` comes back with every
stage asked for, as objects: the parsed files, the symbol table, the sorted diagnostics, the IR,
and each target's files (`Compilation.emit`). Nothing is serialised and read back inside one
process; the only JSON that is read is what a second process sends (compiler/sharding.py).

    parse(sources)    files and imports parsed: tokens, AST, syntax and import diagnostics
    check(sources)    + the symbol table and every check
    compile(sources)  + the IR, when there is no error (lowering, then the IR self-check)
    comp.emit(target, proxies, options)   the files of one backend

A large program (3 MB of source, two cores) is checked and lowered in two processes; the
result is the same diagnostics and byte-identical IR (compiler/sharding.py).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from compiler import ir
from compiler.core.diagnostics import Collector, Diagnostic
from compiler.core.source import SourceFile
from compiler.semantic.program import Program, Text, load_program
from compiler.semantic.symbols import Context

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from compiler.backends.base import Emitted, Options
    from compiler.sharding import Sharded
    from compiler.syntax.parse import ItemCache

__all__ = ["Compilation", "InternalError", "Text", "check", "compile", "parse"]

# Below this many bytes in the root files, the program is not even planned for sharding
# (compiler/sharding.py decides on the whole program, imports included).
SHARD_MIN_ROOT_BYTES = 1_000_000

Source = str | Text


class InternalError(Exception):
    """A bug in meshc (the IR self-check failed); the CLI reports it with exit code 3."""


@dataclass
class Compilation:
    """One program, through the stages asked for (`stage`: parse, check or lower)."""

    stage: str
    sources: dict[str, SourceFile]            # display path -> its text, for excerpts and locations
    diagnostics: list[Diagnostic]             # sorted: file, offset, code
    program: Program | None = None            # the parsed files; None after a sharded run
    context: Context | None = None            # the symbol table; None after a parse or a sharded run
    _ir: ir.Program | None = field(default=None, repr=False)
    _sharded: Sharded | None = field(default=None, repr=False)
    declared: int = 0                         # services declared in the program (after a check)

    @property
    def files(self) -> int:
        """The program's own files that were read (imports included, the standard library not)."""
        return sum(not path.startswith("<std>") for path in self.sources)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)

    @property
    def ir(self) -> ir.Program | None:
        """The IR (compile only, and only without errors). After a sharded compile, the services
        the other process lowered are rebuilt from the JSON they crossed the process boundary as."""
        if self._ir is None and self._sharded is not None:
            self._ir = self._sharded.program()
        return self._ir

    def ir_json(self) -> bytes:
        """The IR document: deterministic JSON, the same bytes for the same program."""
        from compiler.ir.serialize import ir_json

        if self._ir is None and self._sharded is not None:
            return self._sharded.json()  # spliced from per-service JSON, no objects rebuilt
        program = self.ir
        if program is None:
            raise ValueError("no IR: the program was not lowered (errors, or not compiled)")
        return ir_json(program)

    def ir_yaml(self) -> str:
        from compiler.ir.serialize import ir_yaml

        program = self.ir
        if program is None:
            raise ValueError("no IR: the program was not lowered (errors, or not compiled)")
        return ir_yaml(program)

    @property
    def counts(self) -> tuple[int, int]:
        """(services, routes) lowered."""
        if self._ir is None and self._sharded is not None:
            return self._sharded.counts
        program = self._ir
        if program is None:
            return 0, 0
        return len(program.services), sum(len(s.routes) for s in program.services)

    def emit(self, target: str, proxies: Sequence[str] | None = None, options: Options | None = None) -> Emitted:
        """The files of one backend (`envoy` or `native`) for the sidecars of `proxies` (proxy
        names of the program, already known to exist: services, `SERVICE.SUBSET` for workloads; None:
        every one). Backend diagnostics
        (what a target cannot express exactly) are in the result, located at the policy."""
        from compiler import backends
        from compiler.backends.base import Options as _Options

        program = self.ir
        if program is None:
            raise ValueError("nothing to emit: the program was not lowered (errors, or not compiled)")
        from compiler.ir.workloads import proxy_names

        names = proxy_names(program) if proxies is None else list(proxies)
        options = options or _Options()
        emitted = backends.emit(target, program, names, options, self.sources)
        if target in KUBE_TARGETS and not emitted.has_errors:
            validate_kube(emitted, options.channel, self.sources)
        return emitted

    def tokens(self):
        """Every file's tokens as the parser classified them: [(display path, [Token, ...])]."""
        from compiler.syntax.parse import tokens

        if self.program is None:
            raise ValueError("no parsed files (a sharded run keeps none)")
        return [(m.path, tokens(self.sources[m.path])) for m in self.program.modules]


KUBE_TARGETS = ("istio", "gateway-api")


def validate_kube(emitted: Emitted, channel: str | None, sources: dict) -> None:
    """Validate a Kubernetes target's files as the API server would (compiler/kubeschema/: the
    vendored CRDs' schemas and CEL rules, Gateway API's of `channel`), in place: each problem a
    located error (E0940-E0942), and no files when there is one. `emitted.validation` keeps the
    report (objects, rules evaluated)."""
    import yaml

    from compiler.kubeschema import validate
    from compiler.kubeschema.diagnostics import problem_diagnostic

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    objects: list = []
    owner: list[str] = []
    for path, data in emitted.files.items():
        for doc in yaml.load_all(data, Loader=loader):
            if doc is not None:
                objects.append(doc)
                owner.append(path)
    report = validate(objects, channel or "standard")
    emitted.validation = report
    emitted.diagnostics += [problem_diagnostic(_part_located(p, objects, emitted.part_sources), sources, owner[p.index])
                            for p in report.problems]
    if emitted.has_errors:
        emitted.files = {}


def _part_located(problem, objects: list, part_sources: dict):
    """`problem` located at the construct of the list element its field is in (`spec.rules[2]…`: the
    route of the HTTPRoute's third rule), when the backend recorded one; else as it is."""
    import dataclasses

    doc = objects[problem.index] if 0 <= problem.index < len(objects) else None
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        return problem
    meta = doc["metadata"]
    parts = part_sources.get((doc.get("kind"), meta.get("namespace"), meta.get("name")))
    if parts is None:
        return problem
    field, element_sources = parts
    head, _, rest = problem.path.partition("[")
    index, _, _ = rest.partition("]")
    if head != field or not index.isdigit() or int(index) >= len(element_sources):
        return problem
    return dataclasses.replace(problem, source=element_sources[int(index)])


def parse(sources: Iterable[Source]) -> Compilation:
    """Read and parse the sources and everything they import (syntax and import diagnostics)."""
    with _no_gc():
        diags = Collector()
        program = load_program(list(sources), diags)
        return Compilation("parse", program.sources, diags.sorted(), program)


def check(sources: Iterable[Source], shard: bool = True, cache: ItemCache | None = None) -> Compilation:
    """Parse and check a program: every diagnostic, nothing lowered. With a `cache` (the language
    server's, one per open document), only the top-level items that changed since the last check
    are parsed again (in one process), with the same diagnostics."""
    return _analyse(list(sources), lower=False, shard=shard and cache is None, cache=cache)


def compile(sources: Iterable[Source], shard: bool = True, cache: ItemCache | None = None) -> Compilation:
    """Parse, check and, when there is no error, lower a program to the IR (self-checked).
    A long-lived caller that compiles the same program again and again (`meshc serve`) passes
    its own `ItemCache`: only the top-level items that changed are parsed again (in one
    process: no sharding), with the same result."""
    return _analyse(list(sources), lower=True, shard=shard and cache is None, cache=cache)


def _analyse(sources: list[Source], lower: bool, shard: bool, cache: ItemCache | None = None) -> Compilation:
    paths = [s for s in sources if isinstance(s, str)]
    if shard and len(paths) == len(sources) and _large_enough_to_shard(paths):
        from compiler import sharding

        with _no_gc():
            sharded = sharding.analyse(paths, lower, force=os.environ.get("MESHC_FORCE_SHARDS") == "1")
        if sharded is not None:
            if sharded.problems:
                raise InternalError("IR self-check failed: " + "; ".join(sharded.problems[:5]))
            return Compilation("lower" if lower else "check", sharded.sources, sharded.diagnostics,
                               _sharded=sharded if lower and sharded.lowered else None, declared=sharded.declared)
    with _no_gc():
        from compiler.semantic.checks import run_checks
        from compiler.semantic.symbols import build_context

        diags = Collector()
        program = load_program(sources, diags, cache)
        ctx = build_context(program, diags)
        if cache is not None:   # check results kept with the parse cache (compiler/semantic/reuse.py)
            if cache.checks is None:
                from compiler.semantic.reuse import CheckReuse
                cache.checks = CheckReuse()
            ctx.reuse = cache.checks
            ctx.reuse.begin()
        run_checks(ctx)
        found = diags.sorted()
        comp = Compilation("lower" if lower else "check", program.sources, found, ctx.program, ctx,
                           declared=len(ctx.services))
        if lower and not comp.has_errors:
            from compiler.ir.check import check_ir
            from compiler.lower import lower_program

            comp._ir = lower_program(ctx)
            problems = check_ir(comp._ir)
            if problems:
                raise InternalError("IR self-check failed: " + "; ".join(problems[:5]))
        return comp


class _no_gc:
    """Parsing allocates millions of small objects that all live to the end: collecting them
    again and again is pure overhead (measured: about a third of a large compile)."""

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was_enabled:
            gc.enable()


def _large_enough_to_shard(paths: list[str]) -> bool:
    """A cheap first gate (file sizes, no reading): small programs skip the sharding plan."""
    if os.environ.get("MESHC_FORCE_SHARDS") == "1":
        return True
    try:
        return sum(os.path.getsize(p) for p in paths) >= SHARD_MIN_ROOT_BYTES
    except OSError:
        return False
