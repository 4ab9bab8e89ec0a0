"""Proven authorization properties: `assert never|always { … }` (docs/testing.md).

An assert names a set of requests (a caller set, one destination, and conditions on the method,
the normalised path and the headers, as an authorization rule writes them) and claims that the
destination's sidecar admits none of them (`never`) or all of them (`always`). `prove` decides it
exactly, or says why it cannot:

1. Every condition that can tell two requests apart, in the destination's rules and in the
   assert, is a predicate on one dimension of the request: the caller's identity (exact and prefix
   principals), the method (membership), the normalised path (exact, prefix, segment prefix,
   regex, with `ignore_case`) and each named header (exact, prefix, suffix, regex, presence).
2. For each string dimension, a breadth-first search over the product of the predicates'
   automata (a position in a literal, a set of positions for a suffix, a state of a regex's
   automaton from `interegular`, and for paths a filter that drops strings normalisation would
   change) finds one shortest witness for every combination of predicate outcomes that some string
   has. Characters that no predicate tells apart are one character to the search, so the search is
   exact over its universe (printable ASCII; for paths the characters a normalised path keeps
   as they are).
3. Every combination of witnesses (identity or none, method, path, each header absent or sent
   with one or more witness values) is replayed through the native proxy's own request decision
   (runtime_proxy/decide/request.decide_request over the destination's compiled native config, as
   the running proxy calls it), after the listener's admission (`decide.identity.accepts`) and,
   for a service caller, its scope (compiler/ir/scope.py: out of scope is 404).
4. Each witness is held to its predicted class by the proxy's own condition tests; any
   disagreement (a regex the two engines read differently, a header Envoy joins) makes the assert
   "not proven", never "proven".

Imported by the CLI only when a program has an assert; `interegular` only when a regex is met.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from compiler.core.diagnostics import Collector
from compiler.ir import scope as ir_scope
from compiler.semantic.conditions import lower_principals, lower_rule
from compiler.syntax import ast
from runtime_proxy.decide import authz as authz_mod
from runtime_proxy.decide.identity import accepts
from runtime_proxy.decide.request import Draws, Head, decide_request, header_dict
from runtime_proxy.decide.table import (
    CAuthzRule,
    TableError,
    ascii_lower,
    compile_config,
    path_test,
    value_test,
)

if TYPE_CHECKING:
    from compiler.api import Compilation
    from compiler.ir.conditions import HeaderMatch, PathMatch
    from compiler.semantic.symbols import Context

# The search's limits: past them the assert is reported "not proven" (W0850), never proven.
MAX_STATES = 20000          # product states of one dimension's search
MAX_REQUESTS = 400000       # requests replayed for one assert
MAX_HEADER_CELLS = 5        # value classes of one header (every non-empty set of them is tried)

# Characters in preference order: a witness is built from the first character of each class.
_PREFERRED = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_~.!$&'()*+,;=:@/"
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7f))
UNIVERSE_PATH = _PREFERRED + "%"        # what a normalised path holds as it is (pchar), `%` of an escape
NOT_IN_PATH = frozenset(' "#<>?\\^`{|}')   # normalize() percent-encodes these, cuts at `?`, refuses `#`
UNIVERSE_TEXT = _PREFERRED + "".join(c for c in _PRINTABLE if c not in _PREFERRED)
# What a header value holds besides (the proxy and Envoy accept them): never searched, only told
# apart. One character of each: no predicate names them unless it names them itself.
BEYOND_TEXT = " \t\x80\xe9\u0100"
# RE2 syntax that Python's (interegular's) reads otherwise or not at all
_RE2_ONLY = ("[:", "\\p", "\\P", "\\C", "\\Q", "\\E", "\\z", "\\b", "\\B", "(?U", "\\x{", "(?P=")
OTHER_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "MKCOL")
SPECIAL_HEADERS = ("host", "x-forwarded-client-cert")   # the sidecar sets or checks them itself


class NotProven(Exception):
    """Why an assert could not be decided: a W0850 with this message."""


@dataclass(frozen=True)
class Outcome:
    proven: bool
    counterexample: str | None = None   # a violation (E0851)
    hint: str | None = None
    reason: str | None = None           # not proven (W0850)


# ---- predicates on strings, as small automata ----------------------------------------------

class Pred:
    """One condition on a string: `start`, `step(state, char)` (None: dead for good), `accepts`."""
    __slots__ = ("kind", "value", "ci", "fsm", "test")

    def __init__(self, kind: str, value: str, ci: bool = False, fsm: Any = None) -> None:
        self.kind, self.value, self.ci, self.fsm = kind, value, ci, fsm
        self.test = None
        if ci:
            self.value = ascii_lower(value)

    def start(self) -> Any:
        if self.kind == "suffix":
            return frozenset((0,))
        if self.kind == "regex":
            return self.fsm.initial
        return 0

    def step(self, state: Any, ch: str) -> Any:
        if state is None:
            return None
        if self.ci:
            ch = ascii_lower(ch)
        v = self.value
        if self.kind == "regex":
            fsm = self.fsm
            return fsm.map.get(state, {}).get(fsm.alphabet[ch])
        if self.kind == "suffix":
            return frozenset([0] + [j + 1 for j in state if j < len(v) and v[j] == ch])
        if self.kind == "prefix" and state == len(v):
            return state
        return state + 1 if state < len(v) and v[state] == ch else None

    def accepts(self, state: Any) -> bool:
        if state is None:
            return False
        if self.kind == "suffix":
            return len(self.value) in state
        if self.kind == "regex":
            return state in self.fsm.finals
        return state == len(self.value)

    def char_class(self, ch: str) -> Any:
        """What this predicate can tell of one character alone."""
        if self.kind == "regex":
            return self.fsm.alphabet[ch]
        c = ascii_lower(ch) if self.ci else ch
        return c if c in self.value else None


_FSMS: dict[str, Any] = {}   # regex -> its automaton, built once per run


def regex_pred(value: str) -> Pred:
    fsm = _FSMS.get(value)
    if fsm is None:
        fsm = _FSMS[value] = _regex_fsm(value)
    return Pred("regex", value, False, fsm)


def _regex_fsm(value: str) -> Any:
    for bad in _RE2_ONLY:
        if bad in value:
            raise NotProven(f"the regex `{value}` uses `{bad}`, which the prover does not read as RE2 does")
    try:
        import interegular
    except ImportError:
        raise NotProven(f"the regex `{value}` needs the `interegular` package to be proven "
                        "(`pip install interegular`)") from None
    try:
        return interegular.parse_pattern(value).to_fsm()
    except Exception as err:   # interegular's own errors for what it does not support
        raise NotProven(f"the regex `{value}` is outside what the prover reads ({type(err).__name__}: "
                        f"{err or 'unsupported'})") from None


def path_preds(pm: PathMatch) -> list[Pred]:
    if pm.kind == "regex":
        return [regex_pred(pm.value)]
    if pm.kind == "exact":
        return [Pred("exact", pm.value, pm.ignore_case)]
    if pm.kind == "segment_prefix" and not pm.value.endswith("/"):
        return [Pred("exact", pm.value, pm.ignore_case), Pred("prefix", pm.value + "/", pm.ignore_case)]
    return [Pred("prefix", pm.value, pm.ignore_case)]


def header_value_preds(h: HeaderMatch) -> list[Pred]:
    if h.kind in ("present", "absent") or h.value is None:
        return []
    if h.kind == "regex":
        return [regex_pred(h.value)]
    return [Pred(h.kind, h.value, h.ignore_case)]


# ---- the search ------------------------------------------------------------------------------

def alphabet(preds: list[Pred], universe: str) -> list[str]:
    """One character of each class of `universe`, and of the characters the predicates name
    themselves (a space in `prefix "Bearer "`), that no predicate tells apart."""
    named = []
    for p in preds:
        if p.kind == "regex":
            named += [c for c in p.fsm.alphabet if isinstance(c, str) and len(c) == 1]
        else:
            named += list(p.value) + ([c.upper() for c in p.value] if p.ci else [])
    seen: dict[tuple, str] = {}
    for ch in dict.fromkeys(universe + "".join(named)):
        key = tuple(p.char_class(ch) for p in preds) + ((ch,) if ch in "/.%" else ())
        seen.setdefault(key, ch)
    return list(seen.values())


# The filter on paths: a state is the current segment so far ("" "." ".." or "x" for anything else),
# None before the leading `/`. It drops only strings normalisation certainly changes.
def _norm_step(state: str | None, ch: str, first: bool) -> str | None:
    """The next state, or `!` for a string normalisation certainly changes."""
    if first:
        return "" if ch == "/" else "!"
    if ch == "/":
        return "!" if state in ("", ".", "..") else ""
    if ch == ".":
        return {"": ".", ".": ".."}.get(state or "", "x")
    return "x"


def witnesses(preds: list[Pred], universe: str, path: bool = False,
              nonempty: bool = False) -> dict[tuple[bool, ...], str]:
    """A shortest string for each combination of the predicates' outcomes that some string over
    `universe` has (for a path: that some normalised path has)."""
    chars = alphabet(preds, universe)
    if path:   # what normalisation never leaves in a path: escaped, cut at `?`, or refused
        chars = [c for c in chars if c not in NOT_IN_PATH and " " < c < "\x7f"]
    if path and "%" in chars:
        # `%` starts an escape: only proven when some plain character is interchangeable with it
        key = tuple(p.char_class("%") for p in preds)
        if not any(tuple(p.char_class(c) for p in preds) == key for c in chars if c not in "/.%"):
            raise NotProven("a condition tells `%` apart from other characters; percent-escapes in paths "
                            "are outside the prover")
        chars.remove("%")
    # The start has a key of its own: the empty string is in no class when `nonempty`, and a
    # string whose predicate states equal the start's (any one character for no predicates, or
    # for suffixes) must still be queued and found.
    start = (tuple(p.start() for p in preds), None if path else "")
    out: dict[tuple[bool, ...], str] = {}
    seen = {start}
    queue = deque([(start, "")])
    while queue:
        (states, norm), text = queue.popleft()
        if (text or not (path or nonempty)) and (not path or norm not in (".", "..")):
            out.setdefault(tuple(p.accepts(s) for p, s in zip(preds, states)), text)
        for ch in chars:
            nn = _norm_step(norm, ch, path and not text) if path else "x"
            if nn == "!":
                continue
            nxt = (tuple(p.step(s, ch) for p, s in zip(preds, states)), nn)
            if nxt not in seen:
                if len(seen) >= MAX_STATES:
                    raise NotProven(f"the conditions have more than {MAX_STATES} combinations to search")
                seen.add(nxt)
                queue.append((nxt, text + ch))
    return out


def signature(preds: list[Pred], text: str) -> tuple[bool, ...]:
    """The outcomes of the predicates on one string, by their automata."""
    states = [p.start() for p in preds]
    for ch in text:
        states = [p.step(s, ch) for p, s in zip(preds, states)]
    return tuple(p.accepts(s) for p, s in zip(preds, states))


def _check_class(preds: list[Pred], sig: tuple[bool, ...], text: str, what: str) -> None:
    """Hold a witness to its predicted class with the proxy's own tests."""
    for p, predicted in zip(preds, sig):
        if p.kind == "regex":
            real = path_test("regex", p.value)(text) if what == "path" else value_test("regex", p.value, False)(text)
        elif p.kind == "exact":
            real = (ascii_lower(text) if p.ci else text) == p.value
        elif p.kind == "prefix":
            real = (ascii_lower(text) if p.ci else text).startswith(p.value)
        else:
            real = (ascii_lower(text) if p.ci else text).endswith(p.value)
        if real != predicted:
            raise NotProven(f"the {what} `{text}` is read differently by the prover and the proxy for "
                            f"`{p.value}`")


