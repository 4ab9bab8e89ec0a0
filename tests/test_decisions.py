"""Unit tests of the native proxy's pure decision modules, from the examples of docs/language.md
and the measurements of ENVOY_NOTES (sections 3 and 5, and "Path normalization")."""

from __future__ import annotations

import pytest

from runtime_proxy.decide import authz, breaker, fault, headers, normalize, outlier, retry, routing, split
from runtime_proxy.decide.retry import Outcome
from runtime_proxy.decide.table import (
    CFault,
    CHeaderChanges,
    CRetry,
    Limits,
    OutlierSettings,
    RetryBudget,
    TableError,
    compile_config,
    parse_query,
)
from tests.decision_support import config, route, service, table
from tests.decision_support import split as split_of

# ---- normalisation ----------------------------------------------------------------------------

# ENVOY_NOTES §5.12 (the path the backend received, or the status) for each escaped_slashes setting.
MATRIX = {
    #  request              keep                reject     decode
    "/a/../b":            ("/b",              "/b",      "/b"),
    "//a//b":             ("/a/b",            "/a/b",    "/a/b"),
    "/a/./b":             ("/a/b",            "/a/b",    "/a/b"),
    "/a%2Fb":             ("/a%2Fb",          400,       "/a/b"),
    "/a%2fb":             ("/a%2fb",          400,       "/a/b"),
    "/a%5Cb":             ("/a%5Cb",          400,       "/a/b"),
    "/a%5cb":             ("/a%5cb",          400,       "/a/b"),
    "/%61bc":             ("/abc",            "/abc",    "/abc"),
    "/a/b%2F..%2Fc":      ("/a/b%2F..%2Fc",   400,       "/a/c"),
    "/a/%2E%2E/b":        ("/b",              "/b",      "/b"),
}


@pytest.mark.parametrize("target", sorted(MATRIX))
@pytest.mark.parametrize("mode", ["keep", "reject", "decode"])
def test_normalisation_matrix(target, mode):
    expected = MATRIX[target][("keep", "reject", "decode").index(mode)]
    got = normalize.normalize("GET", target, mode)
    assert got == (expected if isinstance(expected, int) else (expected, ""))


@pytest.mark.parametrize("mode", ["keep", "reject", "decode"])
def test_query_is_never_changed(mode):
    assert normalize.normalize("GET", "/a?x=//y", mode) == ("/a", "x=//y")
    assert normalize.normalize("GET", "/a/../b?p=%2F&q=..", mode) == ("/b", "p=%2F&q=..")
    assert normalize.normalize("GET", "/a?", mode) == ("/a", "")


@pytest.mark.parametrize("target, expected", [
    ("/..;/admin", "/admin"),                 # a literal dot segment with params is a dot segment
    ("/api/..;x=1/admin", "/admin"),
    ("/a/.;p/b", "/a/b"),
    ("/a/b/..;p", "/a/"),
    ("/%2e%2e;/admin", "/..;/admin"),         # encoded dots: decoded, not collapsed
    ("/%%30%30", "/%2500"),                   # a stray % that decoding would turn into an escape
    ("/%%30", "/%0"),
    ("/a%", "/a%"),
    ("/a%zz", "/a%zz"),
    ('/x"<>^`{|}y', "/x%22%3C%3E%5E%60%7B%7C%7Dy"),
    ("/a b", "/a%20b"),
    ("/caf\u00e9", "/caf%E9"),               # the target arrives decoded as latin-1
    ("/%7e%41%2d%5f", "/~A-_"),              # unreserved escapes decoded
    ("/%3a%2A%25", "/%3a%2A%25"),             # others kept as written, case included
    ("/a\\b", "/a/b"),                        # backslash is a separator (Chromium)
    ("/..", "/"),
    ("/../../a", "/a"),
    ("/a/b/..", "/a/"),
    ("/a//../b", "/a/b"),                     # dot segments first, then merged slashes
    ("//", "//"),                             # only slashes: `//` (Envoy's mergeSlashes)
    ("///", "//"),
    ("/./", "/"),
    ("/", "/"),
    ("/a/.b/..c/...", "/a/.b/..c/..."),       # not dot segments
])
def test_normalisation_details(target, expected):
    assert normalize.normalize("GET", target, "reject") == (expected, "")


@pytest.mark.parametrize("method, target", [
    ("get", "/"), ("Get", "/"), ("", "/"),            # a method that is not all upper case
    ("GET", "a/b"), ("GET", ""), ("GET", "*"),          # not origin-form
    ("GET", "http://svc/a"),
    ("GET", "/a#frag"), ("GET", "/a?q#f"),              # a fragment
    ("GET", "/a%00b"), ("GET", "/a\x00"),                # NUL
])
def test_rejected_requests(method, target):
    assert normalize.normalize(method, target, "keep") == 400


def test_unknown_upper_case_method_is_fine():
    assert normalize.normalize("PURGE", "/x", "reject") == ("/x", "")


def test_fast_path_returns_the_same_string():
    path = "/api/v1/orders/123.json"
    got, _ = normalize.normalize("GET", path + "?a=1", "reject")
    assert got == path


# ---- tables and hosts -------------------------------------------------------------------------

def test_host_matching_is_case_insensitive_and_port_exact():
    t = table()
    for host in ["svc", "SVC", "svc:8080", "Svc.NS", "svc.ns:8080"]:
        assert t.service_for_host(host).name == "svc"
    for host in ["svc:80", "svc.ns:9000", "svc.other", "", "svc."]:
        assert t.service_for_host(host) is None


def test_table_rejects_a_bad_regex():
    with pytest.raises(TableError, match="invalid RE2 regex"):
        compile_config(config(routes=[route(matches=[{"path": {"kind": "regex", "value": "(a"}}])]))


def test_parse_query_first_value_and_no_decoding():
    assert parse_query("v=2&v=3&debug&e=&x=%41") == {"v": "2", "debug": "", "e": "", "x": "%41"}
    assert parse_query("") == {}


