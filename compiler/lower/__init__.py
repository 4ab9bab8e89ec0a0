"""AST to IR: resolve names, write in every default, order routes, convert units.

Lowering runs only on a program without errors, so it may assume that every reference resolves
and every value is in range. Modules by what they lower: `services` (subsets, sidecar, mTLS,
authorization), `routes` (destinations, timeouts, header changes) and `resilience` (limits,
outlier detection, retry budget, retries, faults). Matches and rules are lowered by
compiler/semantic/conditions.py, which the checks share.
"""

from __future__ import annotations

from compiler import ir
from compiler.language.endpoints import parse_otlp_url
from compiler.language.settings import TRACING
from compiler.lower.services import lower_service
from compiler.semantic.conditions import location
from compiler.semantic.symbols import Context


def lower_program(ctx: Context) -> ir.Program:
    """The IR of every service this context owns (all of them, except a shard's remote stubs)."""
    services = tuple(lower_service(ctx, svc) for _, svc in sorted(ctx.local_services(), key=lambda kv: kv[0]))
    return ir.Program(ir.SCHEMA_VERSION, ctx.trust_domain, services, lower_tracing(ctx))


def lower_tracing(ctx: Context) -> ir.Tracing | None:
    """The mesh's `tracing` block with its defaults written in, or None without one."""
    block = ctx.mesh.tracing if ctx.mesh is not None else None
    if block is None:
        return None
    written = {s.key: s.values[0].value for s in block.settings}
    otlp = parse_otlp_url(written["otlp"]) if "otlp" in written else None
    host, port, path = otlp if otlp is not None else (None, 0, "")
    return ir.Tracing(float(written.get("sampling", TRACING.default("sampling"))),
                      written.get("propagation", TRACING.default("propagation")), host, port, path, location(block))
