"""Writing outputs: atomic, all-or-nothing file writes (a compile's outputs, a formatted file)."""

from __future__ import annotations

import os

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from collections.abc import Mapping

    from compiler.backends.base import Link


def write_all(out_dir: str, files: Mapping[str, str | bytes | Link]) -> list[str]:
    """Write every file or none: each goes to a temporary file first, then all are renamed.

    A failure before the renames leaves no output at all; rename is atomic per file, so a
    reader never sees a half-written file. Files are renamed in the order given (a backend
    orders them so that a watching proxy never sees a reference before its target), and a file
    whose content is already on disk is left alone, so that a recompile does not make a
    watching proxy reload what did not change. Returns the paths of all the files, in order.

    A `Link` (compiler/backends/base.py) is a symbolic link, made under a temporary name and
    renamed over its path the same way: left alone when it is there already and its target was
    not rewritten by this call, else replaced, so that a proxy watching the link's path sees a
    move (and reloads) whenever what it points to changes.
    """
    import tempfile

    os.makedirs(out_dir, exist_ok=True)
    mask = os.umask(0)  # mkstemp makes 0600 files; outputs get the usual 0666 & ~umask
    os.umask(mask)
    staged: list[tuple[str, str]] = []
    finals: list[str] = []
    try:
        rewritten: set[str] = set()
        for name, text in files.items():
            final = os.path.join(out_dir, name)
            finals.append(final)
            if not isinstance(text, (str, bytes)):   # a Link
                target = os.path.normpath(os.path.join(os.path.dirname(final), text.target))
                if _same_link(final, text.target) and target not in rewritten:
                    continue
                os.makedirs(os.path.dirname(final), exist_ok=True)
                tmp = os.path.join(os.path.dirname(final), f".{os.path.basename(name)}.{os.getpid()}.link.tmp")
                if os.path.lexists(tmp):
                    os.unlink(tmp)
                os.symlink(text.target, tmp)
                staged.append((tmp, final))
                continue
            data = text if isinstance(text, bytes) else text.encode("utf-8")
            if not os.path.islink(final) and _same_content(final, data):
                continue
            rewritten.add(os.path.normpath(final))
            os.makedirs(os.path.dirname(final), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(final), prefix=f".{os.path.basename(name)}.", suffix=".tmp")
            staged.append((tmp, final))
            with os.fdopen(fd, "wb") as fh:  # bytes as they are: JSON comes from orjson as UTF-8
                fh.write(data)
            os.chmod(tmp, 0o666 & ~mask)
        for tmp, final in staged:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
    return finals


def _same_link(path: str, target: str) -> bool:
    try:
        return os.path.islink(path) and os.readlink(path) == target
    except OSError:
        return False


def _same_content(path: str, data: bytes) -> bool:
    try:
        if os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as fh:
            return fh.read() == data
    except OSError:
        return False


def replace_file(path: str, text: str) -> None:
    """Write `text` over `path` through a temporary file and a rename, keeping its permissions."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    mode = os.stat(path).st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
