"""CORS on a chosen route (docs/language.md §13a), as Envoy 1.40's CORS filter decides it.

The filter runs after the route is chosen and before the fault filter: a request without a
route (404) gets nothing. A request whose `Origin` (its lines joined with ",", as Envoy joins an
inline header) is non-empty and allowed by one of the route's origins is a CORS request. An
allowed origin is one a matcher matches, or any origin at all when a matcher matches the text `*`
(Envoy tests each matcher against `*` first: `exact "*"`, a `regex ".*"`). A CORS request with the
method OPTIONS and a non-empty `Access-Control-Request-Method` is a preflight: the proxy answers
200 with an empty body and never forwards it, whatever method or headers it asks for. The
response to any other CORS request (forwarded, or a local reply such as a fault's abort or a
timeout) gets `access-control-allow-origin` (the caller's origin, never `*`),
`access-control-allow-credentials: true` when the policy has credentials, and
`access-control-expose-headers`; Envoy replaces a value the upstream sent for these. `Vary` is
never added. Everything a policy writes is formatted once, when the table is built."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

StrTest = Callable[[str], bool]


class CCors:
    """A route's CORS policy, compiled: the origin tests and the header lines it writes."""
    __slots__ = ("exact", "tests", "any_origin", "preflight_head", "echo_headers", "preflight_tail", "actual_tail",
                 "names", "spec")

    def __init__(self, data: dict[str, Any], fullmatcher: Callable[[str], StrTest]) -> None:
        self.spec = data
        exact: set[str] = set()
        tests: list[StrTest] = []
        any_origin = False
        for o in data["origins"]:
            test, value = o["test"], o["value"]
            if test == "exact":
                exact.add(value)
                any_origin = any_origin or value == "*"
            elif test == "prefix":
                tests.append(_prefix(value))
                any_origin = any_origin or "*".startswith(value)
            else:
                t = fullmatcher(value)
                tests.append(t)
                any_origin = any_origin or t("*")
        self.exact = frozenset(exact)
        self.tests = tuple(tests)
        self.any_origin = any_origin
        credentials = b"access-control-allow-credentials: true\r\n" if data.get("credentials") else b""
        expose = b"access-control-expose-headers: %s\r\n" % ",".join(data["expose"]).encode() \
            if data.get("expose") else b""
        pre = [credentials]
        if data.get("methods"):
            pre.append(b"access-control-allow-methods: %s\r\n" % ",".join(data["methods"]).encode())
        # `headers ["*"]` (exactly): Envoy echoes the preflight's Access-Control-Request-Headers
        # (its lines joined with ","), an empty value when it has none (measured, Envoy 1.40)
        self.echo_headers = data.get("headers") == ["*"]
        if data.get("headers") and not self.echo_headers:
            pre.append(b"access-control-allow-headers: %s\r\n" % ",".join(data["headers"]).encode())
        self.preflight_head = b"".join(pre)
        pre = []
        if data.get("max_age_s") is not None:
            pre.append(b"access-control-max-age: %d\r\n" % data["max_age_s"])
        pre.append(expose)
        self.preflight_tail = b"".join(pre)     # after the allow-headers line, in Envoy's order
        self.actual_tail = credentials + expose
        # the response headers an actual request's answer gets (their old values go)
        self.names = frozenset({b"access-control-allow-origin"}
                               | ({b"access-control-allow-credentials"} if credentials else set())
                               | ({b"access-control-expose-headers"} if expose else set()))

    def allows(self, origin: str) -> bool:
        if self.any_origin or origin in self.exact:
            return True
        return any(t(origin) for t in self.tests)


def _prefix(value: str) -> StrTest:
    return lambda s: s.startswith(value)


def joined(values: Sequence[str] | None) -> str:
    """An inline request header's value as Envoy keeps it: its lines joined with "," (empty ones
    add nothing)."""
    if not values:
        return ""
    if len(values) == 1:
        return values[0]
    return ",".join(v for v in values if v)


def decide(cors: CCors, method: str, headers: dict[str, list[str]]) -> tuple[bool, bytes]:
    """(preflight, header lines) of a request on a route with CORS: `b""` when the request is no
    CORS request; the lines are the preflight's whole answer, or those the response gets."""
    origin = joined(headers.get("origin"))
    if not origin or not cors.allows(origin):
        return False, b""
    line = b"access-control-allow-origin: %s\r\n" % origin.encode("latin-1", "replace")
    if method == "OPTIONS" and joined(headers.get("access-control-request-method")):
        if cors.echo_headers:
            asked = joined(headers.get("access-control-request-headers")).encode("latin-1", "replace")
            return True, b"%s%saccess-control-allow-headers: %s\r\n%s" % (
                line, cors.preflight_head, asked, cors.preflight_tail)
        return True, line + cors.preflight_head + cors.preflight_tail
    return False, line + cors.actual_tail


def explain_decide(cors: CCors, method: str, headers: dict[str, list[str]], explain: Any) -> tuple[bool, bytes]:
    """`decide`, with the step recorded in the explanation (`what` = "cors")."""
    preflight, lines = decide(cors, method, headers)
    origin = joined(headers.get("origin"))
    if not origin:
        outcome, detail = "no origin", "no `Origin`: not a CORS request"
    elif not lines:
        outcome, detail = "origin not allowed", f"`{origin}` matches none of the route's origins: forwarded as it is"
    elif preflight:
        outcome, detail = "preflight", f"`{origin}` allowed: the proxy answers 200"
    else:
        outcome, detail = "actual", f"`{origin}` allowed: the response gets the CORS headers"
    explain.note("cors", outcome, detail, {"origin": origin, "preflight": preflight,
                                           "allowed": bool(lines), "policy": cors.spec})
    return preflight, lines


def merge(lines: list[bytes], cors_lines: bytes) -> tuple[list[bytes], bytes]:
    """A response's header lines (`name: value\\r\\n`, lower-case names) with the CORS values
    set as Envoy's filter sets its inline headers: a line of the same name keeps its place and
    takes the CORS value; the CORS lines of no such line are returned to go last (after the
    router's own lines, before `server`)."""
    tail = []
    out = lines
    for line in cors_lines.split(b"\r\n"):
        if not line:
            continue
        name = line[:line.index(b":") + 1]
        for i, old in enumerate(out):
            if old.startswith(name):
                if out is lines:
                    out = list(lines)
                out[i] = line + b"\r\n"
                break
        else:
            tail.append(line + b"\r\n")
    return out, b"".join(tail)


def merge_text(extra: bytes, cors_lines: bytes) -> bytes:
    """`merge` over a local reply's formatted extra header lines."""
    lines = [x + b"\r\n" for x in extra.split(b"\r\n") if x]
    out, tail = merge(lines, cors_lines)
    return b"".join(out) + tail
