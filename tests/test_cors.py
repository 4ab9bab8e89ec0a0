"""CORS on a route (docs/language.md §13a, issue 16) through a real Envoy and the native proxy.

Measured with Envoy 1.40 (CORS filter first in the outbound chain, per-route `CorsPolicy`): a
preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`) from an allowed origin is a
200 with an empty body, never forwarded, whatever method it asks for, without the route's response
changes; its headers come in the order allow-origin (the origin echoed, `*` too), -credentials,
-methods, -headers, -max-age, -expose-headers, then date, server, content-length. An actual
request's response (forwarded, or a fault's abort) gets allow-origin, -credentials and
-expose-headers, a value the route set kept in its place and replaced. A request from an origin no
matcher allows, an OPTIONS without the request method, and a request without a route get nothing."""

from __future__ import annotations

import re
import socket

import pytest

from compiler import api
from tests.envoy_support import requires_envoy
from tests.planes_support import BothPlanes

POLICY = """
service client {
  port 8000
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" }
}
service s {
  port 8080
  subset a { endpoints ["127.0.0.1:@A@"] }
}
routes s {
  route abort {
    match { path prefix "/abort" }
    to s.a
    fault { abort 503 100% }
    cors { origins [exact "https://a.example"]  expose ["x-id"]  credentials }
  }
  route star {
    match { path prefix "/star" }
    to s.a
    cors { origins [exact "*"]  methods [GET]  headers ["*"] }
  }
  route pfx {
    match { path prefix "/pfx" }
    to s.a
    cors { origins [prefix "https://"]  methods [GET] }
  }
  route hdrs {
    match { path prefix "/hdrs" }
    to s.a
    response_headers { set "x-route" "r"  set "access-control-allow-origin" "route"  set "access-control-max-age" "5" }
    cors { origins [exact "https://a.example"]  methods [GET, PUT]  headers ["x-a", "x-b"]
           expose ["x-id", "x-two"]  max_age 1h  credentials }
  }
  route r {
    to s.a
    cors { origins [exact "https://a.example", regex "https://.*\\\\.b\\\\.example"]  methods [GET, PUT]
           headers ["x-a"]  expose ["x-id"]  max_age 1h  credentials }
  }
}
"""
PRE = "OPTIONS {path} HTTP/1.1\r\nHost: s\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: {method}\r\n\r\n"
GET = "GET {path} HTTP/1.1\r\nHost: s\r\nOrigin: {origin}\r\n\r\n"
CASES = {
    "preflight, a method not allowed": PRE.format(path="/x", origin="https://a.example", method="DELETE"),
    "preflight, route response changes": PRE.format(path="/hdrs", origin="https://a.example", method="GET"),
    "preflight, regex origin": PRE.format(path="/x", origin="https://q.b.example", method="GET"),
    "preflight on an aborting route": PRE.format(path="/abort", origin="https://a.example", method="GET"),
    "preflight, exact *": PRE.format(path="/star", origin="https://z.example", method="GET"),
    # headers ["*"]: Envoy echoes the preflight's Access-Control-Request-Headers (lines joined)
    "preflight, * headers echoed": "OPTIONS /star HTTP/1.1\r\nHost: s\r\nOrigin: https://z.example\r\n"
                                   "Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: x-a, X-B\r\n"
                                   "Access-Control-Request-Headers: x-c\r\n\r\n",
    "preflight, prefix not matching": PRE.format(path="/pfx", origin="http://z.example", method="GET"),
    "preflight, other origin": PRE.format(path="/x", origin="https://evil.example", method="GET"),
    "OPTIONS without request method": "OPTIONS /x HTTP/1.1\r\nHost: s\r\nOrigin: https://a.example\r\n\r\n",
    "actual, route sets allow-origin": GET.format(path="/hdrs", origin="https://a.example"),
    "actual, aborted": GET.format(path="/abort", origin="https://a.example"),
    "actual, regex origin": GET.format(path="/x", origin="https://q.b.example"),
    "actual, two origin lines": "GET /x HTTP/1.1\r\nHost: s\r\nOrigin: https://q.b.example\r\n"
                                "Origin: https://a.example\r\n\r\n",
    "actual, other origin": GET.format(path="/x", origin="https://evil.example"),
    "preflight, connection close": "OPTIONS /x HTTP/1.1\r\nHost: s\r\nOrigin: https://q.b.example\r\n"
                                   "Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
}

