"""Writing outputs: atomic, all-or-nothing file writes (a compile's outputs, a formatted file)."""

from __future__ import annotations

import os

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from collections.abc import Mapping


def write_all(out_dir: str, files: Mapping[str, str | bytes]) -> list[str]:
    """Write every file or none: each goes to a temporary file first, then all are renamed.

    A failure before the renames leaves no output at all; rename is atomic per file, so a
    reader never sees a half-written file. Files are renamed in the order given (a backend
    orders them so that a watching proxy never sees a reference before its target), and a file
    whose content is already on disk is left alone, so that a recompile does not make a
    watching proxy reload what did not change. Returns the paths of all the files, in order.
    """
    import tempfile

    os.makedirs(out_dir, exist_ok=True)
    mask = os.umask(0)  # mkstemp makes 0600 files; outputs get the usual 0666 & ~umask
    os.umask(mask)
    staged: list[tuple[str, str]] = []
    finals: list[str] = []
    try:
        for name, text in files.items():
            final = os.path.join(out_dir, name)
            data = text if isinstance(text, bytes) else text.encode("utf-8")
            finals.append(final)
            if _same_content(final, data):
                continue
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
