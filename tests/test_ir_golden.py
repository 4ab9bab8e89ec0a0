"""Golden tests of the IR: every example alone, and the whole examples/ directory as one program.

The goldens are `tests/golden/ir/NAME.json` (NAME is the example's file name without `.mesh`) and
`tests/golden/ir/all-examples.json` for `meshc compile examples/`. They hold exactly what
`meshc compile FILE --emit ir` prints, compiled from the repository root so that the `source`
locations are stable. `pytest --update-goldens` rewrites them and deletes orphaned ones.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compiler import api

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / "tests" / "golden" / "ir"
WHOLE = "all-examples"

# the example policies, not their tests (*_test.mesh)
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.mesh") if not p.stem.endswith("_test"))
CASES = EXAMPLES + [WHOLE]


def inputs(case: str) -> list[str]:
    return ["examples"] if case == WHOLE else [f"examples/{case}.mesh"]


def compile_case(case: str):
    from compiler.cli.inputs import expand_paths

    with contextlib.chdir(ROOT):
        files, missing = expand_paths(inputs(case))
        assert not missing
        return api.compile(files)


@functools.cache
def ir_text(case: str) -> str:
    result = compile_case(case)
    assert result.diagnostics == [], f"examples compile clean: {[d.message for d in result.diagnostics]}"
    return result.ir_json().decode("utf-8")


def run_cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "compiler", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_there_are_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("case", CASES)
def test_ir_golden(case, update_goldens):
    text = ir_text(case)
    path = GOLDEN_DIR / f"{case}.json"
    if update_goldens:
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"missing golden {path.relative_to(ROOT)}: run `pytest --update-goldens`"
    assert text == path.read_text(encoding="utf-8"), \
        f"{path.relative_to(ROOT)} differs (run `pytest --update-goldens` and review the diff)"


def test_no_orphaned_ir_goldens(update_goldens):
    orphans = sorted(p for p in GOLDEN_DIR.glob("*") if p.is_file() and p.stem not in CASES) \
        if GOLDEN_DIR.exists() else []
    if update_goldens:
        for p in orphans:
            p.unlink()
        return
    assert not orphans, f"IR goldens without an example (run `pytest --update-goldens`): {[p.name for p in orphans]}"


@pytest.mark.parametrize("case", CASES)
def test_ir_is_well_formed(case):
    data = json.loads(ir_text(case))
    assert data["schema_version"] == 3
    names = [s["name"] for s in data["services"]]
    assert names == sorted(set(names)), "services are unique and sorted by name"
    for svc in data["services"]:
        assert svc["routes"], f"service {svc['name']} has routes"
        for where in [svc, *svc["subsets"], *svc["routes"]]:
            source = where["source"]
            assert source["file"].startswith(("examples/", "<std>/")) and source["line"] >= 1, source


def test_whole_program_holds_every_service_of_every_example():
    whole = {s["name"] for s in json.loads(ir_text(WHOLE))["services"]}
    for case in EXAMPLES:
        # (a name another example declares in another namespace is NAMESPACE/NAME in the whole program)
        alone = {s["name"] if s["name"] in whole else f'{s["namespace"]}/{s["name"]}'
                 for s in json.loads(ir_text(case))["services"]}
        assert alone <= whole, case


def test_cli_output_matches_in_process_output():
    proc = run_cli("compile", "examples/canary.mesh", "--emit", "ir")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ir_text("canary")


def test_compilation_is_deterministic():
    """The same bytes in process, and across processes with different hash seeds (set and dict order)."""
    first = compile_case(WHOLE)
    second = compile_case(WHOLE)
    assert first.ir_json() == second.ir_json()
    runs = [run_cli("compile", "examples", "--emit", "ir", env_extra={"PYTHONHASHSEED": seed}) for seed in ("1", "2")]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    assert runs[0].stdout.encode() == runs[1].stdout.encode() == ir_text(WHOLE).encode()


@pytest.mark.parametrize("case", CASES)
def test_yaml_form_parses_to_the_same_data(case):
    result = compile_case(case)
    from_yaml = yaml.safe_load(result.ir_yaml())
    assert from_yaml == json.loads(result.ir_json())
