"""`assert never|always` blocks, proven by `meshc check` (compiler/verify/asserts.py,
docs/testing.md).

Every violation's counterexample is replayed here through the native proxy's own decision over
the destination's compiled native config, independently of the prover's bookkeeping; a
hypothesis test holds "proven" against random requests and "violated" against its counterexample
on random small policies.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import api, cli
from compiler.verify.asserts import prove
from runtime_proxy.decide.request import Draws, Head, decide_request, header_dict
from runtime_proxy.decide.table import compile_config

ROOT = Path(__file__).resolve().parent.parent
HEAD = 'mesh { trust_domain "t.local"  mtls MODE }\n' + "".join(
    f'service {n} {{ port 80  namespace "{ns}"  endpoints ["127.0.0.1:1"] }}\n'
    for n, ns in (("api", "core"), ("web", "public"), ("ops", "ops")))
COUNTER = re.compile(r"`([A-Z]+) (\S+)`((?: with `[^`]*`(?:, `[^`]*`)*)?) from (?:`(\S+)`|a caller without)")


def prove_text(tmp_path: Path, body: str, mode: str = "strict"):
    path = tmp_path / "p.mesh"
    path.write_text(HEAD.replace("MODE", mode) + body)
    comp = api.compile([str(path)], shard=False)
    assert not comp.has_errors, [str(d) for d in comp.diagnostics]
    diags, proven = prove(comp)
    return comp, diags, proven


def admitted(comp, dest: str, method: str, path: str, headers: list[tuple[str, str]], peer: str | None,
             mode: str = "permissive") -> bool:
    """The native proxy's decision on one request at `dest`'s inbound listener (under `mtls strict`
    the listener refuses a caller without a certificate before any decision)."""
    if peer is None and mode == "strict":
        return False
    data = orjson.loads(comp.emit("native", [dest]).files[f"{dest}.native.json"])
    raw = [(b"host", dest.encode())] + [(n.encode(), v.encode()) for n, v in headers]
    table = compile_config(data)
    d = decide_request(table, Head(True, method, path, raw, header_dict(raw)[0], peer=peer),
                       Draws(0.0, 0.0, 0, 0.0, b"t"))
    return d.status == 0 and d.cluster == table.app.cluster     # no local reply: on to the application


def replay(comp, diag, dest: str, mode: str = "permissive") -> bool:
    m = COUNTER.search(diag.message)
    assert m, diag.message
    headers = re.findall(r"`([^:`]+): ([^`]*)`", m.group(3) or "")
    return admitted(comp, dest, m.group(1), m.group(2), headers, m.group(4), mode)


POLICY = """
authorization api {
  default deny
  deny admin { path prefix "/api/admin"  ignore_case }
  allow web { from service web  path prefix "/api"  method [GET, POST] }
  allow ops { from namespace "ops" }
  allow reads { from service web  path regex "/items/[0-9]+"  method GET }
}
"""


def test_the_shipped_examples_prove_their_asserts():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["check", str(ROOT / "examples")])
    assert code == 0, err.getvalue()
    assert "proved 7 of 7 asserts" in out.getvalue()


def test_proven_properties_report_nothing(tmp_path):
    _, diags, proven = prove_text(tmp_path, POLICY + """
assert never { from service web  to api  path prefix "/api/admin" }
assert never { from service web  to api  path prefix "/API/Admin" }
assert never { from unauthenticated  to api }
assert always { from service web  to api  method GET  path prefix "/api/items" }
assert always { from namespace "ops"  to api  path prefix "/ops" }
assert never { from service web  to api  method [PUT, DELETE] }
""")
    assert diags == [] and proven == 6


def test_violations_carry_a_counterexample_the_decision_confirms(tmp_path):
    comp, diags, proven = prove_text(tmp_path, POLICY + """
