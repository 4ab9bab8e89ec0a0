"""The abstract syntax tree: frozen dataclasses, one per construct, with spans outside equality.

Scalars are wrapped in :class:`Lit` so that every value a diagnostic may point at has a span.
Settings blocks (limits, outlier, retry budget, retry, fault, sidecar) are kept generic as
ordered :class:`Setting` entries; their meaning is given in :mod:`compiler.lower` and compiler/language.
"""

from __future__ import annotations

from dataclasses import field, fields

from compiler.core.nodes import Node, node
from compiler.core.source import Span

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from typing import Any, Generic, TypeVar

    _V = TypeVar("_V", covariant=True)
    # Every node the parser builds has a span; only nodes made by hand (a scalar to render, a
    # shard's stub of a remote service, a test's) go without one.
    _span: Span
else:
    _span = field(compare=False, repr=False, default=None)


if TYPE_CHECKING:
    @node
    class Lit(Node, Generic[_V]):
        """To a type checker a literal is generic in its decoded value: `Lit[str]` for a name or a
        string, `Lit[int]` for a number or a duration, `Lit[float]` for a percentage."""

        value: _V
        span: Span = _span
else:
    @node
    class Lit(Node):
        """A literal or a name: `value` is decoded (durations in ms, percents as float, strings unescaped)."""

        value: object
        span: Span = _span


# The value of a number too large for any setting (above 2**64 - 1, the most JSON tools read): the
# parser reports it (E0302, naming the number as written) and the checks skip it, so one token
# gives one diagnostic and no message names a number that was not written.
TOO_LARGE = 2**64


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
    values: tuple[Lit[Any], ...]  # of the kinds the setting's forms give (compiler/language/settings.py)
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
    path: Lit[str]
    span: Span = _span


@node
class Mesh(Node):
    """Mesh node."""
    settings: tuple[Setting, ...]
    span: Span = _span
    tracing: Block | None = None       # `tracing { … }` (a Block of kind "tracing"), if written


@node
class LabelEntry(Node):
    """One `KEY "VALUE"` of a subset's `labels { … }`: the key as written (a name or a string)."""
    key: Lit[str]
    value: Lit[str]
    span: Span = _span


@node
class Subset(Node):
    """Subset node."""
    name: Lit[str]
    endpoints: tuple[Lit[str], ...] | None
    span: Span = _span
    sidecar: Block | None = None    # a workload with its own sidecar (§5.9): the service's settings overridden
    # `labels { KEY "VALUE" … }`: a label-selected subset (the Kubernetes targets select pods by
    # them); None when not written. Each `labels` block written, in order (E0360 for a second one
    # or one next to `endpoints`)
    labels: tuple[tuple[LabelEntry, ...], ...] | None = None


@node
class Service(Node):
    """Service node."""
    name: Lit[str]
    port: Lit[int] | None
    namespace: Lit[str] | None
    identity: Lit[str] | None
    endpoints: tuple[Lit[str], ...] | None
    subsets: tuple[Subset, ...]
    limits: Block | Ref | None
    outlier: Block | Ref | None
    retry_budget: Block | Ref | None
    sidecar: Block | None
    mtls: Lit[str] | None          # the inbound mTLS mode: strict | permissive | disable
    hosts: tuple[Lit[str], ...] | None = None   # extra Host names: exact, `*.SUFFIX`, `PREFIX.*` or `*`
    span: Span = _span


# ---- matches --------------------------------------------------------------------------------

@node
class PathCond(Node):
    """PathCond node."""
    kind: str  # exact | prefix | raw_prefix | regex
    value: Lit[str]
    ignore_case: bool = False   # ASCII letters compared case-insensitively (E0312 on a regex)
    span: Span = _span


@node
class HeaderCond(Node):
    """HeaderCond node."""
    name: Lit[str]
    test: str  # exact | prefix | suffix | regex | present | absent
    value: Lit[str] | None
    invert: bool = False
    ignore_case: bool = False
    span: Span = _span


@node
class QueryCond(Node):
    """QueryCond node."""
    name: Lit[str]
    test: str  # exact | regex | present
    value: Lit[str] | None
    span: Span = _span


@node
class MethodCond(Node):
    """MethodCond node."""
    methods: tuple[Lit[str], ...]
    span: Span = _span


@node
class CallerCond(Node):
    """CallerCond node: the route applies only in the sidecars of these calling services."""
    callers: tuple[Lit[str], ...]
    span: Span = _span


Condition = PathCond | HeaderCond | QueryCond | MethodCond | CallerCond


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
    weight: Lit[int]
    span: Span = _span
    # this arm's own header changes (applied before the route's, as Envoy's weighted cluster's)
    request_headers: HeaderOps | None = None
    response_headers: HeaderOps | None = None


@node
class Split(Node):
    """Split node."""
    entries: tuple[SplitEntry, ...]
    key_header: Lit[str] | None
    span: Span = _span


@node
class Mirror(Node):
    """Mirror node."""
    target: Ref
    percent: Lit[float] | None
    span: Span = _span


@node
class HeaderOp(Node):
    """HeaderOp node."""
    op: str  # set | add | remove
    name: Lit[str]
    value: Lit[str] | None
    span: Span = _span


@node
class HeaderOps(Node):
    """HeaderOps node."""
    ops: tuple[HeaderOp, ...]
    span: Span = _span


