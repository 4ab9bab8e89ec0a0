"""The trace decision of one hop (`mesh { tracing { … } }`): what Envoy 1.40's connection manager
and OpenTelemetry tracer do to `x-request-id`, `traceparent` and `tracestate`, measured on the
real Envoy (docs/observability.md, "Tracing"). Only called when the sidecar traces: without a
`tracing` block a request pays nothing here (the `x-request-id` of a request without one is
added by decide/request.py, as Envoy does with tracing off).

Per hop, in Envoy's order:

1. `x-request-id`: the one received, else a new UUIDv4 (decide/request.py draws it).
2. The trace reason (Envoy's `mutateTracingRequestHeader`): none when the id's first 8
   characters are not hex (a corrupt id: not traced, the id left alone). Else the reason the id
   carries at character 14 of a 36-character id (`9` sampled, `a` forced, `b` client); without
   one, `b` when the request has `x-client-trace-id`, else `9` when the id's first 8 hex digits
   modulo 10 000 fall below `sampling` x 100; the id is rewritten with the reason (`4`: none)
   when it is 36 characters long. So one id gives the same decision at every hop.
3. The span (Envoy's OpenTelemetry tracer): with a `traceparent` that does not parse (W3C
   length and hex, trace and parent ids not zero), no span and both trace headers left as they
   are; else a span with a new 64-bit id, in the received trace with the received span as parent
   (the first `traceparent` line), or in a new 128-bit trace. It is sampled when traced, and,
   with a parent, only when the parent is. `traceparent: 00-TRACE-SPAN-0x` and `tracestate`
   (the received one, or empty) replace the received lines.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

# x-request-id's character 14 carries Envoy's trace reason (UUIDRequestIDExtension)
REASON_AT = 14
UUID_LENGTH = 36
SAMPLED, FORCED, CLIENT, NOT_TRACED = "9", "a", "b", "4"
_TRACED = frozenset((SAMPLED, FORCED, CLIENT))
_HEX8 = re.compile(r"[0-9a-fA-F]{8}").match
_TRACEPARENT = re.compile(r"[0-9a-fA-F]{2}-([0-9a-fA-F]{32})-([0-9a-fA-F]{16})-([0-9a-fA-F]{2})").fullmatch
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16

# the request lines a traced hop writes itself (decide/request.py skips them from the received head)
TRACE_HEADERS = frozenset((b"traceparent", b"tracestate"))


class CTracing(NamedTuple):
    """The sidecar's `tracing` (the config's `tracing`): Envoy's `random_sampling` per 10 000."""
    per_10000: int              # `sampling` x 100 (steps of 0.01 %); the export: net/tracing.py


def compile_tracing(data: dict[str, Any] | None) -> CTracing | None:
    if data is None:
        return None
    return CTracing(round(data["sampling_percent"] * 100))


class Span:
    """The span of one hop: ids in lower-case hex; `parent` "" for the root of a trace."""
    __slots__ = ("trace_id", "span_id", "parent", "sampled", "tracestate", "request_id")

    def __init__(self, trace_id: str, span_id: str, parent: str, sampled: bool, tracestate: str,
                 request_id: str) -> None:
        self.trace_id, self.span_id, self.parent = trace_id, span_id, parent
        self.sampled, self.tracestate, self.request_id = sampled, tracestate, request_id

    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def trace_reason(request_id: str, per_10000: int, client: bool) -> tuple[bool, str]:
    """(traced, the x-request-id to forward) for a request whose id is `request_id`; `client`:
    the request has `x-client-trace-id`."""
    if _HEX8(request_id) is None:
        return False, request_id                 # a corrupt id: Envoy leaves it, and does not trace
    if len(request_id) != UUID_LENGTH:           # no room for a reason: decided afresh at each hop
        return client or int(request_id[:8], 16) % 10000 < per_10000, request_id
    reason = request_id[REASON_AT]
    if reason in _TRACED:
        return True, request_id
    if client:
        reason = CLIENT
    elif int(request_id[:8], 16) % 10000 < per_10000:
        reason = SAMPLED
    else:
        reason = NOT_TRACED
    if request_id[REASON_AT] != reason:
        request_id = request_id[:REASON_AT] + reason + request_id[REASON_AT + 1:]
    return reason != NOT_TRACED, request_id


def parse_traceparent(value: str) -> tuple[str, str, bool] | None:
    """(trace id, parent span id, sampled) of a `traceparent` as Envoy parses it, or None when it
    does not parse: exactly 55 characters (a later version's longer header is refused), any
    version (`ff` too) and upper-case hex accepted, where the W3C text says otherwise."""
    m = _TRACEPARENT(value)
    if m is None:
        return None
    trace_id, span_id, flags = m.groups()
    trace_id, span_id = trace_id.lower(), span_id.lower()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def decide_span(headers: dict[str, list[str]], traced: bool, request_id: str, new_ids: int) -> Span | None:
    """The hop's span (None: a `traceparent` that does not parse, which Envoy leaves alone).
    `new_ids` is a uniform 192-bit draw: 128 bits for a new trace id, 64 for the span id."""
    span_id = f"{(new_ids & 0xFFFFFFFFFFFFFFFF) or 1:016x}"
    received = headers.get("traceparent")
    if received is None:
        return Span(f"{(new_ids >> 64) or 1:032x}", span_id, "", traced, "", request_id)
    parent = parse_traceparent(received[0])
    if parent is None:
        return None
    states = headers.get("tracestate")
    return Span(parent[0], span_id, parent[1], traced and parent[2], ",".join(states) if states else "", request_id)
