"""`meshc test` agrees with the live planes (docs/testing.md, "Policy tests").

- `test_live_*` (CI, one small program): `meshc test --live` sends every test's hops through a
  real Envoy and a real native proxy per sidecar and compares them with the model's decision; an
  application that answers otherwise than the model assumes is reported as a disagreement (so the
  live layer does compare).
- `test_generated_policies_with_generated_tests_agree_live` (the equivalence profile's nightly run,
  `MESHC_EQUIVALENCE=nightly`, or `MESHC_EQUIVALENCE_TESTS=N` policies): policies and requests from
  the equivalence suite's generators (tests/equivalence/policies.py), each request written as a
  `test` block whose expectations (status, route, subset or the set a random split picks from) are
  what `meshc test` decided for it in a first run; the second run, with `--live`, must report no
  failure: the two models and both real planes agree on every hop.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from compiler import api
from compiler.ir.names import service_for_host
from compiler.semantic.checks.tests import TOKEN
from compiler.syntax.render import string
from compiler.verify import live
from compiler.verify.run import run_tests
from tests.envoy_support import requires_envoy
from tests.equivalence import policies as gen
from tests.equivalence import tally

pytestmark = requires_envoy

NIGHTLY = os.environ.get("MESHC_EQUIVALENCE") == "nightly"
POLICIES = int(os.environ.get("MESHC_EQUIVALENCE_TESTS") or (40 if NIGHTLY else 0))

SMALL = """\
mesh { mtls strict }

service reviews {
  port 9080
  subset v1 { endpoints ["127.0.0.1:9081"] }
  subset v2 { endpoints ["127.0.0.1:9082"] }
}

service productpage {
  port 9080
  endpoints ["127.0.0.1:9083"]
}

routes reviews {
  route jason {
    match { header "end-user" exact "jason" }
    to reviews.v2
  }
  route rest {
    split { reviews.v1 50  reviews.v2 50 } by header "x-bucket"
  }
}

authorization reviews {
  default deny
  allow pages { from service productpage  method GET }
}

test "jason" {
  request { from service productpage  GET "http://reviews/r/./0"  header "end-user" "jason" }
  expect { route reviews.jason  to reviews.v2  path "/r/0"  status 200  allowed_by authorization reviews.pages }
}

test "a bucket of v1" {
  request { from service productpage  GET "http://reviews/r/0"  header "x-bucket" "7" }
  expect { to reviews.v1  status 200 }
}

test "writes are denied" {
  request { from service productpage  POST "http://reviews/r/0"  header "x-bucket" "70" }
  expect { to reviews.v2  status 403  denied_by authorization reviews.default }
}

test "plaintext is refused" {
  request { from unauthenticated  GET "http://reviews/r/0" }
  expect { status 0 }
}
"""


def live_failures(texts: list[api.Text]) -> tuple[list, list]:
    """(the model layer's failures, the live layer's) of every test of the program."""
    comp = api.compile(texts)
    assert not comp.has_errors, [d.message for d in comp.diagnostics if d.severity == "error"]
    report = run_tests(comp)
    model = [d.message for o in report.outcomes for d in o.failures]
    live.run_live(comp, report, live.check_live())
    return model, [d.message for o in report.outcomes for d in o.failures if d.message not in model]


def test_live_planes_agree_with_the_model_on_a_small_program():
    model, found = live_failures([api.Text("reviews.mesh", SMALL)])
    assert model == [] and found == []


def test_live_reports_a_plane_that_does_otherwise(monkeypatch):
    """The application behind the destination's sidecar answers 500 where the model takes it to
    answer 200: each plane's inbound hop of an allowed request is a disagreement, named."""
    real = live._Handler._answer

    def answer(self):
        if self.server.label.startswith("app:"):
            self.send_response(500)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        real(self)

    monkeypatch.setattr(live._Handler, "_answer", answer)
    for method in ("do_GET", "do_POST"):
        monkeypatch.setattr(live._Handler, method, answer)
    model, found = live_failures([api.Text("reviews.mesh", SMALL)])
    assert model == []
    assert sorted(found) == sorted(
        f"the live {plane} plane differs from the model (inbound at reviews's sidecar): status 500 (live) != 200 "
        "(model)" for plane in ("envoy", "native") for _ in ("jason", "a bucket of v1"))


