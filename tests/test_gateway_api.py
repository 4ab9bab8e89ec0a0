"""`meshc compile --target gateway-api [--channel standard|experimental]` (compiler/backends/gateway_api/).

- goldens: for each example and channel, the HTTPRoutes written, or the diagnostics that refuse
  them (tests/golden/gateway-api/CASE/CHANNEL/);
- every object written validates against the vendored CRD of its channel (schema and CEL rules),
  for the examples and for generated policies: a validation diagnostic (E0940-E0942) never appears,
  whatever the policy (the backend reports what it cannot write itself);
- Gateway API's precedence: the planned matches route every request as the written first-match
  order does (a property over generated route tables), and a conflict shows a request routed
  differently;
- each non-exact construct of docs/kubernetes.gateway-api.md has its diagnostic.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

from compiler import api
from compiler.backends.base import Options
from compiler.backends.gateway_api import order
from compiler.backends.gateway_api.build import backend_service, duration
from compiler.syntax import render
from tests import strategies as S
from tests.equivalence.gateway import HEADER_TESTS, gateway_cases, gateway_policies
from tests.test_explain import run_cli

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / "tests" / "golden" / "gateway-api"
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.mesh") if not p.stem.endswith("_test"))
CHANNELS = ("standard", "experimental")
VALIDATION = ("E0940", "E0941", "E0942")
# Generated policies per run (each is compiled and its HTTPRoutes validated with cel-python, whose
# interpreter costs milliseconds per rule): MESHC_GATEWAY_EXAMPLES=N draws N instead.
GENERATED = int(os.environ.get("MESHC_GATEWAY_EXAMPLES", "12"))


def emit(text: str, channel: str = "experimental", path: str = "t.mesh"):
    comp = api.compile([api.Text(path, text)])
    assert not comp.has_errors, [(d.code, d.message) for d in comp.diagnostics]
    return comp.emit("gateway-api", None, Options(channel=channel))


def codes(text: str, channel: str = "experimental") -> list[str]:
    return [d.code for d in emit(text, channel).diagnostics]


def routes(emitted) -> list[dict]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [d for data in emitted.files.values() for d in yaml.load_all(data, Loader=loader) if d]


# ---- goldens

def golden_files(case: str, channel: str) -> dict[str, bytes]:
    comp = api.compile([f"examples/{case}.mesh"])
    emitted = comp.emit("gateway-api", None, Options(channel=channel))
    shown = "".join(f"{d.severity} {d.code} {d.span.location() if d.span else d.path}: {d.message}\n"
                    for d in sorted(comp.diagnostics + emitted.diagnostics, key=lambda d: d.sort_key()))
    out = {"diagnostics.txt": shown.encode()}
    out.update(emitted.files)
    if emitted.files:
        report = emitted.validation
        assert report is not None and report.ok and report.rule_evaluations > 0
    return out


@pytest.mark.parametrize("case, channel", list(itertools.product(EXAMPLES, CHANNELS)))
def test_gateway_api_golden(case, channel, update_goldens, monkeypatch):
    monkeypatch.chdir(ROOT)
    files = golden_files(case, channel)
    case_dir = GOLDEN_DIR / case / channel
    on_disk = {str(p.relative_to(case_dir)) for p in case_dir.rglob("*") if p.is_file()} if case_dir.exists() else set()
    if update_goldens:
        for rel, data in files.items():
            path = case_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for rel in on_disk - set(files):
            (case_dir / rel).unlink()
        return
    assert on_disk == set(files), f"goldens under {case_dir} differ in files (run `pytest --update-goldens`)"
    for rel, data in files.items():
        assert (case_dir / rel).read_bytes() == data, f"{case_dir}/{rel} differs (run `pytest --update-goldens`)"


# Every example compiles in the experimental channel, validated: tests/test_examples_targets.py.


# ---- generated policies

@settings(max_examples=GENERATED, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(S.valid_modules(), st.sampled_from(CHANNELS))
def test_generated_policies_validate_or_are_refused_by_the_backend(module, channel):
    text = render.module(module)
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        Path("generated.mesh").write_text(text, encoding="utf-8")
        comp = api.compile(["generated.mesh"])
        assert not comp.has_errors, [(d.code, d.message) for d in comp.diagnostics]
        emitted = comp.emit("gateway-api", None, Options(channel=channel))
        found = [(d.code, d.message) for d in emitted.diagnostics if d.code in VALIDATION]
        assert not found, f"{found}\n--- policy:\n{text}"
        if not emitted.has_errors and emitted.files:
            assert emitted.validation.ok and emitted.validation.objects == len(routes(emitted))


# ---- precedence

_PATHS = [None, ("Exact", "/a"), ("Exact", "/a/b"), ("PathPrefix", "/"), ("PathPrefix", "/a"),
          ("PathPrefix", "/a/b"), ("PathPrefix", "/b"), ("RegularExpression", "/a/[0-9]+")]
_HEADERS = [("x", "Exact", "1"), ("x", "Exact", "2"), ("y", "Exact", "1"), ("x", "RegularExpression", "[0-9]"),
            ("z", "RegularExpression", ".*")]


@st.composite
def gw_matches(draw):
    m: dict = {}
    path = draw(st.sampled_from(_PATHS))
    if path is not None:
        m["path"] = {"type": path[0], "value": path[1]}
    if draw(st.booleans()):
        m["method"] = draw(st.sampled_from(["GET", "POST"]))
    headers = draw(st.lists(st.sampled_from(_HEADERS), max_size=2, unique_by=lambda h: h[0]))
    if headers:
        m["headers"] = [{"name": n, "type": t, "value": v} for n, t, v in headers]
    if draw(st.booleans()):
        m["queryParams"] = [{"name": "q", "type": "Exact", "value": draw(st.sampled_from(["1", "2"]))}]
    return m


# ---- Gateway API's matching and precedence, written from the specification (v1.6.1, HTTPRouteRule
# and HTTPRouteMatch), independently of order.py: the comparisons below judge the backend with it

def spec_matches(m: dict, req: dict) -> bool:
    """HTTPRouteMatch: every condition holds. A path defaults to PathPrefix `/`; PathPrefix matches
    whole `/`-separated elements, a trailing `/` of its value ignored (`/foo` takes `/foo`, `/foo/`,
    `/foo/bar`, not `/foobar`); header names compare without case, values (and query parameters,
    the first value of a name) exactly or by a whole-string RE2 match."""
    import re2

    p = m.get("path") or {"type": "PathPrefix", "value": "/"}
    path = req["path"]
    if p["type"] == "Exact" and path != p["value"]:
        return False
    if p["type"] == "PathPrefix":
        base = p["value"].rstrip("/")
        if base and path != base and not path.startswith(base + "/"):
            return False
    assert p["type"] in ("Exact", "PathPrefix"), p   # (a regex path's rank is the implementation's)
    if "method" in m and m["method"] != req["method"]:
        return False
    headers = {k.lower(): v for k, v in req["headers"].items()}

    def ok(cond: dict, value: str | None) -> bool:
        if value is None:
            return False
        if cond.get("type", "Exact") == "Exact":
            return value == cond["value"]
        return re2.fullmatch(cond["value"], value) is not None

    return (all(ok(h, headers.get(h["name"].lower())) for h in m.get("headers", ()))
            and all(ok(q, req["query"].get(q["name"])) for q in m.get("queryParams", ())))


def spec_winner(rules: list[dict], req: dict) -> tuple[int, dict] | None:
    """(the rule index, its match) Gateway API picks among one HTTPRoute's `rules` (each a dict with
    `matches`): precedence to an Exact path, then the PathPrefix with the most characters, then a
    method match, then the most header matches, then the most query matches; ties go to the first
    rule in list order. None: no match."""
    best = None
    for i, rule in enumerate(rules):
        for m in rule.get("matches") or [{}]:
            if not spec_matches(m, req):
                continue
            p = m.get("path") or {"type": "PathPrefix", "value": "/"}
            key = (p["type"] != "Exact", -len(p["value"]) if p["type"] == "PathPrefix" else 0, "method" not in m,
                   -len(m.get("headers", ())), -len(m.get("queryParams", ())), i)
            if best is None or key < best[0]:
                best = (key, i, m)
    return None if best is None else (best[1], best[2])


def _req(method: str, path: str, headers: dict | None = None, query: dict | None = None) -> dict:
    return {"method": method, "path": path, "headers": headers or {}, "query": query or {}}


@pytest.mark.parametrize("rules, req, winner", [
    # the specification's order, each criterion over the ones after it (rule 0 written first)
    ([[{"path": {"type": "PathPrefix", "value": "/a"}}], [{"path": {"type": "Exact", "value": "/a/b"}}]],
     _req("GET", "/a/b"), 1),
    ([[{"path": {"type": "PathPrefix", "value": "/a"}, "method": "GET"}],
      [{"path": {"type": "PathPrefix", "value": "/a/b"}}]], _req("GET", "/a/b/c"), 1),
    ([[{"path": {"type": "PathPrefix", "value": "/a"}, "headers": [{"name": "x", "value": "1"}]}],
      [{"path": {"type": "PathPrefix", "value": "/a"}, "method": "GET"}]], _req("GET", "/a", {"X": "1"}), 1),
    ([[{"headers": [{"name": "x", "value": "1"}], "queryParams": [{"name": "q", "value": "1"}]}],
      [{"headers": [{"name": "x", "value": "1"}, {"name": "y", "value": "1"}]}]],
     _req("GET", "/", {"x": "1", "y": "1"}, {"q": "1"}), 1),
    ([[{"queryParams": [{"name": "q", "value": "1"}]}], [{"headers": [{"name": "x", "value": "1"}]}]],
     _req("GET", "/", {"x": "1"}, {"q": "1"}), 1),
    ([[{"headers": [{"name": "x", "value": "1"}]}], [{"headers": [{"name": "x", "value": "1"}]}]],
     _req("GET", "/", {"x": "1"}), 0),
    # a PathPrefix matches whole elements, its trailing `/` ignored
    ([[{"path": {"type": "PathPrefix", "value": "/a/"}}], [{}]], _req("GET", "/a"), 0),
    ([[{"path": {"type": "PathPrefix", "value": "/a"}}], [{}]], _req("GET", "/ab"), 1),
    ([[{"path": {"type": "PathPrefix", "value": "/a"}, "method": "POST"}]], _req("GET", "/a"), None),
])
def test_spec_precedence_table(rules, req, winner):
    """Hard-coded winners of Gateway API's precedence, for the independent evaluator (`spec_winner`)
    and for order.py's model (`order.winners`), which `plan` ranks by."""
    as_rules = [{"matches": ms} for ms in rules]
    got = spec_winner(as_rules, req)
    assert (got[0] if got else None) == winner
    entries = [order.Entry(r, i, m) for r, ms in enumerate(rules) for i, m in enumerate(ms)]
    assert order.winners(entries, req)[1] == winner


