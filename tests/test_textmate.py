"""The editor support in editors/: the TextMate grammar, the VS Code extension, the Vim syntax file.

The TextMate grammar is checked with a small pure-Python tokenizer for the subset of TextMate it
uses (`match` with `captures`, `begin`/`end` with `beginCaptures`/`endCaptures` and nested
`patterns`, `include` of repository items; the leftmost match wins, ties go to the earlier
pattern, and a region's `end` wins ties). The ground truth is the real parser: every keyword token
that lark reads in the examples and the standard library must get a keyword scope, every string a
string scope, and no name may be taken for a keyword. Python's `re` stands in for Oniguruma; the
patterns avoid syntax that the two read differently (no possessive quantifiers, no `\\h`, no
`(?<name>...)`, no variable-length lookbehind).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
from lark import Lark, Token

ROOT = Path(__file__).resolve().parent.parent
GRAMMAR = ROOT / "editors" / "textmate" / "mesh.tmLanguage.json"
VSCODE = ROOT / "editors" / "vscode"
SOURCES = sorted((ROOT / "examples").glob("*.mesh")) + sorted((ROOT / "stdlib_policies").glob("*.mesh"))
VALUE_TERMINALS = {"NAME", "STRING", "INT", "DURATION", "PERCENT", "COND"}  # lark terminals that are not keywords
METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
REGEX_KEYS = ("match", "begin", "end", "while")


def load_grammar() -> dict:
    return json.loads(GRAMMAR.read_text(encoding="utf-8"))


# ---- a TextMate-subset tokenizer ------------------------------------------------------------------

class Tokenizer:
    """Scopes per character, line by line, for the TextMate subset described in the module docstring."""

    def __init__(self, grammar: dict):
        self.grammar = grammar
        self.repo = grammar.get("repository", {})
        self.regexes: dict[str, re.Pattern] = {}

    def _re(self, pattern: str) -> re.Pattern:
        if pattern not in self.regexes:
            self.regexes[pattern] = re.compile(pattern)
        return self.regexes[pattern]

    def _expand(self, patterns: list[dict], seen: tuple = ()) -> list[dict]:
        """Rules with `include`s (and pattern-only containers) replaced by the rules they name."""
        out = []
        for rule in patterns:
            if "include" in rule:
                ref = rule["include"]
                if ref == "$self":
                    target = {"patterns": self.grammar["patterns"]}
                else:
                    assert ref.startswith("#"), f"unsupported include {ref}"
                    target = self.repo[ref[1:]]
                if ref not in seen:
                    out += self._expand([target], seen + (ref,))
            elif "match" in rule or "begin" in rule:
                out.append(rule)
            else:
                out += self._expand(rule.get("patterns", []), seen)
        return out

    @staticmethod
    def _paint(scopes: list, m: re.Match, base: tuple, captures: dict) -> None:
        for i in range(m.start(), m.end()):
            scopes[i] = base
        for group, spec in sorted(captures.items(), key=lambda kv: int(kv[0])):
            g = int(group)
            if m.start(g) >= 0 and "name" in spec:
                for i in range(m.start(g), m.end(g)):
                    scopes[i] = base + (spec["name"],)

    def tokenize(self, text: str) -> list[list[tuple[str, ...]]]:
        """For each line, the scope stack (outermost first) of each character."""
        root = {"patterns": self.grammar["patterns"]}
        stack = [(root, ("source.mesh",))]   # (rule, scopes inside it)
        result = []
        for line in text.split("\n"):
            scopes: list = [None] * len(line)
            pos = 0
            while pos <= len(line):
                rule, inside = stack[-1]
                best = None                  # (start, order, match, rule); the end pattern is order -1
                if "end" in rule:
                    m = self._re(rule["end"]).search(line, pos)
                    if m:
                        best = (m.start(), -1, m, None)
                for order, candidate in enumerate(self._expand(rule.get("patterns", []))):
                    m = self._re(candidate.get("match") or candidate["begin"]).search(line, pos)
                    if m and (best is None or (m.start(), order) < best[:2]):
                        best = (m.start(), order, m, candidate)
                if best is None:
                    break
                start, _, m, found = best
                for i in range(pos, start):
                    scopes[i] = inside
                if found is None:            # the region ends
                    self._paint(scopes, m, inside, {**rule.get("captures", {}), **rule.get("endCaptures", {})})
                    stack.pop()
                    pos = m.end()
                    if not stack:
                        stack.append((root, ("source.mesh",)))
                    continue
                named = inside + ((found["name"],) if "name" in found else ())
                if "match" in found:
                    self._paint(scopes, m, named, found.get("captures", {}))
                else:
                    self._paint(scopes, m, named, {**found.get("captures", {}), **found.get("beginCaptures", {})})
                    stack.append((found, named))
                pos = m.end() if m.end() > pos else pos + 1   # never loop on an empty match
            for i in range(len(line)):
                if scopes[i] is None:
                    scopes[i] = stack[-1][1]
            result.append(scopes)
        return result


@cache
def tokenizer() -> Tokenizer:
    return Tokenizer(load_grammar())


@cache
def lark_parser() -> Lark:
    return Lark((ROOT / "grammar" / "mesh.lark").read_text(encoding="utf-8"), parser="lalr",
                start="start", keep_all_tokens=True, propagate_positions=True)


def tokens_of(path: Path) -> tuple[list[Token], list[Token], str]:
    """(every token, the NAME tokens of `method` conditions, the text) as the real parser reads them."""
    text = path.read_text(encoding="utf-8")
    tree = lark_parser().parse(text)
    tokens = list(tree.scan_values(lambda v: isinstance(v, Token)))
    methods = [t for node in tree.find_data("method_cond") for t in node.scan_values(
        lambda v: isinstance(v, Token) and v.type == "NAME")]
    return tokens, methods, text


def scopes_of(lines, token: Token) -> set[str]:
    """Every scope name on any character of the token."""
    row = lines[token.line - 1]
    return {s for i in range(token.column - 1, token.column - 1 + len(token)) for s in row[i]}


def has(scopes: set[str], prefix: str) -> bool:
    return any(s.startswith(prefix) for s in scopes)


def keyword_words() -> list[str]:
    """Every word of the grammar: string literals, also those inside terminal definitions."""
    grammar = re.sub(r"//[^\n]*", "", (ROOT / "grammar" / "mesh.lark").read_text(encoding="utf-8"))
    return sorted(set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', grammar)))


def expected_prefix(word: str) -> str:
    return "constant.language.none" if word == "none" else "keyword."


# ---- the grammar file -------------------------------------------------------------------------------

def test_grammar_is_json_with_the_mesh_scope():
    grammar = load_grammar()
    assert grammar["scopeName"] == "source.mesh"
    assert grammar["fileTypes"] == ["mesh"]


def all_rules(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from all_rules(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_rules(value)


def test_every_regex_compiles_and_avoids_oniguruma_only_syntax():
    oniguruma_only = re.compile(r"\\[hHAzGK]|[*+?}]\+|\(\?<[A-Za-z]|\\p\{|\(\?~")
    count = 0
    for rule in all_rules(load_grammar()):
        for key in REGEX_KEYS:
            if isinstance(rule.get(key), str):
                re.compile(rule[key])
                assert not oniguruma_only.search(rule[key]), f"Oniguruma-only syntax in {rule[key]!r}"
                count += 1
    assert count > 20


def test_every_include_names_a_repository_item():
    grammar = load_grammar()
    for rule in all_rules(grammar):
        ref = rule.get("include")
        if isinstance(ref, str) and ref != "$self":
            assert ref.startswith("#") and ref[1:] in grammar["repository"], ref


# ---- tokenising the examples against the real parser --------------------------------------------------

@pytest.mark.parametrize("path", SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_keywords_strings_and_names_get_the_right_scopes(path):
    tokens, methods, text = tokens_of(path)
    lines = tokenizer().tokenize(text)
    keywords = 0
    for tok in tokens:
        scopes = scopes_of(lines, tok)
        where = f"{path.name}:{tok.line}:{tok.column} `{tok}`"
        if tok.type == "STRING":
            row = lines[tok.line - 1]
            columns = range(tok.column - 1, tok.column - 1 + len(tok))
            assert all("string.quoted.double.mesh" in row[i] for i in columns), where
        elif tok.type == "NAME":
            assert not has(scopes, "keyword."), f"the name {where} is highlighted as a keyword: {scopes}"
        elif tok.type not in VALUE_TERMINALS and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tok):
            keywords += 1
            assert has(scopes, expected_prefix(str(tok))), f"the keyword {where} has scopes {scopes}"
        elif tok.type == "DURATION":
            assert "constant.numeric.duration.mesh" in scopes, where
        elif tok.type == "PERCENT":
            assert "constant.numeric.percentage.mesh" in scopes, where
        elif tok.type == "INT":
            assert "constant.numeric.integer.mesh" in scopes, where
        elif tok.type == "COND":
            assert has(scopes, "constant."), where
    assert keywords > 10
    for tok in methods:
        if tok in METHODS:
            assert "constant.language.http-method.mesh" in scopes_of(lines, tok), tok


def test_every_keyword_of_the_grammar_alone_is_a_keyword():
    """The examples use most keywords; each one of the grammar, alone on a line, is a keyword too."""
    words = keyword_words()
    assert {"service", "routes", "route", "policy", "authorization", "allow", "deny", "exact"} <= set(words)
    for word in words:
        scopes = tokenizer().tokenize(word)[0]
        assert all(has(set(s), expected_prefix(word)) for s in scopes), f"`{word}` alone: {scopes[0]}"


@pytest.mark.parametrize("line, expected", [
    ('service payments {', {"payments": "entity.name.type.service.mesh", "service": "keyword.declaration.mesh"}),
    ('routes payments {', {"payments": "entity.name.type.service.mesh"}),
    ('  route canary {', {"canary": "entity.name.function.route.mesh", "route": "keyword.declaration.mesh"}),
    ('policy retry quick { attempts 2 }', {"policy": "keyword.declaration.mesh",
                                          "retry": "keyword.other.policy-kind.mesh",
                                          "quick": "entity.name.function.policy.mesh"}),
    ('authorization payments {', {"payments": "entity.name.type.service.mesh"}),
    ('  allow checkout { from service checkout }', {"allow": "keyword.control.action.allow.mesh",
                                                    "checkout": "entity.name.function.rule.mesh"}),
    ('  default deny', {"deny": "keyword.control.action.deny.mesh"}),
    ('  to payments.v2  retry std.idempotent', {"payments": "variable.other.service.mesh",
                                               "v2": "variable.other.subset.mesh",
                                               "std": "support.class.std.mesh",
                                               "idempotent": "support.constant.policy.mesh"}),
    ('  timeout 1.5s  fault { delay 250ms 12.5% }', {"1.5s": "constant.numeric.duration.mesh",
                                                    "250ms": "constant.numeric.duration.mesh",
                                                    "12.5%": "constant.numeric.percentage.mesh"}),
    ('  retry { on [5xx, gateway-error, 409] }', {"5xx": "constant.other.retry-condition.mesh",
                                                 "gateway-error": "constant.other.retry-condition.mesh",
                                                 "409": "constant.numeric.integer.mesh"}),
    ('  match { path raw_prefix "/a"  header "x" present  method [GET, POST] }',
     {"raw_prefix": "keyword.other.match-kind.mesh", "present": "keyword.other.match-kind.mesh",
      "POST": "constant.language.http-method.mesh"}),
    ('  namespace "a#b\\n\\q"  # comment', {"a#b": "string.quoted.double.mesh",
                                           "\\n": "constant.character.escape.mesh",
                                           "\\q": "invalid.illegal.unknown-escape.mesh",
                                           "comment": "comment.line.number-sign.mesh"}),
])
def test_constructs_get_their_scopes(line, expected):
    scopes = tokenizer().tokenize(line)[0]
    for word, scope in expected.items():
        start = line.index(word)
        for i in range(start, start + len(word)):
            assert scope in scopes[i], f"`{word}` in {line!r}: {scopes[i]}"


def test_from_service_names_a_service_but_declares_none():
    line = "  allow { from service frontend }"
    scopes = tokenizer().tokenize(line)[0]
    assert "keyword.other.mesh" in scopes[line.index("service")]
    assert not has(set(scopes[line.index("frontend")]), "entity.name"), scopes[line.index("frontend")]


def test_an_unterminated_string_ends_at_the_end_of_the_line():
    first, second = tokenizer().tokenize('  namespace "oops\n  port 80')
    assert "string.quoted.double.mesh" in first[-1]
    assert "keyword.other.mesh" in second[2] and "string.quoted.double.mesh" not in second[2]


# ---- VS Code, Vim, Helix -------------------------------------------------------------------------------

def test_vscode_extension_contributes_the_language_and_the_grammar():
    package = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    (language,) = package["contributes"]["languages"]
    assert language["id"] == "mesh" and language["extensions"] == [".mesh"]
    (grammar,) = package["contributes"]["grammars"]
    assert grammar["language"] == "mesh" and grammar["scopeName"] == "source.mesh"
    # the extension ships its own copy (a packaged extension cannot reach outside its folder)
    assert (VSCODE / grammar["path"]).read_bytes() == GRAMMAR.read_bytes(), \
        "copy editors/textmate/mesh.tmLanguage.json to editors/vscode/syntaxes/"
    config = json.loads((VSCODE / language["configuration"]).read_text(encoding="utf-8"))
    assert config["comments"]["lineComment"] == "#"
    assert ["{", "}"] in config["brackets"] and ["[", "]"] in config["brackets"]


def test_helix_entry_names_the_file_type_and_the_comment_token():
    import tomllib

    entry = tomllib.loads((ROOT / "editors" / "helix" / "languages.toml").read_text(encoding="utf-8"))
    (language,) = entry["language"]
    assert language["name"] == "mesh" and language["file-types"] == ["mesh"]
    assert language["scope"] == "source.mesh" and language["comment-tokens"] == ["#"]


@pytest.mark.skipif(shutil.which("vim") is None, reason="vim is not installed")
def test_vim_syntax_file_highlights_the_canary_example(tmp_path):
    src = tmp_path / "canary.mesh"
    src.write_text('service recommendations {\n  timeout 800ms  # slow\n  allow x { from service frontend }\n'
                   '  namespace "shop"\n}\n', encoding="utf-8")
    probes = {(1, 1): "meshDeclaration", (1, 9): "meshDeclName", (2, 3): "meshKeyword", (2, 11): "meshDuration",
              (2, 18): "meshComment", (3, 3): "meshAction", (3, 18): "meshFromKind", (3, 26): "", (4, 13): "meshString"}
    out = tmp_path / "out.txt"
    script = tmp_path / "probe.vim"
    script.write_text("set nocompatible\nfiletype plugin on\nsyntax on\n"
                      f"edit {src}\nlet out = [&filetype]\n"
                      + "".join(f"call add(out, synIDattr(synID({line}, {c}, 1), 'name'))\n" for line, c in probes)
                      + f"call writefile(out, '{out}')\nqall!\n", encoding="utf-8")
    subprocess.run(["vim", "-Es", "-N", "-u", "NONE", "-i", "NONE", "--cmd", f"set rtp^={ROOT / 'editors' / 'vim'}",
                    "-S", str(script)], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    filetype, *groups = out.read_text().split("\n")[:len(probes) + 1]
    assert filetype == "mesh"
    assert dict(zip(probes, groups)) == probes


def test_a_namespace_qualified_reference_and_declaration():
    line = "routes prod/reviews { route r { to staging/reviews.v1 } }"
    scopes = tokenizer().tokenize(line)[0]
    head = line.index("prod/reviews")
    assert all("entity.name.type.service.mesh" in scopes[i] for i in range(head, head + len("prod/reviews")))
    ref = line.index("staging/reviews.v1")
    assert "entity.name.namespace.mesh" in scopes[ref]
    assert "variable.other.service.mesh" in scopes[ref + len("staging/")]
    assert "variable.other.subset.mesh" in scopes[line.index("v1")]
