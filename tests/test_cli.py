"""The `meshc` command line, run as a real subprocess (`python -m compiler`) from the repository root.

Exit codes: 0 ok (warnings allowed), 1 input errors, 2 usage or I/O error, 3 internal error.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from compiler import __version__

ROOT = Path(__file__).resolve().parent.parent
DIAG = "tests/diagnostics"
BAD = f"{DIAG}/unknown_subset.mesh"               # input errors (E0203), no warning
WARNINGS_ONLY = f"{DIAG}/retries_without_budget.mesh"  # one warning, no error


def meshc(*args: str, cwd: Path = ROOT, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MESHC_DEBUG", "NO_COLOR")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-m", "compiler", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    return proc


# ---- version and help ------------------------------------------------------------------------

def test_version():
    proc = meshc("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"meshc {__version__}"


@pytest.mark.parametrize("command", [[], ["check"], ["compile"], ["serve"]], ids=["top", "check", "compile", "serve"])
def test_help(command):
    proc = meshc(*command, "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"usage: meshc {command[0]}" if command else "usage: meshc")
    assert proc.stderr == ""
    if not command:
        assert "check" in proc.stdout and "compile" in proc.stdout


def test_no_command_prints_help_and_exits_2():
    proc = meshc()
    assert proc.returncode == 2
    assert "usage: meshc" in proc.stderr


# ---- exit codes ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, code, stderr_part", [
    (["check", "examples"], 0, ""),
    (["compile", "examples/shop.mesh", "examples/zero-trust.mesh"], 0, ""),
    (["check", WARNINGS_ONLY], 0, "warning[W0502]"),
    (["check", BAD], 1, "error[E0203]"),
    (["compile", BAD], 1, "error[E0203]"),
    (["check", "no/such/file.mesh"], 2, "meshc: error: no such file or directory: no/such/file.mesh"),
    (["check", "examples", "missing.mesh"], 2, "no such file or directory: missing.mesh"),
    (["check", "grammar"], 2, "meshc: error: no .mesh files found in grammar"),
    (["check", "--bogus", "examples"], 2, "unrecognized arguments: --bogus"),
    (["compile", "--emit", "bytecode", "examples"], 2, "invalid choice: 'bytecode'"),
    (["check"], 2, "the following arguments are required: FILES"),
    (["frobnicate", "examples"], 2, "invalid choice: 'frobnicate'"),
], ids=["ok", "compile-ok", "warnings-only", "input-error", "compile-input-error", "missing-file",
        "one-missing-among-good", "no-mesh-files", "bad-option", "bad-choice", "no-files", "bad-command"])
def test_exit_codes(args, code, stderr_part):
    proc = meshc(*args)
    assert proc.returncode == code, proc.stderr
    assert stderr_part in proc.stderr
    if code == 2:
        assert proc.stdout == ""
        assert proc.stderr.strip().splitlines()[-1].startswith("meshc: error: "), "a one-line reason, last"


def test_warnings_only_compile_succeeds():
    proc = meshc("compile", WARNINGS_ONLY, "--emit", "ir")
    assert proc.returncode == 0
    assert "warning[W0502]" in proc.stderr
    assert json.loads(proc.stdout)["schema_version"] == 3


def test_empty_directory_is_a_usage_error(tmp_path):
    proc = meshc("check", str(tmp_path))
    assert proc.returncode == 2
    assert "no .mesh files found" in proc.stderr


# ---- --format json ---------------------------------------------------------------------------

def test_json_format_is_valid_json_with_locations():
    proc = meshc("check", "--format", "json", DIAG)  # every diagnostics case at once, as one program
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    diags = data["diagnostics"]
    assert len(diags) > 50
    assert data["summary"] == {"errors": sum(d["severity"] == "error" for d in diags),
                               "warnings": sum(d["severity"] == "warning" for d in diags)}
    for d in diags:
        assert {"code", "severity", "message", "file", "line", "column"} <= d.keys()
        assert d["severity"] in ("error", "warning")
        assert isinstance(d["message"], str) and d["message"]
        assert d["file"].startswith(DIAG + "/")
        if d["line"] is not None:
            assert isinstance(d["line"], int) and isinstance(d["column"], int) and d["line"] >= 1 and d["column"] >= 1
    assert any(d["line"] is None for d in diags)  # the file that cannot be read has no position
    assert "error[" not in proc.stderr and "warning[" not in proc.stderr  # diagnostics go to stdout only


def test_compile_json_diagnostics_stay_off_the_ir_stream(tmp_path):
    """`compile` prints the IR on stdout, so JSON diagnostics go to stderr there; with `-o` they
    go to stdout like `check`'s."""
    proc = meshc("compile", "--format", "json", WARNINGS_ONLY)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["schema_version"] == 3
    assert [d["code"] for d in json.loads(proc.stderr)["diagnostics"]] == ["W0502"]
    proc = meshc("compile", "--format", "json", BAD)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert json.loads(proc.stderr)["summary"]["errors"] == 2
    proc = meshc("compile", "--format", "json", WARNINGS_ONLY, "-o", str(tmp_path))
    assert proc.returncode == 0
    assert [d["code"] for d in json.loads(proc.stdout)["diagnostics"]] == ["W0502"]
    assert proc.stderr.startswith("meshc: wrote ")