# ---- routing -----------------------------------------------------------------------------------

def select(svc, method="GET", path="/", query="", hdrs=None):
    r = routing.select_route(svc, method, path, query, hdrs or {})
    return r.name if r else None


def test_first_match_wins_and_404():
    svc = service(routes=[route("exact", matches=[{"path": {"kind": "exact", "value": "/exact"}}]),
                          route("ps", matches=[{"path": {"kind": "segment_prefix", "value": "/ps"}}]),
                          route("re", matches=[{"path": {"kind": "regex", "value": "/re/[0-9]+"}}]),
                          route("raw", matches=[{"path": {"kind": "prefix", "value": "/r"}}])])
    assert select(svc, path="/exact") == "exact"
    assert select(svc, path="/exact/") is None
    assert select(svc, path="/EXACT") is None
    assert [select(svc, path=p) for p in ["/ps", "/ps/", "/ps/x", "/psx"]] == ["ps", "ps", "ps", None]
    assert select(svc, path="/re/123") == "re"
    assert select(svc, path="/re/12a") == "raw"          # full match only; then the raw prefix
    assert select(svc, path="/other") is None


def test_ignore_case_folds_ascii_letters_of_the_path_and_the_value_only():
    def m(kind, value):
        return [{"path": {"kind": kind, "value": value, "ignore_case": True}}]
    svc = service(routes=[route("exact", matches=m("exact", "/Login")),
                          route("ps", matches=m("segment_prefix", "/Admin")),
                          route("raw", matches=m("prefix", "/static/")),
                          route("cafe", matches=m("exact", "/caf%C3%A9"))])
    assert [select(svc, path=p) for p in ["/login", "/LOGIN", "/lOgIn", "/login/"]] == ["exact"] * 3 + [None]
    assert [select(svc, path=p) for p in ["/admin", "/ADMIN/x", "/aDMIN/", "/adminx", "/ADMINX"]] == \
        ["ps", "ps", "ps", None, None]
    assert [select(svc, path=p) for p in ["/STATIC/a", "/Static/", "/static"]] == ["raw", "raw", None]
    assert [select(svc, path=p) for p in ["/CAF%C3%A9", "/caf%c3%a9", "/caf%C3%89", "/caf\u00c9"]] == \
        ["cafe", "cafe", None, None]


def test_a_deny_with_ignore_case_refuses_every_case():
    rules = [rule("admin", "deny", path={"kind": "segment_prefix", "value": "/admin", "ignore_case": True}),
             rule("private", "deny", path={"kind": "segment_prefix", "value": "/private"})]
    assert [decide(rules, "allow", path=p)[0] for p in ["/admin", "/ADMIN", "/Admin/x", "/adminx", "/admin;x"]] == \
        [False, False, False, True, True]
    assert [decide(rules, "allow", path=p)[0] for p in ["/private", "/PRIVATE"]] == [False, True]


def test_segment_prefix_ending_in_slash_is_a_plain_prefix():
    svc = service(routes=[route("api", matches=[{"path": {"kind": "segment_prefix", "value": "/api/"}}]),
                          route("root", matches=[{"path": {"kind": "segment_prefix", "value": "/"}}])])
    assert select(svc, path="/api/x") == "api"
    assert select(svc, path="/api") == "root"


def test_any_match_block_and_all_conditions():
    m1 = {"path": {"kind": "segment_prefix", "value": "/api/charges"}, "methods": ["POST"]}
    m2 = {"path": {"kind": "segment_prefix", "value": "/api/intents"}, "methods": ["POST"]}
    svc = service(routes=[route("charges", matches=[m1, m2])])
    assert select(svc, "POST", "/api/charges/1") == "charges"
    assert select(svc, "POST", "/api/intents") == "charges"
    assert select(svc, "GET", "/api/charges") is None


def hmatch(name, kind, value=None, invert=False, ignore_case=False):
    return {"name": name, "kind": kind, "value": value, "invert": invert, "ignore_case": ignore_case}


@pytest.mark.parametrize("cond, hdrs, expected", [
    (hmatch("x", "exact", "v"), {"x": ["v"]}, True),
    (hmatch("x", "exact", "v"), {"x": ["V"]}, False),
    (hmatch("x", "exact", "v"), {}, False),
    (hmatch("x", "exact", "Prod", ignore_case=True), {"x": ["PROD"]}, True),
    (hmatch("x", "suffix", "-gold", ignore_case=True), {"x": ["a-GOLD"]}, True),
    (hmatch("x", "prefix", "pr"), {"x": ["prod-eu"]}, True),
    (hmatch("x", "regex", ".*bot.*"), {"x": ["a robot"]}, True),
    (hmatch("x", "regex", "bot"), {"x": ["a robot"]}, False),            # full match
    (hmatch("x", "present"), {"x": [""]}, True),                         # an empty value is present
    (hmatch("x", "present"), {}, False),
    (hmatch("x", "absent"), {}, True),
    (hmatch("x", "absent"), {"x": [""]}, False),
    (hmatch("x", "present", invert=True), {}, True),                     # not present = absent
    (hmatch("x", "absent", invert=True), {"x": ["1"]}, True),
    (hmatch("x", "prefix", "prod", invert=True), {"x": ["staging"]}, True),
    (hmatch("x", "prefix", "prod", invert=True), {"x": ["prod-eu"]}, False),
    (hmatch("x", "prefix", "prod", invert=True), {}, False),             # invert needs the header
    (hmatch("x", "exact", "", invert=True), {"x": [""]}, False),
    # value by value (ENVOY_NOTES §5.2): two header lines 1 and 2
    (hmatch("x", "exact", "1"), {"x": ["1", "2"]}, True),
    (hmatch("x", "exact", "2"), {"x": ["1", "2"]}, True),
    (hmatch("x", "exact", "1,2"), {"x": ["1", "2"]}, False),
    (hmatch("x", "prefix", "1,"), {"x": ["1", "2"]}, False),
    (hmatch("x", "exact", "1,2"), {"x": ["1,2"]}, True),
    (hmatch("x", "exact", "1"), {"x": ["1,2"]}, False),
    (hmatch("x", "exact", "1", invert=True), {"x": ["1", "2"]}, False),  # a value passes: no match
])
def test_header_conditions(cond, hdrs, expected):
    svc = service(routes=[route(matches=[{"headers": [cond]}])])
    assert (select(svc, hdrs=hdrs) is not None) is expected


def test_header_names_in_the_config_are_matched_lower_case():
    svc = service(routes=[route(matches=[{"headers": [hmatch("X-Canary", "exact", "true")]}])])
    assert select(svc, hdrs={"x-canary": ["true"]}) == "r"


@pytest.mark.parametrize("query, expected", [
    ("v=2&debug", True), ("v=2&debug=", True), ("v=2", False), ("v=3&debug=1", False),
    ("v=2&v=3&debug=1", True), ("v=3&v=2&debug", False), ("debug=1&v=2", True),
])
def test_query_conditions(query, expected):
    m = {"query": [{"name": "v", "kind": "exact", "value": "2"}, {"name": "debug", "kind": "present"}]}
    svc = service(routes=[route(matches=[m])])
    assert (select(svc, query=query) is not None) is expected


def test_query_regex():
    svc = service(routes=[route(matches=[{"query": [{"name": "id", "kind": "regex", "value": "[0-9]+"}]}])])
    assert select(svc, query="id=12") == "r"
    assert select(svc, query="id=12a") is None
    assert select(svc, query="") is None


# ---- split ---------------------------------------------------------------------------------------

def split_route(*weights):
    return service(routes=[route(split=split_of(*weights))]).routes[0].split


@pytest.mark.parametrize("value, expected", [
    ("0", "a"), ("29", "a"), ("30", "b"), ("99", "b"), ("100", "a"), ("129", "a"), ("130", "b"),
    ("199", "b"), ("230", "b"), ("+5", "a"), ("+40", "b"), ("0029", "a"), (" 7 ", "a"),
    (str(2**64 - 1), "a"),                    # mod 100 = 15
])
def test_split_by_key(value, expected):
    s = split_route(("a", 30), ("b", 70))
    for rand in (0, 99, 2**64 - 1):            # the draw never decides
        assert split.pick(s, {"x-k": [value]}, rand).subset.name == expected


@pytest.mark.parametrize("hdrs", [
    {"x-k": [str(2**64)]}, {"x-k": ["-1"]}, {"x-k": ["abc"]}, {"x-k": ["1e2"]}, {"x-k": ["0x10"]},
    {"x-k": ["5.0"]}, {"x-k": ["+"]}, {"x-k": [""]}, {"x-k": ["\u0665"]},   # Arabic-Indic five
    {"x-k": ["5", "5"]},                       # two header lines
    {},                                        # absent
])
def test_split_falls_back_to_the_draw(hdrs):
    s = split_route(("a", 30), ("b", 70))
    assert split.pick(s, hdrs, 10).subset.name == "a"
    assert split.pick(s, hdrs, 30).subset.name == "b"
    assert split.pick(s, hdrs, 100 + 29).subset.name == "a"


def test_zero_weight_is_never_picked():
    s = split_route(("a", 1), ("c", 0), ("b", 2))
    assert "".join(split.pick(s, {"x-k": [str(k)]}, 0).subset.name for k in range(9)) == "abbabbabb"


def test_split_without_key_header_uses_the_draw():
    s = service(routes=[route(split=split_of(("a", 30), ("b", 70), key_header=None))]).routes[0].split
    assert split.pick(s, {"x-k": ["99"]}, 5).subset.name == "a"


def test_split_targets_carry_their_destination():
    t = split_route(("a", 30), ("b", 70)).targets[1]
    assert (t.service.name, t.subset.cluster, t.weight) == ("svc", "outbound|b|svc", 70)


# ---- authorization ------------------------------------------------------------------------------

def rule(name, action, **cond):
    return {"name": name, "action": action, "source": {"file": "t.mesh", "line": 2, "column": 3}, **cond}


def decide(rules, default, peer=None, method="GET", path="/", hdrs=None):
    a = table(rules=rules, default=default).authorization
    return authz.decide(a, peer, method, path, hdrs or {})


FRONTEND = "spiffe://td/ns/web/sa/frontend"


def test_deny_beats_allow_whatever_the_order():
    rules = [rule("everyone", "allow"), rule("admin", "deny", path={"kind": "segment_prefix", "value": "/admin"})]
    assert decide(rules, "allow", path="/admin/x") == (False, "admin")
    assert decide(list(reversed(rules)), "deny", path="/admin") == (False, "admin")
    assert decide(rules, "deny", path="/adminx") == (True, "everyone")


def test_allow_then_default():
    rules = [rule("fe", "allow", principals=[{"kind": "exact", "value": FRONTEND}], methods=["GET", "HEAD"])]
    assert decide(rules, "deny", peer=FRONTEND) == (True, "fe")
    assert decide(rules, "deny", peer=FRONTEND, method="POST") == (False, None)
    assert decide(rules, "deny", peer=None) == (False, None)            # no identity: no `from`
    assert decide([], "allow") == (True, None)
    assert decide([], "deny") == (False, None)


def test_principal_prefix_and_headers():
    rules = [rule("ns", "allow", principals=[{"kind": "prefix", "value": "spiffe://td/ns/web/"}],
                  headers=[hmatch("x-user", "exact", "alice")])]
    assert decide(rules, "deny", peer=FRONTEND, hdrs={"x-user": ["alice"]}) == (True, "ns")
    assert decide(rules, "deny", peer=FRONTEND, hdrs={"x-user": ["bob"]}) == (False, None)
    assert decide(rules, "deny", peer="spiffe://td/ns/webx/sa/a", hdrs={"x-user": ["alice"]}) == (False, None)


def test_rule_without_conditions_matches_everything():
    assert decide([rule("all", "deny")], "allow", peer=None) == (False, "all")


