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
from itertools import accumulate, compress, pairwise

from compiler.core.diagnostics import Collector, closest, did_you_mean
from compiler.core.source import SourceFile, Span
from compiler.syntax import ast
from compiler.syntax.build import Builder, _append_one, _as_list, reducers
from compiler.syntax.tables import Tables, load_tables


def _load_driver():
    """The shift-reduce loop: compiled by mypyc when the build made it (setup.py), else the plain
    module. A compiled copy older than its source (an in-place build, then an edit) is ignored,
    as it is with MESHC_PURE_PYTHON=1 set (a comparison of both)."""
    import os

    from compiler.syntax import driver

    path = driver.__file__ or ""
    if path.endswith(".py"):
        return driver.shift_reduce
    source = os.path.join(os.path.dirname(path), "driver.py")
    try:
        # 2 s of slack: an installer writes both files in one go, in any order
        stale = os.stat(source).st_mtime > os.stat(path).st_mtime + 2
    except OSError:
        stale = False
    if not stale and os.environ.get("MESHC_PURE_PYTHON") != "1":
        return driver.shift_reduce
    import importlib.util

    spec = importlib.util.spec_from_file_location("compiler.syntax._driver_py", source)
    assert spec is not None and spec.loader is not None
    plain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plain)
    return plain.shift_reduce


_shift_reduce = _load_driver()
_LIST_KINDS = {_as_list: 1, _append_one: 2}   # driver.AS_LIST, driver.APPEND_ONE: reduced inline

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from typing import Any, NoReturn

