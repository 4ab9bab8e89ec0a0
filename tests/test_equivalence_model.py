"""The equivalence suite's fast layer: the native proxy's pure decisions against an evaluator of
the emitted Envoy JSON, on generated policies and many requests each, without sockets.

- `test_equivalence_model_generated`: hypothesis policies and requests from
  tests/equivalence/policies.py (`cases`), each policy compiled once, plus `EXTRA` requests per
  policy from a seeded generator (`fast_requests`, nastier paths, header values and hosts than
  the live layer can afford), every request decided by both models and compared field by field
  (envoy_eval/decisions.py). Inbound requests come from the generators' callers
  (`policies.CALLERS`, each presenting a certificate with its SPIFFE ID) or from a plaintext
  caller, against the policy's mTLS mode. Three policies in four combine a group of features on
  purpose (tests/equivalence/features.py `focus_groups`) and begin with requests that reach them.
  The CI profile makes over 20,000 decisions; `MESHC_EQUIVALENCE=nightly` makes ten times as many.
- `test_equivalence_model_focus_groups`: one generated policy per focus group, so that every pair
  of features that can interact is exercised by a compared decision (the pairs line under the
  summary, docs/testing.md).
- `test_equivalence_model_handwritten`: fixed policies for the corners, with the same requests.
- regressions: each disagreement found while building this layer, with its minimal policy.
- `test_envoy_model_*`: the Envoy evaluator itself against measured Envoy 1.40 facts
  (ENVOY_NOTES §3, §5.2, §5.3, §5.12, "Path normalization"), so that it cannot drift into
  agreeing with the native proxy on something Envoy does not do.
"""

from __future__ import annotations

import os
import random
from dataclasses import fields, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.verify.native import NativeModel
from envoy_eval.decisions import Decision, diff, side_by_side
from envoy_eval.evaluator import EnvoyModel, canonical_path, merge_slashes, normalize, simple_atoi_u64
from tests.equivalence import features, tally
from tests.equivalence.compile import compile_text
from tests.equivalence.policies import (
    CALLERS,
    CLIENT_ID,
    FORGED_XFCC,
    REQUEST_HOSTS,
    XFCC,
    GenPolicy,
    GenRequest,
    answered_as_unknown,
    cases,
)

NIGHTLY = os.environ.get("MESHC_EQUIVALENCE") == "nightly"
EXAMPLES = 2000 if NIGHTLY else 150        # generated policies (and one per focus group)
EXTRA = 100                                 # seeded requests per policy, besides hypothesis's own

PORTS = {"INBOUND": 15006, "OUTBOUND": 15001, "ADMIN": 15000, "APP": 18000, "OTLP": 4318}
_reported: set[str] = set()


# ---- comparing ------------------------------------------------------------------------------------

def compile_policy(text: str):
    for key, value in PORTS.items():
        text = text.replace(f"@{key}@", str(value))
    for i in range(12):
        text = text.replace(f"@EP{i}@", str(19000 + i))
    return compile_text(text)


out_of_scope_checked = [0]   # requests addressed out of the scope, checked against an unknown Host


def out_of_scope_problem(compiled, policy: GenPolicy, envoy: EnvoyModel, native: NativeModel, request: GenRequest,
                         decisions: tuple[Decision, Decision]) -> str | None:
    """Scoping (compiler/ir/scope.py), as the generator decided it: the destinations out of the
    sidecar's scope have no virtual host and no native domains, the others have both, and an
    outbound request addressed to one out of scope gets, in each model, exactly what the same
    request to a Host that names no service gets."""
    if request.kind != "outbound" or not answered_as_unknown(policy, request.host, like="nowhere.invalid"):
        return None
    out_of_scope_checked[0] += 1
    name_, colon, port = request.host.rpartition(":") if ":" in request.host else (request.host, "", "")
    unknown = replace(request, host="nowhere.invalid" + colon + port)   # (the same port, if any)
    for name, model, decided in (("envoy", envoy, decisions[0]), ("native", native, decisions[1])):
        expected = _addressed_to(model.decide(unknown), "nowhere.invalid", name_)
        if decided != expected:
            return (f"{name}: a destination out of the scope is not answered as an unknown Host\n"
                    + side_by_side(decided, expected))
    return None


def _addressed_to(decision: Decision, unknown: str, host: str) -> Decision:
    """The decision made for the Host `unknown`, as it reads for `host`: where the answer carries
    the request's Host (a catch-all's redirect that keeps it in `location`, the Host forwarded
    upstream), `unknown` becomes `host`."""
    def swap(value):
        if isinstance(value, str):
            return value.replace(unknown, host)
        if isinstance(value, tuple):
            return tuple(swap(v) for v in value)
        return value
    return replace(decision, **{f.name: swap(getattr(decision, f.name)) for f in fields(decision)
                                if isinstance(getattr(decision, f.name), (str, tuple))})


def host_problem(policy: GenPolicy, request: GenRequest, decided: Decision) -> str | None:
    """The destination the route belongs to is the one the generator's own reading of Envoy's
    virtual host selection gives (GenPolicy.destination: exact, longest `*SUFFIX`, longest
    `PREFIX*`, `*`, among the scope's destinations); no destination, no route; and never a route
    whose matches are all for other callers (`caller`)."""
    if request.kind != "outbound" or request.host.lower().startswith("client"):
        return None   # (the sidecar's own service: in its scope or not by its own authorization)
    want = policy.destination(request.host, scoped=True)
    route = decided.route   # SERVICE/ROUTE[/N], SERVICE may be NAMESPACE/NAME
    if route is not None and route.rpartition("/")[2].isdigit():
        route = route.rpartition("/")[0]
    got = route.rpartition("/")[0] if route is not None else None
    if (got is not None and got != want) or (want is None and got is not None):
        return f"Host {request.host!r} went to {got!r}, the generator expects {want!r}"
    if route is not None and route in policy.meta.get("foreign_routes", ()):
        return f"route {decided.route} has matches for other callers only: it is not in the sidecar of `client`"
    return None


