"""The development CA on disk: the CA directory, and the identity directories it issues into.

CA directory (0700): `ca.pem` (the certificate) and `ca-key.pem` (0600). A CA key that group or
others may read, or a CA directory they may write (where anyone could replace the CA or its key),
is refused as ssh refuses such a key, with the `chmod` that fixes it.
Identity directory (0755, its versions too: the sidecar, perhaps another user, reads it), in the
Kubernetes secret-volume layout, so that a rotation is ONE atomic rename
(Envoy watches the directory; the native proxy polls the three files):

    OUT/..2026_11_26_12_00_00.123456/{cert.pem, key.pem (0600), ca.pem}   a version
    OUT/..data -> ..2026_11_26_12_00_00.123456                            the current version
    OUT/cert.pem -> ..data/cert.pem   (and key.pem, ca.pem)               what readers open

Every operation checks everything it can before it writes, and undoes its own writes when a
write fails: an error leaves the directories as they were.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shlex
import shutil
import stat
import tempfile
from dataclasses import dataclass

from compiler.ca import certs as build
from compiler.ca.certs import Ca, CaError, CaFileError, CertInfo

CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
IDENTITY_FILES = ("cert.pem", "key.pem", "ca.pem")
DATA = "..data"
CA_DIR_MODE = 0o700        # the CA directory and the directories made for it
IDENTITY_DIR_MODE = 0o755  # an identity directory, its versions and the directories made for it
_DATA_TMP = "..data_tmp"
_VERSION = re.compile(r"\.\.\d{4}(_\d\d){5}\.\d{6}\Z")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---- the CA directory ----------------------------------------------------------------------

def init_ca(ca_dir: str, trust_domain: str, days: int, force: bool, now: dt.datetime) -> CertInfo:
    """Make a CA in `ca_dir`; an existing one is replaced only with `force`."""
    build.check_trust_domain(trust_domain)
    existing = [n for n in (CA_CERT, CA_KEY) if os.path.lexists(os.path.join(ca_dir, n))]
    if existing and not force:
        raise CaError(f"{os.path.join(ca_dir, existing[0])} already exists: give --force to replace the CA "
                      "(every identity it issued must then be issued again)")
    if os.path.exists(ca_dir) and not os.path.isdir(ca_dir):
        raise CaFileError(f"{ca_dir}: not a directory")
    if os.path.isdir(ca_dir):
        check_ca_dir(ca_dir)
    cert_pem, key_pem = build.new_ca(trust_domain, days, now)
    with _io_errors(ca_dir):
        created = _makedirs(ca_dir, CA_DIR_MODE)
        staged = []
        try:
            staged = [_stage(os.path.join(ca_dir, CA_KEY), key_pem, 0o600),
                      _stage(os.path.join(ca_dir, CA_CERT), cert_pem, 0o644)]
            for tmp, final in staged:  # key first: a reader that sees the new cert finds its key
                os.rename(tmp, final)
        except BaseException:
            for tmp, _ in staged:
                _remove(tmp)
            _remove_dirs(created)
            raise
        _fsync_dir(ca_dir)
    return build.cert_info(build.load_cert(cert_pem, CA_CERT))


def read_ca(ca_dir: str) -> Ca:
    """The CA of `ca_dir`, checked (compiler.ca.certs.load_ca)."""
    if not os.path.isdir(ca_dir):
        raise CaFileError(f"{ca_dir}: no such CA directory (make one with `meshc ca init {ca_dir}`)")
    check_ca_dir(ca_dir)
    cert_path, key_path = os.path.join(ca_dir, CA_CERT), os.path.join(ca_dir, CA_KEY)
    cert_pem = read_file(cert_path)
    check_private(key_path)
    return build.load_ca(cert_pem, read_file(key_path), cert_path, key_path)


def check_ca_dir(ca_dir: str) -> None:
    """CaError for a CA directory that group or others may write: anyone could replace the CA."""
    mode = _mode(ca_dir)
    if mode is not None and mode & 0o022:
        raise CaError(f"{ca_dir}: the CA directory is writable by group or others (mode {mode:04o}): anyone "
                      f"could replace {CA_CERT} or {CA_KEY}; run `chmod 700 {_quote(ca_dir)}`")


def check_private(key_path: str) -> None:
    """CaError for a private key that group or others may read (ssh refuses such a key too)."""
    mode = _mode(key_path, regular=True)
    if mode is not None and mode & 0o077:
        raise CaError(f"{key_path}: the private key is accessible by group or others (mode {mode:04o}): "
                      f"anyone on this host could use it; run `chmod 600 {_quote(key_path)}`")


def _mode(path: str, regular: bool = False) -> int | None:
    """The permission bits of `path` (through symlinks); None when it cannot be stat'ed or, with
    `regular`, is not a regular file (the read that follows then says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if regular and not stat.S_ISREG(st.st_mode):
        return None
    return stat.S_IMODE(st.st_mode)


def _quote(path: str) -> str:
    return shlex.quote(path)


# ---- identity directories ------------------------------------------------------------------

@dataclass(frozen=True)
class Rotation:
    """What `rotate_identity` did: `info` is the new certificate, or the current one when not due."""
    rotated: bool
    reason: str                      # why it rotated, or ""
    info: CertInfo
    due_at: dt.datetime | None       # when not rotated: when it will be due


def issue_identity(ca: Ca, out_dir: str, spiffe_id: str, hours: float, now: dt.datetime) -> CertInfo:
    """Issue a certificate for `spiffe_id` into `out_dir` (a new or existing identity directory)."""
    cert_pem, key_pem = build.issue(ca, spiffe_id, hours, now)
    write_identity(out_dir, {"cert.pem": (cert_pem, 0o644), "key.pem": (key_pem, 0o600),
                             "ca.pem": (ca.cert_pem, 0o644)}, now)
    return build.cert_info(build.load_cert(cert_pem, "issued certificate"))


def read_identity(out_dir: str) -> CertInfo:
    """The current certificate of an identity directory written by `issue_identity`."""
    return build.cert_info(_current_cert(out_dir))


def _current_cert(out_dir: str):
    if not os.path.isdir(out_dir):
        raise CaFileError(f"{out_dir}: no such directory")
    if _layout(out_dir) is None:
        raise CaError(f"{out_dir}: not an identity directory written by `meshc ca issue` (no `{DATA}` link)")
    path = os.path.join(out_dir, "cert.pem")
    return build.load_cert(read_file(path), path)


def rotate_identity(ca: Ca, out_dir: str, hours: float | None, before: float, force: bool,
                    now: dt.datetime) -> Rotation:
    """Issue a new certificate with the same SPIFFE ID when the current one is due (or `force`).

    Due: less than `before` of its lifetime left, or not signed by this CA (the CA was replaced).
    `hours` None keeps the current lifetime.
    """
    cert = _current_cert(out_dir)
    current = build.cert_info(cert)
    if current.spiffe_id is None:
        raise CaError(f"{os.path.join(out_dir, 'cert.pem')}: no single URI SAN, so no SPIFFE ID to keep")
    build.check_spiffe_id(current.spiffe_id, ca.trust_domain)
    due_at = build.rotation_due(current, now, before)
    if force:
        reason = "forced"
    elif not build.issued_by(cert, ca):
        reason = "issued by another CA"
    elif due_at is None:
        reason = "due"
    else:
        return Rotation(False, "", current, due_at)
    hours = build.lifetime_hours(current) if hours is None else hours
    return Rotation(True, reason, issue_identity(ca, out_dir, current.spiffe_id, hours, now), None)


def write_identity(out_dir: str, files: dict[str, tuple[bytes, int]], now: dt.datetime) -> str:
    """Write a new version of an identity directory, switch `..data` to it with one rename, then
    remove the version it replaced. Returns the new version's path."""
    previous = _layout(out_dir) if os.path.isdir(out_dir) else None
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise CaFileError(f"{out_dir}: not a directory")
    with _io_errors(out_dir):
        created = _makedirs(out_dir, IDENTITY_DIR_MODE)
        version = tmp_link = None
        try:
            version = _new_version(out_dir, now)
            for name, (data, mode) in files.items():
                # temporary files inside the version, not yet linked: a watcher of out_dir
                # sees nothing until the rename of ..data below
                os.rename(*_stage(os.path.join(version, name), data, mode))
            _fsync_dir(version)
            tmp_link = os.path.join(out_dir, _DATA_TMP)
            _remove(tmp_link)  # a leftover of an interrupted run
            os.symlink(os.path.basename(version), tmp_link)
            os.rename(tmp_link, os.path.join(out_dir, DATA))  # the switch
        except BaseException:
            if tmp_link is not None:
                _remove(tmp_link)
            if version is not None:
                shutil.rmtree(version, ignore_errors=True)
            _remove_dirs(created)
            raise
        for name in files:  # the first issue only: later versions reuse these links
            link = os.path.join(out_dir, name)
            if not os.path.islink(link):
                _remove(link + ".tmp")
                os.symlink(os.path.join(DATA, name), link + ".tmp")
                os.rename(link + ".tmp", link)
        _fsync_dir(out_dir)
        if previous is not None and previous != os.path.basename(version):
            shutil.rmtree(os.path.join(out_dir, previous), ignore_errors=True)
    return version


def _layout(out_dir: str) -> str | None:
    """The current version's name, None for a directory without one (new); CaError for a
    directory whose files are not this layout (meshc would not overwrite them)."""
    data = os.path.join(out_dir, DATA)
    current = None
    if os.path.lexists(data):
        current = os.readlink(data) if os.path.islink(data) else ""
        if not _VERSION.match(current):
            raise CaError(f"{data}: not a link to a version directory: {out_dir} was not written by `meshc ca issue`")
    for name in IDENTITY_FILES:
        path = os.path.join(out_dir, name)
        if os.path.lexists(path) and not (os.path.islink(path) and os.readlink(path) == os.path.join(DATA, name)):
            raise CaError(f"{path}: not a link into `{DATA}`: {out_dir} was not written by `meshc ca issue` "
                          "(issue into a new or empty directory)")
    return current


def _new_version(out_dir: str, now: dt.datetime) -> str:
    """A new version directory named after `now` (the next microsecond when that name is taken)."""
    for step in range(1000):
        path = os.path.join(out_dir, (now + dt.timedelta(microseconds=step)).strftime("..%Y_%m_%d_%H_%M_%S.%f"))
        try:
            os.mkdir(path, IDENTITY_DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(path, IDENTITY_DIR_MODE)   # exactly, whatever the umask
        return path
    raise CaFileError(f"{out_dir}: cannot make a new version directory (too many versions)")


# ---- file primitives -----------------------------------------------------------------------

def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write `path` with `mode` through a temporary file and a rename (see _stage)."""
    tmp, final = _stage(path, data, mode)
    try:
        os.rename(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def _stage(path: str, data: bytes, mode: int) -> tuple[str, str]:
    """A temporary file next to `path` holding `data`, synced, with `mode` set before the first
    byte (mkstemp makes it 0600 whatever the umask: a key is never readable by others, even
    for a moment). Returns (temporary, final) for the caller's rename."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        _remove(tmp)
        raise
    return tmp, path


def read_file(path: str) -> bytes:
    """A file's bytes; CaFileError with a one-line reason when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise CaFileError(f"{path}: no such file") from None
    except OSError as err:
        raise CaFileError(f"cannot read {path}: {(err.strerror or str(err)).lower()}") from None


@contextlib.contextmanager
def _io_errors(where: str):
    """An OSError while writing becomes a one-line CaFileError naming the directory."""
    try:
        yield
    except OSError as err:
        inside = err.filename and os.path.abspath(err.filename).startswith(os.path.join(os.path.abspath(where), ""))
        name = f" ({err.filename})" if err.filename and not inside and err.filename != where else ""
        raise CaFileError(f"cannot write to {where}: {(err.strerror or str(err)).lower()}{name}") from None


def _makedirs(path: str, mode: int) -> list[str]:
    """Make `path` and its missing parents with exactly `mode` (not what the umask leaves of it:
    under umask 000 a plain mkdir gives 0777, a directory anyone may change); returns those made,
    deepest first (to undo them)."""
    missing, p = [], os.path.abspath(path)
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    made: list[str] = []
    try:
        for d in reversed(missing):
            os.mkdir(d, mode)
            made.insert(0, d)
            os.chmod(d, mode)
    except BaseException:
        _remove_dirs(made)
        raise
    return made


def _remove_dirs(dirs: list[str]) -> None:
    for d in dirs:
        with contextlib.suppress(OSError):
            os.rmdir(d)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_dir(path: str) -> None:
    """Make the renames in `path` durable (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
