"""The reference material generated from the one description of every setting and default
(compiler/tooling/reference.py): docs/language.md §19 is current, and the descriptions agree
with the grammar, the formatter and the language server."""

from __future__ import annotations

from pathlib import Path

from compiler.language import defaults
from compiler.language.settings import BLOCKS, SETTINGS
from compiler.tooling import reference

ROOT = Path(__file__).resolve().parent.parent
LANGUAGE = ROOT / "docs" / "language.md"


def test_the_defaults_table_in_the_language_reference_is_current(update_goldens):
    text = LANGUAGE.read_text(encoding="utf-8")
    current = reference.with_table(text)
    if update_goldens:
        if current != text:
            LANGUAGE.write_text(current, encoding="utf-8")
        return
    assert current == text, "docs/language.md §19 is stale: run `pytest --update-goldens` and review the diff"


def test_every_setting_of_the_grammar_is_described_and_the_reverse():
    grammar = (ROOT / "grammar" / "mesh.lark").read_text(encoding="utf-8")
    import re

    for kind, rule in (("limits", "limits_setting"), ("outlier", "outlier_setting"), ("retry_budget", "budget_setting"),
                       ("sidecar", "sidecar_setting"), ("retry", "retry_setting"), ("fault", "fault_setting"),
                       ("mesh", "mesh_setting"), ("tracing", "tracing_setting")):
        lines = grammar[grammar.index(f"\n{rule}:") + 1:].split("\n")
        body = [lines[0]] + list(_continuation(lines[1:]))
        written = set(re.findall(r'^\s*(?:\w+:|\|)\s*"(\w+)"', "\n".join(body), re.M))
        assert written == set(BLOCKS[kind].keys()), kind


def test_the_formatter_and_the_language_server_read_the_descriptions():
    from compiler.syntax import render
    from compiler.tooling.lsp.analysis import KEYWORDS

    assert {k: s.forms for k, s in SETTINGS.items()} == render.SETTING_FORMS
    for key in SETTINGS:   # (a word that is a keyword elsewhere too, `path`, gets both texts)
        assert KEYWORDS[key].endswith(reference.hover_docs()[key])
    assert "(default 1024)" in KEYWORDS["connections"] and "§5.4" in KEYWORDS["connections"]


def test_every_described_default_names_a_constant():
    for _, constant, _ in defaults.DESCRIBED:
        assert not constant or hasattr(defaults, constant), constant


def _continuation(lines):
    for line in lines:
        if not line.lstrip().startswith("|"):
            return
        yield line
