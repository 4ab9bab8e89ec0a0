"""Render an AST back to canonical .mesh text: the base of `meshc fmt`.

`parse(render(module)) == module` for every module the parser can build (spans aside), and the
layout is canonical, so rendering is idempotent: `render(parse(render(m))) == render(m)`.

The layout:

- two-space indentation; top-level items are separated by one blank line, except that
  consecutive imports stay together;
- one setting per line inside `mesh`, `service`, `route`, `authorization` and `policy` blocks,
  in a fixed order (the AST does not keep the written order of a service's or a route's
  settings);
- nested blocks stay on one line with two spaces between their entries, as in
  `limits { connections 200  pending 50 }`, `match { path prefix "/api"  method [GET, HEAD] }`
  or `retry { attempts 2  on [5xx, reset]  backoff 25ms max 250ms }`; an empty block is `{ }`;
- an authorization rule stays on one line when it fits in :data:`MAX_WIDTH` columns, else it
  takes one condition per line;
- a list of one name or string is written without brackets (`method GET`) where the grammar
  allows it, every other list with brackets and `, ` between its entries;
- strings are re-escaped: `\\\\`, `\\"`, `\\n`, `\\t`, `\\r`, and other control characters (and the
  Unicode line and paragraph separators) as `\\uXXXX`;
- durations (milliseconds in the AST) are written in the largest unit that is exact: `1500ms`,
  `2s`, `1m`, `1h` (zero is `0s`);
- percentages take the fewest decimals (at most four) that give the same value, never an
  exponent: `10%`, `12.5%`, `0.0001%`.

Comments are not in the AST, so they are not rendered here; compiler/syntax/fmt.py puts them back,
using the node each output :class:`Line` remembers.

There is one function per node type; :func:`render` dispatches on the type of its argument.
Functions for nodes that stand on one line return a string without a newline; functions for
nodes that may span lines return a list of lines, unindented, which their parent indents.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable

from compiler.language.settings import BLOCKS, SETTINGS
from compiler.syntax import ast

INDENT = "  "
SEP = "  "  # between the entries of a block written on one line
MAX_WIDTH = 100  # an authorization rule longer than this takes one condition per line


# ---- scalars ----------------------------------------------------------------------------------

_SIMPLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_char(ch: str) -> str:
    simple = _SIMPLE_ESCAPES.get(ch)
    if simple is not None:
        return simple
    if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
        return f"\\u{ord(ch):04x}"
    return ch


def string(value: str) -> str:
    """A string literal: quoted and escaped so that the parser decodes it back to `value`."""
    if value.isascii() and value.isprintable() and "\\" not in value and '"' not in value:
        return f'"{value}"'
    return '"' + "".join(_escape_char(ch) for ch in value) + '"'


_UNITS = (("h", 3_600_000), ("m", 60_000), ("s", 1000))


def duration(ms: int) -> str:
    """A duration in the largest unit that is exact: `1500ms`, `2s`, `1m`, `1h`; zero is `0s`."""
    ms = int(ms)
    if ms < 0:
        raise ValueError(f"a duration cannot be negative: {ms} ms")
    if ms == 0:
        return "0s"
    for unit, size in _UNITS:
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def percent(value: float) -> str:
    """A percentage with the fewest decimals (at most four) that give back the same float.

    `:g`-like (no trailing zeros, no trailing point) but never in scientific notation. A value
    that no four-decimal number gives (the parser reports those, E0303) is rounded to four
    decimals; an infinite value (a number too large for a float) is written as a number that
    parses to infinity again.
    """
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"not a percentage: {value!r}")
    if math.isinf(value):
        return "1" + "0" * 309 + "%"
    for decimals in range(5):
        text = f"{value:.{decimals}f}"
        if float(text) == value:
            return text + "%"
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text + "%"


def integer(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a non-negative integer: {value!r}")
    return str(value)


def name(lit: ast.Lit) -> str:
    return lit.value


def ref(node: ast.Ref) -> str:
    """`name` or `scope.name`."""
    return f"{node.scope}.{node.name}" if node.scope is not None else node.name


def string_list(lits: tuple[ast.Lit, ...]) -> str:
    """`["a", "b"]`, always with brackets (`endpoints` takes only a list)."""
    return "[" + ", ".join(string(x.value) for x in lits) + "]"


def name_list(lits: tuple[ast.Lit, ...]) -> str:
    return "[" + ", ".join(x.value for x in lits) + "]"


def _name_or_list(lits: tuple[ast.Lit, ...]) -> str:
    return lits[0].value if len(lits) == 1 else name_list(lits)


def _string_or_list(lits: tuple[ast.Lit, ...]) -> str:
    return string(lits[0].value) if len(lits) == 1 else string_list(lits)


# ---- settings blocks --------------------------------------------------------------------------

_SCALARS: dict[str, Callable[[ast.Lit], str]] = {
    "int": lambda lit: integer(lit.value),
    "string": lambda lit: string(lit.value),
    "name": name,
    "duration": lambda lit: duration(lit.value),
    "percent": lambda lit: percent(lit.value),
}
def scalar(kind: str, value) -> str:
    """A decoded value of a kind as the language writes it (`20%`, `10s`, `1024`)."""
    return _SCALARS[kind](ast.Lit(value))


# The values each setting takes, by key (compiler/language/settings.py): a value kind, or
# ("max", kind) for `max VALUE`; a trailing "?" marks an optional value (only ever the last one).
SETTING_FORMS: dict[str, tuple] = {key: setting.forms for key, setting in SETTINGS.items()}
# Which keys each kind of block takes (for a clear error on a hand-built AST).
BLOCK_KEYS: dict[str, tuple[str, ...]] = {kind: block.keys() for kind, block in BLOCKS.items()
                                          if kind not in ("mesh", "tracing")}


def setting(node: ast.Setting) -> str:
    """One `key value…` entry: `connections 200`, `on [5xx, reset]`, `backoff 25ms max 250ms`."""
    if node.key == "on":
        return "on [" + ", ".join(v.value for v in node.values) + "]"
    form = SETTING_FORMS.get(node.key)
    if form is None:
        raise ValueError(f"unknown setting `{node.key}`")
    words = [node.key]
    values = list(node.values)
    for part in form:
        prefix = None
        if isinstance(part, tuple):
            prefix, part = part
        optional = part.endswith("?")
        kind = part.rstrip("?")
        if not values:
            if optional:
                break
            raise ValueError(f"setting `{node.key}` lacks a value")
        if prefix:
            words.append(prefix)
        words.append(_SCALARS[kind](values.pop(0)))
    if values:
        raise ValueError(f"setting `{node.key}` has {len(node.values)} values, more than it takes")
    return " ".join(words)


def block_body(settings: tuple[ast.Setting, ...]) -> str:
    """`{ a 1  b 2 }` on one line, `{ }` when empty."""
    if not settings:
        return "{ }"
    return "{ " + SEP.join(setting(s) for s in settings) + " }"


def block(node: ast.Block) -> str:
    """A settings block on one line, after its keyword: `limits { connections 200  pending 50 }`."""
    keys = BLOCK_KEYS.get(node.kind)
    if keys is None:
        raise ValueError(f"unknown block kind `{node.kind}`")
    for s in node.settings:
        if s.key not in keys:
            raise ValueError(f"`{s.key}` is not a setting of a {node.kind} block")
    return f"{node.kind} {block_body(node.settings)}"


def _block_or_ref(keyword: str, value: ast.Block | ast.Ref) -> str:
    if isinstance(value, ast.Ref):
        return f"{keyword} {ref(value)}"
    if value.kind != keyword:
        raise ValueError(f"a {value.kind} block where a {keyword} block belongs")
    return block(value)


# ---- imports, mesh, services --------------------------------------------------------------------

def import_(node: ast.Import) -> str:
    return f"import {string(node.path.value)}"


class Line(str):
    """A line of output that remembers the AST node it renders (`kind` "line" for a node on one
    line, "open"/"close" for the first and last line of a braced block), so that the formatter
    (compiler/syntax/fmt.py) can put each comment back next to the node it was written beside."""

    __slots__ = ("node", "kind")
    node: object
    kind: str

    def __new__(cls, text: str, node: object = None, kind: str = "line") -> Line:
        line = super().__new__(cls, text)
        line.node, line.kind = node, kind
        return line


def _indent(line: str) -> str:
    if not line:
        return line
    if isinstance(line, Line):
        return Line(INDENT + line, line.node, line.kind)
    return INDENT + line


def _braced(header: str, body: list[str], node=None) -> list[str]:
    """`header {`, the body indented one level, `}`; `header { }` when the body is empty."""
    if not body:
        return [Line(f"{header} {{ }}", node)]
    return [Line(f"{header} {{", node, "open")] + [_indent(line) for line in body] + [Line("}", node, "close")]


def mesh(node: ast.Mesh) -> list[str]:
    body: list[str] = [Line(setting(s), s) for s in node.settings]
    if node.tracing is not None:
        body += _braced("tracing", [Line(setting(s), s) for s in node.tracing.settings], node.tracing)
    return _braced("mesh", body, node)


def subset(node: ast.Subset) -> str:
    parts = []
    if node.endpoints is not None:
        parts.append(f"endpoints {string_list(node.endpoints)}")
    for block in node.labels or ():
        entries = "  ".join(f"{label_key(e.key.value)} {string(e.value.value)}" for e in block)
        parts.append(f"labels {{ {entries} }}" if entries else "labels { }")
    if node.sidecar is not None:   # a workload (§5.9): its own sidecar block, on the subset's line
        parts.append(_block_or_ref("sidecar", node.sidecar))
    return f"subset {name(node.name)} {{ {'  '.join(parts)} }}" if parts else f"subset {name(node.name)} {{ }}"


def label_key(key: str) -> str:
    """A label key as a bare name when the grammar reads it back as one, else a string."""
    return key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key) else string(key)


def service(node: ast.Service) -> list[str]:
    body: list[str] = []
    if node.port is not None:
        body.append(Line(f"port {integer(node.port.value)}", node.port))
    if node.namespace is not None:
        body.append(Line(f"namespace {string(node.namespace.value)}", node.namespace))
    if node.hosts is not None:
        body.append(Line(f"hosts {string_list(node.hosts)}", node.hosts[0] if node.hosts else None))
    if node.identity is not None:
        body.append(Line(f"identity {string(node.identity.value)}", node.identity))
    if node.mtls is not None:
        body.append(Line(f"mtls {name(node.mtls)}", node.mtls))
    if node.endpoints is not None:
        body.append(Line(f"endpoints {string_list(node.endpoints)}", node.endpoints[0] if node.endpoints else None))
    body += [Line(subset(s), s) for s in node.subsets]
    if node.limits is not None:
        body.append(Line(_block_or_ref("limits", node.limits), node.limits))
    if node.outlier is not None:
        body.append(Line(_block_or_ref("outlier", node.outlier), node.outlier))
    if node.retry_budget is not None:
        body.append(Line(_block_or_ref("retry_budget", node.retry_budget), node.retry_budget))
    if node.sidecar is not None:
        if node.sidecar.kind != "sidecar":
            raise ValueError(f"a {node.sidecar.kind} block where the sidecar block belongs")
        body.append(Line(block(node.sidecar), node.sidecar))
    return _braced(f"service {name(node.name)}", body, node)


# ---- conditions ---------------------------------------------------------------------------------

def path_cond(node: ast.PathCond) -> str:
    text = f"path {node.kind} {string(node.value.value)}"
    return text + " ignore_case" if node.ignore_case else text


def header_cond(node: ast.HeaderCond) -> str:
    words = ["not"] if node.invert else []
    words += ["header", string(node.name.value), node.test]
    if node.value is not None:
        words.append(string(node.value.value))
    if node.ignore_case:
        words.append("ignore_case")
    return " ".join(words)


def query_cond(node: ast.QueryCond) -> str:
    words = ["query", string(node.name.value), node.test]
    if node.value is not None:
        words.append(string(node.value.value))
    return " ".join(words)


def method_cond(node: ast.MethodCond) -> str:
    return f"method {_name_or_list(node.methods)}"


def caller_cond(node: ast.CallerCond) -> str:
    return f"caller {_name_or_list(node.callers)}"


def from_cond(node: ast.FromCond) -> str:
    if node.kind == "same_namespace":
        return "from same_namespace"
    if node.kind == "service":
        return f"from service {_name_or_list(node.values)}"
    if node.kind in ("identity", "namespace"):
        return f"from {node.kind} {_string_or_list(node.values)}"
    if node.kind in ("unauthenticated", "any"):   # an assert's callers
        return f"from {node.kind}"
    raise ValueError(f"unknown `from` kind `{node.kind}`")


def not_cond(node: ast.NotCond) -> str:
    return "not " + condition(node.cond)


def condition(node) -> str:
    """Any condition of a match block or an authorization rule."""
    fn = _CONDITIONS.get(type(node))
    if fn is None:
        raise TypeError(f"not a condition: {type(node).__name__}")
    return fn(node)


_CONDITIONS: dict[type, Callable] = {
    ast.PathCond: path_cond, ast.HeaderCond: header_cond, ast.QueryCond: query_cond,
    ast.MethodCond: method_cond, ast.FromCond: from_cond, ast.NotCond: not_cond, ast.CallerCond: caller_cond,
}


def match(node: ast.Match) -> str:
    """`match { … }` with its conditions on one line."""
    if not node.conditions:
        return "match { }"
    return "match { " + SEP.join(condition(c) for c in node.conditions) + " }"


# ---- routes -------------------------------------------------------------------------------------

def split_entry(node: ast.SplitEntry) -> str:
    text = f"{ref(node.target)} {integer(node.weight.value)}"
    if node.request_headers is not None:
        text += f" request_headers {header_ops(node.request_headers)}"
    if node.response_headers is not None:
        text += f" response_headers {header_ops(node.response_headers)}"
    return text


def split(node: ast.Split) -> str:
    entries = "{ " + SEP.join(split_entry(e) for e in node.entries) + " }" if node.entries else "{ }"
    text = f"split {entries}"
    if node.key_header is not None:
        text += f" by header {string(node.key_header.value)}"
    return text


def mirror(node: ast.Mirror) -> str:
    text = f"mirror {ref(node.target)}"
    if node.percent is not None:
        text += f" {percent(node.percent.value)}"
    return text


def cors(node: ast.Cors) -> str:
    """`cors { origins [...]  methods [...]  headers [...]  expose [...]  max_age D  credentials }`."""
    parts = []
    if node.origins:
        parts.append("origins [" + ", ".join(f"{o.test} {string(o.value.value)}" for o in node.origins) + "]")
    if node.methods is not None:
        parts.append(f"methods {name_list(node.methods)}")
    if node.headers is not None:
        parts.append(f"headers {string_list(node.headers)}")
    if node.expose is not None:
        parts.append(f"expose {string_list(node.expose)}")
    if node.max_age is not None:
        parts.append(f"max_age {duration(node.max_age.value)}")
    if node.credentials is not None:
        parts.append("credentials")
    return "cors { " + SEP.join(parts) + " }" if parts else "cors { }"


def header_op(node: ast.HeaderOp) -> str:
    if node.op == "remove":
        return f"remove {string(node.name.value)}"
    if node.op in ("set", "add"):
        if node.value is None:
            raise ValueError(f"header operation `{node.op}` lacks a value")
        return f"{node.op} {string(node.name.value)} {string(node.value.value)}"
    raise ValueError(f"unknown header operation `{node.op}`")


def header_ops(node: ast.HeaderOps) -> str:
    if not node.ops:
        return "{ }"
    return "{ " + SEP.join(header_op(op) for op in node.ops) + " }"


def timeout(lit: ast.Lit) -> str:
    return "timeout none" if lit.value is None else f"timeout {duration(lit.value)}"


def retry(value: ast.Block | ast.Ref | ast.Lit) -> str:
    """`retry none`, `retry std.idempotent` or `retry { … }`."""
    if isinstance(value, ast.Lit):
        if value.value is not None:
            raise ValueError(f"`retry` takes a block, a policy or `none`, not {value.value!r}")
        return "retry none"
    return _block_or_ref("retry", value)


def route(node: ast.Route) -> list[str]:
    body: list[str] = [Line(match(m), m) for m in node.matches]
    if node.to is not None:
        body.append(Line(f"to {ref(node.to)}", node.to))
    if node.split is not None:
        body.append(Line(split(node.split), node.split))
    # where the destination goes: a route that answers itself; a forwarded route's rewrite after it
    for kind in ("redirect", "rewrite"):
        value = getattr(node, kind)
        if value is not None:
            body.append(Line(_block_or_ref(kind, value), value))
    if node.respond is not None:
        body.append(Line(respond(node.respond), node.respond))
    if node.timeout is not None:
        body.append(Line(timeout(node.timeout), node.timeout))
    if node.retry is not None:
        body.append(Line(retry(node.retry), node.retry))
    if node.fault is not None:
        if node.fault.kind != "fault":
            raise ValueError(f"a {node.fault.kind} block where the fault block belongs")
        body.append(Line(block(node.fault), node.fault))
    for m in node.mirrors:
        body.append(Line(mirror(m), m))
    if node.request_headers is not None:
        body.append(Line(f"request_headers {header_ops(node.request_headers)}", node.request_headers))
    if node.response_headers is not None:
        body.append(Line(f"response_headers {header_ops(node.response_headers)}", node.response_headers))
    if node.cors is not None:
        body.append(Line(cors(node.cors), node.cors))
    return _braced(f"route {name(node.name)}", body, node)


def respond(node: ast.Respond) -> str:
    text = f"respond {node.status.value}"
    return text + f" {string(node.body.value)}" if node.body is not None else text


def routes(node: ast.Routes) -> list[str]:
    body: list[str] = []
    for r in node.routes:
        body += route(r)
    return _braced(f"routes {name(node.service)}", body, node)


# ---- authorization ------------------------------------------------------------------------------

def rule(node: ast.Rule, width: int = MAX_WIDTH) -> list[str]:
    """`allow name { cond  cond }` on one line if it fits in `width`, else one condition per line."""
    if node.action not in ("allow", "deny"):
        raise ValueError(f"unknown rule action `{node.action}`")
    header = node.action if node.name is None else f"{node.action} {name(node.name)}"
    conditions = [condition(c) for c in node.conditions]
    if not conditions:
        return [Line(f"{header} {{ }}", node)]
    line = f"{header} {{ " + SEP.join(conditions) + " }"
    if len(line) <= width or len(conditions) == 1:
        return [Line(line, node)]
    return _braced(header, [Line(text, c) for text, c in zip(conditions, node.conditions)], node)


def use_rules(node: ast.UseRules) -> str:
    return f"use {ref(node.ref)}"


def authorization(node: ast.Authorization) -> list[str]:
    body: list[str] = []
    if node.default is not None:
        body.append(Line(f"default {node.default.value}", node.default))
    for item in node.items:
        if isinstance(item, ast.UseRules):
            body.append(Line(use_rules(item), item))
        elif isinstance(item, ast.Rule):
            body += rule(item, MAX_WIDTH - len(INDENT))
        else:
            raise TypeError(f"not an authorization item: {type(item).__name__}")
    return _braced(f"authorization {name(node.service)}", body, node)


# ---- asserts -------------------------------------------------------------------------------------

def assert_(node: ast.Assert) -> list[str]:
    """`assert never { from …  to SERVICE  cond … }` on one line if it fits, else one per line."""
    if node.kind.value not in ("never", "always"):
        raise ValueError(f"unknown assert kind `{node.kind.value}`")
    froms = [c for c in node.conditions if isinstance(c, ast.FromCond)]
    rest = [c for c in node.conditions if not isinstance(c, ast.FromCond)]
    parts = [(condition(c), c) for c in froms] + [(f"to {name(d)}", d) for d in node.destinations] + \
        [(condition(c), c) for c in rest]
    header = f"assert {node.kind.value}"
    line = f"{header} {{ " + SEP.join(text for text, _ in parts) + " }"
    if len(line) <= MAX_WIDTH:
        return [Line(line, node)]
    return _braced(header, [Line(text, c) for text, c in parts], node)


# ---- policies and the module ---------------------------------------------------------------------

def policy(node: ast.Policy) -> list[str]:
    """`policy KIND NAME { … }` with one setting (or rule) per line."""
    header = f"policy {node.kind} {name(node.name)}"
    if node.kind == "rules":
        if not isinstance(node.body, tuple):
            raise ValueError("a rules policy takes a tuple of rules")
        body: list[str] = []
        for r in node.body:
            body += rule(r, MAX_WIDTH - len(INDENT))
        return _braced(header, body, node)
    if not isinstance(node.body, ast.Block) or node.body.kind != node.kind or node.kind not in (
            "retry", "outlier", "limits", "retry_budget"):
        raise ValueError(f"a {node.kind} policy takes a {node.kind} block")
    block(node.body)  # validates the keys
    return _braced(header, [Line(setting(s), s) for s in node.body.settings], node)


# ---- policy tests ---------------------------------------------------------------------------------

def test_request(node: ast.TestRequest) -> list[str]:
    """The entries of a test's request: the caller, the request line, the headers."""
    out = []
    if node.caller_kind == "service" and node.caller is not None:
        out.append(f"from service {name(node.caller)}")
    elif node.caller_kind == "identity" and node.caller is not None:
        out.append(f"from identity {string(node.caller.value)}")
    elif node.caller_kind == "unauthenticated":
        out.append("from unauthenticated")
    if node.method is not None and node.url is not None:
        out.append(f"{name(node.method)} {string(node.url.value)}")
    out += [f"header {string(h.name.value)} {string(h.value.value)}" for h in node.headers]
    return out


def expectation(node: ast.Expectation) -> str:
    kind, values = node.kind, node.values
    if kind in ("status", "retries"):
        return f"{kind} {integer(values[0].value)}"
    if kind == "route":
        return f"route {ref(values[0])}"
    if kind == "to":
        return f"to {ref(values[0])}"
    if kind == "to_any":
        return "to [" + ", ".join(ref(r) for r in values) + "]"
    if kind == "path":
        return f"path {string(values[0].value)}"
    if kind in ("request_header", "response_header"):
        operand = string(values[1].value) if node.test == "exact" else node.test
        return f"{kind} {string(values[0].value)} {operand}"
    if kind == "timeout":
        return "timeout none" if values[0].value is None else f"timeout {duration(values[0].value)}"
    if kind == "mirror":
        if not values:
            return "mirror none"
        pct = f" {percent(values[1].value)}" if values[1] is not None else ""
        return f"mirror {ref(values[0])}{pct}"
    if kind in ("denied_by", "allowed_by"):
        return f"{kind} authorization {values[0].value}"
    raise ValueError(f"unknown expectation `{kind}`")


def _entries(header: str, entries: list[str], nodes: list, node, width: int) -> list[str]:
    """`header { a  b }` on one line if it fits in `width`, else one entry per line."""
    if not entries:
        return [Line(f"{header} {{ }}", node)]
    line = f"{header} {{ " + SEP.join(entries) + " }"
    if len(line) <= width:
        return [Line(line, node)]
    return _braced(header, [Line(text, n) for text, n in zip(entries, nodes)], node)