# ---- one assert --------------------------------------------------------------------------------

def _rule_data(rule: Any) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(rule))


def _caller(a: ast.Assert) -> ast.FromCond | None:
    return next((c for c in a.conditions if isinstance(c, ast.FromCond)), None)


def prove_one(ctx: Context, comp: Compilation, a: ast.Assert, tables: dict[str, Any]) -> Outcome:
    dest_name = a.destinations[0].value
    program = comp.ir
    assert program is not None
    dest = next(s for s in program.services if s.name == dest_name)
    dest_ast = ctx.services[dest_name]
    table = tables.get(dest_name)
    if table is None:
        data = orjson.loads(comp.emit("native", [dest_name]).files[f"{dest_name}.native.json"])
        table = tables[dest_name] = compile_config(data)
    pattern = lower_rule(ctx, dest_ast, ast.Rule("allow", None, tuple(c for c in a.conditions
                                                                      if not isinstance(c, ast.FromCond)), a.span),
                         "assert")
    caller = _caller(a)
    caller_kind = caller.kind if caller is not None else "any"
    caller_principals = (lower_principals(ctx, dest_ast, caller)
                         if caller is not None and caller_kind not in ("any", "unauthenticated") else None)
    try:
        assert_rule = CAuthzRule(_rule_data(pattern))
    except TableError as err:
        raise NotProven(str(err)) from None
    rules = dest.authorization.rules

    # identities
    id_preds = [Pred(p.kind, p.value) for r in rules for p in (r.principals or ())]
    id_preds += [Pred(p.kind, p.value) for p in (caller_principals or ())]
    identities: list[str | None] = []
    if caller_kind != "unauthenticated":
        # every service's own identity (each goes through its own sidecar's scope, so two services
        # in one class of the rules may still differ), the destination's last, then one identity of
        # each class the rules tell apart (an identity of no service, where the class has one)
        candidates = [(signature(id_preds, s.identity), s.identity) for s in program.services if s is not dest]
        candidates.append((signature(id_preds, dest.identity), dest.identity))
        candidates += witnesses(id_preds, UNIVERSE_TEXT, nonempty=True).items()
        for sig, text in candidates:
            _check_class(id_preds, sig, text, "identity")
            if text not in identities and (caller_principals is None or any(
                    (text == p.value) if p.kind == "exact" else text.startswith(p.value) for p in caller_principals)):
                identities.append(text)
    if caller_kind in ("any", "unauthenticated"):
        identities.append(None)

    # methods
    named = {m for r in rules for m in (*(r.methods or ()), *r.not_methods)} | set(pattern.methods or ())
    # CONNECT is never authorized (400 or 404 first): in the set only when the assert names it
    methods = sorted(named - {"CONNECT"}) + [next(m for m in OTHER_METHODS if m not in named)]
    if pattern.methods is not None:
        methods = [m for m in sorted(named) if m in pattern.methods]

    # paths
    p_preds = [q for r in rules for p in ((r.path,) if r.path is not None else ()) + r.not_paths
               for q in path_preds(p)]
    if pattern.path is not None:
        p_preds += path_preds(pattern.path)
    paths = []
    for sig, text in witnesses(p_preds, UNIVERSE_PATH, path=True).items():
        _check_class(p_preds, sig, text, "path")
        paths.append(text)

    # headers: each absent, or sent with any non-empty set of its value classes
    header_matches = [h for r in rules for h in r.headers] + list(pattern.headers)
    names = sorted({h.name for h in header_matches})
    header_options: list[list[list[str]]] = []
    for name in names:
        if name in SPECIAL_HEADERS or name.startswith(":"):
            raise NotProven(f"a condition on `{name}`, which the sidecar sets or checks itself, is outside the prover")
        v_preds = [p for h in header_matches if h.name == name for p in header_value_preds(h)]
        cells = []
        found = witnesses(v_preds, UNIVERSE_TEXT)
        if len(alphabet(v_preds, UNIVERSE_TEXT + BEYOND_TEXT)) > len(alphabet(v_preds, UNIVERSE_TEXT)):
            # a class of characters outside the universe that no rule names (space, tab, obs-text)
            beyond = set(witnesses(v_preds, UNIVERSE_TEXT + BEYOND_TEXT)) - set(found)
            if beyond:
                raise NotProven(f"a condition on `{name}` holds or fails for values only characters outside "
                                "printable ASCII reach (space, tab, non-ASCII bytes): outside the prover")
        for sig, text in found.items():
            _check_class(v_preds, sig, text, f"`{name}` value")
            cells.append(text)
        if len(cells) > MAX_HEADER_CELLS:
            raise NotProven(f"header `{name}` has {len(cells)} classes of values to combine, more than "
                            f"{MAX_HEADER_CELLS}")
        subsets = [[c for i, c in enumerate(cells) if mask >> i & 1] for mask in range(1, 1 << len(cells))]
        header_options.append([[]] + subsets)

    total = len(identities) * len(methods) * len(paths)
    for options in header_options:
        total *= len(options)
    if total > MAX_REQUESTS:
        raise NotProven(f"{total} distinct requests to replay, more than {MAX_REQUESTS}")

    mode = dest.mtls.mode
    services_by_id = {s.identity: s for s in program.services}
    never = a.kind.value == "never"
    members = 0
    for combo in _header_combos(names, header_options):
        raw = [(b"host", dest_name.encode())] + [(n.encode(), v.encode()) for n, vs in combo for v in vs]
        headers, _ = header_dict(raw)
        if any(headers.get(n) != vs for n, vs in combo if vs):
            raise NotProven("a header the proxy joins into one value (Envoy's inline headers) is outside the prover")
        for ident in identities:
            for method in methods:
                for path in paths:
                    if not authz_mod.rule_matches(assert_rule, ident, method, path, headers):
                        continue   # outside the assert's requests
                    members += 1
                    admitted, why = _admitted(table, dest, mode, ident, method, path, raw, headers, services_by_id)
                    if admitted == never:
                        return Outcome(False, _describe(ident, method, path, combo, services_by_id),
                                       ("it is admitted" if admitted else "it is not admitted") + f" ({why})")
    if not members:
        return Outcome(True, reason="its conditions hold for no request: it says nothing")
    return Outcome(True)


