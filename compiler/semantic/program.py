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
from compiler.core.source import MAX_SOURCE_BYTES, MAX_SOURCE_TEXT, SourceFile, UnusableSource, read_source
from compiler.syntax import ast
from compiler.syntax.parse import ItemCache, parse_source

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
    def __init__(self, diags: Collector, cache: ItemCache | None = None):
        self.diags = diags
        self.cache = cache
        self.program = Program()
        self.state: dict[str, str] = {}  # key -> "loading" | "done"

    def load_root(self, path: str) -> None:
        key = os.path.abspath(path)
        if key in self.state:
            return
        try:
            text = read_source(path)
        except UnicodeDecodeError as err:
            self.diags.add("E0106", f"`{path}` is not UTF-8 text: byte {err.start} cannot be decoded", None, path=path,
                           hint="save the file as UTF-8")
            return
        except UnusableSource as err:
            self.diags.add("E0107", f"`{path}` is {err.reason}", None, path=path, hint=_unusable_hint(err))
            return
        except (OSError, ValueError) as err:  # ValueError: a NUL in the path
            reason = err.strerror.lower() if isinstance(err, OSError) and err.strerror else str(err)
            self.diags.add("E0205", f"cannot read `{path}`: {reason}", None, path=path)
            return
        self._load(key, path, text, chain=None)

    def load_text(self, root: Text) -> None:
        key = os.path.abspath(root.path)
        if key in self.state:
            return
        text = root.text  # an editor's buffer: the limit of a file read from disk, in UTF-8 bytes
        if len(text) > MAX_SOURCE_BYTES // 4 and len(text.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
            err = UnusableSource(f"larger than {MAX_SOURCE_TEXT}, the limit for one source file", too_large=True)
            self.diags.add("E0107", f"`{root.path}` is {err.reason}", None, path=root.path, hint=_unusable_hint(err))
            return
        self._load(key, root.path, root.text, chain=None)

    def _load(self, key: str, display: str, text: str, chain: _Chain | None) -> None:
        """Parse a file and, depth first in written order, every file it imports that is not
        loaded yet. An explicit stack, not recursion: an import chain may be deeper than
        Python's recursion limit."""
        work = [self._enter(key, display, text, chain)]
        while work:
            key, display, imports, chain = work[-1]
            for imp in imports:
                found = self._import(key, display, imp, chain)
                if found is not None:
                    ikey, idisplay, itext = found
                    work.append(self._enter(ikey, idisplay, itext, (chain, key, imp)))
                    break
            else:
                self.state[key] = "done"
                work.pop()

    def _enter(self, key: str, display: str, text: str, chain: _Chain | None):
        """Parse one file: (key, display, its imports still to follow, the chain that led here)."""
        self.state[key] = "loading"
        if self.cache is not None:
            source = self.cache.source(display, text)
            module = self.cache.parse(source, self.diags)
        else:
            source = SourceFile(display, text)
            module = parse_source(source, self.diags)
        self.program.sources[display] = source
        self.program.modules.append(module)
        if key.startswith("std:"):
            self.program.stdlib_paths.add(display)
        return key, display, (item for item in module.items if isinstance(item, ast.Import)), chain

    def _import(self, importer_key: str, importer: str, imp: ast.Import,
                chain: _Chain | None) -> tuple[str, str, str] | None:
        """(key, display, text) of an imported file to load now; None when it is loaded already
        or cannot be (a diagnostic says why)."""
        target = imp.path.value
        key, display = resolve_import(importer_key, target)
        text = None
        if key not in self.state:
            found = read_import(key)
            if found is _NOT_UTF8:
                self.diags.add("E0106", f"imported file `{target}` is not UTF-8 text", imp.path.span,
                               hint="save the file as UTF-8")
                return None
            if isinstance(found, UnusableSource):
                self.diags.add("E0107", f"imported file `{target}` is {found.reason}", imp.path.span,
                               hint=_unusable_hint(found))
                return None
            if found is None:
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
                return None
            text = found
        if self.state.get(key) == "loading":
            stack = []  # the imports that led to the importer, from the root
            link = chain
            while link is not None:
                link, _, earlier = link
                stack.append(earlier)
            labels = tuple(Label(i.span, "imported here") for i in reversed(stack) if i.span is not None)
            self.diags.add("E0206", f"import cycle: `{importer}` imports `{target}`, which imports it back",
                           imp.span, labels=labels, hint="move the shared declarations into a file that both import")
            return None
        if self.state.get(key) == "done":
            return None
        assert text is not None  # a key seen for the first time: read above
        return key, display, text


