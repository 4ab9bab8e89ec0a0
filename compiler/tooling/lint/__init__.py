"""`meshc lint`: every compiler diagnostic plus the lint rules (compiler/lint/rules.py), filtered
by the configuration (config.py) and inline suppressions (suppress.py), cached by content
(cache.py)."""

from __future__ import annotations

import os

from compiler.core.diagnostics import Collector, Diagnostic
from compiler.tooling.lint.config import LintConfig


class LintRun:
    """What one `meshc lint` found, and what it looked at (for the summary line)."""
    __slots__ = ("findings", "cached", "files", "services")

    def __init__(self, findings: list[Diagnostic], cached: bool, files: int, services: int):
        self.findings, self.cached, self.files, self.services = findings, cached, files, services


def lint_files(paths: list[str], config: LintConfig, use_cache: bool = True) -> tuple[list[Diagnostic], bool]:
    """The findings of a program, and whether they came from the cache."""
    run = lint_program(paths, config, use_cache)
    return run.findings, run.cached


def lint_program(paths: list[str], config: LintConfig, use_cache: bool = True) -> LintRun:
    """The findings of a program, whether they came from the cache, and how many files and
    services the program has."""
    from compiler.tooling.lint import cache

    entry = (cache.entry_path(config.root if config.path else os.getcwd(), paths, config.fingerprint())
             if use_cache else None)
    if entry is not None:
        cached = cache.load_run(entry)
        if cached is not None:
            findings, files, services = cached
            return LintRun(findings, True, files, services)
    diags, sources, services = _analyse(paths)
    findings = [d for d in diags if config.enabled(d.code, d.file) and not _suppressed(d)]
    if entry is not None:
        cache.store(entry, sources, findings, services)
    return LintRun(findings, False, sum(not p.startswith("<std>") for p in sources), services)


def _suppressed(d: Diagnostic) -> bool:
    from compiler.tooling.lint.suppress import is_suppressed

    return is_suppressed(d)


def _analyse(paths: list[str]):
    from compiler import api
    from compiler.tooling.lint.rules import RULES

    result = api.check(paths, shard=False)
    diags = list(result.diagnostics)
    if result.context is not None:
        found = Collector()

        def add(code, message, span, hint=None, labels=()):
            found.add(code, message, span, hint, labels)

        for rule in RULES:
            try:
                rule(result.context, add)
            except Exception:
                # Rules assume a checked program. With errors in it (reported above) a rule may
                # meet a value it cannot read; it is skipped rather than reporting nonsense.
                if not result.has_errors:
                    raise
        diags = sorted(diags + found.items, key=Diagnostic.sort_key)
    return diags, result.sources, result.declared