# ---- generated policies with generated tests -----------------------------------------------------

def representable(request: gen.GenRequest, ir) -> bool:
    """A request a test can write: a Host that one of the program's services answers to (the
    lookup of the checks, E0807), a target without blanks, `#` or bytes outside printable ASCII,
    and headers a test can send (E0814: token names, not `host` or `upgrade`, printable latin-1
    values), not CONNECT."""
    host = request.host if request.kind == "outbound" else gen.SIDECAR
    text = request.target + "".join(n + v for n, v in request.headers)
    return (service_for_host(((s.name, s.domains) for s in ir.services), host) is not None
            and request.target.startswith("/") and all(" " < c < "\x7f" for c in request.target)
            and "#" not in request.target and all(c.isprintable() for c in text) and request.method != "CONNECT"
            and all(TOKEN.match(n) and n.lower() not in ("host", "upgrade") for n, _ in request.headers)
            and all(v.isascii() or all(ord(c) < 256 for c in v) for _, v in request.headers))


def block_of(i: int, request: gen.GenRequest, expect: str) -> str:
    if request.kind == "inbound":
        caller = f"from identity {string(request.caller)}" if request.caller else "from unauthenticated"
        host = gen.SIDECAR
    else:
        caller, host = f"from service {gen.SIDECAR}", request.host
    headers = "".join(f"  header {string(n)} {string(v)}" for n, v in request.headers)
    return (f'test "request {i}" {{\n  request {{ {caller}  {request.method} {string(f"http://{host}{request.target}")}'
            f"{headers} }}\n  expect {{ {expect} }}\n}}\n\n")


def expectations(outcome) -> str:
    parts = [f"status {outcome.status}"]
    if outcome.hops and outcome.hops[0].request.kind == "outbound":
        d = outcome.hops[0].native
        if d.route is not None:
            parts.append("route " + d.route.replace("/", "."))
        if d.status is None and d.cluster is not None:
            _, subset, service = d.cluster.split("|")
            parts.append(f"to {service}.{subset}")
        elif d.status is None and d.candidates:
            parts.append("to [" + ", ".join(f"{c.split('|')[2]}.{c.split('|')[1]}" for c in d.candidates) + "]")
    return "  ".join(parts)


@pytest.mark.skipif(POLICIES == 0, reason="the nightly profile (MESHC_EQUIVALENCE=nightly, or "
                                          "MESHC_EQUIVALENCE_TESTS=N policies): a few seconds per policy")
@settings(max_examples=max(POLICIES, 1), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(gen.cases(max_requests=12, min_requests=4, live=False))
def test_generated_policies_with_generated_tests_agree_live(case):
    policy, requests = case
    text = policy.render(policy.dummy_ports())
    ir = api.compile([api.Text("generated.mesh", text)]).ir
    requests = [r for r in requests if ir is not None and representable(r, ir)]
    if not requests:
        return
    bare = "".join(block_of(i, r, "") for i, r in enumerate(requests))
    comp = api.compile([api.Text("generated.mesh", text), api.Text("generated_test.mesh", bare)])
    if comp.has_errors:     # a Host the check refuses (E0807): nothing to compare
        return
    first = run_tests(comp)
    assert [d.message for o in first.outcomes for d in o.failures] == []   # the two models agree
    tests = "".join(block_of(i, r, expectations(o)) for i, (r, o) in enumerate(zip(requests, first.outcomes)))
    model, found = live_failures([api.Text("generated.mesh", text), api.Text("generated_test.mesh", tests)])
    tally.add(policies=1, requests=len(requests), mtls_requests=sum(r.caller is not None for r in requests))
    if model or found:
        tally.add(disagreements=1)
    assert model == [], "\n".join(model) + "\n--- policy:\n" + text + "\n--- tests:\n" + tests
    assert found == [], "\n".join(found) + "\n--- policy:\n" + text + "\n--- tests:\n" + tests
