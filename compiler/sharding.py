"""Sharded analysis of large programs on two cores.

Above a size threshold the program is cut in two at `service` items of its large files; small
files (the standard library, shared policy files) are parsed by both shards. The main process
analyses shard 0 and a forked child shard 1. After parsing, each shard sends the other a small
summary of what it declared (services with their subsets and identity, routes and authorization
blocks, the trust domain); each then checks its own items with stubs for the other's services,
lowers the services it owns, and serialises them. The main process merges the diagnostics and
splices the services into one IR document, byte-identical to the sequential compile.

Anything unusual (a service whose routes live in the other shard, a name declared in both, an
import problem, a failing child) makes the caller fall back to the sequential path, which
reports it exactly: sharding is only ever an optimisation.
"""

from __future__ import annotations

import os
import re
from itertools import pairwise

from compiler.core.diagnostics import Collector, Diagnostic, Label
from compiler.core.source import SourceFile, Span
from compiler.semantic.program import Program, prescan
from compiler.semantic.symbols import Context, build_context
from compiler.syntax import ast

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from compiler import ir

MIN_TOTAL_BYTES = 3_000_000      # below this one process is faster than two
REPLICATE_BELOW_BYTES = 64_000   # files this small are parsed by both shards
_SERVICE_START = re.compile(r"^service\b", re.M)


def jobs() -> int:
    value = os.environ.get("MESHC_JOBS")
    if value and value.isdigit():
        return int(value)
    return min(2, os.cpu_count() or 1)


# ---- planning ---------------------------------------------------------------------------------

def plan(paths: list[str], force: bool = False):
    """(sources, replicated display names, [segments of shard 0, segments of shard 1]) or None."""
    files = prescan(paths)
    if files is None:
        return None
    total = sum(len(text) for _, _, text in files)
    if total < MIN_TOTAL_BYTES and not force:
        return None
    sources = {display: SourceFile(display, text) for _, display, text in files}
    stdlib = {display for key, display, _ in files if key.startswith("std:")}
    # Parsed by both shards: small files whole, and the head of each large file up to its first
    # service (where imports, the mesh block and policies usually stand).
    replicated: list[tuple[str, int, int]] = []
    pieces = []  # (display, start, end) cut at `service` items, in program order
    for _, display, text in files:
        cuts = [m.start() for m in _SERVICE_START.finditer(text)] if len(text) >= REPLICATE_BELOW_BYTES else []
        if not cuts:
            replicated.append((display, 0, len(text)))
            continue
        if cuts[0] > 0:
            replicated.append((display, 0, cuts[0]))
        bounds = cuts + [len(text)]
        pieces += [(display, a, b) for a, b in pairwise(bounds) if b > a]
    if len(pieces) < 2:
        return None
    # Cut at the service boundary nearest to half the bytes, then merge each shard's consecutive
    # pieces of one file into one range (one parse call each).
    half = sum(b - a for _, a, b in pieces) / 2
    done, split = 0, 1
    for i, (_, a, b) in enumerate(pieces):
        if done + (b - a) / 2 >= half:
            split = max(1, i)
            break
        done += b - a
    shards = [_merge(pieces[:split]), _merge(pieces[split:])]
    return sources, stdlib, replicated, shards


