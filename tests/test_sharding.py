"""Sharded analysis (compiler/sharding.py) must be invisible: the same diagnostics and the
byte-identical IR as the sequential path, or a fallback to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from compile_scale import generate  # noqa: E402

from compiler import api, sharding  # noqa: E402
from compiler.core.diagnostics import render_human  # noqa: E402


def sequential(path):
    result = api.compile([path], shard=False)
    text = result.ir_json() if result.ir is not None else None
    return [render_human(d) for d in result.diagnostics], text


def sharded(path):
    found = sharding.analyse([path], lower=True, force=True)
    assert found is not None, "the program should have been sharded"
    text = found.json() if found.lowered else None
    if text is not None:  # the objects rebuilt from the other process's JSON serialise alike
        from compiler.ir.serialize import ir_json

        assert ir_json(found.program()) == text
    return [render_human(d) for d in found.diagnostics], text


def write(tmp_path, text, name="mesh.mesh"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def program():
    return generate(60)  # over 64 KB: large enough to be cut into shards


def test_clean_program_gives_identical_ir(tmp_path, program):
    path = write(tmp_path, program)
    seq_diags, seq_text = sequential(path)
    par_diags, par_text = sharded(path)
    assert seq_diags == par_diags == []
    assert par_text == seq_text


def test_the_mesh_blocks_tracing_is_in_the_sharded_ir(tmp_path, program):
    """The mesh block stands in the first shard; the document both shards make together carries its
    `tracing` as the sequential compile does."""
    traced = program.replace('mtls strict }', 'mtls strict  tracing { sampling 5%  otlp "http://127.0.0.1:4318" } }', 1)
    assert traced != program
    path = write(tmp_path, traced)
    seq_diags, seq_text = sequential(path)
    par_diags, par_text = sharded(path)
    assert seq_diags == par_diags == []
    assert b'"sampling_percent"' in seq_text or b'"sampling"' in seq_text
    assert par_text == seq_text


def test_warnings_and_errors_are_the_same(tmp_path, program):
    # A warning near the start (shard 0), an error and a warning near the end (shard 1).
    lines = program.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("  route r1 "))
    last = max(i for i, line in enumerate(lines) if line.startswith("  route r1 "))
    lines[first] = lines[first].replace("timeout 1s", "timeout 1s  retry { attempts 2 on [5xx] }")
    lines[last] = lines[last].replace(".v2", ".v9")
    lines.insert(last, '  route shadowed { match { path exact "/api/items/1" header "x-tenant" exact "t1" } '
                       'to svc1.v1 }')
    path = write(tmp_path, "\n".join(lines) + "\n")
    seq_diags, seq_text = sequential(path)
    par_diags, par_text = sharded(path)
    assert seq_text is None and par_text is None  # errors: nothing lowered
    assert len(seq_diags) >= 3
    assert par_diags == seq_diags


def test_hosts_and_a_host_claimed_across_the_shards_are_the_same(tmp_path, program):
    """The services of the other process carry their `hosts`: a name claimed in both shards is
    one E0212, and the hosts reach the IR alike."""
    lines = program.splitlines()
    services = [i for i, line in enumerate(lines) if line.startswith("service ")]
    first, last = services[1], services[-1]
    lines.insert(last + 1, '  hosts ["api.example.com", "*.example.com"]')
    lines.insert(first + 1, '  hosts ["www.example.com"]')
    clean = write(tmp_path, "\n".join(lines) + "\n", "clean.mesh")
    seq_diags, seq_text = sequential(clean)
    par_diags, par_text = sharded(clean)
    assert seq_diags == par_diags == []
    assert b'"*.example.com"' in seq_text and par_text == seq_text
    lines[first + 1] = '  hosts ["api.example.com"]'
    claimed = write(tmp_path, "\n".join(lines) + "\n", "claimed.mesh")
    seq_diags, _ = sequential(claimed)
    par_diags, _ = sharded(claimed)
    assert [d.split("]")[0] for d in seq_diags] == ["error[E0212"] * 1
    assert par_diags == seq_diags


def test_syntax_errors_fall_back_to_one_process(tmp_path, program):
    # A cut could split an item, and a shard would not know which names of the other failed to
    # parse: any syntax error hands the program to the sequential path.
    lines = program.splitlines()
    lines[len(lines) // 3] += " ;"
    lines[2 * len(lines) // 3] = lines[2 * len(lines) // 3].replace("{", "", 1)
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert sharding.analyse([path], lower=True, force=True) is None
    seq_diags, _ = sequential(path)
    result = api.compile([path])
    assert [render_human(d) for d in result.diagnostics] == seq_diags
    assert any(d.code.startswith("E01") for d in result.diagnostics)


def test_blocks_of_a_service_declared_in_a_shared_file_stay_with_their_owner(tmp_path, program):
    # `shared` is declared in a small file both shards read (shard 0 lowers it); its authorization
    # block sits at the end of the large file, in shard 1: the split is not clean.
    shared = tmp_path / "shared.mesh"
    shared.write_text('service shared { port 80 endpoints ["127.0.0.1:80"] }\n')
    text = 'import "shared.mesh"\n' + program + '\nauthorization shared { default deny }\n'
    path = write(tmp_path, text)
    assert sharding.analyse([path], lower=True, force=True) is None
    result = api.compile([path])
    assert result.ir.service("shared").authorization.default == "deny"


def test_routes_far_from_their_service_fall_back(tmp_path, program):
    # Routes for the first service at the very end: they land in the other shard.
    text = program.replace("routes svc0 {", "routes unused_block_svc0 {", 1)
    text += '\nroutes svc0 { route all { to svc0.v1 } }\n'
    text = text.replace("routes unused_block_svc0 {", "routes svc0_old {", 1)
    path = write(tmp_path, text)
    assert sharding.analyse([path], lower=True, force=True) is None
    # The public entry point still answers, sequentially.
    result = api.compile([path])
    assert any(d.code == "E0209" for d in result.diagnostics)


def test_splice_matches_orjson_for_an_empty_program():
    import orjson

    from compiler import ir

    empty = ir.Program(ir.SCHEMA_VERSION, "td", ())
    assert sharding.splice("td", {}) == orjson.dumps(empty, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def test_a_program_without_namespaces_is_still_sharded(tmp_path):
    """No name in two namespaces and no NAMESPACE/NAME reference: `/`s in comments (`docs/x.md`,
    `and/or`), in strings and in the stdlib's text (`import "std/resilience"`) must not make the
    program `qualified` (compiler/semantic/namespaces.py), which `meshc check` never shards."""
    text = generate(50).replace("\nservice svc1 {", "\n# and/or see docs/identity.md, std/resilience\n"
                                "service svc1 {  # prod/reviews in a comment", 1)
    assert 'import "std/resilience"' in text and "# and/or" in text
    path = write(tmp_path, text)
    planned = sharding.plan([path], force=True)
    assert planned is not None
    sources, stdlib, replicated, shards = planned
    assert stdlib  # the stdlib module is part of the program
    for i, segments in enumerate(shards):
        shard = sharding.Shard(i, sources, stdlib, replicated, segments)
        assert not shard.qualified
        assert shard.ctx.program is shard.program
    assert sharding.analyse([path], lower=False, force=True) is not None


SCAN_PROBE = """
import json, sys
from compiler.semantic import namespaces
from compiler.syntax import parse
from compiler import api