# The imports that led to a file, innermost last: (the chain to the importer, importer key, import).
_Chain = tuple


def _unusable_hint(err: UnusableSource) -> str:
    if err.too_large:
        return f"split the policy into files of at most {MAX_SOURCE_TEXT} that import each other"
    return "a policy is a `.mesh` file: meshc reads only regular files, never a device, a FIFO or a directory"


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


def read_import(key: str) -> str | UnusableSource | None:
    """The text of an imported file by key; None when it cannot be read, _NOT_UTF8 when it is not
    text, an UnusableSource when it is not a regular file or is too large."""
    if key.startswith("std:"):
        return _read_std(key[4:])
    try:
        return read_source(key)
    except UnicodeDecodeError:
        return _NOT_UTF8
    except UnusableSource as err:
        return err
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None


_IMPORT_LINE = re.compile(r'^[ \t]*import[ \t]+"((?:[^"\\\n]|\\.)*)"', re.M)


def prescan(paths: list[str]) -> list[tuple[str, str, str]] | None:
    """The files of a program as (key, display, text), found by scanning for import lines
    without parsing, in the loader's order (depth first, in written order); None when anything
    is unusual (an unreadable, missing or unusable file, an import cycle, an escaped path): the
    parsing loader then reports it exactly."""
    files: dict[str, tuple[str, str, str]] = {}
    state: dict[str, str] = {}
    for path in paths:
        key = os.path.abspath(path)
        if key in state:
            continue
        try:
            text = read_source(path)
        except (OSError, ValueError, UnusableSource):  # UnicodeDecodeError is a ValueError
            return None
        state[key] = "loading"
        files[key] = (key, path, text)
        work = [(key, _IMPORT_LINE.finditer(text))]  # an explicit stack: chains may be deep
        while work:
            fkey, imports = work[-1]
            for m in imports:
                target = m.group(1)
                if "\\" in target:
                    return None
                ikey, idisplay = resolve_import(fkey, target)
                if state.get(ikey) == "loading":
                    return None
                if ikey in state:
                    continue
                itext = read_import(ikey)
                if not isinstance(itext, str) or itext is _NOT_UTF8:
                    return None
                state[ikey] = "loading"
                files[ikey] = (ikey, idisplay, itext)
                work.append((ikey, _IMPORT_LINE.finditer(itext)))
                break
            else:
                state[fkey] = "done"
                work.pop()
    return list(files.values())


@dataclass(frozen=True)
class Text:
    """A root file whose text is given rather than read: an editor's unsaved buffer, a test, a
    generated policy. `path` is where it would be (its imports resolve from there)."""
    path: str
    text: str


def load_program(roots: Iterable[str | Text], diags: Collector, cache: ItemCache | None = None) -> Program:
    """Parse every root (a path, or a Text) and everything it imports, each file once; problems
    become diagnostics, never exceptions. Imports are read from disk and the standard library.
    With a `cache` (a long-lived caller's, `meshc serve`'s), only the items that changed since
    its last parse of a file are parsed again (compiler/syntax/parse.py, `ItemCache`)."""
    loader = _Loader(diags, cache)
    for root in roots:
        if isinstance(root, Text):
            loader.load_text(root)
        else:
            loader.load_root(root)
    return loader.program