def scope_problem(compiled, policy: GenPolicy) -> str | None:
    vhosts = {vh["name"] for vh in compiled.routes["virtual_hosts"]}
    callable_ = {d["name"] for d in compiled.native["services"] if d["domains"]}
    expected_in = set(policy.services) - set(policy.out_of_scope)
    for name, got in (("envoy virtual hosts", vhosts), ("native destinations", callable_)):
        if got & set(policy.out_of_scope) or not expected_in <= got:
            return f"{name} {sorted(got)}: expected {sorted(expected_in)} in scope, {list(policy.out_of_scope)} out"
    return None


def compare(policy_text: str, requests, test: str, draws: random.Random | None = None,
            new_policy: bool = True, policy: GenPolicy | None = None) -> int:
    """Decide every request with both models; fail on the first difference. With the generated
    `policy`, also hold its scope (`out_of_scope_problem`). Returns the number of decisions
    compared."""
    compiled = compile_policy(policy_text)
    envoy, native = EnvoyModel(compiled, own_uri=CLIENT_ID), NativeModel(compiled)
    if policy is not None and (problem := scope_problem(compiled, policy)):
        tally.add(policies=int(new_policy), disagreements=0 if test in _reported else 1)
        _reported.add(test)
        pytest.fail(f"the sidecar's scope is not the generator's\n--- policy:\n{policy_text}\n--- {problem}",
                    pytrace=False)
    n = identified = 0
    for request in requests:
        identified += request.caller is not None
        why: dict = {}
        pairs = [(None, envoy.decide(request), native.decide(request, why=why))]
        if policy is not None and (problem := out_of_scope_problem(compiled, policy, envoy, native, request,
                                                                   (pairs[0][1], pairs[0][2]))):
            tally.add(policies=int(new_policy), decisions=n, identity_decisions=identified,
                      disagreements=0 if test in _reported else 1)
            _reported.add(test)
            pytest.fail("out of scope\n--- policy:\n" + policy_text + "\n--- request:\n" + request.describe()
                        + "\n--- " + problem, pytrace=False)
        if policy is not None and (problem := host_problem(policy, request, pairs[0][1])):
            tally.add(policies=int(new_policy), decisions=n, identity_decisions=identified,
                      disagreements=0 if test in _reported else 1)
            _reported.add(test)
            pytest.fail("host selection\n--- policy:\n" + policy_text + "\n--- request:\n" + request.describe()
                        + "\n--- " + problem, pytrace=False)
        if pairs[0][1].candidates is not None and draws is not None:
            k = draws.getrandbits(64)      # the random pick, made with the same draw on both sides
            pairs.append((k, envoy.decide(request, key_draw=k), native.decide(request, key_draw=k)))
        for key_draw, e, v in pairs:
            n += 1
            if e != v:
                tally.add(policies=int(new_policy), decisions=n, identity_decisions=identified,
                          disagreements=0 if test in _reported else 1)
                _reported.add(test)
                pytest.fail("envoy and native decide differently\n--- policy:\n" + policy_text
                            + "\n--- request:\n" + request.describe()
                            + (f"\n  (random draw {key_draw})" if key_draw is not None else "")
                            + "\n--- differences:\n  " + "\n  ".join(diff(e, v))
                            + "\n--- side by side:\n" + side_by_side(e, v), pytrace=False)
        features.observe("model", request, pairs[0][1], why.get("steps", ()), native.table)
    tally.add(policies=int(new_policy), decisions=n, identity_decisions=identified)
    return n


# ---- a seeded request generator (extra coverage) --------------------------------------------------

_SEGMENTS = ("api", "v1", "users", "a", "b", "x.y", "Admin", "pub", "é", "%41", "a b")
_TRICKS = ("/./", "/../", "//", "/%2e/", "/%2E%2E/", "/.;x/", "/..;/", "/%2e%2e;/", "/.%2e/", "%2F", "%2f", "%5C",
           "%5c", "\\", "/..", "/.", "%00", "%", "%%30%30", "%%31", "%3", "%zz", "%7e", "%7E", "%2D", "%61",
           '"', "<", "^", "`", "{", "|", "}", "\x7f", "\xe9", "/;", "#f", "?")
_QUERIES = ("", "", "", "?q=1", "?v=2&v=3", "?q", "?q=", "?v=x", "?q=a%20b", "?v=1&q=2", "?q=x&debug",
            "?&q=1", "?q=1&q=2", "?=1", "?Q=1", "?v=a=b", "?q=%31", "?v", "?q=1#f", "?q=//..")
_VALUES = ("", "a", "A", "ab", "aB", "1", "a,b", "v 1", "\xfc", "caf\xc3\xa9", " a", "a ", "a\t", "AB", "b", "a,b ")
_KEYS = ("0", "29", "30", "99", "100", "129", "+5", "0029", "-1", "abc", " 7 ", "1e2", "0x10", "\t5",
         "18446744073709551615", "18446744073709551616", "", "00", "+", "++1", "1 2", "\xb3", "\xb2\xb3")
_METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "TRACE")


