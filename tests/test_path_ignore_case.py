"""`ignore_case` on path conditions (issue 18, point 9), through both data planes.

`deny { path prefix "/admin" }` compares the path as it is: `/ADMIN`, `/admin;x` and `/%2561dmin`
pass it in Envoy and in the native proxy alike, and an application that ignores case, strips
`;params` or decodes twice then serves `/admin`. With `ignore_case`, every ASCII case of the path
is denied (routes match the same way); `;params` and double encoding are never undone by either
plane (docs/semantics.md, "Path case, `;params` and double encoding"), and lint rule L0303 names
those forms on a deny rule without `ignore_case`.

One policy is compiled by the real compiler for the sidecar of `client` and run by a real Envoy
(the file-xDS output) and by the native proxy (a real process) in front of the same loopback
upstreams. Every request goes through both planes as raw bytes (non-ASCII bytes too), and each
plane's answer is asserted, so the two agree by construction of the expectations.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from compiler import api
from compiler.tooling.lint import lint_files
from compiler.tooling.lint.config import LintConfig
from tests.envoy_support import requires_envoy
from tests.planes_support import BothPlanes

POLICY = """
service client {
  port 8000
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" }
}

service api {
  port 8080
  subset folded { endpoints ["127.0.0.1:@FOLDED@"] }
  subset exact { endpoints ["127.0.0.1:@EXACT@"] }
}

routes api {
  route docs { match { path prefix "/Docs" ignore_case } to api.folded }
  route login { match { path exact "/Login" ignore_case } to api.folded }
  route assets { match { path raw_prefix "/static/" ignore_case } to api.folded }
  route cafe { match { path exact "/caf%C3%A9" ignore_case } to api.folded }
  route rest { to api.exact }
}