def test_authz_path_regex_is_a_full_match():
    rules = [rule("reads", "allow", path={"kind": "regex", "value": "/api/(charges|refunds)/[A-Za-z0-9_-]+"})]
    assert decide(rules, "deny", path="/api/charges/ch_1") == (True, "reads")
    assert decide(rules, "deny", path="/api/charges/ch_1/x") == (False, None)


# ---- retry --------------------------------------------------------------------------------------

def make_retry(on, codes=(), base=25, mx=250):
    return service(routes=[route(retry={"num_retries": 2, "retry_on": list(on), "retriable_status_codes": list(codes),
                                        "per_try_timeout_ms": 0, "backoff_base_ms": base,
                                        "backoff_max_ms": mx})]).routes[0].retry


OUTCOMES = {
    "500": Outcome(500), "503": Outcome(503), "502": Outcome(502), "504": Outcome(504), "409": Outcome(409),
    "429": Outcome(429), "404": Outcome(404), "200": Outcome(200),
    "connect": Outcome(None, "connect-failure"), "reset": Outcome(None, "reset"),
    "per-try": Outcome(None, "per-try-timeout"), "refused": Outcome(None, "refused-stream"),
    "overflow": Outcome(None, "overflow"), "503-overloaded": Outcome(503, None, True),
}

# docs/language.md section 10, with Envoy's rule that every upstream reset counts as a 5xx for
# `5xx` and `gateway-error` (RetryStateImpl::wouldRetryFromReset) and that `reset` covers every
# reset reason, a failed connection included.
RETRIED = {
    "5xx": {"500", "503", "502", "504", "connect", "reset", "per-try", "refused"},
    "gateway-error": {"502", "503", "504", "connect", "reset", "per-try", "refused"},
    "reset": {"connect", "reset", "per-try", "refused"},
    "connect-failure": {"connect"},
    "refused-stream": {"refused"},
    "retriable-4xx": {"409"},
}


@pytest.mark.parametrize("condition", sorted(RETRIED))
def test_retry_conditions(condition):
    r = make_retry([condition])
    assert {k for k, o in OUTCOMES.items() if retry.retriable(r, o)} == RETRIED[condition]


def test_retriable_status_codes_and_combinations():
    r = make_retry(["connect-failure"], codes=[409, 429])
    assert {k for k, o in OUTCOMES.items() if retry.retriable(r, o)} == {"409", "429", "connect"}


def test_retriable_on_a_table_retry():
    r = CRetry({"num_retries": 1, "retry_on": ["gateway-error"], "per_try_timeout_ms": 0, "backoff_base_ms": 25,
                "backoff_max_ms": 250})
    assert retry.retriable(r, Outcome(503)) and not retry.retriable(r, Outcome(500))


@pytest.mark.parametrize("n, upper", [(1, 25), (2, 75), (3, 175), (4, 250), (9, 250)])
def test_backoff_bounds(n, upper):
    r = make_retry(["5xx"])
    values = [retry.backoff_ms(r, n, x / 1000) for x in range(1000)]
    assert min(values) == 0
    assert max(values) <= upper
    assert all(v < (2**n - 1) * 25 for v in values)
    assert all(v == int(v) for v in values)
    if n <= 3:
        assert max(values) >= upper - 1                 # uniform over [0, (2^n - 1) x base)


def test_backoff_after_the_cap_is_envoys():
    r = make_retry(["5xx"])                              # (2^4 - 1) x 25 = 375 > 250: capped at 4
    assert retry.backoff_ms(r, 4, 0.5) == 187.0
    assert retry.backoff_ms(r, 7, 0.9) == 250.0
    assert retry.backoff_ms(r, 4, 0.999) == 250.0


def test_budget():
    limits = Limits(max_connections=1, max_pending_requests=1, max_requests=1, max_retries=2)
    budget = RetryBudget(percent=20.0, min_concurrency=3)
    assert retry.budget_allows(budget, limits, 1, 2)                # min_concurrency 3
    assert not retry.budget_allows(budget, limits, 1, 3)
    assert retry.budget_allows(budget, limits, 20, 3)               # 20% of 20 = 4
    assert not retry.budget_allows(budget, limits, 20, 4)
    assert not retry.budget_allows(budget, limits, 24, 4)           # 4.8 truncates to 4
    assert retry.budget_allows(None, limits, 100, 1)                # max_retries without a budget
    assert not retry.budget_allows(None, limits, 100, 2)


# ---- breaker ------------------------------------------------------------------------------------

def test_breaker_counts_and_limits():
    limits = Limits(max_connections=2, max_pending_requests=1, max_requests=2, max_retries=1)
    b = breaker.Breaker(limits)
    assert b.try_acquire_request() and b.try_acquire_request() and not b.try_acquire_request()
    b.release_request()
    assert b.try_acquire_request()
    assert b.try_acquire_pending() and not b.try_acquire_pending()
    assert b.try_acquire_connection() and b.try_acquire_connection() and not b.try_acquire_connection()
    assert b.try_acquire_retry() and not b.try_acquire_retry()
    b.release_retry()
    assert b.try_acquire_retry()
    assert b.snapshot()["requests"] == 2


def test_breaker_uses_the_budget_over_active_and_pending():
    limits = Limits(max_connections=100, max_pending_requests=100, max_requests=100, max_retries=0)
    b = breaker.Breaker(limits, RetryBudget(percent=50.0, min_concurrency=1))
    assert b.try_acquire_retry() and not b.try_acquire_retry()      # min_concurrency 1
    for _ in range(4):
        b.try_acquire_request()
    assert b.try_acquire_pending() and b.try_acquire_pending()      # 6 active: 3 retries
    assert b.try_acquire_retry() and b.try_acquire_retry() and not b.try_acquire_retry()


# ---- outlier --------------------------------------------------------------------------------------

