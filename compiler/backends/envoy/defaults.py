"""Envoy 1.40's own defaults for settings the IR carries: the backend writes such a setting only
when the IR's value differs, so that the output says what Envoy would do anyway only once (in
Envoy) and the goldens stay small. Each is Envoy's documented default for the field named."""

from __future__ import annotations

# cluster.circuit_breakers.thresholds (priority DEFAULT): max_connections, max_pending_requests,
# max_requests, max_retries
THRESHOLDS = (1024, 1024, 1024, 3)
# HttpProtocolOptions.common_http_protocol_options.idle_timeout (upstream and downstream): 1 h
IDLE_TIMEOUT_MS = 3_600_000
# HttpConnectionManager.max_request_headers_kb, and the upstream codec's limit on response heads
MAX_HEADERS_BYTES = 60 * 1024
# HttpProtocolOptions.common_http_protocol_options.max_headers_count (a request with more: 431)
MAX_HEADERS_COUNT = 100
# HttpConnectionManager.stream_idle_timeout: 5 min
STREAM_IDLE_TIMEOUT_MS = 300_000