KIND = {case: "preflight" if case.startswith("preflight") else "actual" for case in CASES}
KIND.update({"preflight, prefix not matching": "none", "preflight, other origin": "none",
             "actual, two origin lines": "none", "actual, other origin": "none",
             "OPTIONS without request method": "actual"})


@pytest.fixture(scope="module")
def planes(tmp_path_factory):
    p = BothPlanes(tmp_path_factory.mktemp("cors"), POLICY, ("app", "a"))
    yield p
    p.close()


def exchange(port: int, request: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status line, header lines, body) of one request sent as raw bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = [(n.lower(), v) for n, _, v in (x.partition(": ") for x in lines[1:])]
        length = int(dict(headers).get("content-length", "0"))
        while len(body) < length:
            chunk = s.recv(65536)
            assert chunk
            body += chunk
    return lines[0], headers, body


def shown(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The header lines in order, the date and the upstream's service time left out (they vary)."""
    return [(n, v) for n, v in headers if n not in ("date", "x-envoy-upstream-service-time")]


@requires_envoy
@pytest.mark.parametrize("case", list(CASES))
def test_cors_answers_are_byte_identical_in_both_planes(planes, case):
    got = {plane: exchange(planes.listener_ports[plane, "outbound"], CASES[case]) for plane in ("envoy", "native")}
    envoy, native = got["envoy"], got["native"]
    assert envoy[0] == native[0]
    cors_e = [(n, v) for n, v in envoy[1] if n.startswith("access-control-")]
    assert cors_e == [(n, v) for n, v in native[1] if n.startswith("access-control-")]
    kind = KIND[case]
    if kind == "preflight":
        assert envoy[0] == "HTTP/1.1 200 OK" and envoy[2] == b""
        assert shown(envoy[1]) == shown(native[1])            # the whole preflight answer, in order
        assert cors_e[0] == ("access-control-allow-origin", CASES[case].split("Origin: ")[1].split("\r\n")[0])
        assert not any(n == "x-backend" for n, _ in envoy[1])   # never forwarded
    elif kind == "none":
        assert cors_e == []
    else:
        assert cors_e[0][0] == "access-control-allow-origin" and cors_e[0][1] != "route"
        # a preflight's own headers are not an actual request's: the route's max-age stays as it set it
        assert ("access-control-max-age" in dict(cors_e)) == (case == "actual, route sets allow-origin")

def test_star_headers_echo_what_the_preflight_asks(planes):
    for plane in ("envoy", "native"):
        _, headers, _ = exchange(planes.listener_ports[plane, "outbound"], CASES["preflight, * headers echoed"])
        assert ("access-control-allow-headers", "x-a, X-B,x-c") in headers, (plane, headers)
        _, headers, _ = exchange(planes.listener_ports[plane, "outbound"], CASES["preflight, exact *"])
        assert ("access-control-allow-headers", "") in headers, (plane, headers)


def test_cors_preflight_order_of_the_lists():
    """What the CORS policy writes (its lists joined with ",", the max age in seconds)."""
    ports = iter(range(20000, 20010))
    comp = api.compile([api.Text("p.mesh", re.sub(r"@[A-Z]+@", lambda m: str(next(ports)), POLICY))], shard=False)
    assert not [d for d in comp.diagnostics if d.severity == "error"]
    cors = next(r for s in comp.ir.services for r in s.routes if r.name == "hdrs").cors
    assert (cors.methods, cors.headers, cors.expose, cors.max_age_s, cors.credentials) == (
        ("GET", "PUT"), ("x-a", "x-b"), ("x-id", "x-two"), 3600, True)


@pytest.mark.parametrize(("cors", "code", "message"), [
    ('origins [exact "https://a.example/shop"]', "E0340", "origin `https://a.example/shop` has a path"),
    ('origins [exact "https://a.example/"]', "E0340", "origin `https://a.example/` ends with `/`"),
    ('origins [exact "https://app.example:99999"]', "E0340",
     "origin `https://app.example:99999` has port 99999, which no origin has"),
    ('origins [exact "http://app.example:0"]', "E0340",
     "origin `http://app.example:0` has port 0, which no origin has"),
    ('origins [exact "a.example"]', "E0340", "`a.example` is not an origin"),
    ('origins [prefix "app.example"]', "E0340", "origin prefix `app.example` does not start with a scheme"),
    ('origins [regex "https://(a"]', "E0304", "invalid regex `https://(a`: missing ): https://(a"),
    ('origins [exact "*"]  credentials', "E0341",
     '`credentials` with `exact "*"`, which allows every origin'),
    ('origins [regex ".*"]  credentials', "E0341", '`credentials` with `regex ".*"`, which allows every origin'),
    ("methods [GET]", "E0342", "the cors block allows no origin"),
    ('origins [exact "https://a.example"]  max_age 1500ms', "E0343",
     "max_age `1500 ms` is not a whole number of seconds"),
    ('origins [exact "https://a.example"]  max_age 0s', "E0343", "max_age `0s` is outside 1s to 24h"),
    ('origins [exact "https://a.example"]  methods [GET, get]', "E0309", "unknown method `get`"),
    ('origins [exact "https://a.example"]  headers ["x a"]', "E0308", "`x a` is not a valid header name"),
    ('origins [exact "https://a.example", exact "https://a.example"]', "W0435",
     'origin `exact "https://a.example"` is listed twice'),
    ('origins [exact "https://a.example"]  expose ["X-Id", "x-id"]', "W0435", "exposed header `x-id` is listed twice"),
    ('origins [exact "https://a.example"]  methods [GET]  methods [PUT]', "E0105",
     "`methods` is set twice in the cors block"),
])
def test_cors_diagnostics(cors, code, message):
    text = 'service s {\n  port 80\n  endpoints ["10.0.0.1:80"]\n}\nroutes s {\n  route r {\n    to s.default\n' \
           f"    cors {{ {cors} }}\n  }}\n}}\n"
    comp = api.check([api.Text("p.mesh", text)])
    found = [d for d in comp.diagnostics if d.code == code]
    assert found, [(d.code, d.message) for d in comp.diagnostics]
    assert found[0].span is not None and text.count("\n", 0, found[0].span.start) == 7   # on the cors line
    if message is not None:
        assert found[0].message == message


K8S = """
service web {
  port 9000
  namespace "shop"
  subset v1 { labels { app "web" } }
}
routes web {
  route api {
    match { path prefix "/api" }
    to web.v1
    retry { attempts 2  on [503] }
    cors { origins [exact "https://a.example", prefix "https://b.", regex "https://.*\\\\.c\\\\.example"]
           methods [GET, POST]  headers ["x-a"]  expose ["x-id"]  max_age 1h  credentials }
  }
}
"""


def test_cors_for_istio_is_a_virtual_service_cors_policy():
    """The VirtualService's `corsPolicy`, validated against the vendored Istio CRD (E0940/E0941)."""
    import yaml

    emitted = api.compile([api.Text("k.mesh", K8S)], shard=False).emit("istio")
    assert not emitted.has_errors, [(d.code, d.message) for d in emitted.diagnostics]
    (vs,) = [doc for data in emitted.files.values() for doc in yaml.safe_load_all(data)
             if doc and doc["kind"] == "VirtualService"]
    assert vs["spec"]["http"][0]["corsPolicy"] == {
        "allowOrigins": [{"exact": "https://a.example"}, {"prefix": "https://b."}, {"regex": "https://.*\\.c\\.example"}],
        "allowMethods": ["GET", "POST"], "allowHeaders": ["x-a"], "exposeHeaders": ["x-id"], "maxAge": "3600s",
        "allowCredentials": True}


@pytest.mark.parametrize("channel", ["standard", "experimental"])
def test_cors_for_gateway_api_with_prefix_origins_is_refused(channel):
    """Gateway API's CORS filter takes exact origins only: a prefix or regex origin is E0959 (exact
    ones are written as the filter: tests/test_gateway_api.py)."""
    from compiler.backends.base import Options

    emitted = api.compile([api.Text("k.mesh", K8S)], shard=False).emit("gateway-api", None, Options(channel=channel))
    errors = [d for d in emitted.diagnostics if d.severity == "error"]
    assert [d.code for d in errors if d.code != "E0944"] == ["E0959"] and not emitted.files
    assert errors[-1].message.startswith("route `api`'s `cors` cannot be written as Gateway API's CORS filter: "
                                         "its origin `prefix")


ISTIO_YAML = """apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - name: api
    route:
    - destination: {host: web}
    retries: {attempts: 0}
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {prefix: "https://b."}, {regex: "https://.*[.]c[.]example"}]
      allowOrigin: ["https://old.example"]
      allowMethods: [GET, POST]
      allowHeaders: [x-a]
      exposeHeaders: [x-id]
      maxAge: 24h
      allowCredentials: true
      unmatchedPreflights: FORWARD
"""


def test_meshc_import_istio_translates_a_cors_policy(tmp_path):
    from compiler.tooling.istio_import import import_istio

    path = tmp_path / "vs.yaml"
    path.write_text(ISTIO_YAML)
    result = import_istio([str(path)], out_dir=str(tmp_path / "out"))
    assert not result.has_errors, [(d.code, d.message) for d in result.diagnostics]
    text = next(t for n, t in result.files.items() if n != "mesh.mesh")
    assert ('cors { origins [exact "https://a.example", prefix "https://b.", regex "https://.*[.]c[.]example", '
            'exact "https://old.example"]  methods [GET, POST]  headers ["x-a"]  expose ["x-id"]  max_age 24h  '
            "credentials }") in text
    ignoring = tmp_path / "ignore.yaml"
    ignoring.write_text(ISTIO_YAML.replace("FORWARD", "IGNORE"))
    refused = import_istio([str(ignoring)], out_dir=str(tmp_path / "out2"))
    assert [d.code for d in refused.diagnostics if d.severity == "error"] == ["E1005"]


def test_the_language_server_completes_and_explains_the_cors_words():
    from compiler.tooling.lsp.analysis import KEYWORDS, complete

    text = "routes s {\n  route r {\n    to s.a\n    co"
    start, items = complete(None, text, len(text))
    assert start == len(text) - 2 and "cors" in {c.label for c in items}
    for word in ("cors", "origins", "methods", "headers", "expose", "max_age", "credentials"):
        assert "§13a" in KEYWORDS[word]


TESTED = """service client {
  port 8000
  endpoints ["127.0.0.1:8000"]
}
service web {
  port 9000
  subset v1 { endpoints ["127.0.0.1:9001"] }
}
routes web {
  route api {
    match { path prefix "/api" }
    to web.v1
    cors { origins [exact "https://a.example"]  methods [GET, POST]  max_age 1h  credentials }
  }
}
test "preflight" {
  request { from service client  OPTIONS "http://web/api/x"  header "origin" "https://a.example"
            header "access-control-request-method" "POST" }
  expect { status 200  response_header "access-control-allow-origin" "https://a.example"
           response_header "access-control-max-age" "3600" }
}
test "actual" {
  request { from service client  GET "http://web/api/x"  header "origin" "https://a.example" }
  expect { status 200  response_header "access-control-allow-origin" "https://a.example"
           response_header "access-control-allow-credentials" "true" }
}
test "other origin" {
  request { from service client  GET "http://web/api/x"  header "origin" "https://b.example" }
  expect { status 200  response_header "access-control-allow-origin" absent }
}
"""


def test_meshc_test_and_trace_see_the_preflight_and_the_actual_response():
    """`meshc test` (both targets' decisions: the native one and the evaluator of the Envoy files)."""
    from compiler.verify.run import run_tests

    comp = api.compile([api.Text("t.mesh", TESTED)])
    assert not comp.has_errors
    outcomes = run_tests(comp).outcomes
    assert len(outcomes) == 3 and all(not o.failures for o in outcomes), [o.failures for o in outcomes]
