"""The compile-speed measures of issue 19 keep every result: the parser's loop (compiler/syntax/driver.py,
compiled by mypyc in an optional build) gives the same AST as its plain-Python source, a node's own
`__init__` (compiler/core/nodes.py) behaves as dataclass's would, and a one-shot process's kept
results stay out of in-process callers."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

import pytest

from compiler.cli import exits, run
from compiler.core.diagnostics import Collector
from compiler.core.nodes import Node, node
from compiler.core.source import SourceFile
from compiler.syntax import driver, parse

ROOT = Path(__file__).resolve().parent.parent


def _plain_driver():
    spec = importlib.util.spec_from_file_location("_plain_driver", ROOT / "compiler" / "syntax" / "driver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.shift_reduce


def _sources() -> list[SourceFile]:
    from benchmarks.compile_scale import generate

    files = sorted((ROOT / "examples").glob("*.mesh")) + sorted((ROOT / "stdlib_policies").glob("*.mesh"))
    out = [SourceFile(str(p), p.read_text()) for p in files]
    out.append(SourceFile("gen.mesh", generate(30)))
    out.append(SourceFile("broken.mesh", "service a {\n  port 80\n  prot 9\n}\nroutes a { route r { to b } }\n"))
    return out


def _parse_with(shift_reduce, source: SourceFile) -> tuple:
    saved = parse._shift_reduce
    parse._shift_reduce = shift_reduce
    try:
        diags = Collector()
        module = parse.Parser().parse(source, diags)
        return module, [(d.code, d.message, d.span.start if d.span else None) for d in diags.sorted()]
    finally:
        parse._shift_reduce = saved


def test_the_loop_in_use_and_its_plain_source_build_the_same_ast():
    plain = _plain_driver()
    for source in _sources():
        ours, theirs = _parse_with(parse._shift_reduce, source), _parse_with(plain, source)
        assert ours == theirs, source.path
        assert ours[0].items or ours[1], source.path   # something was parsed or reported


def test_a_stale_compiled_loop_is_not_used(monkeypatch):
    # Only a compiled build has a module that is not driver.py; either way the loader's choice is sound.
    if (driver.__file__ or "").endswith(".py"):
        assert parse._load_driver() is driver.shift_reduce
    else:
        monkeypatch.setenv("MESHC_PURE_PYTHON", "1")
        assert parse._load_driver().__module__ == "compiler.syntax._driver_py"


@node
class _Sample(Node):
    name: str
    count: int = 3
    tags: tuple = dataclasses.field(default_factory=tuple)
    extra: list = dataclasses.field(default_factory=list, compare=False)


def test_a_nodes_init_keeps_dataclass_behaviour():
    a = _Sample("x")
    assert (a.name, a.count, a.tags, a.extra) == ("x", 3, (), [])
    assert _Sample("x").extra is not a.extra   # a fresh default per instance
    b = _Sample("x", 4, tags=("t",), extra=[1])
    assert (b.count, b.tags, b.extra) == (4, ("t",), [1])
    assert dataclasses.replace(b, count=3, tags=()) == a   # `extra` is left out of equality
    assert repr(a) == "_Sample(name='x', count=3, tags=(), extra=[])"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.name = "y"   # type: ignore[misc]
    with pytest.raises(TypeError, match="name"):
        _Sample()   # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Sample("x", nonsense=1)   # type: ignore[call-arg]


def test_in_process_runs_keep_nothing(tmp_path):
    path = tmp_path / "a.mesh"
    path.write_text((ROOT / "examples" / "shop.mesh").read_text())
    assert run(["check", str(path)]) == 0
    assert run(["compile", str(path), "--emit", "ir", "-o", str(tmp_path / "out")]) == 0
    assert not exits.ONE_SHOT and exits._KEPT == []
    assert os.path.exists(tmp_path / "out" / "mesh.ir.json")


def test_ir_rebuilt_from_its_json_is_equal_to_the_original():
    """`from_data` (compiled per IR class) is the inverse of the JSON a sharded compile's second
    process sends, for every example (every IR feature they use) and a generated fleet."""
    import orjson

    from compiler import api, ir

    programs = [[str(p)] for p in sorted((ROOT / "examples").glob("*.mesh")) if not p.name.endswith("_test.mesh")]
    for files in programs:
        comp = api.compile(files, shard=False)
        assert comp.ir is not None, files
        for svc in comp.ir.services:
            rebuilt = ir.from_data(ir.Service, orjson.loads(orjson.dumps(svc)))
            assert rebuilt == svc
            assert orjson.dumps(rebuilt) == orjson.dumps(svc)
        program = ir.from_data(ir.Program, orjson.loads(comp.ir_json()))
        assert program == comp.ir


def test_the_ipv4_fast_path_agrees_with_ipaddress():
    import ipaddress
    import itertools

    from compiler.language.endpoints import is_ip

    def reference(host: str) -> bool:
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return False

    parts = ["0", "01", "1", "99", "100", "199", "249", "250", "255", "256", "", "a"]
    hosts = [".".join(p) for p in itertools.product(parts, repeat=4)]
    hosts += ["1.2.3", "1.2.3.4.5", "1.2.3.4\n", "::1", "fe80::1", "1.2.3.4 ", "١.2.3.4"]
    assert [is_ip(h) for h in hosts] == [reference(h) for h in hosts]


_OLD_PIECES = r"""
((?>(?:[ \t\r\n\f]+|\#[^\n]*+)*))
("(?:[^"\\\n]|\\.)*"|[0-9][0-9A-Za-z_.%-]*|[A-Za-z_][A-Za-z0-9_-]*(?:/[A-Za-z_][A-Za-z0-9_-]*)?|[^ \t\r\n\f]|\Z)
"""


def _plain_tokens(text: str, pos: int, endpos: int) -> tuple[list[str], list[int], list[int]]:
    """The tokens of text[pos:endpos] by the straightforward pattern: blanks and comments, then a token."""
    import re

    pieces = re.compile(_OLD_PIECES, re.X).split(text[pos:endpos])
    vals, starts, ends, at = [], [], [], pos
    for gap, blanks, token in zip(pieces[0::3], pieces[1::3], pieces[2::3], strict=False):
        assert gap == ""
        at += len(blanks)
        if token:
            vals.append(token)
            starts.append(at)
            ends.append(at + len(token))
        at += len(token)
    return vals, starts, ends


def test_the_lexer_cuts_text_into_the_tokens_of_the_plain_pattern():
    """The lexer (one split into blanks and tokens, comments dropped afterwards; possessive runs,
    an unrolled string) gives the same tokens at the same offsets as the straightforward pattern
    it replaced: random text over the characters that matter (quotes, escapes, comments, blanks,
    digits, letters, punctuation, non-ASCII), whole and cut at random bounds."""
    import random

    rng = random.Random(19)
    alphabet = ['"', "\\", "#", " ", "\t", "\n", "\r", "\f", "a", "Z", "_", "-", "0", "9", ".", "%", "{", "}",
                ";", "é", "🙂", "x\"y", "ms", "/", "# c\n", "\v"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40))) for _ in range(5000)]
    texts += [p.read_text() for p in sorted((ROOT / "examples").glob("*.mesh"))]
    parser = parse.Parser()
    for text in texts:
        bounds = [(0, len(text))]
        if text:
            a = rng.randrange(len(text))
            bounds.append((a, rng.randrange(a, len(text) + 1)))
        for pos, endpos in bounds:
            vals, types, starts, ends = parser._tokens(text, pos, endpos)
            plain = _plain_tokens(text, pos, endpos)
            end_of_input = plain[2][-1] if plain[2] else pos   # after the last token
            assert (vals.pop(), types.pop(), starts.pop(), ends.pop()) == ("", "$END", end_of_input, end_of_input)
            assert (vals, starts, ends) == plain, repr(text[pos:endpos])
            assert "COMMENT" not in types