def detector(n=3, gw=0, base=30_000, interval=10_000, max_pct=100.0, endpoints=("e1", "e2", "e3", "e4")):
    o = OutlierSettings(consecutive_5xx=n, consecutive_gateway_errors=gw, interval_ms=interval,
                base_ejection_ms=base, max_ejection_percent=max_pct)
    return outlier.OutlierState(o, endpoints)


def test_ejects_after_exactly_n_consecutive_5xx():
    d = detector(n=3)
    assert [d.record("e1", 500, None, 1.0) for _ in range(2)] == [False, False]
    assert d.available(("e1", "e2", "e3", "e4"), 1.0) == ["e1", "e2", "e3", "e4"]
    assert d.record("e1", 503, None, 1.0) is True
    assert d.available(("e1", "e2", "e3", "e4"), 1.0) == ["e2", "e3", "e4"]


def test_success_resets_and_others_do_not():
    d = detector(n=3)
    d.record("e1", 500, None, 0)
    d.record("e1", 500, None, 0)
    d.record("e2", 200, None, 0)                          # another endpoint's success: no reset
    d.record("e1", 200, None, 0)                          # its own success resets
    assert not d.record("e1", 500, None, 0) and not d.record("e1", 500, None, 0)
    assert d.record("e1", 500, None, 0)


def test_failures_count_as_5xx():
    d = detector(n=3)
    d.record("e1", None, "connect-failure", 0)
    d.record("e1", None, "reset", 0)
    assert d.record("e1", None, "per-try-timeout", 0)
    assert not d.record("e2", None, "overflow", 0)


def test_gateway_errors():
    d = detector(n=10, gw=2)
    d.record("e1", 502, None, 0)
    d.record("e1", 500, None, 0)                          # a non-gateway 5xx resets the gateway count
    assert not d.record("e1", 504, None, 0)
    assert d.record("e1", None, "connect-failure", 0)     # counts as 503


def test_returns_after_base_times_ejections():
    d = detector(n=1, base=30_000, interval=10_000)
    keys = ("e1", "e2", "e3", "e4")
    assert d.record("e1", 500, None, 100.0)
    assert "e1" not in d.available(keys, 129.999)
    assert "e1" in d.available(keys, 130.0)               # 1 x 30 s
    assert d.record("e1", 500, None, 130.0)               # ejected again at once: 2 x 30 s
    assert "e1" not in d.available(keys, 189.999)
    assert "e1" in d.available(keys, 190.0)
    assert d.record("e1", 500, None, 195.0)               # 3 x 30 s (less than one interval in service)
    assert "e1" not in d.available(keys, 284.999)
    assert "e1" in d.available(keys, 285.0)


def test_ejection_multiplier_decays_in_service():
    d = detector(n=1, base=30_000, interval=10_000)
    keys = ("e1", "e2", "e3", "e4")
    d.record("e1", 500, None, 0.0)                        # 30 s
    d.record("e1", 500, None, 30.0)                       # 60 s, until 90
    assert "e1" in d.available(keys, 90.0)
    d.record("e1", 500, None, 110.0)                      # two intervals in service: 2 - 2 + 1 = 1
    assert "e1" not in d.available(keys, 139.9)
    assert "e1" in d.available(keys, 140.0)


def test_ejection_time_is_capped():
    d = detector(n=1, base=100_000, interval=1_000_000)   # max(300 s, base) = 300 s
    t = 0.0
    for _ in range(5):
        assert d.record("e1", 500, None, t)
        t = d.hosts["e1"].ejected_until
    assert t - d.hosts["e1"].ejected_at <= 300.0 + 1e-9


def test_max_ejection_percent_is_respected():
    d = detector(n=1, max_pct=50.0)
    keys = ("e1", "e2", "e3", "e4")
    assert d.record("e1", 500, None, 0) and d.record("e2", 500, None, 0)
    assert not d.record("e3", 500, None, 0)               # 3 of 4 would be 75 %
    assert d.available(keys, 0) == ["e3", "e4"]
    assert d.ejections_overflow == 1
    assert not d.record("e3", 500, None, 0)               # tried again at the next threshold: still 75 %
    assert d.ejections_overflow == 2
    assert "e3" in d.available(keys, 0)


def test_at_most_the_percentage_even_for_one_endpoint():
    d = detector(n=1, max_pct=10.0, endpoints=("e1", "e2"))
    assert not d.record("e1", 500, None, 0)               # 50 % > 10 %: no ejection at all


def test_panic_threshold_uses_every_endpoint():
    d = detector(n=1, max_pct=100.0, endpoints=("e1", "e2", "e3"))
    keys = ("e1", "e2", "e3")
    d.record("e1", 500, None, 0)
    assert d.available(keys, 0) == ["e2", "e3"]
    d.record("e2", 500, None, 0)                          # 1 of 3 left: under 50 %: panic
    assert d.available(keys, 0) == ["e1", "e2", "e3"]


# ---- fault ------------------------------------------------------------------------------------------

def test_fault_decision():
    f = CFault({"abort": {"http_status": 503, "percent": 10.0}, "delay": {"duration_ms": 300, "percent": 50.0}})
    assert fault.decide(f, 0.49, 0.0999) == (300, 503)
    assert fault.decide(f, 0.5, 0.1) == (0, None)
    assert fault.decide(None, 0.0, 0.0) == (0, None)
    compiled = service(routes=[route(fault={"abort": {"http_status": 429, "percent": 100.0}})]).routes[0].fault
    assert fault.decide(compiled, 0.0, 0.999999) == (0, 429)
    zero = service(routes=[route(fault={"delay": {"duration_ms": 5, "percent": 0.0}})]).routes[0].fault
    assert fault.decide(zero, 0.0, 0.0) == (0, None)


# ---- headers ------------------------------------------------------------------------------------------