scanned = []
real = namespaces._code_at
namespaces._code_at = lambda line: scanned.append(line) or real(line)
out = {}
for name in sys.argv[1:]:
    comp = api.check([name], shard=False)
    out[name] = {"slashed": sorted(parse.SLASHED_WORDS), "scanned": len(scanned),
                 "errors": [d.code for d in comp.diagnostics if d.severity == "error"]}
print(json.dumps(out))
"""


def test_the_scan_for_qualified_references_runs_only_after_a_word_with_a_slash_was_lexed(tmp_path):
    """compiler/semantic/namespaces.py scans the sources for a `NAME/NAME` outside strings and
    comments only once the lexer has met such a word (compiler/syntax/parse.py SLASHED_WORDS):
    a program with `/` in paths, comments and its stdlib import lexes none and is not scanned;
    a program with a `NAMESPACE/NAME` reference is, and resolves it. A fresh process for each
    order, since the set lives as long as the process."""
    plain = write(tmp_path, generate(20).replace("\nservice svc1 {", "\n# and/or docs/x.md\nservice svc1 {", 1))
    qualified = tmp_path / "qualified.mesh"
    qualified.write_text('service api {\n  port 80\n  namespace "shop"\n  endpoints ["127.0.0.1:9001"]\n}\n\n'
                         'routes shop/api {\n  route all {\n    to api\n  }\n}\n')

    def probe(*files):
        r = subprocess.run([sys.executable, "-c", SCAN_PROBE, *map(str, files)], capture_output=True, text=True,
                           timeout=120, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    first = probe(plain, qualified)
    assert first[str(plain)] == {"slashed": [], "scanned": 0, "errors": []}
    assert first[str(qualified)]["slashed"] == ["shop/api"] and first[str(qualified)]["scanned"] >= 1
    assert first[str(qualified)]["errors"] == []
    # after a qualified program, a plain one is scanned again (and found plain: still no error)
    second = probe(qualified, plain)
    assert second[str(plain)]["errors"] == [] and second[str(plain)]["scanned"] >= 1
