"""Lint configuration: `[tool.meshc.lint]` in pyproject.toml, or `[lint]` in meshc.toml.

The nearest file found walking up from the working directory wins (meshc.toml before
pyproject.toml in the same directory), as with ruff. Keys:

    select = ["ALL"]                 # codes or prefixes: "L", "L01", "W0501"; default: every rule
    ignore = ["L0401"]               # codes or prefixes taken out of the selection
    per-file-ignores = { "legacy/*.mesh" = ["W0401"] }   # glob (relative to the config file) -> codes

Errors (E-codes) are never ignored: a program with errors does not compile.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field


class ConfigError(Exception):
    """An invalid configuration file: reported as a usage error (exit 2)."""


@dataclass
class LintConfig:
    select: tuple[str, ...] = ("ALL",)
    ignore: tuple[str, ...] = ()
    per_file_ignores: dict[str, tuple[str, ...]] = field(default_factory=dict)
    root: str = "."                  # the directory of the config file (globs are relative to it)
    path: str | None = None          # the config file, if any

    def enabled(self, code: str, file: str | None = None) -> bool:
        if code.startswith("E"):
            return True
        if not any(s == "ALL" or code.startswith(s) for s in self.select):
            return False
        if any(code.startswith(i) for i in self.ignore):
            return False
        if file is not None and self.per_file_ignores:
            rel = os.path.relpath(os.path.abspath(file), self.root).replace(os.sep, "/")
            for pattern, codes in self.per_file_ignores.items():
                if fnmatch.fnmatch(rel, pattern) and any(code.startswith(c) for c in codes):
                    return False
        return True

    def fingerprint(self) -> str:
        return repr((self.select, self.ignore, sorted(self.per_file_ignores.items())))


def find_config(start: str | None = None) -> LintConfig:
    directory = os.path.abspath(start or os.getcwd())
    while True:
        for name in ("meshc.toml", "pyproject.toml"):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                table = _read(path, name)
                if table is not None:
                    return _parse(table, path, directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            return LintConfig()
        directory = parent


def _read(path: str, name: str) -> dict | None:
    if name == "pyproject.toml":
        try:  # most pyproject.toml files say nothing about meshc: skip the TOML parser (15 ms)
            with open(path, encoding="utf-8", errors="replace") as fh:
                if "meshc" not in fh.read():
                    return None
        except OSError:
            return None
    import tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    if name == "meshc.toml":
        return data.get("lint", {})
    tool = data.get("tool", {}).get("meshc")
    return None if tool is None else tool.get("lint", {})


def _parse(table: dict, path: str, root: str) -> LintConfig:
    from compiler.core.codes import CODES

    known = set(table) - {"select", "ignore", "per-file-ignores"}
    if known:
        raise ConfigError(f"{path}: unknown lint setting `{sorted(known)[0]}` "
                          "(known: select, ignore, per-file-ignores)")

    def codes(value, key) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: `{key}` must be a list of codes")
        for v in value:
            if v != "ALL" and not any(c.startswith(v.upper()) for c in CODES):
                raise ConfigError(f"{path}: `{key}` names `{v}`, which is no code or code prefix "
                                  "(see `meshc explain --list`)")
        return tuple(v.upper() for v in value)

    per_file = table.get("per-file-ignores", {})
    if not isinstance(per_file, dict):
        raise ConfigError(f"{path}: `per-file-ignores` must be a table of glob = [codes]")
    return LintConfig(codes(table.get("select", ["ALL"]), "select"), codes(table.get("ignore", []), "ignore"),
                      {k: codes(v, f"per-file-ignores.{k}") for k, v in per_file.items()}, root, path)