def test_header_changes_order_remove_set_add():
    written = {"remove": ["x-secret"], "set": [("x-added", "yes")], "add": [("x-appended", "two"), ("x-added", "more")]}
    changes = CHeaderChanges(written)
    before = [("X-Secret", "s"), ("x-added", "old"), ("x-appended", "one"), ("x-other", "1"), ("X-Added", "old2")]
    after = [("x-appended", "one"), ("x-other", "1"), ("x-added", "yes"), ("x-appended", "two"), ("x-added", "more")]
    assert headers.apply_changes(before, changes) == after
    compiled = service(routes=[route(request_headers=written)]).routes[0].request_headers
    assert headers.apply_changes(before, compiled) == after
    empty = service().routes[0].request_headers
    assert headers.apply_changes(before, empty) == before


@pytest.mark.parametrize("host, expected", [
    ("payments:9000", "payments-shadow:9000"), ("payments", "payments-shadow"),
    ("127.0.0.1:10000", "127.0.0.1-shadow:10000"), ("[::1]:80", "[::1]-shadow:80"),   # measured, Envoy 1.40
    ("[::1]", "[::1]-shadow"), ("a:b:c", "a:b-shadow:c"), ("a:", "a-shadow:"),
])
def test_shadow_host(host, expected):
    assert headers.shadow_host(host) == expected


def test_outlier_returns_at_interval_ticks_with_an_origin():
    o = OutlierSettings(consecutive_5xx=1, consecutive_gateway_errors=0, interval_ms=10_000,
                base_ejection_ms=30_000, max_ejection_percent=100.0)
    d = outlier.OutlierState(o, ("e1", "e2", "e3", "e4"), tick_origin=5.0)
    assert d.record("e1", 500, None, 12.0)                # ends at 42: returned at the tick of 45
    assert d.is_ejected("e1", 44.9) and not d.is_ejected("e1", 45.0)


def test_strip_hop_by_hop():
    before = [("Connection", "close, x-private"), ("x-private", "1"), ("keep-alive", "5"), ("te", "trailers"),
              ("Transfer-Encoding", "chunked"), ("x-ok", "2"), ("upgrade", "h2c")]
    assert headers.strip_hop_by_hop(before) == [("te", "trailers"), ("x-ok", "2")]
    assert headers.strip_hop_by_hop([("te", "gzip")]) == []


# ---- the request decision and its explanation --------------------------------------------------

def _head(method="GET", target="/", host="svc", inbound=False, peer=None, **headers):
    from runtime_proxy.decide.request import Head, header_dict

    raw = [(b"host", host.encode())] + [(n.replace("_", "-").encode(), v.encode()) for n, v in headers.items()]
    hdict, raw = header_dict(raw)
    return Head(inbound, method, target, raw, hdict, peer=peer)


def _draws(x=0.5):
    from runtime_proxy.decide.request import Draws

    return Draws(x, x, 7, x, b"rid-1")


def test_decision_forwards_with_the_head_every_attempt_sends():
    from runtime_proxy.decide.request import decide_request

    t = table(routes=[route("api", to="b", matches=[{"path": {"kind": "segment_prefix", "value": "/api"}}]),
                      route("rest", to="a")])
    d = decide_request(t, _head(target="/x/../api/1?q=1", x_test="v"), _draws())
    assert (d.status, d.route.name, d.cluster, d.path, d.query) == (0, "api", "outbound|b|svc", "/api/1", "q=1")
    assert d.up_head.startswith(b"GET /api/1?q=1 HTTP/1.1\r\nhost: svc\r\nx-test: v\r\n")
    assert b"x-request-id: rid-1\r\n" in d.up_head and d.up_tail == b"\r\n"


@pytest.mark.parametrize("target, host, status, counter", [
    ("/a%2Fb", "svc", 400, "bad_request"),          # escaped slash, rejected
    ("/", "nowhere", 404, "no_route"),               # no service answers to the Host
    ("http://svc/x", "other", 0, None),              # absolute-form: the authority is the Host
    ("http://svc", "other", 0, None),                # ... with no path: `/`
    ("http://svc?x=1", "svc", 404, None),            # ... a query and no path: Envoy's path `?x=1` (issue 18)
    ("http://svc:1:2/", "svc", 400, "bad_request"),  # ... an authority Envoy's URL parser refuses
    ("http://svc:/", "svc", 400, "bad_request"),
    ("/", "svc evil", 400, "bad_request"),           # a Host an authority cannot be (issue 18)
    ("/", "svc/admin", 400, "bad_request"),
    ("/", "", 404, "no_route"),                      # empty is a valid (unknown) Host
])
def test_decision_local_replies(target, host, status, counter):
    from runtime_proxy.decide.request import decide_request

    d = decide_request(table(), _head(target=target, host=host), _draws())
    assert (d.status, d.counter) == (status, counter)


@pytest.mark.parametrize("inbound", [False, True])
@pytest.mark.parametrize("target", ["/", "/a%2Fb", "x/y", "http://svc/x"])
def test_decision_refuses_a_bad_host_before_any_other_answer(inbound, target):
    """Envoy's codec checks the Host before routing, normalisation or authorization: 400 with
    `Bad Request` whatever else the request would get (the native proxy checks it lazily)."""
    from runtime_proxy.decide.request import decide_request

    for host in ("svc evil", "svc/admin", "svc\\x"):
        d = decide_request(table(), _head(inbound=inbound, target=target, host=host), _draws())
        if target.startswith("http://"):      # the authority is the Host: it is valid
            assert d.status in (0, 404), (host, d.status)
        else:
            assert (d.status, d.body, d.close) == (400, b"Bad Request", True), (host, target)
    d = decide_request(table(), _head(inbound=inbound, target=target, host="svc"), _draws())   # a valid Host
    assert (d.status, d.body) == {"/": (0, b""), "/a%2Fb": (400, b""), "x/y": (400, b"Bad Request"),
                                  "http://svc/x": (0, b"")}[target]


