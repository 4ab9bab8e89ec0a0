"""The equivalence suite's feature table (tests/equivalence/features.py): each detector says what
one request exercised, not what its policy has; the pairs that cannot interact are named with a
reason; the focus groups the generators draw from hold every pair that can interact; the pairs
line reads as documented."""

from __future__ import annotations

import itertools

import pytest

from compiler.verify.native import NativeModel
from envoy_eval.evaluator import EnvoyModel
from tests.equivalence import features
from tests.equivalence.policies import CLIENT_ID, FOCUS_RECIPES, GenRequest
from tests.test_equivalence_model import CLIENT, SERVICES, compile_policy

POLICY = CLIENT.replace("ESC", "decode").replace("  port 8000\n", '  port 8000\n  mtls permissive\n', 1) + \
    SERVICES.replace("  port 8081\n", "  port 8081\n  retry_budget { percent 20%  min_concurrency 3 }\n", 1) + '''
routes s0 {
  route post { match { method [POST]  header "x-h0" exact "a" } to s0.a }
  route exact {
    match { path exact "/e"  query "q" exact "1" }
    to s1.a
    timeout 3s
    retry { attempts 2  on [5xx, 503]  backoff 1ms max 2ms  allow_non_idempotent }
    request_headers { set "x-set" "v" }
  }
  route keyed { match { path regex "/k/.*" } split { s0.a 1  s0.b 1 } by header "x-k"  mirror s0.c 100% }
  route rest {
    match { path prefix "/" }
    to s0.b
    fault { abort 418 100% }
    response_headers { set "x-r0" "v" }
    cors { origins [exact "https://app.example"]  methods [GET] }
  }
}
authorization client {
  default deny
  deny d { from identity "spiffe://nobody.local/x"  method [GET] }
  allow a { path prefix "/p"  header "x-h1" present }
}
'''


def exercised(request: GenRequest) -> frozenset[str]:
    compiled = compile_policy(POLICY)
    native, envoy = NativeModel(compiled), EnvoyModel(compiled, own_uri=CLIENT_ID)
    why: dict = {}
    decision = native.decide(request, why=why)
    assert decision == envoy.decide(request)        # a compared decision: both planes agree
    return features.detect(features.exercise(request, decision, why["steps"], native.table), "live")


def out(target: str, method: str = "GET", headers=()) -> GenRequest:
    return GenRequest("outbound", method, target, "s0", tuple(headers))


def test_route_conditions_count_only_where_evaluated():
    """`post` fails on its method (its header condition is never tested); `exact` matches: its
    path and query conditions were evaluated, its settings applied; nothing after it is tried."""
    got = exercised(out("/e?q=1"))
    assert {"match.method", "match.path.exact", "match.query", "timeout", "retry", "retry.on_status",
            "retry.backoff", "retry_budget", "request_headers"} <= got
    assert not got & {"match.header", "match.path.regex", "match.path.prefix", "fault.abort", "response_headers",
                      "retry.per_try_timeout", "limits", "outlier"}
    # POST reaches `post`'s header condition, which holds: the route takes it, no setting of `exact`
    got = exercised(out("/e?q=1", "POST", [("x-h0", "a")]))
    assert {"match.method", "match.header"} <= got and not got & {"match.path.exact", "retry", "timeout"}


def test_a_failing_path_ends_the_match_and_a_fault_abort_applies_nothing_upstream():
    got = exercised(out("/x/../e/f?q=1"))     # `exact` fails on its path: its query is never tested
    assert {"match.path.exact", "match.path.regex", "match.path.prefix", "fault.abort", "response_headers",
            "path.normalized"} <= got
    assert not got & {"match.query", "retry", "timeout", "request_headers", "split.keyed", "split.random"}


def test_splits_by_key_or_by_draw_and_the_mirror():
    assert {"split.keyed", "mirror", "match.path.regex"} <= exercised(out("/k/1", headers=[("x-k", "1")]))
    got = exercised(out("/k/1"))
    assert {"split.random", "mirror"} <= got and "split.keyed" not in got
    assert "escaped_slashes.decode" in exercised(out("/k%2F1"))


