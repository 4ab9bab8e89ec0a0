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


def test_wheel_contains_the_compiler_packages(names):
    for module in ("compiler/cli/__init__.py", "compiler/syntax/parse.py", "compiler/semantic/checks/routes.py",
                   "compiler/__main__.py"):
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
