"""Pure set reasoning over IR matches: does one match take every request another one takes?

Used by the unreachable-route check and the authorization checks. The answers are sound but
not complete: `covers(a, b)` True means every request matched by `b` is matched by `a`; False
means "not proven", so a warning is never raised without a reason.
"""

from __future__ import annotations

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


def match_covers(a: ir.Match, b: ir.Match) -> bool:
    """Every request matched by `b` is matched by `a`."""
    return (path_covers(a.path, b.path) and methods_cover(a.methods, b.methods)
            and conditions_cover(a.headers, b.headers) and conditions_cover(a.query, b.query))


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
            and methods_cover(a.methods, b.methods) and conditions_cover(a.headers, b.headers))


# ---- concrete requests: witnesses for diagnostics ---------------------------------------------------

def request_matches(m: ir.Match, method: str, path: str, headers: dict[str, list[str]],
                    query: dict[str, str]) -> bool:
    """Does one concrete request satisfy match `m` (docs/language.md section 7)?

    `headers` maps lower-case names to every value; `query` maps a key to its first value."""
    if m.methods is not None and method not in m.methods:
        return False
    if m.path is not None and not _path_matches(m.path, path):
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


def _path_matches(p: ir.PathMatch, path: str) -> bool:
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