def _merge(pieces: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    merged: list[tuple[str, int, int]] = []
    for display, a, b in pieces:
        if merged and merged[-1][0] == display and merged[-1][2] == a:
            merged[-1] = (display, merged[-1][1], b)
        else:
            merged.append((display, a, b))
    return merged


# ---- one shard ------------------------------------------------------------------------------------

class Shard:
    def __init__(self, index: int, sources, stdlib, replicated, segments):
        from compiler.syntax.parse import Parser

        self.index = index
        self.diags = Collector()
        parser = Parser()
        modules = [parser.parse(sources[d], self.diags, a, b) for d, a, b in replicated]
        self.own_modules = [parser.parse(sources[d], self.diags, a, b) for d, a, b in segments]
        self.program = Program(modules + self.own_modules, dict(sources), set(stdlib))
        self.ctx: Context = build_context(self.program, self.diags)
        # services of one name in several namespaces, or NAMESPACE/NAME references: resolved over the
        # whole program only (compiler/semantic/namespaces.py), so not sharded
        self.qualified = self.ctx.program is not self.program

    def summary(self) -> dict:
        """What the other shard must know of this one's own segments (plain data: cheap to send)."""
        services, routed, authorized, unsupported = [], [], [], False
        for module in self.own_modules:
            for item in module.items:
                if isinstance(item, ast.Service):
                    services.append(_service_summary(item))
                elif isinstance(item, ast.Routes):
                    routed.append(item.service.value)
                elif isinstance(item, ast.Authorization):
                    authorized.append(item.service.value)
                elif isinstance(item, (ast.Mesh, ast.Policy, ast.Import)):
                    unsupported = True  # between services of a large file: the other shard lacks it
        # A syntax error anywhere: let the sequential path report it (a cut could even have split an
        # item, and the other shard would not know which names failed to parse).
        syntax = any(d.code.startswith("E01") for d in self.diags.items)
        return {"services": services, "routed": routed, "authorized": authorized,
                "unsupported": unsupported or syntax or self.qualified}

    def adopt(self, own: dict, other: dict, sources) -> bool:
        """Add the other shard's services as stubs; False when the split is not clean."""
        if own["unsupported"] or other["unsupported"]:
            return False
        own_names = {s[0] for s in own["services"]}
        other_names = {s[0] for s in other["services"]}
        if own_names & other_names:
            return False
        for name in set(own["routed"]) | set(own["authorized"]):
            # A service's blocks must be in the shard that lowers it: the one whose segments
            # declare it, or shard 0 for a service declared in a file both shards read.
            owner = self.index if name in own_names else 1 - self.index if name in other_names else 0
            if owner != self.index:
                return False
        ctx = self.ctx
        for summary in other["services"]:
            if summary[0] in ctx.services:
                return False  # declared in a replicated file and in the other shard
            ctx.services[summary[0]] = _service_stub(summary, sources)
            ctx.remote.add(summary[0])
        ctx.routed = set(ctx.routes) | set(other["routed"])
        # Services declared in replicated files are lowered by shard 0 only.
        if self.index == 1:
            for name in list(ctx.services):
                if name not in own_names and name not in ctx.remote:
                    ctx.remote.add(name)
        return True

    def finish(self, lower: bool, known_subsets: set, serialize: bool):
        """Check and lower: (portable diagnostics, services, route count, IR self-check problems).
        The services are IR objects, or JSON bytes by name when `serialize` (to cross to the other
        process; `dump_nested`'s form)."""
        from compiler.ir.check import check_ir
        from compiler.lower import lower_program
        from compiler.semantic.checks import run_checks

        run_checks(self.ctx)
        diags = self.diags.sorted()
        services: tuple[ir.Service, ...] = ()
        routes = 0
        problems: list[str] = []
        if lower and not any(d.severity == "error" for d in diags):
            program = lower_program(self.ctx)
            problems = check_ir(program, known_subsets)
            services = program.services
            routes = sum(len(svc.routes) for svc in services)
        sent: tuple[ir.Service, ...] | dict[str, bytes] = services
        if serialize:
            sent = {svc.name: dump_nested(svc) for svc in services}
        return [portable(d) for d in diags], sent, routes, problems


def _service_summary(svc: ast.Service) -> tuple:
    def lit(x):
        return None if x is None else (x.value, x.span.path, x.span.start, x.span.end)
    subsets = tuple(lit(s.name) for s in svc.subsets)
    return (svc.name.value, lit(svc.name), lit(svc.port), lit(svc.namespace), lit(svc.identity),
            svc.endpoints is not None, subsets, svc.retry_budget is not None,
            (svc.span.path, svc.span.start, svc.span.end),
            None if svc.hosts is None else tuple(lit(h) for h in svc.hosts))


def _service_stub(summary: tuple, sources) -> ast.Service:
    def lit(x):
        return None if x is None else ast.Lit(x[0], Span(sources[x[1]], x[2], x[3]))
    _name, name_lit, port, namespace, identity, has_endpoints, subsets, has_budget, span, hosts = summary
    return ast.Service(lit(name_lit), lit(port), lit(namespace), lit(identity), () if has_endpoints else None,
                       tuple(ast.Subset(lit(s), ()) for s in subsets), None, None,
                       ast.Ref(None, "<remote budget>") if has_budget else None, None, None,
                       None if hosts is None else tuple(lit(h) for h in hosts),
                       Span(sources[span[0]], span[1], span[2]))


def portable(d: Diagnostic) -> tuple:
    def span(s: Span | None):
        return None if s is None else (s.path, s.start, s.end)
    labels = tuple((span(label.span), label.message) for label in d.labels)
    return (d.code, d.message, span(d.span), d.hint, labels, d.path)


def restore(t: tuple, sources) -> Diagnostic:
    def span(s):
        return None if s is None else Span(sources[s[0]], s[1], s[2])
    code, message, sp, hint, labels, path = t
    return Diagnostic(code, message, span(sp), hint, tuple(Label(span(s), m) for s, m in labels), path)


# ---- the two processes ---------------------------------------------------------------------------------

def _child(conn, args, lower: bool) -> None:
    try:
        import gc
        gc.disable()
        shard = Shard(1, *args)
        own = shard.summary()
        conn.send(own)
        other = conn.recv()
        ready = other is not None and shard.adopt(own, other, args[0])
        conn.send(ready)
        if ready:
            known = conn.recv()
            conn.send(shard.finish(lower, known, serialize=True))
    except BaseException as err:  # the parent falls back to the sequential path
        try:
            conn.send(("failed", repr(err)))
        except Exception:
            pass
    finally:
        conn.close()
        os._exit(0)


class Sharded:
    """What the two shards found together: the diagnostics and, lowered without an error, this
    process's services as IR objects and the other's as JSON (what crossed the pipe)."""

    def __init__(self, sources, diagnostics, trust_domain: str, lowered: bool, local=(), remote=None,
                 routes: int = 0, problems=(), dumped=None, declared: int = 0, tracing=None):
        self.sources = sources
        self.tracing = tracing                  # ir.Tracing of the mesh block (both shards read it), or None
        self.declared = declared                # services declared in the whole program
        self.diagnostics = diagnostics
        self.trust_domain = trust_domain
        self.lowered = lowered
        self.local = tuple(local)               # IR services lowered here
        self.remote = remote or {}              # name -> JSON of a service lowered by the other shard
        self.counts = (len(self.local) + len(self.remote), routes)
        self.problems = list(problems)          # of the IR self-check (a compiler bug)
        self.dumped = dumped or {}              # name -> JSON of local services serialised already

    def program(self):
        """The IR objects of the whole program (the other shard's rebuilt from their JSON)."""
        import orjson

        from compiler import ir

        services = list(self.local) + [ir.from_data(ir.Service, orjson.loads(_unnest(text)))
                                       for text in self.remote.values()]
        services.sort(key=lambda s: s.name)
        return ir.Program(ir.SCHEMA_VERSION, self.trust_domain, tuple(services), self.tracing)

    def json(self) -> bytes:
        """The IR document, byte-identical to the sequential compile's, without rebuilding objects."""
        dumped = self.dumped
        texts = {svc.name: dumped.get(svc.name) or dump_nested(svc) for svc in self.local}
        texts.update(self.remote)
        return splice(self.trust_domain, texts, self.tracing)


def analyse(paths: list[str], lower: bool, force: bool = False) -> Sharded | None:
    """The sharded analysis of a program, or None to fall back to one process."""
    if jobs() < 2:
        return None
    planned = plan(paths, force)
    if planned is None:
        return None
    sources, stdlib, replicated, shards = planned
    import multiprocessing

    from compiler.semantic.symbols import subset_names

    mp = multiprocessing.get_context("fork")
    parent, child_end = mp.Pipe()
    proc = mp.Process(target=_child, args=(child_end, (sources, stdlib, replicated, shards[1]), lower), daemon=True)
    proc.start()
    child_end.close()
    try:
        shard = Shard(0, sources, stdlib, replicated, shards[0])
        own = shard.summary()
        other = parent.recv()
        if not isinstance(other, dict):
            return None
        clean = shard.adopt(own, other, sources)
        parent.send(own if clean else None)
        if not clean or parent.recv() is not True:
            return None
        known = {(n, sub) for n, svc in shard.ctx.services.items() for sub in subset_names(svc)}
        parent.send(known)
        mine = shard.finish(lower, known, serialize=False)
        dumped = _dump_while_waiting(mine[1], parent)
        theirs = parent.recv()
        if not isinstance(theirs, tuple) or len(theirs) != 4:
            return None
    except (EOFError, OSError):
        return None
    finally:
        parent.close()
        proc.join(timeout=1)
        if proc.is_alive():
            proc.kill()
    diags_all = Collector()
    diags_all.extend(restore(t, sources) for t in mine[0] + theirs[0])
    diags = diags_all.sorted()
    trust_domain = shard.ctx.trust_domain
    declared = len(shard.ctx.services)  # its own and the other shard's (stubs)
    if not lower or any(d.severity == "error" for d in diags):
        return Sharded(sources, diags, trust_domain, lowered=False, declared=declared)
    from compiler.lower import lower_tracing

    return Sharded(sources, diags, trust_domain, True, mine[1], theirs[1], mine[2] + theirs[2], mine[3] + theirs[3],
                   dumped, declared, lower_tracing(shard.ctx))


def _dump_while_waiting(services, conn) -> dict[str, bytes]:
    """This shard's services as JSON, made while the other shard has not answered yet: time this
    process would spend idle, and `meshc compile --emit ir` then has most of its document ready
    (the IR objects are kept too, for a backend). Stops as soon as the answer is there."""
    dumped: dict[str, bytes] = {}
    for svc in services:
        if conn.poll():
            break
        dumped[svc.name] = dump_nested(svc)
    return dumped


# A service's JSON is made as it stands in the IR document, two levels deep (indented by 4), inside
# `[[...]]`: the document is then one join of slices of these texts (memoryviews, no copies), not of
# a re-indented copy of each (`.replace(b"\n", b"\n    ")`) joined into a body and concatenated
# again: at 10,000 services that held four copies of the 200 MB document at once (issue 19's peak).
_NEST_HEAD, _NEST_TAIL = b"[\n  [\n    ", b"\n  ]\n]"


def dump_nested(svc) -> bytes:
    """The JSON of one IR service inside `[[...]]` (see `splice`)."""
    import orjson

    return orjson.dumps([[svc]], option=orjson.OPT_INDENT_2)


def _unnest(text: bytes) -> memoryview:
    """The service's own JSON within `dump_nested`'s text, indented as in the document."""
    return memoryview(text)[len(_NEST_HEAD):-len(_NEST_TAIL)]


def splice(trust_domain: str, services: dict[str, bytes], tracing=None) -> bytes:
    """The IR document from per-service JSON (`dump_nested`'s), exactly as orjson would print the
    whole program (the fields in ir.Program's order: the services, then the mesh's tracing)."""
    import orjson

    from compiler import ir

    doc = orjson.dumps({"schema_version": ir.SCHEMA_VERSION, "trust_domain": trust_domain, "services": [],
                        "tracing": tracing}, option=orjson.OPT_INDENT_2) + b"\n"
    if not services:
        return doc
    before, after = doc.split(b'"services": []', 1)
    parts: list[bytes | memoryview] = [before, b'"services": [\n    ']
    for name in sorted(services):
        parts += (_unnest(services[name]), b",\n    ")
    parts[-1] = b"\n  ]"
    parts.append(after)
    return b"".join(parts)   # the one copy of the document
