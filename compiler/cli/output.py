"""Writing outputs: atomic, all-or-nothing file writes (a compile's outputs, a formatted file)."""

from __future__ import annotations

import os
import stat

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
    # Directories known to exist (one mkdir per directory, not per file), and those this call
    # made: nothing is in them yet, so nothing there is compared with what is on disk.
    made: set[str] = set()
    fresh: set[str] = set()
    _makedirs(os.path.dirname(os.path.join(out_dir, "-")), made, fresh)
    pid = os.getpid()
    staged: list[tuple[str, str]] = []
    finals: list[str] = []
    try:
        rewritten: set[str] = set()
        for name, text in files.items():
            final = os.path.join(out_dir, name)
            finals.append(final)
            directory = os.path.dirname(final)
            _makedirs(directory, made, fresh)
            existing = directory not in fresh
            if not isinstance(text, (str, bytes)):   # a Link
                target = os.path.normpath(os.path.join(directory, text.target))
                if existing and _same_link(final, text.target) and target not in rewritten:
                    continue
                tmp = os.path.join(directory, f".{os.path.basename(name)}.{pid}.link.tmp")
                if existing and os.path.lexists(tmp):
                    os.unlink(tmp)
                os.symlink(text.target, tmp)
                staged.append((tmp, final))
                continue
            data = text if isinstance(text, bytes) else text.encode("utf-8")
            if existing and _same_content(final, data):
                continue
            rewritten.add(os.path.normpath(final))
            fd, tmp_file = _new_file(directory, os.path.basename(name), pid)
            staged.append((tmp_file, final))
            _write(fd, data)
        for tmp_path, final in staged:
            os.replace(tmp_path, final)
    except BaseException:
        for tmp_path, _ in staged:
            try:
                os.unlink(tmp_path)
            except OSError:
                pass
        raise
    return finals


def _makedirs(directory: str, made: set[str], fresh: set[str]) -> None:
    """Make `directory` (and its parents) unless known to exist; note it in `fresh` when this
    call made it."""
    if directory in made:
        return
    try:
        os.mkdir(directory)
        fresh.add(directory)
    except FileExistsError:
        if not os.path.isdir(directory):
            raise
    except FileNotFoundError:   # a parent is missing too
        os.makedirs(directory, exist_ok=True)
        fresh.add(directory)
    made.add(directory)


def _new_file(directory: str, base: str, pid: int) -> tuple[int, str]:
    """(descriptor, path) of a new temporary file beside the output: created with O_EXCL under
    a name of this process, with the usual 0666 & ~umask permissions; a leftover of that name
    (a crashed run of the same pid) makes it fall back to a random name."""
    path = os.path.join(directory, f".{base}.{pid}.tmp")
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), path
    except FileExistsError:
        import tempfile

        fd, path = tempfile.mkstemp(dir=directory, prefix=f".{base}.", suffix=".tmp")
        mask = os.umask(0)  # mkstemp makes 0600 files; outputs get the usual 0666 & ~umask
        os.umask(mask)
        os.chmod(path, 0o666 & ~mask)
        return fd, path


def _write(fd: int, data: bytes) -> None:
    """All of `data` into `fd` (bytes as they are: JSON comes from orjson as UTF-8), then close it."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _same_link(path: str, target: str) -> bool:
    try:
        return os.path.islink(path) and os.readlink(path) == target
    except OSError:
        return False


def _same_content(path: str, data: bytes) -> bool:
    """Whether `path` is a regular file (not a link) holding exactly `data`."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
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
