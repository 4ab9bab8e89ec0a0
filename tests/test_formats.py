"""--output-format sarif and github: valid SARIF 2.1.0 (against the OASIS schema) and well-formed
GitHub workflow commands, for the same diagnostics the human and JSON formats show."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jsonschema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIAG = "tests/diagnostics"   # relative to ROOT, the working directory of every run
SCHEMA = os.path.join(ROOT, "tests", "data", "sarif-2.1.0-rtm.5.json")


def meshc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compiler", *args], cwd=ROOT, capture_output=True, text=True)


def sarif_of(*args: str) -> tuple[dict, subprocess.CompletedProcess]:
    proc = meshc("check", "--output-format", "sarif", *args)
    return json.loads(proc.stdout), proc


def test_sarif_is_valid_against_the_sarif_2_1_0_schema():
    with open(SCHEMA, encoding="utf-8") as fh:
        schema = json.load(fh)
    log, proc = sarif_of(DIAG)
    assert proc.returncode == 1
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(log), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


def test_sarif_results_match_the_json_diagnostics():
    log, _ = sarif_of(DIAG)
    plain = json.loads(meshc("check", "--output-format", "json", DIAG).stdout)["diagnostics"]
    run = log["runs"][0]
    results = run["results"]
    assert len(results) == len(plain) > 20
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert rule_ids == sorted({d["code"] for d in plain})
    for result, diag in zip(results, plain):
        assert result["ruleId"] == diag["code"]
        assert rule_ids[result["ruleIndex"]] == diag["code"]
        assert result["level"] == diag["severity"]
        assert result["message"]["text"].startswith(diag["message"])
        if diag["line"] is not None:
            region = result["locations"][0]["physicalLocation"]["region"]
            assert (region["startLine"], region["startColumn"]) == (diag["line"], diag["column"])
            assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == diag["file"]


def test_sarif_of_a_clean_program_has_no_results_and_exits_zero():
    log, proc = sarif_of("examples")
    assert proc.returncode == 0
    assert log["runs"][0]["results"] == []
    assert log["version"] == "2.1.0"


COMMAND = re.compile(r"^::(error|warning) title=meshc \((?P<code>[EW]\d{4})\),file=(?P<file>[^,:]+)"
                     r"(,line=(?P<line>\d+),col=(?P<col>\d+),endLine=\d+,endColumn=\d+)?::(?P<msg>[^\n]*)$")


def test_github_annotations_are_one_well_formed_command_per_diagnostic():
    proc = meshc("check", "--output-format", "github", DIAG)
    plain = json.loads(meshc("check", "--output-format", "json", DIAG).stdout)["diagnostics"]
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1
    assert len(lines) == len(plain)
    for line, diag in zip(lines, plain):
        m = COMMAND.match(line)
        assert m, line
        assert m["code"] == diag["code"] and m["file"] == diag["file"]
        assert (int(m["line"]) if m["line"] else None) == diag["line"]
        assert m["msg"].startswith(diag["code"] + " ")
        assert "\n" not in m["msg"] and "\r" not in m["msg"]


def test_github_format_escapes_newlines_and_percent():
    from compiler.core.diagnostics import Diagnostic
    from compiler.tooling.formats import render_github

    text = render_github([Diagnostic("E0201", "unknown service `a%b`", None, hint="two\nlines", path="x,y:z.mesh")])
    # (a line break inside a message or hint is shown escaped by the diagnostic itself, issue 18)
    assert text == "::error title=meshc (E0201),file=x%2Cy%3Az.mesh::E0201 unknown service `a%25b`%0Ahint: two\\nlines"


def test_clean_program_prints_no_github_annotations():
    proc = meshc("check", "--output-format", "github", "examples")
    assert proc.returncode == 0 and proc.stdout == ""