REQUESTS = [{"method": method, "path": path, "headers": dict(h), "query": dict(q)}
            for method in ("GET", "POST")
            for path in ("/", "/a", "/a/b", "/a/b/c", "/a/7", "/ab", "/b")
            for h in ((), (("x", "1"),), (("x", "2"),), (("y", "1"),), (("x", "1"), ("y", "1")), (("z", "k"),))
            for q in ((), (("q", "1"),))]


@settings(max_examples=int(os.environ.get("MESHC_PLAN_EXAMPLES", "120")), deadline=None)
@given(st.lists(st.lists(gw_matches(), min_size=1, max_size=3), min_size=1, max_size=4))
def test_planned_matches_route_every_request_as_written(rules):
    """Where `plan` reports no conflict, Gateway API's precedence over the planned matches picks,
    for every request, the rule first-match picks over the written ones."""
    planned, conflicts = order.plan(rules)
    written = [order.Entry(r, i, m) for r, ms in enumerate(rules) for i, m in enumerate(ms)]
    entries = [order.Entry(r, i, m) for r, ms in enumerate(planned) for i, m in enumerate(ms)]
    for r, ms in enumerate(planned):   # each rule still matches exactly what it matched
        for req in REQUESTS:
            assert any(order.matches(m, req) for m in ms) == any(order.matches(m, req) for m in rules[r])
    if conflicts:
        for c in conflicts:
            if c.request is not None and c.written_rule != c.gateway_rule:
                assert order.winners(written, c.request)[0] == c.written_rule
        return
    independent = not any((m.get("path") or {}).get("type") == "RegularExpression" for ms in planned for m in ms)
    for req in REQUESTS:
        first = order.winners(written, req)[0]
        assert order.winners(entries, req) == (first, first), req
        if independent:   # (the specification leaves a regex path's rank to the implementation)
            got = spec_winner([{"matches": ms} for ms in planned], req)
            assert (got[0] if got else None) == first, req


def test_a_conflict_shows_a_request_routed_differently():
    text = """service api {
  port 80
  subset v1 { endpoints ["10.0.0.1:80"] }
  subset v2 { endpoints ["10.0.0.2:80"] }
}
routes api {
  route legacy {
    match { path regex "/items/[0-9]+" }
    to api.v1
  }
  route items {
    match { path prefix "/items"  header "x-v" exact "2" }
    to api.v2
  }
}
"""
    emitted = emit(text)
    (d,) = [d for d in emitted.diagnostics if d.code == "E0943"]
    assert d.message == ("`GET /items/0` with `x-v: 2` matches routes `legacy` and `items`, and Gateway API leaves "
                         "the rank of a regex path to the implementation: it may not go to `legacy` as written")
    assert d.span.location().endswith(":7:3") and emitted.files == {}


def test_an_earlier_header_route_gets_the_matches_that_keep_it_first():
    text = """service api {
  port 80
  subset v1 { endpoints ["10.0.0.1:80"] }
  subset v2 { endpoints ["10.0.0.2:80"] }
}
routes api {
  route pinned {
    match { header "x-v" exact "2" }
    to api.v2
  }
  route items {
    match { path prefix "/items"  method GET }
    to api.v1
  }
}
"""
    (route,) = routes(emit(text))
    pinned = route["spec"]["rules"][0]["matches"]
    assert pinned == [
        {"headers": [{"name": "x-v", "type": "Exact", "value": "2"}], "path": {"type": "PathPrefix", "value": "/"}},
        {"headers": [{"name": "x-v", "type": "Exact", "value": "2"}], "method": "GET",
         "path": {"type": "PathPrefix", "value": "/items"}}]


# ---- the exactness table (docs/kubernetes.gateway-api.md): one test per non-exact row

SVC = """service api {
  port 80
  subset v1 { endpoints ["10.0.0.1:80"] }
  subset v2 { endpoints ["10.0.0.2:80"] }
}
"""


def route(body: str, extra: str = "") -> str:
    return SVC + extra + "routes api {\n  route r {\n" + body + "\n  }\n}\n"


RETRY = "    to api.v1\n    retry { attempts 2  on [503] }"


