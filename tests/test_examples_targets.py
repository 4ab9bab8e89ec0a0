"""The example set and its targets (issue 17).

- `examples/*.mesh` is what a team on any target writes: each compiles to the Envoy and native
  targets (tests/test_envoy_golden.py, tests/test_native_golden.py), and to `--target istio` and
  `--target gateway-api --channel experimental` with no error, every object validated against the
  vendored CRDs and their CEL rules (here; the goldens of tests/test_istio.py and
  tests/test_gateway_api.py hold the bytes). The standard channel refuses only their retries (E0944).
- `examples/envoy-native/*.mesh` shows what only the Envoy and native planes carry exactly (a
  prefix redirect, a direct response, a fault, case-insensitive and regex authorization paths):
  each compiles to Envoy (checked by a real `envoy --mode validate`) and to the native proxy's
  configuration (checked by its loader), its policy tests pass in both planes
  (tests/test_policy_tests.py walks the whole directory), and each of its constructs gets its
  Kubernetes diagnostic, at the construct's line, in each Kubernetes target.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from compiler import api
from compiler.backends.base import Options
from tests.envoy_support import flat_files, requires_envoy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.mesh") if not p.stem.endswith("_test"))
ENVOY_NATIVE = sorted(p.stem for p in (ROOT / "examples" / "envoy-native").glob("*.mesh")
                      if not p.stem.endswith("_test"))
KUBE = (("istio", None), ("gateway-api", "experimental"))

# Each construct of examples/envoy-native/ with the error (or, where the target leaves the whole
# construct to another object, the warning) each Kubernetes target gives it: (code, the name the
# message holds, the line of the construct in the file).
EXPECTED = {
    "edge": {
        "istio": {("E0910", "old_links", 21)},                  # HTTPRedirect replaces the whole path
        "gateway-api": {("E0954", "removed_widget", 25)},        # no direct response in HTTPRoute
    },
    "game-day": {
        "istio": set(),                                         # VirtualService `fault` is exact
        "gateway-api": {("E0945", "chaos", 16)},                 # no fault injection in HTTPRoute
    },
    "legacy-billing": {
        "istio": {("E0906", "admin", 20), ("E0906", "checkout", 21),   # AP paths are case-sensitive
                  ("E0905", "finance_reads", 26)},                     # AP has no regex
        "gateway-api": {("W0945", "billing", 17)},               # authorization is not an HTTPRoute's
    },
}


def compiled(path: str):
    with contextlib.chdir(ROOT):
        comp = api.compile([path])
    assert not comp.has_errors, [d.message for d in comp.diagnostics]
    return comp


def emit(comp, target: str, channel: str | None):
    with contextlib.chdir(ROOT):
        return comp.emit(target, None, Options(channel=channel) if channel else None)


def test_the_example_sets_are_the_expected_ones():
    assert {"canary", "resilience", "shop", "zero-trust"} <= set(EXAMPLES)
    assert sorted(EXPECTED) == ENVOY_NATIVE
    for case in ENVOY_NATIVE:
        assert (ROOT / "examples" / "envoy-native" / f"{case}_test.mesh").is_file(), case


@pytest.mark.parametrize("case", EXAMPLES)
def test_every_example_compiles_to_both_kubernetes_targets_and_validates(case):
    comp = compiled(f"examples/{case}.mesh")
    for target, channel in KUBE:
        emitted = emit(comp, target, channel)
        errors = [(d.code, d.message) for d in emitted.diagnostics if d.severity == "error"]
        assert errors == [] and emitted.files, (case, target, errors)
        # validated (schema and CEL) by compile before anything is written (compiler/api.py
        # `validate_kube`): every object of the files, none refused
        report = emitted.validation
        assert report is not None and report.ok, [str(p) for p in report.problems]
        assert report.objects == sum(len(_load(data)) for data in emitted.files.values())
        assert report.rule_evaluations > 0
    # the standard channel's HTTPRoute has no `retry`: the examples' retries are its only refusal
    standard = emit(comp, "gateway-api", "standard")
    assert {d.code for d in standard.diagnostics if d.severity == "error"} <= {"E0944"}


def _load(data: bytes) -> list[dict]:
    from compiler.backends.kube.objects import load

    return list(load(data))


@pytest.mark.parametrize("case", ENVOY_NATIVE)
def test_each_envoy_native_construct_gets_its_kubernetes_diagnostic(case):
    comp = compiled(f"examples/envoy-native/{case}.mesh")
    path = f"examples/envoy-native/{case}.mesh"
    for target, channel in KUBE:
        emitted = emit(comp, target, channel)
        expected = EXPECTED[case][target]
        codes = {code for code, _, _ in expected}
        found = {(d.code, d.span.start_line_col()[0]) for d in emitted.diagnostics
                 if d.span is not None and d.span.path == path and (d.severity == "error" or d.code in codes)}
        assert found == {(code, line) for code, _, line in expected}, (case, target, found)
        for code, name, _ in expected:
            assert any(d.code == code and f"`{name}`" in d.message for d in emitted.diagnostics), (code, name)
        has_error = any(code.startswith("E") for code, _, _ in expected)
        assert emitted.has_errors == has_error and bool(emitted.files) == (not has_error), (case, target)


@pytest.mark.parametrize("case", ENVOY_NATIVE)
def test_the_envoy_native_examples_compile_for_the_native_proxy(case, tmp_path):
    from runtime_proxy.config.loading import check_with_schema, load

    comp = compiled(f"examples/envoy-native/{case}.mesh")
    emitted = emit(comp, "native", None)
    assert not emitted.diagnostics and emitted.files
    for name, data in emitted.files.items():
        path = tmp_path / name
        path.write_bytes(data)
        load(path)   # the proxy's own loader: raises on a configuration it would refuse
        assert check_with_schema(path) == [], name


@requires_envoy
def test_the_envoy_native_examples_pass_envoy_validate(tmp_path):
    """Every sidecar of every file, as one static bootstrap per file (the layout of
    tests/test_envoy_validate.py), through a real `envoy --mode validate`."""
    from tests.test_envoy_validate import fleet, sidecars, validate_all, write

    paths = []
    for case in ENVOY_NATIVE:
        comp = compiled(f"examples/envoy-native/{case}.mesh")
        out = tmp_path / case
        emitted = comp.emit("envoy", [s.name for s in comp.ir.services], Options(output_dir=str(out)))
        assert not emitted.diagnostics
        for rel, data in flat_files(emitted).items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
        paths.append(write(tmp_path / f"{case}.fleet.json", fleet(out, sidecars(out))))
    validate_all(paths)
