"""The Istio target (`meshc compile --target istio`, compiler/backends/istio/): goldens of the
examples, validation of every object against the vendored CRDs (schema and CEL), Istio's defaults,
and one test per construct that Istio cannot carry exactly (docs/kubernetes.istio.md).

`pytest tests/test_istio.py --update-goldens` rewrites tests/golden/istio/.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from compiler import api
from compiler.backends.istio.routes import GO_STATUS_CODES, header_string_match, istio_percent
from compiler.backends.kube.objects import load
from compiler.ir import HeaderMatch
from compiler.kubeschema import validate
from tests.equivalence.policies import S2_ID, TRUST_DOMAIN, policies

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / "tests" / "golden" / "istio"
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.mesh") if not p.stem.endswith("_test"))
DIAGNOSTICS = "diagnostics.txt"


def emit(text: str, tmp_path: Path, name: str = "p.mesh"):
    path = tmp_path / name
    path.write_text(text)
    comp = api.compile([str(path)])
    assert not comp.has_errors, [d.message for d in comp.diagnostics]
    return comp.emit("istio")


def codes(emitted) -> list[str]:
    return [d.code for d in emitted.diagnostics]


def documents(emitted) -> list[dict]:
    return [d for data in emitted.files.values() for d in load(data)]


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in docs if d["kind"] == kind])
    return found[0]


@functools.cache
def example(case: str):
    comp = api.compile([f"examples/{case}.mesh"])
    assert not comp.has_errors
    return comp.emit("istio")


def _diagnostic_lines(emitted) -> bytes:
    return "".join(f"{d.path or (d.span.location() if d.span else '')}: {d.severity}[{d.code}]: {d.message}\n"
                   for d in emitted.diagnostics).encode()


@pytest.mark.parametrize("case", EXAMPLES)
def test_istio_golden(case, update_goldens, monkeypatch):
    monkeypatch.chdir(ROOT)
    emitted = example(case)
    files = dict(emitted.files)
    files[DIAGNOSTICS] = _diagnostic_lines(emitted)
    case_dir = GOLDEN_DIR / case
    on_disk = {str(p.relative_to(case_dir)) for p in case_dir.rglob("*") if p.is_file()} if case_dir.exists() else set()
    if update_goldens:
        for rel, data in files.items():
            path = case_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
        for rel in on_disk - set(files):
            (case_dir / rel).unlink()
        return
    assert on_disk == set(files), "golden files differ: run pytest --update-goldens"
    for rel, data in files.items():
        assert (case_dir / rel).read_bytes() == data, f"{case}/{rel} differs: run pytest --update-goldens"


# Every example's objects validate against the CRDs with CEL: tests/test_examples_targets.py.


def test_the_output_is_one_file_per_service_in_its_namespace(monkeypatch):
    monkeypatch.chdir(ROOT)
    files = example("shop").files
    assert "shop/payments.yaml" in files and "logistics/shipping.yaml" in files
    for path, data in files.items():
        ns, name = path.split("/")
        for doc in load(data):
            assert doc["metadata"]["namespace"] == ns
            assert re.fullmatch(r"examples/shop\.mesh:\d+:\d+", doc["metadata"]["annotations"]["meshc.dev/source"])
            assert doc["metadata"]["name"].startswith(name.removesuffix(".yaml"))


# ---- generated policies ---------------------------------------------------------------------------

def _istio_ready(text: str) -> str:
    """A generated policy with s2's explicit identity in Istio's form (its legacy one is E0908);
    for every other policy (by the parity of its length), the destinations' subsets label-selected
    (`labels { version "a" }`), combined with whatever else the policy has."""
    text = text.replace(S2_ID, f"spiffe://{TRUST_DOMAIN}/ns/default/sa/s2")
    if len(text) % 2:
        text = re.sub(r'subset (\w+) \{ endpoints \[[^\]]*\] \}', r'subset \1 { labels { version "\1" } }', text)
    return text


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(policies())
def test_generated_policies_give_deterministic_output_that_validates(tmp_path_factory, policy):
    tmp = tmp_path_factory.mktemp("gen")
    path = tmp / "p.mesh"
    # the sidecar's ports as Istio's (15006, 15001, 15000), the application on the service's port
    path.write_text(_istio_ready(policy.render({**policy.dummy_ports(), "APP": 8000})))
    first = api.compile([str(path)])
    assert not first.has_errors, [d.message for d in first.diagnostics]
    a, b = first.emit("istio"), api.compile([str(path)]).emit("istio")
    assert a.files == b.files and [str(d) for d in a.diagnostics] == [str(d) for d in b.diagnostics]
    if a.has_errors:
        errors = {d.code for d in a.diagnostics if d.severity == "error"}
        assert a.files == {} and errors <= {"E0902", "E0917", "E0903", "E0904", "E0905", "E0906", "E0907", "E0909",
                                            "E0910", "E0911", "E0912", "E0913"}
        return
    docs = documents(a)
    report = validate(docs)
    assert report.ok, [str(p) for p in report.problems]
    for rule in (d for d in docs if d["kind"] == "DestinationRule"):
        for sub in rule["spec"]["subsets"]:
            assert sub["labels"] in ({"version": sub["name"]}, {"meshc.dev/subset": sub["name"]})


# ---- Istio's defaults -------------------------------------------------------------------------------

BASE = """\
service api {
  port 8080
  endpoints ["10.0.0.1:8080"]
  subset v2 { endpoints ["10.0.0.2:8080"] }
}
"""


def _routes(body: str) -> str:
    return BASE + "routes api {\n" + body + "\n}\n"


def test_a_route_without_retries_says_attempts_0_and_timeout_none_omits_the_field(tmp_path):
    out = emit(_routes("""
  route plain { match { path prefix "/a" } to api.default }
  route no_retry { match { path prefix "/b" } to api.default  retry none  timeout none }
  route retried { to api.v2  retry { attempts 3  on [5xx, 503]  per_try_timeout 200ms } }"""), tmp_path)
    http = find(documents(out), "VirtualService")["spec"]["http"]
    assert [h["name"] for h in http] == ["plain", "no_retry", "retried"]
    assert http[0]["retries"] == {"attempts": 0} and http[0]["timeout"] == "15s"
    assert http[1]["retries"] == {"attempts": 0} and "timeout" not in http[1]
    assert http[2]["retries"] == {"attempts": 3, "retryOn": "5xx,503", "perTryTimeout": "0.200s",
                                  "backoff": "0.025s", "retryIgnorePreviousHosts": False}
    assert not out.diagnostics


def test_matches_expand_into_the_requests_istio_ors(tmp_path):
    out = emit(_routes("""
  route r {
    match { path prefix "/shop"  method [GET, POST]  header "x-a" suffix "z"  not header "x-b" exact "1"
            query "q" present }
    to api.v2
  }"""), tmp_path)
    (route, ) = find(documents(out), "VirtualService")["spec"]["http"]
    common = {"headers": {"x-a": {"regex": ".*z"}, "x-b": {}}, "withoutHeaders": {"x-b": {"exact": "1"}},
              "queryParams": {"q": {}}}
    assert route["match"] == [{**common, "uri": uri, "method": {"exact": m}}
                              for uri in ({"exact": "/shop"}, {"prefix": "/shop/"}) for m in ("GET", "POST")]


@pytest.mark.parametrize("kind,value,yes,no", [
    ("exact", "Ab-1.x", ["ab-1.x", "AB-1.X"], ["ab-1yx", "ab-1.xx", "äb-1.x"]),
    ("prefix", "tok", ["TOKEN", "tok"], ["to", "xtok"]),
    ("suffix", ".JS", ["a.js", ".Js"], ["a.jsx", "ajs"]),
])
def test_case_insensitive_header_conditions_become_ascii_folding_regexes(kind, value, yes, no):
    match = header_string_match(HeaderMatch("x", kind, value, False, True))
    pattern = re.compile(match["regex"])
    assert all(pattern.fullmatch(v) for v in yes) and not any(pattern.fullmatch(v) for v in no)


@pytest.mark.parametrize("p", [0.29, 5.0, 0.0001, 33.3333, 99.9999, 12.5, 0.57, 100.0])
def test_percentages_survive_istios_truncation(p):
    written = istio_percent(p)
    assert int(written * 10000) == round(p * 10000)      # route.go: uint32(value * 10000) millionths
    assert abs(written - p) < 1e-6


def test_authorization_deny_then_allow_and_the_explicit_default(tmp_path):
    out = emit(BASE + """
