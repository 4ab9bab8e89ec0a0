"""runtime_proxy/decide/route_index.py gives routing.select_route a subset of a service's routes: the
first match must be the same as over all routes, for every request. Checked on the compiled
examples and the benchmark policy with many generated requests (no sockets)."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from runtime_proxy.config import loading
from runtime_proxy.decide.explain import Explanation
from runtime_proxy.decide.route_index import ANY, first_segment_of_value
from runtime_proxy.decide.routing import compile_select, explain_routes, select_route
from runtime_proxy.decide.table import compile_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


@pytest.mark.parametrize("kind, value, seg", [
    ("exact", "/a/b", "a"), ("exact", "/a", "a"), ("exact", "/", ""),
    ("segment_prefix", "/api", "api"), ("segment_prefix", "/api/v2", "api"), ("segment_prefix", "/", ANY),
    ("segment_prefix", "/api/", "api"), ("prefix", "/api", ANY), ("prefix", "/api/", "api"),
    ("regex", "/api/v1/users/[0-9]+", "api"), ("regex", "/apix?/y", ANY), ("regex", "/ap?i/y", ANY),
    ("regex", "/api/x|/other", ANY), ("regex", "(?i)/api/x", ANY), ("regex", "/[a-z]+/x", ANY),
    ("regex", "/api.v/x", ANY), ("regex", "/api/", "api"),
])
def test_first_segment_of_a_condition(kind, value, seg):
    assert first_segment_of_value(kind, value) == seg


# Routes with `ignore_case` (the index compares their first segment folded) among case-sensitive ones.
FOLDING = """
service api {
  port 8080
  subset a { endpoints ["10.0.0.1:8080"] }
  subset b { endpoints ["10.0.0.2:8080"] }
}
routes api {
  route admin { match { path prefix "/Admin" ignore_case  method GET } to api.a }
  route users { match { path prefix "/users" } to api.b }
  route login { match { path exact "/api/Login" ignore_case } to api.a }
  route assets { match { path raw_prefix "/static/" ignore_case } to api.b }
  route upper { match { path prefix "/USERS/x" ignore_case } to api.a }
  route digits { match { path prefix "/v1/Items" ignore_case } match { path exact "/v2" } to api.b }
}
"""


def compiled_configs(tmp_path):
    out = tmp_path / "native"
    folding = tmp_path / "folding.mesh"
    folding.write_text(FOLDING)
    for src in ("examples", os.path.join("benchmarks", "policies", "bench.mesh"), str(folding)):
        r = subprocess.run([sys.executable, "-m", "compiler", "compile", src, "--target", "native",
                            "--proxy", "all", "-o", str(out / os.path.basename(src))],
                           capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr
    return sorted(str(p) for p in out.rglob("*.native.json"))


def vocabulary(config):
    """Paths and header values that the config's conditions mention, and some that they do not."""
    paths, headers = {"/", "/x", "/other/thing", "//"}, {}
    for svc in config.services:
        for route in svc.routes:
            for m in route.matches:
                if m.path is not None and m.path.kind != "regex":
                    v = m.path.value
                    paths.update({v, v + "/", v + "/x", v + "x", v.rstrip("/") + "/123", v[:-1] or "/",
                                  v.upper(), v.lower() + "/x", v.swapcase(), v[:2].upper() + v[2:]})
                for h in m.headers:
                    headers.setdefault(h.name, set()).update({h.value or "", (h.value or "") + "x", "1"})
    paths.update({"/api/v1/users/42", "/api/v1/users/x", "/orders/7", "/re/123", "/static/app.js"})
    return sorted(paths), {k: sorted(v) for k, v in headers.items()}


def test_the_index_changes_no_routing_decision(tmp_path):
    rng = random.Random(7)
    checked = 0
    for path in compiled_configs(tmp_path):
        config = loading.load(path)
        table = compile_config(config.model_dump(mode="json"))
        index = table.index
        paths, header_values = vocabulary(config)
        for svc in table.services.values():
            generated = compile_select(svc.routes)   # the generated selection the proxy runs
            for _ in range(400):
                method = rng.choice(METHODS)
                p = rng.choice(paths)
                query = rng.choice(["", "q=1", "v=2", "page=2"])
                hdict = {name: [rng.choice(values)] for name, values in header_values.items() if rng.random() < 0.4}
                expected = select_route(svc, method, p, query, hdict)
                view = index[svc].view(method, p)
                got = select_route(view, method, p, query, hdict)
                assert got is expected, (path, svc.name, method, p, hdict)
                assert generated(method, p, query, hdict) is expected, (path, svc.name, method, p, hdict)
                # every view of several routes gets its generated function, whatever its size (the
                # proxy builds one only for a kept view, after COMPILE_AFTER requests: decide/request.py)
                if view.select is None and len(view.routes) > 1:
                    view.select = index[svc].compiled(view.routes, compile_select)
                if view.select is not None:
                    assert view.select(method, p, query, hdict) is expected
                # the decision's explanation tries every route and comes to the same answer
                assert explain_routes(svc, method, p, query, hdict, Explanation()) is expected
                checked += 1
    assert checked > 1000
