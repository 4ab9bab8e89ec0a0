"""`meshc diff` measured by mutation (docs/testing.md): each mutation operator of
tests/diff_mutations.py applied to the shipped examples (one site per operator and file;
`MESHC_DIFF_SITES=N`: up to N) and, in the full run, to generated policies must be detected (a
change reported, never "unknown"), and each behaviour-preserving edit must report no change. The
fast subset runs the examples: by default each operator at its first site in the first example it
applies to (every operator is proved once); with `MESHC_EQUIVALENCE=nightly`, at its first site in
every example. `MESHC_DIFF_MUTATIONS=N` adds N generated policies (tests/equivalence/policies.py)
and prints the figures."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from compiler.cli.diff_run import Side, compile_side, diff
from compiler.cli.inputs import expand_paths
from tests.diff_mutations import MUTATIONS, PRESERVING

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
# the policies without their tests (*_test.mesh): an edit that renames a route would break a test
POLICY_TESTS = shutil.ignore_patterns("*_test.mesh")
# the nightly profile applies each operator to every example, the default to the first it applies to
EVERY_FILE = os.environ.get("MESHC_EQUIVALENCE") == "nightly"


def _side(directory: str) -> Side:
    side = Side(directory, expand_paths([directory])[0])
    assert compile_side(side) == [], directory
    return side


def _variant(base: str, where: str, name: str, text: str) -> str | None:
    """A copy of `base` with `name`'s text replaced, compiled; None when the mutant does not compile."""
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(base, where, ignore=POLICY_TESTS)
    with open(os.path.join(where, name), "w") as f:
        f.write(text)
    side = Side(where, expand_paths([where])[0])
    return None if compile_side(side) else where


def run_operators(base: str, tmp: str, operators, limit: int = 2, every_file: bool = True) -> list[tuple]:
    """(file, operator, what, changed, unknown, mutant directory) for every mutant of every file of
    `base` that compiles (its policy tests left out: they are no policy to mutate); with
    `every_file` False, each operator only in the first file that gives a compiling mutant, the
    files tried from a different one for each operator (the k-th operator from the k-th file), so
    that the operators are spread over the files."""
    policies = os.path.join(tmp, "base")
    shutil.copytree(base, policies, ignore=POLICY_TESTS)
    base = policies
    old = _side(base)
    names = sorted(n for n in os.listdir(base) if n.endswith(".mesh"))
    texts = {}
    for name in names:
        with open(os.path.join(base, name)) as f:
            texts[name] = f.read()
    rows = []
    for k, op in enumerate(operators):
        for name in (names if every_file else names[k % len(names):] + names[:k % len(names)]):
            if not every_file and any(r[1] == op.__name__ for r in rows):
                break
            for i, (mutant, what) in enumerate(op(texts[name], limit)):
                where = _variant(base, os.path.join(tmp, f"{name}-{op.__name__}-{i}"), name, mutant)
                if where is None:
                    continue
                new = _side(where)
                result = diff(old, new)
                assert result.unreplayed == 0
                changed = bool(result.changes or result.settings)
                rows.append((name, op.__name__, what, changed, bool(result.unknown), where))
    return rows


def test_every_mutation_of_the_examples_is_detected(tmp_path):
    rows = run_operators(EXAMPLES, str(tmp_path), MUTATIONS, limit=int(os.environ.get("MESHC_DIFF_SITES", "1")),
                         every_file=EVERY_FILE)
    ops = {r[1] for r in rows}
    names = {op.__name__ for op in MUTATIONS}
    assert ops == names, f"operators that applied nowhere: {names - ops}"
    missed = [r for r in rows if not r[3] or r[4]]
    assert not missed, f"{len(missed)} of {len(rows)} mutants not detected: {missed}"


def test_no_behaviour_preserving_edit_of_the_examples_reports_a_change(tmp_path):
    rows = run_operators(EXAMPLES, str(tmp_path), PRESERVING, limit=int(os.environ.get("MESHC_DIFF_SITES", "1")),
                         every_file=EVERY_FILE)
    assert {r[1] for r in rows} == {op.__name__ for op in PRESERVING}
    false = [r for r in rows if r[3] or r[4]]
    assert not false, f"{len(false)} of {len(rows)} preserving edits reported a change: {false}"


class _Sampled:
    """A request of the equivalence suite's generator, as diff_run's decisions read one."""

    def __init__(self, r):
        self.method, self.target, self.headers = r.method, r.target, r.headers


def sampled_difference(old: Side, new: Side, reqs) -> str | None:
    """An independent check of an undetected mutant: requests the equivalence suite's generator
    aims at the sidecar `client` (tests/equivalence/policies.py, not built from the diff's regions),
    decided on both sides; the first whose outcome differs, or None."""
    from compiler.cli.diff_run import inbound, observable, outbound, sample_response, services_of

    for r in reqs:
        outs = []
        for side in (old, new):
            client = side.tables["client"]
            req = _Sampled(r)
            if r.kind == "outbound":
                dest = client.service_for_host(r.host)
                sample = sample_response(dest.name, [old, new]) if dest is not None else []
                o = outbound(client, r.host, req, sample)   # type: ignore[arg-type]
                up = o.pop("_up", None)
                if up is not None and dest is not None:
                    o.update(inbound(side.tables.get(dest.name), up, services_of(side)["client"], dest.mtls,
                                     r.host))
            else:
                head = f"{r.method} {r.target} HTTP/1.1\r\nhost: {r.host}\r\n".encode("latin-1")
                head += b"".join(n.encode() + b": " + v.encode("utf-8", "surrogateescape") + b"\r\n"
                                 for n, v in r.headers)
                o = inbound(client, head, r.caller, r.caller is not None, r.host)
            outs.append(observable(o))
        if outs[0] != outs[1]:
            return r.describe()
    return None


DEAD_CODES = ("W0401", "W0601")


def text_line(text: str, at: int) -> str:
    return text[text.rfind("\n", 0, at) + 1:text.find("\n", at)]


def why_equivalent(old: Side, new_dir: str) -> str:
    """Why an undetected mutant cannot change behaviour, from facts other than the diff's own
    search: the compiler's sound warnings that a route or rule never applies (W0401, W0601) at the
    mutated construct, a rule naming callers on a service with `mtls disable` (no caller has an
    identity there), a destination that no sidecar's scope routes to
    (compiler/ir/scope.py, as compiled into the native tables), a split with one target of
    positive weight. "unexplained" otherwise."""
    from tests.diff_mutations import routes_of

    base = old.files[0]
    with open(base) as f:
        a = f.read()
    with open(os.path.join(new_dir, os.path.basename(base))) as f:
        b = f.read()
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    line = a.count("\n", 0, at) + 1
    start, end = line, line
    for s, e, _ in routes_of(a):
        if s <= at < e:
            start, end = a.count("\n", 0, s) + 1, a.count("\n", 0, e) + 1
    comp = old.comp
    for d in comp.diagnostics:
        if d.code in DEAD_CODES and d.span is not None:
            dline = d.span.source.line_col(d.span.start)[0]
            if start <= dline <= end:
                return f"the compiler proves it dead ({d.code})"
    auth = a.rfind("\nauthorization ", 0, at)
    if auth >= 0 and a.rfind("\nroutes ", 0, at) < auth and "from " in text_line(a, at) and old.ir is not None:
        svc = old.ir.service(a[auth + 15:a.index(" ", auth + 15)])
        if svc.mtls.mode == "disable":
            return "a rule naming callers on a service that takes no identity (mtls disable, W0604)"
    head = a.rfind("\nroutes ", 0, at)
    if head >= 0 and a.rfind("\nauthorization ", 0, at) < head:
        dest = a[head + 8:a.index(" ", head + 8)]
        if not any(t.service_for_host(dest) is not None for t in old.tables.values()):
            return "a destination no sidecar's scope routes to"
    text = text_line(a, at)
    if "split {" in text and len([w for w in re.findall(r"\s([0-9]+)", text.split("}")[0]) if int(w) > 0]) == 1:
        return "a split with one target of positive weight"
    return "unexplained"


@pytest.mark.skipif(not os.environ.get("MESHC_DIFF_MUTATIONS"), reason="the full run: MESHC_DIFF_MUTATIONS=N")
def test_mutations_of_generated_policies(tmp_path):
    import warnings

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.equivalence.policies import policies, requests

    count = int(os.environ["MESHC_DIFF_MUTATIONS"])
    drawn: list = []

    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(policies())
    def draw(policy):
        drawn.append(policy)

    draw()
    tally = {"mutants": 0, "detected": 0, "unknown": 0, "undetected": 0, "undetected_but_sampled_different": 0,
             "preserving": 0, "false": 0}
    by_op: dict[str, list[int]] = {}
    reasons: dict[str, int] = {}
    misses: list = []
    for n, policy in enumerate(drawn):
        base = os.path.join(str(tmp_path), f"p{n}")
        os.makedirs(base)
        with open(os.path.join(base, "policy.mesh"), "w") as f:
            f.write(policy.render(policy.dummy_ports()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reqs = [r for _ in range(4)
                    for r in st.lists(requests(policy, live=False), min_size=50, max_size=50).example()]
        old = _side(base)
        for r in run_operators(base, os.path.join(str(tmp_path), f"m{n}"), MUTATIONS):
            tally["mutants"] += 1
            counts = by_op.setdefault(r[1], [0, 0, 0])
            counts[0] += 1
            if r[3]:
                tally["detected"] += 1
                counts[1] += 1
                continue
            tally["unknown"] += r[4]
            tally["undetected"] += 1
            why = why_equivalent(old, r[5])
            reasons[why] = reasons.get(why, 0) + 1
            witness = sampled_difference(old, _side(r[5]), reqs)
            if witness is not None:
                tally["undetected_but_sampled_different"] += 1
                counts[2] += 1
                misses.append((n, r, witness))
        for r in run_operators(base, os.path.join(str(tmp_path), f"e{n}"), PRESERVING):
            tally["preserving"] += 1
            if r[3] or r[4]:
                tally["false"] += 1
                misses.append((n, r, "a preserving edit reported a change"))
        print(f"policy {n}: {tally}", flush=True)
    print(f"\nmeshc diff mutation run over {len(drawn)} generated policies: {tally}")
    print("per operator (mutants, detected, undetected but a sampled request differs):", by_op)
    print("undetected mutants, why they cannot change behaviour (facts other than the diff's):", reasons)
    for m in misses[:40]:
        print("  missed:", m)
    assert tally["false"] == 0 and tally["undetected_but_sampled_different"] == 0
