"""Parse .mesh text into an AST with the lark-generated LALR(1) tables.

The driver loop is ours: lark's generic parser spends about 12 µs per token here (Token objects,
tree building, position propagation), which misses the 10,000-service compile target by an order
of magnitude; this loop shifts and reduces with lark's own parse table and calls the AST builder
directly. The lexer is contextual like lark's: a word becomes the keyword the parser state
accepts, else a name, so keywords stay usable as names where no keyword can stand.

Error recovery: on a syntax error the file is cut at its top-level items and each item is parsed
alone, keeping the first error of each, so independent mistakes give one diagnostic each.
"""

from __future__ import annotations

import re

from compiler import ast
from compiler.diagnostics import Collector, did_you_mean
from compiler.source import SourceFile, Span
from compiler.syntax.build import Builder, Tok, reducers
from compiler.syntax.tables import Tables, load_tables

# The whole text is lexed by one findall into (blanks, token) pairs: offsets follow from the
# lengths. Any other single character is a token too, so that errors keep exact positions.
_PAIRS = re.compile(r"""
((?:[ \t\r\n\f]+|\#[^\n]*)*)
("(?:[^"\\\n]|\\.)*"|[0-9][0-9A-Za-z_.%-]*|[A-Za-z_][A-Za-z0-9_-]*|[^ \t\r\n\f])
""", re.X)
_PUNCT = frozenset("{}[],.")
_DIGITS = frozenset("0123456789")
_UNTERMINATED = re.compile(r'"(?:[^"\\\n]|\\.)*')
_NUMBER_KINDS = (
    ("DURATION", re.compile(r"[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h)\Z")),
    ("PERCENT", re.compile(r"[0-9]+(?:\.[0-9]+)?%\Z")),
    ("INT", re.compile(r"[0-9]+\Z")),
    ("COND", re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]*\Z")),
)
_TOP_LEVEL = re.compile(r"^[ \t]*(?:import|mesh|service|routes|authorization|policy)\b", re.M)

# How terminals are named in messages: never a lark name such as __ANON_0 or COND.
_DESCRIBE = {
    "NAME": "a name", "STRING": "a string", "INT": "a number", "DURATION": "a duration such as `2s`",
    "PERCENT": "a percentage such as `10%`", "COND": "a retry condition such as `5xx`",
    "$END": "the end of the file", "LBRACE": "`{`", "RBRACE": "`}`", "LSQB": "`[`", "RSQB": "`]`",
    "COMMA": "`,`", "DOT": "`.`",
}


class SyntaxErrorAt(Exception):
    """A syntax error at one token, with the terminals the parser state would have accepted."""

    def __init__(self, code: str, start: int, end: int, found: str, expected: list[str]):
        super().__init__(found)
        self.code, self.start, self.end, self.found, self.expected = code, start, end, found, expected


