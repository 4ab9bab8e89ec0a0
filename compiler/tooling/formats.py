"""Machine formats of diagnostics for CI: SARIF 2.1.0 (code scanning) and GitHub workflow
commands (annotations in CI logs). The human and JSON forms live in compiler/core/diagnostics.py;
all four render the same Diagnostic objects.
"""

from __future__ import annotations

import os

from compiler.core.codes import code_info
from compiler.core.diagnostics import Diagnostic, escape_text

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
DOCS_URI = "https://github.com/meshc/meshc/blob/main/docs/codes.md"


HOST_DOCS_URI = "https://github.com/meshc/meshc/blob/main/docs/identity.md#checking-a-host-meshc-doctor"


def help_uri(code: str) -> str:
    if code.startswith("H"):      # a `meshc doctor` finding (compiler/core/host_codes.py)
        return HOST_DOCS_URI
    return f"{DOCS_URI}#{code.lower()}"


def render_sarif(diags: list[Diagnostic], version: str) -> str:
    """One SARIF run: every registered code that occurs as a rule, every diagnostic as a result.

    Paths are made relative to the working directory when they lie under it (code scanning
    resolves them against the repository root, which is where CI runs meshc)."""
    import json

    used = sorted({d.code for d in diags})
    index = {code: i for i, code in enumerate(used)}
    rules = []
    for code in used:
        entry = code_info(code)
        rules.append({
            "id": code,
            "name": _camel(entry.title),
            "shortDescription": {"text": entry.title},
            "fullDescription": {"text": entry.explanation},
            "helpUri": help_uri(code),
            "defaultConfiguration": {"level": _level(entry.severity)},
        })
    results = []
    for d in diags:
        text = d.message if not d.hint else f"{d.message}\nhint: {d.hint}"
        result: dict = {"ruleId": d.code, "ruleIndex": index[d.code], "level": _level(d.severity),
                        "message": {"text": text}}
        location = _location(d)
        if location is not None:
            result["locations"] = [location]
        related = []
        for i, label in enumerate(d.labels):
            line, col = label.span.start_line_col()
            end_line, end_col = label.span.end_line_col()
            related.append({"id": i, "message": {"text": label.message},
                            "physicalLocation": _physical(label.span.path, line, col, end_line, end_col)})
        if related:
            result["relatedLocations"] = related
        results.append(result)
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "meshc", "version": version, "semanticVersion": version,
                                "informationUri": "https://github.com/meshc/meshc", "rules": rules}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }
    return json.dumps(log, indent=2, sort_keys=False)


def render_github(diags: list[Diagnostic]) -> str:
    """GitHub Actions workflow commands: `::error file=…,line=…::message` (one line each)."""
    lines = []
    for d in diags:
        kind = "error" if d.severity == "error" else "warning"
        props = [f"title={_prop(f'meshc ({d.code})')}"]
        if d.span is not None:
            line, col = d.span.start_line_col()
            end_line, end_col = d.span.end_line_col()
            props += [f"file={_prop(_relative(d.span.path))}", f"line={line}", f"col={col}",
                      f"endLine={end_line}", f"endColumn={end_col}"]
        elif d.file:
            props.append(f"file={_prop(_relative(d.file))}")
        text = d.message if not d.hint else f"{d.message}\nhint: {d.hint}"
        lines.append(f"::{kind} {','.join(props)}::{_data(f'{d.code} {text}')}")
    return "\n".join(lines)


def _location(d: Diagnostic) -> dict | None:
    if d.span is not None:
        line, col = d.span.start_line_col()
        end_line, end_col = d.span.end_line_col()
        return {"physicalLocation": _physical(d.span.path, line, col, end_line, end_col)}
    if d.file:
        return {"physicalLocation": {"artifactLocation": {"uri": _uri(d.file)}}}
    return None


def _physical(path: str, line: int, col: int, end_line: int, end_col: int) -> dict:
    region = {"startLine": line, "startColumn": col}
    if (end_line, end_col) > (line, col):
        region.update(endLine=end_line, endColumn=end_col)
    return {"artifactLocation": {"uri": _uri(path)}, "region": region}


def _uri(path: str) -> str:
    from urllib.parse import quote

    return quote(_relative(path).replace(os.sep, "/"))


def _relative(path: str) -> str:
    if os.path.isabs(path):
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            return rel
    return path


def _level(severity: str) -> str:
    return "error" if severity == "error" else "warning"


def _camel(title: str) -> str:
    words = [w for w in title.replace("-", " ").replace("`", "").split() if w.isalnum()]
    return "".join(w[:1].upper() + w[1:] for w in words) or "Rule"


def _data(text: str) -> str:
    """Escape a workflow-command message (GitHub's rules: %, CR, LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    """Escape a workflow-command property value (also `:` and `,`; a control character in a file
    name as `\x1b`, as in the messages)."""
    if not text.isprintable():
        text = escape_text(text)
    return _data(text).replace(":", "%3A").replace(",", "%2C")
