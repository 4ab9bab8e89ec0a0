"""A validation report as located diagnostics: each problem at the `.mesh` construct its object
comes from (the object's `meshc.dev/source` annotation, FILE:LINE:COL), else at the object.

E0940: the CRD's OpenAPI schema rejects an emitted object; E0941: a CEL rule
(`x-kubernetes-validations`) rejects it, with the rule's own message; E0942: the validator cannot
evaluate a rule (its own error: the output is refused, never passed unchecked).
"""

from __future__ import annotations

from typing import Any

from compiler.core.diagnostics import Diagnostic
from compiler.core.source import SourceFile, Span
from compiler.kubeschema.validate import Problem, Report

SCHEMA_CODE, RULE_CODE, VALIDATOR_CODE = "E0940", "E0941", "E0942"
_CODES = {"schema": SCHEMA_CODE, "rule": RULE_CODE, "validator": VALIDATOR_CODE}


def _span(source: str | None, sources: dict[str, SourceFile]) -> tuple[Span | None, str | None]:
    if not source:
        return None, None
    file, _, rest = source.rpartition(":")
    file, _, line_text = file.rpartition(":")
    try:
        line, column = int(line_text), int(rest)
    except ValueError:
        return None, source
    src = sources.get(file)
    if src is None:
        return None, source
    starts = src.line_starts()
    if not 1 <= line <= len(starts):
        return None, source
    start = starts[line - 1] + column - 1
    end = start
    while end < len(src.text) and not src.text[end].isspace():
        end += 1
    return Span(src, start, max(end, start + 1)), None


def to_diagnostics(report: Report, sources: dict[str, Any], what: str = "") -> list[Diagnostic]:
    """One diagnostic per problem of `report`. `what` names the file the object is in, for an
    object without a source annotation."""
    out = []
    for p in report.problems:
        out.append(problem_diagnostic(p, sources, what))
    return out


def problem_diagnostic(p: Problem, sources: dict[str, Any], what: str = "") -> Diagnostic:
    span, path = _span(p.source, sources)
    field = f" `{p.path}`" if p.path else ""
    if p.kind == "rule":
        message = f"{p.object_kind} `{p.name}`{field}: {p.message}"
        hint = f"the CRD's rule `{p.rule}` rejects it" if p.rule else None
    elif p.kind == "validator":
        message = f"{p.object_kind} `{p.name}`{field}: {p.message}"
        hint = "a bug of meshc's validator: the object is refused rather than passed unchecked"
    else:
        message = f"{p.object_kind} `{p.name}`{field}: {p.message}"
        hint = "the CRD's schema rejects it"
    return Diagnostic(_CODES[p.kind], message, span, hint, path=(path or what or None) if span is None else None)