service web {
  port 80
  namespace "web"
  endpoints ["10.0.1.1:80"]
}
authorization api {
  default deny
  deny admin { path prefix "/admin" }
  allow reads { from namespace "web"  path prefix "/api"  method [GET]  header "x-t" absent }
  allow tokens { header "authorization" prefix "Bearer "  not header "x-debug" exact "1" }
}
authorization web {
  default deny
}
routes api { route r { to api.v2 } }
""", tmp_path)
    docs = documents(out)
    deny, allow = find(docs, "AuthorizationPolicy", "api-deny"), find(docs, "AuthorizationPolicy", "api-allow")
    assert deny["spec"]["action"] == "DENY"
    assert deny["spec"]["rules"] == [{"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}]
    assert allow["spec"]["rules"] == [
        {"from": [{"source": {"principals": ["cluster.local/ns/web/*"]}}],
         "to": [{"operation": {"paths": ["/api", "/api/*"], "methods": ["GET"]}}],
         "when": [{"key": "request.headers[x-t]", "notValues": ["*"]}]},
        {"when": [{"key": "request.headers[authorization]", "values": ["Bearer *"]},
                  {"key": "request.headers[x-debug]", "values": ["*"], "notValues": ["1"]}]}]
    # `default deny` without allow rules: the ALLOW policy without rules, which admits nothing
    assert find(docs, "AuthorizationPolicy", "web-allow")["spec"] == {"action": "ALLOW",
                                                                       "selector": {"matchLabels": {"app": "web"}}}
    assert validate(docs).ok


def test_default_allow_writes_no_allow_policy(tmp_path):
    docs = documents(emit(BASE + 'authorization api {\n  default allow\n  allow x { path exact "/x" }\n}\n'
                          'routes api { route r { to api.v2 } }\n', tmp_path))
    assert [d for d in docs if d["kind"] == "AuthorizationPolicy"] == []


def test_sidecar_egress_is_the_scope_and_mtls_modes_are_peer_authentication(tmp_path):
    out = emit("""
