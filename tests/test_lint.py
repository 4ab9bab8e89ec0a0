"""meshc lint: rules, configuration, inline suppression, the content-hash cache and exit codes.

Each rule's bad/good examples are checked for every code in tests/test_explain.py; here the
machinery around the rules is tested through the real command in temporary trees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RETRYING = textwrap.dedent("""\
    service cart {
      port 8080
      endpoints ["10.0.0.1:8080"]
      retry_budget { percent 20% }
    }

    routes cart {
      route read {
        match { method GET }
        to cart
        retry { attempts 2  on [5xx] }
      }
    }
    """)


def lint(tree, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["PYTHONPATH"] = ROOT
    return subprocess.run([sys.executable, "-m", "compiler", "lint", *args], cwd=tree, capture_output=True,
                          text=True, env=env)


def codes(proc) -> list[str]:
    return [d["code"] for d in json.loads(proc.stdout)["diagnostics"]]


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "cart.mesh").write_text(RETRYING)
    return tmp_path


def test_findings_exit_1_and_exit_zero_exits_0(tree):
    proc = lint(tree, "--format", "json", ".")
    assert proc.returncode == 1 and codes(proc) == ["L0201"]
    assert lint(tree, "--exit-zero", ".").returncode == 0


def test_a_clean_tree_exits_0(tmp_path):
    (tmp_path / "a.mesh").write_text('service a {\n  port 80\n  endpoints ["10.0.0.1:80"]\n}\n')
    proc = lint(tmp_path, ".")
    assert proc.returncode == 0 and proc.stderr == ""


def test_usage_errors_exit_2(tmp_path):
    assert lint(tmp_path, "missing.mesh").returncode == 2
    assert lint(tmp_path, "--output-format", "yaml", ".").returncode == 2


def test_compiler_errors_are_findings(tmp_path):
    (tmp_path / "bad.mesh").write_text("service a {\n  port 80\n  endpoints [\"10.0.0.1:80\"]\n}\nroutes b { }\n")
    proc = lint(tmp_path, "--format", "json", ".")
    assert proc.returncode == 1 and "E0209" in codes(proc)


@pytest.mark.parametrize("config_name, text", [
    ("pyproject.toml", '[project]\nname = "x"\n\n[tool.meshc.lint]\nignore = ["L0201"]\n'),
    ("meshc.toml", '[lint]\nignore = ["L02"]\n'),
    ("meshc.toml", '[lint]\nselect = ["W"]\n'),
])
def test_configuration_ignores_and_selects(tree, config_name, text):
    (tree / config_name).write_text(text)
    proc = lint(tree, "--format", "json", ".")
    assert proc.returncode == 0 and codes(proc) == []


def test_configuration_is_found_from_a_subdirectory(tree):
    (tree / "meshc.toml").write_text('[lint]\nignore = ["L0201"]\n')
    sub = tree / "deep" / "er"
    sub.mkdir(parents=True)
    assert lint(sub, os.path.join("..", "..", "cart.mesh")).returncode == 0


def test_per_file_ignores_match_globs_relative_to_the_config(tree):
    (tree / "legacy").mkdir()
    (tree / "legacy" / "old.mesh").write_text(RETRYING.replace("cart", "old"))
    (tree / "meshc.toml").write_text('[lint]\nper-file-ignores = { "legacy/*.mesh" = ["L0201"] }\n')
    proc = lint(tree, "--format", "json", ".")
    found = json.loads(proc.stdout)["diagnostics"]
    assert [(d["code"], os.path.basename(d["file"])) for d in found] == [("L0201", "cart.mesh")]


@pytest.mark.parametrize("text, message", [
    ('[lint]\nignore = ["X9"]\n', "no code or code prefix"),
    ('[lint]\nselekt = ["L"]\n', "unknown lint setting `selekt`"),
    ('[lint\n', "invalid TOML"),
])
def test_a_bad_configuration_is_a_usage_error(tree, text, message):
    (tree / "meshc.toml").write_text(text)
    proc = lint(tree, ".")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_errors_cannot_be_ignored(tmp_path):
    (tmp_path / "meshc.toml").write_text('[lint]\nignore = ["E"]\n')
    (tmp_path / "bad.mesh").write_text("routes nowhere { }\n")
    assert lint(tmp_path, ".").returncode == 1


@pytest.mark.parametrize("where", ["end", "above"])
def test_inline_suppression_names_its_code(tree, where):
    line = "    retry { attempts 2  on [5xx] }"
    if where == "end":
        text = RETRYING.replace(line, line + "  # meshc: ignore[L0201]")
    else:
        text = RETRYING.replace(line, "    # meshc: ignore[W0501, L0201]\n" + line)
    (tree / "cart.mesh").write_text(text)
    assert lint(tree, ".").returncode == 0
    (tree / "cart.mesh").write_text(RETRYING.replace(line, line + "  # meshc: ignore[L0101]"))
    assert lint(tree, ".").returncode == 1  # another code does not hide this finding


def test_second_run_of_an_unchanged_tree_comes_from_the_cache(tree):
    from compiler.tooling.lint import lint_files
    from compiler.tooling.lint.config import LintConfig

    cwd = os.getcwd()
    os.chdir(tree)
    try:
        files = ["cart.mesh"]
        first, hit1 = lint_files(files, LintConfig())
        second, hit2 = lint_files(files, LintConfig())
        assert (hit1, hit2) == (False, True)
        assert [(d.code, d.message, d.span.location()) for d in first] == \
               [(d.code, d.message, d.span.location()) for d in second]
        os.utime("cart.mesh", (0, 0))           # pre-commit stash/restore: new mtime, same content
        assert lint_files(files, LintConfig())[1] is True
        (tree / "cart.mesh").write_text(RETRYING + "\n# edited\n")
        assert lint_files(files, LintConfig())[1] is False
        assert lint_files(files, LintConfig(ignore=("L0201",)))[1] is False  # another configuration
    finally:
        os.chdir(cwd)


def test_an_edit_to_an_imported_file_invalidates_the_cache(tmp_path):
    from compiler.tooling.lint import lint_files
    from compiler.tooling.lint.config import LintConfig

    (tmp_path / "policies.mesh").write_text("policy limits small {\n  connections 10\n}\n")
    (tmp_path / "main.mesh").write_text('import "policies.mesh"\n\nservice a {\n  port 80\n'
                                        '  endpoints ["10.0.0.1:80"]\n  limits small\n}\n')
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert [d.code for d in lint_files(["main.mesh"], LintConfig())[0]] == []
        assert lint_files(["main.mesh"], LintConfig())[1] is True
        (tmp_path / "policies.mesh").write_text("policy limits small {\n  connections 10\n}\n\n"
                                                "policy limits unused {\n  connections 1\n}\n")
        found, hit = lint_files(["main.mesh"], LintConfig())
        assert not hit and [d.code for d in found] == ["L0401"]
    finally:
        os.chdir(cwd)


def test_no_cache_writes_nothing(tree):
    lint(tree, "--no-cache", ".")
    assert not (tree / ".meshc_cache").exists()
    lint(tree, ".")
    assert (tree / ".meshc_cache" / ".gitignore").read_text().strip().endswith("*")


def test_unreachable_route_names_a_witness_request(tmp_path):
    (tmp_path / "r.mesh").write_text(textwrap.dedent("""\
        service api {
          port 8080
          subset v1 { endpoints ["10.0.0.1:8080"] }
          subset v2 { endpoints ["10.0.0.2:8080"] }
        }

        routes api {
          route all {
            match { path prefix "/api" }
            to api.v1
          }
          route users {
            match { path prefix "/api/users"  method POST  header "x-beta" present  query "v" regex "[0-9]+" }
            to api.v2
          }
        }
        """))
    proc = lint(tmp_path, "--format", "json", ".")
    [d] = json.loads(proc.stdout)["diagnostics"]
    assert d["code"] == "W0401"
    assert d["labels"][0]["message"] == ("route `all` already takes every request it would match, "
                                         "such as `POST /api/users?v=0` with `x-beta: 1`")
    assert d["labels"][0]["line"] == 8


def test_sarif_and_github_formats_work_for_lint(tree):
    log = json.loads(lint(tree, "--output-format", "sarif", ".").stdout)
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["L0201"]
    assert lint(tree, "--output-format", "github", ".").stdout.startswith("::warning title=meshc (L0201)")


def test_the_shipped_examples_are_lint_clean():
    proc = lint(ROOT, "--no-cache", "--format", "json", "examples")
    assert proc.returncode == 0, proc.stdout


def test_an_invalid_choice_is_not_guessed_by_the_lint_rules(tmp_path):
    """`escaped_slashes KEEP` is E0312 with the closest choice; L0302 (which warns under `keep`)
    treats the value as unknown instead of as `keep` or the default (issue 18)."""
    (tmp_path / "a.mesh").write_text(textwrap.dedent("""\
        service a {
          port 80
          endpoints ["10.0.0.1:80"]
          sidecar { escaped_slashes KEEP }
        }

        authorization a {
          default allow
          deny admin { path prefix "/api/admin" }
        }
        """))
    proc = lint(tmp_path, "--format", "json", "--no-cache", ".")
    # L0303 (a case-sensitive deny path) is not about the setting; L0302 must not be there
    (d,) = [d for d in json.loads(proc.stdout)["diagnostics"] if d["code"] != "L0303"]
    assert (d["code"], d["hint"]) == ("E0312", "did you mean `keep`?")
    (tmp_path / "a.mesh").write_text((tmp_path / "a.mesh").read_text().replace("KEEP", "keep"))
    proc = lint(tmp_path, "--format", "json", "--no-cache", ".")
    assert sorted(codes(proc)) == ["L0302", "L0303"]  # the rule itself works on the valid value


def test_lint_loads_neither_the_lowering_nor_the_ir_classes(tmp_path):
    """`meshc lint`'s rules reason with the settings as written (compiler/semantic/written.py),
    not with IR objects: loading the lowering and the IR's classes cost its start-up ~10 ms."""
    code = ("import sys\nfrom compiler.cli import main\n"
            f"code = main(['lint', '--no-cache', '--exit-zero', {os.path.join(ROOT, 'examples')!r}])\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('compiler.lower', 'compiler.ir.model', 'typing')))\n"
            "assert code == 0 and not bad, (code, bad)\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