def _target(rng: random.Random, policy: GenPolicy) -> str:
    if policy.paths and rng.random() < 0.8:
        path = rng.choice(policy.paths)
    else:
        path = "/" + "/".join(rng.choice(_SEGMENTS) for _ in range(rng.randint(1, 3)))
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        trick = rng.choice(_TRICKS)
        where = rng.randint(0, len(path))
        if trick.startswith("/") and rng.random() < 0.5:
            path = path + trick[:-1] if trick.endswith("/") and rng.random() < 0.3 else path + trick
        else:
            path = path[:where] + trick + path[where:]
    if rng.random() < 0.1:
        path = path.swapcase()
    if not path.startswith("/") and rng.random() < 0.9:
        path = "/" + path
    return path + rng.choice(_QUERIES)


def _caller(rng: random.Random, mtls: str) -> str | None:
    """A caller with an identity (over mTLS) or None (plaintext); mostly the kind the listener
    takes."""
    tls = (mtls != "disable") != (rng.random() < 0.15)
    return rng.choice(CALLERS) if tls else None


def fast_requests(policy: GenPolicy, seed: int, n: int) -> list[GenRequest]:
    rng = random.Random(seed)
    out = []
    names = tuple(policy.header_names) or ("x-h0", "x-h1")
    for _ in range(n):
        inbound = rng.random() < 0.25
        if inbound:
            host = rng.choice(("client", "client:8000", "anything"))
        else:
            key = rng.choice(policy.services) if policy.services else "s0"
            svc, ns = key.rpartition("/")[2], (key.partition("/")[0] if "/" in key else "default")   # (a twin: NS/s0)
            port = 8080 + int(svc[1:]) if svc[1:].isdigit() else 1
            host = rng.choice((svc, svc, f"{svc}:{port}", f"{svc}.{ns}", f"{svc}.{ns}:{port}",
                               svc.upper(), f"{svc.upper()}.{ns.upper()}", "client", "nowhere", f"{svc}:1", f"{svc}."))
            if policy.hosts and rng.random() < 0.4:
                host = rng.choice(REQUEST_HOSTS + (f"{svc}.{ns}.svc.{policy.cluster_domain}:8080",))
        headers = []
        for _ in range(rng.choice((0, 1, 2, 3, 4))):
            name = rng.choice(names + ("x-set", "x-add", "x-rm", "x-k"))
            if rng.random() < 0.2:
                name = name.upper()
            headers.append((name, rng.choice(_VALUES + tuple(policy.header_values))))
            if rng.random() < 0.15:
                headers.append((name, rng.choice(_VALUES)))
        if rng.random() < 0.6:
            keys = _KEYS + tuple(policy.split_keys)
            headers.append(("x-k", rng.choice(keys)))
            if rng.random() < 0.1:
                headers.append(("X-K", rng.choice(keys)))
        caller = None
        if inbound:
            caller = _caller(rng, policy.mtls)
            if rng.random() < 0.15:
                headers.append((XFCC, rng.choice((FORGED_XFCC, ""))))
        out.append(GenRequest("inbound" if inbound else "outbound", rng.choice(_METHODS), _target(rng, policy),
                              host, tuple(headers), caller=caller))
    return out


# ---- the generated layer -----------------------------------------------------------------------------

@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(case=cases(max_requests=20, min_requests=5, live=False, focus_layer="model"), seed=st.integers(0, 2**32 - 1))
def test_equivalence_model_generated(case, seed):
    policy, reqs = case
    requests = list(reqs) + fast_requests(policy, seed, EXTRA)
    compare(policy.text, requests, "generated", random.Random(seed), policy=policy)


