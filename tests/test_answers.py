"""Redirects, direct responses and rewrites (docs/language.md §8.1-§8.3) through a real Envoy and
the native proxy: one policy compiled by the real compiler for the sidecar of `client`, the same
raw request bytes sent into both planes' outbound listeners, and compared:

- an answer (a redirect, a direct response): the status line, the `location`, the body and every
  other header line but `date`, byte for byte; and each plane's answer against the written
  expectation (the Location rules were measured with Envoy 1.40, docs/semantics.md);
- a rewrite: the request line and the `host`, `x-envoy-original-path` and `x-envoy-original-host`
  lines the upstream gets, the mirror copy's (a rewritten Host with `-shadow`) included;
- a mirror copy's Host for IPv6 and several-colon Hosts; a reply without a body has no
  `content-type`, even one the route sets; a regex substitution that gives an empty path changes
  nothing (measured with Envoy 1.40).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.envoy_support import requires_envoy
from tests.planes_support import BothPlanes

POLICY = r"""
service client {
  port 8000
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@"  access_log "@LOG@" }
}

service api {
  port 8080
  hosts ["*"]   # any Host: `[::1]:8080` for the mirror copy's
  subset v1 { endpoints ["127.0.0.1:@V1@"] }
  subset v2 { endpoints ["127.0.0.1:@V2@"] }
}

# the same service behind its default ports: `Host: web:80`, `Host: tls:443`
service web {
  port 80
  endpoints ["127.0.0.1:@V1@"]
}

service tls {
  port 443
  endpoints ["127.0.0.1:@V1@"]
}

routes web {
  route secure { match { path prefix "/secure" } redirect { scheme "https" } }
  route rest { to web }
}

routes tls {
  route secure { match { path prefix "/secure" } redirect { scheme "https" } }
  route to_http { match { path exact "/plain" } redirect { scheme "http" } }
  route rest { to tls }
}

