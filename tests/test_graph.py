"""`meshc graph`: who may call whom, checked three ways, a golden of the page, and the command.

- By hand: the caller edges of examples/zero-trust.mesh, written from reading the file.
- By the native proxy's own decision: for every example and every pair, probe requests built
  from the destination's rules go through `runtime_proxy.decide.authz.decide` on the compiled
  native config of the destination (the function the proxy runs); an `allowed` pair admits
  every probe, a `denied` one none, a `partial` one some (and denies some). A pair outside the
  caller's scope has no destination in the caller's native config.
- In the output: every service is a node and every pair an edge with its decision.

The browser test (tests/test_graph_browser.py) renders the page in Chromium.
"""

from __future__ import annotations

import contextlib
import functools
import html.parser
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from compiler import api, ir
from compiler.semantic.matching import regex_example
from compiler.tooling.graph.model import build
from compiler.tooling.graph.render import html_page, svg_document
from runtime_proxy.decide.authz import decide
from runtime_proxy.decide.table import compile_config

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "graph" / "zero-trust.svg"
EXAMPLES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*.mesh")
                  if not p.stem.endswith("_test"))  # not the policy tests


@functools.cache
def compiled(*files: str) -> api.Compilation:
    with contextlib.chdir(ROOT):
        comp = api.compile(list(files))
    assert not comp.has_errors, [d.message for d in comp.diagnostics]
    return comp


def program(*files: str) -> ir.Program:
    p = compiled(*files).ir
    assert p is not None
    return p


# ---- by hand -----------------------------------------------------------------------------------

# examples/zero-trust.mesh (with shop.mesh, which it imports): the callers each destination's rules
# name (`from service`, `from namespace`, `from same_namespace`), by reading the file.
ZERO_TRUST_NAMED = {
    ("frontend", "catalog"),      # allow browse { from namespace "web" ... }: frontend is in `web`
    ("frontend", "cart"),         # allow frontend { from service frontend  path prefix "/carts" }
    ("checkout", "cart"),         # allow checkout { from service checkout ... }
    ("frontend", "checkout"),     # allow place_order { from service frontend ... }
    ("checkout", "payments"),     # allow checkout { from service checkout ... }
    ("catalog", "inventory"),     # allow same_namespace { from same_namespace ... }: `shop`
    ("cart", "inventory"),
    ("checkout", "inventory"),    # (and allow reserve { from service checkout ... })
    ("payments", "inventory"),
}
# Every one of them restricts path or method: partial. shipping has no authorization block:
# every caller may make every request, and no rule names one.
ZERO_TRUST_SERVICES = ["cart", "catalog", "checkout", "frontend", "inventory", "payments", "shipping"]


def test_zero_trust_by_hand():
    g = build(program("examples/zero-trust.mesh"))
    assert [s.name for s in g.services] == ZERO_TRUST_SERVICES
    named = {(p.caller, p.dest) for p in g.pairs if p.access.named and p.access.decision != "denied"}
    assert named == ZERO_TRUST_NAMED
    assert {p.access.decision for p in g.pairs if (p.caller, p.dest) in ZERO_TRUST_NAMED} == {"partial"}
    allowed = {(p.caller, p.dest) for p in g.pairs if p.access.decision == "allowed"}
    assert allowed == {(c, "shipping") for c in ZERO_TRUST_SERVICES if c != "shipping"}
    # payments' `deny stray_writes` (no `from`) can match every caller: never "every request" there
    assert g.pair("checkout", "payments").access.denying == ("stray_writes",)
    # a caller without identity gets the health checks and frontend's public pages, no more
    by_name = {s.name: s for s in g.services}
    assert by_name["frontend"].anonymous.admitting == ("home", "pages", "cart", "assets")
    assert by_name["shipping"].anonymous.decision == "allowed"


def test_canary_denies_every_other_caller():
    g = build(program("examples/canary.mesh"))
    into = {p.caller: p.access.decision for p in g.pairs if p.dest == "recommendations"}
    assert into.pop("frontend") == "partial"   # allow from_frontend { from service frontend  method [GET, HEAD] }
    assert set(into.values()) == {"denied"} and len(into) == 6
    # and outside their scopes: their sidecars have no recommendations destination
    assert all("scope" in g.pair(c, "recommendations").access.reason for c in into)


# A program with what the examples lack: a deny rule that names a caller (for every request, and
# for a path), `from` rules on a plaintext-only service (W0604), routes that split and mirror to
# other services.
EDGES = """\
mesh { trust_domain "t.local"  mtls strict }

service gateway {
  port 8000
  namespace "edge"
  endpoints ["127.0.0.1:18000"]
}

service api {
  port 8001
  namespace "core"
  subset v1 { endpoints ["127.0.0.1:18101"] }
  subset v2 { endpoints ["127.0.0.1:18102"] }
}

service legacy {
  port 8002
  namespace "core"
  mtls disable
  endpoints ["127.0.0.1:18201"]
}

service audit {
  port 8003
  namespace "ops"
  endpoints ["127.0.0.1:18301"]
}

routes api {
  route migrate {
    match { path prefix "/old" }
    split { api.v1 50  legacy 30  api.v2 20 }
  }
  route copy {
    to api.v2
    mirror audit 10%
  }
}

authorization api {
  default allow
  deny no_gateway_admin { from service gateway  path prefix "/admin" }
  deny no_audit { from service audit }
}

authorization legacy {
  default deny
  allow api { from service api }
}

authorization audit {
  default deny
  allow all_core { from namespace "core" }
}
"""


