"""The unreachable-route check (W0401) with its index of earlier matches
(compiler/semantic/matching.py, CoverIndex) reports exactly what the pairwise comparison it
replaced reported: the same diagnostics, texts, labels and order, on generated route tables whose
matches overlap often (a small vocabulary of paths, headers, query parameters and methods).
And it compares each match only with those that can cover it: `meshc check` grew with the square
of the routes of one service (issue 18, point 13)."""

from __future__ import annotations

import os
import sys

from hypothesis import given
from hypothesis import strategies as st

from compiler import api
from compiler.core.diagnostics import Collector, Label
from compiler.semantic.checks.routes import check_unreachable
from compiler.semantic.conditions import route_matches
from compiler.semantic.matching import CoverIndex, example_request, match_covers, regex_fullmatch, regex_literal_prefix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from compile_scale import generate_routes  # noqa: E402


def pairwise_check_unreachable(ctx, block) -> None:
    """The check as it was before the index: every match against every earlier route's matches."""
    earlier = []
    for route in block.routes:
        matches = route_matches(ctx, route)
        coverers = []
        for m in matches:
            hit = next((r for r, ms in earlier if any(match_covers(em, m) for em in ms)), None)
            if hit is None:
                break
            coverers.append(hit)
        else:
            first = coverers[0]
            witness = example_request(matches[0])
            such_as = f", such as {witness}" if witness else ""
            ctx.diags.add("W0401", f"route `{route.name.value}` can never match", route.name.span,
                          labels=(Label(first.name.span, f"route `{first.name.value}` already takes every request "
                                                          f"it would match{such_as}"),),
                          hint=f"routes are tried in written order: move `{route.name.value}` above "
                               f"`{first.name.value}`, or make the earlier match stricter")
        earlier.append((route, matches))


def reported(check, ctx, block) -> list[tuple]:
    """Every diagnostic `check` adds for the block, in the order it adds them, in full."""
    saved, ctx.diags = ctx.diags, Collector()
    try:
        check(ctx, block)
        return [(d.code, d.message, d.span.location(), d.hint,
                 tuple((label.span.location(), label.message) for label in d.labels)) for d in ctx.diags.items]
    finally:
        ctx.diags = saved


def assert_same_as_pairwise(text: str) -> list[tuple]:
    comp = api.check([api.Text("routes.mesh", text)], shard=False)
    ctx = comp.context
    assert ctx is not None and ctx.routes, [d.message for d in comp.diagnostics]
    found = []
    for block in ctx.routes.values():
        new = reported(check_unreachable, ctx, block)
        assert new == reported(pairwise_check_unreachable, ctx, block)
        found += new
    # and the whole check reports them (sorted, as every diagnostic)
    assert [d.message for d in comp.diagnostics if d.code == "W0401"] == sorted(
        [f[1] for f in found], key=lambda m: [d.message for d in comp.diagnostics].index(m))
    return found


# ---- generated route tables ---------------------------------------------------------------------------

PATHS = ["/", "/a", "/a/", "/a/b", "/ab", "/a/b/c", "/b", "/A", "/a/bc", "/é"]
REGEXES = ["/a/.*", "/a/[a-z]+", "/a|/b", "/a+", "/ab?", "/(a|b)/.*", ".*", "/a/b", "/a.*", "/a/b/c", "/a{0,2}",
           "(?i)/a", "/a/b?/c", "[/]a", "/é.*", r"/a\/b", "/a/b+"]
HEADER_VALUES = ["v1", "v2", "v", "", "V1"]


def q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


