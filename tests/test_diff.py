"""`meshc diff` (docs/testing.md): goldens of its human, JSON and Markdown output on edits of
the shipped examples, its exit codes, git revisions (imports resolved within the revision), the
request regions it builds, and the replay of every witness."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from compiler.cli.diff_run import Side, compile_side, diff, replay
from compiler.cli.diff_space import PATH_POOL, Condition, regions
from compiler.cli.exits import EXIT_CHANGED, EXIT_INPUT, EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE
from compiler.cli.inputs import expand_paths
from tests.envoy_support import meshc_inline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
# the policies without their tests (*_test.mesh): an edit that renames a route would break a test
POLICY_TESTS = shutil.ignore_patterns("*_test.mesh")
GOLDEN = os.path.join(ROOT, "tests", "golden", "diff")

# (case, file of the examples, text, replacement): NEW is the examples with that one edit
CASES = [
    ("canary-weights", "canary.mesh", "recommendations.v1 90  recommendations.v2 10",
     "recommendations.v1 80  recommendations.v2 20"),
    ("canary-fallback-first", "canary.mesh",
     "  route rollout {\n    match { path prefix \"/recommendations\"  method [GET, HEAD] }\n"
     "    split { recommendations.v1 90  recommendations.v2 10 } by header \"x-user-bucket\"\n"
     "    timeout 800ms\n    retry std.idempotent\n  }\n  route fallback {\n    to recommendations.v1\n"
     "    timeout 2s\n  }\n",
     "  route fallback {\n    to recommendations.v1\n    timeout 2s\n  }\n  route rollout {\n"
     "    match { path prefix \"/recommendations\"  method [GET, HEAD] }\n"
     "    split { recommendations.v1 90  recommendations.v2 10 } by header \"x-user-bucket\"\n"
     "    timeout 800ms\n    retry std.idempotent\n  }\n"),
    ("billing-case", "envoy-native/legacy-billing.mesh", 'deny admin { path prefix "/api/admin" ignore_case }',
     'deny admin { path prefix "/api/admin" }'),
    ("resilience-retry", "resilience.mesh", "retry { attempts 3", "retry { attempts 2"),
    ("shop-settings", "shop.mesh", "limits { connections 200", "limits { connections 201"),
    # the two pinned routes swapped: not independent, a request may carry `x-canary` twice
    ("canary-pinned-swap", "canary.mesh",
     "  route pinned_canary {\n    match { header \"x-canary\" exact \"always\" }\n    to recommendations.v2\n"
     "    response_headers { set \"x-served-by\" \"v2\" }\n  }\n",
     ""),
    # two routes on disjoint paths swapped, and renamed: no change
    ("shop-independent-reorder", "shop.mesh",
     "  route products {\n    match { path prefix \"/products\"  method [GET, HEAD] }\n",
     ""),
]


def _edit(case):
    name, file, old, new = case
    with open(os.path.join(EXAMPLES, file)) as f:
        text = f.read()
    assert old in text, (name, old)
    if name == "canary-pinned-swap":   # pinned_canary moved after pinned_stable, renamed
        text = text.replace(old, "")
        anchor = "  route rollout {"
        return file, text.replace(anchor, old.replace("pinned_canary", "canary_pin") + anchor)
    if name == "shop-independent-reorder":   # `products` moved after `search`, renamed
        start = text.index(old)
        end = text.index("  route search {")
        products = text[start:end]
        after = text.index("  route other {")
        search = text[end:after]
        return file, text[:start] + search + products.replace("route products", "route all_products") + text[after:]
    return file, text.replace(old, new)


def meshc(args, cwd, env_extra=None):
    env = dict(os.environ, PYTHONPATH=ROOT, NO_COLOR="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "compiler", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture()
def sides(tmp_path):
    shutil.copytree(EXAMPLES, tmp_path / "old", ignore=POLICY_TESTS)
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_diff_golden(case, sides, update_goldens):
    shutil.copytree(EXAMPLES, sides / "new", ignore=POLICY_TESTS)
    file, text = _edit(case)
    (sides / "new" / file).write_text(text)
    expected_code = EXIT_OK if case[0] == "shop-independent-reorder" else EXIT_CHANGED
    outputs = {}
    for fmt, suffix in (("human", "txt"), ("json", "json"), ("markdown", "md")):
        r = meshc_inline("diff", "old", "new", "--output-format", fmt, cwd=str(sides))
        assert r.returncode == expected_code, r.stderr + r.stdout
        assert r.stderr == ""
        outputs[suffix] = r.stdout
    doc = json.loads(outputs["json"])
    assert doc["changed"] is (expected_code == EXIT_CHANGED) and doc["complete"] is True
    assert bool(doc["settings"]) is (case[0] == "shop-settings")
    for suffix, text in outputs.items():
        path = os.path.join(GOLDEN, f"{case[0]}.{suffix}")
        if update_goldens:
            os.makedirs(GOLDEN, exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            continue
        assert os.path.exists(path), f"missing golden {path}: run pytest --update-goldens"
        with open(path) as f:
            assert f.read() == text, f"{path} differs (run pytest --update-goldens and review the diff)"


def test_every_reported_witness_replays_on_both_sides(sides):
    shutil.copytree(EXAMPLES, sides / "new", ignore=POLICY_TESTS)
    for case in CASES[:5]:
        file, text = _edit(case)
        (sides / "new" / file).write_text(text)
    old, new = (Side(str(p), expand_paths([str(p)])[0]) for p in (sides / "old", sides / "new"))
    assert compile_side(old) == [] and compile_side(new) == []
    result = diff(old, new)
    assert result.unreplayed == 0 and result.changes
    for change in result.changes:
        for caller in change.callers:
            assert replay(old, new, change, caller)
    dests = {c.dest for c in result.changes}
    assert dests == {"recommendations", "billing", "orders"}


def test_a_regex_it_cannot_analyse_is_unknown_not_unchanged(tmp_path):
    policy = ('service api {\n  port 8080\n  endpoints ["127.0.0.1:9000"]\n}\n'
              'routes api {\n  route words {\n    match { path regex "/w/[a-z]+\\\\b.*" }\n    to api.default\n'
              '    timeout 1s\n  }\n}\nservice web {\n  port 8081\n  endpoints ["127.0.0.1:9001"]\n}\n')
    (tmp_path / "a.mesh").write_text(policy)
    (tmp_path / "b.mesh").write_text(policy.replace("# nothing", ""))
    r = meshc(["diff", "a.mesh", "b.mesh", "--output-format", "json"], tmp_path)
    assert r.returncode == EXIT_UNKNOWN, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["complete"] is False and doc["changed"] is False
    assert "cannot be analysed" in doc["unknown"][0]["reasons"][0]
    # a change it can see is still reported (and replayed), with the unknown beside it
    (tmp_path / "b.mesh").write_text(policy.replace("timeout 1s", "timeout 2s"))
    r = meshc(["diff", "a.mesh", "b.mesh"], tmp_path)
    assert r.returncode == EXIT_CHANGED, r.stdout + r.stderr
    assert "timeout: 1000ms → 2000ms" in r.stdout and "unknown: api:" in r.stdout


def test_exit_codes_and_messages(sides):
    r = meshc(["diff", "old", "old"], sides)
    assert r.returncode == EXIT_OK and "no change in behaviour" in r.stdout
    (sides / "bad.mesh").write_text("service {\n")
    r = meshc(["diff", "old/shop.mesh", "bad.mesh"], sides)
    assert r.returncode == EXIT_INPUT and "bad.mesh does not compile" in r.stderr
    r = meshc(["diff", "old", "no-such-thing"], sides)
    assert r.returncode == EXIT_USAGE and "no-such-thing is neither a path nor a revision" in r.stderr
    r = meshc(["diff", "old"], sides)
    assert r.returncode == EXIT_USAGE and "OLD and NEW" in r.stderr
    r = meshc(["diff", "old", "old", "extra"], sides)
    assert r.returncode == EXIT_USAGE and "PATHS after OLD NEW are for git revisions" in r.stderr


def _git(cwd, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def test_git_revisions_resolve_imports_within_the_revision(tmp_path):
    repo = tmp_path / "repo"
    (repo / "policy").mkdir(parents=True)
    (repo / "policy" / "common.mesh").write_text(
        'service api {\n  port 8080\n  endpoints ["127.0.0.1:9000"]\n}\n'
        'routes api {\n  route all {\n    to api.default\n    timeout 1s\n  }\n}\n')
    (repo / "policy" / "main.mesh").write_text(
        'import "common.mesh"\nservice web {\n  port 8081\n  endpoints ["127.0.0.1:9001"]\n}\n')
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    # the imported file changes in the second revision: `main.mesh` itself does not
    common = (repo / "policy" / "common.mesh").read_text()
    (repo / "policy" / "common.mesh").write_text(common.replace("timeout 1s", "timeout 3s"))
    _git(repo, "commit", "-qam", "two")
    r = meshc(["diff", "HEAD~1", "HEAD", "--", "policy/main.mesh"], repo)
    assert r.returncode == EXIT_CHANGED, r.stdout + r.stderr
    assert "HEAD~1 → HEAD: 1 change" in r.stdout and "timeout: 1000ms → 3000ms" in r.stdout
    # a revision against the working tree: the same paths, from a subdirectory
    r = meshc(["diff", "HEAD", "main.mesh"], repo / "policy")
    assert r.returncode == EXIT_OK, r.stdout + r.stderr
    r = meshc(["diff", "HEAD~1", "."], repo / "policy")
    assert r.returncode == EXIT_CHANGED
    r = meshc(["diff", "HEAD~5", "HEAD", "--", "policy"], repo)
    assert r.returncode == EXIT_USAGE and "HEAD~5 is neither a path nor a revision" in r.stderr
    r = meshc(["diff", "HEAD~1", "HEAD", "--", "nowhere.mesh"], repo)
    assert r.returncode == EXIT_USAGE and "nowhere.mesh does not exist at HEAD~1" in r.stderr
    assert not [n for n in os.listdir(tmp_path) if n.startswith("meshc-diff-")]


def test_path_regions_are_normalised_paths_one_per_combination():
    conds = [Condition("prefix", "/api"), Condition("exact", "/api/x"), Condition("segment_prefix", "/api"),
             Condition("regex", "/api/v[0-9]+"), Condition("prefix", "/API/", ignore_case=True)]
    r = regions(conds, PATH_POOL, path=True)
    assert r.complete
    vectors = set()
    import re
    for v in r.values:
        assert v.startswith("/") and "//" not in v and "/./" not in v and not v.endswith("/.")
        vector = (v.startswith("/api"), v == "/api/x", v == "/api" or v.startswith("/api/"),
                  re.fullmatch("/api/v[0-9]+", v) is not None, v.lower().startswith("/api/"))
        assert vector not in vectors
        vectors.add(vector)
    # every combination a path can have: none, /api only (/api0), /api + segment (/api), /api/ ...
    assert (False, False, False, False, False) in vectors
    assert (True, False, False, False, False) in vectors          # /api0
    assert (True, True, True, False, True) in vectors             # /api/x
    assert (True, False, True, True, True) in vectors             # /api/v0
    assert (False, False, False, False, True) in vectors          # /API/


def test_a_new_service_is_listed_under_settings_and_reached_as_a_destination(tmp_path):
    base = ('service api {\n  port 8080\n  endpoints ["127.0.0.1:9000"]\n}\n'
            'service web {\n  port 8081\n  endpoints ["127.0.0.1:9001"]\n}\n')
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "p.mesh").write_text(base)
    (tmp_path / "b" / "p.mesh").write_text(base + 'service jobs {\n  port 8082\n  endpoints ["127.0.0.1:9002"]\n}\n')
    old, new = (Side(str(tmp_path / s), [str(tmp_path / s / "p.mesh")]) for s in "ab")
    assert compile_side(old) == [] and compile_side(new) == []
    result = diff(old, new)
    assert result.settings == [("jobs", "service", "absent", "declared")]
    # the new service calls nothing on the old side: only requests *to* it change
    assert {c.dest for c in result.changes} == {"jobs"}
    reached = [c for c in result.changes if "api" in c.callers]
    assert reached and reached[0].old["status"] == 404 and reached[0].new["status"] == 0
    assert all("jobs" not in c.callers for c in result.changes)


HEADER = ('mesh { trust_domain "t.local"  mtls strict }\n'
          'service api { port 80  namespace "core"  endpoints ["127.0.0.1:1"] }\n'
          'service web { port 80  namespace "public"  endpoints ["127.0.0.1:1"] }\n')


def _diff_texts(tmp_path, old, new):
    (tmp_path / "old.mesh").write_text(HEADER + old)
    (tmp_path / "new.mesh").write_text(HEADER + new)
    return meshc(["diff", "old.mesh", "new.mesh"], tmp_path)


def test_a_request_header_change_on_a_header_no_condition_names_is_a_change(tmp_path):
    # `x-debug` is named by no match or rule: a request carrying it is a request class of its own
    r = _diff_texts(tmp_path, 'routes api { route all { to api  request_headers { set "x-a" "1" } } }\n',
                    'routes api { route all { to api  request_headers { set "x-a" "1"  remove "x-debug" } } }\n')
    assert r.returncode == EXIT_CHANGED, r.stdout + r.stderr
    assert "x-debug" in r.stdout and "the request sent upstream changed" in r.stdout


def test_a_response_header_change_is_a_change_and_the_sample_names_only_the_changed_headers(tmp_path):
    r = _diff_texts(tmp_path, 'routes api { route all { to api  response_headers { set "x-a" "1" } } }\n',
                    'routes api { route all { to api  response_headers { set "x-a" "1"  remove "x-secret" } } }\n')
    assert r.returncode == EXIT_CHANGED, r.stdout + r.stderr
    assert "response headers: x-secret: sample\\r\\n x-a: 1\\r\\n → x-a: 1\\r\\n" in r.stdout
    # the sample response holds the headers the routes change, nothing else (no `server` line)
    r = _diff_texts(tmp_path, 'routes api { route all { to api } }\n',
                    'routes api { route all { to api  response_headers { remove "x-secret" } } }\n')
    assert r.returncode == EXIT_CHANGED, r.stdout + r.stderr
    assert "response headers: x-secret: sample\\r\\n → \n" in r.stdout and "server" not in r.stdout


def test_the_inbound_hop_carries_the_client_certificate_line_over_mtls(tmp_path):
    # the destination's sidecar writes `x-forwarded-client-cert` for a caller over mTLS (as `meshc
    # trace` and the proxy do): a rule on it allows the mesh's callers, and dropping it is a change
    old = ('authorization api { default deny  allow r { header "x-forwarded-client-cert" present }  '
           'allow s { path exact "/zzz" } }\n')
    r = _diff_texts(tmp_path, old, old.replace('allow r { header "x-forwarded-client-cert" present }  ', ""))
    assert r.returncode == EXIT_CHANGED, r.stdout + r.stderr
    assert "from api, web: GET /" in r.stdout
    assert "authorization: allowed by rule `r` → denied 403 by the default" in r.stdout
    # the same request as `meshc trace` decides it: allowed by `r`
    t = meshc(["trace", "old.mesh", "--from", "web", "GET http://api/", "--output-format", "json"], tmp_path)
    assert json.loads(t.stdout)["result"]["rule"] == "r", t.stdout + t.stderr


def test_a_path_outside_the_repository_is_refused_at_a_revision(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "p.mesh").write_text(HEADER)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    (tmp_path / "outside.mesh").write_text(HEADER + 'routes api { route all { to api  timeout 3s } }\n')
    for path in (str(tmp_path / "outside.mesh"), "../outside.mesh"):
        r = meshc(["diff", "HEAD", path], repo)
        assert r.returncode == EXIT_USAGE, r.stdout + r.stderr
        assert f"{path} is outside the git repository" in r.stderr and "Traceback" not in r.stderr
    r = meshc(["diff", "HEAD", "HEAD", "--", "../outside.mesh"], repo)
    assert r.returncode == EXIT_USAGE and "is outside the git repository" in r.stderr
    assert meshc(["diff", "HEAD", "p.mesh"], repo).returncode == EXIT_OK