@pytest.mark.parametrize("text, channel, expected", [
    (route(RETRY), "standard", "E0944"),
    (route("    to api.v1\n    fault { abort 503 10% }"), "experimental", "E0945"),
    (route('    match { path raw_prefix "/ab" }\n    to api.v1'), "experimental", "E0946"),
    (route('    match { path prefix "/a/" }\n    to api.v1'), "experimental", "E0946"),
    (route('    match { path prefix "/a" ignore_case }\n    to api.v1'), "experimental", "E0946"),
    (route('    match { header "x" absent }\n    to api.v1'), "experimental", "E0947"),
    (route('    match { not header "x" exact "1" }\n    to api.v1'), "experimental", "E0947"),
    (route("    split { api.v1 2000000  api.v2 1 }"), "experimental", "E0948"),
    (route('    to api.v1\n    request_headers { set "x" "" }'), "experimental", "E0950"),
    (route('    to api.v1\n    response_headers { add "x" "a  b" }'), "experimental", "E0950"),
    (route('    match { header "x" exact "caf\u00e9" }\n    to api.v1'), "experimental", "E0950"),
    (route('    to api.v1\n    request_headers { add "x" "1"  add "x" "2" }'), "experimental", "E0953"),
    (route('    to api.v1\n    response_headers { set "x" "1"  add "x" "2" }'), "experimental", "E0953"),
    (route("    to api.v1\n    retry { attempts 2  on [5xx] }"), "experimental", "W0940"),
    (route("    to api.v1\n    retry { attempts 2  on [503]  backoff 10ms max 30ms }"), "experimental", "W0941"),
    # any backoff: Gateway API's is only the minimum wait (the growth is the implementation's)
    (route("    to api.v1\n    retry { attempts 2  on [503]  backoff 10ms }"), "experimental", "W0941"),
    (route("    to api.v1"), "experimental", "W0942"),
    (route('    split { api.v1 1  api.v2 1 } by header "x-user"'), "experimental", "W0943"),
    (route('    match { path regex "/a/[0-9]+" }\n    to api.v1'), "experimental", "W0944"),
    (route('    match { header "x" prefix "a" }\n    to api.v1'), "experimental", "W0944"),
    (route("    to api.v1", "authorization api {\n  default deny\n  allow all { method GET }\n}\n"),
     "experimental", "W0945"),
    (route("    to api.v1\n    retry { attempts 2  on [connect-failure] }"), "experimental", "W0947"),
    (route('    match { path prefix "/old" }\n    respond 410 "gone"'), "experimental", "E0954"),
    (route('    match { path prefix "/a" }\n    to api.v1\n    rewrite { regex "^/a/(.*)$" "/b/\\\\1" }\n'
           + RETRY.split("\n")[1]),
     "experimental", "E0955"),
    (route('    match { path prefix "/a" }\n    to api.v1\n    rewrite { host "b:81" }\n' + RETRY.split("\n")[1]),
     "experimental", "E0955"),
    (route('    match { path exact "/a" }\n    redirect { path "/b"  port 80  strip_query }'), "experimental", "E0956"),
    (route('    match { path prefix "/a" }\n    redirect { prefix "/b/"  port 80 }')
     .replace("  }\n}\n", '  }\n  route s {\n    match { path exact "/a/b"  method GET }\n    to api.v2\n  }\n}\n'),
     "experimental", "E0957"),
    (route('    match { path exact "/a" }\n    redirect { path "/b" }'), "experimental", "W0948"),
    (route('    split { api.v1 1 request_headers { set "x" "1" }  api.v2 1 }\n'
           '    request_headers { remove "x" }\n' + RETRY.split("\n")[1]), "experimental", "W0949"),
    (route("    to api.v1\n    mirror api.v2 10%\n    mirror api.v1 5%\n" + RETRY.split("\n")[1]),
     "experimental", "W0950"),
    (route("    match { caller api }\n    to api.v1"), "experimental", "E0958"),
    (route(RETRY).replace("service api {\n", 'service api {\n  hosts ["api.example.com", "*.api.example.com"]\n', 1),
     "experimental", "W0951"),
])
def test_each_non_exact_construct_has_its_diagnostic(text, channel, expected):
    found = codes(text, channel)
    assert expected in found, found


def test_more_routes_than_an_httproute_holds():
    many = "".join(f'  route r{i} {{\n    match {{ path prefix "/p{i}" }}\n    to api.v1\n  }}\n' for i in range(17))
    emitted = emit(SVC + "routes api {\n" + many + "}\n")
    (d,) = [d for d in emitted.diagnostics if d.code == "E0952"]
    assert d.message == "`api` has 17 routes, and an HTTPRoute has at most 16 rules" and emitted.files == {}


@pytest.mark.parametrize("setting, shown", [("outlier { consecutive_5xx 3 }", "outlier detection"),
                                            ("limits { connections 10 }", "connection limits"),
                                            ("retry_budget { percent 20% }", "a retry budget"),
                                            ("mtls strict", "mTLS `strict`")])
def test_destination_policies_are_reported_at_the_service(setting, shown):
    routes_block = "routes api {\n  route r {\n    to api.v1\n  }\n}\n"
    text = SVC.replace("  port 80\n", f"  port 80\n  {setting}\n") + routes_block
    (d,) = [d for d in emit(text).diagnostics if d.code == "W0946"]
    assert shown in d.message and d.span.location().endswith(":1:1")
    assert "W0946" not in codes(SVC + routes_block)


OPS = """service other {
  port 81
  namespace "ops"
""" + "".join(f'  subset s{i} {{ endpoints ["10.0.1.{i}:81"] }}\n' for i in range(17)) + """}
routes other {
  route all { to other.s0 }
}
"""


def test_a_destination_in_another_namespace_gets_a_reference_grant():
    """A backendRef to another namespace's Service (a `to`, a split's, a mirror's) is followed only
    where that namespace grants it: meshc writes the ReferenceGrant there, in the destination's
    file, naming exactly the Services referred to (16 at most per grant), and the objects validate."""
    split = "  ".join(f"other.s{i} 1" for i in range(1, 17))
    text = SVC + OPS + f"""routes api {{
  route one {{
    match {{ path prefix "/one" }}
    to other.s0
  }}
  route many {{
    match {{ path prefix "/many" }}
    split {{ {split} }}
  }}
  route rest {{
    to api.v1
    mirror other.s0 5%
  }}
}}
"""
    emitted = emit(text)
    assert not emitted.has_errors, [(d.code, d.message) for d in emitted.diagnostics if d.severity == "error"]
    objects = routes(emitted)
    assert emitted.validation.ok and emitted.validation.objects == len(objects) == 4
    (api_route,) = [o for o in objects if o["kind"] == "HTTPRoute" and o["metadata"]["name"] == "api"]
    one, many, rest = api_route["spec"]["rules"]
    assert one["backendRefs"] == [{"group": "", "kind": "Service", "name": "other-s0", "namespace": "ops",
                                   "port": 81}]
    assert {r["namespace"] for r in many["backendRefs"]} == {"ops"}
    assert rest["filters"][0]["requestMirror"]["backendRef"]["namespace"] == "ops"
    grants = [o for o in objects if o["kind"] == "ReferenceGrant"]
    assert [(g["apiVersion"], g["metadata"]["name"], g["metadata"]["namespace"]) for g in grants] == [
        ("gateway.networking.k8s.io/v1beta1", "other.from.default", "ops"),
        ("gateway.networking.k8s.io/v1beta1", "other.from.default.2", "ops")]
    assert all(g["spec"]["from"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                                      "namespace": "default"}] for g in grants)
    granted = [t["name"] for g in grants for t in g["spec"]["to"]]
    assert [len(g["spec"]["to"]) for g in grants] == [16, 1]
    assert sorted(granted) == sorted(f"other-s{i}" for i in range(17))   # each once, and nothing else
    assert all(t["group"] == "" and t["kind"] == "Service" for g in grants for t in g["spec"]["to"])
    in_file = list(yaml.safe_load_all(emitted.files["ops/other.yaml"]))
    assert [o["kind"] for o in in_file] == ["HTTPRoute", "ReferenceGrant", "ReferenceGrant"]


def test_grant_names_cannot_collide():
    """Namespaces and service names with `-2` and `-from-` in them: every grant has a name of its
    own (a second object of one name would replace the first in the cluster)."""
    text = """service a {
  port 81
  namespace "x"
""" + "".join(f'  subset s{i} {{ endpoints ["10.0.1.{i}:81"] }}\n' for i in range(17)) + """}
routes a {
  route all { to a.s0 }
}
service a-from-b {
  port 81
  namespace "x"
  endpoints ["10.0.2.1:81"]
}
"""
    split = "  ".join(f"x/a.s{i} 1" for i in range(16))
    for ns, body in (("b", f"split {{ {split} }}"), ("b-2", "to x/a.s3"), ("c", "to x/a-from-b"),
                     ("b-from-c", "to x/a.s5")):
        text += (f'service f{len(ns)}{ns.replace("-", "")} {{\n  port 80\n  namespace "{ns}"\n'
                 f'  endpoints ["10.0.3.1:80"]\n}}\n')
        text += (f"routes f{len(ns)}{ns.replace('-', '')} {{\n  route s {{ match {{ path prefix \"/s\" }} "
                 f"to x/a.s16 }}\n  route r {{ {body} }}\n}}\n")
    objects = routes(emit(text))
    grants = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o["kind"] == "ReferenceGrant"]
    assert len(grants) == len(set(grants)) == 6
    by_name = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
    assert by_name[("x", "a.from.b-2")]["spec"]["from"][0]["namespace"] == "b-2"
    assert by_name[("x", "a.from.b.2")]["spec"]["from"][0]["namespace"] == "b"