path_conds = st.one_of(
    st.builds(lambda k, v: f"path {k} {q(v)}", st.sampled_from(["exact", "prefix", "raw_prefix"]),
              st.sampled_from(PATHS)),
    st.builds(lambda v: f"path regex {q(v)}", st.sampled_from(REGEXES)),
)
header_conds = st.one_of(
    st.builds(lambda n, t, v, neg, ic: f"{'not ' if neg else ''}header {q(n)} {t} {q(v)}{' ignore_case' if ic else ''}",
              st.sampled_from(["x", "y"]), st.sampled_from(["exact", "exact", "prefix", "suffix"]),
              st.sampled_from(HEADER_VALUES), st.booleans(), st.booleans()),
    st.builds(lambda n, v, neg: f"{'not ' if neg else ''}header {q(n)} regex {q(v)}",
              st.sampled_from(["x", "y"]), st.sampled_from(["v[0-9]", "v1", ".*"]), st.booleans()),
    st.builds(lambda n, t, neg: f"{'not ' if neg else ''}header {q(n)} {t}",
              st.sampled_from(["x", "y"]), st.sampled_from(["present", "absent"]), st.booleans()),
)
query_conds = st.one_of(
    st.builds(lambda n, v: f"query {q(n)} exact {q(v)}", st.sampled_from(["p", "r"]), st.sampled_from(["1", "2"])),
    st.builds(lambda n: f"query {q(n)} regex {q('[0-9]')}", st.sampled_from(["p", "r"])),
    st.builds(lambda n: f"query {q(n)} present", st.sampled_from(["p", "r"])),
)
method_conds = st.lists(st.sampled_from(["GET", "HEAD", "POST"]), min_size=1, max_size=3, unique=True).map(
    lambda ms: "method [" + ", ".join(ms) + "]")


@st.composite
def matches(draw) -> str:
    conds = []
    if draw(st.integers(0, 4)):
        conds.append(draw(path_conds))
    if draw(st.integers(0, 3)) == 0:
        conds.append(draw(method_conds))
    conds += draw(st.lists(header_conds, max_size=2))
    conds += draw(st.lists(query_conds, max_size=1))
    return "match { " + "  ".join(conds) + " }"


@st.composite
def route_tables(draw) -> str:
    routes = []
    for i in range(draw(st.integers(1, 14))):
        ms = draw(st.lists(matches(), max_size=3))
        routes.append(f"  route r{i} {{ {' '.join(ms)} to svc.v1 }}")
    return ('service svc {\n  port 8080\n  subset v1 { endpoints ["10.0.0.1:8080"] }\n}\n'
            "routes svc {\n" + "\n".join(routes) + "\n}\n")


@given(route_tables())
def test_the_index_reports_what_the_pairwise_check_reported(text):
    assert_same_as_pairwise(text)


def test_generated_tables_do_shadow_routes():
    """The vocabulary above overlaps: a fixed table of it has unreachable routes, among them
    routes covered through a header, a query parameter, a regex and several matches."""
    text = ('service svc {\n  port 8080\n  subset v1 { endpoints ["10.0.0.1:8080"] }\n}\nroutes svc {\n'
            '  route h { match { header "x" exact "v1" } to svc.v1 }\n'
            '  route h2 { match { path prefix "/a"  header "x" exact "v1"  method [GET] } to svc.v1 }\n'
            '  route q { match { query "p" exact "1" } to svc.v1 }\n'
            '  route q2 { match { path exact "/b"  query "p" exact "1" } to svc.v1 }\n'
            '  route rx { match { path regex "/a/b+" } to svc.v1 }\n'
            '  route rx2 { match { path exact "/a/bbb" } to svc.v1 }\n'
            '  route rx3 { match { path regex "/a/b+" method [GET] } to svc.v1 }\n'
            '  route p { match { path prefix "/c" } match { path prefix "/d" } to svc.v1 }\n'
            '  route p2 { match { path exact "/d/e" } match { path raw_prefix "/c/" } to svc.v1 }\n'
            '  route p3 { match { path exact "/d/e" } match { path raw_prefix "/e/" } to svc.v1 }\n'
            '  route all { to svc.v1 }\n'
            '  route after { match { path exact "/z"  header "x" exact "v1" ignore_case } to svc.v1 }\n'
            "}\n")
    found = assert_same_as_pairwise(text)
    assert [(f[1], f[4][0][1].split(" already")[0]) for f in found] == [
        ("route `h2` can never match", "route `h`"),        # through an exact header
        ("route `q2` can never match", "route `q`"),        # through an exact query parameter
        ("route `rx2` can never match", "route `rx`"),      # an exact path in a regex
        ("route `rx3` can never match", "route `rx`"),      # the same regex
        ("route `p2` can never match", "route `p`"),        # every match covered
        ("route `after` can never match", "route `all`"),   # `h` does not cover a test ignoring case
    ]


