"""The live layer of the equivalence suite: generated policies run by a real Envoy 1.40 and by
the native proxy, side by side, in front of the same loopback upstreams
(tests/equivalence/dataplanes.py); every generated request goes through both and the two
normalised observations must agree.

Profiles: the default (and `CI`) runs at least 100 policies and 2,000 requests through both
data planes (60 generated ones, three in four focused on a group of features, and one focused on
each group of tests/equivalence/features.py `focus_groups()`, which together hold every pair of
features that can interact); `MESHC_EQUIVALENCE=nightly` runs 1,000 generated policies and the
groups. The hand-written tests at the end
are the disagreements found while building this layer, each with its minimal policy and request.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from tests.envoy_support import requires_envoy
from tests.equivalence import features, tally
from tests.equivalence import policies as gen
from tests.equivalence.policies import Endpoint, Fail, GenPolicy, GenRequest

pytestmark = requires_envoy

HERE = os.path.dirname(os.path.abspath(__file__))
NIGHTLY = os.environ.get("MESHC_EQUIVALENCE") == "nightly"
POLICIES = 1000 if NIGHTLY else 60      # and one per focus group (test_equivalence_live_focus_groups)
MIN_REQUESTS, MAX_REQUESTS = 15, 30


def sample_policy() -> GenPolicy:
    with open(os.path.join(HERE, "equivalence", "sample.mesh.in")) as fh:
        text = fh.read()
    return GenPolicy(text, (Endpoint(0, "s0", "a"), Endpoint(1, "s0", "b")), ("s0",))


@pytest.fixture(scope="session")
def equivalence_session():
    from tests.equivalence.dataplanes import Session

    session = Session(sample_policy())
    yield session
    session.stop()


_reported: set[str] = set()


def disagreement() -> None:
    """Count a disagreement once per test (hypothesis replays a failing example while it shrinks)."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    if test not in _reported:
        _reported.add(test)
        tally.add(disagreements=1)


def check(session, policy: GenPolicy, requests: list[GenRequest]) -> list:
    """Run the requests through both planes; fail with the first disagreement side by side."""
    from tests.equivalence.dataplanes import model_report, side_by_side

    results = session.run(policy, requests)
    tally.add(policies=1, requests=len(requests), mtls_requests=sum(r.caller is not None for r in requests))
    bad = [c for c in results if c.problem is not None]
    if bad:
        disagreement()
        pytest.fail(f"envoy and native disagree on {len(bad)} of {len(requests)} request(s); the first:\n"
                    + side_by_side(policy, bad[0]), pytrace=False)
    # a destination out of the sidecar's scope (compiler/ir/scope.py) is an unknown Host: a local
    # 404 (or the 400 of a path refused before any Host is looked at), never an upstream attempt
    out = [c for c in results if c.request.kind == "outbound"
           and gen.answered_as_unknown(policy, c.request.host)]
    strayed = [c for c in out for o in (c.envoy, c.native)
               if o.status not in (400, 404) or o.subset is not None or o.attempts or o.mirror is not None]
    if strayed:
        disagreement()
        pytest.fail(f"a request out of the sidecar's scope ({list(policy.out_of_scope)}) was not answered as an "
                    "unknown Host:\n" + side_by_side(policy, strayed[0]), pytrace=False)
    wrong = [c for c in results if c.model is not None]
    if wrong:
        disagreement()
        pytest.fail(f"the model layer's Envoy evaluator mispredicted {len(wrong)} of {len(requests)} request(s); "
                    "the first:\n" + model_report(policy, wrong[0]), pytrace=False)
    observe_features(session, results)
    return results


def observe_features(session, results: list) -> None:
    """Record the features each compared request exercised (tests/equivalence/features.py), read
    from the native decision of that request on the config the native plane runs."""
    from compiler.verify.native import NativeModel

    native = NativeModel(session.compiled_native, certs=session.certs.ders, validate=False)
    for c in results:
        why: dict = {}
        native.decide(c.request, why=why)
        features.observe("live", c.request, c.decision, why.get("steps", ()), native.table)


# ---- generated policies ---------------------------------------------------------------------------

