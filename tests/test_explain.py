"""`meshc explain` and docs/codes.md: every registered code has a bad and a good example that
really behave as claimed, and docs/codes.md is generated from the same data.

For every code in compiler/core/codes.py, the bad example (all of its files, as one program, as
`meshc check FILES` would load them) reports that code and no other, and the good example reports
nothing at all. Codes raised only by a backend (E07xx/W07xx) are checked through
`meshc compile --target envoy --proxy all` when the Envoy backend works, and skipped otherwise.

`pytest tests/test_explain.py --update-goldens` rewrites docs/codes.md.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.util
import io
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from compiler import api, cli
from compiler.core.codes import CODES
from compiler.tooling import explain
from compiler.tooling.formats import help_uri

ROOT = Path(__file__).resolve().parent.parent
EXPLANATIONS = ROOT / "compiler" / explain.EXPLANATIONS_DIR
DOCS = ROOT / explain.DOCS_PATH
BACKEND_PREFIXES = ("E07", "W07")   # codes only the backends report (compile --target envoy)
IMPORT_PREFIXES = ("E10", "W10")   # codes `meshc import istio` reports, on YAML
# codes only the Istio target reports, and the shared Kubernetes name checks (compile --target istio)
ISTIO_CODES = tuple(f"{s}09{n:02d}" for s in "EW" for n in range(1, 40))
# codes of the Kubernetes validation and the Gateway API target (compile --target gateway-api): the
# examples are compiled in the experimental channel (E0944, a retry in the standard one, in the
# standard channel), and only these codes count: meshc's own warnings about retries (W0501, W0502)
# are not the target's, and every route has a retry, since a route without one is W0942 (and a
# retry's backoff is W0941, which counts only for W0941's own examples)
GATEWAY_API_CODES = tuple(f"{s}09{n:02d}" for s in "EW" for n in range(40, 80)) + ("W0411",)  # caller routes
ASSERT_PROVER = ("E0851", "W0850", "W0851")  # codes only `meshc check`'s assert prover reports
TEST_RUN_CODES = ("E0820", "E0821")  # codes `meshc test` reports when it runs the tests
# A disagreement between the two targets is a bug of meshc: no policy written on purpose shows it
# (tests/test_policy_tests.py makes one by changing an emitted Envoy file).
# Neither does an object the CRD's CEL rules reject (meshc's checks refuse such policies first) nor
# a rule the validator cannot evaluate (tests/test_kubeschema.py shows both on hand-written objects).
NO_BAD_EXAMPLE = {"E0821", "E0941", "E0942"}


def write_example(example: explain.Example, folder: Path) -> list[str]:
    """The example's files in `folder`, in their encoding; the paths, in the example's order."""
    paths = []
    for name, text in example.files:
        path = folder / name
        path.write_bytes(text.encode(example.encoding))
        paths.append(str(path))
    return paths


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`meshc ARGV` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def envoy_backend_works(tmp_path_factory) -> bool:
    """Whether `compile --target envoy` runs on the shipped examples (the backend is being built)."""
    if importlib.util.find_spec("compiler.backends.envoy") is None:
        return False
    out = tmp_path_factory.mktemp("envoy")
    code, _, _ = run_cli(["compile", "--target", "envoy", "--proxy", "all", "-o", str(out), str(ROOT / "examples")])
    return code == 0


def diagnostics_of(code: str, paths: list[str], tmp_path: Path, request, good: bool = False) -> list[tuple[str, str]]:
    """(code, severity) of every diagnostic the program reports, through the stage that reports `code`."""
    if code.startswith(IMPORT_PREFIXES):   # `meshc import istio` on the example's YAML
        from compiler.tooling.istio_import import import_istio

        return [(d.code, d.severity) for d in import_istio(paths, out_dir=str(tmp_path / "out")).diagnostics]
    if code.startswith("L"):  # lint rules: through `meshc lint` with the default configuration
        from compiler.tooling.lint import lint_files
        from compiler.tooling.lint.config import LintConfig

        findings, _ = lint_files(paths, LintConfig(), use_cache=False)
        return [(d.code, d.severity) for d in findings]
    if code in ASSERT_PROVER:   # proven by `meshc check` after the checks (compiler/verify/asserts.py)
        status, out, err = run_cli(["check", "--output-format", "json", *paths])
        assert status in (0, 1), err
        return [(d["code"], d["severity"]) for d in json.loads(out or err)["diagnostics"]]
    if code in TEST_RUN_CODES:
        from compiler.verify.run import run_tests

        comp = api.compile(paths)
        found = [(d.code, d.severity) for d in comp.diagnostics]
        if not comp.has_errors:
            found += [(d.code, d.severity) for o in run_tests(comp).outcomes for d in o.failures]
        return found
    if code in GATEWAY_API_CODES:
        channel = [] if code == "E0944" and not good else ["--channel", "experimental"]
        status, out, err = run_cli(["compile", "--target", "gateway-api", *channel, "--format", "json",
                                    "-o", str(tmp_path / "out"), *paths])
        assert status in (0, 1), err
        found = [(d["code"], d["severity"]) for d in json.loads(out)["diagnostics"]] if out.strip() else []
        # a bad example may also show the target's warnings that come with its construct (E0943 comes
        # from a regex path, which is W0944): its code, and no other error
        return [(c, s) for c, s in found if c in GATEWAY_API_CODES and (good or c == code or s == "error")
                and (c != "W0941" or code == "W0941")]
    if code in ISTIO_CODES:
        status, out, err = run_cli(["compile", "--target", "istio", "--format", "json",
                                    "-o", str(tmp_path / "out"), *paths])
        assert status in (0, 1), err
        return [(d["code"], d["severity"]) for d in json.loads(out)["diagnostics"]] if out.strip() else []
    if not code.startswith(BACKEND_PREFIXES):
        return [(d.code, d.severity) for d in api.check(paths).diagnostics]
    if not request.getfixturevalue("envoy_backend_works"):
        pytest.skip(f"{code} is reported by the Envoy backend, and `meshc compile --target envoy` "
                    "does not work on the examples yet")
    status, out, err = run_cli(["compile", "--target", "envoy", "--proxy", "all", "--format", "json",
                                "-o", str(tmp_path / "out"), *paths])
    assert status in (0, 1), err
    return [(d["code"], d["severity"]) for d in json.loads(out)["diagnostics"]] if out.strip() else []


@pytest.mark.parametrize("code", list(CODES))
def test_bad_example_reports_its_code_and_nothing_else(code, tmp_path, request):
    ex = explain.load(code)
    assert ex.bad is not None, f"write compiler/tooling/explanations/{code}.md with a `## Bad` and a `## Good` example"
    if code in NO_BAD_EXAMPLE:
        pytest.skip(f"{code} reports a bug of meshc, which no example shows on purpose")
    found = diagnostics_of(code, write_example(ex.bad, tmp_path), tmp_path, request)
    assert code in [c for c, _ in found], f"the bad example of {code} reports {found}"
    assert {c for c, _ in found} == {code}, f"the bad example of {code} also reports {found}"


@pytest.mark.parametrize("code", list(CODES))
def test_good_example_reports_nothing(code, tmp_path, request):
    ex = explain.load(code)
    assert ex.good is not None, f"write compiler/tooling/explanations/{code}.md with a `## Bad` and a `## Good` example"
    found = diagnostics_of(code, write_example(ex.good, tmp_path), tmp_path, request, good=True)
    assert code not in [c for c, _ in found] and "error" not in [s for _, s in found], found
    assert found == [], f"the good example of {code} is not clean: {found}"


def test_every_explanation_file_is_for_a_registered_code():
    orphans = sorted(p.stem for p in EXPLANATIONS.glob("*") if p.stem not in CODES or p.suffix != ".md")
    assert not orphans, f"explanations for no registered code: {orphans}"


def test_explanation_files_hold_exactly_one_bad_and_one_good_section():
    for path in sorted(EXPLANATIONS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        assert text.count("\n## ") + text.startswith("## ") == 2, path.name
        assert set(explain.parse_examples(text, path.name)) == {"bad", "good"}, path.name


def test_explain_prints_title_explanation_and_both_examples(capsys):
    assert cli.main(["explain", "e0201"]) == 0          # any case
    out = capsys.readouterr().out
    ex = explain.load("E0201")
    assert out.startswith("error[E0201]: unknown service\n")
    assert " ".join(ex.code.explanation.split()) in " ".join(out.split())
    for example in (ex.bad, ex.good):
        assert example.prose in " ".join(out.split())
        for line in example.source.strip().split("\n"):
            assert ("    " + line).rstrip() in out.split("\n")
    assert "docs/codes.md#e0201" in out


def test_explain_unknown_code_exits_2_with_a_hint(capsys):
    # (E0209x: one registered code is clearly the closest; E0299 is as close to E0909 as to E0209)
    assert cli.main(["explain", "E0209x"]) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unknown code `E0209x`" in captured.err and "did you mean `E0209`?" in captured.err


@pytest.mark.parametrize("argv", [["explain"], ["explain", "--list"]])
def test_explain_without_a_code_lists_every_code(argv, capsys):
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(CODES)
    for line, code in zip(lines, CODES.values()):
        assert line.split(None, 2)[1:] == [code.severity, code.title]


def test_check_does_not_load_the_explanations(tmp_path):
    """The check path (editors, pre-commit) never imports compiler.tooling.explain nor reads its data."""
    src = tmp_path / "a.mesh"
    src.write_text('service a {\n  port 80\n  endpoints ["127.0.0.1:80"]\n}\n', encoding="utf-8")
    script = ("import sys\nfrom compiler import cli\nassert cli.main(['check', sys.argv[1]]) == 0\n"
              "assert 'compiler.tooling.explain' not in sys.modules, 'check imported compiler.tooling.explain'\n")
    env = {k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}
    proc = subprocess.run([sys.executable, "-c", script, str(src)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_explanations_are_package_data():
    """pyproject ships every explanation file in the wheel (they are read through package_data)."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        patterns = tomllib.load(fh)["tool"]["setuptools"]["package-data"].get("compiler", [])
    for path in EXPLANATIONS.glob("*.md"):
        rel = f"{explain.EXPLANATIONS_DIR}/{path.name}"
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} is not in the package data"


def test_docs_codes_md_is_generated_from_the_same_data(update_goldens):
    expected = explain.render_markdown()
    if update_goldens:
        DOCS.write_text(expected, encoding="utf-8", newline="\n")
        return
    assert DOCS.exists() and DOCS.read_text(encoding="utf-8") == expected, \
        "docs/codes.md is stale: run `pytest tests/test_explain.py --update-goldens`"


def test_docs_codes_md_has_the_anchor_every_help_uri_links_to():
    text = explain.render_markdown()
    for code in CODES:
        anchor = help_uri(code).rsplit("#", 1)[1]
        assert anchor == code.lower() and f"\n## {code}\n" in text  # `## E0201` is anchored `#e0201`
