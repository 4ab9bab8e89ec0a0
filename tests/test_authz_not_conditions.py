"""`not path` / `not method` in authorization rules (issue 16; Istio's notPaths / notMethods).

Through a real Envoy (RBAC `not_rule`) and the native proxy, the same requests get the same
answers; the coverage reasoning (W0601) stays sound with exclusions: a property test holds
`rule_covers` and `rule_never_matches` to the native proxy's own rule test over concrete
requests; W0610; `meshc fmt` round trip; the `assert` prover sees the excluded paths."""

from __future__ import annotations

import http.client

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import api
from compiler.ir.conditions import AuthzRule, Location, PathMatch
from compiler.ir.serialize import to_data
from compiler.semantic.matching import rule_covers, rule_never_matches
from runtime_proxy.decide.authz import rule_matches
from runtime_proxy.decide.table import CAuthzRule
from tests.envoy_support import requires_envoy
from tests.planes_support import BothPlanes

POLICY = """
service client {
  port 8000
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" }
}
authorization client {
  default deny
  deny no_admin_writes { path prefix "/admin"  not method [GET, HEAD] }
  allow reports { path prefix "/reports"  not path prefix "/reports/private"  not path regex "/reports/[0-9]+/raw" }
  allow everything_else { not path prefix "/reports"  not path prefix "/internal" ignore_case  not method DELETE }
}
"""
CASES = [
    ("GET", "/admin/x", 200), ("POST", "/admin/x", 403), ("HEAD", "/admin", 200), ("DELETE", "/admin", 403),
    ("GET", "/reports/a", 200), ("GET", "/reports/private/a", 403), ("GET", "/reports/private", 403),
    ("GET", "/reports/12/raw", 403), ("GET", "/reports/12/raw2", 200), ("DELETE", "/reports/a", 200),
    ("GET", "/other", 200), ("DELETE", "/other", 403), ("GET", "/INTERNAL/x", 403), ("GET", "/internalx", 200),
    ("PUT", "/reportsx", 200), ("GET", "/", 200),
]


@requires_envoy
def test_both_planes_answer_not_path_and_not_method_alike(tmp_path):
    planes = BothPlanes(tmp_path, POLICY, ("app",))
    try:
        for plane in ("envoy", "native"):
            got = []
            for method, path, _ in CASES:
                conn = http.client.HTTPConnection("127.0.0.1", planes.listener_ports[plane, "inbound"], timeout=5)
                try:
                    conn.request(method, path, headers={"Host": "client"})
                    resp = conn.getresponse()
                    resp.read()
                    got.append((method, path, resp.status))
                finally:
                    conn.close()
            assert got == CASES, plane
    finally:
        planes.close()


# ---- coverage soundness ----------------------------------------------------------------------------

LOC = Location("t.mesh", 1, 1)
PATHS = ["/", "/a", "/a/b", "/ab", "/A/b", "/b", "/a/b/c"]
METHODS = ["GET", "POST", "DELETE"]
path_matches = st.builds(PathMatch, st.sampled_from(["exact", "prefix", "segment_prefix"]),
                         st.sampled_from(["/", "/a", "/a/b", "/ab", "/b"]), st.booleans())
methods = st.lists(st.sampled_from(METHODS), min_size=1, max_size=2, unique=True).map(tuple)
rules = st.builds(lambda path, ms, nps, nms: AuthzRule("r", "allow", LOC, None, path, ms, (), tuple(nps), nms),
                  st.none() | path_matches, st.none() | methods, st.lists(path_matches, max_size=2, unique=True),
                  st.just(()) | methods)


def matches(rule: AuthzRule, method: str, path: str) -> bool:
    return rule_matches(CAuthzRule(to_data(rule)), None, method, path, {})


