"""The pre-commit hooks of .pre-commit-hooks.yaml, run by pre-commit itself against a temporary
git repository. pre-commit installs meshc from this checkout (`pre-commit try-repo`) into its own
virtual environment, exactly as a user's hook would be installed from a tag."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MESSY = 'service a { port 80  endpoints ["10.0.0.1:80"] }\n'
RETRYING = """\
service cart {
  port 8080
  endpoints ["10.0.0.1:8080"]
  retry_budget { percent 20% }
}

routes cart {
  route read {
    match { method GET }
    to cart
    retry { attempts 2  on [5xx] }
  }
}
"""
BROKEN = "service b { port }\n"
FAILING_TEST = """\
import "cart.mesh"

test "reads are retried" {
  request { from service cart  GET "http://cart/items" }
  expect { route cart.read  retries 3 }
}
"""


def test_the_hooks_file_declares_the_four_hooks():
    with open(os.path.join(ROOT, ".pre-commit-hooks.yaml"), encoding="utf-8") as fh:
        hooks = {h["id"]: h for h in yaml.safe_load(fh)}
    assert set(hooks) == {"meshc-fmt", "meshc-lint", "meshc-check", "meshc-test"}
    for hook in hooks.values():
        # meshc-test gets the test files, each with the policies it imports
        assert hook["files"] == (r"_test\.mesh$" if hook["id"] == "meshc-test" else r"\.mesh$")
        assert hook["language"] == "python"
        assert hook["entry"].split()[0] == "meshc"


@pytest.mark.skipif(shutil.which("git") is None, reason="pre-commit needs git")
def test_pre_commit_runs_the_hooks_from_this_checkout(tmp_path):
    pytest.importorskip("pre_commit")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / "home"), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)

    def git(*args):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env=env)

    git("init", "-q")
    (repo / "messy.mesh").write_text(MESSY)
    (repo / "cart.mesh").write_text(RETRYING)
    (repo / "broken.mesh").write_text(BROKEN)
    (repo / "cart_test.mesh").write_text(FAILING_TEST)
    (repo / "notes.txt").write_text("not a policy {\n")
    git("add", ".")
    proc = subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", ROOT, "--all-files", "--color", "never"],
                          cwd=repo, capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    # fmt rewrote the messy file, left the clean one alone and refused the broken one
    assert "meshc fmt" in out and "files were modified by this hook" in out
    assert (repo / "messy.mesh").read_text() == 'service a {\n  port 80\n  endpoints ["10.0.0.1:80"]\n}\n'
    assert (repo / "cart.mesh").read_text() == RETRYING
    assert (repo / "broken.mesh").read_text() == BROKEN
    # lint and check report located findings; notes.txt is never passed to any hook
    assert "L0201" in out and "cart.mesh:11:" in out
    assert "E0101" in out and "broken.mesh:1:" in out
    assert "notes.txt" not in out
    # the test: cart's route retries twice, not three times; located at the expectation
    assert "E0820" in out and "cart_test.mesh:5:" in out and "expected 3 retries, got 2" in out
    for hook in ("meshc fmt", "meshc lint", "meshc check", "meshc test"):
        assert hook in out