def test_a_route_of_the_same_namespace_needs_no_grant():
    same = OPS.replace('  namespace "ops"\n', "")
    objects = routes(emit(SVC + same + "routes api {\n  route r { to other.s3 }\n}\n"))
    assert [o["kind"] for o in objects] == ["HTTPRoute", "HTTPRoute"]


def test_exact_constructs_become_their_fields():
    text = route('''    match { path exact "/a"  method [GET, POST]  header "x" exact "1"  query "q" exact "2" }
    split { api.v1 3  api.v2 1 }
    timeout 1500ms
    retry { attempts 3  on [gateway-error, 429]  per_try_timeout 500ms  backoff 20ms }
    mirror api.v2 12.5%
    request_headers { set "x-a" "1"  add "x-b" "2"  remove "x-c" }
    response_headers { set "x-d" "4" }''')
    (obj,) = routes(emit(text))
    assert obj["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": "api", "port": 80}]
    (rule,) = obj["spec"]["rules"]
    header = [{"name": "x", "type": "Exact", "value": "1"}]
    query = [{"name": "q", "type": "Exact", "value": "2"}]
    assert rule["matches"] == [{"headers": header, "method": m, "path": {"type": "Exact", "value": "/a"},
                                "queryParams": query} for m in ("GET", "POST")]
    assert rule["backendRefs"] == [{"group": "", "kind": "Service", "name": "api-v1", "port": 80, "weight": 3},
                                   {"group": "", "kind": "Service", "name": "api-v2", "port": 80, "weight": 1}]
    assert rule["timeouts"] == {"request": "1500ms", "backendRequest": "500ms"}
    assert rule["retry"] == {"attempts": 3, "backoff": "20ms", "codes": [429, 502, 503, 504]}
    assert rule["filters"] == [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "add": [{"name": "x-b", "value": "2"}], "remove": ["x-c"], "set": [{"name": "x-a", "value": "1"}]}},
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": [{"name": "x-d", "value": "4"}]}},
        {"type": "RequestMirror", "requestMirror": {
            "backendRef": {"group": "", "kind": "Service", "name": "api-v2", "port": 80},
            "fraction": {"numerator": 125000, "denominator": 1000000}}}]


@pytest.mark.parametrize("ms, text", [(0, "0s"), (2000, "2s"), (1500, "1500ms"), (100500, "100s500ms"),
                                      (86_400_000, "86400s")])
def test_durations(ms, text):
    assert duration(ms) == text


# ---- the command line

def test_check_target_validates_without_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    status, out, err = run_cli(["check", "examples/shop.mesh", "--target", "gateway-api", "--channel", "experimental"])
    assert status == 0, err
    assert "validated 7 gateway-api objects (" in out and "CEL rule evaluations of" in out
    status, _, err = run_cli(["check", "examples/shop.mesh", "--target", "gateway-api"])
    assert status == 1 and "E0944" in err


def test_compile_writes_only_the_channel_asked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    status, _, err = run_cli(["compile", "examples/shop.mesh", "--target", "gateway-api", "--channel", "experimental",
                              "-o", str(out)])
    assert status == 0, err
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.yaml"))
    assert "shop/catalog.yaml" in files
    status, _, err = run_cli(["compile", "examples/shop.mesh", "--target", "gateway-api", "-o", str(tmp_path / "std")])
    assert status == 1 and not (tmp_path / "std").exists()


def test_check_target_istio_validates_the_istio_objects(monkeypatch):
    monkeypatch.chdir(ROOT)
    status, out, err = run_cli(["check", "examples/shop.mesh", "--target", "istio"])
    assert status == 0, err
    assert "istio objects (" in out and "CEL rule evaluations of" in out


def test_channel_needs_gateway_api(monkeypatch):
    monkeypatch.chdir(ROOT)
    status, _, err = run_cli(["compile", "examples/shop.mesh", "--target", "envoy", "--channel", "experimental"])
    assert status == 2 and "--channel" in err
    status, _, err = run_cli(["check", "examples/shop.mesh", "--channel", "experimental"])
    assert status == 2 and "--channel" in err


# ---- against the native proxy's decision

# Policies per run, drawn from the profile limited to what an HTTPRoute carries
# (tests/equivalence/gateway.py; the general generators' policies are refused 9 times in 10);
# derandomised, so that a run always compares the same requests.
EQUIVALENCE = int(os.environ.get("MESHC_GATEWAY_EQUIVALENCE", "25"))
COMPARED = {"policies": 0, "refused": 0, "slash": 0, "requests": 0, "backends": 0, "locations": 0, "paths": 0,
            "hosts": 0, "headers": 0, "cors": 0, "grants": 0}
# the least of each count per 25 policies, scaled to the policies drawn (measured counts:
# docs/kubernetes.gateway-api.md; the draws are derandomised from the source of `_compare_policies`,
# so an edit of it draws other policies: these leave room for that)
MINIMUM = {"requests": 100, "backends": 60, "locations": 1, "paths": 2, "hosts": 1, "headers": 20, "cors": 2,
           "grants": 10}


def test_httproutes_route_as_the_native_proxy_decides():
    """Generated policies of the Gateway API profile (tests/equivalence/gateway.py) and requests:
    where the Gateway API target writes the policy without an error, the rule Gateway API's
    precedence picks in the written HTTPRoute (`spec_winner`, from the specification) is of the
    route the native proxy's own decision function picks, for every outbound request with a known
    Host and no repeated header (whose test Gateway API leaves to the implementation), and the rule
    does what the decision does (`_compare_rule`: its backends, its redirect's whole Location and
    status, its rewrite's path and Host, its header changes, timeout, retry and mirrors, its CORS
    filter). The counts of what was compared are checked here: at most one policy in ten refused
    (besides the ones E0957 refuses for the profile's replacement `/x/`, which ends in `/`), and at
    least `MINIMUM` of each (per 25 policies). The HTTPRoutes are the backend's, not
    validated here (cel-python's evaluation would take most of the time):
    `test_gateway_profile_policies_validate` validates the profile's output."""
    if EQUIVALENCE <= 0:
        pytest.skip("MESHC_GATEWAY_EQUIVALENCE=0: no policy drawn")
    for key in COMPARED:
        COMPARED[key] = 0
    _compare_policies()
    counts = dict(COMPARED)
    assert counts["policies"] == EQUIVALENCE + 3, counts   # (each drawn once, and the three written)
    assert counts["slash"] >= 1, counts
    assert counts["refused"] * 10 <= counts["policies"], counts
    for key, least in MINIMUM.items():
        assert counts[key] * 25 >= least * counts["policies"], (key, counts)


def _written(routes_text: str, twin: str | None = None):
    """A policy of the profile's form (`client`, a destination `s0` of subsets `a` and `b`, and with
    `twin` its twin in that namespace) with these routes for `s0`, and no drawn request
    (`aimed_requests` makes them)."""
    from tests.equivalence.gateway import gateway_policy_of

    return gateway_policy_of(routes_text, twin), []


