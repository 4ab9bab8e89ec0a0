"""`meshc trace`: goldens of its human and JSON output on the shipped examples, the same answer as
two live native sidecars, the explanation's facts against the decision, bad input.

- Goldens (tests/golden/trace/NAME.txt and NAME.json, `pytest --update-goldens` rewrites them): a
  denial by the default and by a deny rule, an allowed request with a retry policy and a retry
  budget, a keyed split, a random split and a mirror with a seed, a fault abort with a seed and
  an unseeded fault, an unknown Host and a request no route takes (404), a normalised path, a
  refused connection from outside the mesh and an outsider with an identity.
- Live: a two-service policy (plaintext) runs in two real native proxies, the caller's and the
  destination's; every traced request is sent to the caller's outbound listener and the answer
  (a local reply's status and body, or the request the destination's application received) is
  the one the trace gave.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compiler import api
from compiler.cli import main
from compiler.cli.trace_run import RESULT_KEYS, Request, TraceInputError, parse_request, run
from tests.envoy_support import free_port
from tests.proxy_backend import Backend
from tests.proxy_harness import Response, start_proxy, write_config

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "trace"

# name -> the arguments after `meshc trace`
CASES: dict[str, list[str]] = {
    "denied_by_default": ["examples/zero-trust.mesh", "--from", "frontend", "GET http://payments/api/charges/42"],
    "allowed_with_retries": ["examples/zero-trust.mesh", "--from", "checkout", "GET http://payments/api/charges/42"],
    "denied_by_rule_after_normalisation": ["examples/envoy-native/legacy-billing.mesh", "--from", "checkout",
                                           "GET http://billing/api/x/..//ADMIN/%61udit?full=1"],
    "split_by_key": ["examples/canary.mesh", "--from", "frontend", "GET http://recommendations/recommendations/7",
                     "-H", "x-user-bucket: 93"],
    "split_random_seeded": ["examples/canary.mesh", "--from", "frontend",
                            "GET http://recommendations/recommendations/7", "--seed", "4"],
    "mirror_seeded": ["examples/canary.mesh", "--from", "frontend", "GET http://recommendations/x",
                      "-H", "x-canary: never", "--seed", "1"],
    "fault_abort_seeded": ["examples/envoy-native/game-day.mesh", "--from", "ledger",
                           "GET http://orders-gameday/orders/12", "-H", "x-chaos: on", "--seed", "15"],
    "fault_unseeded": ["examples/envoy-native/game-day.mesh", "--from", "ledger", "GET http://orders-gameday/orders/12",
                       "-H", "x-chaos: on"],
    "unknown_host": ["examples/zero-trust.mesh", "--from", "frontend", "GET http://nowhere.example/x"],
    "no_route": ["examples/zero-trust.mesh", "--from", "checkout", "DELETE http://inventory/stock/1"],
    "outside_refused": ["examples/zero-trust.mesh", "GET http://payments/api/admin"],
    "outside_with_identity": ["examples/zero-trust.mesh", "--identity", "spiffe://shop.local/ns/ops/sa/admin",
                              "GET http://frontend/admin/users"],
    "identity_none": ["examples/zero-trust.mesh", "--from", "frontend", "--identity", "none",
                      "GET http://catalog/products/1"],
}


def meshc(capsys, *args: str) -> tuple[int, str, str]:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "internal error" not in err, err
    return code, out, err


def check_golden(path: Path, actual: str, update: bool) -> None:
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"missing golden file {path.relative_to(ROOT)}: run `pytest --update-goldens`"
    assert actual == path.read_text(encoding="utf-8"), \
        f"{path.relative_to(ROOT)} differs (run `pytest --update-goldens` and review the diff)"


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_human_and_json(name, capsys, update_goldens):
    code, human, err = meshc(capsys, "trace", *CASES[name])
    assert code == 0 and err == "", err
    check_golden(GOLDEN / f"{name}.txt", human, update_goldens)
    code, text, err = meshc(capsys, "trace", *CASES[name], "--output-format", "json")
    assert code == 0 and err == "", err
    check_golden(GOLDEN / f"{name}.json", text, update_goldens)
    data = json.loads(text)
    assert data["schema"] == 1 and data["hops"]
    # the human output ends with the same answer the JSON gives
    result = data["result"]
    assert tuple(result) == RESULT_KEYS   # every key, always: a stable shape for tools
    if result.get("status"):
        assert f"result: {result['status']} " in human
    elif result.get("forwarded"):
        assert "result: forwarded to" in human


def test_no_golden_is_left_without_a_case():
    names = {p.stem for p in GOLDEN.iterdir()}
    assert names == set(CASES), names ^ set(CASES)


# ---- the explanation against the decision ------------------------------------------------------------

def traced(files: list[str], text: str, headers=(), caller=None, identity=None, seed=None) -> dict:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        comp = api.compile(files)
    finally:
        os.chdir(cwd)
    assert not comp.has_errors
    return run(comp, parse_request(text, list(headers)), caller, identity, seed).data()


def steps(hop: dict, what: str) -> list[dict]:
    return [s for s in hop["steps"] if s["what"] == what]


def test_every_route_is_listed_in_order_and_the_first_failing_condition_named():
    data = traced(["examples/zero-trust.mesh"], "POST http://payments/api/refunds/9", caller="checkout")
    routes = steps(data["hops"][0], "route")
    assert [(s["outcome"], s["detail"].split(":")[0]) for s in routes] == [
        ("matched", "`refunds`"), ("not tried", "`charges`"), ("not tried", "`status`")]
    data = traced(["examples/zero-trust.mesh"], "GET http://payments/api/refunds/9", caller="checkout")
    routes = steps(data["hops"][0], "route")
    assert routes[0]["detail"] == "`refunds`: method GET is not one of POST"
    assert routes[-1] == {"what": "route", "outcome": "matched", "detail": "`status`", "data": None}


def test_every_authorization_rule_is_evaluated_and_the_deciding_one_named():
    data = traced(["examples/envoy-native/legacy-billing.mesh"], "GET http://billing/api/Admin/x", caller="checkout")
    authz = steps(data["hops"][1], "authz")
    rules = [s["data"] for s in authz[:-1]]
    assert [r["rule"] for r in rules] == ["admin", "checkout", "finance_reads"]
    # `checkout` matches too, but a deny rule is evaluated first and decides
    assert [r["rule"] for r in rules if r["matched"]] == ["admin", "checkout"]
    assert authz[-1]["data"]["rule"] == "admin" and authz[-1]["data"]["allowed"] is False
    assert data["result"]["status"] == 403 and data["result"]["rule"] == "admin"


def test_split_arithmetic_is_the_key_mod_the_total():
    for bucket, subset in ((0, "v1"), (89, "v1"), (90, "v2"), (199, "v2"), (290, "v2"), (389, "v1")):
        data = traced(["examples/canary.mesh"], "GET http://recommendations/recommendations/1",
                      headers=[f"x-user-bucket: {bucket}"], caller="frontend")
        split = steps(data["hops"][0], "split")[0]
        assert split["data"]["keyed"] and split["data"]["value"] == bucket
        assert split["data"]["total"] == 100 and split["data"]["bucket"] == bucket % 100
        assert split["outcome"] == subset
        assert data["hops"][0]["forward"]["cluster"] == f"outbound|{subset}|recommendations"
    # a value the key header cannot be read as: the random draw decides
    data = traced(["examples/canary.mesh"], "GET http://recommendations/recommendations/1",
                  headers=["x-user-bucket: -3"], caller="frontend", seed=4)
    split = steps(data["hops"][0], "split")[0]["data"]
    assert not split["keyed"] and split["value"] == next(d["value"] for d in data["draws"]["made"]
                                                         if d["draw"] == "split")


def test_seeded_fault_draws_decide_as_the_percentages_say():
    outcomes = set()
    for seed in range(40):
        data = traced(["examples/envoy-native/game-day.mesh"], "GET http://orders-gameday/orders/1",
                      headers=["x-chaos: on"], caller="ledger", seed=seed)
        faults = {s["data"]["part"]: s["data"] for s in steps(data["hops"][0], "fault")}
        assert faults["delay"]["applied"] == (faults["delay"]["draw"] * 100 < 50)
        assert faults["abort"]["applied"] == (faults["abort"]["draw"] * 100 < 10)
        assert (data["result"].get("status") == 503) == faults["abort"]["applied"]
        outcomes.add((faults["delay"]["applied"], faults["abort"]["applied"]))
    assert len(outcomes) >= 3   # forty seeds reach delays, aborts and neither


def test_path_normalisation_says_why_it_changed():
    data = traced(["examples/zero-trust.mesh"], "GET http://payments/api//x/./../%63harges\\1", caller="checkout")
    norm = steps(data["hops"][0], "normalize")[0]["data"]
    assert norm["path"] == "/api/charges/1" and norm["changed"]
    said = " ".join(s["step"] for s in norm["steps"])
    assert "segments removed" in said and "unreserved" in said and "merged" in said and "`\\` read as `/`" in said
    assert data["hops"][0]["forward"]["request"]["target"] == "/api/charges/1"


# ---- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "code", "message"), [
    (["--from", "frontnd", "GET http://payments/api"], 1, "did you mean `frontend`"),
    (["--from", "frontend", "GET payments/api"], 1, "is not a URL"),
    (["--from", "frontend", "GET ftp://payments/api"], 1, "scheme must be http or https"),
    (["--from", "frontend", "G(T http://payments/api"], 1, "is not an HTTP method"),
    (["--from", "frontend", "GET http://payments/api", "-H", "no colon"], 1, "a header is 'name: value'"),
    (["--from", "frontend", "GET http://payments/api", "-H", "bad name: x"], 1, "is not a header name"),
    (["--from", "frontend", "GET /api"], 1, "name the host"),
    (["--from", "frontend", "GET http://payments/api", "--identity", "frontend"], 1, "a SPIFFE ID"),
    (["--from", "frontend", "GET http://payments/api", "-H", "x-a: \u20ac"], 1, "latin-1"),
    (["--from", "frontend", "GET http://\u20acpayments/api"], 1, "outside latin-1"),
    (["GET http://frontend/", "--identity", "spiffe://shop.local/\u20ac"], 1, "ASCII"),
    (["GET http://frontend/", "--identity", "spiffe://shop.local/a b"], 1, "ASCII"),
    (["--from", "frontend"], 2, "no request"),
    (["--from", "frontend", "GET http://a/", "GET http://b/"], 2, "more than one request"),
    (["--from", "frontend", "GET http://payments/api", "--seed", "x"], 2, "invalid int value"),
    (["--from", "frontend", "GET http://payments/api", "--bogus"], 2, "unrecognized arguments: --bogus"),
])
def test_bad_input_is_a_clear_message(capsys, args, code, message):
    got, out, err = meshc(capsys, "trace", "examples/zero-trust.mesh", *args)
    assert got == code and out == "" and message in err, err


def test_a_program_with_errors_is_reported_and_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.mesh"
    bad.write_text("service a {\n  port 80\n  endpoints [\"127.0.0.1:1\"]\n}\nroutes b { route r { to a } }\n")
    code, _, err = meshc(capsys, "trace", str(bad), "--from", "a", "GET http://a/")
    assert code == 1 and f"{bad}:5:" in err


def test_a_path_target_takes_its_host_from_a_header_and_files_may_follow_the_request(capsys):
    code, out, _ = meshc(capsys, "trace", "--from", "checkout", "GET /api/charges/1", "-H", "Host: payments",
                         "examples/zero-trust.mesh", "--format", "json")
    assert code == 0
    assert json.loads(out)["result"]["forwarded"] is True
    request = parse_request("GET /x?y", ["host: h", "a: b"])
    assert (request.host, request.target, request.headers) == ("h", "/x?y", [("a", "b")])
    with pytest.raises(TraceInputError):
        parse_request("GET http://h/x", ["host: other"])
    assert isinstance(parse_request("GET http://h", []), Request) and parse_request("GET http://h", []).target == "/"


def test_the_whole_command_runs_as_a_process():
    env = {k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-m", "compiler", "trace", "examples/zero-trust.mesh", "--from", "frontend",
                        "GET http://payments/api/charges/42"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout == (GOLDEN / "denied_by_default.txt").read_text(encoding="utf-8")


# ---- against two live native sidecars -----------------------------------------------------------------

LIVE = """
mesh { mtls disable }