authorization client {
  default allow
  deny admin { path prefix "/admin" ignore_case }
  deny key { path exact "/Key" ignore_case }
  deny cafe { path prefix "/caf%C3%A9" ignore_case }
  deny private { path prefix "/private" }
}
"""

# (request target, status at the inbound listener)
INBOUND = [
    ("/admin", 403), ("/ADMIN", 403), ("/Admin/x", 403), ("/aDmIn/", 403), ("/ADMIN?x=1", 403),
    ("/%41dmin", 403),            # an unreserved escape is decoded first: `/Admin`
    ("/x/../ADMIN/users", 403),   # dot segments are removed first
    ("/adminx", 200), ("/ADMINX", 200), ("/", 200),
    ("/admin;x", 200),            # `;params` are never stripped (the application must not either)
    ("/%2561dmin", 200),          # nor is anything decoded twice
    ("/key", 403), ("/KEY", 403), ("/key/x", 200),
    ("/CAF%C3%A9", 403), ("/caf%c3%a9", 403),   # ASCII letters fold, the hex digits of escapes too
    ("/CAF%C3%89", 200),          # `É` is not `é`: non-ASCII letters never fold
    ("/CAF\u00e9".encode(), 400),  # a raw non-ASCII byte in the request line: both planes refuse it
    ("/private", 403), ("/PRIVATE", 200), ("/Private/x", 200),   # without ignore_case: as written
]

# (request target, the subset that answers at the outbound listener)
OUTBOUND = [
    ("/docs", "folded"), ("/DOCS/x", "folded"), ("/dOcS", "folded"), ("/docsx", "exact"),
    ("/login", "folded"), ("/LOGIN", "folded"), ("/login/", "exact"),
    ("/STATIC/a.css", "folded"), ("/Static/", "folded"), ("/static", "exact"),
    ("/CAF%C3%A9", "folded"), ("/caf%C3%89", "exact"),
    ("/other", "exact"),
]


def send(port: int, target: str | bytes, host: str) -> tuple[int, str | None, bytes]:
    """One request as raw bytes on a fresh connection: (status, x-backend, body)."""
    raw = target if isinstance(target, bytes) else target.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + raw + b" HTTP/1.1\r\nhost: " + host.encode() + b"\r\nconnection: close\r\n\r\n")
        data = b""
        # read to the end of the response, not of the connection: Envoy closes after a local
        # reply only when its delayed-close timer (1 s) fires
        while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                       if line.lower().startswith("content-length:")), None)
        while (length is None or len(body) < length) and (chunk := s.recv(65536)):
            body += chunk
    backend = next((line.split(":", 1)[1].strip() for line in lines[1:]
                    if line.lower().startswith("x-backend:")), None)
    return int(lines[0].split()[1]), backend, body


class Planes(BothPlanes):
    def __init__(self, tmp: Path):
        super().__init__(tmp, POLICY, ("app", "folded", "exact"), warnings_allowed=True)
        self.ports = self.listener_ports


@pytest.fixture(scope="module")
def planes(tmp_path_factory):
    p = Planes(tmp_path_factory.mktemp("path-ignore-case"))
    yield p
    p.close()


@requires_envoy
@pytest.mark.parametrize("plane", ["envoy", "native"])
def test_a_deny_with_ignore_case_refuses_every_case_of_the_path(planes, plane):
    got = {}
    for target, _ in INBOUND:
        status, backend, body = send(planes.ports[plane, "inbound"], target, "client")
        got[target] = status
        if status == 403:
            assert body == b"RBAC: access denied", (plane, target, body)
        elif status == 200:
            assert backend == "app", (plane, target, status, body)
    assert got == dict(INBOUND), plane


@requires_envoy
@pytest.mark.parametrize("plane", ["envoy", "native"])
def test_a_route_with_ignore_case_takes_every_case_of_the_path(planes, plane):
    got = {}
    for target, _ in OUTBOUND:
        status, backend, body = send(planes.ports[plane, "outbound"], target, "api")
        assert status == 200, (plane, target, status, body)
        got[target] = backend
        assert json.loads(body)["target"] == target, (plane, target, body)   # forwarded as sent
    assert got == dict(OUTBOUND), plane


# ---- the compiler ------------------------------------------------------------------------------------

def diagnostics(text: str) -> list[str]:
    return [f"{d.code} {d.message}" for d in api.check([api.Text("t.mesh", text)]).diagnostics]


SERVICE = 'service api {\n  port 8080\n  endpoints ["10.0.0.1:8080"]\n}\n'


def test_ignore_case_on_a_regex_path_is_refused():
    found = diagnostics(SERVICE + 'routes api {\n  route r { match { path regex "/a.*" ignore_case } to api }\n}\n')
    assert found == ["E0312 `ignore_case` does not apply to a `regex` path"]


def test_a_folding_route_shadows_the_case_sensitive_routes_it_covers_and_not_the_reverse():
    text = SERVICE + """routes api {
  route folded { match { path prefix "/ADMIN" ignore_case } to api }
  route exact { match { path exact "/admin/users" } to api }
  route cased { match { path prefix "/Admin" } to api }
  route sensitive { match { path prefix "/docs" } to api }
  route other_case { match { path prefix "/docs/a" ignore_case } to api }
  route digits { match { path prefix "/1" } to api }
  route under_digits { match { path exact "/1/abc" ignore_case } to api }
}
"""
    found = [d for d in diagnostics(text) if d.startswith("W0401")]
    assert found == ["W0401 route `exact` can never match", "W0401 route `cased` can never match",
                     "W0401 route `under_digits` can never match"]


def test_a_folding_deny_covers_an_allow_of_another_case():
    text = SERVICE + """authorization api {
  default deny
  deny admin { path prefix "/admin" ignore_case }
  allow upper { path prefix "/ADMIN/tools" }
  allow other { path prefix "/admins" }
}
"""
    found = [d.split(":")[0] for d in diagnostics(text) if d.startswith("W0601")]
    assert found == ["W0601 allow rule `upper` can never apply"]


def lint(tmp_path: Path, rules: str) -> list[str]:
    path = tmp_path / "p.mesh"
    path.write_text(SERVICE + "authorization api {\n  default allow\n" + rules + "}\n")
    findings, _ = lint_files([str(path)], LintConfig(), use_cache=False)
    return [f"{d.code} {d.message}" for d in findings]


def test_lint_names_the_forms_that_pass_a_case_sensitive_deny(tmp_path):
    found = lint(tmp_path, '  deny admin { path prefix "/admin" }\n  deny { path exact "/api/keys" }\n'
                           '  deny { path prefix "/v1" ignore_case }\n  deny { path regex "/x.*" }\n')
    assert found == [
        "L0303 deny rule `admin` does not deny `/ADMIN`, `/admin;x` or `/%2561dmin`, which an application that "
        "ignores case, strips `;params` or decodes twice serves as `/admin`",
        "L0303 deny rule (deny) does not deny `/API/KEYS`, `/api;x/keys` or `/%2561pi/keys`, which an application "
        "that ignores case, strips `;params` or decodes twice serves as `/api/keys`",
    ]


def test_lint_names_the_forms_an_allow_rule_does_not_exclude(tmp_path):
    """`not path` in an allow rule under `default deny` is the deny list inside out: a form that
    passes the case-sensitive exclusion and that the rule's own path takes is allowed. Under
    `default allow` it excludes nothing that would be denied; an exclusion with `ignore_case`, or
    of a regex, and forms the rule's own case-sensitive path refuses are not named."""
    path = tmp_path / "p.mesh"
    path.write_text(SERVICE + "authorization api {\n  default deny\n"
                    '  allow app { path prefix "/"  not path prefix "/admin" }\n'
                    '  allow folded { path prefix "/x"  not path prefix "/x/admin" ignore_case'
                    '  not path regex "/x/d.*" }\n'
                    '  allow own { path prefix "/api/charges/"  not path exact "/api/charges/" }\n'
                    '  allow letters { path regex "/[A-Za-z]+/.*"  not path exact "/y/123" }\n'
                    "}\n")
    findings, _ = lint_files([str(path)], LintConfig(), use_cache=False)
    assert [(d.code, d.message, d.span.start_line_col()) for d in findings] == [
        ("L0303", "allow rule `app` excludes `/admin` but not `/ADMIN`, `/admin;x` or `/%2561dmin`, which an "
                  "application that ignores case, strips `;params` or decodes twice serves as `/admin`: the rule "
                  "allows them", (7, 32)),
        ("L0303", "allow rule `letters` excludes `/y/123` but not `/Y/123`, which an application that ignores case "
                  "serves as `/y/123`: the rule allows them", (10, 47)),
    ]
    assert findings[0].hint.startswith('add `ignore_case` (`not path prefix "/admin" ignore_case`) to exclude '
                                       "every case")
    # the usual nested exclusion: the forms vary after the rule's own prefix, which takes them
    path.write_text(SERVICE + "authorization api {\n  default deny\n"
                    '  allow api { path prefix "/api"  not path prefix "/api/admin" }\n}\n')
    (nested,) = lint_files([str(path)], LintConfig(), use_cache=False)[0]
    assert nested.message.startswith("allow rule `api` excludes `/api/admin` but not `/api/ADMIN`, `/api/admin;x` "
                                     "or `/api/%2561dmin`")
    path.write_text(SERVICE + "authorization api {\n  default allow\n"
                    '  allow app { path prefix "/"  not path prefix "/admin" }\n}\n')
    assert [d.code for d in lint_files([str(path)], LintConfig(), use_cache=False)[0]] == ["W0602"]  # no effect


