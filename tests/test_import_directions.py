"""The import directions of docs/architecture.md: the native proxy never imports the compiler,
and the IR (the contract both backends read) depends on nothing else of the compiler."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def imported_modules(path: str) -> set[str]:
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def python_files(folder: str):
    for root, _, names in os.walk(os.path.join(ROOT, folder)):
        for name in names:
            if name.endswith(".py"):
                yield os.path.join(root, name)


def test_runtime_proxy_never_imports_the_compiler():
    files = list(python_files("runtime_proxy"))
    assert files, "runtime_proxy has no Python files"
    for path in files:
        bad = {m for m in imported_modules(path) if m == "compiler" or m.startswith("compiler.")}
        assert not bad, f"{path} imports {bad}"


def test_the_ir_depends_on_no_other_compiler_module():
    bad = {m for m in imported_modules(os.path.join(ROOT, "compiler", "ir.py"))
           if m.startswith("compiler") and m != "compiler.nodes"}  # the shared dataclass base
    assert not bad


def test_the_syntax_layer_does_not_import_checks_or_lowering():
    for path in python_files(os.path.join("compiler", "syntax")):
        bad = {m for m in imported_modules(path)
               if m.startswith(("compiler.checks", "compiler.lower", "compiler.driver", "compiler.cli"))}
        assert not bad, f"{path} imports {bad}"