def edges_program() -> tuple[api.Compilation, ir.Program]:
    comp = api.compile([api.Text("edges.mesh", EDGES)])
    assert comp.ir is not None, [d.message for d in comp.diagnostics]
    return comp, comp.ir


def test_named_denials_plaintext_and_route_edges():
    _, prog = edges_program()
    g = build(prog)
    audit_api = g.pair("audit", "api").access   # deny no_audit { from service audit }, under default allow
    assert (audit_api.decision, audit_api.named) == ("denied", True) and "no_audit" in audit_api.reason
    gateway_api = g.pair("gateway", "api").access   # deny ... { from service gateway  path prefix "/admin" }
    assert (gateway_api.decision, gateway_api.named) == ("partial", True)
    assert g.pair("legacy", "api").access.decision == "allowed"   # the default, nothing names legacy
    api_legacy = g.pair("api", "legacy").access   # `from service api` on an `mtls disable` service
    assert (api_legacy.decision, api_legacy.named) == ("denied", True) and "plaintext" in api_legacy.reason
    assert {(p.caller, p.dest) for p in g.pairs if p.access.decision == "allowed" and p.access.named} == {
        ("api", "audit"), ("legacy", "audit")}   # allow all_core { from namespace "core" }
    links = {(link.target, link.kind, link.label) for link in g.links}
    assert links == {("legacy", "split", "migrate: 30/100"), ("audit", "mirror", "copy: mirror 10%")}
    text = svg_document(g)
    found = _elements(text)
    shown = {(a["data-from"], a["data-to"]) for tag, a in found
             if tag == "path" and {"pair", "named"} <= set((a.get("class") or "").split())}
    assert ("audit", "api") in shown and ("api", "legacy") in shown   # named denials are drawn by default
    assert {(a["data-from"], a["data-to"], a["data-kind"]) for tag, a in found
            if tag == "path" and "link" in (a.get("class") or "").split() and "data-from" in a} == {
        ("api", "legacy", "split"), ("api", "audit", "mirror")}


# ---- by the native proxy's decision ---------------------------------------------------------------

def _probes(dest: ir.Service) -> list[tuple[str, str, dict[str, list[str]]]]:
    """Requests that the destination's rules take (one per rule), and a few that none targets."""
    out = [("GET", "/", {}), ("POST", "/unnamed/path", {}), ("DELETE", "/x", {"x-any": ["1"]})]
    for rule in dest.authorization.rules:
        method = rule.methods[0] if rule.methods else "GET"
        path = "/"
        if rule.path is not None:
            if rule.path.kind == "regex":
                path = regex_example(rule.path.value) or "/"
            elif rule.path.kind == "segment_prefix":
                path = rule.path.value.rstrip("/") + "/item"
            else:
                path = rule.path.value
        headers = {h.name: [h.value or "1"] for h in rule.headers if h.kind in ("present", "exact")}
        out.append((method, path, headers))
        out.append(("PATCH", path, {}))
    return out


@pytest.mark.parametrize("files", [[f] for f in EXAMPLES] + [["examples"], ["edges"]], ids=lambda f: f[0])
def test_decisions_agree_with_the_native_proxy(files):
    from compiler.cli.inputs import expand_paths

    if files == ["edges"]:
        comp, prog = edges_program()
    else:
        with contextlib.chdir(ROOT):
            paths, _ = expand_paths(files)
        comp, prog = compiled(*paths), program(*paths)
    names = [s.name for s in prog.services]
    outputs = comp.emit("native", names).outputs()
    configs = {name: orjson.loads(outputs[f"{name}.native.json"]) for name in names}
    by_name = {s.name: s for s in prog.services}
    g = build(prog)
    assert len(g.pairs) == len(names) * (len(names) - 1)
    for pair in g.pairs:
        dest = by_name[pair.dest]
        reachable = any(s["name"] == pair.dest and s["domains"] for s in configs[pair.caller]["services"])
        if not reachable:
            assert pair.access.decision == "denied", pair
            continue
        table = compile_config(configs[pair.dest])
        identity = None if dest.mtls.mode == "disable" else by_name[pair.caller].identity
        admitted = [decide(table.authorization, identity, m, p, h)[0] for m, p, h in _probes(dest)]
        expected = {"allowed": all(admitted), "denied": not any(admitted),
                    "partial": any(admitted) and not all(admitted)}[pair.access.decision]
        assert expected, (pair, admitted)