# Lexing is done in bulk by C code: one re.split cuts the text into alternating blanks and tokens,
# itertools.accumulate turns the piece lengths into offsets, and a dict lookup gives each token
# its context-free terminal. Any other single character is a token too, so that errors keep exact
# positions. Only the rare token whose terminal depends on the parser state (a keyword used as a
# name, a number that is a retry condition) is classified in the loop.
_PIECES = re.compile(r"""(
"[^"\\\n]*+(?:\\.[^"\\\n]*+)*+"|[A-Za-z_][A-Za-z0-9_-]*+(?:/[A-Za-z_][A-Za-z0-9_-]*+)?+
|[0-9][0-9A-Za-z_.%-]*+|\#[^\n]*+|[^ \t\r\n\f]
)""", re.X)
# One group, so the pieces are [blanks, token, blanks, token, ..., blanks]: the text between two
# tokens is only ever blanks, since any other character starts a token. A comment is a token of
# its own here (terminal COMMENT), so that a `#` is never searched for tokens, and is dropped from
# the arrays before parsing; text without one costs a single scan. Two pieces per token instead
# of a (gap, blanks, token) triple make the offsets a third cheaper, and the whole lexer of a
# 17 MB program 1.7 -> 1.0 s.
# A name may be namespace-qualified, `NAMESPACE/NAME` (one token, a NAME: a service reference,
# docs/language.md §5.1); a `/` anywhere else is a character of its own, as before.
# Possessive runs and a string unrolled as `"plain*(\\.plain*)*"` give the regex engine nothing to
# backtrack into (tests/test_parse_speedups.py compares the tokens with the plain pattern's on
# random text).
_PUNCT = frozenset("{}[],.")
_DIGITS = frozenset("0123456789")
# Every word with a `/` (a `NAMESPACE/NAME`) any parser of this process has lexed. While it is
# empty, no program parsed here holds one, and compiler/semantic/namespaces.py need not scan the
# sources for one (half a second for 17 MB, in each shard of a large check).
SLASHED_WORDS: set[str] = set()
_NUMBER_KINDS = (
    ("DURATION", re.compile(r"[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h)\Z")),
    ("PERCENT", re.compile(r"[0-9]+(?:\.[0-9]+)?%\Z")),
    ("INT", re.compile(r"[0-9]+\Z")),
    ("COND", re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]*\Z")),
)
_ITEM_HEAD = re.compile(r"\s*(service|routes|authorization|policy\s+[a-z_]+)\s+([A-Za-z_][A-Za-z0-9_/-]*)")
_NAMED_ITEMS = ("service", "routes", "authorization")  # the items a reference may name
# Compiled on first use (an error path): compiling a regex at import costs every `meshc check`.
_TYPO_HEAD = r"\s*([A-Za-z_][A-Za-z0-9_-]*)\s+([A-Za-z_][A-Za-z0-9_-]*)\s*\{"
_TOP_LEVEL = re.compile(r"^[ \t]*(?:import|mesh|service|routes|authorization|policy|test)\b", re.M)

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
        self._free: dict[str, str] = {}
        self._rule_size = [r[1] for r in self.tables.rules]
        # Actions as single ints: a shift (or goto) is the target state, a reduction is ~rule.
        self._actions = {state: {sym: (target if shift else ~target) for sym, (shift, target) in row.items()}
                         for state, row in self.tables.states.items()}
        self._rule_origin = [r[0] for r in self.tables.rules]
        # Per rule, the goto on its name from each state that has one (driver.shift_reduce).
        gotos: dict[str, dict[int, int]] = {}
        for state, row in self._actions.items():
            for sym, target in row.items():
                gotos.setdefault(sym, {})[state] = target
        self._rule_goto = [gotos.get(origin, {}) for origin in self._rule_origin]
        self._kinds: list[int] | None = None
        self._punct_types = frozenset(self.tables.keywords[p] for p in _PUNCT if p in self.tables.keywords)

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
    def _free_type(self, value: str) -> str:
        """The terminal of a token regardless of parser state; cached per distinct token text."""
        first = value[0]
        if first == "#":
            return "COMMENT"   # not cached: comments rarely repeat
        if first == '"':
            ttype = "STRING" if len(value) >= 2 and value[-1] == '"' else "UNTERMINATED"
        elif first in _DIGITS:
            ttype = next((t for t, rx in _NUMBER_KINDS if rx.match(value)), "BAD_NUMBER")
        elif first.isalpha() or first == "_":
            ttype = self.tables.keywords.get(value, "NAME")
            if "/" in value:
                SLASHED_WORDS.add(value)
        else:
            ttype = self.tables.keywords.get(value, "BAD_CHAR")
        if len(self._free) < 200_000:  # names repeat; keep the cache bounded for huge inputs
            self._free[value] = ttype
        return ttype

    def _tokens(self, text: str, pos: int, endpos: int) -> tuple[list[str], list[str], list[int], list[int]]:
        """Token texts, context-free terminals, start and end offsets of text[pos:endpos]."""
        pieces = _PIECES.split(text[pos:endpos]) if (pos, endpos) != (0, len(text)) else _PIECES.split(text)
        offsets = list(accumulate(map(len, pieces), initial=pos))
        vals = pieces[1::2]
        starts = offsets[1::2][:len(vals)]
        ends = offsets[2::2]
        # Each distinct text is typed once (most repeat), then every token is looked up in C.
        free, free_type = self._free, self._free_type
        typed = {v: free.get(v) or free_type(v) for v in set(vals)}
        types = list(map(typed.__getitem__, vals))
        if "COMMENT" in types:
            keep = list(map("COMMENT".__ne__, types))
            vals, types = list(compress(vals, keep)), list(compress(types, keep))
            starts, ends = list(compress(starts, keep)), list(compress(ends, keep))
        # The end of input: after the last token, so errors point at the end of what was written.
        last = ends[-1] if ends else pos
        vals.append("")
        types.append("$END")
        starts.append(last)
        ends.append(last)
        return vals, types, starts, ends

    def _run(self, text: str, pos: int, endpos: int, start_symbol: str, reduce_with: list, builder: Builder):
        """Shift-reduce over the token arrays; returns the value of the start symbol."""
        vals, types, starts, ends = self._tokens(text, pos, endpos)
        builder.use_tokens(vals, types, starts, ends)

        def fail(i: int, ttype: str, state_stack: list[int]) -> NoReturn:
            self._fail(vals[i], ttype, starts[i], ends[i], state_stack)

        kinds = self._kinds
        if kinds is None:   # the same for every builder: reducers() chooses them from the tables
            kinds = self._kinds = [_LIST_KINDS.get(f, 0) for f in reduce_with]
        return _shift_reduce(self._actions, self._rule_size, self._rule_goto,
                             self.tables.start_states[start_symbol], self.tables.end_states[start_symbol],
                             vals, types, reduce_with, kinds, self._contextual, fail)

    def _contextual(self, value: str, ttype: str, state: int) -> str:
        """The terminal a word or number takes in this parser state when its free one is not accepted."""
        if ttype in ("$END", "STRING", "UNTERMINATED", "BAD_CHAR") or ttype in self._punct_types:
            return ttype
        key = (value, state)
        found = self._word_cache.get(key)
        if found is None:
            kind = "number" if value[0] in _DIGITS else "word"
            found = self._word_cache[key] = self._classify(kind, value, state)
        return found

    def _fail(self, value: str, ttype: str, start: int, end: int, state_stack: list[int]) -> NoReturn:
        if ttype == "UNTERMINATED":
            raise SyntaxErrorAt("E0101", start, end, "unterminated string", ['`"` before the end of the line'])
        if ttype == "BAD_CHAR":
            raise SyntaxErrorAt("E0102", start, end, value, [])
        expected = sorted(t for t in self.tables.states[state_stack[-1]]
                          if (t.isupper() or t == "$END") and self._accepts(state_stack, t))
        found = "the end of the file" if ttype == "$END" else f"`{value}`"
        raise SyntaxErrorAt("E0103" if ttype == "$END" else "E0101", start, end, found, expected)

    def _accepts(self, state_stack: list[int], terminal: str) -> bool:
        """Would the parser shift `terminal` here? LALR merges states, so a state's lookaheads
        include terminals of other contexts; running the reductions on a copy tells them apart."""
        actions = self._actions
        stack = list(state_stack)
        while True:
            a = actions[stack[-1]].get(terminal)
            if a is None:
                return False
            if a >= 0:
                return True
            rule = ~a
            size = self._rule_size[rule]
            if size:
                del stack[-size:]
            goto = actions[stack[-1]].get(self._rule_origin[rule])
            if goto is None:
                return terminal == "$END"
            stack.append(goto)

    # ---- public API ------------------------------------------------------------------------
    def parse(self, source: SourceFile, diags: Collector, start: int = 0, end: int | None = None) -> ast.Module:
        """Parse a file, or the items in text[start:end] (which must begin and end at item
        boundaries). Syntax errors are reported and the items that parse are kept."""
        builder = Builder(source, diags)
        reduce_with = reducers(builder, self.tables)
        text = source.text
        end = len(text) if end is None else end
        try:
            items = self._run(text, start, end, "start", reduce_with, builder)
            return ast.Module(source.path, tuple(items), Span(source, start, end))
        except SyntaxErrorAt:
            pass
        # Recovery: parse each top-level item on its own; report the first error of each.
        bounds = [m.start() for m in _TOP_LEVEL.finditer(text, start, end)]
        if not bounds or (text[start:bounds[0]].strip() and not _only_comments(text[start:bounds[0]])):
            bounds.insert(0, start)
        bounds.append(end)
        items, broken = [], []
        pieces = list(pairwise(bounds))
        pieces.reverse()  # a stack: a piece may be split in two, the second part parsed next
        while pieces:
            a, b = pieces.pop()
            try:
                items.append(self._run(text, a, b, "item", reduce_with, builder))
                continue
            except SyntaxErrorAt as err:
                if err.code in ("E0101", "E0102") and err.start > a:
                    # A complete item followed by something that starts no item (`servce x {`
                    # after a `service`): keep the item, and parse the rest as the next item, so
                    # that it gets the expected items and the "did you mean" of a first item.
                    try:
                        item = self._run(text, a, err.start, "item", reduce_with, builder)
                    except SyntaxErrorAt:
                        pass
                    else:
                        items.append(item)
                        pieces.append((err.start, b))
                        continue
                self._report(err, source, diags, a, b)
            kind_name = _broken_head(text, a, b)
            if kind_name is not None:
                broken.append(kind_name)
        return ast.Module(source.path, tuple(items), Span(source, start, end), tuple(broken))

    def _report(self, err: SyntaxErrorAt, source: SourceFile, diags: Collector, at_item_start: int,
                at_item_end: int) -> None:
        expected = [t for t in err.expected if t != "$END"] if err.code != "E0103" else err.expected
        words = [self._describe(t) for t in expected]
        words = list(dict.fromkeys(words))
        span = Span(source, err.start, max(err.end, err.start + 1))
        hint = None
        if err.code == "E0102":
            msg = f"unexpected character `{err.found}`"
            if not err.found.isprintable():  # a control or invisible character: name it too
                msg += f" (U+{ord(err.found):04X})"
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
            if len(found) > 42:  # a very long token: its start is enough to find it
                found = found[:21] + "…`"
        words.sort(key=lambda w: (w in ("`}`", "`]`"), w))  # closing brackets last: they read as "or stop here"
        if code == "E0103":
            where = "the next item" if found == "the end of this item" else "the end of the file"
            msg = f"this item is not complete: expected {_join(words)} before {where}"
        elif err.found == "`}`" and (not words or _only_comments(source.text[at_item_start:err.start])):
            msg = "unexpected `}`: no block is open here"
            hint = "remove it, or look for a `{` missing above"
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