assert never { from service web  to api  path prefix "/api/adm" }
assert always { from service web  to api  path prefix "/api" }
assert never { from any  to api  path raw_prefix "/api/admin" }
assert always { from service web  to api  method GET  path prefix "/items" }
""")
    assert proven == 0 and [d.code for d in diags] == ["E0851"] * 4, [d.message for d in diags]
    never_1, always_2, never_3, always_4 = diags
    assert replay(comp, never_1, "api") is True          # admitted although `never`
    assert replay(comp, always_2, "api") is False        # e.g. /api/admin: the deny rule
    assert "/api/admin" in always_2.message.lower() or "PUT" in always_2.message or "DELETE" in always_2.message
    assert replay(comp, never_3, "api") is True          # raw prefix `/api/admin…` reaches /api/adminX
    assert replay(comp, always_4, "api") is False        # /items itself is not /items/N


def test_unauthenticated_callers_under_each_mtls_mode(tmp_path):
    body = 'authorization api {\n  default allow\n}\nassert always { from unauthenticated  to api }\n'
    _, strict, _ = prove_text(tmp_path, body, "strict")
    assert [d.code for d in strict] == ["E0851"] and "without a verified identity" in strict[0].message
    assert "refuses a plaintext connection" in strict[0].hint
    _, permissive, proven = prove_text(tmp_path, body, "permissive")
    assert permissive == [] and proven == 1


def test_headers_sent_several_times_are_part_of_the_proof(tmp_path):
    comp, diags, _ = prove_text(tmp_path, """
authorization api {
  default deny
  deny guest { header "x-role" exact "guest" }
  allow admin { header "x-role" exact "admin" }
}
assert never { to api  header "x-role" exact "guest" }
assert always { to api  header "x-role" exact "admin" }
""", "permissive")
    assert [d.code for d in diags] == ["E0851"]
    assert "`x-role: admin`" in diags[0].message and "`x-role: guest`" in diags[0].message
    assert replay(comp, diags[0], "api") is False


def test_regexes_outside_the_prover_are_not_proven(tmp_path):
    _, diags, proven = prove_text(tmp_path, """
