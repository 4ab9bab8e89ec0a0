"""Load the files of a program: the files named on the command line and everything they import.

`import "std/NAME"` loads `NAME.mesh` from the standard library package (`stdlib_policies`),
found through importlib.resources so that it works from an installed wheel. Any other import
is a path relative to the importing file. Every declaration of every loaded file belongs to one
program: names are program-wide, standard-library policies carry the `std.` prefix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources

from compiler import ast
from compiler.diagnostics import Collector, Label
from compiler.source import SourceFile
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
    root = resources.files(STDLIB_PACKAGE)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".mesh"))


def _read_std(name: str) -> str | None:
    res = resources.files(STDLIB_PACKAGE).joinpath(f"{name}.mesh")
    try:
        return res.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return None


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
            self.diags.add("E0205", f"cannot read `{path}`: it is not UTF-8 text ({err.reason})", None, path=path)
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
        if target.startswith(STD_PREFIX):
            name = target[len(STD_PREFIX):]
            key = f"std:{name}"
            display = f"<std>/{name}.mesh"
            text = None if key in self.state else _read_std(name)
            if key not in self.state and text is None:
                from compiler.diagnostics import did_you_mean
                hint = did_you_mean(name, stdlib_modules())
                self.diags.add("E0205", f"no standard library module `{target}`", imp.path.span,
                               hint=hint or "the standard library has: " + ", ".join(f"`std/{m}`" for m in stdlib_modules()))
                return
        else:
            base = os.path.dirname(importer_key) if not importer_key.startswith("std:") else os.getcwd()
            key = os.path.abspath(os.path.join(base, target))
            display = os.path.relpath(key) if not os.path.isabs(target) else key
            if display.startswith(".." + os.sep + ".." + os.sep):
                display = key
            text = None
            if key not in self.state:
                try:
                    with open(key, encoding="utf-8") as fh:
                        text = fh.read()
                except (OSError, UnicodeDecodeError):
                    self.diags.add("E0205", f"imported file `{target}` not found", imp.path.span,
                                   hint=f"paths are relative to the importing file; looked for `{display}`")
                    return
        if self.state.get(key) == "loading":
            chain = [s for s in stack] + [(importer_key, imp)]
            labels = tuple(Label(i.span, "imported here") for _, i in chain[:-1] if i.span is not None)
            self.diags.add("E0206", f"import cycle: `{importer}` imports `{target}`, which imports it back",
                           imp.span, labels=labels, hint="move the shared declarations into a file that both import")
            return
        if self.state.get(key) == "done":
            return
        self._load(key, display, text, stack + [(importer_key, imp)])


def load_program(paths: list[str], diags: Collector) -> Program:
    """Parse every file and its imports; problems become diagnostics, never exceptions."""
    loader = _Loader(diags)
    for path in paths:
        loader.load_root(path)
    return loader.program
