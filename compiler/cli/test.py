"""`meshc test`: run the program's policy tests (compiler/verify) and report them.

Human output on standard error (a line per test, each failure located at the expectation that
failed, the coverage and what no test reaches), `json`, `junit` (JUnit XML for CI systems) or
`sarif` on standard output. Exit codes as for `check`: 0 every test passed (and the coverage is at
least `--fail-under`), 1 a test failed, the program has errors or the coverage is below the
threshold, 2 usage (`--live` without Envoy), 3 internal error.
"""

from __future__ import annotations

import os
import sys

from compiler.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from compiler.cli.report import print_diagnostics


def test_command(files: list[str], args) -> int:
    from compiler import api
    from compiler.verify.run import run_tests

    if args.fail_under is not None and not 0 <= args.fail_under <= 100:
        print("meshc: error: --fail-under takes a percentage from 0 to 100", file=sys.stderr)
        return EXIT_USAGE
    live = None
    if args.live:
        from compiler.verify.live import LiveUnavailable, check_live

        try:
            live = check_live()
        except LiveUnavailable as err:
            print(f"meshc: error: {err}", file=sys.stderr)
            return EXIT_USAGE
    comp = api.compile(files)
    fmt = args.output_format
    if comp.has_errors:
        if fmt == "junit":     # a report the CI system can still read: the program as one failed case
            print(render_junit_errors([d for d in comp.diagnostics if d.severity == "error"]))
        print_diagnostics(comp.diagnostics, "sarif" if fmt == "sarif" else "json" if fmt == "json" else "human",
                          args.color, json_stream=sys.stdout if fmt != "junit" else None,
                          quiet=fmt == "junit")
        return EXIT_INPUT
    report = run_tests(comp)
    if live is not None:
        from compiler.verify.live import run_live

        run_live(comp, report, live)
    below = args.fail_under is not None and report.coverage + 1e-9 < args.fail_under
    warnings = [d for d in comp.diagnostics if d.severity != "error"]
    if fmt == "json":
        print(render_json(report, warnings, args.fail_under))
    elif fmt == "junit":
        print(render_junit(report))
    elif fmt == "sarif":
        from compiler import __version__
        from compiler.tooling.formats import render_sarif

        print(render_sarif(warnings + [d for o in report.outcomes for d in o.failures], __version__))
    else:
        render_human(report, warnings, args, below)
    return EXIT_INPUT if report.failed or below else EXIT_OK


def _where(span) -> str:
    if span is None:
        return "?"
    line, col = span.start_line_col()
    return f"{span.path}:{line}:{col}"


