"""Load the files of a program: the files named on the command line and everything they import.

`import "std/NAME"` loads `NAME.mesh` from the standard library package (`stdlib_policies`),
found through importlib.resources so that it works from an installed wheel. Any other import
is a path relative to the importing file. Every declaration of every loaded file belongs to one
program: names are program-wide, standard-library policies carry the `std.` prefix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from compiler.core import package_data
from compiler.core.diagnostics import Collector, Label
from compiler.core.source import SourceFile
from compiler.syntax import ast
from compiler.syntax.parse import parse_source

STDLIB_PACKAGE = "stdlib_policies"
STD_PREFIX = "std/"


@dataclass
class Program:
    modules: list[ast.Module] = field(default_factory=list)
    sources: dict[str, SourceFile] = field(default_factory=dict)
    stdlib_paths: set[str] = field(default_factory=set)  # module paths that came from the stdlib

    def items(self):
        for module in self.modules:
            yield from module.items


def stdlib_modules() -> list[str]:
    """The names usable as `import "std/NAME"`."""
    return [n[:-5] for n in package_data.list_names(STDLIB_PACKAGE, ".mesh")]


def _read_std(name: str) -> str | None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        return None
    return package_data.read_text(STDLIB_PACKAGE, f"{name}.mesh")


class _Loader:
    def __init__(self, diags: Collector):
        self.diags = diags
        self.program = Program()
        self.state: dict[str, str] = {}  # key -> "loading" | "done"

    def load_root(self, path: str) -> None:
        key = os.path.abspath(path)
        if key in self.state:
            return
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except UnicodeDecodeError as err:
            self.diags.add("E0106", f"`{path}` is not UTF-8 text: byte {err.start} cannot be decoded", None, path=path,
                           hint="save the file as UTF-8")
            return
        except OSError as err:
            self.diags.add("E0205", f"cannot read `{path}`: {err.strerror.lower() if err.strerror else err}", None,
                           path=path)
            return
        self._load(key, path, text, stack=[])

    def _load(self, key: str, display: str, text: str, stack: list[tuple[str, ast.Import]]) -> None:
        self.state[key] = "loading"
        source = SourceFile(display, text)
        self.program.sources[display] = source
        module = parse_source(source, self.diags)
        self.program.modules.append(module)
        if key.startswith("std:"):
            self.program.stdlib_paths.add(display)
        for item in module.items:
            if isinstance(item, ast.Import):
                self._import(key, display, item, stack)
        self.state[key] = "done"

    def _import(self, importer_key: str, importer: str, imp: ast.Import, stack) -> None:
        target = imp.path.value
        key, display = resolve_import(importer_key, target)
        text = None
        if key not in self.state:
            text = read_import(key)
            if text is _NOT_UTF8:
                self.diags.add("E0106", f"imported file `{target}` is not UTF-8 text", imp.path.span,
                               hint="save the file as UTF-8")
                return
            if text is None:
                if key.startswith("std:"):
                    from compiler.core.diagnostics import did_you_mean
                    name = key[4:]
                    hint = did_you_mean(f"std/{name}", [f"std/{m}" for m in stdlib_modules()])
                    self.diags.add("E0205", f"no standard library module `{target}`", imp.path.span,
                                   hint=hint or "the standard library has: "
                                   + ", ".join(f"`std/{m}`" for m in stdlib_modules()))
                else:
                    self.diags.add("E0205", f"imported file `{target}` not found", imp.path.span,
                                   hint=f"paths are relative to the importing file; looked for `{display}`")
                return
        if self.state.get(key) == "loading":
            chain = list(stack) + [(importer_key, imp)]
            labels = tuple(Label(i.span, "imported here") for _, i in chain[:-1] if i.span is not None)
            self.diags.add("E0206", f"import cycle: `{importer}` imports `{target}`, which imports it back",
                           imp.span, labels=labels, hint="move the shared declarations into a file that both import")
            return
        if self.state.get(key) == "done":
            return
        assert text is not None  # a key seen for the first time: read above
        self._load(key, display, text, stack + [(importer_key, imp)])


def resolve_import(importer_key: str, target: str) -> tuple[str, str]:
    """(key, display path) of an import: `std:NAME` for the standard library, else an absolute path."""
    if target.startswith(STD_PREFIX):
        name = target[len(STD_PREFIX):]
        return f"std:{name}", f"<std>/{name}.mesh"
    base = os.path.dirname(importer_key) if not importer_key.startswith("std:") else os.getcwd()
    key = os.path.abspath(os.path.join(base, target))
    display = os.path.relpath(key) if not os.path.isabs(target) else key
    if display.startswith(".." + os.sep + ".." + os.sep):
        display = key
    return key, display


_NOT_UTF8 = "\0not-utf-8"  # a sentinel no real file text can be (NUL is not valid .mesh)


def read_import(key: str) -> str | None:
    """The text of an imported file by key; None when it cannot be read, _NOT_UTF8 when it is not text."""
    if key.startswith("std:"):
        return _read_std(key[4:])
    try:
        with open(key, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError:
        return _NOT_UTF8
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None


_IMPORT_LINE = re.compile(r'^[ \t]*import[ \t]+"((?:[^"\\\n]|\\.)*)"', re.M)


def prescan(paths: list[str]) -> list[tuple[str, str, str]] | None:
    """The files of a program as (key, display, text), found by scanning for import lines
    without parsing; None when anything is unusual (an unreadable or missing file, an import
    cycle, an escaped path): the parsing loader then reports it exactly."""
    files: dict[str, tuple[str, str, str]] = {}
    state: dict[str, str] = {}

    def visit(key: str, display: str, text: str) -> bool:
        state[key] = "loading"
        files[key] = (key, display, text)
        for m in _IMPORT_LINE.finditer(text):
            target = m.group(1)
            if "\\" in target:
                return False
            ikey, idisplay = resolve_import(key, target)
            if state.get(ikey) == "loading":
                return False
            if ikey in state:
                continue
            itext = read_import(ikey)
            if itext is None or itext is _NOT_UTF8 or not visit(ikey, idisplay, itext):
                return False
        state[key] = "done"
        return True

    for path in paths:
        key = os.path.abspath(path)
        if key in state:
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError):
            return None
        if not visit(key, path, text):
            return None
    return list(files.values())


@dataclass(frozen=True)
class Text:
    """A root file whose text is given rather than read: an editor's unsaved buffer, a test, a
    generated policy. `path` is where it would be (its imports resolve from there)."""
    path: str
    text: str


def load_program(roots: Iterable[str | Text], diags: Collector) -> Program:
    """Parse every root (a path, or a Text) and everything it imports, each file once; problems
    become diagnostics, never exceptions. Imports are read from disk and the standard library."""
    loader = _Loader(diags)
    for root in roots:
        if isinstance(root, Text):
            key = os.path.abspath(root.path)
            if key not in loader.state:
                loader._load(key, root.path, root.text, stack=[])
        else:
            loader.load_root(root)
    return loader.program