@node
class CorsOrigin(Node):
    """One allowed origin of a `cors` block: `exact`, `prefix` or `regex` (RE2) and its text."""
    test: str  # exact | prefix | regex
    value: Lit[str]
    span: Span = _span


@node
class Cors(Node):
    """A route's `cors` block (docs/language.md §13a); a setting not written is None."""
    origins: tuple[CorsOrigin, ...]
    methods: tuple[Lit[str], ...] | None
    headers: tuple[Lit[str], ...] | None
    expose: tuple[Lit[str], ...] | None
    max_age: Lit[int] | None          # milliseconds as written (whole seconds: E0343)
    credentials: Lit[bool] | None
    span: Span = _span


@node
class Route(Node):
    """Route node."""
    name: Lit[str]
    matches: tuple[Match, ...]
    to: Ref | None
    split: Split | None
    timeout: Lit[int | None] | None  # value None means `timeout none`
    retry: Block | Ref | Lit[None] | None  # Lit(None) means `retry none`
    fault: Block | None
    mirrors: tuple[Mirror, ...]  # one per `mirror` line, in the written order (each drawn as Envoy does: §12)
    request_headers: HeaderOps | None
    response_headers: HeaderOps | None
    span: Span = _span
    redirect: Block | None = None      # `redirect { … }`: the route answers with a redirect
    rewrite: Block | None = None       # `rewrite { … }`: what a forwarded request's path and Host become
    respond: Respond | None = None     # `respond STATUS "BODY"`: the route answers itself
    cors: Cors | None = None


@node
class Respond(Node):
    """A direct response: `respond STATUS "BODY"`."""
    status: Lit[int]
    body: Lit[str] | None
    span: Span = _span


@node
class Routes(Node):
    """Routes node."""
    service: Lit[str]
    routes: tuple[Route, ...]
    span: Span = _span


# ---- authorization --------------------------------------------------------------------------

@node
class FromCond(Node):
    """FromCond node."""
    kind: str  # identity | namespace | service | same_namespace; in an assert also unauthenticated | any
    values: tuple[Lit[str], ...]
    span: Span = _span


@node
class NotCond(Node):
    """`not path ...` / `not method ...` in an authorization rule: the rule matches only a request
    that the condition does not match (Istio's notPaths / notMethods)."""
    cond: PathCond | MethodCond
    span: Span = _span


@node
class Rule(Node):
    """Rule node."""
    action: str  # allow | deny
    name: Lit[str] | None
    conditions: tuple[FromCond | PathCond | MethodCond | HeaderCond | NotCond, ...]
    span: Span = _span


@node
class UseRules(Node):
    """UseRules node."""
    ref: Ref
    span: Span = _span


@node
class Authorization(Node):
    """Authorization node."""
    service: Lit[str]
    default: Lit[str] | None
    items: tuple[Rule | UseRules, ...]
    span: Span = _span


# ---- named policies and the module --------------------------------------------------------------

@node
class Policy(Node):
    """Policy node."""
    kind: str  # retry | outlier | limits | retry_budget | rules
    name: Lit[str]
    body: Block | tuple[Rule, ...]
    span: Span = _span


@node
class Assert(Node):
    """An authorization property `meshc check` proves (docs/testing.md): `never` (no request of
    the pattern is admitted by the destination) or `always` (every one is)."""
    kind: Lit[str]  # never | always
    destinations: tuple[Lit[str], ...]   # the `to` lines (exactly one: E0851)
    conditions: tuple[FromCond | PathCond | MethodCond | HeaderCond, ...]
    span: Span = _span



# ---- policy tests (`meshc test`; the compiled policy ignores them) --------------------------------

@node
class TestHeader(Node):
    """`header NAME VALUE` of a test's request."""
    name: Lit[str]
    value: Lit[str]
    span: Span = _span


@node
class TestRequest(Node):
    """A test's request: who sends it (`from service X`, `from identity "…"`, `from
    unauthenticated`, or nothing written), the method and URL, the headers."""
    caller_kind: str                  # service | identity | unauthenticated | "" (not written)
    caller: Lit[str] | None
    method: Lit[str] | None
    url: Lit[str] | None
    headers: tuple[TestHeader, ...]
    span: Span = _span


@node
class Expectation(Node):
    """One expectation of a test: `kind` and its operands (Lit or Ref) as written.

    status (Lit[int]) | route (Ref) | to (Ref) | to_any (Ref…) | path (Lit[str]) |
    request_header, response_header (name, value; `test` exact | present | absent) |
    timeout (Lit[int | None]) | retries (Lit[int]) | mirror (Ref, Lit[float] | None; none: ()) |
    denied_by, allowed_by (Lit[str]: `SERVICE.RULE` or `SERVICE.default`)"""
    kind: str
    values: tuple[Any, ...]
    test: str = ""
    span: Span = _span


@node
class Test(Node):
    """`test "NAME" { request { … } expect { … } }`."""
    name: Lit[str]
    request: TestRequest | None
    expect: tuple[Expectation, ...]
    span: Span = _span




Item = Import | Mesh | Service | Routes | Authorization | Policy | Assert | Test


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
        for f in fields(value):
            if f.compare:
                out[f.name] = to_data(getattr(value, f.name))
        return out
    if isinstance(value, (tuple, list)):
        return [to_data(v) for v in value]
    return value
