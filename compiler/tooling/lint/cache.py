"""The lint result cache: findings keyed by the content of every file a run read.

pre-commit stashes and restores files, which changes their mtimes but not their content, so the
key is content hashes (as ruff does), plus the meshc version and the configuration. An entry
records every file the program read (imports included); a lookup re-hashes them, so an edit to
an imported file is never served from a stale entry.
"""

from __future__ import annotations

import json
import os

try:  # the C module directly: `import hashlib` loads OpenSSL's bindings too (about 10 ms)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - every CPython build has it
    from hashlib import blake2b

from compiler import __version__
from compiler.core.diagnostics import Diagnostic, Label
from compiler.core.source import SourceFile, Span, UnusableSource, read_source_bytes

CACHE_DIR = ".meshc_cache"


def _digest(data: bytes) -> str:
    return blake2b(data, digest_size=16).hexdigest()


def entry_path(cache_root: str, files: list[str], fingerprint: str) -> str:
    key = _digest("\0".join([__version__, fingerprint, *sorted(os.path.abspath(f) for f in files)]).encode())
    return os.path.join(cache_root, CACHE_DIR, "lint", f"{key}.json")


def load_run(path: str) -> tuple[list[Diagnostic], int, int] | None:
    """The cached findings with the number of files and services of the program, or None when
    there is no entry or a file changed."""
    try:
        with open(path, encoding="utf-8") as fh:
            entry = json.load(fh)
        sources: dict[str, SourceFile] = {}
        for name, digest in entry["files"].items():
            data = read_source_bytes(name)  # a file swapped for a FIFO or a device must not hang
            if _digest(data) != digest:
                return None
            sources[name] = SourceFile(entry["display"][name], data.decode("utf-8"))
        return [_diagnostic(d, sources) for d in entry["diagnostics"]], len(entry["files"]), int(entry["services"])
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, UnusableSource):
        return None


def store(path: str, sources: dict[str, SourceFile], diags: list[Diagnostic], services: int = 0) -> None:
    """Record a run. Sources from the standard library are part of the version, not hashed."""
    files, display = {}, {}
    for shown, src in sources.items():
        if shown.startswith("<std>"):
            continue
        key = os.path.abspath(shown)
        files[key] = _digest(src.text.encode("utf-8"))
        display[key] = shown
    by_source = {id(src): os.path.abspath(shown) for shown, src in sources.items()}

    def span(s: Span | None):
        if s is None or id(s.source) not in by_source or s.path.startswith("<std>"):
            return None
        return [by_source[id(s.source)], s.start, s.end]

    records = []
    for d in diags:
        if d.span is not None and span(d.span) is None:
            return  # a finding in a file we cannot re-read: do not cache this run
        records.append({"code": d.code, "message": d.message, "hint": d.hint, "severity": d.severity,
                        "path": d.path, "span": span(d.span),
                        "labels": [[span(label.span), label.message] for label in d.labels
                                   if span(label.span) is not None]})
    entry = {"files": files, "display": display, "diagnostics": records, "services": services}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(entry, fh)
        os.replace(tmp, path)
        gitignore = os.path.join(os.path.dirname(os.path.dirname(path)), ".gitignore")
        if not os.path.exists(gitignore):
            with open(gitignore, "w", encoding="utf-8") as fh:
                fh.write("# created by meshc lint\n*\n")
    except OSError:
        pass  # a read-only tree lints without a cache


def _diagnostic(d: dict, sources: dict[str, SourceFile]) -> Diagnostic:
    def span(s):
        return None if s is None else Span(sources[s[0]], s[1], s[2])

    labels = tuple(Label(span(s), message) for s, message in d["labels"])
    return Diagnostic(d["code"], d["message"], span(d["span"]), d["hint"], labels, d["path"], d["severity"])
