"""HTTP/1.1 wire pieces shared by the listeners: status lines, the date line, local replies.

Everything here is precomputed bytes or a small cache, because it runs on every request. Local
replies are the bytes Envoy sends (docs/language.md section 1, ENVOY_NOTES §10): lower-case
header names, `content-length` always, `content-type: text/plain` only with a body, `date` and
`server: envoy`, and no `x-envoy-upstream-service-time`.
"""

from __future__ import annotations

import time

from runtime_proxy.decide.http import reason_phrase

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

SERVER = b"server: envoy\r\n"   # Envoy overwrites the upstream's server header; parity says the same

_STATUS_LINES: dict[int, bytes] = {s: f"HTTP/1.1 {s} {reason_phrase(s)}\r\n".encode() for s in range(100, 600)}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:  # a status outside 100..599 from an upstream
        line = f"HTTP/1.1 {status} Unknown\r\n".encode()
    return line


class _Date:
    """The `date` header line, formatted at most once a second."""
    __slots__ = ("second", "line")

    def __init__(self) -> None:
        self.second = -1
        self.line = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            t = time.gmtime(now)   # the IMF-fixdate of RFC 9110, without locale-dependent names
            self.line = (f"date: {_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
                         f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT\r\n").encode()
        return self.line


DATE = _Date()


def local_reply(status: int, body: bytes = b"", extra: bytes = b"", close: bool = False,
                head_only: bool = False, ctype: bool = True) -> bytes:
    """The bytes of a local reply. `extra` holds already-formatted header lines; `head_only` is
    for HEAD requests (content-length stays, the body goes); without `ctype`, `extra` has the
    content type (or its removal) already."""
    # (a 204 goes without content-length, as from Envoy's codec; a HEAD request's bodiless reply
    # says `transfer-encoding: chunked` instead, as Envoy's local reply drops its length: measured,
    # tests/test_answers.py)
    if status == 204:
        parts = [status_line(status)]
    elif head_only and not body:
        parts = [status_line(status), b"transfer-encoding: chunked\r\n"]
    else:
        parts = [status_line(status), b"content-length: %d\r\n" % len(body)]
    if body and ctype:
        parts.append(b"content-type: text/plain\r\n")
    if extra:
        parts.append(extra)
    parts.append(DATE.get())
    parts.append(SERVER)
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if body and not head_only:
        parts.append(body)
    return b"".join(parts)