# ---- the output ------------------------------------------------------------------------------------

class _Elements(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def _elements(text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Elements()
    parser.feed(text)
    return parser.found


@pytest.mark.parametrize("render", ["html", "svg"])
def test_every_service_and_pair_is_in_the_output(render):
    prog = program("examples/zero-trust.mesh", "examples/canary.mesh")
    g = build(prog)
    text = html_page(g, "t") if render == "html" else svg_document(g)
    found = _elements(text)
    nodes = {a["data-service"] for tag, a in found if "node" in (a.get("class") or "").split()}
    assert nodes == {s.name for s in prog.services}
    edges = {(a["data-from"], a["data-to"]): a["data-decision"] for tag, a in found
             if tag == "path" and "pair" in (a.get("class") or "").split()}
    assert edges == {(p.caller, p.dest): p.access.decision for p in g.pairs}
    cells = {(a["data-from"], a["data-to"]) for tag, a in found if "cell" in (a.get("class") or "").split()}
    assert len(cells) == (len(prog.services) + 1) * len(prog.services)   # every caller, and one without identity
    # self-contained: nothing fetched from anywhere (the SVG namespace is a name, not a fetch)
    for tag, a in found:
        for key in ("href", "src", "xlink:href"):
            assert not (a.get(key) or "").startswith(("http:", "https:", "//")), (tag, a)
    if render == "html":
        assert "http://" not in text and "https://" not in text
        assert "default-src 'none'" in text


def test_split_weights_are_drawn():
    text = svg_document(build(program("examples/canary.mesh")))
    segments = [a for tag, a in _elements(text) if "segment" in (a.get("class") or "").split()]
    assert [(a["data-subset"], a["data-weight"]) for a in segments] == [("v1", "90"), ("v2", "10")]


def test_golden_svg(update_goldens):
    text = svg_document(build(program("examples/zero-trust.mesh")))
    if update_goldens:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert GOLDEN.exists(), "no golden yet: run pytest --update-goldens"
    assert text == GOLDEN.read_text(encoding="utf-8"), "run pytest --update-goldens and look at the diff"


def test_output_is_deterministic():
    a = html_page(build(program("examples/zero-trust.mesh", "examples/canary.mesh")), "x")
    compiled.cache_clear()
    b = html_page(build(program("examples/zero-trust.mesh", "examples/canary.mesh")), "x")
    assert a == b


# ---- the command -----------------------------------------------------------------------------------

def meshc(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "compiler", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_command_writes_html_and_svg(tmp_path):
    page, picture = tmp_path / "policy.html", tmp_path / "out" / "policy.svg"
    r = meshc("graph", "examples/zero-trust.mesh", "-o", str(page))
    assert r.returncode == 0, r.stderr
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "7 services" in r.stderr
    r = meshc("graph", "examples/zero-trust.mesh", "-o", str(picture))
    assert r.returncode == 0, r.stderr
    assert picture.read_text(encoding="utf-8") == GOLDEN.read_text(encoding="utf-8")
    r = meshc("graph", "examples/zero-trust.mesh", "--format", "svg", "-o", "-")
    assert r.returncode == 0 and r.stdout == GOLDEN.read_text(encoding="utf-8")


def test_command_refuses_bad_input_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.mesh"
    bad.write_text("service a {\n  port 80\n  endpoints [\"127.0.0.1:1\"]\n}\nroutes b { route r { to a } }\n")
    out = tmp_path / "policy.html"
    r = meshc("graph", str(bad), "-o", str(out))
    assert r.returncode == 1
    assert f"{bad}:5:" in r.stderr and "E0" in r.stderr   # a located diagnostic
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["bad.mesh"]
    r = meshc("graph", str(bad), "-o", str(out), "--output-format", "json")
    assert r.returncode == 1 and orjson.loads(r.stdout)   # the diagnostics as JSON
    assert not out.exists()


def test_command_usage_errors(tmp_path):
    r = meshc("graph", "examples/zero-trust.mesh", "-o", str(tmp_path / "policy.png"))
    assert r.returncode == 2 and "--format html|svg" in r.stderr
    r = meshc("graph", "examples/zero-trust.mesh", "-o", "/proc/policy.html")
    assert r.returncode == 2 and "cannot write" in r.stderr
    r = meshc("graph", str(tmp_path / "missing.mesh"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_a_program_without_services_is_a_clear_error_and_writes_nothing(tmp_path):
    empty = tmp_path / "empty.mesh"
    empty.write_text("mesh {}\n")
    out = tmp_path / "policy.html"
    for args in (("-o", str(out)), ("--format", "svg")):
        r = meshc("graph", str(empty), *args)
        assert r.returncode == 1 and "Traceback" not in r.stderr and r.stdout == "", r.stderr
        assert r.stderr.strip().splitlines()[-1] == \
            "meshc: error: no services to draw: the program declares no `service`"
    assert sorted(os.listdir(tmp_path)) == ["empty.mesh"]