mesh { mtls strict }
service a { port 80  endpoints ["10.0.0.1:80"] }
service b { port 80  endpoints ["10.0.0.2:80"]  mtls permissive }
service c { port 80  endpoints ["10.0.0.3:80"] }
authorization c { default deny  allow from_b { from service b } }
""", tmp_path)
    docs = documents(out)
    egress = {d["metadata"]["name"]: d["spec"]["egress"][0]["hosts"] for d in docs if d["kind"] == "Sidecar"}
    assert egress["a"] == ["default/a.default.svc.cluster.local", "default/b.default.svc.cluster.local"]
    assert egress["b"] == [f"default/{s}.default.svc.cluster.local" for s in "abc"]
    modes = {d["metadata"]["name"]: d["spec"]["mtls"]["mode"] for d in docs if d["kind"] == "PeerAuthentication"}
    assert modes == {"a": "STRICT", "b": "PERMISSIVE", "c": "STRICT"}
    assert find(docs, "DestinationRule", "a")["spec"]["trafficPolicy"]["tls"] == {"mode": "ISTIO_MUTUAL"}


def test_outlier_detection_keeps_envoys_panic_threshold_and_merge_window(tmp_path):
    out = emit(BASE.replace('  subset v2', '  outlier { consecutive_5xx 3 }\n  subset v2')
               + "routes api { route r { to api.v2 } }\n", tmp_path)
    docs = documents(out)
    od = find(docs, "DestinationRule")["spec"]["trafficPolicy"]["outlierDetection"]
    assert od["consecutive5xxErrors"] == 3 and od["minHealthPercent"] == 50
    patches = find(docs, "EnvoyFilter")["spec"]["configPatches"]
    assert {"applyTo": "CLUSTER", "match": {"context": "SIDECAR_OUTBOUND",
                                             "cluster": {"service": "api.default.svc.cluster.local"}},
            "patch": {"operation": "MERGE", "value": {"common_lb_config": {"update_merge_window": "0s"}}}} in patches


def test_go_status_codes_are_what_net_http_names():
    assert {200, 418, 429, 503, 511} <= GO_STATUS_CODES and not {306, 419, 420, 509, 599} & GO_STATUS_CODES


# ---- one test per construct Istio cannot carry exactly (docs/kubernetes.istio.md) ----------------

NOT_EXACT = {
    "W0901": _routes('route r { split { api.default 1  api.v2 3 } by header "x-k" }'),
    "W0902": _routes("route r { to api.v2  retry { attempts 2  backoff 10ms max 50ms } }"),
    "W0903": _routes("route r { split { api.default 4294967294  api.v2 1 } }"),
    "W0904": BASE.replace("  subset v2", "  outlier { max_ejected 12.5% }\n  subset v2")
    + "routes api { route r { to api.v2 } }\n",
    "W0905": 'mesh { tracing { otlp "http://otel:4318" } }\n' + _routes("route r { to api.v2 }"),
    "W0906": BASE + """
