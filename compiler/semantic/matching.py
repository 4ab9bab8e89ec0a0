"""Pure set reasoning over IR matches: does one match take every request another one takes?

Used by the unreachable-route check and the authorization checks. The answers are sound but
not complete: `covers(a, b)` True means every request matched by `b` is matched by `a`; False
means "not proven", so a warning is never raised without a reason.
"""

from __future__ import annotations

import re
from functools import lru_cache

from compiler import ir


@lru_cache(maxsize=4096)
def _re2(pattern: str):
    import re2

    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options=options)
    except Exception:
        return None


def regex_fullmatch(pattern: str, text: str) -> bool:
    rx = _re2(pattern)
    return rx is not None and rx.fullmatch(text) is not None


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _has_letters(value: str) -> bool:
    return any("a" <= c <= "z" for c in value.translate(_ASCII_LOWER))


def _folds(p: ir.PathMatch) -> bool:
    """`p` takes every ASCII case of a path it takes: `ignore_case` on a value with letters (a
    value without letters compares the same either way)."""
    return p.ignore_case and _has_letters(p.value)


def _lowered(p: ir.PathMatch) -> ir.PathMatch:
    return ir.PathMatch(p.kind, p.value.translate(_ASCII_LOWER))


def path_covers(a: ir.PathMatch | None, b: ir.PathMatch | None) -> bool:
    """Every path matched by `b` is matched by `a` (None means any path). With `ignore_case`
    (ASCII letters, never a regex): a folding `a` is compared in lower case with `b` in lower case
    (a path `b` takes, lower-cased, is one lower-cased `b` takes); a folding `b` is covered only by
    an `a` whose test does not depend on case (it folds too, or its value has no letter)."""
    if a is None:
        return True
    if a.kind in ("prefix", "segment_prefix") and a.value == "/":
        return True  # every path starts with `/`
    if b is None:
        return False
    a_folds, b_folds = _folds(a), _folds(b)
    if a_folds or b_folds:
        if b.kind == "regex" or (b_folds and not a_folds and (a.kind == "regex" or _has_letters(a.value))):
            return False  # not proven: `b` takes a case of its paths that `a` compares exactly
        return _covers_exactly(_lowered(a), _lowered(b))
    return _covers_exactly(a, b)


def _covers_exactly(a: ir.PathMatch, b: ir.PathMatch) -> bool:
    """path_covers on case-sensitive conditions (`a` is not the prefix `/`)."""
    if a.kind == "exact":
        return b.kind == "exact" and b.value == a.value
    if a.kind == "prefix":
        return b.kind in ("exact", "prefix", "segment_prefix") and b.value.startswith(a.value)
    if a.kind == "segment_prefix":
        p = a.value
        if b.kind in ("exact", "segment_prefix"):
            return b.value == p or b.value.startswith(p + "/")
        if b.kind == "prefix":
            return b.value.startswith(p + "/")
        return False
    if a.kind == "regex":
        if b.kind == "regex":
            return b.value == a.value
        if b.kind == "exact":
            return regex_fullmatch(a.value, b.value)
    return False


def _string_implies(b: ir.HeaderMatch | ir.QueryMatch, a: ir.HeaderMatch | ir.QueryMatch) -> bool:
    """A value satisfying test `b` always satisfies test `a` (same name, checked by the caller)."""
    if b == a:
        return True
    a_invert = getattr(a, "invert", False)
    b_invert = getattr(b, "invert", False)
    if a.kind == "present":
        # Any test on a present header implies presence; `absent` does not.
        return b.kind != "absent"
    if a_invert or b_invert or getattr(a, "ignore_case", False) or getattr(b, "ignore_case", False):
        return False
    if b.kind != "exact":
        return False
    v, expected = b.value, a.value
    if v is None or expected is None:  # `a` is `absent` (an `exact` test always has a value)
        return False
    if a.kind == "exact":
        return v == expected
    if a.kind == "prefix":
        return v.startswith(expected)
    if a.kind == "suffix":
        return v.endswith(expected)
    if a.kind == "regex":
        return regex_fullmatch(expected, v)
    return False