def test_cors_counts_a_preflight_and_an_actual_request_from_an_allowed_origin_only():
    """`rest` has CORS and aborts: a preflight is answered before the fault (nothing of the route
    acts on it), an actual request from the origin gets the abort and the CORS headers, another
    origin is no CORS request."""
    pre = exercised(out("/z", "OPTIONS", [("origin", "https://app.example"), ("access-control-request-method", "GET")]))
    assert "cors.preflight" in pre and not pre & {"fault.abort", "response_headers", "cors.actual"}
    actual = exercised(out("/z", headers=[("origin", "https://app.example")]))
    assert {"cors.actual", "fault.abort", "response_headers"} <= actual and "cors.preflight" not in actual
    other = exercised(out("/z", "OPTIONS", [("origin", "https://b.example"), ("access-control-request-method", "GET")]))
    assert not other & {"cors.preflight", "cors.actual"} and "fault.abort" in other


def test_authorization_conditions_count_up_to_the_decision():
    """The deny rule fails at its `from` (its method is never tested; a plaintext caller has no
    identity), then the allow rule matches."""
    plain = GenRequest("inbound", "GET", "/p", "client", (("x-h1", ""),))
    got = exercised(plain)
    assert got == {"authz.from", "authz.path", "authz.header", "authz.allow", "mtls.permissive", "peer.plaintext"}
    tls = GenRequest("inbound", "GET", "/q", "client", caller=CLIENT_ID)
    got = exercised(tls)   # `from` fails on the identity, the allow rule on its path: the default denies
    assert got == {"authz.from", "authz.path", "authz.default_deny", "mtls.permissive", "peer.identity"}


def test_the_table_and_its_exclusions():
    names = [f.name for f in features.FEATURES]
    assert len(names) == len(set(names))
    assert all(f.side in ("outbound", "inbound", "both") and f.about for f in features.FEATURES)
    for pair in features.EXCLUDED:
        assert len(pair) == 2 and pair <= set(names), sorted(pair)
    pairs = list(itertools.combinations(sorted(names), 2))
    assert len(features.interacting()) + len(features.excluded()) == len(pairs)
    assert set(FOCUS_RECIPES) == set(names)   # a recipe per feature: the nightly profile reaches every pair
    assert all(FOCUS_RECIPES[n].side == features.BY_NAME[n].side for n in names)


def test_the_focus_groups_hold_every_pair_that_can_interact():
    held = {p for g in features.focus_groups() for p in itertools.combinations(sorted(g), 2)}
    assert set(features.interacting()) <= held
    for group in features.focus_groups():
        assert len(group) <= features.FOCUS_SIZE
        assert all(features.cannot_interact(a, b) is None for a, b in itertools.combinations(group, 2))


@pytest.fixture
def empty_coverage(monkeypatch):
    monkeypatch.setattr(features, "covered", {layer: set() for layer in features.LAYERS})
    monkeypatch.setattr(features, "seen", {layer: {} for layer in features.LAYERS})


def test_the_pairs_line(empty_coverage):
    features.record("model", ["match.header", "retry", "timeout"])
    features.record("live", ["match.header", "outlier"])
    total = len(features.interacting())
    line = features.summary()
    assert line.startswith(f"pairs: 4 of {total} that can interact covered ({100 * 4 / total:.1f} %; ")
    assert f"model 3 of {len(features.interacting('model'))}" in line and f"live 1 of {total}" in line
    report = features.report()
    overall = report.split("uncovered pairs (", 1)[1].split("\n\n", 1)[0]
    assert overall.startswith(f"{total - 4}):") and "  match.header x outlier" not in overall
    assert "  match.header x mirror\n" in overall
    live = report.split("uncovered in the live layer (", 1)[1].split("\n\n", 1)[0]
    assert "  match.header x retry\n" in live and "  match.header x outlier" not in live
    assert "  authz.allow x authz.deny: one request is decided by one rule or by the default" in report