def test_the_benchmark_table_is_the_same_with_shadowing_routes_mixed_in():
    """A large realistic table (the benchmark's) with catch-alls and duplicates inserted."""
    lines = generate_routes(600).splitlines()
    start = lines.index("routes big {") + 1
    body = lines[start:-2]
    body.insert(100, '  route dup_exact { match { path exact "/api/items/4"  header "x-tenant" exact "t4" } '
                     'to big.v2 }')
    body.insert(200, '  route api { match { path prefix "/api/r3" } to big.v1 }')
    body.insert(300, '  route dup_rx { match { path regex "/api/v[0-9]+/r2/.*" } to big.v1 }')
    body.insert(400, '  route ex { match { path exact "/api/v2/r5/x" } to big.v1 }')
    body.insert(500, '  route tenant { match { header "x-tenant" exact "t7" } to big.v1 }')
    body.insert(550, '  route rest_api { match { path prefix "/api" } to big.v1 }')
    text = "\n".join(lines[:start] + body + lines[-2:])
    found = assert_same_as_pairwise(text)
    covered = [(f[1].split("`")[1], f[4][0][1].split("`")[1]) for f in found]
    assert covered[:3] == [("dup_exact", "r4"), ("dup_rx", "r2"), ("ex", "r5")]
    # after `rest_api`, every route but the regexes and the last (a split without a match)
    after = [r for r in range(545, 599) if r % 3 != 2]  # r0-r544 and five inserted routes come first
    assert covered[3:] == [(f"r{r}", "rest_api") for r in after]


# ---- the index compares only what can overlap -------------------------------------------------------------

def test_a_large_table_is_compared_in_near_linear_work():
    """On the benchmark's table of 3,000 routes (prefixes, exact paths with a header, regexes),
    each match is compared with a handful of earlier ones, not with every earlier one (which
    made 4.5 million comparisons)."""
    comp = api.check([api.Text("big.mesh", generate_routes(3000))], shard=False)
    ctx = comp.context
    (block,) = ctx.routes.values()
    index = CoverIndex()
    compared = 0
    for route in block.routes:
        ms = route_matches(ctx, route)
        compared += sum(len(index.candidates(m)) for m in ms)
        index.add(route, ms)
    assert compared <= 2 * len(block.routes), compared


def test_regex_literal_prefix_is_a_prefix_of_every_full_match():
    for pattern, prefix in [("/a/.*", "/a/"), ("/api/v[0-9]+/r2/.*", "/api/v"), ("/a+", "/a"), ("/ab?", "/a"),
                            ("/a{0,2}", "/"), ("/a|/b", ""), ("(?i)/a", ""), ("[/]a", ""), (r"/a\/b", "/a"),
                            ("/a/b", "/a/b"), ("/é.*", "/é"), ("", ""), ("^/a", ""), ("/a*b", "/")]:
        assert regex_literal_prefix(pattern) == prefix, pattern


@given(st.sampled_from(REGEXES + ["/api/v[0-9]+/r2/.*", "/a*b", "x+y?z"]),
       st.text(alphabet="/abcxyzé0", max_size=8))
def test_no_string_a_regex_fully_matches_lacks_its_literal_prefix(pattern, text):
    if regex_fullmatch(pattern, text):
        assert text.startswith(regex_literal_prefix(pattern))
