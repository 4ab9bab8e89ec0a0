"""Reductions of the LALR parser to AST nodes: one method per grammar rule (or alias).

Each method receives every child of the rule in order: tokens for terminals, including keywords
and punctuation, and the values built for sub-rules. A token is its index (an int) into the
arrays of the current parse (`vals`, `types`, `starts`, `ends`): pushing an int costs nothing,
and the arrays are made in bulk by C code (see parse.py). Duplicate settings are
reported here (E0105) because only here is the written order still visible.
"""

from __future__ import annotations

import re

from compiler.core.diagnostics import Collector
from compiler.core.source import SourceFile, Span
from compiler.language.settings import UINT32_MAX
from compiler.syntax import ast

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    # The children of a rule: token indexes (int) and the values built for sub-rules.
    Children = list[Any]

_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


class Items(list):
    """The values of a `[…]` list, with the offsets of its brackets (an empty list has a span too)."""

    __slots__ = ("start", "end")
    start: int
    end: int


def _block(kind: str, where: str) -> Callable[[Builder, Children], ast.Block]:
    """The reduction of a settings block of `kind` (`where` names it in E0105)."""
    def build(self: Builder, c: Children) -> ast.Block:
        return ast.Block(kind, self.unique(self.body(c), where), self.span(c))
    return build