@settings(max_examples=max(EQUIVALENCE, 1), deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
@given(case=gateway_cases(max_requests=20, min_requests=5))
# a route before a more specific one: order.plan adds `/a/b` (with the header) to `r0`, whose rule
# for it replaces `/a/b` by `/new/b` (ReplacePrefixMatch of `/a/b/z` -> `/new/b/z`, as meshc)
@example(case=_written('  route r0 {\n    match { path prefix "/a"  header "x-h0" exact "a" }\n    to s0.a\n'
                       '    rewrite { prefix "/new" }\n  }\n  route r1 {\n    match { path prefix "/a/b" }\n'
                       '    to s0.b\n  }'))
# a replacement ending in `/`: refused (E0957), else compared and found different
@example(case=_written('  route r0 {\n    match { path prefix "/a" }\n    to s0.a\n    rewrite { prefix "/x/" }\n  }'))
# routes to, splits to and mirrors to the twin in another namespace: backendRefs through a ReferenceGrant
@example(case=_written('  route r0 {\n    match { path prefix "/t" }\n    to other/s0.a\n  }\n'
                       '  route r1 {\n    match { header "x-h0" exact "a" }\n'
                       '    split { other/s0.a 1  default/s0.b 1 }\n  }\n'
                       '  route r2 {\n    to default/s0.a\n    mirror other/s0.a 50%\n  }', twin="other"))
def _compare_policies(case):
    from compiler import backends
    from compiler.ir.scope import routes_for, scopes
    from compiler.verify.native import NativeModel
    from tests.equivalence.compile import compile_text

    policy, requests = case
    text = policy.text
    for key, value in {"INBOUND": 15006, "OUTBOUND": 15001, "ADMIN": 15000, "APP": 18000, "OTLP": 4318}.items():
        text = text.replace(f"@{key}@", str(value))
    for i in range(12):
        text = text.replace(f"@EP{i}@", str(19000 + i))
    compiled = compile_text(text)
    comp = api.compile([api.Text("generated.mesh", text)], shard=False)
    emitted = backends.emit("gateway-api", comp.ir, [], Options(channel="experimental"), comp.sources)
    COMPARED["policies"] += 1
    if {d.code for d in emitted.diagnostics if d.severity == "error"} == {"E0957"}:
        COMPARED["slash"] += 1   # (the profile's prefix replacement `/x/`, refused as it should be)
        return
    if emitted.has_errors or any(m.callers and "client" in m.callers for s in comp.ir.services
                                 for r in s.routes for m in r.matches):
        COMPARED["refused"] += 1   # (routes for `client` alone: an HTTPRoute leaves them out, W0411)
        return
    # by namespace and name: a service of a name two namespaces declare (`NS/NAME`) has its HTTPRoute `NAME` in NS
    by_service = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in routes(emitted)
                  if r["kind"] == "HTTPRoute"}
    # a backendRef's Service (`SERVICE` for the implicit subset, `SERVICE-SUBSET`), in the route's
    # namespace -> the subset's cluster
    clusters: dict[str, dict[str, str]] = {}
    for s in comp.ir.services:
        for sub in s.subsets:
            clusters.setdefault(s.namespace, {})[backend_service(s, sub.name)] = sub.cluster
    grants = granted(routes(emitted))
    native = NativeModel(compiled, validate=False)
    # a destination whose authorization cannot admit the caller is outside its scope: meshc answers
    # 404 before routing, Gateway API (which has no scope) routes it (W0945 says authorization is not carried)
    reachable = set(scopes(comp.ir)["client"].hosts)
    for request in [*requests, *aimed_requests(policy)]:
        svc = policy.destination(request.host)
        names = [n.lower() for n, _ in request.headers]
        if request.kind != "outbound" or svc is None or svc not in reachable or len(set(names)) != len(names):
            continue
        decision = native.decide(request)
        # the path matched: as sent when it is already normal, else the native proxy's upstream path
        # on a route that forwards it unchanged (a rewrite changes it; a local reply has none)
        clean = not re.search(r"//|/\.|%|#", request.target)
        chosen = next((r for r in comp.ir.service(svc).routes if decision.route == f"{svc}/{r.name}"), None)
        if decision.route is None and (decision.status != 404 or not clean):
            continue   # refused before routing (a malformed request)
        if clean:
            target = request.target
        elif decision.path is None or decision.status or (chosen is not None and chosen.rewrite is not None):
            continue
        else:
            target = decision.path
        path, _, query = target.partition("?")
        params: dict[str, str] = {}
        for k, v in parse_qsl(query, keep_blank_values=True):
            params.setdefault(k, v)
        req = {"method": request.method, "path": path, "headers": dict(request.headers), "query": params}
        namespace = comp.ir.service(svc).namespace
        route = by_service[(namespace, svc.rpartition("/")[2])]
        won = spec_winner(route["spec"]["rules"], req)   # (the specification's precedence, not order.py's)
        expected = decision.route.rpartition("/")[2] if decision.route else None
        # the HTTPRoute's rules: the routes of a caller no `caller` condition names (W0411)
        got = _rule_route(route["spec"]["rules"][won[0]], routes_for(comp.ir.service(svc), "")) \
            if won is not None else None
        where = f"{request.describe()}\n--- policy:\n{text}"
        assert got == expected, where
        COMPARED["requests"] += 1
        if won is None:
            continue
        rule, best = route["spec"]["rules"][won[0]], won[1]
        assert chosen is not None
        resolve = functools.partial(backend_cluster, clusters=clusters, namespace=namespace, grants=grants)
        _compare_rule(rule, best, chosen, request, decision, resolve, path if clean else None, query,
                      f"{where}\n--- rule {rule}")


def granted(objects: list[dict]) -> set[tuple[str, str, str]]:
    """(the grant's namespace, the namespace whose HTTPRoutes it lets refer, the Service) of every
    ReferenceGrant among `objects` (Gateway API v1.6.1, ReferenceGrant: `from` HTTPRoutes, `to`
    Services of the core group; a `to` without a name grants every Service)."""
    out = set()
    applied = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}  # (the last)
    for o in applied.values():
        if o["kind"] != "ReferenceGrant":
            continue
        for f in o["spec"]["from"]:
            if (f["group"], f["kind"]) != ("gateway.networking.k8s.io", "HTTPRoute"):
                continue
            for t in o["spec"]["to"]:
                if (t["group"], t["kind"]) == ("", "Service"):
                    out.add((o["metadata"]["namespace"], f["namespace"], t.get("name", "*")))
    return out


def backend_cluster(ref: dict, clusters: dict[str, dict[str, str]], namespace: str,
                    grants: set[tuple[str, str, str]]) -> str:
    """The cluster a backendRef of an HTTPRoute in `namespace` reaches, as an implementation resolves
    it: a Service of the route's namespace, or of the ref's `namespace` when a ReferenceGrant there
    lets this namespace's HTTPRoutes refer to it (else the ref is not resolved: the implementation
    answers 500, where meshc forwards)."""
    other = ref.get("namespace", namespace)
    if other != namespace:
        assert {(other, namespace, ref["name"]), (other, namespace, "*")} & grants, \
            f"no ReferenceGrant in `{other}` lets the HTTPRoutes of `{namespace}` refer to `{ref['name']}`"
    return clusters[other][ref["name"]]


# the first exact value of each header the profile's matches test (tests/equivalence/gateway.py)
AIMED_HEADERS = tuple((name, tests[0].split('"')[1]) for name, tests in HEADER_TESTS.items())


def aimed_requests(policy) -> list:
    """Requests made from the policy, besides the drawn ones (which are mostly unusual targets): for
    each destination and path of the policy's matches, `GET PATH` and `GET PATH/z`, without headers
    and with the profile's exact header values, so that each route's prefix (and the longer prefixes
    `order.plan` adds to a route written before a more specific one) is compared, rewrite included."""
    from tests.equivalence.policies import GenRequest, namespace_of, short_name

    # (a twin, `NS/s0`, by its name in its namespace: `s0.NS`)
    hosts = [svc if "/" not in svc else f"{short_name(svc)}.{namespace_of(svc)}" for svc in policy.services]
    return [GenRequest("outbound", "GET", target, host, headers)
            for host in hosts for p in sorted(set(policy.paths))
            for target in (p, p.rstrip("/") + "/z") for headers in ((), AIMED_HEADERS)]


def _filter(rule: dict, key: str) -> dict | None:
    return next((f[key] for f in rule.get("filters", ()) if key in f), None)


DURATION = re.compile(r"([0-9]+)(h|ms|m|s)")


def _ms(text: str) -> int:
    """Gateway API's Duration in milliseconds."""
    scale = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
    return sum(int(n) * scale[unit] for n, unit in DURATION.findall(text))


# what meshc's retry conditions retry by status code (compiler/language/retry.py; Envoy's `retry_on`)
RETRY_CODES = {"5xx": set(range(500, 600)), "gateway-error": {502, 503, 504}, "retriable-4xx": {409}}


