"""`meshc diff`'s request space: for one dimension of a request (the path, one header's value, one
query parameter's value, the caller's identity), the conditions OLD and NEW test on it cut the
values into regions, each region the set of values that satisfy exactly the same conditions.
`regions` returns one shortest value per region that a request can carry, so that a request
built from one representative per dimension meets every combination of conditions the two
policies can tell apart (docs/testing.md, "When the answer is complete").

Every condition (exact, prefix, segment prefix, suffix, regex; ignoring case or not) is turned into
a finite automaton by interegular; the automata run side by side (their product) over the
union of their alphabets, breadth first, and every reachable product state is a region
(the tuple of which automata accept there). Paths run one more automaton beside them: the
normalised-path language (starts with `/`, no `//`, no `.` or `..` segment), so that a
representative is a path the proxy's normalisation leaves as it is. Letters are drawn from a
pool of characters that survive the trip unchanged (no `%`, `?`, `#`, white space, `;`).

The answer is exact unless `Regions.complete` is False, with the reason: interegular could not
read a regex (RE2 syntax it does not know), or the product grew beyond `MAX_STATES`.
"""

from __future__ import annotations

import re
import string
from collections import deque
from dataclasses import dataclass, field
from typing import Any

MAX_STATES = 20000

# characters a value may be built from; a condition's own characters (in the same set) join them
_BASE = string.ascii_letters + string.digits + "-_~."
PATH_POOL = frozenset(_BASE + "/!$'()*+,=:@")
HEADER_POOL = frozenset(_BASE + "/!$'()*+,=:@;&?#%\"<>[]{}|^`\\")
QUERY_POOL = frozenset(_BASE + "/!$'()*,:@;?")
IDENTITY_POOL = frozenset(_BASE + "/:")
_NEVER = {False: "", True: "&#=+% "}   # characters a query value never takes as written


def pool_ascii(pool: frozenset[str]) -> bool:
    """Whether values of this dimension stay ASCII: identities (URIs); header values take any
    character a condition names (sent as UTF-8, as the proxy decodes them)."""
    return pool is IDENTITY_POOL


@dataclass(frozen=True)
class Condition:
    """One test on a dimension's value: `kind` exact | prefix | segment_prefix | suffix | regex."""
    kind: str
    value: str
    ignore_case: bool = False


@dataclass
class Regions:
    values: list[str] = field(default_factory=list)   # one shortest representative per region
    complete: bool = True
    reason: str = ""


def _literal(text: str, ignore_case: bool) -> str:
    out = []
    for ch in text:
        if ignore_case and ch.isascii() and ch.isalpha():
            out.append(f"[{ch.lower()}{ch.upper()}]")
        else:
            out.append("\\" + ch if not ch.isalnum() else ch)
    return "".join(out)


def _pattern(c: Condition) -> str:
    lit = _literal(c.value, c.ignore_case)
    if c.kind == "exact":
        return lit
    if c.kind == "prefix":
        return lit + "(.|\\n)*"
    if c.kind == "segment_prefix":
        return lit + "(/(.|\\n)*)?"
    if c.kind == "suffix":
        return "(.|\\n)*" + lit
    if c.kind == "regex":
        return f"(?i:{c.value})" if c.ignore_case else c.value
    raise ValueError(f"unknown condition kind {c.kind}")


# the normalised-path automaton: 0 start, 1 after `/`, 2 segment `.`, 3 segment `..`, 4 a segment
_PATH_NEXT: dict[int, dict[str, int | None]] = {
    0: {"/": 1}, 1: {"/": None, ".": 2, "": 4}, 2: {"/": None, ".": 3, "": 4},
    3: {"/": None, ".": 4, "": 4}, 4: {"/": 1, ".": 4, "": 4}}
_PATH_ACCEPT = frozenset({1, 4})


def _path_step(state: int, ch: str) -> int | None:
    moves = _PATH_NEXT[state]
    if ch in moves:
        return moves[ch]
    return moves.get("", None)


_CACHE: dict[tuple, Regions] = {}


def regions(conditions: list[Condition], pool: frozenset[str], path: bool = False) -> Regions:
    """One representative value per region of `conditions` (see the module's docstring)."""
    key = (tuple(sorted(set(conditions), key=repr)), pool, path)
    found = _CACHE.get(key)
    if found is None:
        found = _CACHE[key] = _regions(list(key[0]), pool, path)
        if len(_CACHE) > 4096:
            _CACHE.clear()
    return found


