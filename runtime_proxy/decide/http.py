"""HTTP facts the decisions share: which headers are connection-level, which the router owns,
which Envoy keeps as one value (its inline headers), the bodies of local replies, and how header
values are decoded. Pure data and functions; the bytes on the wire are runtime_proxy/net/wire.py's."""

from __future__ import annotations

from collections.abc import Iterable

# Connection-level headers: never forwarded in either direction. `transfer-encoding` is removed
# because the proxy re-frames every body itself; the names listed in `connection` go as well.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade"})
HOP_BY_HOP_BYTES = frozenset(n.encode() for n in HOP_BY_HOP)

# Router control headers a client may not set (Envoy 1.40 treats every request as external and
# strips them, ENVOY_NOTES §5.1); the proxy sets the ones it uses itself.
STRIPPED_REQUEST = frozenset({
    "x-envoy-retry-on", "x-envoy-retry-grpc-on", "x-envoy-max-retries", "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms", "x-envoy-expected-rq-timeout-ms", "x-envoy-internal",
    "x-envoy-attempt-count", "x-envoy-hedge-on-per-try-timeout", "x-envoy-upstream-alt-stat-name",
    "x-envoy-decorator-operation", "x-envoy-downstream-service-cluster", "x-envoy-downstream-service-node",
    "x-envoy-original-path", "x-envoy-force-trace", "x-envoy-is-timeout-retry",
})

# Envoy's inline headers (measured on 1.40 by the equivalence suite): its header map keeps one
# value for these, so repeated lines are joined with "," as they are received, and a route's
# `add` appends ",VALUE" to the value already there instead of adding a line.
REQUEST_INLINE = frozenset({
    "accept", "accept-encoding", "access-control-request-headers", "access-control-request-method",
    "authorization", "cache-control", "content-encoding", "content-type", "expect", "grpc-accept-encoding",
    "grpc-timeout", "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
    "origin", "pragma", "proxy-status", "referer", "user-agent", "via", "x-client-trace-id",
    "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-request-id",
})
RESPONSE_INLINE = frozenset({
    "access-control-allow-credentials", "access-control-allow-headers", "access-control-allow-methods",
    "access-control-allow-origin", "access-control-expose-headers", "access-control-max-age", "age",
    "cache-control", "content-encoding", "content-type", "etag", "expires", "grpc-message", "grpc-status",
    "last-modified", "location", "proxy-status", "vary", "via", "x-request-id",
})
# Response headers a route's changes cannot leave in place: Envoy writes `server` itself and
# drops connection-level ones.
RESPONSE_NOT_SETTABLE = frozenset({"server", "connection", "keep-alive", "proxy-connection",
                                   "transfer-encoding", "upgrade"})

# What a proxied response loses besides the hop-by-hop headers: the proxy sets these itself.
RESPONSE_OVERWRITTEN = frozenset({b"server", b"x-envoy-upstream-service-time", b"x-envoy-attempt-count",
                                  b"x-envoy-overloaded"})

# Response header names never copied to the client as they came.
RESPONSE_SKIP = frozenset(HOP_BY_HOP_BYTES | RESPONSE_OVERWRITTEN)

BODY_TIMEOUT = b"upstream request timeout"
BODY_STREAM_IDLE = b"stream timeout"      # the stream idle timeout
BODY_RBAC = b"RBAC: access denied"
# Envoy's response code details of an authorization denial, the deciding rule and `]` after it
# (the access log's `response_code_details`; `meshc stat` counts denials by rule with it)
RBAC_DENIED_DETAILS = "rbac_access_denied_matched_policy["
BODY_FAULT = b"fault filter abort"
BODY_OVERFLOW = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"


def reset_body(reason: str, retried: bool) -> bytes:
    """The 503 body when no response came: `reason` is Envoy's reset reason (`remote connection
    failure`, `connection termination`, `connection timeout`, `protocol error`)."""
    if retried:
        return ("upstream connect error or disconnect/reset before headers. retried and the latest "
                f"reset reason: {reason}").encode()
    return f"upstream connect error or disconnect/reset before headers. reset reason: {reason}".encode()


# The reason phrases of Python 3.11's http.HTTPStatus, written out: importing the enum costs every
# serving proxy 0.28 MB of RSS (tests/test_proxy_memory.py holds the two equal).
_PHRASES = {
    100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints", 200: "OK",
    201: "Created", 202: "Accepted", 203: "Non-Authoritative Information", 204: "No Content",
    205: "Reset Content", 206: "Partial Content", 207: "Multi-Status", 208: "Already Reported", 226: "IM Used",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    305: "Use Proxy", 307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 409: "Conflict", 410: "Gone", 411: "Length Required", 412: "Precondition Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Requested Range Not Satisfiable", 417: "Expectation Failed", 418: "I'm a Teapot",
    421: "Misdirected Request", 422: "Unprocessable Entity", 423: "Locked", 424: "Failed Dependency",
    425: "Too Early", 426: "Upgrade Required", 428: "Precondition Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
    505: "HTTP Version Not Supported", 506: "Variant Also Negotiates", 507: "Insufficient Storage",
    508: "Loop Detected", 510: "Not Extended", 511: "Network Authentication Required"
}


def reason_phrase(status: int) -> str:
    """The reason phrase of a status (`Bad Request`), or `Unknown`."""
    return _PHRASES.get(status, "Unknown")


# Lower-case str names of raw header names, shared by every request (a bounded cache: names are
# few, and an attacker sending random names only fills it up to the cap).
_NAMES: dict[bytes, str] = {}


def header_name(raw: bytes) -> str:
    name = _NAMES.get(raw)
    if name is None:
        name = raw.decode("latin-1").lower()
        if len(_NAMES) < 4096:
            _NAMES[raw] = name
    return name


def decode_value(raw: bytes) -> str:
    """Header values as str: UTF-8 where valid (so that policy values written in Unicode match),
    any other byte kept through surrogateescape, so that encode_value gives the same bytes back."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape")


def encode_value(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def connection_tokens(values: Iterable[str]) -> set[str]:
    """The header names a `connection` header lists (lower case), plus `close` / `keep-alive`."""
    tokens: set[str] = set()
    for value in values:
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens
