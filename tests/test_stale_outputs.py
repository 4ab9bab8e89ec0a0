"""`meshc compile … -o DIR` leaves DIR holding exactly the last compile's output (issue 17).

A target's compile records what it wrote in `DIR/.meshc-manifest`; the next compile of the whole
output (`--target istio|gateway-api`, `--emit envoy|native --proxy all`) removes the files the
earlier one wrote and this one did not (a service removed since), once its own files are in place,
and touches nothing else: not a file of the user's, not a file meshc wrote that was edited since
(kept, with a warning). A compile with an error writes and removes nothing. Real files in a
temporary directory, the CLI in process.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from compiler.cli.output import MANIFEST
from tests.test_explain import run_cli

TWO = ('service a {\n  port 80\n  endpoints ["127.0.0.1:1"]\n}\n'
       'service b {\n  port 80\n  namespace "other"\n  endpoints ["127.0.0.1:2"]\n}\n')
ONE = 'service a {\n  port 80\n  endpoints ["127.0.0.1:1"]\n}\n'


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file under root: relative path -> bytes (a symbolic link: its target)."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_bytes()
    return out


def compile_to(tmp_path: Path, text: str, *args: str) -> tuple[int, str]:
    src = tmp_path / "p.mesh"
    src.write_text(text)
    code, _, err = run_cli(["compile", str(src), *args, "-o", str(tmp_path / "out")])
    return code, err


def test_a_removed_service_leaves_no_yaml_and_other_files_stay(tmp_path):
    out = tmp_path / "out"
    for target in (["--target", "istio"], ["--target", "gateway-api"]):
        assert compile_to(tmp_path, TWO, *target)[0] == 0
        assert (out / "other" / "b.yaml").is_file()
        (out / "mine.yaml").write_text("kind: ConfigMap\n")   # the user's, in the same directory
        code, err = compile_to(tmp_path, ONE, *target)
        assert code == 0
        assert "removed 1 stale file of an earlier compile: other/b.yaml" in err
        assert not (out / "other").exists(), "an emptied namespace directory goes too"
        assert sorted(tree(out)) == [MANIFEST, "default/a.yaml", "mine.yaml"]
        assert (out / "mine.yaml").read_text() == "kind: ConfigMap\n"
        listed = json.loads((out / MANIFEST).read_text())["files"]
        assert sorted(listed) == ["default/a.yaml"]
        (out / "mine.yaml").unlink()


def test_another_target_into_the_same_directory_replaces_the_first_ones_files(tmp_path):
    out = tmp_path / "out"
    assert compile_to(tmp_path, TWO, "--target", "istio")[0] == 0
    istio = tree(out)
    assert compile_to(tmp_path, ONE, "--target", "gateway-api")[0] == 0
    after = tree(out)
    assert sorted(after) == [MANIFEST, "default/a.yaml"]
    assert after["default/a.yaml"] != istio["default/a.yaml"] and b"HTTPRoute" in after["default/a.yaml"]


def test_an_edited_stale_file_is_kept_and_reported(tmp_path):
    out = tmp_path / "out"
    compile_to(tmp_path, TWO, "--target", "istio")
    (out / "other" / "b.yaml").write_text("# edited by hand\n")
    code, err = compile_to(tmp_path, ONE, "--target", "istio")
    assert code == 0
    assert f"warning: kept {out / 'other' / 'b.yaml'}: an earlier compile wrote it, and it changed since" in err
    assert (out / "other" / "b.yaml").read_text() == "# edited by hand\n"
    assert sorted(json.loads((out / MANIFEST).read_text())["files"]) == ["default/a.yaml"]
    code, err = compile_to(tmp_path, ONE, "--target", "istio")   # no longer meshc's: not mentioned again
    assert code == 0 and "b.yaml" not in err and (out / "other" / "b.yaml").exists()


def test_a_compile_with_an_error_writes_and_removes_nothing(tmp_path):
    out = tmp_path / "out"
    compile_to(tmp_path, TWO, "--target", "istio")
    before = tree(out)
    code, _ = compile_to(tmp_path, ONE + "service c {\n  port 80\n  endpoints [\"127.0.0.1:3\"]\n  bogus\n}\n",
                         "--target", "istio")
    assert code == 1 and tree(out) == before
    # an error of the target (here a name Kubernetes rejects: E0901) is no different
    code, _ = compile_to(tmp_path, 'service Bad_Name {\n  port 80\n  endpoints ["127.0.0.1:1"]\n}\n',
                         "--target", "istio")
    assert code == 1 and tree(out) == before


def test_envoy_and_native_prune_with_all_proxies_and_keep_named_ones(tmp_path):
    out = tmp_path / "out"
    for emit, suffix in (("envoy", ".envoy.json"), ("native", ".native.json")):
        assert compile_to(tmp_path, TWO, "--emit", emit, "--proxy", "all")[0] == 0
        assert (out / f"b{suffix}").is_file()
        # a compile of named proxies adds to the directory, so that sidecars compiled one at a
        # time can share it: b's files stay (and stay listed)
        assert compile_to(tmp_path, TWO, "--emit", emit, "--proxy", "a")[0] == 0
        assert (out / f"b{suffix}").is_file() and f"b{suffix}" in json.loads((out / MANIFEST).read_text())["files"]
        # the whole fleet again, without b: b's files go, the fleet's stay
        code, err = compile_to(tmp_path, ONE, "--emit", emit, "--proxy", "all")
        assert code == 0 and "stale file" in err
        assert not (out / f"b{suffix}").exists() and (out / f"a{suffix}").is_file()
        listed = json.loads((out / MANIFEST).read_text())["files"]
        assert sorted(listed) == sorted(p for p in tree(out) if p != MANIFEST)
        assert not any(p.startswith("xds/b/") for p in tree(out))
        shutil.rmtree(out)   # the next round starts empty


def test_a_manifest_never_reaches_outside_the_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.yaml"
    victim.write_text("x")
    digest = _digest(victim)
    (out / MANIFEST).write_text(json.dumps({"meshc": 1, "files": {"../victim.yaml": digest,
                                                                  str(victim): digest}}))
    assert compile_to(tmp_path, ONE, "--target", "istio")[0] == 0
    assert victim.read_text() == "x"
    # a manifest that is not meshc's (not JSON) is ignored, and replaced
    (out / MANIFEST).write_text("not json")
    assert compile_to(tmp_path, ONE, "--target", "istio")[0] == 0
    assert json.loads((out / MANIFEST).read_text())["meshc"] == 1


def _digest(path: Path) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_manifest_path_through_a_symlinked_directory_removes_nothing_outside(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    src = tmp_path / "p.mesh"
    src.write_text(ONE)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.yaml").write_text("x")
    (out / "up").symlink_to("..")
    (out / "link").symlink_to(outside)
    (out / MANIFEST).write_text(json.dumps({"meshc": 1, "files": {
        "up/p.mesh": _digest(src), "link/victim.yaml": _digest(outside / "victim.yaml")}}))
    code, err = compile_to(tmp_path, ONE, "--target", "istio")
    assert code == 0 and "stale" not in err
    assert src.read_text() == ONE and (outside / "victim.yaml").read_text() == "x"


def test_a_failing_rename_is_found_before_any_file_is_written(tmp_path):
    out = tmp_path / "out"
    assert compile_to(tmp_path, ONE, "--target", "istio")[0] == 0
    before = tree(out)
    (out / "other" / "b.yaml" / "keep").mkdir(parents=True)
    code, err = compile_to(tmp_path, TWO, "--target", "istio")
    assert code == 2 and f"cannot write to {out / 'other' / 'b.yaml'}: Is a directory" in err
    assert tree(out) == before
    (out / "other" / "b.yaml" / "keep").rmdir()
    (out / "other" / "b.yaml").rmdir()
    (out / MANIFEST).unlink()
    (out / MANIFEST).mkdir()
    code, err = compile_to(tmp_path, TWO, "--target", "istio")
    assert code == 2 and f"cannot write to {out / MANIFEST}: Is a directory" in err
    assert not (out / "other" / "b.yaml").exists()


def test_a_manifest_key_naming_a_new_file_another_way_keeps_it(tmp_path):
    out = tmp_path / "out"
    assert compile_to(tmp_path, ONE, "--target", "istio")[0] == 0
    digest = _digest(out / "default" / "a.yaml")
    for key in ("./default/a.yaml", "default//a.yaml", "default/./a.yaml"):
        (out / MANIFEST).write_text(json.dumps({"meshc": 1, "files": {key: digest}}))
        code, err = compile_to(tmp_path, ONE, "--target", "istio")
        assert code == 0 and "stale" not in err and (out / "default" / "a.yaml").is_file(), key


def test_a_deeply_nested_manifest_is_ignored(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text("[" * 100000)
    code, _ = compile_to(tmp_path, ONE, "--target", "istio")
    assert code == 0 and json.loads((out / MANIFEST).read_text())["meshc"] == 1