authorization api {
  default deny
  allow names { path regex "/[[:alpha:]]+" }
}
assert never { from service web  to api  path prefix "/admin" }
""")
    assert proven == 0 and [d.code for d in diags] == ["W0850"] and "[:" in diags[0].message


def test_a_check_without_asserts_imports_neither_the_prover_nor_interegular(tmp_path):
    policy = tmp_path / "p.mesh"
    policy.write_text(HEAD.replace("MODE", "strict") + 'authorization api {\n  default deny\n'
                      '  allow a { path prefix "/a" }\n}\n')
    script = ("import sys, contextlib, io\nfrom compiler import cli\n"
              "with contextlib.redirect_stdout(io.StringIO()): code = cli.main(['check', sys.argv[1]])\n"
              "print(code, 'compiler.verify.asserts' in sys.modules, 'interegular' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", script, str(policy)], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True)
    assert run.stdout.split() == ["0", "False", "False"]
    with policy.open("a") as fh:   # an assert without a regex: the prover, still not interegular
        fh.write('assert never { from unauthenticated  to api }\n')
    run = subprocess.run([sys.executable, "-c", script, str(policy)], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True)
    assert run.stdout.split() == ["0", "True", "False"]


# ---- random policies ---------------------------------------------------------------------------

PATHS = ["/", "/a", "/a/", "/ab", "/a/b", "/a/b/c", "/a/bc", "/b", "/A", "/a/B", "/A/b", "/b/a"]
CALLERS = ['from service web', 'from service ops', 'from namespace "public"', 'from identity "spiffe://t.local/*"']
conds = st.lists(st.sampled_from(
    [f'path {k} "{p}"' for k in ("exact", "prefix", "raw_prefix") for p in ("/a", "/a/b", "/b")]
    + ['path prefix "/a"  ignore_case', 'path regex "/a[a-z/]*"', "method GET", "method [GET, POST]",
       'header "x" exact "1"', 'header "x" prefix "1"', 'header "x" present', 'not header "x" exact "1"']
    + CALLERS), max_size=3, unique=True)


def _unique_kinds(items: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for c in items:
        seen.setdefault(c.split()[0] if not c.startswith("not") else "nh", c)
    return list(seen.values())


@settings(max_examples=int(os.environ.get("ASSERT_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(["permissive", "strict"]), callers_in_rules=st.booleans(),
       default=st.sampled_from(["allow", "deny"]),
       rules=st.lists(st.tuples(st.sampled_from(["allow", "deny"]), conds), min_size=1, max_size=3),
       kind=st.sampled_from(["never", "always"]), pattern=conds,
       caller=st.sampled_from([None, "from service web", 'from namespace "public"', "from unauthenticated",
                               "from any", 'from identity "spiffe://t.local/ns/o/*"']),
       requests=st.lists(st.tuples(st.sampled_from([None, "spiffe://t.local/ns/public/sa/web",
                                                    "spiffe://t.local/ns/ops/sa/ops", "spiffe://other/x",
                                                    "spiffe://t.local/ns/o/x"]),
                                   st.sampled_from(["GET", "POST", "PUT"]), st.sampled_from(PATHS),
                                   st.sampled_from([[], [("x", "1")], [("x", "12")], [("x", "2")]])),
                         min_size=20, max_size=20))
def test_random_policies_proven_means_no_random_request_violates(tmp_path, mode, callers_in_rules, default, rules,
                                                                 kind, pattern, caller, requests):
    # policies whose rules name no caller too (every identity one class), under strict mTLS too
    # (only callers with a certificate get in): the prover must still try an mTLS caller
    rules = [(action, [x for x in c if callers_in_rules or not x.startswith("from")]) for action, c in rules]
    body = f"authorization api {{\n  default {default}\n" + "".join(
        f"  {action} {{ {'  '.join(_unique_kinds(c))} }}\n" for action, c in rules) + "}\n"
    pattern = [c for c in _unique_kinds(pattern) if not c.startswith("from")]
    if caller:
        pattern.insert(0, caller)
    body += f"assert {kind} {{ to api  {'  '.join(pattern)} }}\n"
    comp, diags, proven = prove_text(tmp_path, body, mode)
    if diags and diags[0].code == "W0850":
        return
    vacuous = [d.code for d in diags] == ["W0851"]
    if proven or vacuous:
        from compiler.semantic.conditions import lower_rule
        from compiler.syntax import ast
        from runtime_proxy.decide.authz import rule_matches
        from runtime_proxy.decide.table import CAuthzRule

        ctx = comp.context
        a = ctx.asserts[0]
        conditions = tuple(c for c in a.conditions if not (isinstance(c, ast.FromCond)
                                                             and c.kind in ("unauthenticated", "any")))
        rule = lower_rule(ctx, ctx.services["api"], ast.Rule("allow", None, conditions, a.span), "assert")
        test_rule = CAuthzRule(orjson.loads(orjson.dumps(rule)))
        for peer, method, path, headers in requests:
            raw = [(n.encode(), v.encode()) for n, v in headers]
            if not rule_matches(test_rule, peer, method, path, header_dict(raw)[0]):
                continue
            if caller == "from unauthenticated" and peer is not None:
                continue
            assert not vacuous, (body, peer, method, path, headers)
            assert admitted(comp, "api", method, path, headers, peer, mode) is (kind == "always"), (
                mode, body, peer, method, path)
    else:
        assert [d.code for d in diags] == ["E0851"]
        assert replay(comp, diags[0], "api", mode) is (kind == "never"), (mode, body, diags[0].message)


def test_connect_and_vacuous_asserts_are_never_counted_as_proven(tmp_path):
    comp, diags, proven = prove_text(tmp_path, """
authorization api {
  default allow
}
assert always { to api  method CONNECT }
assert always { to api  header "x" present  header "x" absent }
assert never { to api  method CONNECT }
""", "permissive")
    assert proven == 1 and [d.code for d in diags] == ["E0851", "W0851"], [d.message for d in diags]
    assert "`CONNECT /" in diags[0].message and replay(comp, diags[0], "api") is False


def test_regex_rules_are_proven_exactly(tmp_path):
    comp, diags, proven = prove_text(tmp_path, POLICY + """
