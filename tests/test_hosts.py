"""Hosts (issue 16): the Kubernetes names every service answers to, written hosts, wildcards and
the catch-all, through a real Envoy and the native proxy, and the same selection in the three
models (compiler/ir/names.py `HostIndex`, the native table, envoy_eval).

Envoy 1.40's virtual host selection, measured here: an exact domain (ASCII case-insensitive, the
port part of it), else the longest `*SUFFIX` wildcard, else the longest `PREFIX*` wildcard, else
`*`; a wildcard never matches by its empty part (`*.b.example.com` does not take
`b.example.com`). docs/semantics.md, "Hosts", states it."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import pytest

from compiler import api
from compiler.ir.names import HostIndex
from envoy_eval.evaluator import EnvoyModel
from runtime_proxy.decide.table import compile_config
from tests.envoy_support import requires_envoy
from tests.equivalence.compile import compile_text
from tests.planes_support import BothPlanes

POLICY = """
mesh { cluster_domain "corp.internal" }

service client {
  port 8000
  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" }
}

service api {
  port 8080
  namespace "web"
  hosts ["api.example.com", "*.example.com"]
  endpoints ["127.0.0.1:@API@"]
}

service deep {
  port 8081
  hosts ["*.b.example.com", "www.b.example.com"]
  endpoints ["127.0.0.1:@DEEP@"]
}

service store {
  port 8082
  hosts ["shop.*"]
  endpoints ["127.0.0.1:@STORE@"]
}