@pytest.mark.parametrize("inbound", [False, True])
def test_decision_refuses_two_host_lines_and_answers_options_asterisk_404(inbound):
    """Issue 18: more than one Host line is a 400 on both listeners (stricter than Envoy,
    docs/semantics.md); `OPTIONS *` is Envoy's 404 for a path not starting with `/`."""
    from runtime_proxy.decide.request import decide_request

    d = decide_request(table(), _head(inbound=inbound, host="svc", Host="evil"), _draws())
    assert (d.status, d.body, d.close) == (400, b"Bad Request", True)
    d = decide_request(table(), _head(inbound=inbound, method="OPTIONS", target="*"), _draws())
    assert (d.status, d.cluster) == (404, None)
    d = decide_request(table(), _head(inbound=inbound, method="GET", target="*"), _draws())
    assert d.status == 400


def test_fault_abort_and_delay_follow_the_draws():
    from runtime_proxy.decide.request import decide_request

    t = table(routes=[route(fault={"abort": {"http_status": 503, "percent": 50.0},
                                   "delay": {"duration_ms": 20, "percent": 50.0}})])
    low = decide_request(t, _head(), _draws(0.1))
    high = decide_request(t, _head(), _draws(0.9))
    assert (low.status, low.delay_ms, low.counter) == (503, 20, "delays_injected")   # the abort after the delay
    assert (high.status, high.delay_ms, high.cluster) == (0, 0, "outbound|a|svc")


def test_explanation_says_why_each_route_did_not_match():
    from runtime_proxy.decide.explain import Explanation
    from runtime_proxy.decide.request import decide_request

    t = table(routes=[route("posts", matches=[{"methods": ["POST"]}]),
                      route("admin", matches=[{"path": {"kind": "segment_prefix", "value": "/admin"}}]),
                      route("beta", matches=[{"headers": [{"name": "x-beta", "kind": "exact", "value": "1"}]}]),
                      route("rest", to="c"), route("never", to="b")])
    why = Explanation()
    d = decide_request(t, _head(target="/shop", x_beta="0"), _draws(), why)
    assert d.route.name == "rest"
    lines = why.lines()
    assert "normalize: path (`/shop`, as received)" in lines and "host: service (svc)" in lines
    assert "route: skipped (`posts`: method GET is not one of POST)" in lines
    assert "route: skipped (`admin`: path segment_prefix `/admin` does not match `/shop`)" in lines
    assert "route: skipped (`beta`: header `x-beta` exact `1` does not hold)" in lines
    assert "route: matched (`rest`)" in lines
    assert "route: not tried (`never`: an earlier route matched)" in lines


def test_explanation_of_an_authorization():
    from runtime_proxy.decide.explain import Explanation
    from runtime_proxy.decide.request import decide_request

    t = table(default="deny", rules=[rule("admin", "deny", path={"kind": "segment_prefix", "value": "/admin"}),
                                     rule("web", "allow", principals=[{"kind": "exact", "value": "spiffe://td/ns/a/sa/web"}])])
    why = Explanation()
    d = decide_request(t, _head(target="/admin/x", inbound=True, peer="spiffe://td/ns/a/sa/web"), _draws(), why)
    assert (d.status, d.rule, d.counter) == (403, "admin", "rbac_denied")
    assert why.lines()[-1] == "authz: denied (by rule `admin`)"
    why = Explanation()
    d = decide_request(t, _head(target="/shop", inbound=True), _draws(), why)
    assert d.status == 403 and d.rule is None
    assert "authz: no match (allow `web`: no verified identity)" in why.lines()
    assert why.lines()[-1] == "authz: denied (by the default)"


def _explained_normalisations():
    return [(t, m) for t in list(MATRIX) + [
        "/..;/admin", "/api/..;x=1/admin", "/a/.;p/b", "/%2e%2e;/admin", "/%%30%30", "/a%", '/x"<>^`{|}y', "/a b",
        "/caf\u00e9", "/%7e%41%2d%5f", "/%3a%2A%25", "/a\\b", "/..", "/a//../b", "//", "///", "/./", "/",
        "/a/.b/..c/...", "/api//x/./../%63harges\\1", "/a%00b", "/a#f"] for m in ("keep", "reject", "decode")]


@pytest.mark.parametrize("target, mode", _explained_normalisations())
def test_explained_normalisation_replays_the_same_steps(target, mode):
    """The `normalize` step's steps, replayed with normalize.py's own functions, end where
    `normalize` does; a rejected target says why."""
    from runtime_proxy.decide.explain import Explanation

    result = normalize.normalize("GET", target, mode)
    why = Explanation()
    normalize.explain_normalize("GET", target, mode, result, why)
    (step,) = why.steps
    if isinstance(result, int):
        assert step.outcome == "rejected" and step.data["status"] == result and step.data["why"]
        return
    data = step.data
    assert data["path"] == result[0] and data["changed"] == (result[0] != target.partition("?")[0])
    changed = [s for s in data["steps"] if s["from"] != s["to"]]
    assert bool(changed) == data["changed"]
    if changed:
        assert changed[0]["from"] == data["received"] and changed[-1]["to"] == data["path"]
    assert "do not account" not in step.detail


def test_explained_split_fault_and_mirror_give_the_decisions_answers():
    from runtime_proxy.decide.explain import Explanation
    from runtime_proxy.decide.request import decide_request

    s = split_route(("a", 30), ("b", 0), ("c", 70))
    for value in (0, 29, 30, 99, 100, 2**64 - 1):
        for hdrs in ({}, {"x-key": [str(value)]}, {"x-key": ["1", "2"]}):
            s.key_header = "x-key"
            why = Explanation()
            assert split.explain_pick(s, hdrs, value * 7, why) is split.pick(s, hdrs, value * 7)
            data = why.steps[0].data
            assert data["total"] == 100 and data["bucket"] == data["value"] % 100
            assert data["keyed"] == (len(hdrs.get("x-key", ())) == 1)
            assert [(a["from"], a["to"]) for a in data["arms"]] == [(0, 30), (30, 30), (30, 100)]
    f = service(routes=[route(fault={"abort": {"http_status": 503, "percent": 10.0},
                                     "delay": {"duration_ms": 20, "percent": 50.0}})]).routes[0].fault
    for d in (0.0, 0.05, 0.1, 0.49, 0.5, 0.99):
        for a in (0.0, 0.099, 0.1, 0.99):
            why = Explanation()
            assert fault.explain_decide(f, d, a, why) == fault.decide(f, d, a)
            assert [(x.data["part"], x.data["applied"]) for x in why.steps] == [
                ("delay", d * 100 < 50), ("abort", a * 100 < 10)]
    t = table(routes=[route("m", mirror={"service": "svc", "subset": "b", "percent": 25.0, "timeout_ms": 100})])
    for draw in (0.1, 0.3):
        why = Explanation()
        d = decide_request(t, _head(), _draws(draw), why)
        (m,) = [x for x in why.steps if x.what == "mirror"]
        assert bool(d.mirrors) == (draw < 0.25) == (m.outcome == "copied") and m.data["random"]
        (policy,) = [x for x in why.steps if x.what == "policy"]
        assert policy.outcome == "m" and policy.data["mirrors"][0]["percent"] == 25.0


