"""Gateway API's order of HTTPRoute matches against meshc's first-match order.

An HTTPRoute's rules are not tried in the order written: every match of every rule is ranked by
precedence (Gateway API v1.6.1, HTTPRoute `spec.rules[].matches`): an Exact path first, then the
PathPrefix with the most characters, then a method match, then the most header matches, then the
most query matches, and on a tie the first rule in list order. RegularExpression paths rank in an
implementation-specific place.

`plan(rules)` makes the two orders agree where it can, and reports where it cannot. The
argument: with matches ranked by `precedence`, take a request, `w` the rule first-match picks
(written order) and `g` the match Gateway API ranks first among those the request matches. If
`g` is of another rule, it is of a later one, ranked above a match `a` of rule `w` that the
request also matches: an inverted, overlapping pair. So the orders agree on every request when
every inverted pair (a, b) is either disjoint (no request matches both) or covered: rule(a) has
a match `c` that holds for every request matching both and ranks above `b` (then `c`, of rule
`w`, outranks `g`: a contradiction). `plan` adds such a `c` (`a ∧ b`, which holds for exactly
those requests, so the rule matches what it matched) until every inverted pair is disjoint or
covered. What it cannot cover is a conflict: a request matching both is built and routed through
the whole table both ways and reported with its two routes (or, when none can be built, the pair
is reported without one: never a silent pass). A regex path ranks where the implementation puts
it: any regex match not proven disjoint from another rule's match is a conflict.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

import re2

_compiled = functools.lru_cache(maxsize=4096)(re2.compile)


def _full(pattern: str, text: str) -> bool:
    return _compiled(pattern).fullmatch(text) is not None


@dataclass(frozen=True)
class Entry:
    rule: int                 # the rule's index (written order)
    index: int                # the match's index within the rule
    match: dict[str, Any]     # the HTTPRouteMatch


@dataclass(frozen=True)
class Conflict:
    earlier: Entry            # written first
    later: Entry              # ranked first by Gateway API
    request: dict[str, Any] | None   # {"method", "path", "headers", "query"}: routed differently; None: not built
    written_rule: int | None
    gateway_rule: int | None
    reason: str = "inexpressible"    # "regex" (a regex path's rank), "inexpressible" (no match says a ∧ b),
                                     # "limit" (the earlier rule would need more than MAX_MATCHES matches)


def _path(m: dict[str, Any]) -> tuple[str, str]:
    p = m.get("path") or {"type": "PathPrefix", "value": "/"}
    return p.get("type", "PathPrefix"), p["value"]


def path_kind(m: dict[str, Any]) -> str:
    return _path(m)[0]


def precedence(e: Entry) -> tuple:
    kind, value = _path(e.match)
    return (0 if kind == "Exact" else 1, -len(value) if kind == "PathPrefix" else 0,
            0 if "method" in e.match else 1, -len(e.match.get("headers", ())), -len(e.match.get("queryParams", ())),
            e.rule, e.index)


def _prefix_matches(prefix: str, path: str) -> bool:
    p = prefix.rstrip("/")
    return p == "" or path == p or path.startswith(p + "/")


def _string_matches(cond: dict[str, Any], value: str | None) -> bool:
    if value is None:
        return False
    if cond.get("type", "Exact") == "Exact":
        return value == cond["value"]
    return _full(cond["value"], value)


def matches(m: dict[str, Any], req: dict[str, Any]) -> bool:
    kind, value = _path(m)
    path = req["path"]
    if kind == "Exact" and path != value:
        return False
    if kind == "PathPrefix" and not _prefix_matches(value, path):
        return False
    if kind == "RegularExpression" and not _full(value, path):
        return False
    if "method" in m and m["method"] != req["method"]:
        return False
    headers = {k.lower(): v for k, v in req["headers"].items()}
    if not all(_string_matches(h, headers.get(h["name"].lower())) for h in m.get("headers", ())):
        return False
    return all(_string_matches(q, req["query"].get(q["name"])) for q in m.get("queryParams", ()))


def _disjoint_strings(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ta, tb = a.get("type", "Exact"), b.get("type", "Exact")
    if ta == "Exact" and tb == "Exact":
        return a["value"] != b["value"]
    if ta == "Exact":
        return not _full(b["value"], a["value"])
    if tb == "Exact":
        return not _full(a["value"], b["value"])
    return False


def disjoint(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True only when no request matches both (a proof); False when they may overlap."""
    if "method" in a and "method" in b and a["method"] != b["method"]:
        return True
    for key in ("headers", "queryParams"):
        bs = {c["name"].lower() if key == "headers" else c["name"]: c for c in b.get(key, ())}
        for c in a.get(key, ()):
            other = bs.get(c["name"].lower() if key == "headers" else c["name"])
            if other is not None and _disjoint_strings(c, other):
                return True
    (ka, va), (kb, vb) = _path(a), _path(b)
    if ka == "Exact" and kb == "Exact":
        return va != vb
    if ka == "Exact" and kb == "PathPrefix":
        return not _prefix_matches(vb, va)
    if kb == "Exact" and ka == "PathPrefix":
        return not _prefix_matches(va, vb)
    if ka == "PathPrefix" and kb == "PathPrefix":
        return not (_prefix_matches(va, vb.rstrip("/") or "/") or _prefix_matches(vb, va.rstrip("/") or "/"))
    if ka == "RegularExpression" and kb == "Exact":
        return not _full(va, vb)
    if kb == "RegularExpression" and ka == "Exact":
        return not _full(vb, va)
    return False