service fallback {
  port 8083
  hosts ["*"]
  endpoints ["127.0.0.1:@FALLBACK@"]
}
"""

# (Host, the service that answers): every rule of the selection, in both planes
CASES = [
    ("api", "api"), ("api:8080", "api"), ("api.web", "api"), ("api.web:8080", "api"),
    ("api.web.svc", "api"), ("api.web.svc:8080", "api"), ("api.web.svc.corp.internal", "api"),
    ("API.Web.Svc.Corp.Internal:8080", "api"),            # ASCII case-insensitive
    ("api.web.svc.cluster.local", "fallback"),            # the cluster domain is the mesh's
    ("api:9999", "fallback"),                             # another port: not one of its names
    ("api.example.com", "api"), ("api.example.com:8080", "api"),
    ("x.example.com", "api"), ("x.example.com:8080", "api"),   # the suffix wildcard, with its port form
    ("x.example.com:9999", "fallback"),                   # a port is part of the Host: no wildcard ends so
    ("x.b.example.com", "deep"),                          # the longest suffix wins
    ("b.example.com", "api"),                             # `*.b.example.com` needs something before `.b`
    ("www.b.example.com", "deep"), ("deep.default.svc.corp.internal", "deep"),
    ("shop.anything", "store"), ("shop.x:1", "store"),      # a prefix wildcard takes any port
    ("shop.example.com", "api"),                          # a suffix wildcard beats a prefix wildcard
    ("shop", "fallback"),                                 # `shop.*` needs something after `shop.`
    ("store.default", "store"), ("store:8082", "store"),
    ("elsewhere.org", "fallback"), ("client", "client"),
]


def send(port: int, host: str) -> tuple[int, str | None, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nhost: " + host.encode() + b"\r\nconnection: close\r\n\r\n")
        data = b""
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


@pytest.fixture(scope="module")
def planes(tmp_path_factory):
    p = BothPlanes(tmp_path_factory.mktemp("hosts"), POLICY, ("app", "api", "deep", "store", "fallback"))
    yield p
    p.close()


@requires_envoy
@pytest.mark.parametrize("plane", ["envoy", "native"])
def test_each_host_reaches_the_service_envoy_selects(planes, plane):
    got = {}
    for host, _ in CASES:
        status, backend, body = send(planes.listener_ports[plane, "outbound"], host)
        assert status == 200, (plane, host, status, body)
        assert json.loads(body)["target"] == "/x"
        got[host] = backend
    assert got == {h: "app" if s == "client" else s for h, s in CASES}, plane


# ---- the three models -----------------------------------------------------------------------------

def _compiled(text: str):
    c = api.compile([api.Text("hosts.mesh", text)])
    assert not c.diagnostics, c.diagnostics
    return c


def _hosts(rng: random.Random) -> list[str]:
    """Hosts near the written names: labels added or removed, ports, cases."""
    words = ["api", "web", "svc", "corp", "internal", "example", "com", "b", "www", "shop", "x", "deep",
             "default", "client", "cluster", "local", "fallback", "org", "store"]
    out = [h for h, _ in CASES]
    for _ in range(400):
        labels = [rng.choice(words) for _ in range(rng.randint(1, 5))]
        host = ".".join(labels)
        if rng.random() < 0.3:
            host = host.upper() if rng.random() < 0.5 else host.title()
        if rng.random() < 0.3:
            host += f":{rng.choice([8080, 8081, 8082, 8083, 8000, 1])}"
        out.append(host)
    return out


def test_the_compiler_the_native_table_and_the_envoy_evaluator_select_alike():
    text = POLICY
    for i, key in enumerate(("APP", "API", "DEEP", "STORE", "FALLBACK", "INBOUND", "OUTBOUND", "ADMIN")):
        text = text.replace(f"@{key}@", str(20000 + i))
    compiled = compile_text(text)
    index = HostIndex((s.name, s.domains) for s in _compiled(text).ir.services)
    table = compile_config(compiled.native)
    envoy_index = EnvoyModel._index(compiled.routes["virtual_hosts"])
    for host in _hosts(random.Random(16)):
        want = index.lookup(host)
        native = table.service_for_host(host)
        vh = EnvoyModel._vhost(envoy_index, host)
        assert (native.name if native else None) == want, host
        assert (vh["name"] if vh else None) == want, host
    for host, service in CASES:
        assert index.lookup(host) == service, host


def test_a_program_without_wildcards_compiles_no_wildcard_table():
    table = compile_config(compile_text(
        'service client {\n  port 80\n  endpoints ["10.0.0.1:80"]\n}\n'
        'service b {\n  port 81\n  hosts ["b.example.com"]\n  endpoints ["10.0.0.2:81"]\n}\n').native)
    assert table.wildcards is None
    assert table.service_for_host("B.example.com:81").name == "b"
    assert table.service_for_host("b.default.svc.cluster.local").name == "b"
    assert table.service_for_host("c.example.com") is None


def _check(text: str) -> list[tuple[str, str]]:
    return [(d.code, d.message) for d in api.check([api.Text("t.mesh", text)]).diagnostics]


def test_a_host_claimed_twice_names_both_services_and_both_places():
    text = ('service a {\n  port 80\n  hosts ["x.example.com"]\n  endpoints ["10.0.0.1:80"]\n}\n'
            'service b {\n  port 80\n  hosts ["X.example.com", "*"]\n  endpoints ["10.0.0.2:80"]\n}\n'
            'service c {\n  port 80\n  hosts ["*"]\n  endpoints ["10.0.0.3:80"]\n}\n')
    diags = api.check([api.Text("t.mesh", text)]).diagnostics
    assert [(d.code, d.message) for d in diags] == [
        ("E0212", "Host `x.example.com` is claimed by services `a` and `b`"),
        ("E0212", "Host `*` is claimed by services `b` and `c`")]
    first = diags[0]
    assert (first.span.start_line_col()[0], first.labels[0].span.start_line_col()[0]) == (8, 3)


def test_the_kubernetes_name_of_one_service_claimed_by_another_is_an_error():
    text = ('service a {\n  port 80\n  namespace "n"\n  endpoints ["10.0.0.1:80"]\n}\n'
            'service b {\n  port 80\n  hosts ["a.n.svc.cluster.local"]\n  endpoints ["10.0.0.2:80"]\n}\n')
    assert _check(text) == [("E0212", "Host `a.n.svc.cluster.local` is claimed by services `a` and `b`")]


@pytest.mark.parametrize("host", ["a.*.com", "*api.example.com", "api*", "**", "*.", "a..b", "-a.com", "a b",
                                  "x.com:port", "*:80", "a.*:80", "é.com"])
def test_an_invalid_host_is_a_located_error_with_a_hint(host):
    text = f'service a {{\n  port 80\n  hosts ["{host}"]\n  endpoints ["10.0.0.1:80"]\n}}\n'
    diags = api.check([api.Text("t.mesh", text)]).diagnostics
    assert [d.code for d in diags] == ["E0211"], host
    assert diags[0].span.start_line_col()[0] == 3 and diags[0].hint


def test_a_cluster_domain_that_is_not_a_dns_name_is_refused():
    assert _check('mesh { cluster_domain "Corp Internal" }\n') == [
        ("E0312", "`Corp Internal` is not a valid cluster domain")]


def test_the_cluster_domain_is_written_into_every_service_name(tmp_path: Path):
    c = _compiled('mesh { cluster_domain "corp.internal" }\n'
                  'service a {\n  port 80\n  endpoints ["10.0.0.1:80"]\n}\n')
    assert c.ir.services[0].domains == ("a", "a:80", "a.default", "a.default:80", "a.default.svc",
                                        "a.default.svc:80", "a.default.svc.corp.internal",
                                        "a.default.svc.corp.internal:80")


def test_an_empty_hosts_list_is_refused():
    assert _check('service a {\n  port 80\n  hosts []\n  endpoints ["10.0.0.1:80"]\n}\n') == [
        ("E0301", "the hosts list of service `a` is empty")]


def test_meshc_trace_says_which_name_took_the_host():
    from compiler.cli.trace_render import _host_text

    domains = ("api", "api:80", "*.example.com", "*.b.example.com", "shop.*", "*")
    assert _host_text("API:80", domains, "api") == "`API:80` is a domain of api"
    assert _host_text("x.b.example.com", domains, "api") == \
        "`x.b.example.com` matches the wildcard `*.b.example.com` of api (no exact domain holds it)"
    assert _host_text("shop.eu", domains, "api") == \
        "`shop.eu` matches the wildcard `shop.*` of api (no exact domain holds it)"
    assert _host_text("elsewhere", domains, "api") == \
        "`elsewhere` is taken by the catch-all `*` of api (no other domain holds it)"