@settings(max_examples=POLICIES, deadline=None, derandomize=not NIGHTLY, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(gen.cases(max_requests=MAX_REQUESTS, min_requests=MIN_REQUESTS, focus_layer="live"))
def test_equivalence_generated_policies(equivalence_session, case):
    policy, requests = case
    check(equivalence_session, policy, requests)


def focus_group_case(session, group: frozenset[str]):
    @settings(max_examples=1, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(gen.cases(max_requests=MAX_REQUESTS, min_requests=MIN_REQUESTS, focus=group))
    def one(case):
        policy, requests = case
        check(session, policy, requests)

    return one


def test_equivalence_live_focus_groups(equivalence_session):
    """Every group of features the generators combine on purpose (features.focus_groups(): they
    hold every pair that can interact), one generated policy each focused on it, through both
    planes: the CI profile covers every pair of the live layer."""
    for group in features.focus_groups():
        focus_group_case(equivalence_session, group)()
    assert features.uncovered("live") == []      # every pair of the layer, by this test alone


# ---- regressions: disagreements found, each with its minimal policy ------------------------------------

CLIENT = '''service client {
  port 8000
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@"  escaped_slashes reject }
}
'''
ONE = CLIENT + '''service s0 {
  port 8080
  subset a { endpoints ["127.0.0.1:@EP0@"] }
}
'''
ONE_ENDPOINTS = (Endpoint(0, "s0", "a"),)


def one(extra: str = "") -> GenPolicy:
    return GenPolicy(ONE + extra, ONE_ENDPOINTS, ("s0",))


def get(target="/x", method="GET", headers=(), host="s0", kind="outbound", fail=None) -> GenRequest:
    return GenRequest(kind, method, target, host, tuple(headers), fail)


def test_equivalence_x_forwarded_for_is_neither_added_nor_appended(equivalence_session):
    """The native proxy added (or appended) the client address to `x-forwarded-for`; Envoy's
    connection manager as compiled (use_remote_address false) passes the header unchanged."""
    results = check(equivalence_session, one(), [
        get(), get(headers=[("x-forwarded-for", "10.0.0.9")]),
        get(kind="inbound", host="client"),
        get(kind="inbound", host="client", headers=[("x-forwarded-for", "1.2.3.4")]),
    ])
    assert dict(results[0].native.headers).get("x-forwarded-for") is None
    assert dict(results[1].native.headers)["x-forwarded-for"] == ("10.0.0.9",)


def test_equivalence_bodyless_requests_get_content_length_zero(equivalence_session):
    """Envoy's HTTP/1 codec writes `content-length: 0` upstream on a request without a body
    unless its method has none (GET, HEAD, DELETE, TRACE); the native proxy wrote nothing."""
    methods = ("GET", "HEAD", "DELETE", "TRACE", "POST", "PUT", "PATCH", "OPTIONS")
    results = check(equivalence_session, one(), [get(method=m) for m in methods]
                    + [get(method="POST", kind="inbound", host="client")])
    lengths = {r.request.method: dict(r.native.headers).get("content-length") for r in results[:-1]}
    assert lengths == {"GET": None, "HEAD": None, "DELETE": None, "TRACE": None,
                       "POST": ("0",), "PUT": ("0",), "PATCH": ("0",), "OPTIONS": ("0",)}


def test_equivalence_codec_errors_and_connect(equivalence_session):
    """Requests Envoy's codec refuses get 400 with the body `Bad Request` (the native proxy sent
    an empty body); CONNECT with an origin-form target is one of them (the native proxy forwarded
    it), and CONNECT to an authority matches no route: 404 (the native proxy said 400)."""
    results = check(equivalence_session, one(), [
        get(method="FOO"), get(method="get"), get(target="x/y"), get(target="*"),
        get(method="CONNECT", target="/x"), get(method="CONNECT", target="s0:80"),
        get(method="CONNECT", target="s0:80", kind="inbound", host="client"),
    ])
    assert [r.native.status for r in results] == [400, 400, 400, 400, 400, 404, 404]
    assert results[0].native.body == b"Bad Request"


def test_equivalence_reset_without_retry_policy(equivalence_session):
    """An upstream that resets the connection of a request on a route without retries: one
    attempt and a 503 in both planes."""
    check(equivalence_session, one(), [get(fail=Fail("reset", 1)) for _ in range(3)])


def test_equivalence_empty_header_values_are_set_and_added(equivalence_session):
    """`set "x" ""` and `add "x" ""`: Envoy skipped header options with an empty value (no
    header, nothing replaced) unless `keep_empty_value`; the language (and the native proxy)
    set or add the empty value. The Envoy backend now emits `keep_empty_value: true`."""
    policy = one('''routes s0 {
  route r0 {
    to s0.a
    request_headers { set "x-s" ""  add "x-a" "" }
    response_headers { set "x-r0" ""  add "x-r1" "" }
  }
}
''')
    results = check(equivalence_session, policy, [get(headers=[("x-s", "old"), ("x-a", "one")])])
    seen = dict(results[0].envoy.headers)
    assert seen["x-s"] == ("",) and seen["x-a"] == ("one", "")
    assert dict(results[0].envoy.response_headers)["x-r0"] == ("",)


def test_equivalence_inline_headers_are_joined(equivalence_session):
    """Envoy keeps one value for its inline headers (content-type, cache-control, user-agent,
    ...): repeated request lines arrive joined with ",", and a route's `add` appends ",VALUE";
    the native proxy sent separate lines. It strips `x-forwarded-client-cert` too (SANITIZE)."""
    policy = one('''routes s0 {
  route r0 {
    to s0.a
    request_headers { add "content-type" "v"  add "x-h0" "h" }
    response_headers { add "content-type" "v"  add "cache-control" "a"  add "cache-control" "b" }
  }
}
''')
    results = check(equivalence_session, policy, [get(headers=[
        ("content-type", "1"), ("Content-Type", "2"), ("user-agent", "u1"), ("user-agent", "u2"),
        ("x-h0", "1"), ("x-h0", "2"), ("x-forwarded-client-cert", "Hash=1")])])
    seen = dict(results[0].native.headers)
    assert seen["content-type"] == ("1,2,v",) and seen["user-agent"] == ("u1,u2",)
    assert seen["x-h0"] == ("1", "2", "h") and "x-forwarded-client-cert" not in seen
    response = dict(results[0].native.response_headers)
    assert response["content-type"] == ("application/json,v",) and response["cache-control"] == ("a,b",)


def test_equivalence_route_response_headers_on_local_replies(equivalence_session):
    """Once a route is chosen, Envoy applies its response header changes to the local replies
    too (a fault's abort, the route timeout's 504, a reset's 503); the native proxy did not."""
    policy = one('''routes s0 {
  route r0 { match { path prefix "/f" }  to s0.a  fault { abort 418 }  response_headers { set "x-r0" "f" } }
  route r1 {
    to s0.a
    timeout 250ms
    response_headers { set "content-type" "x/y"  add "x-r1" "t" }
  }
}
''')
    results = check(equivalence_session, policy, [
        get("/f"), get("/t", fail=Fail("delay", 1, 200, 400)), get("/r", fail=Fail("reset", 1))])
    assert [r.native.status for r in results] == [418, 504, 503]
    assert dict(results[0].native.response_headers)["x-r0"] == ("f",)
    assert dict(results[1].native.response_headers)["content-type"] == ("x/y",)


def test_equivalence_local_reply_keeps_its_content_type_unless_the_route_sets_one(equivalence_session):
    """On a local reply, Envoy applies the route's response changes first and then types the
    body as text/plain if no content-type is left: `remove "content-type"` does not remove it,
    `add` gives the added value alone (the native proxy removed it / joined it to text/plain)."""
    policy = one('''routes s0 {
  route r0 { match { path prefix "/a" }  to s0.a  response_headers { remove "content-type" } }
  route r1 { to s0.a  fault { abort 418 }  response_headers { add "content-type" "v" } }
}
''')
    results = check(equivalence_session, policy, [get("/a", fail=Fail("reset", 1)), get("/b")])
    assert dict(results[0].native.response_headers)["content-type"] == ("text/plain",)
    assert dict(results[1].native.response_headers)["content-type"] == ("v",)


def test_equivalence_adding_an_empty_value_to_an_inline_header(equivalence_session):
    """`add "content-type" ""` on a response that has one: Envoy appends nothing (no trailing
    comma); the native proxy sent `application/json,`."""
    policy = one('''routes s0 {
  route r0 { to s0.a  response_headers { add "content-type" ""  add "cache-control" ""  add "cache-control" "x" } }
}
''')
    results = check(equivalence_session, policy, [get()])
    response = dict(results[0].native.response_headers)
    assert response["content-type"] == ("application/json",) and response["cache-control"] == ("x",)


def test_equivalence_stray_percent_in_a_removed_segment(equivalence_session):
    """A `..` removes the segment holding a stray `%`: the real Envoy forgets it, the native
    proxy re-escaped a later decoded hex digit as if it followed it (`/0250a` for `/00a`)."""
    results = check(equivalence_session, one(), [
        get("/%/%2E%2E/%30%30a", kind="inbound", host="client"), get("/%%30%30", kind="inbound", host="client")])
    assert [r.native.target for r in results] == ["/00a", "/%2500"]


# ---- identity: mTLS callers and plaintext ones -----------------------------------------------------

WEB, S0_ID, LEGACY, SHOPPING = ("spiffe://mesh.local/ns/shop/sa/web", "spiffe://mesh.local/ns/default/sa/s0",
                                gen.S2_ID, "spiffe://mesh.local/ns/shopping/sa/x")
IDENTITY_RULES = '''authorization client {
  default deny
  allow same_ns { from same_namespace  method [GET, HEAD] }
  allow s0_api { from service s0  path prefix "/api" }
  allow public { path prefix "/pub" }
  deny legacy { from identity "spiffe://mesh.local/legacy/*"  path prefix "/pub/x" }
}
'''


def identity_policy(mode: str) -> GenPolicy:
    text = 'mesh { trust_domain "mesh.local" }\n' + ONE.replace(
        "  port 8000\n", f'  port 8000\n  namespace "shop"\n  mtls {mode}\n', 1) + IDENTITY_RULES
    return GenPolicy(text, ONE_ENDPOINTS, ("s0",), mtls=mode)


def inbound(target="/x", caller=None, method="GET", headers=()) -> GenRequest:
    return GenRequest("inbound", method, target, "client", tuple(headers), caller=caller)


def test_equivalence_identity_rules_and_client_cert(equivalence_session):
    """A permissive listener: identity rules match the verified URI SAN of an mTLS caller only
    (`same_namespace` is `ns/shop/`, not `ns/shopping/`); a plaintext caller is admitted by rules
    without `from` alone and bypasses a `deny from`; the application gets
    `x-forwarded-client-cert: By=<own>;Hash=<SHA-256 of the caller's certificate>;URI=<caller>`
    over mTLS, and a forged one never."""
    import hashlib

    forged = [(gen.XFCC, gen.FORGED_XFCC)]
    results = check(equivalence_session, identity_policy("permissive"), [
        inbound(caller=WEB, headers=forged), inbound(caller=WEB, method="POST"), inbound(caller=SHOPPING),
        inbound("/api/v", caller=S0_ID), inbound("/apix", caller=S0_ID), inbound(caller=None),
        inbound("/pub/x", caller=None, headers=forged), inbound("/pub/x", caller=LEGACY)])
    assert [r.native.status for r in results] == [200, 403, 403, 200, 403, 403, 200, 403]
    der = equivalence_session.certs.ders[WEB]
    assert dict(results[0].envoy.headers)[gen.XFCC] == (
        f"By={gen.CLIENT_ID};Hash={hashlib.sha256(der).hexdigest()};URI={WEB}",)
    assert gen.XFCC not in dict(results[6].native.headers)


def test_equivalence_x_forwarded_proto_over_mtls(equivalence_session):
    """Envoy sets `x-forwarded-proto: https` on a request that came over mTLS (when the caller
    sent none); the native proxy wrote `http` whatever the connection."""
    results = check(equivalence_session, identity_policy("permissive"), [
        inbound("/pub", caller=WEB), inbound("/pub", caller=None),
        inbound("/pub", caller=WEB, headers=[("x-forwarded-proto", "http")])])
    assert [dict(r.native.headers)["x-forwarded-proto"] for r in results] == [("https",), ("http",), ("http",)]


def test_equivalence_refused_connections(equivalence_session):
    """A strict listener refuses a plaintext caller, a plaintext one a TLS caller: no answer on
    either plane."""
    results = check(equivalence_session, identity_policy("strict"), [
        inbound("/pub", caller=None), inbound("/pub", caller=SHOPPING)])
    assert [r.native.status for r in results] == [0, 200]
    results = check(equivalence_session, identity_policy("disable"), [
        inbound("/pub", caller=WEB), inbound("/pub", caller=None)])
    assert [r.native.status for r in results] == [0, 200]


def test_equivalence_authorization_sees_the_sidecars_client_cert(equivalence_session):
    """A rule on `x-forwarded-client-cert` sees what the sidecar wrote before authorization:
    over mTLS its own `By=…;Hash=…;URI=<caller>`, over plaintext nothing (a forged value is
    removed first), never the caller's."""
    forged = [(gen.XFCC, f"By={gen.CLIENT_ID};URI={LEGACY}")]
    text = 'mesh { trust_domain "mesh.local" }\n' + ONE.replace(
        "  port 8000\n", '  port 8000\n  namespace "shop"\n  mtls permissive\n', 1) + '''authorization client {
  default deny
  allow legacy_cert { header "x-forwarded-client-cert" regex ".*;URI=spiffe://mesh[.]local/legacy/.*" }
  allow no_cert { path prefix "/open"  header "x-forwarded-client-cert" absent }
}
'''
    results = check(equivalence_session, GenPolicy(text, ONE_ENDPOINTS, ("s0",), mtls="permissive"), [
        inbound(caller=LEGACY, headers=forged), inbound(caller=WEB, headers=forged),
        inbound(caller=None, headers=forged),
        inbound("/open", caller=None, headers=forged), inbound("/open", caller=WEB)])
    assert [r.native.status for r in results] == [200, 403, 403, 200, 403]