class Builder:
    """Builds AST nodes for one source file and reports the value errors found while building."""

    def __init__(self, source: SourceFile, diags: Collector):
        self.source = source
        self.diags = diags
        self.vals: list[str] = []
        self.types: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []

    def use_tokens(self, vals, types, starts, ends) -> None:
        """Point the builder at the token arrays of the run that is about to reduce."""
        self.vals, self.types, self.starts, self.ends = vals, types, starts, ends

    def _start(self, x) -> int:
        if isinstance(x, Items):
            return x.start
        while isinstance(x, list):
            x = x[0]
        return self.starts[x] if isinstance(x, int) else x.span.start

    def _end(self, x) -> int:
        if isinstance(x, Items):
            return x.end
        while isinstance(x, list):
            x = x[-1]
        if isinstance(x, int):
            return self.ends[x]
        if isinstance(x, ast.Lit) and x.span is None:
            return 0
        return x.span.end

    # ---- helpers -------------------------------------------------------------------------
    def span(self, children) -> Span:
        """From the first to the last child; children are never empty or None (no placeholders)."""
        first, last = children[0], children[-1]
        # Most rules start with a keyword and end with `}`: tokens, the fast path.
        start = self.starts[first] if first.__class__ is int else self._start(first)
        end = self.ends[last] if last.__class__ is int else self._end(last)
        return Span(self.source, start, end)

    def tok_span(self, tok: int) -> Span:
        return Span(self.source, self.starts[tok], self.ends[tok])

    def name(self, tok: int) -> ast.Lit[str]:
        return ast.Lit(self.vals[tok], Span(self.source, self.starts[tok], self.ends[tok]))

    def string(self, tok: int) -> ast.Lit[str]:
        raw = self.vals[tok][1:-1]
        if "\\" in raw:
            raw = self._unescape(raw, tok)
        return ast.Lit(raw, Span(self.source, self.starts[tok], self.ends[tok]))

    def _unescape(self, raw: str, tok: int) -> str:
        def repl(m: re.Match) -> str:
            esc = m.group(1)
            if esc[0] == "u" and len(esc) == 5:
                return chr(int(esc[1:], 16))
            if esc in _ESCAPES:
                return _ESCAPES[esc]
            start = self.starts[tok] + 1 + m.start()
            self.diags.add("E0104", f"unknown escape sequence `\\{esc}` in string",
                           Span(self.source, start, start + 2),
                           hint="escapes are `\\\\`, `\\\"`, `\\n`, `\\t`, `\\r` and `\\uXXXX`")
            return esc
        return _ESCAPE_RE.sub(repl, raw)

    def int_(self, tok: int) -> ast.Lit[int]:
        text = self.vals[tok]
        span = Span(self.source, self.starts[tok], self.ends[tok])
        # Beyond any range of the language (and, past 20 digits, Python's int() digit limit):
        # reported here, once; the checks skip the value (ast.TOO_LARGE).
        if len(text) > 20 or int(text) >= ast.TOO_LARGE:
            self.diags.add("E0302", f"number {_written(text)} is too large", span,
                           hint=f"no setting takes a number above {UINT32_MAX} (a port is at most 65535)")
            return ast.Lit(ast.TOO_LARGE, span)
        return ast.Lit(int(text), span)

    def duration(self, tok: int) -> ast.Lit[int]:
        text = self.vals[tok]
        number, unit = _DURATION_RE.fullmatch(text).groups()  # type: ignore[union-attr]  # a DURATION token always matches
        if len(number) > 20:
            span = Span(self.source, self.starts[tok], self.ends[tok])
            self.diags.add("E0306", f"duration {_written(text)} is too long", span, hint="durations are at most 24h")
            return ast.Lit(1, span)
        whole, _, frac = number.partition(".")
        # Exact arithmetic: 1.001s is 1001 ms (floats would make it 1000.999…).
        scale = 10 ** len(frac)
        units = int(whole + frac) * _UNIT_MS[unit]
        ms, rest = divmod(units, scale)
        span = Span(self.source, self.starts[tok], self.ends[tok])
        if rest:
            self.diags.add("E0306", f"duration `{text}` is not a whole number of milliseconds", span,
                           hint="durations have millisecond precision")
            ms += 1  # reported once; rounding up keeps later checks from piling on
        return ast.Lit(ms, span)

    def percent(self, tok: int) -> ast.Lit[float]:
        text = self.vals[tok][:-1]
        span = Span(self.source, self.starts[tok], self.ends[tok])
        if "." in text and len(text.split(".")[1]) > 4:
            self.diags.add("E0303", f"percentage `{text}%` has more than four decimals", span,
                           hint="both targets count fractions in millionths: at most four decimals of a percent")
        return ast.Lit(float(text), span)

    def value(self, tok: int) -> ast.Lit[Any]:
        t = self.types[tok]
        if t == "STRING":
            return self.string(tok)
        if t == "INT":
            return self.int_(tok)
        if t == "DURATION":
            return self.duration(tok)
        if t == "PERCENT":
            return self.percent(tok)
        return self.name(tok)

    def setting(self, children) -> ast.Setting:
        key = self.vals[children[0]]
        types = self.types
        values = tuple(self.value(c) for c in children[1:] if isinstance(c, int) and types[c] != "MAX")
        return ast.Setting(key, values, self.span(children))

    def body(self, children) -> list:
        """The items between `{` and `}` (the list helper, or nothing for an empty block)."""
        out = []
        for c in children:
            if isinstance(c, list):
                out.extend(c)
        return out

    def unique(self, settings: list[ast.Setting], where: str) -> tuple[ast.Setting, ...]:
        seen: dict[str, ast.Setting] = {}
        for s in settings:
            if s.key in seen:
                self.diags.add("E0105", f"`{s.key}` is set twice in {where}", s.span,
                               hint="remove one of them: a block takes each setting once")
            else:
                seen[s.key] = s
        return tuple(settings)

    def names(self, x) -> tuple[ast.Lit[str], ...]:
        if isinstance(x, int):
            return (self.name(x) if self.types[x] != "STRING" else self.string(x),)
        return tuple(x)

    # ---- generic reductions ------------------------------------------------------------------
    def start(self, children):
        return self.body(children)

    def item(self, children):
        return children[0]

    # ---- imports and mesh -----------------------------------------------------------------
    def import_decl(self, c):
        return ast.Import(self.string(c[1]), self.span(c))

    def mesh_decl(self, c):
        items = self.body(c)
        blocks = [x for x in items if isinstance(x, ast.Block)]
        for extra in blocks[1:]:
            self.diags.add("E0105", "`tracing` is set twice in the mesh block", extra.span,
                           hint="remove one of them: a block takes each setting once")
        settings = [x for x in items if not isinstance(x, ast.Block)] if blocks else items
        return ast.Mesh(self.unique(settings, "the mesh block"), self.span(c), blocks[0] if blocks else None)

    def mesh_tracing(self, c):
        return ast.Block("tracing", self.unique(self.body(c), "the tracing block"), self.span(c))

    def trust_domain(self, c):
        return self.setting(c)

    mesh_mtls = mesh_certificates = mesh_cluster_domain = tr_sampling = tr_propagation = tr_otlp = trust_domain

    # ---- services -------------------------------------------------------------------------
    def service_decl(self, c: Children) -> ast.Service:
        fields: dict[str, Any] = {}  # by tag: a Lit, a tuple of them, a Block or a Ref
        subsets = []
        for tag, value, span in self.body(c):
            if tag == "subset":
                subsets.append(value)
                continue
            if tag in fields:
                self.diags.add("E0105", f"`{tag}` is set twice in service `{self.vals[c[1]]}`", span,
                               hint="remove one of them: a service takes each setting once")
                continue
            fields[tag] = value
        return ast.Service(self.name(c[1]), fields.get("port"), fields.get("namespace"), fields.get("identity"),
                           fields.get("endpoints"), tuple(subsets), fields.get("limits"), fields.get("outlier"),
                           fields.get("retry_budget"), fields.get("sidecar"), fields.get("mtls"), fields.get("hosts"),
                           self.span(c))

    def svc_port(self, c):
        return ("port", self.int_(c[1]), self.span(c))

    def svc_namespace(self, c):
        return ("namespace", self.string(c[1]), self.span(c))

    def svc_identity(self, c):
        return ("identity", self.string(c[1]), self.span(c))

    def svc_mtls(self, c):
        return ("mtls", self.name(c[1]), self.span(c))

    def svc_endpoints(self, c):
        return ("endpoints", tuple(c[1]), self.span(c))

    def svc_hosts(self, c):
        return ("hosts", tuple(c[1]), self.span(c))

    def subset_decl(self, c):
        fields: dict[str, Any] = {}
        labels = []
        for tag, value, span in self.body(c):
            if tag == "labels":   # each block written, in order (E0360 for a second one)
                labels.append(value)
                continue
            if tag in fields:
                self.diags.add("E0105", f"`{tag}` is set twice in subset `{self.vals[c[1]]}`", span,
                               hint="remove one of them: a subset takes each setting once")
                continue
            fields[tag] = value
        subset = ast.Subset(self.name(c[1]), fields.get("endpoints"), self.span(c), sidecar=fields.get("sidecar"),
                            labels=tuple(labels) or None)
        return ("subset", subset, self.span(c))

    def subset_labels(self, c):
        return ("labels", tuple(self.body(c)), self.span(c))

    def label_entry(self, c):
        key = self.string(c[0]) if self.types[c[0]] == "STRING" else self.name(c[0])
        return ast.LabelEntry(key, self.string(c[1]), self.span(c))

    def svc_limits(self, c):
        return ("limits", c[1], self.span(c))

    def svc_outlier(self, c):
        return ("outlier", c[1], self.span(c))

    def svc_budget(self, c):
        return ("retry_budget", c[1], self.span(c))

    def sidecar_decl(self, c):
        return ("sidecar", ast.Block("sidecar", self.unique(self.body(c), "the sidecar block"), self.span(c)),
                self.span(c))

    limits_body = _block("limits", "the limits block")
    outlier_body = _block("outlier", "the outlier block")
    budget_body = _block("retry_budget", "the retry budget")
    retry_body = _block("retry", "the retry block")

    def _setting(self, c):
        return self.setting(c)

    lim_connections = lim_pending = lim_requests = lim_retries = _setting
    od_consecutive_5xx = od_consecutive_gateway = od_interval = od_ejection = od_max_ejected = _setting
    rb_percent = rb_min_concurrency = _setting
    sc_inbound = sc_outbound = sc_admin = sc_ports = sc_app = sc_escaped_slashes = _setting
    sc_max_request_headers = sc_max_request_headers_kb = sc_request_headers_timeout = _setting
    sc_idle_timeout = sc_stream_idle_timeout = sc_max_connections = sc_access_log = _setting
    rt_attempts = rt_per_try_timeout = rt_backoff = rt_allow_non_idempotent = _setting
    fault_abort = fault_delay = _setting
    rd_scheme = rd_host = rd_port = rd_path = rd_prefix = rd_status = rd_strip_query = rw_regex = _setting

    def rt_on(self, c):
        values = []
        for x in self.body(c):
            if isinstance(x, int) and self.types[x] == "COND":
                values.append(self.name(x))
        return ast.Setting("on", tuple(values), self.span(c))

    # ---- routes ------------------------------------------------------------------------------
    def routes_decl(self, c):
        return ast.Routes(self.name(c[1]), tuple(self.body(c)), self.span(c))

    def route_decl(self, c: Children) -> ast.Route:
        fields: dict[str, Any] = {}  # by tag: a Ref, a Split, a Lit, a Block, a Mirror or HeaderOps
        matches = []
        mirrors = []
        for tag, value, span in self.body(c):
            if tag == "match":
                matches.append(value)
                continue
            if tag == "mirror":       # a route may mirror to several subsets (docs/language.md §12)
                mirrors.append(value)
                continue
            if tag in fields:
                self.diags.add("E0105", f"`{tag}` is set twice in route `{self.vals[c[1]]}`", span,
                               hint="remove one of them: a route takes each setting once")
                continue
            fields[tag] = value
        return ast.Route(self.name(c[1]), tuple(matches), fields.get("to"), fields.get("split"), fields.get("timeout"),
                         fields.get("retry"), fields.get("fault"), tuple(mirrors),
                         fields.get("request_headers"), fields.get("response_headers"), self.span(c),
                         fields.get("redirect"), fields.get("rewrite"), fields.get("respond"),
                         fields.get("cors"))

    def match_block(self, c):
        return ("match", ast.Match(tuple(self.body(c)), self.span(c)), self.span(c))

    def path_cond(self, c):
        return ast.PathCond(self.vals[c[1]], self.string(c[2]), len(c) > 3, self.span(c))

    def header_cond(self, c):
        types = self.types
        invert = types[c[0]] == "NOT"
        i = 1 if invert else 0
        test, value, end = c[i + 2]
        ignore_case = isinstance(c[-1], int) and types[c[-1]] == "IGNORE_CASE"
        if ignore_case:
            end = self.ends[c[-1]]
        return ast.HeaderCond(self.string(c[i + 1]), test, value, invert, ignore_case,
                              Span(self.source, self.starts[c[0]], end))

    def header_test(self, c):
        """(test, value, end offset): the test keyword and its operand, if any."""
        return (self.vals[c[0]], self.string(c[1]) if len(c) > 1 else None, self.ends[c[-1]])

    def query_cond(self, c):
        test, value, end = c[2]
        return ast.QueryCond(self.string(c[1]), test, value, Span(self.source, self.starts[c[0]], end))

    query_test = header_test

    def method_cond(self, c):
        return ast.MethodCond(self.names(c[1]), self.span(c))

    def caller_cond(self, c):
        return ast.CallerCond(self.names(c[1]), self.span(c))

    def to_target(self, c):
        return ("to", c[1], self.span(c))

    def split(self, c):
        entries = tuple(x for x in self.body(c) if isinstance(x, ast.SplitEntry))
        key = self.string(c[-1]) if isinstance(c[-1], int) and self.types[c[-1]] == "STRING" else None
        node = ast.Split(entries, key, self.span(c))
        return ("split", node, node.span)

    def split_entry(self, c):
        changes: dict[str, Any] = {}
        items = self.body(c[2:])   # `request_headers { … }` / `response_headers { … }` of this arm
        for tag, value, span in items:
            if tag in changes:
                self.diags.add("E0105", f"`{tag}` is set twice for split destination `{c[0]}`", span,
                               hint="write all of this destination's changes in one block")
                continue
            changes[tag] = value
        whole = self.span(c[:2]) if not items else Span(self.source, self._start(c[0]), items[-1][2].end)
        return ast.SplitEntry(c[0], self.int_(c[1]), whole, **changes)

    def timeout(self, c):
        value = None if self.types[c[1]] == "NONE" else self.duration(c[1]).value
        return ("timeout", ast.Lit(value, self.tok_span(c[1])), self.span(c))

    def retry(self, c):
        x = c[1]
        if isinstance(x, int):
            x = ast.Lit(None, self.tok_span(x))
        return ("retry", x, self.span(c))

    def fault(self, c):
        return ("fault", ast.Block("fault", self.unique(self.body(c), "the fault block"), self.span(c)), self.span(c))

    def redirect(self, c):
        return ("redirect", ast.Block("redirect", self.unique(self.body(c), "the redirect block"), self.span(c)),
                self.span(c))

    def rewrite(self, c):
        return ("rewrite", ast.Block("rewrite", self.unique(self.body(c), "the rewrite block"), self.span(c)),
                self.span(c))

    def respond(self, c):
        body = self.string(c[2]) if len(c) > 2 else None
        return ("respond", ast.Respond(self.int_(c[1]), body, self.span(c)), self.span(c))

    def mirror(self, c):
        pct = self.percent(c[2]) if len(c) > 2 else None
        return ("mirror", ast.Mirror(c[1], pct, self.span(c)), self.span(c))

    def request_headers(self, c):
        return ("request_headers", c[1], self.span(c))

    def response_headers(self, c):
        return ("response_headers", c[1], self.span(c))

    def cors(self, c: Children) -> tuple[str, ast.Cors, Span]:
        seen: dict[str, Any] = {}
        for key, value, span in self.body(c):
            if key in seen:
                self.diags.add("E0105", f"`{key}` is set twice in the cors block", span,
                               hint="write every value of it in one list")
                continue
            seen[key] = value
        node = ast.Cors(seen.get("origins", ()), seen.get("methods"), seen.get("headers"), seen.get("expose"),
                        seen.get("max_age"), seen.get("credentials"), self.span(c))
        return ("cors", node, node.span)

    def cors_origins(self, c):
        return ("origins", tuple(x for x in self.body(c) if isinstance(x, ast.CorsOrigin)), self.span(c))

    def cors_methods(self, c):
        return ("methods", self.names(c[1]), self.span(c))

    def cors_headers(self, c):
        return ("headers", tuple(c[1]), self.span(c))

    def cors_expose(self, c):
        return ("expose", tuple(c[1]), self.span(c))

    def cors_max_age(self, c):
        return ("max_age", self.duration(c[1]), self.span(c))

    def cors_credentials(self, c):
        return ("credentials", ast.Lit(True, self.span(c)), self.span(c))

    def origin(self, c):
        return ast.CorsOrigin(self.vals[c[0]], self.string(c[1]), self.span(c))

    def header_ops(self, c):
        return ast.HeaderOps(tuple(self.body(c)), self.span(c))

    def hop_set(self, c):
        return ast.HeaderOp("set", self.string(c[1]), self.string(c[2]), self.span(c))

    def hop_add(self, c):
        return ast.HeaderOp("add", self.string(c[1]), self.string(c[2]), self.span(c))

    def hop_remove(self, c):
        return ast.HeaderOp("remove", self.string(c[1]), None, self.span(c))

    # ---- authorization ---------------------------------------------------------------------------
    def authz_decl(self, c):
        default = None
        items = []
        for x in self.body(c):
            if isinstance(x, ast.Lit):
                if default is not None:
                    self.diags.add("E0105", f"`default` is set twice in authorization `{self.vals[c[1]]}`", x.span,
                                   hint="an authorization block has one default")
                else:
                    default = x
            else:
                items.append(x)
        return ast.Authorization(self.name(c[1]), default, tuple(items), self.span(c))

    def authz_default(self, c):
        return ast.Lit(self.vals[c[1]], self.span(c))

    def use_rules(self, c):
        return ast.UseRules(c[1], self.span(c))

    def rule(self, c):
        name = self.name(c[1]) if isinstance(c[1], int) and self.types[c[1]] == "NAME" else None
        return ast.Rule(self.vals[c[0]], name, tuple(self.body(c)), self.span(c))

    def not_path_cond(self, c):
        inner = ast.PathCond(self.vals[c[2]], self.string(c[3]), len(c) > 4, self.span(c[1:]))
        return ast.NotCond(inner, self.span(c))

    def not_method_cond(self, c):
        return ast.NotCond(ast.MethodCond(self.names(c[2]), self.span(c[1:])), self.span(c))

    def from_cond(self, c):
        kind, values, end = c[1]
        return ast.FromCond(kind, values, Span(self.source, self.starts[c[0]], end))

    def from_identity(self, c):
        return ("identity", self.names(c[1]), self._end(c[-1]))

    def from_namespace(self, c):
        return ("namespace", self.names(c[1]), self._end(c[-1]))

    def from_service(self, c):
        return ("service", self.names(c[1]), self._end(c[-1]))

    def from_same_namespace(self, c):
        return ("same_namespace", (), self.ends[c[0]])

    # ---- asserts (docs/testing.md) ---------------------------------------------------------
    def assert_decl(self, c):
        to, conditions = [], []
        for x in self.body(c):
            if isinstance(x, ast.Lit):
                to.append(x)
            elif isinstance(x, tuple):
                conditions.extend(x)
            else:
                conditions.append(x)
        return ast.Assert(self.name(c[1]), tuple(to), tuple(conditions), self.span(c))

    def assert_from(self, c):
        if isinstance(c[1], int):   # `unauthenticated` or `any`
            return ast.FromCond(self.vals[c[1]], (), self.span(c))
        return self.from_cond(c)

    def assert_to(self, c):
        return self.name(c[1])

    def assert_line(self, c):
        """`GET "/path"`: the method and the exact path."""
        method = ast.MethodCond((self.name(c[0]),), self.tok_span(c[0]))
        return (method, ast.PathCond("exact", self.string(c[1]), False, self.span(c)))

    # ---- policies, shared pieces -----------------------------------------------------------------
    def policy_decl(self, c):
        kind, name, body, end = c[1]
        return ast.Policy(kind, name, body, Span(self.source, self.starts[c[0]], end))

    def policy_retry(self, c):
        return ("retry", self.name(c[1]), c[2], c[2].span.end)

    def policy_outlier(self, c):
        return ("outlier", self.name(c[1]), c[2], c[2].span.end)

    def policy_limits(self, c):
        return ("limits", self.name(c[1]), c[2], c[2].span.end)

    def policy_budget(self, c):
        return ("retry_budget", self.name(c[1]), c[2], c[2].span.end)

    def policy_rules(self, c):
        return ("rules", self.name(c[1]), tuple(self.body(c)), self.ends[c[-1]])

    # ---- policy tests ------------------------------------------------------------------------------
    def test_decl(self, c):
        request = None
        expect: list = []
        for x in self.body(c):
            if isinstance(x, ast.TestRequest):
                if request is not None:
                    self.diags.add("E0105", "`request` is written twice in a test", x.span,
                                   hint="a test sends one request; write another test for another one")
                else:
                    request = x
            else:
                expect.extend(x)
        return ast.Test(self.string(c[1]), request, tuple(expect), self.span(c))

    def test_request(self, c):
        caller_kind, caller = "", None
        method = url = None
        headers = []
        for x in self.body(c):
            if isinstance(x, ast.TestHeader):
                headers.append(x)
            elif x[0] == "line":
                if method is not None:
                    self.diags.add("E0105", "the request line is written twice in a test's request", x[3],
                                   hint="a test sends one request")
                else:
                    method, url = x[1], x[2]
            elif caller_kind:
                self.diags.add("E0105", "`from` is written twice in a test's request", x[2],
                               hint="a request has one caller")
            else:
                caller_kind, caller = x[0], x[1]
        return ast.TestRequest(caller_kind, caller, method, url, tuple(headers), self.span(c))

    def req_from_service(self, c):
        return ("service", self.name(c[2]), self.span(c))

    def req_from_identity(self, c):
        return ("identity", self.string(c[2]), self.span(c))

    def req_from_unauthenticated(self, c):
        return ("unauthenticated", None, self.span(c))

    def req_line(self, c):
        return ("line", self.name(c[0]), self.string(c[1]), self.span(c))

    def req_header(self, c):
        return ast.TestHeader(self.string(c[1]), self.string(c[2]), self.span(c))

    def test_expect(self, c):
        return self.body(c)

    def ex_status(self, c):
        return ast.Expectation("status", (self.int_(c[1]),), "", self.span(c))

    def ex_route(self, c):
        return ast.Expectation("route", (c[1],), "", self.span(c))

    def ex_to(self, c):
        if isinstance(c[1], ast.Ref):
            return ast.Expectation("to", (c[1],), "", self.span(c))
        return ast.Expectation("to_any", tuple(c[1]), "", self.span(c))

    def ex_path(self, c):
        return ast.Expectation("path", (self.string(c[1]),), "", self.span(c))

    def ex_request_header(self, c):
        name = self.string(c[1])
        if self.types[c[2]] == "STRING":
            return ast.Expectation(self.vals[c[0]], (name, self.string(c[2])), "exact", self.span(c))
        return ast.Expectation(self.vals[c[0]], (name,), self.vals[c[2]], self.span(c))

    ex_response_header = ex_request_header

    def ex_timeout(self, c):
        value = None if self.types[c[1]] == "NONE" else self.duration(c[1]).value
        return ast.Expectation("timeout", (ast.Lit(value, self.tok_span(c[1])),), "", self.span(c))

    def ex_retries(self, c):
        return ast.Expectation("retries", (self.int_(c[1]),), "", self.span(c))

    def ex_mirror(self, c):
        if not isinstance(c[1], ast.Ref):
            return ast.Expectation("mirror", (), "", self.span(c))
        pct = self.percent(c[2]) if len(c) > 2 else None
        return ast.Expectation("mirror", (c[1], pct), "", self.span(c))

    def ex_denied_by(self, c):
        return ast.Expectation(self.vals[c[0]], (c[2],), "", self.span(c))

    ex_allowed_by = ex_denied_by

    def ref_list(self, c):
        refs = [x for x in c if isinstance(x, ast.Ref)] + [x for x in self.body(c) if isinstance(x, ast.Ref)]
        refs.sort(key=lambda r: r.span.start)
        return self._items(c, refs)

    def dotted(self, c):
        toks = [c[0]] + (c[1] if len(c) > 1 else [])
        return ast.Lit("".join(self.vals[x] for x in toks), self.span(c))

    def ref(self, c):
        if len(c) == 1:
            return ast.Ref(None, self.vals[c[0]], self.span(c))
        return ast.Ref(self.vals[c[0]], self.vals[c[2]], self.span(c))

    def string_list(self, c):
        types = self.types
        return self._items(c, [self.string(x) for x in self.body(c) if isinstance(x, int) and types[x] == "STRING"])

    def name_list(self, c):
        types = self.types
        return self._items(c, [self.name(x) for x in self.body(c) if isinstance(x, int) and types[x] == "NAME"])

    def _items(self, c, values) -> Items:
        items = Items(values)
        items.start, items.end = self.starts[c[0]], self.ends[c[-1]]
        return items


def _written(text: str) -> str:
    """A number as written, in backticks; a very long one shortened, with its length."""
    if len(text) <= 40:
        return f"`{text}`"
    return f"`{text[:20]}…` ({len(text)} digits)"


def reducers(builder: Builder, tables) -> list:
    """One callable per rule index; expand1 rules with one child pass it through.

    Repetition helpers (`x*` becomes `__r_star_N: x | __r_star_N x`) get specialised list
    builders: the children list is a fresh slice, so the base case can return it as it is.
    """
    out = []
    for _origin, size, key, expand1 in tables.rules:
        if expand1 and size == 1:
            out.append(_first)
        elif key == "__list":
            recursive = tables.expansions_start_with_self[len(out)]
            if not recursive:
                out.append(_as_list)
            elif size == 2:
                out.append(_append_one)
            else:
                out.append(_extend_rest)
        else:
            out.append(getattr(builder, key))
    return out


def _as_list(children):
    return children


def _append_one(children):
    lst = children[0]
    lst.append(children[1])
    return lst


def _extend_rest(children):
    lst = children[0]
    lst.extend(children[1:])
    return lst


def _first(children):
    return children[0]
