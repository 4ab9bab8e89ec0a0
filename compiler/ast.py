"""The abstract syntax tree: frozen dataclasses, one per construct, with spans outside equality.

Scalars are wrapped in :class:`Lit` so that every value a diagnostic may point at has a span.
Settings blocks (limits, outlier, retry budget, retry, fault, sidecar) are kept generic as
ordered :class:`Setting` entries; their meaning is given in :mod:`compiler.lower`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from compiler.source import Span

_span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True, slots=True)
class Lit:
    """A literal or a name: `value` is decoded (durations in ms, percents as float, strings unescaped)."""

    value: Any
    span: Span = _span


@dataclass(frozen=True, slots=True)
class Ref:
    """`name` or `scope.name`: a policy (`std.idempotent`) or a destination (`payments.v1`)."""

    scope: str | None
    name: str
    span: Span = _span

    def __str__(self) -> str:
        return f"{self.scope}.{self.name}" if self.scope else self.name


@dataclass(frozen=True, slots=True)
class Setting:
    """One `key value…` entry of a settings block."""

    key: str
    values: tuple[Lit, ...]
    span: Span = _span


@dataclass(frozen=True, slots=True)
class Block:
    """A settings block such as `limits { connections 200 pending 50 }`."""

    kind: str
    settings: tuple[Setting, ...]
    span: Span = _span

    def get(self, key: str) -> Setting | None:
        for s in self.settings:
            if s.key == key:
                return s
        return None


@dataclass(frozen=True, slots=True)
class Import:
    path: Lit
    span: Span = _span


@dataclass(frozen=True, slots=True)
class Mesh:
    settings: tuple[Setting, ...]
    span: Span = _span


@dataclass(frozen=True, slots=True)
class Subset:
    name: Lit
    endpoints: tuple[Lit, ...] | None
    span: Span = _span


@dataclass(frozen=True, slots=True)
class Service:
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
    span: Span = _span


# ---- matches --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PathCond:
    kind: str  # exact | prefix | raw_prefix | regex
    value: Lit
    span: Span = _span


@dataclass(frozen=True, slots=True)
class HeaderCond:
    name: Lit
    test: str  # exact | prefix | suffix | regex | present | absent
    value: Lit | None
    invert: bool = False
    ignore_case: bool = False
    span: Span = _span


@dataclass(frozen=True, slots=True)
class QueryCond:
    name: Lit
    test: str  # exact | regex | present
    value: Lit | None
    span: Span = _span


@dataclass(frozen=True, slots=True)
class MethodCond:
    methods: tuple[Lit, ...]
    span: Span = _span


Condition = Union[PathCond, HeaderCond, QueryCond, MethodCond]


@dataclass(frozen=True, slots=True)
class Match:
    conditions: tuple[Condition, ...]
    span: Span = _span


# ---- routes ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SplitEntry:
    target: Ref
    weight: Lit
    span: Span = _span


@dataclass(frozen=True, slots=True)
class Split:
    entries: tuple[SplitEntry, ...]
    key_header: Lit | None
    span: Span = _span


@dataclass(frozen=True, slots=True)
class Mirror:
    target: Ref
    percent: Lit | None
    span: Span = _span


@dataclass(frozen=True, slots=True)
class HeaderOp:
    op: str  # set | add | remove
    name: Lit
    value: Lit | None
    span: Span = _span


@dataclass(frozen=True, slots=True)
class HeaderOps:
    ops: tuple[HeaderOp, ...]
    span: Span = _span


@dataclass(frozen=True, slots=True)
class Route:
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


@dataclass(frozen=True, slots=True)
class Routes:
    service: Lit
    routes: tuple[Route, ...]
    span: Span = _span


# ---- authorization --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FromCond:
    kind: str  # identity | namespace | service | same_namespace
    values: tuple[Lit, ...]
    span: Span = _span


@dataclass(frozen=True, slots=True)
class Rule:
    action: str  # allow | deny
    name: Lit | None
    conditions: tuple[Union[FromCond, PathCond, MethodCond, HeaderCond], ...]
    span: Span = _span


@dataclass(frozen=True, slots=True)
class UseRules:
    ref: Ref
    span: Span = _span


@dataclass(frozen=True, slots=True)
class Authorization:
    service: Lit
    default: Lit | None
    items: tuple[Union[Rule, UseRules], ...]
    span: Span = _span


# ---- named policies and the module --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Policy:
    kind: str  # retry | outlier | limits | retry_budget | rules
    name: Lit
    body: Block | tuple[Rule, ...]
    span: Span = _span


Item = Union[Import, Mesh, Service, Routes, Authorization, Policy]


@dataclass(frozen=True, slots=True)
class Module:
    path: str
    items: tuple[Item, ...]
    span: Span = _span
    # Items that did not parse, as (kind, name) when their head was readable: later passes stay
    # quiet about references to them rather than cascading one syntax error into many.
    broken: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