def _compare_rule(rule: dict, match: dict, route, request, decision, cluster_of, path: str | None,
                  query: str, where: str) -> None:
    """The rule Gateway API picks does what the native decision does, field by field, as Gateway
    API v1.6.1 specifies the rule's fields: a redirect's whole Location (its scheme, the request's
    or the filter's hostname, the port, the HTTPPathModifier's path, the query kept) and status; a
    forwarded request's cluster among the backendRefs of non-zero weight (all of them, for a
    random pick), the rewritten path and Host, the header changes (where the route and the chosen
    destination do not change one header both, W0949), the timeout, the retry (attempts, status
    codes, backoff, per-try timeout) and the mirrors; a CORS filter whenever the route has `cors`
    (`_compare_cors`: the headers it says)."""
    redirect, rewrite = _filter(rule, "requestRedirect"), _filter(rule, "urlRewrite")
    cors = _filter(rule, "cors")
    if route.cors is not None:   # (E0959 refuses what the filter cannot say: it is never just left out)
        assert cors is not None, where
        _compare_cors(cors, request, decision, where)
        COMPARED["cors"] += 1
    elif cors is not None:
        raise AssertionError(f"a CORS filter for a route without `cors`\n{where}")
    made = _modified_path(rule, match, path) if path is not None else None
    if route.redirect is not None:
        assert redirect is not None and "backendRefs" not in rule, where
        assert decision.status == redirect["statusCode"] and decision.location, where
        if path is None:
            return
        got = urlsplit(decision.location)
        default = {"http": 80, "https": 443}
        # the scheme of a request to the Service is `http`; one that says `x-forwarded-proto` is left
        # out: meshc (as Envoy) takes its scheme from that header, Gateway API says "the request's"
        scheme = redirect.get("scheme", "http")
        if "scheme" not in redirect and any(n.lower() == "x-forwarded-proto" for n, _ in request.headers):
            scheme = got.scheme
        host = redirect.get("hostname", request.host.rsplit(":", 1)[0])
        want = (scheme, host.lower(), redirect["port"], made[1] if made else path, query)
        assert (got.scheme, (got.hostname or "").lower(), got.port or default[got.scheme], got.path,
                got.query) == want, f"{decision.location} != {want}\n{where}"
        COMPARED["locations"] += 1
        return
    if decision.status == 200 and decision.cors:   # a preflight `cors` answered
        return
    refs = {cluster_of(ref) for ref in rule["backendRefs"] if ref.get("weight", 1) > 0}
    COMPARED["grants"] += sum("namespace" in ref for ref in rule["backendRefs"])   # (through a ReferenceGrant)
    if decision.candidates is not None:
        assert set(decision.candidates) == refs, where
    else:
        assert decision.cluster in refs and (len(refs) == 1 or route.split is not None), where
    COMPARED["backends"] += 1
    assert _ms(rule["timeouts"]["request"]) == decision.timeout_ms, where
    retry = rule.get("retry")
    if decision.retry is None:
        assert retry is None, where
    elif retry is not None:   # (none: a retry on connection failures only, W0947)
        r = decision.retry
        codes = set(r.status_codes)
        for cond in r.retry_on:
            codes |= RETRY_CODES.get(cond, set())
        assert (retry["attempts"], set(retry["codes"]), _ms(retry["backoff"])) == (
            r.num_retries, codes, r.backoff_base_ms), where
        assert _ms(rule["timeouts"].get("backendRequest", "0s")) == r.per_try_timeout_ms, where
    mirrors = []
    for f in rule.get("filters", ()):
        if "requestMirror" in f:
            m = f["requestMirror"]
            share = m.get("percent", 100) if "fraction" not in m else \
                100 * m["fraction"]["numerator"] / m["fraction"]["denominator"]
            if share > 0:
                mirrors.append((cluster_of(m["backendRef"]), round(share, 4)))
    assert tuple(mirrors) == (decision.mirror or ()), where
    if made is not None and decision.path:
        assert made[1] == decision.path.partition("?")[0], where
        COMPARED["paths"] += 1
    if decision.upstream_headers is None:   # (a random pick among destinations with header changes:
        return                              # the decision has no head)
    if rewrite is not None and "hostname" in rewrite:
        assert decision.upstream_host == rewrite["hostname"], where
        COMPARED["hosts"] += 1
    else:
        assert decision.upstream_host is None, where
    arm = next((ref for ref in rule["backendRefs"] if cluster_of(ref) == decision.cluster), {})
    for key, lines in (("requestHeaderModifier", decision.upstream_headers),
                       ("responseHeaderModifier", decision.response_headers or ())):
        mine, theirs = _filter(rule, key) or {}, _filter(arm, key) or {}
        both = _modified(mine) & _modified(theirs)
        for modifier in (mine, theirs):
            if _check_modifier(modifier, lines, both, where):
                COMPARED["headers"] += 1


def _modified(modifier: dict) -> set[str]:
    return {*(h.lower() for h in modifier.get("remove", ())),
            *(h["name"].lower() for h in (*modifier.get("set", ()), *modifier.get("add", ())))}


def _check_modifier(modifier: dict, lines, skip: set[str], where: str) -> bool:
    """HTTPHeaderFilter: after it, a `set` header has that one value, a `remove`d one is absent, an
    `add`ed one has that value in its values (joined with `,`)."""
    values: dict[str, list[str]] = {}
    for name, value in lines:
        values.setdefault(name.lower(), []).append(value)
    checked = False
    for h in modifier.get("set", ()):
        if h["name"].lower() not in skip:
            assert values.get(h["name"].lower()) == [h["value"]], f"set {h}: {values}\n{where}"
            checked = True
    for name in modifier.get("remove", ()):
        if name.lower() not in skip:
            assert name.lower() not in values, f"remove {name}: {values}\n{where}"
            checked = True
    for h in modifier.get("add", ()):   # (appended to an existing value with `,`, the specification's example)
        if h["name"].lower() not in skip:
            assert h["value"] in ",".join(values.get(h["name"].lower(), [])), f"add {h}: {values}\n{where}"
            checked = True
    return checked


def _compare_cors(cors: dict, request, decision, where: str) -> None:
    """The native decision's CORS headers are what the rule's CORS filter says (HTTPCORSFilter,
    v1.6.1): for an Origin `allowOrigins` lists, `access-control-allow-origin` that Origin and
    `-allow-credentials: true` with `allowCredentials`; a preflight answered 200 with the
    `allowMethods`, `allowHeaders` and `maxAge` written; the answer gets `exposeHeaders` (a
    preflight's too); a request from another Origin gets none (the status of a preflight from
    another origin is the implementation's: W0952)."""
    origin = ",".join(v for n, v in request.headers if n.lower() == "origin")
    asked = ",".join(v for n, v in request.headers if n.lower() == "access-control-request-method")
    got = dict(decision.cors or ())
    where = f"--- cors {cors}\n{where}"
    if origin not in cors["allowOrigins"]:
        assert not got, where
        return
    want = {"access-control-allow-origin": origin}
    if cors.get("allowCredentials"):
        want["access-control-allow-credentials"] = "true"
    if request.method == "OPTIONS" and asked:
        assert decision.status == 200, where
        for key, field in (("access-control-allow-methods", "allowMethods"),
                           ("access-control-allow-headers", "allowHeaders")):
            if cors.get(field):
                want[key] = ",".join(cors[field])
        want["access-control-max-age"] = str(cors["maxAge"])
    if cors.get("exposeHeaders"):   # (on a preflight too, as Envoy's filter: Gateway API does not say, W0952)
        want["access-control-expose-headers"] = ",".join(cors["exposeHeaders"])
    assert got == want, where


def _modified_path(rule: dict, match: dict, path: str) -> tuple[str, str] | None:
    """(filter, the path it makes of `path`) for a rule with a URLRewrite or RequestRedirect path,
    as Gateway API v1.6.1 specifies HTTPPathModifier: ReplaceFullPath the whole path;
    ReplacePrefixMatch the matched PathPrefix (whole segments, a trailing `/` ignored) replaced,
    `/` or an empty replacement leaving the rest (or `/`), as in the specification's table."""
    for f in rule.get("filters", ()):
        for key in ("urlRewrite", "requestRedirect"):
            modifier = f.get(key, {}).get("path")
            if modifier is None:
                continue
            if modifier["type"] == "ReplaceFullPath":
                return key, modifier["replaceFullPath"]
            rest = path[len(match["path"]["value"].rstrip("/")):]
            replacement = modifier["replacePrefixMatch"].rstrip("/")
            return key, (replacement + rest) or "/"
    return None


