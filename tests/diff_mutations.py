"""Policy mutation operators for measuring `meshc diff` (docs/testing.md, "Measured by mutation").

Each operator takes a policy's text and returns mutants (text, what was changed), one per site it
applies to (at most `limit`). MUTATIONS change behaviour for some request: reorder dependent routes
(a later route that takes every request the earlier one takes, to another target, moved first), a
split weight, a match value, a match kind, an authorization rule's action, the default, a timeout,
a retry setting. PRESERVING edits change none: reorder independent routes (paths or methods that no request meets
both of), rename routes, rules and policies, reformat.
"""

from __future__ import annotations

import itertools
import os
import re

_ROUTE = re.compile(r"^([ \t]*)route ([A-Za-z_][A-Za-z0-9_-]*) \{", re.M)


def _block_end(text: str, open_at: int) -> int:
    """The offset just after the `}` closing the `{` at `open_at` (strings skipped)."""
    depth, i, in_str = 0, open_at, False
    while i < len(text):
        ch = text[i]
        if in_str:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "#":
            i = text.index("\n", i) if "\n" in text[i:] else len(text)
            continue
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(text)


def routes_of(text: str) -> list[tuple[int, int, str]]:
    """(start, end, body) of every route block, in order."""
    out = []
    for m in _ROUTE.finditer(text):
        end = _block_end(text, m.end() - 1)
        out.append((m.start(), end, text[m.start():end]))
    return out


def _swap(text: str, a: tuple[int, int, str], b: tuple[int, int, str]) -> str:
    return text[:a[0]] + b[2] + text[a[1]:b[0]] + a[2] + text[b[1]:]


def _adjacent(text: str):
    rs = routes_of(text)
    for a, b in itertools.pairwise(rs):
        between = text[a[1]:b[0]]
        if between.strip() == "":   # the same routes block, nothing between
            yield a, b


def _target(body: str) -> str:
    m = re.search(r"\b(to|split)\b[^\n]*", body)
    return m.group(0) if m else ""


def reorder_dependent(text: str, limit: int = 2) -> list[tuple[str, str]]:
    out = []
    for a, b in _adjacent(text):
        if "match" not in b[2] and "fault" not in b[2] and _target(a[2]) != _target(b[2]):
            out.append((_swap(text, a, b), "reorder dependent routes"))
    return out[:limit]


def _sub_each(pattern: str, repl, text: str, what: str, limit: int) -> list[tuple[str, str]]:
    out = []
    for m in re.finditer(pattern, text):
        new = repl(m)
        if new is None or new == m.group(0):
            continue
        out.append((text[:m.start()] + new + text[m.end():], what))
        if len(out) >= limit:
            break
    return out


def _in_route(text: str, pos: int) -> bool:
    return any(s <= pos < e for s, e, _ in routes_of(text))


def weight(text: str, limit: int = 2) -> list[tuple[str, str]]:
    def repl(m):
        return m.group(1) + str(int(m.group(2)) + 1) if int(m.group(2)) > 0 else None
    return _sub_each(r"(split \{\s*[A-Za-z0-9_.-]+ )([0-9]+)", repl, text, "change a weight", limit)


def match_value(text: str, limit: int = 2) -> list[tuple[str, str]]:
    def repl(m):
        return None if not _in_route(text, m.start()) else f'{m.group(1)} "{m.group(2)}q"'
    return _sub_each(r'\b(exact|prefix|raw_prefix) "([^"\\]*)"', repl, text, "change a match value", limit)


def match_kind(text: str, limit: int = 2) -> list[tuple[str, str]]:
    def repl(m):
        if not _in_route(text, m.start()):
            return None
        value = m.group(2)
        if m.group(1) == "exact":
            return None if value.endswith("/") else f'prefix "{value}"'
        return f'exact "{value}"'
    return _sub_each(r'\b(exact|prefix) "([^"\\]*)"', repl, text, "change a match kind", limit)


def rule(text: str, limit: int = 2) -> list[tuple[str, str]]:
    def repl(m):
        return m.group(1) + ("deny" if m.group(2) == "allow" else "allow") + m.group(3)
    return _sub_each(r"(?m)^([ \t]+)(allow|deny)(\b(?! *$))", repl, text, "flip a rule", limit)


def default(text: str, limit: int = 2) -> list[tuple[str, str]]:
    def repl(m):
        return "default " + ("allow" if m.group(1) == "deny" else "deny")
    return _sub_each(r"\bdefault (allow|deny)\b", repl, text, "flip a default", limit)


def timeout(text: str, limit: int = 2) -> list[tuple[str, str]]:
    def repl(m):
        ms = int(m.group(1)) * (1000 if m.group(2) == "s" else 1)
        return f"timeout {ms + 1}ms"
    return _sub_each(r"\btimeout ([0-9]+)(ms|s)\b", repl, text, "change a timeout", limit)


