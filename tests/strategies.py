"""Hypothesis strategies for syntactically valid .mesh ASTs, covering every construct of the grammar.

"Valid" means what the parser accepts without an error: each block holds each setting at most
once (the parser reports duplicates, E0105), integers are at most 2**64 - 1 (E0302), durations
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

from compiler.syntax import ast, render
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

# The parser takes integers up to 2**64 - 1 (larger ones are E0302, "too large").
ints = st.one_of(st.integers(0, 70_000), st.integers(0, 2**64 - 1))
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
    "trust_domain": [string_lits], "mtls": [name_lits()], "certificates": [string_lits],
    "cluster_domain": [string_lits],
    "connections": [int_lits], "pending": [int_lits], "requests": [int_lits], "retries": [int_lits],
    "consecutive_5xx": [int_lits], "consecutive_gateway_errors": [int_lits],
    "interval": [duration_lits], "ejection": [duration_lits], "max_ejected": [percent_lits],
    "percent": [percent_lits], "min_concurrency": [int_lits],
    "inbound": [int_lits], "outbound": [int_lits], "admin": [int_lits], "ports": [int_lits], "app": [string_lits],
    "escaped_slashes": [name_lits()],
    "max_request_headers": [int_lits], "max_request_headers_kb": [int_lits],
    "request_headers_timeout": [duration_lits], "idle_timeout": [duration_lits],
    "stream_idle_timeout": [duration_lits], "max_connections": [int_lits],
    "attempts": [int_lits], "per_try_timeout": [duration_lits], "allow_non_idempotent": [],
    "sampling": [percent_lits], "propagation": [name_lits()], "otlp": [string_lits], "access_log": [string_lits],
    "scheme": [string_lits], "host": [string_lits], "port": [int_lits], "path": [string_lits], "prefix": [string_lits],
    "status": [int_lits], "strip_query": [], "regex": [string_lits, string_lits],
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
tracing_blocks = st.lists(st.sampled_from(["sampling", "propagation", "otlp"]), unique=True).flatmap(
    lambda ks: st.tuples(*[settings_for(k) for k in ks])).map(lambda settings: ast.Block("tracing", tuple(settings)))
meshes = st.builds(ast.Mesh, st.lists(st.sampled_from(["trust_domain", "mtls", "certificates", "cluster_domain"]),
                                      unique=True).flatmap(
    lambda ks: st.tuples(*[settings_for(k) for k in ks])), tracing=optional(tracing_blocks))
label_keys = st.one_of(names(), string_lits.map(lambda lit: lit.value)).map(ast.Lit)
label_entries = st.builds(ast.LabelEntry, label_keys, string_lits)
subsets = st.builds(ast.Subset, name_lits(), optional(tuples(string_lits)), sidecar=optional(blocks("sidecar")),
                    labels=optional(tuples(tuples(label_entries), min_size=1, max_size=2)))
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
    mtls=optional(name_lits()),
    hosts=optional(tuples(string_lits)),
)

path_conds = st.builds(ast.PathCond, st.sampled_from(["exact", "prefix", "raw_prefix", "regex"]), string_lits,
                       st.booleans())
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

# After a split entry, `request_headers` / `response_headers` are that entry's header changes, so a
# service of either name cannot be the next entry's target (the keyword is taken: language §8).
split_entries = st.builds(ast.SplitEntry, refs(exclude=frozenset({"request_headers", "response_headers"})), int_lits,
                          request_headers=optional(st.deferred(lambda: header_op_blocks)),
                          response_headers=optional(st.deferred(lambda: header_op_blocks)))
splits = st.builds(ast.Split, tuples(split_entries), optional(string_lits))
mirrors = st.builds(ast.Mirror, refs(), optional(percent_lits))
header_ops = st.one_of(
    st.builds(ast.HeaderOp, st.sampled_from(["set", "add"]), string_lits, string_lits),
    st.builds(ast.HeaderOp, st.just("remove"), string_lits, st.none()),
)
header_op_blocks = st.builds(ast.HeaderOps, tuples(header_ops))
cors_blocks = st.builds(
    ast.Cors,
    tuples(st.builds(ast.CorsOrigin, st.sampled_from(["exact", "prefix", "regex"]), string_lits), max_size=3),
    optional(tuples(name_lits(), max_size=3)),
    optional(tuples(string_lits, max_size=3)),
    optional(tuples(string_lits, max_size=2)),
    optional(duration_lits),
    optional(st.just(ast.Lit(True))),
)
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
    mirrors=tuples(mirrors, max_size=2),
    request_headers=optional(header_op_blocks),
    response_headers=optional(header_op_blocks),
    redirect=optional(blocks("redirect")),
    rewrite=optional(blocks("rewrite")),
    respond=optional(st.builds(ast.Respond, int_lits, optional(string_lits))),
    cors=optional(cors_blocks),
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
    tuples(st.one_of(from_conds, path_conds, method_conds, header_conds,
                     st.builds(ast.NotCond, st.one_of(path_conds, method_conds))), max_size=5),
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

# An assert's `from` comes first in its conditions, as the renderer writes it.
asserts = st.builds(
    lambda kind, to, callers, conds: ast.Assert(ast.Lit(kind), to, callers + conds),
    st.sampled_from(["never", "always"]),
    tuples(name_lits(), max_size=2),
    tuples(st.one_of(from_conds, st.sampled_from(["unauthenticated", "any"]).map(lambda k: ast.FromCond(k, ()))),
           max_size=1),
    tuples(st.one_of(path_conds, method_conds, header_conds), max_size=4),
)

# Drawn by weight, not by st.one_of, which would flatten the five kinds of policy (and so draw
# policies five times as often as services). Routes hold the most constructs: they come most often.
items = st.sampled_from(
    [imports, meshes] + [services] * 2 + [routes_nodes] * 3 + [authorizations] * 2 + [policies] * 2 + [asserts]
).flatmap(lambda strategy: strategy)


def modules(path: str = "generated.mesh", max_items: int = 6) -> st.SearchStrategy[ast.Module]:
    return st.builds(ast.Module, st.just(path), tuples(items, max_size=max_items))


# ---- semantically valid programs (for the backends) ---------------------------------------------
#
# Everything above is syntax only. The strategies below build programs that also pass every
# check (no error; warnings are allowed), from the same AST nodes and rendered by the same
# renderer, so that a backend's output can be checked on generated policies: names resolve,
# values are in range, paths are in normal form, per-try timeouts are shorter than route
# timeouts, header changes do not contradict each other. Service names are lower case, so no two
# differ only in case, and methods never include CONNECT (both are Envoy target errors).

_lower_names = st.from_regex(r"[a-z][a-z0-9_-]{0,7}", fullmatch=True).filter(lambda s: s not in KEYWORDS)
# header names a header change may use: not `host`, not a framing header, not `server` (E0308)
_tokens = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True).filter(
    lambda s: s not in ("host", "server", "connection", "keep-alive", "proxy-connection", "transfer-encoding",
                        "upgrade", "te", "content-length"))
_segments = st.from_regex(r"[A-Za-z0-9_~-]{1,6}", fullmatch=True)
valid_paths = st.lists(_segments, min_size=0, max_size=3).map(lambda parts: "/" + "/".join(parts))
# Header and query values: any text but CR, LF and NUL (E0312 for header changes), with the
# characters that configuration formats treat specially drawn often.
_value_chars = st.one_of(st.characters(codec="utf-8", exclude_characters="\r\n\x00"),
                         st.sampled_from(list('%"\\{}[]$#&=*?.+ \t')))
header_values = st.lists(_value_chars, max_size=8).map("".join)
_regexes = st.sampled_from(["/[a-z]+", "/api/v[0-9]+/.*", "/(a|b)/c", "/x.*", "/[^/]+/items/[0-9]{1,8}",
                            "/" + "[a-z]" * 30,
                            "/[a-z]{150}/(x|y)+"])  # beyond Envoy's default RE2 size limit
_value_regexes = st.sampled_from(["[0-9]+", "(?i)yes|no", ".*", "a.c", "[^,]*", ""])
_methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"])
_durations_ms = st.integers(1, 86_400_000)
_four_decimals = st.integers(0, 1_000_000).map(lambda n: n / 10_000)
_endpoint_hosts = st.one_of(
    st.tuples(st.integers(0, 255), st.integers(0, 255)).map(lambda t: f"10.{t[0]}.{t[1]}.1"),
    st.sampled_from(["[::1]", "[fd00::7]", "127.0.0.1"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,8}\.example\.?", fullmatch=True).filter(lambda s: "-." not in s),
)
_endpoints = st.tuples(_endpoint_hosts, st.integers(1, 65535)).map(lambda t: f"{t[0]}:{t[1]}")


def _lit(v):
    return ast.Lit(v)


def _setting(key, *values):
    return ast.Setting(key, tuple(_lit(v) for v in values))


@st.composite
def _valid_service(draw, name: str):
    subset_names = draw(st.lists(_lower_names, min_size=1, max_size=2, unique=True))
    implicit = draw(st.booleans()) and len(subset_names) == 1
    endpoint_lists = [draw(st.lists(_endpoints, min_size=1, max_size=3, unique=True)) for _ in subset_names]
    budget = draw(st.none() | st.builds(
        lambda p, m: ast.Block("retry_budget", (_setting("percent", p), _setting("min_concurrency", m))),
        _four_decimals, st.integers(0, 100)))
    limits = draw(st.none() | st.builds(
        lambda c, p, r: ast.Block("limits", (_setting("connections", c), _setting("pending", p),
                                             _setting("requests", r))),
        st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1)))
    outlier = draw(st.none() | st.builds(
        lambda c, g, i, e, m: ast.Block("outlier", tuple(s for s in (
            _setting("consecutive_5xx", c), g and _setting("consecutive_gateway_errors", g),
            _setting("interval", i), _setting("ejection", e), _setting("max_ejected", m)) if s)),
        st.integers(1, 1000), st.integers(0, 10), _durations_ms, _durations_ms, _four_decimals))
    ports = draw(st.lists(st.integers(1, 65535), min_size=3, max_size=3, unique=True))
    sidecar = draw(st.none() | st.builds(
        lambda app, slashes, count, kb, head, idle, stream, conns: ast.Block("sidecar", tuple(s for s in (
            _setting("inbound", ports[0]), _setting("outbound", ports[1]), _setting("admin", ports[2]),
            _setting("app", app), _setting("escaped_slashes", slashes),
            count and _setting("max_request_headers", count), kb and _setting("max_request_headers_kb", kb),
            _setting("request_headers_timeout", head), _setting("idle_timeout", idle),
            _setting("stream_idle_timeout", stream), conns and _setting("max_connections", conns)) if s)),
        _endpoints, st.sampled_from(["reject", "decode", "keep"]), st.integers(0, 10_000), st.integers(0, 8192),
        _durations_ms, _durations_ms, _durations_ms, st.integers(0, 1_000_000)))
    # workloads (language §5.9): a subset with its own sidecar block, over the service's (written
    # endpoints: not on the local host, so no two of them need distinct ports)
    workloads = [draw(st.none() | st.builds(
        lambda base, app, slashes: ast.Block("sidecar", (_setting("ports", base), _setting("app", app),
                                                         _setting("escaped_slashes", slashes))),
        st.integers(1, 65533), _endpoints, st.sampled_from(["reject", "decode", "keep"]))) for _ in subset_names]
    service = ast.Service(
        name=_lit(name), port=_lit(draw(st.integers(1, 65535))),
        namespace=draw(st.none() | _lower_names.filter(lambda s: "_" not in s and not s.endswith("-")).map(_lit)),
        identity=None,
        endpoints=tuple(_lit(e) for e in endpoint_lists[0]) if implicit else None,
        subsets=() if implicit else tuple(ast.Subset(_lit(n), tuple(_lit(e) for e in eps), sidecar=w)
                                          for n, eps, w in zip(subset_names, endpoint_lists, workloads)),
        limits=limits, outlier=outlier, retry_budget=budget, sidecar=sidecar,
        mtls=draw(st.none() | st.sampled_from(["strict", "permissive", "disable"]).map(_lit)),
        hosts=draw(st.none() | st.lists(st.sampled_from(["{}.example.com", "*.{}.example.org", "{}.*", "{}.Corp"]),
                                        min_size=1, max_size=3, unique=True).map(
            lambda forms: tuple(_lit(f.format(_host_label(name))) for f in forms))))
    return service, ["default"] if implicit else subset_names


def _host_label(name: str) -> str:
    """Host labels unique to a service name (so that no two generated services claim one host)."""
    text = name.encode().hex()
    return ".".join(text[i:i + 60] for i in range(0, len(text), 60))


@st.composite
def _valid_header_cond(draw):
    test = draw(st.sampled_from(["exact", "prefix", "suffix", "regex", "present", "absent"]))
    name = _lit(draw(_tokens))
    if test in ("present", "absent"):
        return ast.HeaderCond(name, test, None, draw(st.booleans()), False)
    value = draw(_value_regexes if test == "regex" else header_values)
    return ast.HeaderCond(name, test, _lit(value), draw(st.booleans()), test != "regex" and draw(st.booleans()))


@st.composite
def _valid_path_cond(draw):
    kind = draw(st.sampled_from(["exact", "prefix", "raw_prefix", "regex"]))
    return ast.PathCond(kind, _lit(draw(_regexes if kind == "regex" else valid_paths)),
                        kind != "regex" and draw(st.booleans()))


@st.composite
def _valid_match(draw):
    conds = []
    if draw(st.booleans()):
        conds.append(draw(_valid_path_cond()))
    if draw(st.booleans()):
        methods = draw(st.lists(_methods, min_size=1, max_size=3, unique=True))
        conds.append(ast.MethodCond(tuple(_lit(m) for m in methods)))
    conds += draw(st.lists(_valid_header_cond(), max_size=2))
    conds += draw(st.lists(st.one_of(
        st.builds(lambda n, v: ast.QueryCond(_lit(n), "exact", _lit(v)), _tokens, _tokens),
        st.builds(lambda n, v: ast.QueryCond(_lit(n), "regex", _lit(v)), _tokens, _value_regexes),
        st.builds(lambda n: ast.QueryCond(_lit(n), "present", None), _tokens)), max_size=2))
    return ast.Match(tuple(draw(st.permutations(conds))))


@st.composite
def _valid_header_ops(draw):
    names = draw(st.lists(_tokens, max_size=4, unique=True))
    ops = []
    for n in names:
        kind = draw(st.sampled_from(["remove", "set", "add", "set+add"]))
        if kind == "remove":
            ops.append(ast.HeaderOp("remove", _lit(n), None))
        if kind in ("set", "set+add"):
            ops.append(ast.HeaderOp("set", _lit(n), _lit(draw(header_values))))
        if kind in ("add", "set+add"):
            ops += [ast.HeaderOp("add", _lit(n), _lit(draw(header_values))) for _ in range(draw(st.integers(1, 2)))]
    return ast.HeaderOps(tuple(draw(st.permutations(ops)))) if ops else None


@st.composite
def _valid_route(draw, name: str, targets: list[tuple[str, str]]):
    target = st.sampled_from(targets)
    ref = lambda t: ast.Ref(t[0], t[1])  # noqa: E731
    to = split = None
    if draw(st.booleans()):
        to = ref(draw(target))
    else:
        chosen = draw(st.lists(target, min_size=1, max_size=3, unique=True))
        weights = draw(st.lists(st.integers(0, 1000), min_size=len(chosen), max_size=len(chosen)).filter(any))
        split = ast.Split(tuple(ast.SplitEntry(ref(t), _lit(w), request_headers=draw(st.none() | _valid_header_ops()),
                                               response_headers=draw(st.none() | _valid_header_ops()))
                                for t, w in zip(chosen, weights)),
                          draw(st.none() | _tokens.map(_lit)))
    timeout_ms = draw(st.none() | st.just(0) | _durations_ms)
    timeout = None if timeout_ms is None else _lit(timeout_ms or None)
    effective = 15_000 if timeout_ms is None else timeout_ms
    retry = None
    if draw(st.booleans()):
        conds = draw(st.lists(st.sampled_from(["5xx", "gateway-error", "reset", "connect-failure", "refused-stream",
                                               "retriable-4xx", "409", "503", "429"]),
                              min_size=1, max_size=4, unique=True))
        base = draw(st.integers(1, 1000))
        settings = [_setting("attempts", draw(st.integers(1, 5))), _setting("on", *conds),
                    _setting("backoff", base, base * draw(st.integers(1, 10)))]
        if draw(st.booleans()) and effective > 1:
            settings.append(_setting("per_try_timeout", draw(st.integers(1, effective - 1 if effective else 10_000))))
        retry = ast.Block("retry", tuple(settings))
    fault = None
    if draw(st.booleans()):
        parts = []
        if draw(st.booleans()):
            parts.append(_setting("abort", draw(st.integers(200, 599)), draw(_four_decimals)))
        if not parts or draw(st.booleans()):
            parts.append(_setting("delay", draw(_durations_ms), draw(_four_decimals)))
        fault = ast.Block("fault", tuple(parts))
    mirrors = tuple(draw(st.lists(st.builds(lambda t, p: ast.Mirror(ref(t), _lit(p)), target, _four_decimals),
                                  max_size=2)))
    cors = None
    if draw(st.integers(0, 3)) == 0:   # a valid `cors` block (language §13a)
        origins = draw(st.lists(st.sampled_from([("exact", "https://a.example"), ("exact", "http://b.example:8080"),
                                                 ("prefix", "https://c."), ("regex", "https://[a-z]+\\.example")]),
                                min_size=1, max_size=3, unique=True))
        methods = draw(st.none() | st.lists(st.sampled_from(["GET", "POST", "PUT"]), min_size=1, unique=True))
        cors = ast.Cors(tuple(ast.CorsOrigin(t, _lit(v)) for t, v in origins),
                        None if methods is None else tuple(_lit(m) for m in methods),
                        draw(st.none() | st.just((_lit("x-a"),))), draw(st.none() | st.just((_lit("x-id"),))),
                        draw(st.none() | st.sampled_from([_lit(1000), _lit(3_600_000)])),
                        draw(st.none() | st.just(_lit(True))))
    return ast.Route(_lit(name), tuple(draw(st.lists(_valid_match(), max_size=2))), to, split, timeout, retry, fault,
                     mirrors, draw(_valid_header_ops()), draw(_valid_header_ops()), cors=cors)


@st.composite
def _valid_rule(draw, name: str, services: list[str]):
    conds = []
    kind = draw(st.sampled_from(["none", "identity", "namespace", "service", "same_namespace"]))
    if kind == "identity":
        conds.append(ast.FromCond("identity", tuple(_lit(v) for v in draw(st.lists(st.sampled_from(
            ["spiffe://cluster.local/ns/a/sa/b", "spiffe://other.example/*", "spiffe://cluster.local/ns/x/*"]),
            min_size=1, max_size=2, unique=True)))))
    elif kind == "namespace":
        conds.append(ast.FromCond("namespace", (_lit(draw(st.sampled_from(["default", "web", "ops"]))),)))
    elif kind == "service":
        conds.append(ast.FromCond("service", tuple(_lit(s) for s in draw(
            st.lists(st.sampled_from(services), min_size=1, max_size=2, unique=True)))))
    elif kind == "same_namespace":
        conds.append(ast.FromCond("same_namespace", ()))
    if draw(st.booleans()):
        conds.append(draw(_valid_path_cond()))
    if draw(st.booleans()):
        methods = draw(st.lists(_methods, min_size=1, max_size=3, unique=True))
        conds.append(ast.MethodCond(tuple(_lit(m) for m in methods)))
    conds += draw(st.lists(_valid_header_cond(), max_size=2))
    conds += [ast.NotCond(c) for c in draw(st.lists(_valid_path_cond(), max_size=2))]   # `not path`
    if draw(st.integers(0, 3)) == 0:
        methods = draw(st.lists(_methods, min_size=1, max_size=2, unique=True))
        conds.append(ast.NotCond(ast.MethodCond(tuple(_lit(m) for m in methods))))
    return ast.Rule(draw(st.sampled_from(["allow", "deny"])), _lit(name), tuple(conds))


@st.composite
def valid_modules(draw, path: str = "generated.mesh", max_services: int = 3):
    """A module that compiles without errors: services, their routes and authorization."""
    names = draw(st.lists(_lower_names, min_size=1, max_size=max_services, unique=True))
    services, targets = [], []
    for name in names:
        svc, subsets = draw(_valid_service(name))
        services.append(svc)
        targets += [(name, s) for s in subsets]
    items: list = list(services)
    for svc in services:
        several = svc.endpoints is None and len(svc.subsets) > 1
        if several or draw(st.booleans()):
            route_names = draw(st.lists(_lower_names, min_size=1, max_size=3, unique=True))
            items.append(ast.Routes(svc.name, tuple(draw(_valid_route(r, targets)) for r in route_names)))
        if draw(st.booleans()):
            rule_names = draw(st.lists(_lower_names, max_size=3, unique=True))
            items.append(ast.Authorization(svc.name, _lit(draw(st.sampled_from(["allow", "deny"]))),
                                           tuple(draw(_valid_rule(r, names)) for r in rule_names)))
    return ast.Module(path, tuple(draw(st.permutations(items))))
