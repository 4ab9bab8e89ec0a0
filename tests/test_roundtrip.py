"""The renderer and the parser agree: `parse(render(ast)) == ast`, and rendering is canonical.

- generated modules (tests/strategies.py: every construct of the grammar) survive a round trip
  through text with no parser error, and rendering their parse gives the same text again;
- every item and node renders on its own to text that parses back to it;
- each example and standard-library file renders to text that parses to an equal AST, and
  rendering is idempotent on it;
- the scalar forms (strings, durations, percentages) are exact and canonical.
"""

from __future__ import annotations

import glob
import math
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.core.diagnostics import Collector
from compiler.core.source import SourceFile
from compiler.syntax import ast
from compiler.syntax.parse import Parser
from compiler.syntax.render import duration, percent, render, string
from tests import strategies as S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.mesh")))
STDLIB = sorted(glob.glob(os.path.join(ROOT, "stdlib_policies", "*.mesh")))

_PARSER = Parser()


def parse(text: str, path: str = "generated.mesh") -> ast.Module:
    """Parse text; fail the test on any error the parser reports."""
    diags = Collector()
    module = _PARSER.parse(SourceFile(path, text), diags)
    errors = [d for d in diags.items if d.severity == "error"]
    assert not errors, "the parser rejected the rendered text:\n" + text + "\n" + "\n".join(
        f"{d.code} {d.span.location() if d.span else d.path}: {d.message}" for d in errors)
    return module


def read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


# ---- generated modules ------------------------------------------------------------------------------

@given(S.modules())
def test_generated_module_round_trips(module):
    text = render(module)
    back = parse(text, module.path)
    assert back == module, text
    assert render(back) == text


@given(S.items)
def test_every_item_renders_on_its_own(item):
    text = render(item)
    assert not text.endswith("\n")
    assert parse(text + "\n").items == (item,)
    assert render(ast.Module("m.mesh", (item,))) == text + "\n"


@given(S.route_nodes)
def test_route_renders_on_its_own(route):
    """Sub-item nodes render to the text their parent embeds (here: a route inside `routes`)."""
    wrapped = parse("routes svc {\n" + render(route) + "\n}\n")
    assert wrapped.items[0].routes == (route,)


@given(S.rules)
def test_rule_renders_on_its_own(rule):
    wrapped = parse("authorization svc {\n" + render(rule) + "\n}\n")
    assert wrapped.items[0].items == (rule,)


# ---- the examples -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", EXAMPLES + STDLIB, ids=os.path.basename)
def test_example_round_trips_and_rendering_is_idempotent(path):
    original = parse(read(path), path)
    assert original.items, "the example has no items"
    once = render(original)
    reparsed = parse(once, path)
    assert reparsed == original
    assert render(reparsed) == once


def test_examples_exist():
    assert len(EXAMPLES) >= 4


def test_example_layout_is_kept():
    """The examples are written in the canonical layout already, comments aside."""
    for path in EXAMPLES:
        text = render(parse(read(path), path))
        for line in text.splitlines():
            assert line == line.rstrip()
            assert (len(line) - len(line.lstrip(" "))) % 2 == 0
    shop = render(parse(read(os.path.join(ROOT, "examples", "shop.mesh"))))
    assert 'import "std/resilience"\n\nmesh {\n  trust_domain "shop.local"\n  mtls strict\n}\n' in shop
    assert "  limits { connections 200  pending 50  requests 500 }\n" in shop
    assert "    match { path prefix \"/products\"  method [GET, HEAD] }\n" in shop
    assert '    request_headers { set "x-payments-route" "charges"  remove "x-debug" }\n' in shop


# ---- scalars -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ms, text", [
    (0, "0s"), (1, "1ms"), (999, "999ms"), (1000, "1s"), (1500, "1500ms"), (2000, "2s"),
    (60_000, "1m"), (90_000, "90s"), (120_000, "2m"), (3_600_000, "1h"), (5_400_000, "90m"),
    (86_400_000, "24h"), (3_600_001, "3600001ms"),
])
def test_duration_takes_the_largest_exact_unit(ms, text):
    assert duration(ms) == text


