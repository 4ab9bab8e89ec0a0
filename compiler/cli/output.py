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
            # before any rename (every file or none); a directory this compile made holds none
            if existing and os.path.isdir(final) and not os.path.islink(final):
                import errno

                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), final)
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
    """Whether `path` is a regular file (not a link) holding exactly `data`. Read and compared a
    piece at a time: a second copy of a large output (the 200 MB IR of 10,000 services) in memory
    would raise the compile's peak by its size."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
            return False
        view = memoryview(data)
        piece = bytearray(min(len(data), _COMPARE_BYTES))   # (a bytearray compares with a view by memcmp)
        with open(path, "rb", buffering=0) as fh:
            for start in range(0, len(data), _COMPARE_BYTES):
                want = view[start:start + _COMPARE_BYTES]
                if len(want) < len(piece):
                    piece = bytearray(len(want))
                if fh.readinto(piece) != len(want) or piece != want:
                    return False
            return fh.read(1) == b""
    except OSError:
        return False


_COMPARE_BYTES = 1 << 20


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


# ---- the files a compile wrote into `-o DIR`, and the stale ones of an earlier compile ------------

# `DIR/.meshc-manifest`: JSON {"meshc": 1, "files": {RELATIVE-PATH: "sha256:HEX" | "link:TARGET"}},
# the files the targets' compiles (envoy, native, istio, gateway-api) wrote there. No `.json`,
# `.yaml` or `.yml` suffix: `kubectl apply -f DIR` reads only files with those.
MANIFEST = ".meshc-manifest"
# `meshc import istio -o DIR`'s own: an import and a compile into one directory never take each
# other's files for stale (DIR may hold the imported sources and the YAML compiled from them)
IMPORT_MANIFEST = ".meshc-import-manifest"
MANIFESTS = (MANIFEST, IMPORT_MANIFEST)


def _fingerprint(data: str | bytes | Link) -> str:
    import hashlib

    if not isinstance(data, (str, bytes)):
        return f"link:{data.target}"
    raw = data if isinstance(data, bytes) else data.encode("utf-8")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _on_disk(path: str) -> str | None:
    """The fingerprint of what is at `path` now (None: nothing, or unreadable)."""
    try:
        if os.path.islink(path):
            return f"link:{os.readlink(path)}"
        with open(path, "rb") as fh:
            return _fingerprint(fh.read())
    except OSError:
        return None


def read_manifest(out_dir: str, manifest: str = MANIFEST) -> dict[str, str]:
    """The files an earlier compile recorded in `out_dir` (empty: none, or a manifest meshc did not
    write, which is then ignored rather than trusted)."""
    import json

    try:
        with open(os.path.join(out_dir, manifest), encoding="utf-8") as fh:
            text = fh.read(_MANIFEST_MAX + 1)
        if len(text) > _MANIFEST_MAX:
            return {}
        doc = json.loads(text)
    except (OSError, ValueError, RecursionError):   # (RecursionError: nested too deeply)
        return {}
    files = doc.get("files") if isinstance(doc, dict) and doc.get("meshc") == 1 else None
    if not isinstance(files, dict):
        return {}
    # keys normalised (`./a.yaml`, `x//a.yaml`): one file has one key, so a file just written is never stale
    return {os.path.normpath(k): v for k, v in files.items()
            if isinstance(k, str) and isinstance(v, str) and _inside(k)}


_MANIFEST_MAX = 64 << 20   # characters; a larger manifest is not one meshc wrote


def _no_symlinked_parent(out_dir: str, rel: str) -> bool:
    """`out_dir/rel`'s directory is the directory it names inside `out_dir`, reached through no
    symbolic link (which could lead outside `out_dir`): a stale file is removed only then."""
    root = os.path.realpath(out_dir)
    parent = os.path.dirname(rel)
    return os.path.realpath(os.path.join(out_dir, parent)) == os.path.normpath(os.path.join(root, parent))


def _inside(rel: str) -> bool:
    """A relative path that stays inside the output directory (a manifest is never trusted further)."""
    norm = os.path.normpath(rel)
    return bool(rel) and not os.path.isabs(rel) and norm != "." and not norm.startswith(("..", os.sep)) \
        and norm not in MANIFESTS


def write_tracked(out_dir: str, files: Mapping[str, str | bytes | Link], whole: bool,
                  manifest: str = MANIFEST) -> tuple[list[str], list[str], list[str], list[str]]:
    """`write_all` plus the manifest, then the stale files removed: (written, removed, kept: changed
    since, unremoved: could not be removed, with the reason; still listed).

    `whole`: this compile's files are the whole output (`--target istio|gateway-api`, `--proxy all`),
    so every file the previous manifest lists and this compile did not write is stale: removed if
    it is still what meshc wrote (same content or link), kept and reported if it changed since (a
    file someone edited is theirs). Otherwise (named proxies) the files of the earlier compiles stay
    and stay listed. Nothing is removed before every new file is in place (a watching proxy follows
    its bootstrap to the new files first), and no file the manifest does not list is touched."""
    old = read_manifest(out_dir, manifest)
    if manifest == MANIFEST:   # a compile writes no `.mesh`: those are the sources an import of an
        old = {k: v for k, v in old.items() if not k.endswith(".mesh")}   # earlier meshc listed here
    new = {os.path.normpath(name): _fingerprint(data) for name, data in files.items()}
    stale = sorted(set(old) - set(new))
    present = {k: v for k, v in old.items() if k in stale and _no_symlinked_parent(out_dir, k)
               and os.path.lexists(os.path.join(out_dir, k))}
    removable = [rel for rel in present if _on_disk(os.path.join(out_dir, rel)) == old[rel]] if whole else []
    # Listed first with the files still to remove, so that a compile stopped before the removals
    # (or a removal that fails) leaves them listed for the next one; and renamed first, listing
    # the new files too, so that a compile that fails among its renames leaves every file it
    # wrote listed (removed by a later compile that no longer writes it).
    listed = {**({k: old[k] for k in removable} if whole else present), **new}
    written = write_all(out_dir, {manifest: _manifest(listed), **files})[1:]
    # (an lstat per file written: only when there is something to remove)
    just_written = {_identity(path) for path in written} - {None} if whole and removable else set()
    removed: list[str] = []
    kept: list[str] = []
    failed: dict[str, str] = {}
    unremoved: list[str] = []
    for rel in present if whole else []:
        path = os.path.join(out_dir, rel)
        if rel not in removable:
            kept.append(path)
            continue
        if _identity(path) in just_written:   # the same file as one just written, named another way
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as err:   # still meshc's: listed, and removed by a later compile
            failed[rel] = old[rel]
            unremoved.append(f"{path}: {err.strerror or err}")
            continue
        removed.append(path)
        _remove_empty_parents(out_dir, os.path.dirname(path))
    if whole and removable:
        write_all(out_dir, {manifest: _manifest({**failed, **new})})
    return written, removed, kept, unremoved


def report_stale(out_dir: str, removed: list[str], kept: list[str], unremoved: list[str], command: str,
                 manifest: str = MANIFEST) -> None:
    """On standard error: what `write_tracked` removed, kept and could not remove."""
    import sys

    if removed:
        print(f"meshc: removed {len(removed)} stale file{'' if len(removed) == 1 else 's'} of an earlier "
              f"{command}: {', '.join(os.path.relpath(p, out_dir) for p in removed)}", file=sys.stderr)
    for path in kept:
        print(f"meshc: warning: kept {path}: an earlier {command} wrote it, and it changed since "
              f"(no longer listed in {os.path.join(out_dir, manifest)})", file=sys.stderr)
    for text in unremoved:
        print(f"meshc: warning: could not remove the stale file {text} (still listed: the next {command} "
              "tries again)", file=sys.stderr)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _manifest(listed: dict[str, str]) -> str:
    import json

    return json.dumps({"meshc": 1, "files": dict(sorted(listed.items()))}, indent=1, sort_keys=True) + "\n"


def _remove_empty_parents(out_dir: str, directory: str) -> None:
    root = os.path.abspath(out_dir)
    here = os.path.abspath(directory)
    while here != root and here.startswith(root + os.sep):
        try:
            os.rmdir(here)   # only an empty directory
        except OSError:
            return
        here = os.path.dirname(here)