def test_json_format_matches_the_golden():
    proc = meshc("check", "--format", "json", BAD)
    assert proc.returncode == 1
    assert proc.stdout == (ROOT / DIAG / "unknown_subset.json").read_text(encoding="utf-8")


def test_human_format_matches_the_golden():
    proc = meshc("check", "--color", "never", BAD)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (ROOT / DIAG / "unknown_subset.txt").read_text(encoding="utf-8")


def test_color_always_uses_ansi_escapes():
    proc = meshc("check", "--color", "always", BAD)
    assert proc.returncode == 1
    assert "\x1b[1;31merror[E0203]" in proc.stderr


def test_invalid_regex_output_has_no_library_noise():
    proc = meshc("check", "--color", "never", f"{DIAG}/invalid_re2_regex.mesh")
    assert proc.returncode == 1
    assert proc.stderr == (ROOT / DIAG / "invalid_re2_regex.txt").read_text(encoding="utf-8")


# ---- writing outputs -------------------------------------------------------------------------

def test_compile_writes_ir_into_the_output_directory(tmp_path):
    out = tmp_path / "out" / "nested"
    proc = meshc("compile", "examples", "--emit", "ir", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["mesh.ir.json"], "no temporary files left behind"
    written = (out / "mesh.ir.json").read_text(encoding="utf-8")
    assert written == (ROOT / "tests/golden/ir/all-examples.json").read_text(encoding="utf-8")
    assert f"meshc: wrote {out / 'mesh.ir.json'} (16 services," in proc.stderr


def test_compile_writes_yaml_when_asked(tmp_path):
    import yaml

    proc = meshc("compile", "examples", "--ir-format", "yaml", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.ir.yaml"]
    data = yaml.safe_load((tmp_path / "mesh.ir.yaml").read_text(encoding="utf-8"))
    assert data == json.loads((ROOT / "tests/golden/ir/all-examples.json").read_text(encoding="utf-8"))


def test_input_error_writes_nothing_and_keeps_existing_output(tmp_path):
    existing = tmp_path / "mesh.ir.json"
    existing.write_text('{"previous": true}\n', encoding="utf-8")
    os.utime(existing, (1_000_000_000, 1_000_000_000))
    fresh = tmp_path / "fresh"
    for out in (tmp_path, fresh):
        proc = meshc("compile", BAD, "-o", str(out))
        assert proc.returncode == 1
        assert "wrote" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.ir.json"], "no new file, no temporary file"
    assert existing.read_text(encoding="utf-8") == '{"previous": true}\n'
    assert existing.stat().st_mtime == 1_000_000_000
    assert not fresh.exists(), "the output directory is not even created"


def test_unwritable_output_is_an_io_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    proc = meshc("compile", "examples/shop.mesh", "-o", str(blocker))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"meshc: error: cannot write to {blocker}")
    assert blocker.read_text(encoding="utf-8") == "not a directory"


def test_output_file_has_ordinary_permissions(tmp_path):
    proc = meshc("compile", "examples/shop.mesh", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "mesh.ir.json").stat().st_mode) == 0o666 & ~umask


# ---- bad input never gives a traceback ---------------------------------------------------------