@pytest.mark.parametrize("value, text", [
    (0.0, "0%"), (10.0, "10%"), (100.0, "100%"), (12.5, "12.5%"), (0.0001, "0.0001%"), (33.3333, "33.3333%"),
    (1e-4, "0.0001%"), (1e20, "100000000000000000000%"), (0.1 + 0.2, "0.3%"),
])
def test_percent_is_g_like_without_exponent(value, text):
    assert percent(value) == text


@pytest.mark.parametrize("value, text", [
    ("", '""'), ("plain", '"plain"'), ('a"b', '"a\\"b"'), ("a\\b", '"a\\\\b"'), ("\n\t\r", '"\\n\\t\\r"'),
    ("\x00\x1f\x7f", '"\\u0000\\u001f\\u007f"'), ("é😀", '"é😀"'), ("\u2028", '"\\u2028"'),
    ("\\u0041", '"\\\\u0041"'),
])
def test_string_escapes(value, text):
    assert string(value) == text


@given(S.durations)
def test_duration_is_exact_and_largest(ms):
    text = duration(ms)
    setting = parse(f"policy outlier p {{ interval {text} }}\n").items[0].body.settings[0]
    assert setting.values[0].value == ms
    number, unit = (text[:-2], "ms") if text.endswith("ms") else (text[:-1], text[-1])
    larger = {"ms": 1000, "s": 60, "m": 60, "h": None}[unit]
    assert ms == 0 or larger is None or int(number) % larger != 0


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_percent_never_uses_an_exponent(value):
    text = percent(value)
    assert text.endswith("%") and "e" not in text.lower()
    number = text[:-1]
    assert "." not in number or 1 <= len(number.split(".")[1]) <= 4
    assert not number.endswith(".") and not ("." in number and number.endswith("0"))
    assert math.isclose(float(number), value, rel_tol=0, abs_tol=0.00005 + value * 1e-15)


@given(S.percents)
def test_percent_round_trips_through_the_parser(value):
    setting = parse(f"policy retry_budget b {{ percent {percent(value)} }}\n").items[0].body.settings[0]
    assert setting.values[0].value == value


@given(S.strings)
def test_string_round_trips_through_the_parser(value):
    text = string(value)
    assert "\n" not in text and "\r" not in text
    assert parse(f"import {text}\n").items[0].path.value == value


def test_retry_none_and_the_std_none_policy():
    """`retry none` is Lit(None); `retry std.none` is a reference to the policy named `none`."""
    text = "routes a {\n  route r {\n    retry none\n  }\n  route s {\n    retry std.none\n  }\n}\n"
    module = parse(text)
    r, s = module.items[0].routes
    assert r.retry == ast.Lit(None) and s.retry == ast.Ref("std", "none")
    assert render(module) == text


def test_render_rejects_what_is_not_a_node():
    with pytest.raises(TypeError):
        render(ast.Lit(1))
    with pytest.raises(ValueError):
        render(ast.Setting("no_such_setting", ()))


# ---- empty lists ------------------------------------------------------------------------------------------

_EMPTY_LISTS = {
    "service endpoints": ast.Service(ast.Lit("a"), None, None, None, (), (), None, None, None, None, None),
    "subset endpoints": ast.Service(ast.Lit("a"), None, None, None, None, (ast.Subset(ast.Lit("v"), ()),),
                                    None, None, None, None, None),
    "match method": ast.Routes(ast.Lit("a"), (ast.Route(ast.Lit("r"), (ast.Match((ast.MethodCond(()),)),),
                                                        None, None, None, None, None, (), None, None),)),
    "retry on": ast.Policy("retry", ast.Lit("r"), ast.Block("retry", (ast.Setting("on", ()),))),
    **{f"from {kind}": ast.Authorization(ast.Lit("a"), None, (ast.Rule("allow", None, (ast.FromCond(kind, ()),)),))
       for kind in ("identity", "namespace", "service")},
}


@pytest.mark.parametrize("where", sorted(_EMPTY_LISTS))
def test_empty_list_round_trips(where):
    """Regression: an empty `[]` used to crash the parser (IndexError) everywhere but in `on []`."""
    module = ast.Module("m.mesh", (_EMPTY_LISTS[where],))
    text = render(module)
    assert "[]" in text
    assert parse(text, module.path) == module


@given(S.asserts)
def test_assert_renders_on_its_own(node):
    text = render(node)
    assert parse(text + "\n").items == (node,)
    assert render(ast.Module("m.mesh", (node, node))) == text + "\n" + text + "\n"   # asserts stay together
