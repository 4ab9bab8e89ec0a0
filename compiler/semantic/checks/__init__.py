"""Semantic checks: plain functions in one visible order, each collecting diagnostics.

A check never raises on bad input and never stops the others: every diagnostic of a run is
reported. Lowering runs only when no check reported an error.
"""

from __future__ import annotations

from compiler.semantic.checks.asserts import check_asserts
from compiler.semantic.checks.authz import check_authorization
from compiler.semantic.checks.names import check_hosts, check_name_lengths, check_references
from compiler.semantic.checks.resilience import check_retries
from compiler.semantic.checks.routes import check_routes
from compiler.semantic.checks.tests import check_tests
from compiler.semantic.checks.values import check_values
from compiler.semantic.checks.workloads import check_workloads
from compiler.semantic.symbols import Context

CHECKS = (
    check_references,    # names resolve: services, subsets, policies (E02xx)
    check_name_lengths,  # declared names and namespaces fit a DNS label (E0210)
    check_hosts,         # hosts are hostnames, each claimed by one service (E0211-E0213)
    check_values,        # every value in range and well-formed (E03xx)
    check_workloads,     # sidecars on one host have their own ports (E0350)
    check_routes,        # timeouts, unreachable routes, services without routes (E04xx, W04xx)
    check_retries,       # retry safety and budgets (W05xx)
    check_authorization,  # rules that can never apply or have no effect (W06xx)
    check_asserts,       # asserts name one known destination and well-formed conditions (E085x)
    check_tests,         # policy tests name what exists (E08xx, W08xx)
)


def run_checks(ctx: Context) -> None:
    for check in CHECKS:
        check(ctx)
