"""What meshc reads, and how deep and long a program may be (issue 18, points 10-12), through the
real command line: `python -m compiler` as a subprocess with a timeout, so that a hang fails the
test instead of hanging CI.

- Only regular files, at most 64 MiB each (E0107): `import "/dev/zero"` and an import of a FIFO
  are refused at the `import` without reading or blocking; a device or FIFO named on the command
  line is a usage error; a file over the limit, given or imported, is E0107; the same rules for
  `meshc fmt`, `meshc lint` and the language server (tests/test_lsp.py).
- An import chain deeper than Python's recursion limit loads (no RecursionError, exit 3), with
  the same order and cycle diagnostics as before.
- Declared names and namespaces are at most 63 characters (E0210 at `check`), so `compile`
  never fails writing a file named after one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compiler import api
from compiler.core import source
from compiler.core.diagnostics import Collector
from compiler.semantic.program import load_program

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60  # seconds: every command here ends in about one; a read of /dev/zero never would

SERVICE = 'service payments {\n  port 9000\n  endpoints ["10.0.0.1:9000"]\n}\n'


def meshc(*args: str, cwd: Path, stdin=None, env_extra: dict[str, str] | None = None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "compiler", *args], cwd=cwd, env=env, stdin=stdin,
                          capture_output=True, text=True, timeout=TIMEOUT)


def output_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


COMMANDS = {
    "check": ["check"],
    "compile": ["compile", "-o", "out"],
    "compile-envoy": ["compile", "--emit", "envoy", "--proxy", "all", "-o", "out"],
    "lint": ["lint", "--no-cache"],
}


# ---- point 10: only regular files, at most 64 MiB ---------------------------------------------

@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_import_of_an_endless_device_is_e0107_at_the_import(tmp_path, device, command):
    (tmp_path / "main.mesh").write_text(f'import "{device}"\n' + SERVICE)
    proc = meshc(*COMMANDS[command], "main.mesh", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout + proc.stderr
    assert f"error[E0107]: imported file `{device}` is not a regular file: it is a character device" in out
    assert "--> main.mesh:1:8" in out
    assert output_files(tmp_path / "out") == []


@pytest.mark.parametrize("command", list(COMMANDS))
def test_import_of_a_fifo_is_refused_without_blocking(tmp_path, command):
    os.mkfifo(tmp_path / "pipe.mesh")  # no writer: an ordinary open for reading would block forever
    (tmp_path / "main.mesh").write_text(SERVICE + 'import "pipe.mesh"\n')
    proc = meshc(*COMMANDS[command], "main.mesh", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout + proc.stderr
    assert "error[E0107]: imported file `pipe.mesh` is not a regular file: it is a FIFO" in out
    assert "--> main.mesh:5:8" in out
    assert output_files(tmp_path / "out") == []


def test_import_of_a_directory_is_e0107(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "main.mesh").write_text('import "shared"\n' + SERVICE)
    proc = meshc("check", "--format", "json", "main.mesh", cwd=tmp_path)
    assert proc.returncode == 1
    (diag,) = json.loads(proc.stdout)["diagnostics"]
    assert (diag["code"], diag["file"], diag["line"], diag["column"]) == ("E0107", "main.mesh", 1, 8)
    assert diag["message"] == "imported file `shared` is not a regular file: it is a directory"


@pytest.mark.parametrize("command", ["check", "compile", "fmt", "lint"])
def test_fifo_or_device_on_the_command_line_is_a_usage_error(tmp_path, command):
    os.mkfifo(tmp_path / "pipe.mesh")
    for path, kind in (("pipe.mesh", "a FIFO"), ("/dev/zero", "a character device")):
        proc = meshc(command, path, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"meshc: error: not a regular file: {path} (it is {kind}" in proc.stderr
    assert output_files(tmp_path) == ["pipe.mesh"]


def big_file(path: Path) -> Path:
    """A regular file one byte over the limit (sparse: it costs no disk)."""
    with open(path, "wb") as fh:
        fh.write(SERVICE.encode())
        fh.truncate(source.MAX_SOURCE_BYTES + 1)
    return path


def test_imported_file_over_64_mib_is_e0107_at_the_import(tmp_path):
    big_file(tmp_path / "big.mesh")
    (tmp_path / "main.mesh").write_text(SERVICE.replace("payments", "orders") + 'import "big.mesh"\n')
    for command in ("check", "compile"):
        args = [*COMMANDS[command], "main.mesh"]
        proc = meshc(*args, cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert ("error[E0107]: imported file `big.mesh` is larger than 64 MiB (67,108,865 bytes), the limit for "
                "one source file") in proc.stderr
        assert "--> main.mesh:5:8" in proc.stderr
        assert "split the policy into files of at most 64 MiB that import each other" in proc.stderr
    assert output_files(tmp_path / "out") == []


def test_file_over_64_mib_on_the_command_line_is_e0107(tmp_path):
    big = big_file(tmp_path / "big.mesh")
    for args in (["check"], ["compile", "-o", "out"], ["lint", "--no-cache"]):
        proc = meshc(*args, "big.mesh", cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert "error[E0107]: `big.mesh` is larger than 64 MiB (67,108,865 bytes)" in proc.stdout + proc.stderr
    proc = meshc("fmt", "big.mesh", cwd=tmp_path)
    assert proc.returncode == 1
    assert "meshc: error: big.mesh is larger than 64 MiB (67,108,865 bytes), the limit for one source file; " \
           "not formatted" in proc.stderr
    assert big.stat().st_size == source.MAX_SOURCE_BYTES + 1
    assert output_files(tmp_path / "out") == []


def test_fmt_of_an_endless_standard_input_stops_at_the_limit(tmp_path):
    with open("/dev/zero", "rb") as zero:
        proc = meshc("fmt", "-", cwd=tmp_path, stdin=zero)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "meshc: error: standard input is larger than 64 MiB, the limit for one source file" in proc.stderr


def test_a_file_that_reports_size_zero_but_streams_is_read_up_to_the_limit(monkeypatch):
    """/proc files say 0 bytes and stream their content: the read stops one byte past the limit
    whatever the size says (here a limit of 64 bytes, so /proc/self/status is over it)."""
    status = "/proc/self/status"
    assert os.stat(status).st_size == 0
    assert len(source.read_source_bytes(status)) > 64
    monkeypatch.setattr(source, "MAX_SOURCE_BYTES", 64)
    with pytest.raises(source.UnusableSource) as err:
        source.read_source_bytes(status)
    assert err.value.too_large and err.value.reason == "larger than 64 MiB, the limit for one source file"


def test_read_source_reads_as_text_mode_did(tmp_path):
    """Line ends as open(path, encoding="utf-8").read() gave them: CR LF and a lone CR become LF."""
    path = tmp_path / "crlf.mesh"
    path.write_bytes(b"a\r\nb\rc\n\r\r\nd\xc3\xa9\r")
    with open(path, encoding="utf-8") as fh:
        assert source.read_source(str(path)) == fh.read() == "a\nb\nc\n\n\nd\u00e9\n"
    path.write_bytes(b"ok\n\xff")
    with pytest.raises(UnicodeDecodeError) as err:
        source.read_source(str(path))
    assert err.value.start == 3


def test_an_unsaved_buffer_over_the_limit_is_e0107(tmp_path):
    text = "# " + "x" * source.MAX_SOURCE_BYTES + "\n"
    (diag,) = api.check([api.Text(str(tmp_path / "huge.mesh"), text)], shard=False).diagnostics
    assert diag.code == "E0107" and "is larger than 64 MiB" in diag.message


# ---- point 11: deep import chains -----------------------------------------------------------------

def chain(folder: Path, depth: int, cycle: bool = False) -> None:
    """f0.mesh imports f1.mesh ... imports f{depth-1}.mesh, which declares a service (and
    imports f0.mesh back with `cycle`)."""
    for i in range(depth - 1):
        (folder / f"f{i}.mesh").write_text(f'import "f{i + 1}.mesh"\n')
    (folder / f"f{depth - 1}.mesh").write_text(('import "f0.mesh"\n' if cycle else "") + SERVICE)


@pytest.mark.parametrize("shards", ["0", "1"])
def test_import_chain_500_deep_checks_and_compiles(tmp_path, shards):
    chain(tmp_path, 500)
    env = {"MESHC_FORCE_SHARDS": shards}  # with 1, the sharding planner's prescan walks the chain too
    proc = meshc("check", "f0.mesh", cwd=tmp_path, env_extra=env)
    assert proc.returncode == 0, proc.stderr
    assert "RecursionError" not in proc.stderr
    proc = meshc("compile", "f0.mesh", "-o", "out", cwd=tmp_path, env_extra=env)
    assert proc.returncode == 0, proc.stderr
    assert output_files(tmp_path / "out") == ["mesh.ir.json"]
    assert [s["name"] for s in json.loads((tmp_path / "out" / "mesh.ir.json").read_text())["services"]] == ["payments"]


def test_import_cycle_500_deep_is_e0206_with_the_whole_chain(tmp_path):
    chain(tmp_path, 500, cycle=True)
    proc = meshc("check", "--format", "json", "f0.mesh", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    (diag,) = json.loads(proc.stdout)["diagnostics"]
    assert diag["code"] == "E0206"
    assert diag["message"] == "import cycle: `f499.mesh` imports `f0.mesh`, which imports it back"
    assert (diag["file"], diag["line"], diag["column"]) == ("f499.mesh", 1, 1)
    assert [(label["file"], label["line"], label["message"]) for label in diag["labels"]] == \
        [(f"f{i}.mesh", 1, "imported here") for i in range(499)]


def test_load_order_and_cycle_diagnostics_are_as_before(tmp_path, monkeypatch):
    """Depth first in written order, each file once; a cycle reported at the import closing it,
    with the chain from the root as notes. The expected values are those of the recursive loader
    this replaced (run on the same files)."""
    files = {
        "main.mesh": 'import "a.mesh"\nimport "b.mesh"\nimport "std/resilience"\n' + SERVICE,
        "a.mesh": 'import "c.mesh"\nimport "b.mesh"\n',
        "b.mesh": 'import "c.mesh"\nimport "d.mesh"\n',
        "c.mesh": 'import "a.mesh"\nimport "missing.mesh"\n',
        "d.mesh": 'import "b.mesh"\nimport "main.mesh"\n',
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    diags = Collector()
    program = load_program(["main.mesh", "d.mesh"], diags)
    assert [m.path for m in program.modules] == ["main.mesh", "a.mesh", "c.mesh", "b.mesh", "d.mesh",
                                                 "<std>/resilience.mesh"]
    # In the order they are reported (before sorting), with the notes of each cycle.
    assert [(d.code, d.message, d.span.location(), [label.span.location() for label in d.labels])
            for d in diags.items] == [
        ("E0206", "import cycle: `c.mesh` imports `a.mesh`, which imports it back", "c.mesh:1:1",
         ["main.mesh:1:1", "a.mesh:1:1"]),
        ("E0205", "imported file `missing.mesh` not found", "c.mesh:2:8", []),
        ("E0206", "import cycle: `d.mesh` imports `b.mesh`, which imports it back", "d.mesh:1:1",
         ["main.mesh:1:1", "a.mesh:2:1", "b.mesh:2:1"]),
        ("E0206", "import cycle: `d.mesh` imports `main.mesh`, which imports it back", "d.mesh:2:1",
         ["main.mesh:1:1", "a.mesh:2:1", "b.mesh:2:1"]),
    ]


# ---- point 12: names of at most 63 characters ------------------------------------------------------

def test_service_name_of_a_megabyte_is_e0210_at_check(tmp_path):
    name = "s" * 1_048_576
    (tmp_path / "main.mesh").write_text(SERVICE.replace("payments", name))
    proc = meshc("check", "main.mesh", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"error[E0210]: service name `{'s' * 24}…` is 1,048,576 characters long, more than 63" in proc.stderr
    assert "--> main.mesh:1:9" in proc.stderr
    for args in (["compile", "-o", "out"], ["compile", "--emit", "envoy", "--proxy", "all", "-o", "out"],
                 ["compile", "--emit", "native", "--proxy", "all", "-o", "out"]):
        proc = meshc(*args, "main.mesh", cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr[-2000:]  # an input error, not an I/O error (exit 2)
        assert "error[E0210]" in proc.stdout + proc.stderr
    assert output_files(tmp_path / "out") == []


def test_names_of_63_characters_compile_to_files(tmp_path):
    service, subset, route, namespace = "s" * 63, "v" * 63, "r" * 63, "n" * 63
    (tmp_path / "main.mesh").write_text(
        f'service {service} {{\n  port 9000\n  namespace "{namespace}"\n'
        f'  subset {subset} {{ endpoints ["10.0.0.1:9000"] }}\n}}\n'
        f"routes {service} {{\n  route {route} {{ to {service}.{subset} }}\n}}\n")
    proc = meshc("compile", "--emit", "envoy", "--proxy", "all", "-o", "out", "main.mesh", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{service}.envoy.json" in output_files(tmp_path / "out")


def test_every_kind_of_declared_name_is_limited():
    long = "x" * 64
    text = (f'service s_{long} {{\n  port 9000\n  mtls strict\n  namespace "{long}"\n'
            f'  subset v_{long} {{ endpoints ["10.0.0.1:9000"] }}\n}}\n'
            f"routes s_{long} {{\n  route r_{long} {{ to s_{long}.v_{long} }}\n}}\n"
            f"policy retry p_{long} {{ attempts 2 }}\n"
            f"policy rules q_{long} {{ allow u_{long} {{ from namespace \"{long}\" method GET }} }}\n"
            f"authorization s_{long} {{\n  default deny\n  allow a_{long} {{ from namespace \"{long}\" }}\n"
            f"  use q_{long}\n}}\n")
    diags = api.check([api.Text("names.mesh", text)], shard=False).diagnostics
    assert [(d.code, d.message.split(" name ")[0]) for d in diags] == [
        ("E0210", "service"), ("E0210", "namespace"), ("E0210", "subset"), ("E0210", "route"),
        ("E0210", "retry policy"), ("E0210", "rules policy"), ("E0210", "rule"), ("E0210", "namespace"),
        ("E0210", "rule"), ("E0210", "namespace")]