def _regions(conditions: list[Condition], pool: frozenset[str], path: bool) -> Regions:
    out = Regions()
    if not conditions:
        out.values = ["/"] if path else [""]
        return out
    try:
        import interegular
        from interegular import fsm as ifsm
    except ImportError:   # pragma: no cover - a dependency of meshc; only a broken install lacks it
        out.complete, out.reason = False, "interegular is not installed (pip install interegular)"
        out.values = ["/"] if path else [""]
        return out
    machines = []
    for c in conditions:
        try:
            machines.append(interegular.parse_pattern(_pattern(c)).to_fsm())
        except Exception as err:   # interegular raises its own errors on syntax it does not know
            out.complete = False
            out.reason = f"the regex `{c.value}` cannot be analysed ({type(err).__name__})"
            # an approximation still gives candidates: the regex without its word boundaries and
            # lookarounds (never a claim of completeness)
            simpler = re.sub(r"\\[bBAzZ]|\(\?<?[=!][^)]*\)", "", c.value)
            try:
                machines.append(interegular.parse_pattern(_pattern(Condition(c.kind, simpler, c.ignore_case)))
                                .to_fsm())
            except Exception:
                pass
    if not machines:
        return _fallback(conditions, out, path)
    union, maps = ifsm.Alphabet.union(*(m.alphabet for m in machines))
    explicit = {ch for chars in union.by_transition.values() for ch in chars if ch is not ifsm.anything_else}
    query = pool is QUERY_POOL
    mentioned = set() if path else {ch for c in conditions for ch in c.value
                                     if (" " <= ch <= "~" or (not query and not pool_ascii(pool) and ch.isprintable()
                                                              and ch > "\x7f"))
                                     and ch not in _NEVER[query]}
    letters = sorted(pool | mentioned)
    # each union symbol: its representative characters (one per class the path automaton tells apart)
    steps: list[tuple[str, int]] = []
    for symbol, chars in sorted(union.by_transition.items(), key=lambda kv: kv[0]):
        if any(ch is ifsm.anything_else for ch in chars):
            candidates = [ch for ch in letters if ch not in explicit]
        else:
            candidates = [ch for ch in chars if ch in pool or ch in mentioned]
        seen_kinds: set[str] = set()
        for ch in sorted(candidates):
            kind = ch if (path and ch in "/.") else ""
            if kind in seen_kinds:
                continue
            seen_kinds.add(kind)
            steps.append((ch, symbol))
    # the union's symbol numbers follow set order: characters give a stable search (lower case first)
    steps.sort(key=lambda s: (not s[0].islower(), s[0]))
    start = tuple(m.initial for m in machines)
    first = (start, 0 if path else -1)
    best: dict[tuple[bool, ...], str] = {}
    seen: set[Any] = {first}
    queue: deque = deque([(first, "")])
    while queue:
        (states, pstate), text = queue.popleft()
        if not path or pstate in _PATH_ACCEPT:
            vector = tuple(s is not None and s in m.finals for s, m in zip(states, machines))
            if vector not in best:
                best[vector] = text
        for ch, symbol in steps:
            nxt: list[Any] = []
            for s, m, mp in zip(states, machines, maps):
                if s is None:
                    nxt.append(None)
                    continue
                sym = mp.get(symbol)  # type: ignore[call-overload]
                nxt.append(m.map.get(s, {}).get(sym) if sym is not None else None)
            if path:
                p = _path_step(pstate, ch)
                if p is None:
                    continue
            else:
                p = -1
            key = (tuple(nxt), p)
            if key in seen:
                continue
            if len(seen) >= MAX_STATES:
                out.complete = False
                out.reason = f"the conditions' product has more than {MAX_STATES} states"
                queue.clear()
                break
            seen.add(key)
            queue.append((key, text + ch))
    out.values = sorted(best.values(), key=lambda v: (len(v), v))
    return out


def _fallback(conditions: list[Condition], out: Regions, path: bool) -> Regions:
    """Boundary values only (a value each condition accepts and one it does not), when the exact
    procedure cannot run: the diff then says "unknown" unless it finds a change."""
    values = {"/" if path else ""}
    for c in conditions:
        if c.kind != "regex":
            values.update({c.value, c.value + "x", c.value[:-1] or c.value})
    out.values = sorted(values, key=lambda v: (len(v), v))
    return out