# ---- the state decision -------------------------------------------------------------------------

def test_choose_endpoint_is_round_robin():
    from runtime_proxy.decide.upstream import choose_endpoint

    rr, picks = -1, []
    for _ in range(5):
        i, rr = choose_endpoint(("e1", "e2", "e3"), rr)
        picks.append(i)
    assert picks == [0, 1, 2, 0, 1]
    assert choose_endpoint(("only",), 41) == (0, 41)


def test_decide_retry_checks_in_envoys_order():
    from runtime_proxy.decide.upstream import (
        LIMIT,
        NOT_REPLAYABLE,
        NOT_RETRIABLE,
        OVERFLOW,
        RETRY,
        UpstreamState,
        decide_retry,
    )

    r = make_retry(["5xx"])                                   # two retries, backoff base 25 ms
    limits = Limits(max_connections=9, max_pending_requests=9, max_requests=9, max_retries=1)
    idle = UpstreamState(requests=1, pending=0, retries=0, limits=limits, budget=None)
    assert decide_retry(idle, r, Outcome(404), 1, True, 0.5).reason == NOT_RETRIABLE
    assert decide_retry(idle, r, Outcome(503), 3, True, 0.5).reason == LIMIT
    assert decide_retry(idle, r, Outcome(503), 1, False, 0.5).reason == NOT_REPLAYABLE
    busy = idle._replace(retries=1)                            # max_retries 1 is in flight
    assert decide_retry(busy, r, Outcome(503), 1, True, 0.5).reason == OVERFLOW
    budget = busy._replace(budget=RetryBudget(percent=50.0, min_concurrency=2))
    verdict = decide_retry(budget, r, Outcome(503), 2, True, 0.5)
    assert verdict.retry and verdict.reason == RETRY and verdict.backoff_ms == retry.backoff_ms(r, 2, 0.5)


@pytest.mark.parametrize("default, deny_rules, target, counted", [
    # Envoy's RBAC filters: one for the deny rules, one for the allow rules under `default deny`;
    # each adds to rbac.allowed/rbac.denied (checked against Envoy 1.40: test_signals_parity)
    ("deny", True, "/admin", (0, 1)),         # the deny rule: the first filter denies
    ("deny", True, "/web", (2, 0)),           # both filters allow
    ("deny", True, "/other", (1, 1)),         # the deny rules' filter allows, the default denies
    ("deny", False, "/web", (1, 0)),          # one filter (the allow rules')
    ("deny", False, "/other", (0, 1)),
    ("allow", True, "/admin", (0, 1)),        # one filter (the deny rules')
    ("allow", True, "/other", (1, 0)),
    ("allow", False, "/other", (0, 0)),       # no filter: nothing counted
])
def test_authorization_counts_as_envoys_rbac_filters(default, deny_rules, target, counted):
    from runtime_proxy.decide.request import decide_request
    from runtime_proxy.net.metrics import ListenerStats

    rules = [rule("web", "allow", path={"kind": "segment_prefix", "value": "/web"})]
    if deny_rules:
        rules.append(rule("admin", "deny", path={"kind": "segment_prefix", "value": "/admin"}))
    d = decide_request(table(default=default, rules=rules), _head(target=target, inbound=True), _draws())
    stats = ListenerStats()
    if d.counter is not None:
        setattr(stats, d.counter, getattr(stats, d.counter) + 1)
    assert stats.rbac() == counted


def test_a_view_gets_its_generated_selection_at_its_eighth_request_only_when_small():
    """decide/request.py: a route-index view is selected by select_route until its COMPILE_AFTER-th
    request, then by its generated function when its candidates make at most COMPILE_MAX_TESTS
    tests; a larger view is never built on the request path (building blocks the event loop) and
    is not asked again. Either way every decision is the one select_route makes."""
    from runtime_proxy.decide.request import decide_request
    from runtime_proxy.decide.routing import COMPILE_AFTER, COMPILE_MAX_TESTS, select_size

    many = [{"path": {"kind": "exact", "value": f"/big/{k}"}, "headers": [{"name": f"x-h{k}", "kind": "present"}]}
            for k in range(COMPILE_MAX_TESTS)]
    t = table(routes=[route("small", to="a", matches=[{"path": {"kind": "segment_prefix", "value": "/small"}}]),
                      route("big", to="b", matches=many),
                      route("rest", to="a")])
    (svc,) = t.services.values()
    index = t.index[svc]
    for n in range(1, COMPILE_AFTER + 3):
        for target, expected in (("/small/1", "small"), ("/big/3", "rest")):
            d = decide_request(t, _head(target=target), _draws())
            assert d.route.name == expected, (n, target)
        small, big = index.view("GET", "/small/1"), index.view("GET", "/big/3")
        assert (small.select is not None) == (n >= COMPILE_AFTER), n
        assert big.select is None and select_size(big.routes) > COMPILE_MAX_TESTS
        assert big.cached == (n < COMPILE_AFTER), n
    d = decide_request(t, _head(target="/big/3", x_h3="1"), _draws())
    assert d.route.name == "big"