@settings(max_examples=400, deadline=None)
@given(rules, rules)
def test_rule_covers_stays_sound_with_exclusions(a, b):
    """True is a proof: every request `b` matches, `a` matches (the native rule test decides)."""
    if rule_covers(a, b):
        for m in METHODS:
            for p in PATHS:
                assert not matches(b, m, p) or matches(a, m, p), (m, p)
    if rule_never_matches(b):
        assert not any(matches(b, m, p) for m in METHODS for p in PATHS)


def test_a_deny_with_an_exclusion_covers_an_allow_that_excludes_it_too():
    ax = (PathMatch("exact", "/a/x"),)
    deny = AuthzRule("d", "deny", LOC, None, PathMatch("prefix", "/a"), None, (), ax)
    allow_same = AuthzRule("x", "allow", LOC, None, PathMatch("prefix", "/a/b"), None, (), ax)
    allow_not = AuthzRule("y", "allow", LOC, None, PathMatch("prefix", "/a/b"), None, ())
    allow_get = AuthzRule("z", "allow", LOC, None, PathMatch("prefix", "/a"), ("GET",), ())
    deny_writes = AuthzRule("w", "deny", LOC, None, PathMatch("prefix", "/a"), None, (), (), ("GET", "HEAD"))
    assert rule_covers(deny, allow_same) and not rule_covers(deny, allow_not)
    assert not rule_covers(deny_writes, allow_get)
    assert rule_covers(deny_writes, AuthzRule("v", "allow", LOC, None, PathMatch("prefix", "/a"), ("POST",), ()))


def diagnostics(text: str) -> list[str]:
    comp = api.check([api.Text("p.mesh", text)])
    return [f"{d.code} {d.message}" for d in comp.diagnostics]


SERVICE = 'service api {\n  port 8080\n  endpoints ["127.0.0.1:9000"]\n}\n'


def test_w0601_takes_exclusions_into_account():
    found = diagnostics(SERVICE + """authorization api {
  default deny
  deny writes { path prefix "/a"  not method [GET, HEAD] }
  allow reads { path prefix "/a"  method GET }
  allow posts { path prefix "/a"  method POST }
}
""")
    assert found == ["W0601 allow rule `posts` can never apply"]


@pytest.mark.parametrize("rule", [
    'allow { path prefix "/a"  not path prefix "/" }',
    'allow { method [GET, POST]  not method [POST, GET] }',
    'allow { path exact "/a/b"  not path segment_prefix "/a" }'.replace("segment_prefix", "prefix"),
])
def test_w0610_an_exclusion_that_takes_everything(rule):
    found = diagnostics(SERVICE + "authorization api {\n  default deny\n  " + rule + "\n}\n")
    assert [f.split(" ")[0] for f in found] == ["W0610"]


def test_fmt_round_trips_not_conditions():
    from compiler.syntax.fmt import format_text

    text = SERVICE + ('authorization api {\n  default deny\n  allow r {\n    path prefix "/a"\n'
                      '    not path regex "/a/[0-9]+"\n    not path prefix "/a/B" ignore_case\n'
                      '    not method [DELETE, PATCH]\n  }\n}\n')
    once = format_text(text, "p.mesh")
    assert 'not path regex "/a/[0-9]+"' in once and "not method [DELETE, PATCH]" in once
    assert format_text(once, "p.mesh") == once


def test_assert_prover_sees_excluded_paths():
    from compiler.verify.asserts import prove

    base = SERVICE + ('authorization api {\n  default deny\n'
                      '  allow reports { path prefix "/reports"  not path prefix "/reports/private" }\n}\n')
    holds = base + 'assert never { from any  to api  path prefix "/reports/private" }\n'
    broken = base + 'assert always { from any  to api  path prefix "/reports" }\n'
    for text, codes, proven in ((holds, [], 1), (broken, ["E0851"], 0)):
        comp = api.compile([api.Text("p.mesh", text)], shard=False)
        assert not comp.has_errors, [str(d) for d in comp.diagnostics]
        diags, count = prove(comp)
        assert ([d.code for d in diags], count) == (codes, proven), [d.message for d in diags]
    assert "/reports/private" in diags[0].message