def example(regex: str) -> str | None:
    """A short string the RE2 `regex` matches whole, or None (built from Python's parse of the
    pattern, then checked with RE2)."""
    try:
        # Python's own regex parser (3.11+): RE2's syntax is close enough to build a candidate,
        # which RE2 then checks
        parser = importlib.import_module("re._parser")
        text = _generate(parser.parse(regex))
    except Exception:
        return None
    return text if text is not None and _full(regex, text) else None


def _generate(items: Any) -> str | None:
    k = importlib.import_module("re._constants")

    out = []
    for op, arg in items:
        if op is k.LITERAL:
            out.append(chr(arg))
        elif op is k.NOT_LITERAL:
            out.append("a" if chr(arg) != "a" else "b")
        elif op is k.ANY:
            out.append("a")
        elif op is k.IN:
            first = arg[0]
            if first[0] is k.NEGATE:
                banned = {chr(a) for o, a in arg[1:] if o is k.LITERAL}
                out.append(next(ch for ch in "a0_-x" if ch not in banned))
            elif first[0] is k.LITERAL:
                out.append(chr(first[1]))
            elif first[0] is k.RANGE:
                out.append(chr(first[1][0]))
            elif first[0] is k.CATEGORY:
                out.append(_category(first[1], k))
            else:
                return None
        elif op in (k.MAX_REPEAT, k.MIN_REPEAT, k.POSSESSIVE_REPEAT):
            low, _, sub = arg
            piece = _generate(sub)
            if piece is None:
                return None
            out.append(piece * max(low, 1 if low == 0 and piece else low))
        elif op is k.SUBPATTERN:
            piece = _generate(arg[-1])
            if piece is None:
                return None
            out.append(piece)
        elif op is k.BRANCH:
            piece = _generate(arg[1][0])
            if piece is None:
                return None
            out.append(piece)
        elif op is k.AT:
            continue
        elif op is k.CATEGORY:
            out.append(_category(arg, k))
        else:
            return None
    return "".join(out)


def _category(cat: Any, k: Any) -> str:
    return {k.CATEGORY_DIGIT: "0", k.CATEGORY_SPACE: " ", k.CATEGORY_WORD: "a"}.get(cat, "a")


def _candidates(conds: list[dict[str, Any]]) -> list[str]:
    out = []
    for c in conds:
        if c.get("type", "Exact") == "Exact":
            out.append(c["value"])
        else:
            found = example(c["value"])
            if found is not None:
                out.append(found)
    return out + ["x", ""]