def focus_group_case(group: frozenset[str], seed: int):
    @settings(max_examples=1, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(case=cases(max_requests=10, min_requests=2, live=False, focus=group))
    def one(case):
        policy, reqs = case
        compare(policy.text, list(reqs) + fast_requests(policy, seed, EXTRA // 2), "focus-groups",
                random.Random(seed), policy=policy)

    return one


def test_equivalence_model_focus_groups():
    """Every group of features the generators combine on purpose (features.focus_groups(): they
    hold every pair that can interact), one generated policy each (hypothesis, derandomized)
    focused on it, with its focused requests, hypothesis's and the seeded ones: the CI profile
    covers every pair of the model layer."""
    for i, group in enumerate(features.focus_groups()):
        focus_group_case(group, i)()
    assert features.uncovered("model") == []     # every pair of the layer, by this test alone


# ---- hand-written policies ---------------------------------------------------------------------------

CLIENT = ('service client {\n  port 8000\n  endpoints ["127.0.0.1:@APP@"]\n'
          '  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@"'
          '  escaped_slashes ESC }\n}\n')
SERVICES = '''
service s0 {
  port 8080
  subset a { endpoints ["127.0.0.1:@EP0@"] }
  subset b { endpoints ["127.0.0.1:@EP1@"] }
  subset c { endpoints ["127.0.0.1:@EP2@"] }
}
service s1 {
  port 8081
  subset a { endpoints ["127.0.0.1:@EP3@"] }
}
'''
HANDWRITTEN = {
    "everything": '''
routes s0 {
  route canary {
    match { header "x-h0" exact "a" ignore_case  method [GET, HEAD] }
    match { path regex "/users/[^/]+"  not header "x-h1" prefix "a" }
    split { s0.a 1  s0.c 0  s0.b 2 } by header "x-k"
    timeout 3s
    retry { attempts 3  on [5xx, reset, 409]  per_try_timeout 100ms  backoff 1ms max 2ms  allow_non_idempotent }
    request_headers { set "x-set" "100%"  add "x-add" "é"  add "x-add" "%%"  remove "x-rm" }
    response_headers { remove "x-r0"  set "cache-control" "no-store"  add "x-note" "two words" }
  }
  route q {
    match { path prefix "/api/"  query "q" exact "a%20b" }
    match { path raw_prefix "/ap"  query "v" regex "[0-9]+"  query "q" present }
    to s0.b
    mirror s0.c 100%
    fault { delay 5ms 100% }
  }
  route down {
    match { path exact "/x.y"  header "x-h2" absent }
    to s1.a
    fault { abort 503 100% }
  }
  route rest {
    match { path prefix "/" }
    split { s0.a 30  s0.b 70 }
    timeout none
  }
}
authorization client {
  default deny
  allow reads { method [GET, HEAD]  path prefix "/pub" }
  allow any_api { path regex "/api/.*"  header "x-h0" regex "a.*" }
  deny evil { header "x-evil" present }
  deny admin { path prefix "/pub/admin"  not header "x-h1" exact "ok" }
}
''',
    "no_authz": '''
routes s0 {
  route only { match { path exact "/a" } to s0.a }
}
''',
}


@pytest.mark.parametrize("escaped", ["reject", "decode", "keep"])
@pytest.mark.parametrize("name", sorted(HANDWRITTEN))
def test_equivalence_model_handwritten(name, escaped):
    text = CLIENT.replace("ESC", escaped) + SERVICES + HANDWRITTEN[name]
    policy = GenPolicy(text=text, endpoints=(), services=("s0", "s1"),
                       paths=("/users/u1", "/api/x", "/ap", "/x.y", "/pub", "/pub/admin", "/a", "/"),
                       header_names=("x-h0", "x-h1", "x-h2", "x-evil"), header_values=("a", "A", "ok", ""),
                       split_keys=("0", "1", "2", "3"))
    n = 0
    for seed in range(6):
        n += compare(text, fast_requests(policy, seed, 400), f"handwritten-{name}", random.Random(seed),
                     new_policy=seed == 0)
    assert n >= 2400


IDENTITY_RULES = '''
authorization client {
  default deny
  allow same_ns { from same_namespace  method [GET, HEAD] }
  allow s0_api { from service s0  path prefix "/api" }
  allow legacy { from identity "spiffe://mesh.local/legacy/*" }
  allow public { path prefix "/pub" }
  allow listed { from identity ["spiffe://mesh.local/ns/shopping/sa/x", "spiffe://evil.local/*"]  method POST }
  deny shopping { from namespace "shopping"  header "x-h0" present }
  deny evil {
    from identity ["spiffe://evil.local/ns/shop/sa/client", "spiffe://mesh.local/ns/shop/sa/web"]
    header "x-evil" present
  }
  deny admin { path prefix "/pub/admin"  not header "x-h1" exact "ok" }
}
'''


def identity_policy(mode: str, escaped: str = "reject") -> str:
    """The hand-written identity rules on a sidecar in namespace `shop` whose inbound listener
    runs mTLS in `mode` (the destinations keep `disable`)."""
    client = CLIENT.replace("ESC", escaped).replace(
        "  port 8000\n", f'  port 8000\n  namespace "shop"\n  mtls {mode}\n')
    return 'mesh { trust_domain "mesh.local" }\n' + client + SERVICES + HANDWRITTEN["no_authz"] + IDENTITY_RULES


@pytest.mark.parametrize("mode", ["permissive", "strict", "disable"])
def test_equivalence_model_handwritten_identity(mode):
    text = identity_policy(mode)
    policy = GenPolicy(text=text, endpoints=(), services=("s0", "s1"), paths=("/api/x", "/pub", "/pub/admin", "/a"),
                       header_names=("x-h0", "x-h1", "x-evil"), header_values=("a", "ok", ""),
                       split_keys=("0",), mtls=mode)
    n = 0
    for seed in range(4):
        reqs = [replace(r, kind="inbound", host="client", caller=_caller(random.Random(seed * 1000 + i), mode))
                for i, r in enumerate(fast_requests(policy, seed, 300))]
        n += compare(text, reqs, f"handwritten-identity-{mode}", random.Random(seed), new_policy=seed == 0)
    assert n >= 1200


SCOPED = '''
routes s0 {
  route api { match { path prefix "/api" } to s1.a  mirror s1.a 100% }
  route rest { split { s0.a 1  s0.b 1 } by header "x-k" }
}
authorization s1 { default deny  allow only_s0 { from service s0 } }
'''


def test_equivalence_model_handwritten_scope():
    """s1 admits s0 only, so it is out of the scope of `client` (compiler/ir/scope.py): every
    request addressed to it gets what an unknown Host gets, in both models, while s0's route still
    sends to s1's subset and mirrors to it."""
    text = CLIENT.replace("ESC", "reject") + SERVICES + SCOPED
    policy = GenPolicy(text=text, endpoints=(), services=("s0", "s1"), paths=("/api/x", "/a", "/"),
                       header_names=("x-h0",), header_values=("a",), split_keys=("0", "1"), out_of_scope=("s1",))
    before = out_of_scope_checked[0]
    n = sum(compare(text, fast_requests(policy, seed, 300), "handwritten-scope", random.Random(seed),
                    new_policy=seed == 0, policy=policy) for seed in range(3))
    assert n >= 900 and out_of_scope_checked[0] - before >= 100
    e, v = _one(SCOPED, GenRequest("outbound", "GET", "/api/x", "s0"))
    assert e == v and e.cluster == "outbound|a|s1" and e.mirror == (("outbound|a|s1", 100.0),)


# ---- regressions: disagreements found while building the layer -----------------------------------------

def _one(text: str, request: GenRequest, escaped: str = "reject") -> tuple[Decision, Decision]:
    compiled = compile_policy(CLIENT.replace("ESC", escaped) + SERVICES + text)
    return EnvoyModel(compiled).decide(request), NativeModel(compiled).decide(request)


def test_equivalence_regression_trailing_whitespace_in_header_value():
    """Envoy's codec trims trailing SP/HTAB from a header value (llhttp keeps it): a condition on
    the value sees `a`, and the split key ` 7 ` reaches the upstream as `7`."""
    text = 'routes s0 {\n  route r { match { header "x-h0" exact "a" } to s0.b }\n  route other { to s0.a }\n}\n'
    req = GenRequest("outbound", "GET", "/", "s0", (("x-h0", "a "), ("x-k", " 7 \t")))
    e, v = _one(text, req)
    assert e == v and e.cluster == "outbound|b|s0"
    assert e.upstream_headers == (("x-h0", "a"), ("x-k", "7"))


def test_equivalence_regression_non_ascii_header_bytes_with_header_changes():
    """A route with request header changes used to forward the other headers' non-ASCII bytes
    re-encoded (latin-1 decoded, UTF-8 encoded: `\\xfc` went out as `\\xc3\\xbc`, UTF-8 `é` as
    mojibake); Envoy forwards the bytes that came in. The same on response headers."""
    text = ('routes s0 {\n  route r {\n    to s0.a\n    request_headers { set "x-set" "é" }\n'
            '    response_headers { set "x-r1" "1" }\n  }\n}\n')
    req = GenRequest("outbound", "GET", "/", "s0", (("x-h0", "\xfc"), ("x-h1", "caf\xc3\xa9")))
    e, v = _one(text, req)
    assert e == v
    assert e.upstream_headers == (("x-h0", "\xfc"), ("x-h1", "caf\xc3\xa9"), ("x-set", "\xc3\xa9"))
    assert ("x-note", "caf\xc3\xa9") in e.response_headers and ("x-raw", "\xfc") in e.response_headers


def test_equivalence_regression_repeated_inline_headers_with_empty_values():
    """Envoy keeps one value for its inline headers (`accept`, `vary`, ...): repeated lines are
    appended with appendToHeader, which adds nothing for an empty line and no comma after an
    empty value. The native proxy joined every line with ",", so `accept: ` + `accept: a` +
    `accept: ` + `accept: b` was `,a,,b` there and `a,b` in Envoy (found by the model layer once
    the generators sent repeated `accept` lines); the same on the upstream's response."""
    text = ('routes s0 {\n  route r { match { header "accept" exact "a,b" } to s0.b\n'
            '    response_headers { add "accept-x" "1" } }\n  route other { to s0.a }\n}\n')
    req = GenRequest("outbound", "GET", "/", "s0", (("accept", ""), ("accept", "a"), ("accept", ""), ("accept", "b")))
    e, v = _one(text, req)
    assert e == v and e.cluster == "outbound|b|s0"
    assert e.upstream_headers == (("accept", "a,b"),)
    assert ("vary", "a,b") in e.response_headers


@pytest.mark.parametrize("target, path", [("/%/%2E%2E/%30%30a", "/00a"), ("/x/%/../%30%30a", "/x/00a"),
                                          ("/%%30%30", "/%2500"), ("/ab%/../%%30%30", "/%2500")])
def test_equivalence_regression_stray_percent_in_a_removed_segment(target, path):
    """Chromium's nested-escape check re-escapes a stray `%` that decoding would complete into an
    escape (`/%%30%30` is `/%2500`). Once a `..` has removed the segment holding that `%`, Envoy
    forgets it; the native proxy kept its position and turned `/%/%2E%2E/%30%30a` into `/0250a`
    (Envoy: `/00a`; found by a nightly run of the model layer, confirmed on the real Envoy)."""
    req = GenRequest("inbound", "GET", target, "client")
    e, v = _one('routes s0 {\n  route r { to s0.a }\n}\n', req, escaped="keep")
    assert e == v and e.path == path


def test_equivalence_regression_rewrite_on_a_split_whose_arms_change_headers():
    """A random pick among arms with their own header changes is decided without the heads; the
    evaluator returned the path as received there, before the route's rewrite, which applies
    whichever arm is drawn (found by the model layer)."""
    text = ('routes s0 {\n  route r {\n    match { path prefix "/api" ignore_case }\n    rewrite { prefix "/new" }\n'
            '    split { s0.a 1 request_headers { remove "x-h0" }  s0.b 1 }\n  }\n}\n')
    e, v = _one(text, GenRequest("outbound", "GET", "/API/x", "s0"))
    assert e == v and e.candidates == ("outbound|a|s0", "outbound|b|s0") and e.path == "/new/x"


# ---- the Envoy evaluator against measured Envoy facts ------------------------------------------------

def test_envoy_model_split_table():
    """ENVOY_NOTES §3: modulo total, cumulative intervals, SimpleAtoi rules."""
    text = 'routes s0 {\n  route r { split { s0.a 30  s0.b 70 } by header "x-k" }\n}\n'
    compiled = compile_policy(CLIENT.replace("ESC", "reject") + SERVICES + text)
    model = EnvoyModel(compiled)

    def pick(*values):
        d = model.decide(GenRequest("outbound", "GET", "/split", "s0", tuple(("x-k", v) for v in values)))
        return {"outbound|a|s0": "a", "outbound|b|s0": "b"}.get(d.cluster, "random" if d.candidates else None)

    for v in range(110):
        assert pick(str(v)) == ("a" if v % 100 < 30 else "b")
    for v, want in [("100", "a"), ("129", "a"), ("130", "b"), ("199", "b"), ("230", "b"), ("+5", "a"),
                    ("+40", "b"), ("0029", "a"), ("18446744073709551615", "a")]:
        assert pick(v) == want, v
    for v in ("18446744073709551616", "-1", "abc", "1e2", "0x10", "5.0"):
        assert pick(v) == "random", v
    assert pick("5", "5") == "random"
    assert pick() == "random"
    text = 'routes s0 {\n  route r { split { s0.a 1  s0.c 0  s0.b 2 } by header "x-k" }\n}\n'
    model = EnvoyModel(compile_policy(CLIENT.replace("ESC", "reject") + SERVICES + text))
    got = "".join(model.decide(GenRequest("outbound", "GET", "/", "s0", (("x-k", str(k)),))).cluster[9]
                  for k in range(9))
    assert got == "abbabbabb"
    assert simple_atoi_u64([" 12 "]) == 12 and simple_atoi_u64(["1 2"]) is None


def test_envoy_model_header_matching():
    """ENVOY_NOTES §5.2: names case-insensitive, values case-sensitive, present matches empty,
    invert on an absent header does not match, several lines are matched value by value."""
    text = '''routes s0 {
  route canary { match { header "x-canary" exact "true" } to s0.b }
  route beta { match { header "x-beta" present } to s0.b }
  route env { match { not header "x-env" prefix "prod"  header "x-env" present } to s0.b }
  route absent { match { path prefix "/absent"  header "x-gone" absent } to s0.c }
  route m1 { match { path prefix "/m"  header "x-m" exact "1" } to s0.c }
  route rest { to s0.a }
}
'''
    model = EnvoyModel(compile_policy(CLIENT.replace("ESC", "reject") + SERVICES + text))

    def sub(path="/hdr", *headers):
        return model.decide(GenRequest("outbound", "GET", path, "s0", tuple(headers))).cluster[9]

    assert sub() == "a"
    assert sub("/hdr", ("x-canary", "true")) == "b"
    assert sub("/hdr", ("x-canary", "false")) == "a"
    assert sub("/hdr", ("x-canary", "TRUE")) == "a"
    assert sub("/hdr", ("X-CANARY", "true")) == "b"
    assert sub("/hdr", ("x-beta", "")) == "b"
    assert sub("/hdr", ("x-env", "staging")) == "b"
    assert sub("/hdr", ("x-env", "prod-eu")) == "a"
    assert sub("/absent") == "c"
    assert sub("/absent", ("x-gone", "")) == "a"
    assert sub("/m", ("x-m", "1"), ("x-m", "2")) == "c"
    assert sub("/m", ("x-m", "2"), ("x-m", "1")) == "c"
    assert sub("/m", ("x-m", "1,2")) == "a"


def test_envoy_model_path_kinds_and_query():
    """ENVOY_NOTES §5.3."""
    text = '''routes s0 {
  route exact { match { path exact "/exact" } to s0.b }
  route re { match { path regex "/re/[0-9]+" } to s0.b }
  route ps { match { path prefix "/ps" } to s0.b }
  route q { match { path prefix "/q"  query "v" exact "2"  query "debug" present } to s0.b }
  route rest { to s0.a }
}
'''
    model = EnvoyModel(compile_policy(CLIENT.replace("ESC", "reject") + SERVICES + text))
    table = {"/exact": "b", "/exact/": "a", "/exact?x=1": "b", "/EXACT": "a", "/re/123": "b", "/re/12a": "a",
             "/ps": "b", "/ps/": "b", "/ps/x": "b", "/psx": "a", "/ps?x=1": "b", "/q?v=2&debug": "b",
             "/q?v=2&debug=": "b", "/q?v=2": "a", "/q?v=3&debug=1": "a", "/q?v=2&v=3&debug=1": "b",
             "/q?v=3&v=2&debug": "a", "/q?debug=1&v=2": "b"}
    for target, want in table.items():
        assert model.decide(GenRequest("outbound", "GET", target, "s0")).cluster[9] == want, target


MATRIX = {   # ENVOY_NOTES §5.12: request -> KEEP_UNCHANGED, REJECT_REQUEST, UNESCAPE_AND_FORWARD
    "/a/../b": ("/b", "/b", "/b"),
    "//a//b": ("/a/b", "/a/b", "/a/b"),
    "/a/./b": ("/a/b", "/a/b", "/a/b"),
    "/a%2Fb": ("/a%2Fb", 400, "/a/b"),
    "/a%2fb": ("/a%2fb", 400, "/a/b"),
    "/a%5Cb": ("/a%5Cb", 400, "/a/b"),
    "/%61bc": ("/abc", "/abc", "/abc"),
    "/a/b%2F..%2Fc": ("/a/b%2F..%2Fc", 400, "/a/c"),
    "/a/%2E%2E/b": ("/b", "/b", "/b"),
    "/a?x=//y": ("/a?x=//y", "/a?x=//y", "/a?x=//y"),
    # "Path normalization, exactly as Envoy 1.40 does it"
    "/..;/admin": ("/admin", "/admin", "/admin"),
    "/a/%2e%2e;/b": ("/a/..;/b", "/a/..;/b", "/a/..;/b"),
    "/a#frag": (400, 400, 400),
    "/a%00b": (400, 400, 400),
    '/a"<>^`{|}': ("/a%22%3C%3E%5E%60%7B%7C%7D",) * 3,
    "/%%30%30": ("/%2500",) * 3,
    "///": ("//",) * 3,
    "/": ("/",) * 3,
}


@pytest.mark.parametrize("target", sorted(MATRIX))
def test_envoy_model_normalisation_matrix(target):
    for action, want in zip(("KEEP_UNCHANGED", "REJECT_REQUEST", "UNESCAPE_AND_FORWARD"), MATRIX[target]):
        hcm = {"normalize_path": True, "merge_slashes": True, "path_with_escaped_slashes_action": action}
        assert normalize(target, hcm) == want, (target, action)
    assert normalize(target, {}) in (target, 400)    # all defaults: untouched (a fragment is still refused)


def test_envoy_model_normalisation_pieces():
    assert canonical_path("/a/b/..") == "/a/"
    assert canonical_path("/a/.") == "/a/"
    assert canonical_path("/..") == "/"
    assert canonical_path("/a\\b") == "/a/b"
    assert canonical_path("/%7e%2D") == "/~-"
    assert canonical_path("/%3a%3A") == "/%3a%3A"       # reserved escapes stay as written
    assert merge_slashes("/a//b/") == "/a/b/" and merge_slashes("/a") == "/a"


def test_envoy_model_vhost_and_local_replies():
    text = 'routes s0 {\n  route r { match { path prefix "/api" } to s0.a  fault { abort 429 100% } }\n}\n'
    model = EnvoyModel(compile_policy(CLIENT.replace("ESC", "reject") + SERVICES + text))
    assert model.decide(GenRequest("outbound", "GET", "/api", "S0.Default:8080")).status == 429
    assert model.decide(GenRequest("outbound", "GET", "/api", "s0:1")).status == 404
    assert model.decide(GenRequest("outbound", "GET", "/other", "s0")).status == 404
    abort = model.decide(GenRequest("outbound", "GET", "/api", "s0"))
    assert (abort.status, abort.body) == (429, "fault filter abort")
    assert model.decide(GenRequest("outbound", "get", "/api", "s0")).status == 400
    ok = model.decide(GenRequest("outbound", "GET", "/x/..", "s1"))
    assert ok.cluster == "outbound|a|s1" and ok.path == "/"


def test_envoy_model_identity():
    """FINDINGS §2 (measured on Envoy 1.40): on a permissive listener an mTLS caller is matched
    by `authenticated.principal_name` on its URI SAN (another identity: 403 `RBAC: access
    denied`), a plaintext caller has no principal and is admitted only by rules without one, and
    the application gets `x-forwarded-client-cert: By=<own>;Hash=<sha256 of the peer
    certificate>;URI=<peer>` over mTLS only (a forged one is removed); on a strict listener a
    plaintext caller is refused at the TLS layer, and a TLS caller of a plaintext listener gets
    no answer it can read."""
    import hashlib

    web, shopping = "spiffe://mesh.local/ns/shop/sa/web", "spiffe://mesh.local/ns/shopping/sa/x"
    model = EnvoyModel(compile_policy(identity_policy("permissive")), own_uri=CLIENT_ID, certs={web: b"der-of-web"})

    def call(caller, path="/x", method="GET", headers=()):
        return model.decide(GenRequest("inbound", method, path, "client", tuple(headers), caller=caller))

    ok = call(web, headers=[(XFCC, FORGED_XFCC)])
    assert ok.status is None
    assert ok.xfcc == (f"By={CLIENT_ID};Hash={hashlib.sha256(b'der-of-web').hexdigest()};URI={web}",)
    assert call(web, method="POST").status == 403                    # same_ns is GET/HEAD only
    assert (call(shopping).status, call(shopping).body) == (403, "RBAC: access denied")   # ns/shop/ prefix
    assert call(shopping, method="POST").status is None
    assert call("spiffe://mesh.local/legacy/s2").status is None
    assert call("spiffe://mesh.local/ns/default/sa/s0", "/api/v").status is None
    assert call("spiffe://mesh.local/ns/default/sa/s0", "/apix").status == 403
    assert call(None).status == 403 and call(None, "/pub").status is None
    assert call(None, "/pub", headers=[(XFCC, FORGED_XFCC)]).xfcc == ()
    assert call(web, "/pub", headers=[("x-evil", "1")]).status == 403
    assert call(None, "/pub", headers=[("x-evil", "1")]).status is None   # a deny `from` never holds on plaintext
    strict = EnvoyModel(compile_policy(identity_policy("strict")), own_uri=CLIENT_ID)
    assert strict.decide(GenRequest("inbound", "GET", "/pub", "client")).status == 0
    assert strict.decide(GenRequest("inbound", "GET", "/pub", "client", caller=web)).status is None
    plain = EnvoyModel(compile_policy(identity_policy("disable")), own_uri=CLIENT_ID)
    assert plain.decide(GenRequest("inbound", "GET", "/pub", "client", caller=web)).status == 0
    assert plain.decide(GenRequest("inbound", "GET", "/pub", "client")).xfcc == ()


def test_equivalence_model_decision_helpers():
    a = Decision("outbound", status=404)
    b = replace(a, status=None, path="/")
    assert diff(a, a) == [] and len(diff(a, b)) == 2
    assert "! status" in side_by_side(a, b)


# measured on Envoy 1.40 while building this layer (keep, decode): `;params` of dot segments
DOT_PARAMS = {
    "/a/..;x\\b": ("/", "/"),
    "/a/.;x\\y/c": ("/a/c", "/a/c"),
    "/a/b/..;x\\..\\c": ("/a/", "/a/"),
    "/a\\..;x\\b/c": ("/a/..;x/b/c", "/a/..;x/b/c"),
    "/a/..;x;y/b": ("/b", "/b"),
    "/a/.;x%2F/b": ("/a/b", "/a/b"),
    "/a/%2e;x/b": ("/a/.;x/b", "/a/.;x/b"),
    "/a/...;/b": ("/a/...;/b", "/a/...;/b"),
    "/a/.;/..;/b": ("/b", "/b"),
    "/a/;/b": ("/a/;/b", "/a/;/b"),
    "/.;%00/x": ("/x", "/x"),
    "/a/..;%00/b": ("/b", "/b"),
    "/a/.%2E;x/b": ("/a/..;x/b", "/a/..;x/b"),
    "/a%5C..;x/b": ("/a%5C..;x/b", "/a/..;x/b"),
    "/a%2F..;x/b": ("/a%2F..;x/b", "/b"),
    "/a/..;x%5Cy/b": ("/b", "/b"),
    "/a/..;x%2Fy/b": ("/b", "/y/b"),
    "/a\\.;x/b": ("/a/.;x/b", "/a/.;x/b"),
}


@pytest.mark.parametrize("target", sorted(DOT_PARAMS))
def test_envoy_model_dot_segment_params(target):
    for action, want in zip(("KEEP_UNCHANGED", "UNESCAPE_AND_FORWARD"), DOT_PARAMS[target]):
        hcm = {"normalize_path": True, "merge_slashes": True, "path_with_escaped_slashes_action": action}
        assert normalize(target, hcm) == want, (target, action)


@pytest.mark.parametrize("target", sorted(DOT_PARAMS))
def test_equivalence_regression_dot_segment_params(target):
    """The native proxy ended a dot segment's `;params` at a backslash too, and collapsed a dot
    segment after a backslash (`/a/..;x\\\\b/c` went to `/b/c`, Envoy sends `/c`;
    `/a\\\\..;x/b` went to `/b`, Envoy sends `/a/..;x/b`)."""
    text = 'routes s0 {\n  route r { to s0.a }\n}\n'
    for escaped in ("keep", "decode"):
        e, v = _one(text, GenRequest("outbound", "GET", target, "s0"), escaped)
        assert e == v, side_by_side(e, v)


def test_envoy_model_codec_rejections():
    """Measured: a raw byte >= 0x80, DEL or a control character in the target is the codec's 400
    `Bad Request` (so is a method that is not upper case); `"<>^`{|}` are accepted and escaped."""
    text = 'routes s0 {\n  route r { to s0.a }\n}\n'
    for target in ("/\xe9/x", "/a\x7fb", "/q?\xe9=1"):
        e, v = _one(text, GenRequest("outbound", "GET", target, "s0"))
        assert e == v and (e.status, e.body) == (400, "Bad Request"), target
    e, v = _one(text, GenRequest("outbound", "GET", '/a"b|{c}', "s0"))
    assert e == v and e.path == "/a%22b%7C%7Bc%7D"


def test_equivalence_regression_empty_query_keeps_its_question_mark():
    """Measured: Envoy forwards `/a?` as `/a?` (normalised or not: `/a/../b?` -> `/b?`); the
    native proxy dropped the `?` of an empty query."""
    text = 'routes s0 {\n  route r { to s0.a }\n}\n'
    for target, want in (("/a?", "/a?"), ("/a/../b?", "/b?"), ("//a?", "/a?"), ("/a??", "/a??"), ("/a", "/a")):
        e, v = _one(text, GenRequest("outbound", "GET", target, "s0"))
        assert e == v and e.path == want, side_by_side(e, v)
    e, v = _one(text, GenRequest("inbound", "GET", "/a?", "client"))
    assert e == v and e.path == "/a?"


def _scope_program(namespace: str, body: str) -> str:
    from tests.equivalence.policies import TRUST_DOMAIN

    return (f'mesh {{ trust_domain "{TRUST_DOMAIN}" }}\n'
            'service client { port 8000  namespace "shop"  endpoints ["127.0.0.1:1"] }\n'
            'service s0 { port 8080  namespace "default"  endpoints ["127.0.0.1:2"] }\n'
            f'service s0 {{ port 8080  namespace "{namespace}"  endpoints ["127.0.0.1:3"] }}\n'
            f'authorization {namespace}/s0 {{\n{body}\n}}\n') if namespace != "default" else (
            f'mesh {{ trust_domain "{TRUST_DOMAIN}" }}\n'
            'service client { port 8000  namespace "shop"  endpoints ["127.0.0.1:1"] }\n'
            'service s0 { port 8080  namespace "default"  endpoints ["127.0.0.1:2"] }\n'
            f'authorization s0 {{\n{body}\n}}\n')


def _admits_client(namespace: str, body: str) -> bool:
    from compiler import api
    from compiler.ir import scope

    comp = api.compile([api.Text("scope.mesh", _scope_program(namespace, body))], shard=False)
    assert not comp.has_errors, [d.message for d in comp.diagnostics]
    services = {s.name: s for s in comp.ir.services}
    assert services["client"].identity == CLIENT_ID
    return scope.admits(services["s0" if namespace == "default" else f"{namespace}/s0"], services["client"])


@pytest.mark.parametrize("namespace", ["default", "shop", "other"])
def test_equivalence_regression_the_generators_scope_verdict_is_the_compilers(namespace):
    """Whether a `from` condition of the generator admits `client` (what the scope checks of the
    generated cases hold the compiler to) is what compiler/ir/scope.py derives, for a destination
    `s0` in each namespace the generator puts one (`s0` in `default`, a twin `NS/s0` elsewhere):
    `from same_namespace` refused `client` in the generator everywhere, and a twin `shop/s0` with
    it was then found in the sidecar's scope, against the generator's word."""
    from tests.equivalence.policies import client_conditions

    admit, refuse = client_conditions(namespace)
    for cond, admits in [(c, True) for c in admit] + [(c, False) for c in refuse]:
        other = "" if cond else 'method GET'
        body = f"  default deny\n  allow a {{ {cond}  {other} }}"
        assert _admits_client(namespace, body) == admits, (namespace, cond)


@given(data=st.data(), namespace=st.sampled_from(["default", "shop", "other"]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_equivalence_regression_generated_authorization_blocks_scope_as_the_generator_says(data, namespace):
    """The same for whole drawn blocks (deny rules, several allow rules, default allow)."""
    from tests.equivalence.policies import destination_authorizations

    block = data.draw(destination_authorizations(namespace))
    if block is None:
        return
    body, admits = block
    assert _admits_client(namespace, body) == admits, body