def conditions_cover(a_items, b_items) -> bool:
    """Every condition of `a` is implied by some condition of `b` on the same name."""
    return all(any(cb.name == ca.name and _string_implies(cb, ca) for cb in b_items) for ca in a_items)


def methods_cover(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> bool:
    if a is None:
        return True
    return b is not None and set(b) <= set(a)


def callers_cover(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> bool:
    """Every caller whose sidecar takes `b` takes `a` (None: every caller)."""
    return a is None or (b is not None and set(b) <= set(a))


def match_covers(a: ir.Match, b: ir.Match) -> bool:
    """Every request matched by `b` is matched by `a` (from every caller that `b` applies to)."""
    return (callers_cover(a.callers, b.callers) and path_covers(a.path, b.path) and methods_cover(a.methods, b.methods)
            and conditions_cover(a.headers, b.headers) and conditions_cover(a.query, b.query))


# ---- an index of earlier matches: the ones that may cover a new one ---------------------------

_PATH_KINDS = frozenset(("exact", "prefix", "segment_prefix", "regex"))
# characters that stand for themselves in RE2 (a string: `re` compiles and caches it on first use,
# not at every `meshc check`'s import)
_LITERAL_RUN = r"[^\\.^$|?*+()\[\]{}]*"


def regex_literal_prefix(pattern: str) -> str:
    """A prefix that every string the RE2 pattern fully matches starts with: its leading literal
    characters, each neither optional nor repeated from zero; '' when there is none or the
    pattern has an alternation anywhere (the matching is case-sensitive: RE2's default)."""
    if "|" in pattern:
        return ""
    end = re.match(_LITERAL_RUN, pattern).end()  # type: ignore[union-attr]  # `*` always matches
    if pattern[end:end + 1] in ("?", "*", "{"):
        end -= 1  # the last literal may be absent (before a `+` it is there at least once)
    return pattern[:max(end, 0)]


class CoverIndex:
    """Earlier matches, filed so that those which may cover a new match are found without
    comparing it with every one (the W0401 check was quadratic in the routes of a service).

    `first_cover(b)` gives the item of the earliest added match `a` with match_covers(a, b),
    exactly as a scan of every earlier match in order would: each match is filed under one
    anchor that every match it covers has too, and a lookup tests, in the order they were added,
    the matches filed under the anchors `b` has. The anchors of `a`, in this order of preference:

    - an exact path: only an equal exact path is covered;
    - an exact header test (`header "x" exact "v"`, also inverted or ignoring case): a covered
      match has an exact test of the same header with the same value (_string_implies);
    - an exact query test: the same;
    - a prefix or segment prefix: a covered path is exact or a prefix and starts with it;
    - a regex: a covered path is the same regex, or an exact path starting with the regex's
      literal prefix (regex_literal_prefix);
    - any path (none, or the prefix `/`): compared with every later match.

    A path this index does not know (a kind it does not file, a path that ignores case) is filed
    with the matches compared with every later one, and a match with such a path is compared
    with every earlier one: a new path semantics stays correct here before it is indexed."""

    __slots__ = ("_seq", "_all", "_anywhere", "_exact", "_prefixes", "_prefix_lengths", "_regexes",
                 "_regex_prefixes", "_regex_lengths", "_headers", "_query")

    def __init__(self) -> None:
        self._seq = 0
        self._all: list = []             # every entry: (seq, item, match), in order
        self._anywhere: list = []        # compared with every later match
        self._exact: dict[str, list] = {}
        self._prefixes: dict[str, list] = {}
        self._prefix_lengths: set[int] = set()
        self._regexes: dict[str, list] = {}
        self._regex_prefixes: dict[str, list] = {}
        self._regex_lengths: set[int] = set()
        self._headers: dict[tuple[str, str | None], list] = {}
        self._query: dict[tuple[str, str | None], list] = {}

    def add(self, item: object, matches) -> None:
        """File the matches of one item (a route); items are ordered by when they are added."""
        seq = self._seq
        self._seq += 1
        for a in matches:
            entry = (seq, item, a)
            self._all.append(entry)
            self._file(entry, a)

    def _file(self, entry: tuple, a: ir.Match) -> None:
        path = a.path
        known = path is None or (path.kind in _PATH_KINDS and not getattr(path, "ignore_case", False))
        if known and path is not None and path.kind == "exact":
            self._exact.setdefault(path.value, []).append(entry)
            return
        for h in a.headers:
            if h.kind == "exact":
                self._headers.setdefault((h.name, h.value), []).append(entry)
                return
        for q in a.query:
            if q.kind == "exact":
                self._query.setdefault((q.name, q.value), []).append(entry)
                return
        if not known or path is None or (path.kind != "regex" and path.value == "/"):
            self._anywhere.append(entry)  # a path this index does not know, or any path
        elif path.kind == "regex":
            self._regexes.setdefault(path.value, []).append(entry)
            literal = regex_literal_prefix(path.value)
            self._regex_prefixes.setdefault(literal, []).append(entry)
            self._regex_lengths.add(len(literal))
        else:  # prefix, segment_prefix
            self._prefixes.setdefault(path.value, []).append(entry)
            self._prefix_lengths.add(len(path.value))

    def candidates(self, b: ir.Match) -> list:
        """The entries that may cover `b`, in the order they were added (a superset of those that do)."""
        path = b.path
        if path is not None and (path.kind not in _PATH_KINDS or getattr(path, "ignore_case", False)):
            return self._all
        lists = [self._anywhere] if self._anywhere else []
        if path is not None:
            value = path.value
            if path.kind == "regex":
                found = self._regexes.get(value)
                if found:
                    lists.append(found)
            else:
                size = len(value)
                prefixes = self._prefixes
                for n in self._prefix_lengths:
                    if n <= size:
                        found = prefixes.get(value[:n])
                        if found:
                            lists.append(found)
                if path.kind == "exact":
                    found = self._exact.get(value)
                    if found:
                        lists.append(found)
                    regexes = self._regex_prefixes
                    for n in self._regex_lengths:
                        if n <= size:
                            found = regexes.get(value[:n])
                            if found:
                                lists.append(found)
        exact_tests = 0
        if b.headers:
            for h in b.headers:
                if h.kind == "exact":
                    exact_tests += 1
                    found = self._headers.get((h.name, h.value))
                    if found:
                        lists.append(found)
        if b.query:
            for q in b.query:
                if q.kind == "exact":
                    exact_tests += 1
                    found = self._query.get((q.name, q.value))
                    if found:
                        lists.append(found)
        if len(lists) <= 1:
            return lists[0] if lists else lists  # each list is in the order of adding
        entries = [entry for found in lists for entry in found]
        if exact_tests > 1 and _repeats(b):  # an entry is filed once, but one list can be met twice
            entries = list({id(entry): entry for entry in entries}.values())
        entries.sort(key=_seq_of)
        return entries

    def first_cover(self, b: ir.Match):
        """The item of the earliest added match that covers `b`, or None."""
        for _, item, a in self.candidates(b):
            if match_covers(a, b):
                return item
        return None


def _seq_of(entry: tuple) -> int:
    return entry[0]


def _repeats(b: ir.Match) -> bool:
    """`b` has two exact header (or query) tests of one name and value: one list looked up twice."""
    headers = [(h.name, h.value) for h in b.headers if h.kind == "exact"]
    query = [(q.name, q.value) for q in b.query if q.kind == "exact"]
    return len(set(headers)) != len(headers) or len(set(query)) != len(query)


def principals_cover(a: tuple[ir.Principal, ...] | None, b: tuple[ir.Principal, ...] | None) -> bool:
    if a is None:
        return True
    if b is None:
        return False
    for pb in b:
        if not any((pa.value == pb.value and pa.kind == pb.kind)
                   or (pa.kind == "prefix" and pb.value.startswith(pa.value)) for pa in a):
            return False
    return True


def rule_covers(a: ir.AuthzRule, b: ir.AuthzRule) -> bool:
    """Every request matched by authorization rule `b` is matched by rule `a`."""
    return (principals_cover(a.principals, b.principals) and path_covers(a.path, b.path)
            and methods_cover(a.methods, b.methods) and conditions_cover(a.headers, b.headers)
            and _exclusions_cover(a, b))


def _exclusions_cover(a: ir.AuthzRule, b: ir.AuthzRule) -> bool:
    """No request of `b` is one `a` excludes (`not path`, `not method`); `b`'s own exclusions only
    narrow `b`, so ignoring them is sound. A method `a` excludes must be one `b` cannot have (not in
    its `method` list, or excluded by `b` too); a path `a` excludes must be excluded by `b` as well
    (the same condition), or lie outside `b`'s own path (never proven here: False)."""
    for m in a.not_methods:
        if m not in b.not_methods and (b.methods is None or m in b.methods):
            return False
    return all(p in b.not_paths for p in a.not_paths)


def rule_never_matches(r: ir.AuthzRule) -> bool:
    """The rule's exclusions take every request its own conditions admit (W0610). True is a
    proof: every method it names is excluded, or an excluded path covers its path."""
    if r.not_methods and r.methods is not None and set(r.methods) <= set(r.not_methods):
        return True
    return any(path_covers(p, r.path) for p in r.not_paths)


# ---- concrete requests: witnesses for diagnostics ---------------------------------------------------

def request_matches(m: ir.Match, method: str, path: str, headers: dict[str, list[str]],
                    query: dict[str, str]) -> bool:
    """Does one concrete request satisfy match `m` (docs/language.md section 7)?

    `headers` maps lower-case names to every value; `query` maps a key to its first value."""
    if m.methods is not None and method not in m.methods:
        return False
    if m.path is not None and not path_matches(m.path, path):
        return False
    for h in m.headers:
        values = headers.get(h.name)
        if h.kind == "present":
            if values is None:
                return False
        elif h.kind == "absent":
            if values is not None:
                return False
        elif values is None:
            return False
        else:
            assert h.value is not None  # every other test has its operand
            if any(_string_test(h.kind, h.value, v, h.ignore_case) for v in values) == h.invert:
                return False
    for q in m.query:
        value = query.get(q.name)
        if value is None:
            return False
        if q.kind != "present":
            assert q.value is not None  # every other test has its operand
            if not _string_test(q.kind, q.value, value, False):
                return False
    return True


def path_matches(p: ir.PathMatch, path: str) -> bool:
    if p.ignore_case and p.kind != "regex":
        p, path = _lowered(p), path.translate(_ASCII_LOWER)
    if p.kind == "exact":
        return path == p.value
    if p.kind == "prefix":
        return path.startswith(p.value)
    if p.kind == "segment_prefix":
        return p.value == "/" or path == p.value or path.startswith(p.value + "/")
    return regex_fullmatch(p.value, path)


def _string_test(kind: str, expected: str, value: str, ignore_case: bool) -> bool:
    if kind == "regex":
        return regex_fullmatch(expected, value)
    if ignore_case:
        expected, value = expected.lower(), value.lower()
    if kind == "exact":
        return value == expected
    if kind == "prefix":
        return value.startswith(expected)
    return value.endswith(expected)


def example_request(m: ir.Match) -> str | None:
    """A short, concrete request that match `m` takes, such as `GET /api/users?v=2` with
    `x-canary: on`, checked against `m`; None when no simple one is found (some regexes)."""
    method = m.methods[0] if m.methods else "GET"
    path: str | None
    if m.path is None:
        path = "/"
    elif m.path.kind in ("exact", "prefix", "segment_prefix"):
        path = m.path.value
    else:
        path = regex_example(m.path.value)
        if path is None or not path.startswith("/"):
            return None
    headers: dict[str, list[str]] = {}
    for h in m.headers:
        if h.kind == "absent":
            continue  # the header is left out
        value = _example_value(h.kind, h.value, h.invert, h.ignore_case)
        if value is None:
            return None
        headers.setdefault(h.name, []).append(value)
    query: dict[str, str] = {}
    for q in m.query:
        value = "" if q.kind == "present" else _example_value(q.kind, q.value, False, False)
        if value is None:
            return None
        query.setdefault(q.name, value)
    if not request_matches(m, method, path, headers, query):
        return None
    text = f"{method} {path}"
    if query:
        text += "?" + "&".join(k if v == "" else f"{k}={v}" for k, v in query.items())
    shown = [f"{name}: {v}" for name, values in headers.items() for v in values]
    return f"`{text}`" + (f" with `{', '.join(shown)}`" if shown else "")


def _example_value(kind: str, expected: str | None, invert: bool, ignore_case: bool) -> str | None:
    """A header or query value passing the test (any but `absent`, which the caller leaves out)."""
    if kind == "present":
        return "1"
    assert expected is not None  # every other test has its operand
    if invert:
        for candidate in ("x", "meshc", "0"):
            if not _string_test(kind, expected, candidate, ignore_case):
                return candidate
        return None
    if kind == "regex":
        return regex_example(expected)
    return expected


def regex_example(pattern: str) -> str | None:
    """A short string that the RE2 pattern fully matches, built from its syntax tree; None when
    the pattern uses constructs this simple generator does not handle."""
    import re._parser as sre_parse  # type: ignore[import-not-found]  # re's private parser has no stubs
    from re._constants import (  # type: ignore[import-not-found]  # nor its constants
        ANY,
        AT,
        BRANCH,
        CATEGORY,
        IN,
        LITERAL,
        MAX_REPEAT,
        MIN_REPEAT,
        NEGATE,
        NOT_LITERAL,
        RANGE,
        SUBPATTERN,
    )

    def category(name) -> str:
        text = str(name)
        if "DIGIT" in text:
            return "0" if "NOT" not in text else "a"
        if "WORD" in text:
            return "a" if "NOT" not in text else "-"
        if "SPACE" in text:
            return " " if "NOT" not in text else "a"
        raise ValueError(name)

    def one_of(items) -> str:
        if items and items[0][0] == NEGATE:
            excluded = set()
            for op, av in items[1:]:
                if op == LITERAL:
                    excluded.add(chr(av))
            for ch in "abcxyz019-_":
                if ch not in excluded and all(op == LITERAL for op, _ in items[1:]):
                    return ch
            raise ValueError("negated class")
        op, av = items[0]
        if op == LITERAL:
            return chr(av)
        if op == RANGE:
            return chr(av[0])
        if op == CATEGORY:
            return category(av)
        raise ValueError(op)

    def build(seq) -> str:
        out = []
        for op, av in seq:
            if op == LITERAL:
                out.append(chr(av))
            elif op == NOT_LITERAL:
                out.append("x" if chr(av) != "x" else "y")
            elif op == ANY:
                out.append("x")
            elif op == IN:
                out.append(one_of(av))
            elif op in (MAX_REPEAT, MIN_REPEAT):
                low, _, item = av
                out.append(build(item) * low)   # the shortest: optional parts left out
            elif op == SUBPATTERN:
                out.append(build(av[-1]))
            elif op == BRANCH:
                out.append(build(av[1][0]))
            elif op == AT:
                continue
            elif op == CATEGORY:
                out.append(category(av))
            else:
                raise ValueError(op)
        return "".join(out)

    try:
        text = build(sre_parse.parse(pattern))
    except Exception:  # anything unusual: no witness rather than a wrong one
        return None
    return text if regex_fullmatch(pattern, text) else None