def _header_combos(names: list[str], options: list[list[list[str]]]):
    combos: list[list[tuple[str, list[str]]]] = [[]]
    for name, opts in zip(names, options):
        combos = [c + [(name, o)] for c in combos for o in opts]
    return combos


def _admitted(table: Any, dest: Any, mode: str, ident: str | None, method: str, path: str, raw: Any,
              headers: Any, services_by_id: dict[str, Any]) -> tuple[bool, str]:
    tls = ident is not None and mode != "disable"
    if not accepts(mode, tls):
        return False, f"the listener refuses a plaintext connection under `mtls {mode}`"
    caller_svc = services_by_id.get(ident) if ident is not None else None
    if caller_svc is not None and caller_svc.name != dest.name and not ir_scope.admits(dest, caller_svc):
        return False, f"`{dest.name}` is outside the scope of `{caller_svc.name}`'s sidecar: 404"
    head = Head(True, method, path, raw, headers, peer=ident if tls else None)
    d = decide_request(table, head, Draws(0.0, 0.0, 0, 0.0, b"assert"))
    if d.path and d.path != path:
        raise NotProven(f"the path `{path}` is normalised to `{d.path}`: the prover's filter let it through")
    if d.status == 0 and d.cluster == table.app.cluster:    # no local reply: on to the application
        return True, f"allowed by rule `{d.rule}`" if d.rule else "allowed by the default"
    if d.status == 403:
        return False, f"denied by rule `{d.rule}`" if d.rule else "denied by the default"
    return False, f"answered {d.status}"