def _rule_route(rule: dict, routes) -> str:
    """The route an HTTPRoute rule comes from, by the rule's name: the route's (lower case, `_` as
    `-`), with `-N` (or `-rN`, where another route's name is `NAME-N`) when the route is written as
    one rule per match."""
    names = {r.name.lower().replace("_", "-"): r.name for r in routes}
    name = rule["name"]
    return names[name] if name in names else names[re.sub(r"-r*[0-9]+\Z", "", name)]


@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(policy=gateway_policies())
def test_gateway_profile_policies_validate(policy):
    """The profile's policies compile to HTTPRoutes that validate against the experimental CRD,
    CEL rules included (a few: cel-python takes about 0.3 s per policy)."""
    comp = api.compile([api.Text("generated.mesh", policy.render(policy.dummy_ports()))], shard=False)
    assert not comp.has_errors, [(d.code, d.message) for d in comp.diagnostics]
    emitted = comp.emit("gateway-api", None, Options(channel="experimental"))
    errors = {d.code for d in emitted.diagnostics if d.severity == "error"}
    assume(errors != {"E0957"})   # (the profile's prefix replacement `/x/`, refused as it should be)
    assert not errors, [(d.code, d.message) for d in emitted.diagnostics if d.severity == "error"]
    objects = routes(emitted)
    # (an HTTPRoute per destination, and `client`'s own: its implicit route; a ReferenceGrant where a
    # route sends to s0's twin in another namespace)
    assert emitted.validation.ok and emitted.validation.objects == len(objects)
    assert sum(o["kind"] == "HTTPRoute" for o in objects) == len(policy.services) + 1


def test_a_rule_that_would_need_too_many_matches_is_a_conflict():
    """Keeping a catch-all first over a later rule of 64 prefixes takes 65 matches: refused."""
    catch_all = [{"headers": [{"name": "x", "type": "Exact", "value": "1"}]}]
    prefixes = [{"path": {"type": "PathPrefix", "value": f"/p{i}"}} for i in range(64)]
    planned, conflicts = order.plan([catch_all, prefixes])
    assert len(planned[0]) == order.MAX_MATCHES
    assert [c.reason for c in conflicts] == ["limit"]


# ---- redirects, rewrites and destination header changes (exact)

def test_redirects_rewrites_and_destination_headers_are_filters():
    text = SVC + """routes api {
  route moved {
    match { path prefix "/old" }
    redirect { scheme "https"  host "new.example"  port 8443  prefix "/new"  status 308 }
  }
  route whole {
    match { path exact "/x" }
    redirect { path "/y"  port 80 }
  }
  route seg {
    match { path prefix "/api/v1" }
    split { api.v1 1 request_headers { set "x-v" "1" }  api.v2 1 response_headers { remove "x-r" } }
    rewrite { prefix "/api/v2"  host "api-v2" }
    retry { attempts 2  on [503] }
  }
}
"""
    emitted = emit(text)
    assert not [d for d in emitted.diagnostics if d.code.startswith("E") or d.code in ("W0948", "W0949")]
    moved, whole, seg = routes(emitted)[0]["spec"]["rules"]
    assert "backendRefs" not in moved and "timeouts" not in moved
    assert moved["filters"] == [{"type": "RequestRedirect", "requestRedirect": {
        "scheme": "https", "hostname": "new.example",
        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"},
        "port": 8443, "statusCode": 308}}]
    assert whole["filters"][0]["requestRedirect"]["path"] == {"type": "ReplaceFullPath", "replaceFullPath": "/y"}
    assert seg["filters"] == [{"type": "URLRewrite", "urlRewrite": {
        "hostname": "api-v2", "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/api/v2"}}}]
    one, two = seg["backendRefs"]
    assert one["filters"] == [{"type": "RequestHeaderModifier",
                               "requestHeaderModifier": {"set": [{"name": "x-v", "value": "1"}]}}]
    assert two["filters"] == [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["x-r"]}}]
    from compiler.kubeschema import validate

    report = validate(routes(emitted), channel="experimental")
    assert report.ok and report.objects == 1 and report.rule_evaluations > 0, [str(p) for p in report.problems]


# ---- a prefix replacement in a route of several matches: one rule per match