routes api {
  route secure { match { path prefix "/secure" } redirect { scheme "https" } }
  route moved { match { path prefix "/old" } redirect { prefix "/new"  status 308 } }
  route gone { match { path prefix "/gone" } redirect { prefix "/"  status 302 } }
  route away {
    match { path exact "/away" }
    redirect { host "www.example.com"  port 8443  path "/there"  status 307  strip_query }
  }
  route port_only { match { path exact "/port" } redirect { port 9090  status 303 } }
  route shop { match { path prefix "/shop" } redirect { regex "^/shop/([0-9]+)$" "/products/\\1"  status 302 } }
  route to_http { match { path exact "/plain" } redirect { scheme "http" } }
  route paused {
    match { path prefix "/paused" }
    respond 503 "paused for maintenance"
    response_headers { set "retry-after" "120" }
  }
  route json {
    match { path exact "/json" }
    respond 200 "{}"
    response_headers { set "content-type" "application/json" }
  }
  route empty { match { path exact "/empty" } respond 204  response_headers { set "content-type" "a/b" } }
  route nobody { match { path exact "/nobody" } respond 200  response_headers { set "content-type" "a/b" } }
  route typed { match { path exact "/typed" } respond 200 "t"  response_headers { set "content-type" "a/b" } }
  route back {
    match { path prefix "/back" }
    redirect { regex "^/back(.*)$" "\\1" }
    response_headers { set "content-type" "a/b" }
  }
  route blank { match { path prefix "/blank" } to api.v1  rewrite { regex "^/blank[^/]*$" ""  host "h2" } }
  route copied { match { path prefix "/copied" } to api.v1  mirror api.v2 }
  route v1_api {
    match { path prefix "/api/v1" }
    to api.v2
    rewrite { prefix "/api/v2"  host "api.internal" }
    mirror api.v1
  }
  route strip { match { path prefix "/strip" } to api.v1  rewrite { prefix "/" } }
  route raw { match { path raw_prefix "/raw/" } to api.v1  rewrite { prefix "/r/" } }
  route full { match { path prefix "/full" } to api.v1  rewrite { path "/fixed" } }
  route items { match { path prefix "/items" } to api.v1  rewrite { regex "^/items/([0-9]+)/(\\w+)$" "/v2/\\2/\\1" } }
  route folded { match { path prefix "/Case" ignore_case } to api.v1  rewrite { prefix "/case" } }
  route rest { to api.v1 }
}
"""

# (target, Host, extra header lines, status, location or body)
ANSWERS = [
    ("/secure/a?x=1", "api", "", 301, "https://api/secure/a?x=1"),
    ("/secure", "web:80", "", 301, "https://web/secure"),                      # http's default port dropped
    ("/secure", "api:8080", "", 301, "https://api:8080/secure"),               # another port kept
    ("/secure", "tls:443", "", 301, "https://tls:443/secure"),                 # from http: :443 is not its default
    ("/secure", "tls:443", "x-forwarded-proto: https\r\n", 301, "https://tls:443/secure"),   # no scheme change
    ("/plain", "tls:443", "x-forwarded-proto: https\r\n", 301, "http://tls/plain"),  # https's default dropped
    ("/plain", "tls:443", "x-forwarded-proto: HTTPS\r\n", 301, "http://tls/plain"),  # compared in any case
    ("/plain", "tls:443", "x-forwarded-proto: foo\r\n", 301, "http://tls:443/plain"),  # not a protocol: kept
    ("/secure", "web:80", "x-forwarded-proto: HTTP\r\n", 301, "https://web/secure"),
    ("/old", "api", "", 308, "http://api/new"),
    ("/old/x/y?q=1&r", "api", "", 308, "http://api/new/x/y?q=1&r"),
    ("/old/?", "api", "", 308, "http://api/new/?"),                            # an empty query kept
    ("/old/x", "api", "x-forwarded-proto: https\r\n", 308, "https://api/new/x"),  # the request's scheme
    ("/gone", "api", "", 302, "http://api/"),
    ("/gone/x?q", "api", "", 302, "http://api/x?q"),                            # never `//x`
    ("/away?drop=1", "api:8080", "", 307, "http://www.example.com:8443/there"),
    ("/port", "api:8080", "", 303, "http://api:9090/port"),
    ("/shop/42?ref=x", "api", "", 302, "http://api/products/42?ref=x"),
    ("/shop/x", "api", "", 302, "http://api/shop/x"),    # no match: the path as it came (a loop: the pattern decides)
    ("/paused/now", "api", "", 503, "paused for maintenance"),
    ("/json", "api", "", 200, "{}"),
    ("/empty", "api", "", 204, ""),     # no body: no content-type (the route's removed too)
    ("/nobody", "api", "", 200, ""),
    ("/typed", "api", "", 200, "t"),    # a body keeps the route's content-type
    ("/back/x", "api", "", 301, "http://api/x"),
    ("/back", "api", "", 301, "http://api/back"),            # an empty path: the path as it came
    ("/back?q=1", "api", "", 301, "http://api/back?q=1"),
    ("/back?", "api", "", 301, "http://api/back?"),
]

# (target, the upstream's request target, its Host, x-envoy-original-path, x-envoy-original-host)
REWRITES = [
    ("/api/v1/users?id=7", "/api/v2/users?id=7", "api.internal", "/api/v1/users?id=7", "api"),
    ("/api/v1", "/api/v2", "api.internal", "/api/v1", "api"),
    ("/strip/x?q", "/x?q", "api", "/strip/x?q", None),
    ("/strip", "/", "api", "/strip", None),
    ("/raw/file.txt", "/r/file.txt", "api", "/raw/file.txt", None),
    ("/full/a/b?k=v", "/fixed?k=v", "api", "/full/a/b?k=v", None),
    ("/items/42/edit", "/v2/edit/42", "api", "/items/42/edit", None),
    ("/items/x/edit", "/items/x/edit", "api", "/items/x/edit", None),   # no match: the path as it came
    ("/CASE/x", "/case/x", "api", "/CASE/x", None),
    ("/other", "/other", "api", None, None),
    ("/blank?q", "/blank?q", "h2", None, "api"),   # an empty path: no path rewrite, the Host's still
    ("/blank/x", "/blank/x", "h2", "/blank/x", "api"),   # no match: the path as it came, but a rewrite
]


def exchange(port: int, data: bytes) -> tuple[bytes, list[bytes], bytes]:
    """(status line, header lines, body) of one response to the raw request `data`."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf and (chunk := s.recv(65536)):
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in lines[1:]
                       if line.lower().startswith(b"content-length:")), 0)
        head_only = data.startswith(b"HEAD ")
        while not head_only and len(body) < length and (chunk := s.recv(65536)):
            body += chunk
    return lines[0], lines[1:], body