class Parser:
    """Parses one file; reusable across files (the tables and caches are shared)."""

    def __init__(self, tables: Tables | None = None):
        self.tables = tables or load_tables()
        self._word_cache: dict[tuple[str, int], str] = {}

    # ---- lexing -------------------------------------------------------------------------
    def _classify(self, kind: str, text: str, state: int) -> str:
        """The terminal for a word or number in this parser state (cached per word and state)."""
        accepted = self.tables.states[state]
        candidates: list[str] = []
        if kind == "word":
            keyword = self.tables.keywords.get(text)
            if keyword:
                candidates.append(keyword)
            for term, words in self.tables.keyword_classes.items():
                if text in words:
                    candidates.append(term)
            candidates += ["NAME", "COND"]
        else:
            candidates = [term for term, rx in _NUMBER_KINDS if rx.match(text)] or ["BAD_NUMBER"]
        for term in candidates:
            if term in accepted:
                return term
        return candidates[0]

    # ---- the driver ---------------------------------------------------------------------
    def _run(self, text: str, pos: int, endpos: int, start_symbol: str, reduce_with: list):
        tables = self.tables
        states = tables.states
        keywords = tables.keywords
        cache = self._word_cache
        classify = self._classify
        rule_size = [r[1] for r in tables.rules]
        rule_origin = [r[0] for r in tables.rules]
        state_stack = [tables.start_states[start_symbol]]
        end_state = tables.end_states[start_symbol]
        values: list = []
        punct, digits = _PUNCT, _DIGITS
        pairs = _PAIRS.findall(text, pos, endpos)
        pairs.append(("", ""))  # the end of input
        for blank, value in pairs:
            start = pos + len(blank)
            pos = start + len(value)
            if not value:
                ttype = "$END"
            else:
                first = value[0]
                if first in punct:
                    ttype = keywords[value]
                elif first == '"':
                    if len(value) < 2 or value[-1] != '"':
                        raise SyntaxErrorAt("E0101", start, pos, "an unterminated string",
                                            ['`"` before the end of the line'])
                    ttype = "STRING"
                elif first.isalpha() or first == "_" or first in digits:
                    key = (value, state_stack[-1])
                    ttype = cache.get(key)
                    if ttype is None:
                        kind = "number" if first in digits else "word"
                        ttype = cache[key] = classify(kind, value, state_stack[-1])
                else:
                    raise SyntaxErrorAt("E0102", start, pos, value, [])
            tok = Tok(ttype, value, start, pos)
            # Shift the token, after as many reductions as it takes.
            while True:
                action = states[state_stack[-1]].get(ttype)
                if action is None:
                    expected = sorted(t for t in states[state_stack[-1]] if t.isupper() or t == "$END")
                    found = "the end of the file" if ttype == "$END" else f"`{value}`"
                    raise SyntaxErrorAt("E0103" if ttype == "$END" else "E0101", start, pos, found, expected)
                if action[0]:
                    state_stack.append(action[1])
                    values.append(tok)
                    break
                rule = action[1]
                size = rule_size[rule]
                if size:
                    children = values[-size:]
                    del values[-size:]
                    del state_stack[-size:]
                else:
                    children = []
                values.append(reduce_with[rule](children))
                state_stack.append(states[state_stack[-1]][rule_origin[rule]][1])
                if ttype == "$END" and state_stack[-1] == end_state:
                    return values[-1]
        raise AssertionError("the parser consumed the end of input without accepting")  # pragma: no cover

    # ---- public API ------------------------------------------------------------------------
    def parse(self, source: SourceFile, diags: Collector) -> ast.Module:
        """Parse a whole file. Syntax errors are reported and the items that parse are kept."""
        builder = Builder(source, diags)
        reduce_with = reducers(builder, self.tables)
        text = source.text
        try:
            items = self._run(text, 0, len(text), "start", reduce_with)
            return ast.Module(source.path, tuple(items), Span(source, 0, len(text)))
        except SyntaxErrorAt:
            pass
        # Recovery: parse each top-level item on its own; report the first error of each.
        bounds = [m.start() for m in _TOP_LEVEL.finditer(text)]
        if not bounds or text[:bounds[0]].strip() and not _only_comments(text[:bounds[0]]):
            bounds.insert(0, 0)
        bounds.append(len(text))
        items = []
        for a, b in zip(bounds, bounds[1:]):
            try:
                items.append(self._run(text, a, b, "item", reduce_with))
            except SyntaxErrorAt as err:
                self._report(err, source, diags, at_item_end=b)
        return ast.Module(source.path, tuple(items), Span(source, 0, len(text)))

    def _report(self, err: SyntaxErrorAt, source: SourceFile, diags: Collector, at_item_end: int) -> None:
        expected = [t for t in err.expected if t != "$END"] if err.code != "E0103" else err.expected
        words = [self._describe(t) for t in expected]
        words = list(dict.fromkeys(words))
        span = Span(source, err.start, max(err.end, err.start + 1))
        hint = None
        if err.code == "E0102":
            msg = f"unexpected character `{err.found}`"
            if err.found == ";":
                hint = "settings are separated by spaces or new lines, not `;`"
            elif err.found in "=:":
                hint = f"write `key value`, without `{err.found}`"
            diags.add("E0102", msg, span, hint=hint)
            return
        if err.code == "E0103" or (err.start >= at_item_end and err.found == "the end of the file"):
            # The item ended before it was complete: point at its last token, not at the next item.
            last = source.text.rstrip(None)[:at_item_end].rstrip()
            end = len(last)
            span = Span(source, max(0, end - 1), max(1, end))
            found = "the end of this item" if at_item_end < len(source.text) else "the end of the file"
            code = "E0103"
        else:
            found, code = err.found, "E0101"
        words.sort(key=lambda w: (w in ("`}`", "`]`"), w))  # closing brackets last: they read as "or stop here"
        if code == "E0103":
            where = "the next item" if found == "the end of this item" else "the end of the file"
            msg = f"this item is not complete: expected {_join(words)} before {where}"
        else:
            msg = f"unexpected {found}, expected {_join(words)}" if words else f"unexpected {found}"
        if err.found.startswith("`") and err.found[1:-1][:1].isalpha():
            keywords = [w.strip("`") for w in words if w.startswith("`")]
            hint = did_you_mean(err.found[1:-1], keywords)
        if code == "E0103" and "`}`" in words:
            hint = hint or "a `}` is missing: every `{` needs its `}`"
        diags.add(code, msg, span, hint=hint)

    def _describe(self, term: str) -> str:
        if term in _DESCRIBE:
            return _DESCRIBE[term]
        words = self.tables.keyword_classes.get(term)
        if words:
            return _join([f"`{w}`" for w in words], "or")
        text = self.tables.terminal_text.get(term)
        return f"`{text}`" if text else term.lower()


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("#") for line in text.splitlines())


def _join(words: list[str], last: str = "or") -> str:
    if len(words) <= 1:
        return "".join(words)
    if len(words) > 12:
        return ", ".join(words[:12]) + f", {last} {len(words) - 12} more"
    return ", ".join(words[:-1]) + f" {last} " + words[-1]


_PARSER: Parser | None = None


def parse_source(source: SourceFile, diags: Collector) -> ast.Module:
    """Parse one source file with the shared parser."""
    global _PARSER
    if _PARSER is None:
        _PARSER = Parser()
    return _PARSER.parse(source, diags)
