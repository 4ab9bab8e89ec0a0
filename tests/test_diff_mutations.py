"""`meshc diff` measured by mutation (docs/testing-diff.md): each mutation operator of
tests/diff_mutations.py applied to the shipped examples (one site per operator and file;
`MESHC_DIFF_SITES=N`: up to N) and, in the full run, to generated policies must be detected (a
change reported, never "unknown"), and each behaviour-preserving edit must report no change. The
fast subset runs the examples; `MESHC_DIFF_MUTATIONS=N` adds N generated policies
(tests/equivalence/policies.py) and prints the figures."""

from __future__ import annotations

import os
import shutil

import pytest

from compiler.cli.diff_run import Side, compile_side, diff
from compiler.cli.inputs import expand_paths
from tests.diff_mutations import MUTATIONS, PRESERVING

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def _side(directory: str) -> Side:
    side = Side(directory, expand_paths([directory])[0])
    assert compile_side(side) == [], directory
    return side


def _variant(base: str, where: str, name: str, text: str) -> str | None:
    """A copy of `base` with `name`'s text replaced, compiled; None when the mutant does not compile."""
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(base, where)
    with open(os.path.join(where, name), "w") as f:
        f.write(text)
    side = Side(where, expand_paths([where])[0])
    return None if compile_side(side) else where


def run_operators(base: str, tmp: str, operators, limit: int = 2) -> list[tuple]:
    """(file, operator, what, changed, unknown, mutant directory) for every mutant of every file of
    `base` that compiles."""
    old = _side(base)
    rows = []
    for name in sorted(os.listdir(base)):
        if not name.endswith(".mesh"):
            continue
        with open(os.path.join(base, name)) as f:
            text = f.read()
        for op in operators:
            for i, (mutant, what) in enumerate(op(text, limit)):
                where = _variant(base, os.path.join(tmp, f"{name}-{op.__name__}-{i}"), name, mutant)
                if where is None:
                    continue
                new = _side(where)
                result = diff(old, new)
                assert result.unreplayed == 0
                rows.append((name, op.__name__, what, bool(result.changes), bool(result.unknown), where))
    return rows


def test_every_mutation_of_the_examples_is_detected(tmp_path):
    rows = run_operators(EXAMPLES, str(tmp_path), MUTATIONS, limit=int(os.environ.get("MESHC_DIFF_SITES", "1")))
    ops = {r[1] for r in rows}
    names = {op.__name__ for op in MUTATIONS}
    assert ops == names, f"operators that applied nowhere: {names - ops}"
    missed = [r for r in rows if not r[3] or r[4]]
    assert not missed, f"{len(missed)} of {len(rows)} mutants not detected: {missed}"


def test_no_behaviour_preserving_edit_of_the_examples_reports_a_change(tmp_path):
    rows = run_operators(EXAMPLES, str(tmp_path), PRESERVING)
    assert {r[1] for r in rows} == {op.__name__ for op in PRESERVING}
    false = [r for r in rows if r[3] or r[4]]
    assert not false, f"{len(false)} of {len(rows)} preserving edits reported a change: {false}"


@pytest.mark.skipif(not os.environ.get("MESHC_DIFF_MUTATIONS"), reason="the full run: MESHC_DIFF_MUTATIONS=N")
def test_mutations_of_generated_policies(tmp_path):
    from hypothesis import HealthCheck, given, settings

    from tests.equivalence.policies import policies

    count = int(os.environ["MESHC_DIFF_MUTATIONS"])
    tally = {"mutants": 0, "detected": 0, "unknown": 0, "preserving": 0, "false": 0}
    misses: list = []
    seen = [0]

    @settings(max_examples=count, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(policies())
    def one(policy):
        seen[0] += 1
        base = os.path.join(str(tmp_path), f"p{seen[0]}")
        os.makedirs(base)
        with open(os.path.join(base, "policy.mesh"), "w") as f:
            f.write(policy.render(policy.dummy_ports()))
        for r in run_operators(base, os.path.join(str(tmp_path), f"m{seen[0]}"), MUTATIONS):
            tally["mutants"] += 1
            tally["detected"] += r[3]
            tally["unknown"] += r[4] and not r[3]
            if not r[3]:
                misses.append((seen[0], r))
        for r in run_operators(base, os.path.join(str(tmp_path), f"e{seen[0]}"), PRESERVING):
            tally["preserving"] += 1
            tally["false"] += r[3] or r[4]
            if r[3] or r[4]:
                misses.append((seen[0], r))
        print(f"policy {seen[0]}: {tally}", flush=True)

    one()
    print(f"\nmeshc diff mutation run over {seen[0]} generated policies: {tally}")
    for m in misses[:40]:
        print("  not detected (or a false change):", m)
    assert tally["false"] == 0