def test_bad_inputs_give_diagnostics_not_tracebacks(tmp_path):
    (tmp_path / "binary.mesh").write_bytes(bytes(range(256)))
    (tmp_path / "nul.mesh").write_text("service a {\0}\n", encoding="utf-8")
    (tmp_path / "deep.mesh").write_text("service a {" * 200, encoding="utf-8")
    (tmp_path / "junk.mesh").write_text("}{][\"\\\n@@@ ;;; ===\n" * 20, encoding="utf-8")
    (tmp_path / "dir.mesh").mkdir()  # a directory that looks like a file: searched, not read
    for args in (["check", str(tmp_path)], ["compile", str(tmp_path), "-o", str(tmp_path / "out")],
                 ["check", "--format", "json", str(tmp_path)], ["compile", DIAG]):
        proc = meshc(*args)  # asserts that there is no traceback
        assert proc.returncode == 1, proc.stderr
    assert not (tmp_path / "out").exists()


# ---- internal errors ---------------------------------------------------------------------------

INTERNAL_ERROR_SCRIPT = textwrap.dedent("""
    import sys
    import compiler.lower

    def boom(ctx):
        raise RuntimeError("lowering exploded")

    compiler.lower.lower_program = boom
    from compiler.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def run_internal_error(*args: str, debug: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    if debug:
        env["MESHC_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-c", INTERNAL_ERROR_SCRIPT, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_internal_error_gives_a_short_report(tmp_path):
    proc = run_internal_error("compile", "examples/shop.mesh", "-o", str(tmp_path))
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "meshc: internal error: RuntimeError: lowering exploded"
    assert "examples/shop.mesh" in lines[1] and lines[1].lstrip().startswith("inputs:")
    assert "MESHC_DEBUG=1" in proc.stderr and __version__ in proc.stderr
    assert len(lines) <= 4
    assert list(tmp_path.iterdir()) == [], "nothing is written"


def test_internal_error_with_debug_shows_the_traceback():
    proc = run_internal_error("compile", "examples/shop.mesh", debug=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "lowering exploded" in proc.stderr


def test_check_does_not_lower():
    proc = run_internal_error("check", "examples/shop.mesh")
    assert proc.returncode == 0, proc.stderr


# ---- issue 18: diagnostics a new user hit, through the command line ----------------------------

@pytest.mark.parametrize("case", ["invalid_mtls_mode_is_not_guessed", "misspelt_item_after_item", "number_too_large",
                                  "control_character"])
def test_issue_18_cases_print_their_golden(case):
    """One diagnostic per mistake, no invented value (18.15-18.18): what `meshc check` prints."""
    proc = meshc("check", "--color", "never", f"{DIAG}/{case}.mesh")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (ROOT / DIAG / f"{case}.txt").read_text(encoding="utf-8")


def test_invalid_mtls_mode_gives_no_plaintext_warning():
    proc = meshc("check", "--format", "json", f"{DIAG}/invalid_mtls_mode_is_not_guessed.mesh")
    diags = json.loads(proc.stdout)["diagnostics"]
    assert [d["code"] for d in diags] == ["E0312", "E0312"]
    assert diags[0]["hint"].startswith("did you mean `strict`?")


def test_misspelt_item_gives_no_cascade():
    proc = meshc("check", "--format", "json", f"{DIAG}/misspelt_item_after_item.mesh")
    (d,) = json.loads(proc.stdout)["diagnostics"]
    assert d["code"] == "E0101" and d["hint"] == "did you mean `service`?"
    assert "expected `assert`, `authorization`" in d["message"]


def test_number_too_large_is_one_diagnostic_per_token():
    proc = meshc("check", "--format", "json", f"{DIAG}/number_too_large.mesh")
    diags = json.loads(proc.stdout)["diagnostics"]
    assert len(diags) == len({(d["line"], d["column"]) for d in diags}) == 5
    assert [d["code"] for d in diags] == ["E0302"] * 4 + ["E0303"]
    assert [d["line"] for d in diags if "18446744073709551616" in d["message"]] == [6, 6]  # where it was written
    proc = meshc("compile", "--emit", "ast", f"{DIAG}/number_too_large.mesh")  # parse only: reported, no crash
    assert proc.returncode == 1 and "E0302" in proc.stderr


@pytest.mark.parametrize("fmt", ["human", "json", "sarif", "github"])
def test_control_characters_are_escaped_in_every_format(fmt):
    proc = meshc("check", "--color", "never", "--format", fmt, f"{DIAG}/control_character.mesh")
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "\x01" not in out and "\x1b" not in out
    if fmt in ("json", "sarif"):
        out = json.dumps(json.loads(proc.stdout), ensure_ascii=False).replace("\\\\", "\\")  # the text, unquoted
    assert "unexpected character `\\x01` (U+0001)" in out and "`web\\x1b[2J`" in out


# ---- the summary line of a successful check or lint (issue 18.19) ---------------------------------

def test_check_success_prints_one_summary_line_on_stdout():
    proc = meshc("check", "examples")
    assert proc.returncode == 0
    # 5 policies and their 5 test files, and the 3 of examples/envoy-native/ and their tests
    assert proc.stdout == "meshc: checked 16 files, 16 services, proved 7 of 7 asserts: all checks passed\n"
    assert proc.stderr == ""
    proc = meshc("check", "examples/shop.mesh")  # its import from the standard library is not counted
    assert proc.stdout == "meshc: checked 1 file, 7 services: all checks passed\n"


def test_check_with_warnings_only_counts_them_in_the_summary():
    proc = meshc("check", "--color", "never", WARNINGS_ONLY)
    assert proc.returncode == 0
    assert proc.stdout == "meshc: checked 1 file, 2 services: no errors, 1 warning\n"
    assert proc.stderr == (ROOT / DIAG / "retries_without_budget.txt").read_text(encoding="utf-8")


def test_check_with_errors_has_no_success_line():
    proc = meshc("check", "--color", "never", "--exit-zero", BAD)
    assert proc.returncode == 0 and proc.stdout == ""
    assert proc.stderr.endswith("meshc: 2 errors, 0 warnings\n")


def test_quiet_prints_the_diagnostics_only():
    proc = meshc("check", "--quiet", "examples")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    proc = meshc("check", "-q", "--color", "never", WARNINGS_ONLY)
    assert proc.returncode == 0 and proc.stdout == ""
    golden = (ROOT / DIAG / "retries_without_budget.txt").read_text(encoding="utf-8")
    assert proc.stderr == golden.removesuffix("meshc: 0 errors, 1 warning\n")
    proc = meshc("lint", "-q", "--no-cache", "examples")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


@pytest.mark.parametrize("fmt", ["json", "sarif", "github"])
@pytest.mark.parametrize("command", ["check", "lint"])
def test_machine_formats_have_no_summary_line(command, fmt):
    proc = meshc(command, "--format", fmt, "--no-cache", "examples") if command == "lint" else \
        meshc(command, "--format", fmt, "examples")
    assert proc.returncode == 0 and proc.stderr == ""
    if fmt == "github":
        assert proc.stdout == ""
    else:
        json.loads(proc.stdout)  # the whole of standard output is the document


def test_lint_success_prints_the_summary_from_the_cache_too(tmp_path):
    (tmp_path / "a.mesh").write_text('service a {\n  port 80\n  endpoints ["10.0.0.1:80"]\n}\n')
    (tmp_path / "b.mesh").write_text('import "a.mesh"\nservice b {\n  port 80\n  endpoints ["10.0.0.1:81"]\n}\n')
    for _ in range(2):  # computed, then served by .meshc_cache/
        proc = meshc("lint", "b.mesh", cwd=tmp_path)
        assert proc.returncode == 0 and proc.stderr == ""
        assert proc.stdout == "meshc: linted 2 files, 2 services: all checks passed\n"
    assert (tmp_path / ".meshc_cache").is_dir()


@pytest.mark.parametrize("fmt", ["human", "github"])
def test_control_characters_in_a_file_name_are_escaped(tmp_path, fmt):
    (tmp_path / "a\x1b[2J.mesh").write_text('service a {\n  port 0\n  endpoints ["127.0.0.1:1"]\n}\n')
    proc = meshc("check", "--color", "never", "--format", fmt, str(tmp_path))
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "\x1b" not in out and "a\\x1b[2J.mesh" in out