def test_a_prefix_replacement_is_one_rule_per_match():
    """ReplacePrefixMatch needs a rule of exactly one PathPrefix match: a route matched by two
    methods is two rules, and the matches `order.plan` adds to keep it before a more specific
    later route are rules of their own with the path meshc makes (an Exact path: ReplaceFullPath
    of its replacement; a longer prefix: ReplacePrefixMatch of its replacement). The HTTPRoute
    validates (CEL included), and Gateway API's precedence over it picks, for every request of a
    grid, the route first match picks."""
    text = SVC + """routes api {
  route old {
    match { path prefix "/api/v2/rec"  method [GET, HEAD] }
    to api.v2
    rewrite { prefix "/rec" }
  }
  route pinned {
    match { path exact "/api/v2/rec/x"  header "x-c" exact "1" }
    match { path prefix "/api/v2/rec/y"  method GET }
    to api.v1
  }
}
"""
    emitted = emit(text)
    assert not [d for d in emitted.diagnostics if d.severity == "error"]
    assert emitted.validation.ok and emitted.validation.rule_evaluations > 0
    (obj,) = routes(emitted)
    rules = obj["spec"]["rules"]
    assert [r["name"] for r in rules] == ["old-1", "old-2", "old-3", "old-4", "old-5", "pinned"]
    shown = [(r["matches"][0].get("method"), r["matches"][0]["path"], r["filters"][0]["urlRewrite"]["path"])
             for r in rules[:5]]
    prefix = {"type": "PathPrefix", "value": "/api/v2/rec"}
    assert shown == [
        ("GET", prefix, {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/rec"}),
        ("HEAD", prefix, {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/rec"}),
        ("GET", {"type": "Exact", "value": "/api/v2/rec/x"}, {"type": "ReplaceFullPath", "replaceFullPath": "/rec/x"}),
        ("GET", {"type": "PathPrefix", "value": "/api/v2/rec/y"},
         {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/rec/y"}),
        ("HEAD", {"type": "Exact", "value": "/api/v2/rec/x"}, {"type": "ReplaceFullPath", "replaceFullPath": "/rec/x"})]
    assert all(len(r["matches"]) == 1 and r["backendRefs"][0]["name"] == "api-v2" for r in rules[:5])
    for method in ("GET", "HEAD", "POST"):
        for path in ("/api/v2/rec", "/api/v2/rec/x", "/api/v2/rec/y", "/api/v2/rec/y/z", "/api/v2/recx", "/other"):
            for headers in ({}, {"x-c": "1"}):
                req = {"method": method, "path": path, "headers": headers, "query": {}}
                won = spec_winner(rules, req)
                gateway = None if won is None else won[0]
                old = method in ("GET", "HEAD") and (path == "/api/v2/rec" or path.startswith("/api/v2/rec/"))
                pinned = (path == "/api/v2/rec/x" and headers) or (method == "GET" and path.startswith("/api/v2/rec/y"))
                expected = "old" if old else "pinned" if pinned else None
                got = None if gateway is None else rules[gateway]["name"].split("-")[0]
                assert got == expected, (method, path, headers)


def test_canary_api_v2_is_one_rule_per_method():
    """canary's `api_v2` (a prefix replaced, matched by three methods: OPTIONS for its CORS preflights)
    is one rule per method."""
    with contextlib.chdir(ROOT):
        comp = api.compile(["examples/canary.mesh"])
    program = comp.ir
    (svc,) = [s for s in program.services if any(r.name == "api_v2" for r in s.routes)]
    from compiler.backends.gateway_api.build import GatewayApiTarget

    objects, diags = GatewayApiTarget("experimental").build(program, comp.sources)
    assert not [d for d in diags if d.code == "E0957"]
    (obj,) = [o for o in objects if o.name == svc.name]
    pieces = [r for r in obj.body["spec"]["rules"] if r.get("name", "").startswith("api-v2")]
    assert [r["matches"][0]["method"] for r in pieces] == ["GET", "HEAD", "OPTIONS"]
    assert all(len(r["matches"]) == 1 and r["matches"][0]["path"]["type"] == "PathPrefix" for r in pieces)


# ---- CORS: Gateway API's CORS filter where it says what meshc answers (W0952), E0959 where not

def test_cors_is_written_as_the_cors_filter_in_both_channels():
    """Exact origins, a written max age and named headers become the rule's CORS filter (HTTPCORSFilter,
    in both channels of v1.6.1), first among its filters; the HTTPRoute validates, CEL included, and
    W0952 says what Gateway API leaves to the implementation."""
    text = route('''    to api.v1
    cors { origins [exact "https://app.example", exact "http://localhost:3000"]  methods [GET, PUT]
           headers ["content-type", "x-h0"]  expose ["x-backend"]  max_age 10m  credentials }
    response_headers { set "x-r0" "1" }''')
    for channel in CHANNELS:
        emitted = emit(text, channel)
        assert not [d for d in emitted.diagnostics if d.severity == "error"]
        assert emitted.validation.ok and emitted.validation.rule_evaluations > 0
        (w,) = [d for d in emitted.diagnostics if d.code == "W0952"]
        assert "preflight (200 or 204)" in w.message and w.span.location().endswith(":7:3")
        (rule,) = routes(emitted)[0]["spec"]["rules"]
        assert rule["filters"][0] == {"type": "CORS", "cors": {
            "allowOrigins": ["https://app.example", "http://localhost:3000"], "allowCredentials": True,
            "allowMethods": ["GET", "PUT"], "allowHeaders": ["content-type", "x-h0"],
            "exposeHeaders": ["x-backend"], "maxAge": 600}}
        assert [f["type"] for f in rule["filters"]] == ["CORS", "ResponseHeaderModifier"]


@pytest.mark.parametrize("cors, extra, reason", [
    ('origins [prefix "https://app.example:"]  max_age 10s', "",
     'origin `prefix "https://app.example:"` is not an exact'),
    ('origins [regex "https://[a-z]+\\\\.example"]  max_age 10s', "", "is not an exact origin"),
    ('origins [exact "*"]  max_age 10s', "", "allows every origin"),
    ('origins [exact "https://App.example"]  max_age 10s', "", "lower-case DNS labels"),
    ('origins [exact "https://app.example:443"]  max_age 10s', "", "the scheme's default port"),
    ('origins [exact "https://app.example"]', "", "writes no `max_age`"),
    ('origins [exact "https://app.example"]  headers ["*"]  max_age 10s', "", 'allows `headers ["*"]`'),
    ('origins [exact "https://app.example"]  expose ["*"]  max_age 10s', "", "exposes `*`"),
    ('origins [exact "https://app.example"]  expose ["x' + "a" * 256 + '"]  max_age 10s', "", "longer than 256"),
    ('origins [exact "https://app.example"]  max_age 10s',
     '\n    response_headers { set "access-control-max-age" "1" }', "also changes `access-control-max-age`"),
])
def test_cors_the_filter_cannot_say_is_refused_with_its_reason(cors, extra, reason):
    emitted = emit(route(f"    to api.v1\n    cors {{ {cors} }}{extra}"))
    (d,) = [d for d in emitted.diagnostics if d.code == "E0959"]
    assert reason in d.message and d.message.startswith("route `r`'s `cors` cannot be written"), d.message
    assert "W0952" not in [x.code for x in emitted.diagnostics] and emitted.files == {}


def test_rules_split_per_match_count_toward_the_sixteen():
    """A prefix replacement of 9 methods is 9 rules: with 8 more routes, 17 rules (E0952)."""
    methods = "GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"
    many = "".join(f'  route r{i} {{\n    match {{ path prefix "/p{i}" }}\n    to api.v1\n  }}\n' for i in range(8))
    text = SVC + ("routes api {\n  route old {\n    match { path prefix \"/old\"  method [" + methods + "] }\n"
                  "    to api.v2\n    rewrite { prefix \"/new\" }\n  }\n" + many + "}\n")
    emitted = emit(text)
    (d,) = [d for d in emitted.diagnostics if d.code == "E0952"]
    assert d.message.startswith("`api` takes 17 HTTPRoute rules (one per match of a route that replaces its path "
                                "prefix)") and emitted.files == {}
    last = '  route r7 {\n    match { path prefix "/p7" }\n    to api.v1\n  }\n'
    assert "E0952" not in codes(text.replace(last, ""))


def test_a_validation_problem_of_a_rule_is_located_at_its_route():
    text = ('service api {\n  port 80\n  endpoints ["10.0.0.1:80"]\n}\n\nroutes api {\n'
            '  route first {\n    match { path prefix "/x" }\n    to api\n    retry { attempts 2  on [503] }\n  }\n'
            '  route second {\n    match { path prefix "/y"  query "k" exact "1"  query "k" regex "[0-9]+" }\n'
            '    to api\n    retry { attempts 2  on [503] }\n  }\n}\n')
    (problem,) = [d for d in emit(text).diagnostics if d.code == "E0940"]
    assert "spec.rules[1]" in problem.message
    assert problem.span is not None and problem.span.source.text[problem.span.start:].startswith("route second")


# ---- rule names: unique, whatever the route names (review r6, finding 4)

def test_split_rule_names_do_not_take_another_routes_name():
    """`old` written as two rules (two methods) next to a route `old_1` (`old-1`): the split rules
    take `old-r1`, `old-r2`, every rule keeps a name, and the HTTPRoute validates (the CRD's
    unique-name rule, whose `&&` must absorb the error of a rule without a name, see
    tests/test_kubeschema.py); routes `A` and `a` are `a` and `a-2`."""
    text = SVC + """routes api {
  route old {
    match { path prefix "/a"  method [GET, HEAD] }
    to api.v1
    rewrite { prefix "/n" }
  }
  route old_1 {
    match { path prefix "/c" }
    to api.v2
  }
  route A {
    match { path prefix "/d" }
    to api.v2
  }
  route a {
    to api.v1
  }
}
"""
    emitted = emit(text)
    assert not [d for d in emitted.diagnostics if d.severity == "error"], emitted.diagnostics
    assert emitted.validation.ok and emitted.validation.rule_evaluations > 0
    assert [r.get("name") for r in routes(emitted)[0]["spec"]["rules"]] == ["old-r1", "old-r2", "old-1", "a", "a-2"]


# ---- a prefix replacement ending in `/` (review r6, finding 1)

@pytest.mark.parametrize("change", ['rewrite { prefix "/b/" }', 'redirect { prefix "/b/"  port 80 }'])
def test_a_prefix_replacement_ending_in_a_slash_is_refused(change):
    """Gateway API joins a ReplacePrefixMatch and the rest of the path with one `/` (v1.6.1's table:
    `/foo/bar`, prefix `/foo`, `/xyz/` gives `/xyz/bar`), meshc keeps the rest as it is (`/xyz//bar`,
    W0420): E0957, for a route of one match as for one of several; `/` itself is exact."""
    to = "" if change.startswith("redirect") else "    to api.v1\n"
    for match in ('match { path prefix "/a" }', 'match { path prefix "/a"  method [GET, HEAD] }'):
        emitted = emit(SVC + f"routes api {{\n  route r {{\n    {match}\n{to}    {change}\n  }}\n}}\n")
        (d,) = [d for d in emitted.diagnostics if d.code == "E0957"]
        assert "meshc makes `/a/x` `/b//x`, and Gateway API's ReplacePrefixMatch `/b/x`" in d.message, d.message
        assert emitted.files == {}
        slash = change.replace("/b/", "/")
        fixed = emit(SVC + f"routes api {{\n  route r {{\n    {match}\n{to}    {slash}\n  }}\n}}\n")
        assert not [d for d in fixed.diagnostics if d.severity == "error"]