service c { port 80  endpoints ["10.0.0.3:80"] }
service d { port 80  endpoints ["10.0.0.4:80"] }
authorization d { default deny }
routes c { route r { split { c.default 1  d.default 1 } } }
routes api { route r { to api.v2 } }
""",
    "W0907": BASE.replace("  subset v2", "  sidecar { inbound 16000 }\n  subset v2")
    + "routes api { route r { to api.v2 } }\n",
    "W0908": _routes('route r { to api.v2  request_headers { set "x-empty" "" } }'),
    "E0902": _routes('route r { match { header "x" prefix "a"  header "x" suffix "b" } to api.v2 }'),
    "E0917": _routes('route r { match { path prefix "/y"  query "k" exact "1"  query "k" regex "[0-9]+" } '
                     'to api.v2 }'),
    "E0903": _routes('route r { to api.v2  request_headers { add "x" "1"  add "x" "2" } }'),
    "E0904": _routes("route r { to api.v2  retry { on [599] } }"),
    "E0905": BASE + 'authorization api { default allow  deny r { path regex "/a/[0-9]+" } }\n'
    + "routes api { route r { to api.v2 } }\n",
    "E0906": BASE + 'authorization api { default allow  deny r { header "x" exact "Ab" ignore_case } }\n'
    + "routes api { route r { to api.v2 } }\n",
    "E0907": BASE + 'authorization api { default allow  deny r { path exact "/a*b" } }\n'
    + "routes api { route r { to api.v2 } }\n",
    "E0908": BASE.replace("  port 8080", '  port 8080\n  identity "spiffe://cluster.local/legacy/api"')
    + "routes api { route r { to api.v2 } }\n",
    "E0910": _routes('route r { match { path prefix "/old" }  redirect { prefix "/new" } }  route s { to api.v2 }'),
    "E0911": _routes('route r { match { path exact "/old" }  redirect { path "/new"  strip_query } }'
                     '  route s { to api.v2 }'),
    "E0912": _routes('route r { split { api.default 0  api.v2 1 request_headers { add "x" "2" } }'
                     '  request_headers { add "x" "1" } }'),
    "E0913": BASE.replace('  endpoints ["10.0.0.1:8080"]\n', '  endpoints ["10.0.0.1:8080"]\n  hosts ["api.*"]\n')
    + "routes api { route r { to api.v2 } }\n",
    "W0909": BASE.replace('  subset v2 { endpoints ["10.0.0.2:8080"] }',
                          '  subset v2 { endpoints ["10.0.0.2:8080"]  sidecar { escaped_slashes decode } }')
    + "routes api { route r { to api.v2 } }\n",
}


@pytest.mark.parametrize("code", sorted(NOT_EXACT))
def test_each_construct_istio_cannot_carry_exactly_has_its_diagnostic(code, tmp_path):
    out = emit(NOT_EXACT[code], tmp_path)
    assert codes(out) == [code], [str(d.message) for d in out.diagnostics]
    (diag,) = out.diagnostics
    assert diag.span is not None and diag.span.path.endswith("p.mesh")   # located at the policy
    if code.startswith("E"):
        assert out.has_errors and out.files == {}
    else:
        assert out.files and validate(documents(out)).ok


def test_every_istio_code_has_a_test_or_an_example():
    from compiler.core.codes import CODES

    istio = {c for c in CODES if re.fullmatch(r"[EW]09[0-3]\d", c)} - {"E0901"}
    assert istio - set(NOT_EXACT) <= {"E0909"}   # E0909: label-selected subsets (tests/test_label_subsets.py)


def test_the_stdout_stream_is_every_file_in_order(tmp_path, monkeypatch):
    from tests.test_explain import run_cli

    monkeypatch.chdir(ROOT)
    code, out, _ = run_cli(["compile", "--target", "istio", "examples/resilience.mesh"])
    assert code == 0
    assert out.encode() == b"".join(example("resilience").files.values())
    assert len(list(yaml.safe_load_all(out))) == len(documents(example("resilience")))


def test_presence_gives_way_to_a_string_test_of_the_same_header(tmp_path):
    out = emit(_routes('route r { match { header "x" present  header "x" prefix "a"  not header "y" exact "1"'
                       '  header "y" present } to api.v2 }'), tmp_path)
    (route,) = find(documents(out), "VirtualService")["spec"]["http"]
    assert route["match"] == [{"headers": {"x": {"prefix": "a"}, "y": {}}, "withoutHeaders": {"y": {"exact": "1"}}}]
    assert not out.diagnostics


def test_header_values_are_literal_for_envoy(tmp_path):
    out = emit(_routes('route r { to api.v2  request_headers { set "x-a" "100%"  add "x-b" "%HOSTNAME%" }'
                       '  response_headers { remove "server-timing" } }'), tmp_path)
    (route,) = find(documents(out), "VirtualService")["spec"]["http"]
    assert route["headers"] == {"request": {"set": {"x-a": "100%%"}, "add": {"x-b": "%%HOSTNAME%%"}},
                                "response": {"remove": ["server-timing"]}}
    assert not out.diagnostics


# ---- redirects, rewrites, direct responses, destination headers, exclusions (exact) --------------

def test_redirects_direct_responses_and_rewrites_are_istio_fields(tmp_path):
    out = emit(_routes("""
  route moved { match { path exact "/old" }  redirect { scheme "https"  host "new.example"  port 8443
                                                         path "/new"  status 308 } }
  route gone { match { path prefix "/gone" }  respond 410 "gone"  response_headers { set "cache-control" "no" } }
  route seg { match { path prefix "/api/v1" }  to api.v2  rewrite { prefix "/api/v2"  host "api-v2" } }
  route top { match { path prefix "/strip" }  to api.v2  rewrite { prefix "/" } }
  route whole { match { path exact "/x\\\\y" }  to api.v2  rewrite { path "/a\\\\b" } }
  route re { match { path regex "/r/[0-9]+" }  to api.v2  rewrite { regex "^/r/([0-9]+)$" "/n/\\\\1" } }"""),
               tmp_path)
    assert not out.has_errors, [d.message for d in out.diagnostics]
    moved, gone, seg, top, whole, re_ = find(documents(out), "VirtualService")["spec"]["http"]
    assert moved["redirect"] == {"uri": "/new", "authority": "new.example", "scheme": "https", "port": 8443,
                                 "redirectCode": 308}
    assert "route" not in moved and "retries" not in moved and "timeout" not in moved
    assert gone["directResponse"] == {"status": 410, "body": {"string": "gone"}}
    assert gone["headers"] == {"response": {"set": {"cache-control": "no"}}}
    # a segment prefix is `/api/v1` or `/api/v1/...`: one anchored regex replaces it in both
    assert seg["rewrite"] == {"uriRegexRewrite": {"match": "^/api/v1", "rewrite": "/api/v2"}, "authority": "api-v2"}
    assert top["rewrite"] == {"uriRegexRewrite": {"match": "^/strip/?", "rewrite": "/"}}
    assert whole["rewrite"] == {"uriRegexRewrite": {"match": "^.*$", "rewrite": "/a\\\\b"}}
    assert re_["rewrite"] == {"uriRegexRewrite": {"match": "^/r/([0-9]+)$", "rewrite": "/n/\\1"}}
    assert validate(documents(out)).ok


def test_a_destination_s_header_changes_are_its_own_headers(tmp_path):
    out = emit(_routes('route r { split { api.default 3 request_headers { set "x-v" "1" }  api.v2 1 '
                       'response_headers { remove "x-r" } }  request_headers { add "x-route" "r" } }'), tmp_path)
    (route,) = find(documents(out), "VirtualService")["spec"]["http"]
    one, two = route["route"]
    assert one["headers"] == {"request": {"set": {"x-v": "1"}}} and one["weight"] == 3
    assert two["headers"] == {"response": {"remove": ["x-r"]}}
    assert route["headers"] == {"request": {"add": {"x-route": "r"}}}
    assert not out.diagnostics and validate(documents(out)).ok


def test_not_path_and_not_method_are_not_paths_and_not_methods(tmp_path):
    out = emit(BASE + 'authorization api { default deny  allow r { not path prefix "/admin"  '
                      'not path exact "/x"  not method [DELETE, PUT] } }\nroutes api { route r { to api.v2 } }\n',
               tmp_path)
    (allow,) = [d for d in documents(out) if d["kind"] == "AuthorizationPolicy"]
    (rule,) = allow["spec"]["rules"]
    assert rule["to"] == [{"operation": {"notPaths": ["/admin", "/admin/*", "/x"], "notMethods": ["DELETE", "PUT"]}}]
    assert not out.has_errors and validate(documents(out)).ok


@pytest.mark.parametrize("hosts", ['"*"', '"backend"', '"api.example.com:8080"'])
def test_hosts_istio_cannot_write_are_e0913(hosts, tmp_path):
    out = emit(BASE.replace('  endpoints ["10.0.0.1:8080"]\n', f'  endpoints ["10.0.0.1:8080"]\n  hosts [{hosts}]\n')
               + "routes api { route r { to api.v2 } }\n", tmp_path)
    assert codes(out) == ["E0913"], [str(d.message) for d in out.diagnostics]


def test_written_hosts_are_the_virtual_services_and_the_sidecars(tmp_path):
    out = emit(BASE.replace('  endpoints ["10.0.0.1:8080"]\n',
                            '  endpoints ["10.0.0.1:8080"]\n  hosts ["API.example.com", "*.api.example.com"]\n')
               + "routes api { route r { to api.v2 } }\nservice web { port 80  endpoints [\"10.0.0.3:80\"] }\n",
               tmp_path)
    assert not out.diagnostics, [str(d.message) for d in out.diagnostics]
    docs = documents(out)
    vs = next(d for d in docs if d["kind"] == "VirtualService" and d["metadata"]["name"] == "api")
    assert vs["spec"]["hosts"] == ["api.default.svc.cluster.local", "api.example.com", "*.api.example.com"]
    sidecar = next(d for d in docs if d["kind"] == "Sidecar" and d["metadata"]["name"] == "web")
    assert {"default/api.example.com", "default/*.api.example.com"} <= set(sidecar["spec"]["egress"][0]["hosts"])
    assert validate(docs).ok


def test_a_caller_of_a_name_in_several_namespaces_is_its_app_label_in_its_namespace(tmp_path):
    """`caller staging/web`: Istio's sourceLabels carry the short name (`/` is no label value) and
    sourceNamespace the caller's namespace, as the Sidecar's selector `app: web` does; endpoint
    labels of a service in several namespaces carry its short name too."""
    text = "mesh { mtls strict }\n" + "".join(
        f'service {name} {{ port 9000  namespace "{ns}"  endpoints ["10.0.{i}.1:9000"] }}\n'
        for i, (name, ns) in enumerate([("reviews", "prod"), ("reviews", "staging"), ("web", "prod"),
                                        ("web", "staging")])) + """
routes prod/reviews {
  route fromstag { match { caller staging/web } to reviews }
  route fromweb { match { caller web  path prefix "/w" } to reviews }
  route rest { to reviews }
}
"""
    out = emit(text, tmp_path)
    docs = {(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]): d
            for data in out.files.values() for d in load(data)}
    http = docs[("VirtualService", "prod", "reviews")]["spec"]["http"]
    sources = [(m.get("sourceLabels"), m.get("sourceNamespace")) for r in http for m in r.get("match", [])]
    assert ({"app": "web"}, "staging") in sources and ({"app": "web"}, "prod") in sources
    for (kind, ns, _), doc in docs.items():
        if kind == "ServiceEntry":
            for ep in doc["spec"]["endpoints"]:
                assert "/" not in ep["labels"]["app"]
        if kind == "Sidecar" and ns == "staging":
            assert "/" not in doc["spec"]["workloadSelector"]["labels"]["app"]
    assert not [d for d in out.diagnostics if d.severity == "error"]