def retry(text: str, limit: int = 2) -> list[tuple[str, str]]:
    out = _sub_each(r"\battempts ([0-9]+)\b", lambda m: f"attempts {int(m.group(1)) % 5 + 1}", text,
                    "change a retry setting", limit)
    out += _sub_each(r"\bretry (std\.[a-z_]+)", lambda m: "retry none", text, "change a retry setting", limit)
    return out[:limit]


MUTATIONS = (reorder_dependent, weight, match_value, match_kind, rule, default, timeout, retry)


# ---- behaviour-preserving edits ------------------------------------------------------------------

def _matches(body: str) -> list[tuple[tuple[str, str] | None, frozenset[str] | None]] | None:
    """(path condition, methods) of each `match` of a route; None when it has none (a catch-all)."""
    found = re.findall(r"match \{([^}]*)\}", body)
    if not found:
        return None
    out = []
    for inner in found:
        p = re.search(r'path (exact|prefix|raw_prefix|regex) "([^"\\]*)"', inner)
        m = re.search(r"method (\[[^\]]*\]|[A-Z]+)", inner)
        methods = None if m is None else frozenset(re.findall(r"[A-Z]+", m.group(1)))
        out.append(((p.group(1), p.group(2)) if p else None, methods))
    return out


def _disjoint(a: tuple[tuple[str, str] | None, frozenset[str] | None],
              b: tuple[tuple[str, str] | None, frozenset[str] | None]) -> bool:
    """No request meets both matches: their methods do not meet, or their literal paths cannot
    (an exact path or a prefix, taken as a plain string prefix: a superset of `prefix`)."""
    if a[1] is not None and b[1] is not None and not a[1] & b[1]:
        return True
    pa, pb = a[0], b[0]
    if pa is None or pb is None or "regex" in (pa[0], pb[0]):
        return False
    (ka, va), (kb, vb) = pa, pb
    if ka == "exact" and kb == "exact":
        return va != vb
    if ka == "exact":
        return not va.startswith(vb)
    if kb == "exact":
        return not vb.startswith(va)
    return not va.startswith(vb) and not vb.startswith(va)


def reorder_independent(text: str, limit: int = 2) -> list[tuple[str, str]]:
    """Two adjacent routes that no request meets both of, swapped (a request has one path and one
    method; header conditions are not used: a header may be sent twice, once for each route)."""
    out = []
    for a, b in _adjacent(text):
        ma, mb = _matches(a[2]), _matches(b[2])
        if ma and mb and all(_disjoint(x, y) for x in ma for y in mb):
            out.append((_swap(text, a, b), "reorder independent routes"))
    return out[:limit]


def rename(text: str, limit: int = 1) -> list[tuple[str, str]]:
    names = [m.group(2) for m in _ROUTE.finditer(text)]
    rules = re.findall(r"(?m)^[ \t]+(?:allow|deny) ([A-Za-z_][A-Za-z0-9_]*) \{", text)
    if not names and not rules:
        return []
    new = text
    for n in set(names):
        new = re.sub(rf"(?m)^([ \t]*)route {re.escape(n)} \{{", rf"\1route {n}_renamed {{", new)
    for n in set(rules):
        new = re.sub(rf"(?m)^([ \t]+)(allow|deny) {re.escape(n)} \{{", rf"\1\2 {n}_renamed {{", new)
    return [(new, "rename routes and rules")]


def reformat(text: str, limit: int = 1) -> list[tuple[str, str]]:
    lines = []
    for line in text.splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        lines.append(" " * (indent * 2) + stripped + ("   # reformatted" if stripped.endswith("{") else ""))
        if stripped.startswith("route "):
            lines.insert(len(lines) - 1, "")
    return [("\n".join(lines) + "\n\n\n", "reformat")]


_STDLIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stdlib_policies")


def rename_policy(text: str, limit: int = 1) -> list[tuple[str, str]]:
    """A standard library policy the text uses, copied into the text under another name and used
    by that name (`use std.allow_health_checks` -> `use health_checks_local`, and its rules'
    names with it)."""
    out = []
    for m in re.finditer(r"\b(use|retry|outlier|limits|retry_budget) std\.([a-z_]+)\b", text):
        kind = "rules" if m.group(1) == "use" else m.group(1)
        for name in sorted(os.listdir(_STDLIB)):
            if not name.endswith(".mesh"):
                continue
            with open(os.path.join(_STDLIB, name)) as f:
                std = f.read()
            d = re.search(rf"(?m)^policy {kind} {m.group(2)} \{{", std)
            if d is None:
                continue
            body = std[d.start():_block_end(std, d.end() - 1)]
            local = f"{m.group(2)}_local"
            copy = body.replace(f"policy {kind} {m.group(2)} {{", f"policy {kind} {local} {{", 1)
            new = text[:m.start()] + f"{m.group(1)} {local}" + text[m.end():] + "\n" + copy + "\n"
            out.append((new, "rename a policy"))
            break
        if len(out) >= limit:
            break
    return out


PRESERVING = (reorder_independent, rename, rename_policy, reformat)