def _describe(ident: str | None, method: str, path: str, combo: list[tuple[str, list[str]]],
              services_by_id: dict[str, Any]) -> str:
    if ident is None:
        who = "a caller without a verified identity"
    else:
        svc = services_by_id.get(ident)
        who = f"`{ident}`" + (f" (service `{svc.name}`)" if svc is not None else "")
    hdrs = ", ".join(f"`{n}: {v}`" for n, vs in combo for v in vs)
    return f"`{method} {path}`{hdrs and ' with ' + hdrs} from {who}"


def prove(comp: Compilation) -> tuple[list, int]:
    """The diagnostics of every assert of a compiled program (E0851 violated, W0850 not proven),
    and how many were proven."""
    ctx = comp.context
    assert ctx is not None
    diags = Collector()
    proven = 0
    tables: dict[str, Any] = {}
    for a in ctx.asserts:
        try:
            outcome = prove_one(ctx, comp, a, tables)
        except NotProven as err:
            diags.add("W0850", f"assert {a.kind.value} could not be proven: {err}", a.kind.span,
                      hint="the property may hold; the prover could not decide it (docs/testing.md)")
            continue
        if outcome.proven and outcome.reason:
            diags.add("W0851", f"assert {a.kind.value} holds vacuously: {outcome.reason}", a.kind.span,
                      hint="its conditions contradict each other (or the caller set is empty): check what it means")
        elif outcome.proven:
            proven += 1
        else:
            diags.add("E0851", f"assert {a.kind.value} is violated: {outcome.counterexample}", a.kind.span,
                      hint=f"counterexample replayed through the native proxy's decision: {outcome.hint}")
    return diags.items, proven
