"""Hypothesis strategies for syntactically valid .mesh ASTs, covering every construct of the grammar.

"Valid" means what the parser accepts without an error: each block holds each setting at most
once (the parser reports duplicates, E0105), integers have at most 20 digits (E0302), durations
are whole milliseconds of at most 20 digits and percentages have at most four decimals (E0306,
E0303). Nothing here is checked semantically (ports in
range, services that exist, ...): these ASTs are for the parser and the renderer.

Names are drawn from a safe alphabet with the grammar's keywords filtered out; a few keywords
are mixed in on purpose (`names(keywords=True)`) because the contextual lexer makes a keyword
usable as a name wherever the grammar does not also accept that keyword. The one place where
it does is `retry REF`, which also accepts `retry none`: an unscoped retry policy called `none`
cannot be referred to, nor can the scope of a retry reference be `none` (`std.none` is fine), so
:data:`retry_refs` leaves those out.
"""

from __future__ import annotations

import re

from hypothesis import strategies as st

from compiler import ast, render
from compiler.syntax.tables import load_tables

_TABLES = load_tables()
# Every word the grammar uses as a keyword, including the words of keyword classes
# (`exact`, `prefix`, `allow`, ...). Derived from the tables so that it follows the grammar.
KEYWORDS: frozenset[str] = frozenset(
    [w for w in _TABLES.keywords if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", w)]
    + [w for words in _TABLES.keyword_classes.values() for w in words]
)

# ---- scalars ------------------------------------------------------------------------------------

_NAME_RE = r"[A-Za-z_][A-Za-z0-9_-]{0,11}"
safe_names = st.from_regex(_NAME_RE, fullmatch=True).filter(lambda s: s not in KEYWORDS)


def names(keywords: bool = True, exclude: frozenset[str] = frozenset()) -> st.SearchStrategy[str]:
    """Identifiers for the NAME terminal; with `keywords`, now and then a grammar keyword."""
    if not keywords:
        return safe_names
    words = sorted(KEYWORDS - exclude)
    return st.one_of(safe_names, safe_names, safe_names, st.sampled_from(words))


def name_lits(**kw) -> st.SearchStrategy[ast.Lit]:
    return names(**kw).map(ast.Lit)


# Retry conditions (`on [5xx, gateway-error, 409]`): the COND terminal, which may start with a digit.
conds = st.one_of(
    st.sampled_from(["5xx", "gateway-error", "reset", "connect-failure", "refused-stream", "409", "503"]),
    st.from_regex(r"[0-9A-Za-z][0-9A-Za-z_-]{0,9}", fullmatch=True),
)

# Any text: the renderer must escape quotes, backslashes and control characters, and keep the
# rest (non-ASCII included). Tricky characters are drawn more often than chance would.
_TRICKY = st.sampled_from(list('\\"\n\t\r\x00\x1b\x7f\x85\u2028\u2029\ufeff#{}[]%é😀') + ["\\u0041", "\\n", "\\"])
strings = st.lists(st.one_of(st.characters(codec="utf-8"), _TRICKY), max_size=10).map("".join)
string_lits = strings.map(ast.Lit)

# The parser takes integers of at most 20 digits (longer ones are E0302, "too large").
ints = st.one_of(st.integers(0, 70_000), st.integers(0, 10**20 - 1))
int_lits = ints.map(ast.Lit)

# Durations are whole milliseconds in the AST; multiples of each unit are drawn often so that
# every unit of the canonical form (`ms`, `s`, `m`, `h`) is exercised.
durations = st.one_of(
    st.integers(0, 10**8),
    st.integers(0, 10**5).map(lambda n: n * 1000),
    st.integers(0, 10**4).map(lambda n: n * 60_000),
    st.integers(0, 10**3).map(lambda n: n * 3_600_000),
)
duration_lits = durations.map(ast.Lit)


def _percent_from(whole: int, frac: int, decimals: int) -> float:
    """The float the parser makes of the text `whole.frac` (with `decimals` digits)."""
    return float(f"{whole}.{frac:0{decimals}d}") if decimals else float(whole)


# Percentages as the parser decodes them: float() of a number with at most four decimals.
percents = st.one_of(
    st.integers(0, 100).map(float),
    st.builds(_percent_from, st.integers(0, 100), st.integers(0, 9999), st.just(4)),
    st.integers(0, 4).flatmap(lambda d: st.builds(
        _percent_from, st.integers(0, 10**25), st.integers(0, 10**d - 1 if d else 0), st.just(d))),
)
percent_lits = percents.map(ast.Lit)


def refs(scoped: bool = True, exclude: frozenset[str] = frozenset()) -> st.SearchStrategy[ast.Ref]:
    """`name` or `scope.name`."""
    scope = st.none() | names(exclude=exclude) if scoped else st.none()
    return st.builds(ast.Ref, scope, names(exclude=exclude))


retry_refs = refs().filter(lambda r: "none" not in (r.scope, r.scope or r.name))


def tuples(elements, min_size: int = 0, max_size: int = 3):
    return st.lists(elements, min_size=min_size, max_size=max_size).map(tuple)


# ---- settings blocks ----------------------------------------------------------------------------

# The value strategies of every setting, by key, in the order the grammar takes them.
_VALUES = {
    "trust_domain": [string_lits],
    "connections": [int_lits], "pending": [int_lits], "requests": [int_lits], "retries": [int_lits],
    "consecutive_5xx": [int_lits], "consecutive_gateway_errors": [int_lits],
    "interval": [duration_lits], "ejection": [duration_lits], "max_ejected": [percent_lits],
    "percent": [percent_lits], "min_concurrency": [int_lits],
    "inbound": [int_lits], "outbound": [int_lits], "admin": [int_lits], "app": [string_lits],
    "escaped_slashes": [name_lits()],
    "attempts": [int_lits], "per_try_timeout": [duration_lits], "allow_non_idempotent": [],
}
_OPTIONAL_TAIL = {  # settings whose last value may be left out
    "backoff": ([duration_lits], [duration_lits]),    # backoff D [max D]
    "abort": ([int_lits], [percent_lits]),             # abort STATUS [P%]
    "delay": ([duration_lits], [percent_lits]),        # delay D [P%]
}
BLOCK_KEYS = render.BLOCK_KEYS  # the grammar's keys per block, as the renderer knows them


def settings_for(key: str) -> st.SearchStrategy[ast.Setting]:
    if key == "on":
        return tuples(conds.map(ast.Lit), max_size=4).map(lambda v: ast.Setting("on", v))
    if key in _OPTIONAL_TAIL:
        required, optional = _OPTIONAL_TAIL[key]
        return st.builds(
            lambda req, opt: ast.Setting(key, tuple(req) + tuple(opt)),
            st.tuples(*required), st.one_of(st.just(()), st.tuples(*optional)))
    return st.tuples(*_VALUES[key]).map(lambda v: ast.Setting(key, tuple(v)))


def blocks(kind: str) -> st.SearchStrategy[ast.Block]:
    """A settings block of one kind: each of its keys at most once, in any order."""
    keys = st.lists(st.sampled_from(BLOCK_KEYS[kind]), unique=True, max_size=len(BLOCK_KEYS[kind]))
    return keys.flatmap(lambda ks: st.tuples(*[settings_for(k) for k in ks])).map(
        lambda settings: ast.Block(kind, tuple(settings)))


def block_or_ref(kind: str):
    return st.one_of(blocks(kind), retry_refs if kind == "retry" else refs())


def optional(strategy):
    return st.none() | strategy


# ---- items --------------------------------------------------------------------------------------

imports = st.builds(ast.Import, string_lits)
meshes = st.builds(ast.Mesh, tuples(settings_for("trust_domain"), max_size=1))
subsets = st.builds(ast.Subset, name_lits(), optional(tuples(string_lits)))
services = st.builds(
    ast.Service,
    name=name_lits(),
    port=optional(int_lits),
    namespace=optional(string_lits),
    identity=optional(string_lits),
    endpoints=optional(tuples(string_lits)),
    subsets=tuples(subsets, max_size=2),
    limits=optional(block_or_ref("limits")),
    outlier=optional(block_or_ref("outlier")),
    retry_budget=optional(block_or_ref("retry_budget")),
    sidecar=optional(blocks("sidecar")),
)

path_conds = st.builds(ast.PathCond, st.sampled_from(["exact", "prefix", "raw_prefix", "regex"]), string_lits)
header_conds = st.one_of(
    st.builds(ast.HeaderCond, string_lits, st.sampled_from(["exact", "prefix", "suffix", "regex"]), string_lits,
              st.booleans(), st.booleans()),
    st.builds(ast.HeaderCond, string_lits, st.sampled_from(["present", "absent"]), st.none(),
              st.booleans(), st.booleans()),
)
query_conds = st.one_of(
    st.builds(ast.QueryCond, string_lits, st.sampled_from(["exact", "regex"]), string_lits),
    st.builds(ast.QueryCond, string_lits, st.just("present"), st.none()),
)
method_conds = st.builds(ast.MethodCond, tuples(name_lits(), max_size=4))
matches = st.builds(ast.Match, tuples(st.one_of(path_conds, header_conds, query_conds, method_conds), max_size=4))

split_entries = st.builds(ast.SplitEntry, refs(), int_lits)
splits = st.builds(ast.Split, tuples(split_entries), optional(string_lits))
mirrors = st.builds(ast.Mirror, refs(), optional(percent_lits))
header_ops = st.one_of(
    st.builds(ast.HeaderOp, st.sampled_from(["set", "add"]), string_lits, string_lits),
    st.builds(ast.HeaderOp, st.just("remove"), string_lits, st.none()),
)
header_op_blocks = st.builds(ast.HeaderOps, tuples(header_ops))
timeouts = st.one_of(duration_lits, st.just(ast.Lit(None)))  # Lit(None) is `timeout none`
retries = st.one_of(blocks("retry"), retry_refs, st.just(ast.Lit(None)))  # Lit(None) is `retry none`

route_nodes = st.builds(
    ast.Route,
    name=name_lits(),
    matches=tuples(matches, max_size=2),
    to=optional(refs()),
    split=optional(splits),
    timeout=optional(timeouts),
    retry=optional(retries),
    fault=optional(blocks("fault")),
    mirror=optional(mirrors),
    request_headers=optional(header_op_blocks),
    response_headers=optional(header_op_blocks),
)
routes_nodes = st.builds(ast.Routes, name_lits(), tuples(route_nodes))

from_conds = st.one_of(
    st.builds(ast.FromCond, st.sampled_from(["identity", "namespace"]), tuples(string_lits)),
    st.builds(ast.FromCond, st.just("service"), tuples(name_lits())),
    st.just(ast.FromCond("same_namespace", ())),
)
rules = st.builds(
    ast.Rule,
    st.sampled_from(["allow", "deny"]),
    optional(name_lits()),
    tuples(st.one_of(from_conds, path_conds, method_conds, header_conds), max_size=5),
)
use_rules = st.builds(ast.UseRules, refs())
authorizations = st.builds(
    ast.Authorization,
    name_lits(),
    optional(st.sampled_from(["allow", "deny"]).map(ast.Lit)),
    tuples(st.one_of(rules, use_rules), max_size=4),
)

policies = st.one_of(
    *[st.builds(ast.Policy, st.just(kind), name_lits(), blocks(kind))
      for kind in ("retry", "outlier", "limits", "retry_budget")],
    st.builds(ast.Policy, st.just("rules"), name_lits(), tuples(rules)),
)

# Drawn by weight, not by st.one_of, which would flatten the five kinds of policy (and so draw
# policies five times as often as services). Routes hold the most constructs: they come most often.
items = st.sampled_from(
    [imports, meshes] + [services] * 2 + [routes_nodes] * 3 + [authorizations] * 2 + [policies] * 2
).flatmap(lambda strategy: strategy)


def modules(path: str = "generated.mesh", max_items: int = 6) -> st.SearchStrategy[ast.Module]:
    return st.builds(ast.Module, st.just(path), tuples(items, max_size=max_items))