def test_lint_without_letters_does_not_offer_ignore_case(tmp_path):
    path = tmp_path / "p.mesh"
    path.write_text(SERVICE + 'authorization api {\n  default allow\n  deny { path prefix "/123" }\n}\n')
    findings, _ = lint_files([str(path)], LintConfig(), use_cache=False)
    assert [d.code for d in findings] == ["L0303"]
    assert "`/123;x` or `/%253123`" in findings[0].message
    assert "ignore_case" not in (findings[0].hint or "") and "default deny" in (findings[0].hint or "")


def test_the_standard_deny_list_folds_case():
    text = 'import "std/authorization"\n' + SERVICE + \
        "authorization api {\n  default allow\n  use std.deny_admin_paths\n}\n"
    comp = api.compile([api.Text("t.mesh", text)])
    rules = comp.ir.services[0].authorization.rules
    assert {r.name: (r.path.kind, r.path.value, r.path.ignore_case) for r in rules} == {
        "std.deny_admin_paths.admin": ("segment_prefix", "/admin", True),
        "std.deny_admin_paths.debug": ("segment_prefix", "/debug", True),
        "std.deny_admin_paths.actuator": ("segment_prefix", "/actuator", True)}
    assert not re.search("L0303", " ".join(diagnostics(text)))


def test_the_formatter_and_the_language_server_know_ignore_case(tmp_path):
    from compiler.syntax import fmt
    from compiler.tooling.lsp import analysis

    messy = SERVICE + 'authorization api {\n  default allow\n' \
        '  deny admin {   path prefix "/admin"    ignore_case }\n}\n'
    formatted = fmt.format_text(messy, "t.mesh")
    assert 'deny admin { path prefix "/admin" ignore_case }' in formatted
    assert fmt.format_text(formatted, "t.mesh") == formatted
    doc = analysis.analyse_document((tmp_path / "t.mesh").as_uri(), formatted)
    text = analysis.hover(doc, formatted.index("ignore_case") + 2)
    assert text is not None and "path" in text and "regex" in text
    _, items = analysis.complete(doc, formatted, formatted.index("ignore_case"))
    assert "ignore_case" in [c.label for c in items]
