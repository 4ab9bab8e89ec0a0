"""compiler/cli/output.py's write_all on a real directory: modes, files left alone, links
replaced, a leftover temporary file of the same process id, nothing staged left behind."""

from __future__ import annotations

import os
import stat

from compiler.backends.base import Link
from compiler.cli.output import write_all


def _entries(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root) for d, dirs, names in os.walk(root) for n in dirs + names}


def test_files_get_the_usual_mode_and_nested_directories(tmp_path):
    old = os.umask(0o027)
    try:
        written = write_all(str(tmp_path), {"a.json": b"{}\n", "x/y/b.json": "b\n", "x/y/c.json": b"c\n"})
    finally:
        os.umask(old)
    assert written == [str(tmp_path / "a.json"), str(tmp_path / "x/y/b.json"), str(tmp_path / "x/y/c.json")]
    assert (tmp_path / "x/y/b.json").read_bytes() == b"b\n"
    for name in ("a.json", "x/y/b.json", "x/y/c.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name
    assert _entries(tmp_path) == {"a.json", "x", "x/y", "x/y/b.json", "x/y/c.json"}   # no temporary files


def test_unchanged_file_is_left_alone_and_a_link_with_the_same_content_is_replaced(tmp_path):
    write_all(str(tmp_path), {"same.json": b"1\n", "target.json": b"2\n"})
    inode = (tmp_path / "same.json").stat().st_ino
    os.symlink("target.json", tmp_path / "linked.json")   # a link whose target holds the new content
    write_all(str(tmp_path), {"same.json": b"1\n", "linked.json": b"2\n"})
    assert (tmp_path / "same.json").stat().st_ino == inode
    assert not (tmp_path / "linked.json").is_symlink()
    assert (tmp_path / "linked.json").read_bytes() == b"2\n"


def test_a_large_file_is_compared_piece_by_piece_to_its_last_byte(tmp_path):
    """Over the size of one compared piece (1 MiB), a difference in the last piece still counts: the
    file is rewritten; the same bytes leave it alone."""
    data = bytes(range(256)) * (5 * 4096 + 1)   # 5 MiB and 256 bytes
    write_all(str(tmp_path), {"big.json": data})
    inode = (tmp_path / "big.json").stat().st_ino
    write_all(str(tmp_path), {"big.json": data})
    assert (tmp_path / "big.json").stat().st_ino == inode
    changed = data[:-1] + b"!"
    write_all(str(tmp_path), {"big.json": changed})
    assert (tmp_path / "big.json").stat().st_ino != inode
    assert (tmp_path / "big.json").read_bytes() == changed


def test_a_leftover_temporary_file_of_this_process_id_does_not_stop_the_write(tmp_path):
    leftover = tmp_path / f".out.json.{os.getpid()}.tmp"
    leftover.write_bytes(b"half")
    old = os.umask(0o022)
    try:
        write_all(str(tmp_path), {"out.json": b"whole\n", "link.json": Link("out.json")})
    finally:
        os.umask(old)
    assert (tmp_path / "out.json").read_bytes() == b"whole\n"
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o644
    assert os.readlink(tmp_path / "link.json") == "out.json"
    assert _entries(tmp_path) == {"out.json", "link.json", leftover.name}   # the leftover is not ours to remove


def test_a_tree_written_into_new_directories_is_left_alone_the_second_time(tmp_path):
    out = tmp_path / "new" / "out"   # made by write_all, parents included
    files = {"a.json": b"a\n", "x/b.json": b"b\n", "x/l.json": Link("b.json")}
    write_all(str(out), files)
    assert os.readlink(out / "x/l.json") == "b.json" and (out / "x/l.json").read_bytes() == b"b\n"
    inodes = {name: os.lstat(out / name).st_ino for name in files}
    write_all(str(out), files)
    assert {name: os.lstat(out / name).st_ino for name in files} == inodes
    write_all(str(out), {**files, "x/b.json": b"b2\n"})   # the link's target changed: the link is replaced too
    assert os.lstat(out / "x/l.json").st_ino != inodes["x/l.json"]
    assert (out / "x/l.json").read_bytes() == b"b2\n"