def _broken_head(text: str, start: int, end: int) -> tuple[str, str] | None:
    """(kind, name) of an item that failed to parse, when its head is readable: `service NAME`,
    `policy KIND NAME`, or a misspelt item keyword with a close match (`servce NAME {`)."""
    head = _ITEM_HEAD.match(text, start, end)
    if head:  # ("service", name), or ("policy retry", name) with the policy's kind
        return " ".join(head.group(1).split()), head.group(2)
    head = re.compile(_TYPO_HEAD).match(text, start, end)
    if head:
        word = head.group(1)
        kind = closest(word, _NAMED_ITEMS)  # as the E0101 hint guesses, among the named items
        if kind is not None:
            return kind, head.group(2)
    return None


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("#") for line in text.splitlines())


def _join(words: list[str], last: str = "or") -> str:
    if len(words) <= 1:
        return "".join(words)
    if len(words) > 16:   # (a route's items are 15, `}` included)
        return ", ".join(words[:16]) + f", {last} {len(words) - 16} more"
    return ", ".join(words[:-1]) + f" {last} " + words[-1]


class Token:
    """One token as the parser classified it: `kind` is `keyword`, `punctuation`, or the lower-case
    terminal (`name`, `string`, `int`, `duration`, `percent`, `cond` for a retry condition, `path_kind`, ...)."""
    __slots__ = ("kind", "text", "start", "end")

    def __init__(self, kind: str, text: str, start: int, end: int):
        self.kind, self.text, self.start, self.end = kind, text, start, end

    def __repr__(self) -> str:
        return f"Token({self.kind!r}, {self.text!r}, {self.start}, {self.end})"