service web {
  port @WEB_APP@
  endpoints ["127.0.0.1:@WEB_IN@"]
  sidecar { inbound @WEB_IN@  outbound @WEB_OUT@  admin @WEB_ADMIN@ }
}

service api {
  port @API_APP@
  subset v1 { endpoints ["127.0.0.1:@API_IN@"] }
  subset v2 { endpoints ["127.0.0.1:@API_IN@"] }
  sidecar { inbound @API_IN@  outbound @API_OUT@  admin @API_ADMIN@ }
}

routes api {
  route broken {
    match { path prefix "/broken" }
    to api.v1
    fault { abort 418 100% }
  }
  route split {
    match { path prefix "/items"  method GET }
    split { api.v1 30  api.v2 70 } by header "x-bucket"
    request_headers { set "x-route" "split" }
  }
  route writes {
    match { path prefix "/items"  method [POST, PUT] }
    to api.v1
    timeout 2s
  }
}

authorization api {
  default deny
  deny secret { path prefix "/items/secret" }
  allow reads { method GET  header "x-team" present }
  allow writes { method [POST, PUT]  path prefix "/items/" }
}
"""

LIVE_REQUESTS = [
    ("GET http://api/items/1", ["x-bucket: 10", "x-team: a"]),
    ("GET http://api/items/1", ["x-bucket: 95", "x-team: a"]),
    ("GET http://api/items/1", ["x-bucket: 95"]),                    # no x-team: denied by the default
    ("GET http://api/items/secret/../secret/x", ["x-bucket: 1", "x-team: a"]),   # the deny rule
    ("POST http://api/items/2", []),
    ("DELETE http://api/items/2", []),                               # no route: 404
    ("GET http://api/broken", []),                                   # a fault abort: 418
    ("GET http://elsewhere/items/1", []),                            # unknown Host: 404
    ("GET http://api/a%2Fb", []),                                    # rejected escaped slash: 400
]


def send(port: int, request: Request) -> Response:
    """The request as `meshc trace` reads it: Host first, then the -H headers, nothing else."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(request.method, request.target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("host", request.host)
        for n, v in request.headers:
            conn.putheader(n, v)
        conn.endheaders()
        resp = conn.getresponse()
        return Response(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def test_trace_gives_the_answer_of_two_live_native_sidecars(tmp_path):
    backend = Backend("api-app")
    proxies = []
    try:
        ports = {k: free_port() for k in ("WEB_APP", "WEB_IN", "WEB_OUT", "WEB_ADMIN", "API_IN", "API_OUT",
                                          "API_ADMIN")}
        ports["API_APP"] = backend.port
        text = LIVE
        for key, value in ports.items():
            text = text.replace(f"@{key}@", str(value))
        path = tmp_path / "live.mesh"
        path.write_text(text, encoding="utf-8")
        comp = api.compile([str(path)])
        assert not comp.has_errors, [d.message for d in comp.diagnostics]
        emitted = comp.emit("native", ["web", "api"])
        for name in ("web", "api"):
            cfg = json.loads(emitted.files[f"{name}.native.json"])
            proxies.append(start_proxy(write_config(tmp_path / f"{name}.native.json", cfg), tmp_path))
        web = proxies[0]
        answers = []
        for text_, headers in LIVE_REQUESTS:
            data = run(comp, parse_request(text_, headers), "web", None, None).data()
            request = parse_request(text_, headers)
            before = len(backend.requests)
            got = send(web.outbound, request)
            answers.append(got.status)
            result = data["result"]
            if result["forwarded"]:
                assert got.status == 200, (text_, got)
                seen = backend.requests[before]
                sent = data["hops"][-1]["forward"]["request"]
                assert (seen["method"], seen["target"]) == (sent["method"], sent["target"]), text_
                traced_headers = [tuple(h) for h in sent["headers"] if h[0] != "x-request-id"]
                live_headers = [tuple(h) for h in seen["headers"]
                                if h[0].lower() not in ("x-request-id", "x-envoy-attempt-count",
                                                        "x-envoy-expected-rq-timeout-ms")]
                assert [(n.lower(), v) for n, v in live_headers] == traced_headers, text_
            else:
                assert (got.status, got.body.decode()) == (result["status"], result["body"]), (text_, got)
                assert len(backend.requests) == before, text_
        assert answers == [200, 200, 403, 403, 200, 404, 418, 404, 400]
    finally:
        for p in proxies:
            p.stop()
        backend.stop()


def test_check_loads_nothing_of_trace_and_trace_loads_no_validation_or_grpc():
    """`meshc check`'s start-up is unchanged by `trace` (no proxy, no trace module); `trace` builds
    the proxy's tables from the compiler's own config, without pydantic, grpc or cryptography."""
    code = """
import sys
from compiler.cli import main
# a program without asserts (proving one replays requests through the proxy's decision)
assert main(['check', 'examples/shop.mesh']) == 0
bad = sorted(m for m in sys.modules if m.startswith(('runtime_proxy', 'compiler.cli.trace')))
assert not bad, bad
assert main(['trace', 'examples/zero-trust.mesh', '--from', 'frontend', 'GET http://payments/api']) == 0
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'grpc', 'cryptography', 'httptools'))
assert not bad, bad
"""
    env = {k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