def test(node: ast.Test) -> list[str]:
    body: list[str] = []
    width = MAX_WIDTH - len(INDENT)
    if node.request is not None:
        entries = test_request(node.request)
        body += _entries("request", entries, [node.request] * len(entries), node.request, width)
    expect = [expectation(e) for e in node.expect]
    body += _entries("expect", expect, list(node.expect), node.expect[0] if node.expect else node, width)
    return _braced(f"test {string(node.name.value)}", body, node)


_ITEMS: dict[type, Callable] = {
    ast.Import: import_, ast.Mesh: mesh, ast.Service: service, ast.Routes: routes,
    ast.Authorization: authorization, ast.Policy: policy, ast.Assert: assert_, ast.Test: test,
}


def item(node: ast.Item) -> list[str]:
    fn = _ITEMS.get(type(node))
    if fn is None:
        raise TypeError(f"not a top-level item: {type(node).__name__}")
    out = fn(node)
    return [Line(out, node)] if isinstance(out, str) else out


def module_lines(node: ast.Module) -> list[str]:
    """The lines of a whole file (each a :class:`Line`, blank separators aside)."""
    lines: list[str] = []
    previous = None
    for it in node.items:
        if previous is not None and not (isinstance(it, ast.Import) and isinstance(previous, ast.Import)) and not (
                isinstance(it, ast.Assert) and isinstance(previous, ast.Assert)):   # imports, asserts: together
            lines.append("")
        lines += item(it)
        previous = it
    return lines


