"""AST to IR: resolve names, write in every default, order routes, convert units.

Lowering runs only on a program without errors, so it may assume that every reference resolves
and every value is in range. Modules by what they lower: `services` (subsets, sidecar, mTLS,
authorization), `routes` (destinations, timeouts, header changes) and `resilience` (limits,
outlier detection, retry budget, retries, faults). Matches and rules are lowered by
compiler/semantic/conditions.py, which the checks share.
"""

from __future__ import annotations

from compiler import ir
from compiler.lower.services import lower_service
from compiler.semantic.symbols import Context


def lower_program(ctx: Context) -> ir.Program:
    """The IR of every service this context owns (all of them, except a shard's remote stubs)."""
    services = tuple(lower_service(ctx, svc) for _, svc in sorted(ctx.local_services(), key=lambda kv: kv[0]))
    return ir.Program(ir.SCHEMA_VERSION, ctx.trust_domain, services)