_PARSER: Parser | None = None


def _parser() -> Parser:
    global _PARSER
    if _PARSER is None:
        _PARSER = Parser()
    return _PARSER


def parse_source(source: SourceFile, diags: Collector) -> ast.Module:
    """Parse one source file with the shared parser."""
    return _parser().parse(source, diags)


def tokens(source: SourceFile) -> list[Token] | None:
    """The tokens of a file, each classified as the parser took it (a keyword written where a name
    stands is a `name`); None when the file has a syntax error (`parse_source` reports it)."""
    parser = _parser()
    builder = Builder(source, Collector())
    try:
        parser._run(source.text, 0, len(source.text), "start", reducers(builder, parser.tables), builder)
    except SyntaxErrorAt:
        return None
    keywords = set(parser.tables.keywords.values())
    out = []
    for text, terminal, start, end in zip(builder.vals, builder.types, builder.starts, builder.ends):
        if terminal == "$END":
            continue
        if terminal in parser._punct_types:
            kind = "punctuation"
        elif terminal in keywords:
            kind = "keyword"
        else:
            kind = terminal.lower()
        out.append(Token(kind, text, start, end))
    return out


class ItemCache:
    """Top-level items parsed before, kept by their text, for a process that parses the same
    files again and again (`meshc serve`): a file parsed again parses only the items whose text
    changed, and an unchanged item that moved has its spans shifted in place.

    One `SourceFile` per path is kept and its text replaced (`source`), so the spans of an item
    that did not move stay right without being touched. The ASTs it returns therefore belong to
    the cache: a module from an earlier parse may point at the newer text (use one cache per
    owner, and keep no earlier parse). A file that does not parse cleanly item by item (a syntax
    error, any diagnostic while building, text before its first item, a cut that is not an item
    boundary) is parsed whole by `parse_source`, so its diagnostics are exactly that one's.
    """

    def __init__(self) -> None:
        self._sources: dict[str, SourceFile] = {}
        # path -> item text -> (the item's AST, every Span object in it, the offset it starts at)
        self._items: dict[str, dict[str, tuple[object, list[Span], int]]] = {}
        self.reused = 0   # items reused, over the cache's life
        # the check results kept with these items (compiler/semantic/reuse.py; set by compiler.api)
        self.checks: Any = None

    def source(self, path: str, text: str) -> SourceFile:
        """The one SourceFile of `path`, now holding `text`."""
        source = self._sources.get(path)
        if source is None:
            source = self._sources[path] = SourceFile(path, text)
        elif source.text is not text:
            source.text = text
            source._line_starts = None
        return source

    def parse(self, source: SourceFile, diags: Collector) -> ast.Module:
        """The module of `source` (made by `source()`), as `parse_source` would give it."""
        text = source.text
        bounds = [m.start() for m in _TOP_LEVEL.finditer(text)]
        if not bounds or (text[:bounds[0]].strip() and not _only_comments(text[:bounds[0]])):
            return parse_source(source, diags)
        bounds.append(len(text))
        parser = _parser()
        known = self._items.get(source.path, {})
        now: dict[str, tuple[object, list[Span], int]] = {}
        items: list = []
        for a, b in pairwise(bounds):
            piece = text[a:b]
            entry = known.get(piece)
            if entry is not None and piece not in now:
                item, spans, start = entry
                if a != start:
                    delta = a - start
                    for span in spans:
                        span.start += delta
                        span.end += delta
                    known[piece] = entry = (item, spans, a)
                self.reused += 1
            else:
                local = Collector()
                builder = Builder(source, local)
                try:
                    item = parser._run(text, a, b, "item", reducers(builder, parser.tables), builder)
                except SyntaxErrorAt:
                    return parse_source(source, diags)
                if local.sorted():
                    return parse_source(source, diags)
                entry = (item, _spans(item), a)
            now[piece] = entry
            items.append(item)
        self._items[source.path] = now
        return ast.Module(source.path, tuple(items), Span(source, 0, len(text)))


def _spans(root: object) -> list[Span]:
    """Every Span object in an AST (each once, however many nodes share it)."""
    found: dict[int, Span] = {}
    work = [root]
    while work:
        value = work.pop()
        if isinstance(value, Span):
            found[id(value)] = value
        elif isinstance(value, tuple):
            work.extend(value)
        elif hasattr(value, "__dataclass_fields__"):
            work.extend(getattr(value, name) for name in value.__dataclass_fields__)
    return list(found.values())