def module(node: ast.Module) -> str:
    """The text of a whole file: items separated by blank lines (imports kept together)."""
    lines = module_lines(node)
    return "\n".join(lines) + "\n" if lines else ""


# ---- dispatch -------------------------------------------------------------------------------------

_RENDER: dict[type, Callable] = {
    ast.Module: module, **_ITEMS, ast.Subset: subset, ast.Block: block, ast.Setting: setting,
    ast.Ref: ref, ast.Match: match, **_CONDITIONS, ast.SplitEntry: split_entry, ast.Split: split,
    ast.Mirror: mirror, ast.Respond: respond, ast.Cors: cors, ast.HeaderOp: header_op, ast.HeaderOps: header_ops,
    ast.Route: route,
    ast.Rule: rule, ast.UseRules: use_rules, ast.Expectation: expectation,
}


def render(node) -> str:
    """Canonical text of any AST node. A module ends with a newline; any other node does not.

    A scalar :class:`ast.Lit` cannot be rendered alone (its syntax depends on where it stands):
    use :func:`string`, :func:`duration`, :func:`percent`, :func:`integer` or :func:`name`.
    """
    fn = _RENDER.get(type(node))
    if fn is None:
        raise TypeError(f"cannot render {type(node).__name__}")
    out = fn(node)
    return out if isinstance(out, str) else "\n".join(out)