def request(target: str, host: str, extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nhost: {host}\r\n{extra}\r\n".encode("latin-1")


class Planes(BothPlanes):
    def __init__(self, tmp: Path):
        self.logs = {"envoy": tmp / "envoy-access.log", "native": tmp / "native-access.log"}

        def native_log(config: dict) -> None:
            config["proxy"]["access_log"] = str(self.logs["native"])

        super().__init__(tmp, POLICY.replace("@LOG@", str(self.logs["envoy"])), ("app", "v1", "v2"),
                         adjust_native=native_log, envoy_args=("--file-flush-interval-msec", "100"),
                         warnings_allowed=True)
        # the substitutions that may lose the `/` (the empty-path cases), and nothing else
        assert sorted(w.split(":")[0] for w in self.warnings) == ["W0422", "W0422"], self.warnings

    def out(self, plane: str) -> int:
        return self.listener_ports[plane, "outbound"]


@pytest.fixture(scope="module")
def planes(tmp_path_factory):
    p = Planes(tmp_path_factory.mktemp("answers"))
    yield p
    p.close()


def _comparable(lines: list[bytes]) -> list[bytes]:
    return sorted(line.lower() for line in lines if not line.lower().startswith(b"date:"))


@requires_envoy
@pytest.mark.parametrize("target, host, extra, status, expected", ANSWERS,
                         ids=[f"{a[0]} {a[1]} {a[2].strip()}" for a in ANSWERS])
def test_an_answer_is_the_same_bytes_from_both_planes(planes, target, host, extra, status, expected):
    got = {}
    for plane in ("envoy", "native"):
        line, headers, body = exchange(planes.out(plane), request(target, host, extra))
        assert int(line.split()[1]) == status, (plane, line, headers, body)
        location = next((h.split(b": ", 1)[1].decode() for h in headers if h.lower().startswith(b"location:")), None)
        types = [h for h in headers if h.lower().startswith(b"content-type:")]
        assert types == ([] if not body else [b"content-type: a/b"] if target == "/typed" else types), plane
        if status in (301, 302, 303, 307, 308):
            assert (location, body) == (expected, b""), plane
        else:
            assert (location, body.decode()) == (None, expected), plane
        got[plane] = (line, _comparable(headers), body)
    assert got["envoy"] == got["native"]


@requires_envoy
def test_a_head_request_to_a_direct_response_gets_no_body(planes):
    got = {plane: exchange(planes.out(plane), request("/paused", "api", method="HEAD"))
           for plane in ("envoy", "native")}
    for plane, (line, headers, body) in got.items():
        assert line.endswith(b"503 Service Unavailable") and body == b"", plane
        assert b"content-length: 22" in [h.lower() for h in headers], plane
    assert _comparable(got["envoy"][1]) == _comparable(got["native"][1])


def _upstream(planes, target: str, backends: tuple[str, ...]) -> dict[str, list[dict]]:
    """What each backend of `backends` received for one request to each plane: plane -> records."""
    seen = {}
    for plane in ("envoy", "native"):
        for b in planes.backends.values():
            b.requests.clear()
        line, _, body = exchange(planes.out(plane), request(target, "api"))
        assert line.split()[1] == b"200", (plane, line, body)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(len(planes.backends[n].requests) for n in backends) < len(backends):
            time.sleep(0.01)
        seen[plane] = [r for n in backends for r in planes.backends[n].requests]
    return seen


def _view(record: dict) -> tuple:
    h = {n.lower(): v for n, v in record["headers"]}
    return (record["target"], h.get("host"), h.get("x-envoy-original-path"), h.get("x-envoy-original-host"))


@requires_envoy
@pytest.mark.parametrize("target, up_target, up_host, original_path, original_host", REWRITES,
                         ids=[r[0] for r in REWRITES])
def test_a_rewrite_sends_the_same_request_upstream_from_both_planes(planes, target, up_target, up_host,
                                                                     original_path, original_host):
    mirrored = target.startswith("/api/v1")
    backends = ("v2", "v1") if mirrored else ("v1",)
    seen = _upstream(planes, target, backends)
    for plane, records in seen.items():
        assert _view(records[0]) == (up_target, up_host, original_path, original_host), plane
        if mirrored:   # the copy carries the rewritten path, and the rewritten Host with `-shadow`
            assert _view(records[1]) == (up_target, up_host + "-shadow", original_path, original_host), plane
    assert [_view(r) for r in seen["envoy"]] == [_view(r) for r in seen["native"]]


@requires_envoy
def test_both_planes_log_the_answers_and_rewrites_the_same(planes):
    """Every request above, in the same order in both planes: the access log lines agree (but the
    times, ids and endpoints of the moment)."""
    import json

    def lines(plane: str) -> list[dict]:
        path = planes.logs[plane]
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    sent = len(ANSWERS) + 1 + len(REWRITES)   # to each plane (the HEAD request too; a mirror copy is not logged)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and min(len(lines("envoy")), len(lines("native"))) < sent:
        time.sleep(0.05)
    time.sleep(0.3)
    volatile = ("start_time", "duration_ms", "request_id", "upstream_host")
    logs = {plane: [{k: v for k, v in r.items() if k not in volatile} for r in lines(plane)]
            for plane in ("envoy", "native")}
    assert len(logs["native"]) == sent
    for e, n in zip(logs["envoy"], logs["native"]):
        assert e == n
    assert len(logs["envoy"]) == len(logs["native"])


@requires_envoy
@pytest.mark.parametrize("target", ["/nobody", "/back/x", "/empty"])
def test_a_head_request_to_a_bodiless_answer_gets_the_same_framing_from_both_planes(planes, target):
    """Envoy's local reply without a body has no `content-length`: its codec frames the answer to
    a HEAD request as chunked (a 204 has neither)."""
    got = {plane: exchange(planes.out(plane), request(target, "api", method="HEAD"))
           for plane in ("envoy", "native")}
    for plane, (line, headers, body) in got.items():
        assert line.split()[1] == (b"204" if target == "/empty" else b"301" if target == "/back/x" else b"200"), plane
        framing = [h.lower() for h in headers if h.lower().startswith((b"content-length", b"transfer-encoding"))]
        assert framing == ([] if target == "/empty" else [b"transfer-encoding: chunked"]), plane
        assert body == b"", plane
    assert _comparable(got["envoy"][1]) == _comparable(got["native"][1])


# (the Host sent, the mirror copy's Host): Envoy 1.40's `shadowAppendedHost`, measured; the port
# starts at the last `:` unless a `]` follows it
SHADOW_HOSTS = [
    ("api:8080", "api-shadow:8080"),
    ("[::1]:8080", "[::1]-shadow:8080"),
    ("[::1]", "[::1]-shadow"),
    ("a:b:c", "a:b-shadow:c"),
    ("a::b", "a:-shadow:b"),
    ("[::1]:", "[::1]-shadow:"),
    ("a:", "a-shadow:"),
]


@requires_envoy
@pytest.mark.parametrize("host, copy_host", SHADOW_HOSTS, ids=[h for h, _ in SHADOW_HOSTS])
def test_a_mirror_copy_gets_the_same_shadow_host_from_both_planes(planes, host, copy_host):
    from runtime_proxy.decide.headers import shadow_host

    assert shadow_host(host) == copy_host
    for plane in ("envoy", "native"):
        for b in planes.backends.values():
            b.requests.clear()
        line, _, body = exchange(planes.out(plane), request("/copied", host))
        assert line.split()[1] == b"200", (plane, line, body)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not planes.backends["v2"].requests:
            time.sleep(0.01)
        hosts = [{n.lower(): v for n, v in r["headers"]}.get("host") for n in ("v1", "v2")
                 for r in planes.backends[n].requests]
        assert hosts == [host, copy_host], plane


# ---- the pure parts, in both evaluators (no sockets) ----------------------------------------------

# (pattern, substitution, path, the result: RE2's GlobalReplace, measured through Envoy 1.40 as a
# redirect's Location for the first, second, fifth and sixth rows)
GLOBAL_REPLACE = [
    ("b*", "-", "/abc", "-/-a-c-"),          # no empty match right after a match (Python's re.sub: -/-a--c-)
    ("x*", "-", "/ax", "-/-a-"),
    ("[0-9]", "n", "/a1/b22", "/an/bnn"),
    ("^/([^/]+)/([^/]+)", "/\\2/\\1", "/a/b/c", "/b/a/c"),
    ("^/a", "/b", "/a/a", "/b/a"),           # `^` holds only at the start of the path
    ("(a)|(b)", "[\\1\\2]", "/ab", "/[a][b]"),   # a group that did not take part is empty
    ("/", "\\\\", "/a/b", "\\a\\b"),          # `\\` is a backslash
    ("q", "z", "/abc", "/abc"),              # no match: the path as it was
]


@pytest.mark.parametrize("pattern, substitution, path, expected", GLOBAL_REPLACE)
def test_regex_rewrite_replaces_as_re2_global_replace(pattern, substitution, path, expected):
    import re2

    from envoy_eval.answers import regex_replace_all
    from runtime_proxy.decide.answer import global_replace, rewrite_parts

    assert global_replace(re2.compile(pattern), rewrite_parts(substitution), path) == expected
    assert regex_replace_all(pattern, substitution, path) == expected


# (pattern, substitution, path with query, the new :path or None): an empty path is no change at
# all (measured with Envoy 1.40: the path as it came, no `x-envoy-original-path`)
EMPTY_RESULTS = [
    ("^.*$", "", "/empty?q=1", None),
    ("^/rdr(.*)$", "\\1", "/rdr", None),
    ("^/rdr(.*)$", "\\1", "/rdr/x?q", "/x?q"),
]


@pytest.mark.parametrize("pattern, substitution, path, expected", EMPTY_RESULTS)
def test_an_empty_substitution_result_changes_nothing_in_both_evaluators(pattern, substitution, path, expected):
    from envoy_eval.answers import new_path, redirect
    from runtime_proxy.decide.answer import CPathRewrite

    config = {"regex_rewrite": {"pattern": {"regex": pattern}, "substitution": substitution}}
    assert new_path(config, {}, path) == expected
    native = CPathRewrite({"kind": "regex", "pattern": pattern, "substitution": substitution}).apply(path.split("?")[0])
    assert native == (expected or "").split("?")[0]   # (empty: the callers keep the path)
    assert redirect(config, {}, "api", path, [])[1] == "http://api" + (expected or path)


# (redirect settings, Host, x-forwarded-proto values, location): the port rules on IPv6 hosts,
# which no service of the live test answers to
LOCATIONS = [
    ({"scheme": "https"}, "[::1]:80", None, "https://[::1]/p"),
    ({"scheme": "https"}, "[::1]:8080", None, "https://[::1]:8080/p"),
    ({"port": 9090}, "[::1]", None, "http://[::1]:9090/p"),
    ({"port": 9090}, "[::1]:80", None, "http://[::1]:9090/p"),
    ({"scheme": "http"}, "h:443", ["https,http"], "http://h:443/p"),   # joined lines: neither protocol
    ({}, "h:80", ["HTTP"], "http://h/p"),    # `HTTP` is http, but not the scheme `http` as written
]


@pytest.mark.parametrize("settings, host, protos, expected", LOCATIONS)
def test_location_rules_in_both_evaluators(settings, host, protos, expected):
    from envoy_eval.answers import redirect
    from runtime_proxy.decide.answer import CRedirect, location

    r = {"status": 301, "scheme": "", "host": "", "port": 0, **settings}
    assert location(CRedirect(r), host, "/p", "", "/p", protos) == expected
    action = {k: v for k, v in (("scheme_redirect", r["scheme"]), ("port_redirect", r["port"])) if v}
    headers = [("x-forwarded-proto", v) for v in protos or ()]
    assert redirect(action, {"prefix": "/"}, host, "/p", headers) == (301, expected)
