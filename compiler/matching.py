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


def path_covers(a: ir.PathMatch | None, b: ir.PathMatch | None) -> bool:
    """Every path matched by `b` is matched by `a` (None means any path)."""
    if a is None:
        return True
    if a.kind in ("prefix", "segment_prefix") and a.value == "/":
        return True  # every path starts with `/`
    if b is None:
        return False
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
    v = b.value
    if a.kind == "exact":
        return v == a.value
    if a.kind == "prefix":
        return v.startswith(a.value)
    if a.kind == "suffix":
        return v.endswith(a.value)
    if a.kind == "regex":
        return regex_fullmatch(a.value, v)
    return False


def conditions_cover(a_items, b_items) -> bool:
    """Every condition of `a` is implied by some condition of `b` on the same name."""
    for ca in a_items:
        if not any(cb.name == ca.name and _string_implies(cb, ca) for cb in b_items):
            return False
    return True


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
        if not any(pa.value == pb.value and pa.kind == pb.kind
                   or pa.kind == "prefix" and pb.value.startswith(pa.value) for pa in a):
            return False
    return True


def rule_covers(a: ir.AuthzRule, b: ir.AuthzRule) -> bool:
    """Every request matched by authorization rule `b` is matched by rule `a`."""
    return (principals_cover(a.principals, b.principals) and path_covers(a.path, b.path)
            and methods_cover(a.methods, b.methods) and conditions_cover(a.headers, b.headers))
