"""The abstract syntax tree: frozen dataclasses, one per construct, with spans outside equality.

Scalars are wrapped in :class:`Lit` so that every value a diagnostic may point at has a span.
Settings blocks (limits, outlier, retry budget, retry, fault, sidecar) are kept generic as
ordered :class:`Setting` entries; their meaning is given in :mod:`compiler.lower` and compiler/language.
"""

from __future__ import annotations

from dataclasses import field, fields

from compiler.core.nodes import Node, node
from compiler.core.source import Span

_span = field(compare=False, repr=False, default=None)


@node
class Lit(Node):
    """A literal or a name: `value` is decoded (durations in ms, percents as float, strings unescaped)."""

    value: object
    span: Span = _span


@node
class Ref(Node):
    """`name` or `scope.name`: a policy (`std.idempotent`) or a destination (`payments.v1`)."""

    scope: str | None
    name: str
    span: Span = _span

    def __str__(self) -> str:
        return f"{self.scope}.{self.name}" if self.scope else self.name


@node
class Setting(Node):
    """One `key value…` entry of a settings block."""

    key: str
    values: tuple[Lit, ...]
    span: Span = _span


@node
class Block(Node):
    """A settings block such as `limits { connections 200 pending 50 }`."""

    kind: str
    settings: tuple[Setting, ...]
    span: Span = _span

    def get(self, key: str) -> Setting | None:
        for s in self.settings:
            if s.key == key:
                return s
        return None


@node
class Import(Node):
    """Import node."""
    path: Lit
    span: Span = _span


@node
class Mesh(Node):
    """Mesh node."""
    settings: tuple[Setting, ...]
    span: Span = _span


@node
class Subset(Node):
    """Subset node."""
    name: Lit
    endpoints: tuple[Lit, ...] | None
    span: Span = _span


@node
class Service(Node):
    """Service node."""
    name: Lit
    port: Lit | None
    namespace: Lit | None
    identity: Lit | None
    endpoints: tuple[Lit, ...] | None
    subsets: tuple[Subset, ...]
    limits: Block | Ref | None
    outlier: Block | Ref | None
    retry_budget: Block | Ref | None
    sidecar: Block | None
    mtls: Lit | None               # the inbound mTLS mode: strict | permissive | disable
    span: Span = _span


# ---- matches --------------------------------------------------------------------------------

@node
class PathCond(Node):
    """PathCond node."""
    kind: str  # exact | prefix | raw_prefix | regex
    value: Lit
    span: Span = _span


@node
class HeaderCond(Node):
    """HeaderCond node."""
    name: Lit
    test: str  # exact | prefix | suffix | regex | present | absent
    value: Lit | None
    invert: bool = False
    ignore_case: bool = False
    span: Span = _span


@node
class QueryCond(Node):
    """QueryCond node."""
    name: Lit
    test: str  # exact | regex | present
    value: Lit | None
    span: Span = _span


@node
class MethodCond(Node):
    """MethodCond node."""
    methods: tuple[Lit, ...]
    span: Span = _span


Condition = PathCond | HeaderCond | QueryCond | MethodCond


@node
class Match(Node):
    """Match node."""
    conditions: tuple[Condition, ...]
    span: Span = _span


# ---- routes ---------------------------------------------------------------------------------

@node
class SplitEntry(Node):
    """SplitEntry node."""
    target: Ref
    weight: Lit
    span: Span = _span


@node
class Split(Node):
    """Split node."""
    entries: tuple[SplitEntry, ...]
    key_header: Lit | None
    span: Span = _span


@node
class Mirror(Node):
    """Mirror node."""
    target: Ref
    percent: Lit | None
    span: Span = _span


@node
class HeaderOp(Node):
    """HeaderOp node."""
    op: str  # set | add | remove
    name: Lit
    value: Lit | None
    span: Span = _span


@node
class HeaderOps(Node):
    """HeaderOps node."""
    ops: tuple[HeaderOp, ...]
    span: Span = _span


@node
class Route(Node):
    """Route node."""
    name: Lit
    matches: tuple[Match, ...]
    to: Ref | None
    split: Split | None
    timeout: Lit | None           # value None means `timeout none`
    retry: Block | Ref | Lit | None  # Lit(None) means `retry none`
    fault: Block | None
    mirror: Mirror | None
    request_headers: HeaderOps | None
    response_headers: HeaderOps | None
    span: Span = _span


@node
class Routes(Node):
    """Routes node."""
    service: Lit
    routes: tuple[Route, ...]
    span: Span = _span


# ---- authorization --------------------------------------------------------------------------

@node
class FromCond(Node):
    """FromCond node."""
    kind: str  # identity | namespace | service | same_namespace
    values: tuple[Lit, ...]
    span: Span = _span


@node
class Rule(Node):
    """Rule node."""
    action: str  # allow | deny
    name: Lit | None
    conditions: tuple[FromCond | PathCond | MethodCond | HeaderCond, ...]
    span: Span = _span


@node
class UseRules(Node):
    """UseRules node."""
    ref: Ref
    span: Span = _span


@node
class Authorization(Node):
    """Authorization node."""
    service: Lit
    default: Lit | None
    items: tuple[Rule | UseRules, ...]
    span: Span = _span


# ---- named policies and the module --------------------------------------------------------------

@node
class Policy(Node):
    """Policy node."""
    kind: str  # retry | outlier | limits | retry_budget | rules
    name: Lit
    body: Block | tuple[Rule, ...]
    span: Span = _span


Item = Import | Mesh | Service | Routes | Authorization | Policy


@node
class Module(Node):
    """Module node."""
    path: str
    items: tuple[Item, ...]
    span: Span = _span
    # Items that did not parse, as (kind, name) when their head was readable: later passes stay
    # quiet about references to them rather than cascading one syntax error into many.
    broken: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)


def to_data(value: object) -> object:
    """JSON-ready data of an AST (`meshc compile --emit ast`): each node as an object with its
    class (`node`), where it starts (`at`, FILE:LINE:COL) and its fields; a literal as its value."""
    if isinstance(value, Lit):
        return value.value
    if isinstance(value, Node):
        out: dict[str, object] = {"node": type(value).__name__}
        span = getattr(value, "span", None)
        if span is not None:
            out["at"] = span.location()
        for f in fields(value):  # type: ignore[arg-type]
            if f.compare:
                out[f.name] = to_data(getattr(value, f.name))
        return out
    if isinstance(value, (tuple, list)):
        return [to_data(v) for v in value]
    return value
