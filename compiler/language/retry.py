"""The retry conditions of the language, in one list: the names a policy writes in `on [...]`,
which are also the IR's names and Envoy's `retry_on` tokens. The checks (E0310), the lowering,
the explanations and, through the IR, both backends read this list; the native proxy's contract
(runtime_proxy/config/model.py) lists the same names, and a test keeps the two equal."""

from __future__ import annotations

# name -> what it retries (docs/language.md §10)
RETRY_CONDITIONS: dict[str, str] = {
    "5xx": "a 5xx response, a reset, a connect failure or a per-try timeout",
    "gateway-error": "a 502, 503 or 504 response, a reset, a connect failure or a per-try timeout",
    "reset": "a connection reset or closed before a response (a connect failure included)",
    "connect-failure": "a connection that could not be made",
    "refused-stream": "an HTTP/2 REFUSED_STREAM (never over HTTP/1.1)",
    "retriable-4xx": "a 409 response",
}

# Conditions that only arise before the upstream saw the request: safe for any method (W0501).
PRE_SEND_CONDITIONS = frozenset({"connect-failure", "refused-stream"})