assert never { from service web  to api  path regex "/items/[a-z]+" }
assert always { from service web  to api  GET "/items/12" }
assert never { from service web  to api  method GET  path prefix "/items" }
""")
    assert proven == 2 and [d.code for d in diags] == ["E0851"], [d.message for d in diags]
    assert re.search(r"`GET /items/[0-9]+` from `spiffe://t.local/ns/public/sa/web` \(service `web`\)",
                     diags[0].message), diags[0].message
    assert replay(comp, diags[0], "api") is True


def test_characters_outside_the_printable_universe_that_a_rule_names_are_searched(tmp_path):
    comp, diags, _ = prove_text(tmp_path, """
authorization api {
  default deny
  allow bearer { header "authorization" prefix "Bearer " }
}
assert never { to api  header "authorization" present }
""", "permissive")
    assert [d.code for d in diags] == ["E0851"], [d.message for d in diags]
    assert "`authorization: Bearer `" in diags[0].message and replay(comp, diags[0], "api") is True


def test_the_language_server_knows_asserts():
    from compiler.tooling.lsp import analysis

    path = str(ROOT / "examples" / "zero-trust.mesh")
    text = Path(path).read_text()
    found = analysis.analyse_document(analysis.path_to_uri(path), text)
    to = text.index('to payments  path prefix "/api" }') + 3
    target = analysis.definition(found, to)
    assert target is not None and target[0].endswith("shop.mesh")
    assert "proves" in (analysis.hover(found, text.index("assert never") + 1) or "")


# ---- every caller is tried (a reviewer's findings) ---------------------------------------------

H_MESH = ('mesh { trust_domain "t.local"  mtls strict }\n'
          'service api { port 80  namespace "core"  endpoints ["127.0.0.1:1"] }\n'
          'service web { port 80  namespace "public"  endpoints ["127.0.0.1:1"] }\n')


def _prove_h(tmp_path: Path, body: str):
    path = tmp_path / "h.mesh"
    path.write_text(H_MESH + body)
    comp = api.compile([str(path)], shard=False)
    assert not comp.has_errors, [str(d) for d in comp.diagnostics]
    return (comp, *prove(comp))


def test_an_assert_without_a_caller_tries_every_mtls_caller(tmp_path):
    # no rule names a `from`: the identities are one class, and web's sidecar's GET is allowed
    comp, diags, proven = _prove_h(tmp_path, 'authorization api { default deny  allow reads { method GET } }\n'
                                   'assert never { to api  method GET }\n')
    assert proven == 0 and [d.code for d in diags] == ["E0851"], [d.message for d in diags]
    assert "(service `web`)" in diags[0].message
    assert replay(comp, diags[0], "api") is True


def test_from_any_without_rules_tries_every_mtls_caller(tmp_path):
    for n, body in enumerate(('assert never { from any to api path prefix "/admin" }\n',
                              'authorization api { default deny  allow reads { method GET } }\n'
                              'assert never { from any  to api  method GET }\n')):
        (tmp_path / str(n)).mkdir()
        comp, diags, proven = _prove_h(tmp_path / str(n), body)
        assert proven == 0 and [d.code for d in diags] == ["E0851"], [d.message for d in diags]
        assert "without a verified identity" not in diags[0].message   # strict: only mTLS callers get in
        assert replay(comp, diags[0], "api") is True


def test_header_values_only_non_printable_characters_reach_are_not_proven(tmp_path):
    _, diags, proven = _prove_h(tmp_path, 'authorization api {\n  default deny\n'
                                '  allow odd { header "x" regex "[^!-~]+" }\n}\n'
                                'assert never { to api  header "x" present }\n')
    assert proven == 0 and [d.code for d in diags] == ["W0850"], [d.message for d in diags]
    assert "outside printable ASCII" in diags[0].message
    # a regex that tells them from nothing else is still proven
    _, diags, proven = _prove_h(tmp_path, 'authorization api { default deny  allow odd { header "x" regex "a.*" } }\n'
                                'assert never { from unauthenticated  to api  header "x" present }\n')
    assert diags == [] and proven == 1