def _witness(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """A request built to match both, or None."""
    paths = []
    for m in (a, b):
        kind, value = _path(m)
        if kind == "RegularExpression":
            found = example(value)
            if found is not None:
                paths.append((0, 0, found))
        else:
            base = value.rstrip("/") or "/"
            paths.append((0 if kind == "Exact" else 1, -len(value), base))
            paths.append((2, -len(value), base.rstrip("/") + "/x"))
    path_options = [p[2] for p in sorted(paths)] or ["/"]

    def pick(key: str, lower: bool) -> dict[str, str] | None:
        names: dict[str, list[dict[str, Any]]] = {}
        for m in (a, b):
            for c in m.get(key, ()):
                names.setdefault(c["name"].lower() if lower else c["name"], []).append(c)
        chosen = {}
        for name, conds in names.items():
            value = next((v for v in _candidates(conds) if all(_string_matches(c, v) for c in conds)), None)
            if value is None:
                return None
            chosen[name] = value
        return chosen

    headers, query = pick("headers", True), pick("queryParams", False)
    if headers is None or query is None:
        return None
    method = a.get("method") or b.get("method") or "GET"
    for path in path_options:
        req = {"method": method, "path": path, "headers": headers, "query": query}
        if matches(a, req) and matches(b, req):
            return req
    return None


def winners(entries: list[Entry], req: dict[str, Any]) -> tuple[int | None, int | None]:
    """(the rule first-match in written order picks, the rule Gateway API's precedence picks)."""
    hits = [e for e in entries if matches(e.match, req)]
    if not hits:
        return None, None
    return min(e.rule for e in hits), min(hits, key=precedence).rule


MAX_MATCHES = 64   # an HTTPRoute rule's `matches` (maxItems)


def _canonical(m: dict[str, Any]) -> str:
    import json

    full = {**m, "path": m.get("path") or {"type": "PathPrefix", "value": "/"}}
    return json.dumps(full, sort_keys=True)


def _merge(conds_a: list[dict[str, Any]], conds_b: list[dict[str, Any]], lower: bool) -> list[dict[str, Any]] | None:
    out: dict[str, dict[str, Any]] = {}
    for c in [*conds_a, *conds_b]:
        key = c["name"].lower() if lower else c["name"]
        have = out.get(key)
        if have is None or have == c:
            out.setdefault(key, c)
        elif have.get("type", "Exact") == "Exact" and c.get("type", "Exact") != "Exact":
            if not _string_matches(c, have["value"]):
                return None
        elif c.get("type", "Exact") == "Exact" and have.get("type", "Exact") != "Exact":
            if not _string_matches(have, c["value"]):
                return None
            out[key] = c
        else:
            return None   # two different values or patterns: no single condition says both
    return list(out.values())


def intersect(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """One HTTPRouteMatch that holds exactly when both do, or None when none can say it (or none
    holds). Never for a regex path."""
    (ka, va), (kb, vb) = _path(a), _path(b)
    if "RegularExpression" in (ka, kb):
        return None
    if ka == "Exact" and kb == "Exact":
        path = a["path"] if va == vb else None
    elif ka == "Exact":
        path = a["path"] if _prefix_matches(vb, va) else None
    elif kb == "Exact":
        path = b["path"] if _prefix_matches(va, vb) else None
    else:
        longer, shorter = (va, vb) if len(va.rstrip("/")) >= len(vb.rstrip("/")) else (vb, va)
        path = {"type": "PathPrefix", "value": longer} if _prefix_matches(shorter, longer.rstrip("/") or "/") \
            else None
    if path is None:
        return None
    if "method" in a and "method" in b and a["method"] != b["method"]:
        return None
    out: dict[str, Any] = {"path": path}
    headers = _merge(list(a.get("headers", ())), list(b.get("headers", ())), True)
    query = _merge(list(a.get("queryParams", ())), list(b.get("queryParams", ())), False)
    if headers is None or query is None:
        return None
    if headers:
        out["headers"] = headers
    if query:
        out["queryParams"] = query
    method = a.get("method") or b.get("method")
    if method:
        out["method"] = method
    return out


def plan(rules: list[list[dict[str, Any]]]) -> tuple[list[list[dict[str, Any]]], list[Conflict]]:
    """The rules' matches made safe for Gateway API's precedence, and what cannot be.

    For a pair inverted by precedence (an earlier rule's match `a`, a later rule's `b` ranked first)
    that some request matches both, the earlier rule gets one more match, `a ∧ b`: it holds for
    exactly the requests that match both (so the rule still matches the same requests), and it
    ranks above `b` (a path at least as specific, the method, at least as many header and query
    matches, and the earlier rule on a tie). Then for every request the highest-ranked match is one
    of the written winner's rule: the proof is in the module's docstring. A pair whose
    intersection no HTTPRouteMatch can say (two different patterns of one header), or with a regex
    path (ranked by the implementation), is a conflict."""
    rules = [list(ms) for ms in rules]
    canon = [{_canonical(m) for m in ms} for ms in rules]
    for _ in range(MAX_MATCHES * max(len(rules), 1)):
        entries = [Entry(r, i, m) for r, ms in enumerate(rules) for i, m in enumerate(ms)]
        found: list[Conflict] = []
        reported: set[tuple[int, int]] = set()
        changed = False
        for a in entries:
            for b in entries:
                if b.rule <= a.rule or (a.rule, b.rule) in reported:
                    continue
                regex = "RegularExpression" in (_path(a.match)[0], _path(b.match)[0])
                if not regex and precedence(b) > precedence(a):
                    continue   # Gateway API ranks them as written
                if disjoint(a.match, b.match):
                    continue
                reason = "regex" if regex else "inexpressible"
                if not regex:
                    both = intersect(a.match, b.match)
                    if both is not None:
                        key = _canonical(both)
                        if key in canon[a.rule]:
                            continue
                        if len(rules[a.rule]) < MAX_MATCHES:
                            rules[a.rule].append(both)
                            canon[a.rule].add(key)
                            changed = True
                            continue
                        reason = "limit"
                reported.add((a.rule, b.rule))
                found.append(Conflict(a, b, None, None, None, reason))
        if not changed:
            return rules, [_with_request(c, entries) for c in found]
    raise AssertionError("the refinement of Gateway API matches did not converge")


def _with_request(c: Conflict, entries: list[Entry]) -> Conflict:
    req = _witness(c.earlier.match, c.later.match)
    if req is None:
        return c
    written, gateway = winners(entries, req)
    return Conflict(c.earlier, c.later, req, written, gateway, c.reason)


def conflicts(rules: list[list[dict[str, Any]]]) -> list[Conflict]:
    """What `plan` cannot make safe."""
    return plan(rules)[1]


def show(req: dict[str, Any]) -> str:
    """A request as one line: `GET /path?k=v` with `header: value` pairs."""
    query = "&".join(f"{k}={v}" for k, v in sorted(req["query"].items()))
    line = f"{req['method']} {req['path']}" + (f"?{query}" if query else "")
    heads = ", ".join(f"`{k}: {v}`" for k, v in sorted(req["headers"].items()))
    return f"`{line}`" + (f" with {heads}" if heads else "")
