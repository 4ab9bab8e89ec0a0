"""The grammar (grammar/mesh.lark) and the LALR tables the parser runs on.

- lark builds the grammar with `strict=True`: no shift/reduce conflicts, no terminal collisions
  (collisions are only checked when `interegular` is installed, so its presence is asserted);
- the tables round-trip through the on-disk cache;
- the shipped parser (cached tables) and a fresh Parser on freshly extracted tables give the same
  AST, spans and diagnostics for every example and standard-library file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from compiler.core.diagnostics import Collector
from compiler.core.source import SourceFile, Span
from compiler.syntax import tables
from compiler.syntax.parse import Parser

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "examples").glob("*.mesh")) + sorted((ROOT / "stdlib_policies").glob("*.mesh"))


@pytest.fixture(scope="module")
def lark_parser():
    return tables.build_lark()


@pytest.fixture(scope="module")
def fresh_tables(lark_parser):
    return tables._extract(lark_parser)


def test_interegular_is_installed():
    """Without it, lark's strict mode silently skips the terminal-collision check."""
    import interegular  # noqa: F401


def test_grammar_builds_in_strict_mode():
    from lark.exceptions import GrammarError

    try:
        parser = tables.build_lark(strict=True)
    except GrammarError as err:  # a conflict or a collision: show lark's explanation
        pytest.fail(f"grammar/mesh.lark is not conflict-free: {err}")
    assert parser.options.parser == "lalr"
    assert set(parser.options.start) == {"start", "item"}


def test_grammar_text_is_the_packaged_file():
    assert tables.grammar_text() == (ROOT / "grammar" / "mesh.lark").read_text(encoding="utf-8")


def test_lark_accepts_every_example(lark_parser):
    for path in SOURCES:
        lark_parser.parse(path.read_text(encoding="utf-8"), start="start")


def test_tables_cover_the_grammar(fresh_tables):
    assert set(fresh_tables.start_states) == {"start", "item"}
    assert "LBRACE" in fresh_tables.keywords.values()
    # Every regex terminal that is not a value is a class of keywords the lexer can recognise.
    for term, words in fresh_tables.keyword_classes.items():
        assert words, term
    assert set(tables.VALUE_TERMINALS) <= {t for row in fresh_tables.states.values() for t in row}


def same_grammar(a: tables.Tables, b: tables.Tables) -> bool:
    """Two builds of the same grammar: lark numbers the LALR states differently from build to build,
    so compare what does not depend on the numbering."""
    return (len(a.states) == len(b.states) and sorted(a.rules) == sorted(b.rules)
            and sorted(map(len, a.states.values())) == sorted(map(len, b.states.values()))
            and set(a.start_states) == set(b.start_states) and a.keywords == b.keywords
            and a.keyword_classes == b.keyword_classes and a.terminal_text == b.terminal_text)


@pytest.fixture
def cold_cache(tmp_path, monkeypatch, lark_parser):
    """An empty cache directory; building the tables reuses the module's lark parser (building the
    grammar again would only cost time: `same_grammar` shows that builds agree)."""
    monkeypatch.setenv("MESHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tables, "_TABLES", None)
    monkeypatch.setattr(tables, "build_lark", lambda strict=False: lark_parser)
    return tmp_path


def test_two_builds_agree(lark_parser, fresh_tables):
    assert same_grammar(tables._extract(tables.build_lark()), fresh_tables)


def test_cached_tables_round_trip(cold_cache, monkeypatch, fresh_tables):
    built = tables.load_tables()  # nothing cached yet: built with lark and written
    cached = list(cold_cache.glob("mesh-grammar-*.pickle"))
    assert len(cached) == 1
    assert built == fresh_tables

    def no_lark(*args, **kwargs):
        raise AssertionError("a warm load must not build the grammar")

    monkeypatch.setattr(tables, "_TABLES", None)
    monkeypatch.setattr(tables, "build_lark", no_lark)
    loaded = tables.load_tables()
    assert loaded == built, "the cache gives back exactly the tables that were written"
    assert loaded is not built


def test_corrupt_cache_is_rebuilt(cold_cache, monkeypatch, fresh_tables):
    tables.load_tables()
    (cached,) = cold_cache.glob("mesh-grammar-*.pickle")
    cached.write_bytes(b"not a pickle")
    monkeypatch.setattr(tables, "_TABLES", None)
    assert tables.load_tables() == fresh_tables
    assert cached.read_bytes() != b"not a pickle", "the rebuilt tables replace the corrupt file"


def test_unwritable_cache_is_not_an_error(cold_cache, monkeypatch, fresh_tables):
    blocker = cold_cache / "file"
    blocker.write_text("a file where the cache directory should be", encoding="utf-8")
    monkeypatch.setenv("MESHC_CACHE_DIR", str(blocker / "meshc"))
    assert tables.load_tables() == fresh_tables


# ---- the shipped parser equals a fresh one --------------------------------------------------------

def spans_of(node, out=None) -> list:
    """Every span in an AST, in a fixed walk order, as (node type, start, end)."""
    out = [] if out is None else out
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if isinstance(value, Span):
                out.append((type(node).__name__, f.name, value.start, value.end))
            else:
                spans_of(value, out)
    elif isinstance(node, (tuple, list)):
        for x in node:
            spans_of(x, out)
    return out


def parse_with(parser: Parser, path: Path):
    source = SourceFile(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
    diags = Collector()
    module = parser.parse(source, diags)
    return module, [(d.code, d.message, d.span.start if d.span else None) for d in diags.items]


@pytest.mark.parametrize("path", SOURCES, ids=[f"{p.parent.name}/{p.name}" for p in SOURCES])
def test_shipped_parser_equals_fresh_parser(path, fresh_tables):
    shipped_module, shipped_diags = parse_with(Parser(), path)
    fresh_module, fresh_diags = parse_with(Parser(fresh_tables), path)
    assert shipped_diags == fresh_diags == []
    assert shipped_module == fresh_module
    assert spans_of(shipped_module) == spans_of(fresh_module)
    assert len(shipped_module.items) > 0


def test_shipped_parser_equals_fresh_parser_on_errors(fresh_tables):
    """Error recovery and messages do not depend on where the tables came from either."""
    text = (ROOT / "tests" / "diagnostics" / "three_syntax_errors.mesh").read_text(encoding="utf-8")
    results = []
    for parser in (Parser(), Parser(fresh_tables)):
        diags = Collector()
        module = parser.parse(SourceFile("x.mesh", text), diags)
        results.append((module, spans_of(module), [(d.code, d.message, d.span.start) for d in diags.items]))
    assert results[0] == results[1]
    assert len(results[0][2]) == 3


def test_parser_accepts_what_lark_accepts(lark_parser):
    text = 'service a {\n  port 80\n  endpoints ["127.0.0.1:80"]\n}\n# the end\n'
    lark_parser.parse(text, start="start")  # the grammar allows it
    diags = Collector()
    Parser().parse(SourceFile("x.mesh", text), diags)
    assert diags.items == []
