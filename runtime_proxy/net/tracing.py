"""Span export of a traced sidecar (`mesh { tracing { otlp "…" } }`): each sampled hop's span
(decide/trace.py decides it) is handed, when its request ends, to the OpenTelemetry SDK's batch
processor, whose own thread sends the spans to the collector as OTLP/HTTP JSON
(`opentelemetry-exporter-otlp-json-http`, the `[tracing]` extra), off the event loop.

The SDK is imported only here, and this module only when a config asks for export: a proxy
without `otlp`, or without tracing, never loads it. A config that asks for export on a proxy
without the extra is refused (TracingError) at start-up and on reload.

The spans are Envoy's (docs/observability.md, "Tracing"): one per hop, `ingress` (SERVER) on the
inbound listener and `egress HOST` (CLIENT) on the outbound one, with Envoy's attribute names and
string values (`http.status_code` "200", `upstream_cluster`, `guid:x-request-id`, …).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime_proxy.decide.trace import Span

log = logging.getLogger("runtime_proxy")

FLUSH_INTERVAL_MS = 1000     # spans wait at most this long (Envoy's flush interval, as the bootstraps set it)
# Test-only (docs/observability.md): `MESHC_PROXY_TEST_TRACE_FLUSH_MS=N` (a positive integer) in the
# proxy's environment flushes every N ms instead, so that a test need not wait a second per trace.
TEST_FLUSH = "MESHC_PROXY_TEST_TRACE_FLUSH_MS"
EXPORT_TIMEOUT_S = 1.0       # one request to the collector (Envoy's http_uri timeout)
MAX_QUEUE = 2048             # spans waiting for export; more are dropped (the SDK's default)
SCOPE = "runtime_proxy"


def flush_interval_ms() -> int:
    """FLUSH_INTERVAL_MS, or the test-only MESHC_PROXY_TEST_TRACE_FLUSH_MS when it is a positive integer."""
    value = os.environ.get(TEST_FLUSH, "")
    return int(value) if value.isdigit() and int(value) > 0 else FLUSH_INTERVAL_MS


class TracingError(Exception):
    """Span export that cannot run (the `[tracing]` extra missing); one line."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def otlp_url(host: str, port: int, path: str) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"


class SpanExport:
    """The exporter of one sidecar: `record` costs one ReadableSpan and a queue append."""

    def __init__(self, service: str, url: str) -> None:
        try:
            from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import ReadableSpan
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
            from opentelemetry.trace import SpanContext, SpanKind, TraceFlags, TraceState
        except ImportError as err:
            raise TracingError(f"span export (`tracing {{ otlp … }}`) needs the OpenTelemetry packages: "
                               f"install meshc[tracing] ({err})") from None
        self.key = (service, url)
        self._span = ReadableSpan
        self._context = SpanContext
        self._flags = (TraceFlags(0), TraceFlags(1))
        self._state = TraceState
        self._kinds = (SpanKind.CLIENT, SpanKind.SERVER)
        self._resource = Resource.create({"service.name": service})
        self._scope = InstrumentationScope(SCOPE)
        self.processor = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=url, timeout=EXPORT_TIMEOUT_S),
            max_queue_size=MAX_QUEUE, schedule_delay_millis=flush_interval_ms())

    def record(self, span: Span, inbound: bool, host: str, start_ns: int, attributes: dict[str, Any]) -> None:
        """A sampled hop that ended now (`host`: the request's Host, which names an egress span)."""
        trace_id = int(span.trace_id, 16)
        state = _trace_state(self._state, span.tracestate)
        parent = None
        if span.parent:
            parent = self._context(trace_id, int(span.parent, 16), True, self._flags[1], state)
        context = self._context(trace_id, int(span.span_id, 16), False, self._flags[1], state)
        self.processor.on_end(self._span(
            name="ingress" if inbound else f"egress {host}", context=context, parent=parent, resource=self._resource,
            attributes=attributes, kind=self._kinds[inbound], start_time=start_ns, end_time=time.time_ns(),
            instrumentation_scope=self._scope))

    def close(self) -> None:
        """Send what is queued (bounded by the export timeout), then stop the processor's thread."""
        try:
            self.processor.shutdown()
        except Exception as err:   # a collector that is gone must not stop the proxy's exit
            log.warning("span export: %s", err)


def _trace_state(cls: Any, text: str) -> Any:
    if not text:
        return None
    try:
        return cls.from_header([text])
    except Exception:       # a tracestate the SDK does not accept is forwarded, not exported
        return None


def span_export(service: str, tracing: Any, current: SpanExport | None) -> SpanExport | None:
    """The exporter a config asks for (`tracing` is the config's `tracing` data or None): the
    current one when unchanged, a new one otherwise (the old one is closed by the caller)."""
    if tracing is None or tracing.get("otlp_host") is None:
        return None
    url = otlp_url(tracing["otlp_host"], tracing["otlp_port"], tracing["otlp_path"])
    if current is not None and current.key == (service, url):
        return current
    return SpanExport(service, url)