def _rel(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def render_human(report, warnings, args, below: bool) -> None:
    from compiler.core.diagnostics import render_human as render_diag
    from compiler.core.diagnostics import use_color

    colored = use_color(sys.stderr, args.color)
    for d in warnings:
        print(render_diag(d, colored), file=sys.stderr)
        print(file=sys.stderr)
    for o in report.outcomes:
        mark = "pass" if o.passed else "FAIL"
        print(f"{mark}  {o.test.name.value}  ({_where(o.test.span)})", file=sys.stderr)
    for o in report.failed:
        print(file=sys.stderr)
        for d in o.failures:
            print(render_diag(d, colored), file=sys.stderr)
            print(file=sys.stderr)
    unreached = report.unreached
    total = len(report.units)
    print(f"coverage: {total - len(unreached)} of {total} units ({report.coverage:.1f} %)"
          + (": every route, split arm, authorization rule and default is reached" if not unreached else
             "; no test reaches:"), file=sys.stderr)
    for unit, span in unreached:
        print(f"  {unit}  ({_where(span)})", file=sys.stderr)
    passed = len(report.outcomes) - len(report.failed)
    n = len(report.outcomes)
    line = f"meshc: {n} test{'' if n == 1 else 's'}: {passed} passed, {len(report.failed)} failed"
    if below:
        line += f"; coverage {report.coverage:.1f} % is below --fail-under {args.fail_under:g} %"
    if not args.quiet or report.failed or below:
        print(line, file=sys.stderr)


def outcome_data(o) -> dict:
    """What a test's request came to, hop by hop (the agreed decision of both targets)."""
    hops = []
    for h in o.hops:
        d = h.native
        hop: dict = {"where": h.where, "status": d.status}
        if d.kind == "outbound":
            hop.update(route=d.route, cluster=d.cluster, candidates=list(d.candidates) if d.candidates else None,
                       path=d.path, timeout_ms=d.timeout_ms,
                       retries=d.retry.num_retries if d.retry is not None else 0,
                       mirror=[list(m) for m in d.mirror] if d.mirror else None)
        else:
            hop.update(rule=h.rule)
        hops.append(hop)
    return {"status": o.status, "hops": hops}


def render_json(report, warnings, fail_under) -> str:
    import json

    tests = []
    for o in report.outcomes:
        line, col = o.test.span.start_line_col()
        tests.append({"name": o.test.name.value, "file": o.test.span.path, "line": line, "column": col,
                      "result": "passed" if o.passed else "failed", "outcome": outcome_data(o),
                      "failures": [d.to_json() for d in o.failures]})
    unreached = []
    for unit, span in report.unreached:
        where = span.start_line_col() if span is not None else (None, None)
        unreached.append({"unit": unit, "file": span.path if span is not None else None, "line": where[0],
                          "column": where[1]})
    data = {"schema": 1, "tests": tests,
            "coverage": {"units": len(report.units), "reached": len(report.units) - len(unreached),
                         "percent": round(report.coverage, 2), "fail_under": fail_under, "unreached": unreached},
            "warnings": [d.to_json() for d in warnings],
            "summary": {"tests": len(report.outcomes), "passed": len(report.outcomes) - len(report.failed),
                        "failed": len(report.failed)}}
    return json.dumps(data, indent=2, sort_keys=True)


def render_junit_errors(errors) -> str:
    """JUnit XML for a program that does not check: one failed case, one failure per error."""
    from xml.sax.saxutils import escape, quoteattr

    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<testsuites name="meshc test" tests="1" failures="1" errors="0">',
             '  <testsuite name="meshc test" tests="1" failures="1" errors="0" skipped="0">',
             '    <testcase name="the program checks" classname="meshc check">']
    for d in errors:
        text = f"{_where(d.span)}: {d.message}" + (f"\nhint: {d.hint}" if d.hint else "")
        lines.append(f"      <failure type={quoteattr(d.code)} message={quoteattr(d.message)}>{escape(text)}</failure>")
    lines += ["    </testcase>", "  </testsuite>", "</testsuites>"]
    return "\n".join(lines)


def render_junit(report) -> str:
    """JUnit XML (the schema CI systems read: testsuites > testsuite > testcase > failure)."""
    from xml.sax.saxutils import escape, quoteattr

    failed = len(report.failed)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuites name="meshc test" tests="{len(report.outcomes)}" failures="{failed}" errors="0">',
             f'  <testsuite name="meshc test" tests="{len(report.outcomes)}" failures="{failed}" errors="0" '
             f'skipped="0">',
             f'    <properties><property name="coverage" value="{report.coverage:.2f}"/></properties>']
    for o in report.outcomes:
        path = o.test.span.path
        line, _ = o.test.span.start_line_col()
        head = (f'    <testcase name={quoteattr(o.test.name.value)} classname={quoteattr(_rel(path))} '
                f'file={quoteattr(_rel(path))} line="{line}"')
        if o.passed:
            lines.append(head + "/>")
            continue
        lines.append(head + ">")
        for d in o.failures:
            text = f"{_where(d.span)}: {d.message}" + (f"\nhint: {d.hint}" if d.hint else "")
            lines.append(f"      <failure type={quoteattr(d.code)} message={quoteattr(d.message)}>"
                         f"{escape(text)}</failure>")
        lines.append("    </testcase>")
    lines += ["  </testsuite>", "</testsuites>"]
    return "\n".join(lines)
