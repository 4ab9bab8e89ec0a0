"""What the sidecar does with an upstream's response head: Envoy's inline headers joined as it
joins them, and the route's response header changes, on a proxied response or on a local reply
after a route was chosen (a fault's abort, a timeout, a reset, an overflow). Pure functions over
header lines; the connection that reads them is runtime_proxy/net/upstream.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime_proxy.decide.headers import apply_changes
from runtime_proxy.decide.http import (
    RESPONSE_INLINE,
    RESPONSE_NOT_SETTABLE,
    connection_tokens,
    decode_value,
    encode_value,
)

if TYPE_CHECKING:
    from runtime_proxy.decide.table import CHeaderChanges, CRoute

RESPONSE_INLINE_BYTES = frozenset(n.encode() for n in RESPONSE_INLINE)
# `connection` values that name no other header to drop
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"Keep-Alive", b"Close"})


def response_lines(route: CRoute | None, lines: list[bytes], special: list[tuple[bytes, bytes]],
                   arm: CHeaderChanges | None = None) -> list[bytes]:
    """The upstream response's header lines as the client gets them: `lines` (formatted by the
    upstream connection, the hop-by-hop ones set apart in `special`) less the headers its
    `connection` header names, after the route's response changes. `lines` itself when nothing
    changes (the common case allocates nothing)."""
    drop = None
    for name, value in special:
        if name == b"connection" and value not in _PLAIN_CONNECTION:
            drop = {t.encode() for t in connection_tokens([value.decode("latin-1")])}
    changes = route.response_headers if route is not None else None
    if arm is not None:     # a split arm's own changes come first, then the route's (as Envoy)
        lines = changed_response_lines(lines, drop, arm)
        drop = None
    if drop or (changes is not None and not changes.empty):
        return changed_response_lines(lines, drop, changes)
    return lines


def add_inline_line(lines: list[bytes], seen: dict[bytes, int] | None, name: bytes, value: bytes) -> dict[bytes, int]:
    """Add the response header line `name: value` for one of Envoy's inline headers to the
    formatted `lines`: Envoy keeps one value of these, so a repeated line is joined to the first
    with "," (appendToHeader: nothing for an empty value, no comma after an empty one). `seen`
    maps the names already in `lines` to their index; returns it."""
    if seen is None:
        seen = {}
    at = seen.get(name)
    if at is None:
        seen[name] = len(lines)
        lines.append(b"%s: %s\r\n" % (name, value))
    elif value:
        old = lines[at][len(name) + 2:-2]
        lines[at] = b"%s: %s\r\n" % (name, old + b"," + value if old else value)
    return seen


def changed_response_lines(lines: list[bytes], drop: set[bytes] | None, changes: CHeaderChanges | None) -> list[bytes]:
    """The upstream's response header lines (`name: value\\r\\n`, lower-case names) less the
    names in `drop` (or None), after the route's response `changes` (a CHeaderChanges or None);
    unchanged values keep their bytes."""
    pairs: list[tuple[str, str]] = []
    for line in lines:
        n, _, v = line[:-2].partition(b": ")
        if drop is None or n not in drop:
            pairs.append((n.decode("latin-1"), decode_value(v)))
    if changes is not None and not changes.empty:
        pairs = [(n, v) for n, v in apply_changes(pairs, changes, RESPONSE_INLINE)
                 if n not in RESPONSE_NOT_SETTABLE]
    return [b"%s: %s\r\n" % (n.encode("latin-1"), encode_value(v)) for n, v in pairs]


def local_reply_changes(body: bytes, extra: bytes, changes: CHeaderChanges,
                        arm: CHeaderChanges | None = None) -> bytes:
    """The header lines of a local reply on a chosen route (a fault's abort, a timeout, a reset,
    an overflow) after the route's response `changes`, content type included, as Envoy does: a
    reply without a body (a redirect, a bodiless `respond`) has no `content-type` at all."""
    pairs: list[tuple[str, str]] = []
    for line in extra.split(b"\r\n"):
        if line:
            n, _, v = line.partition(b": ")
            pairs.append((n.decode("latin-1"), decode_value(v)))
    if arm is not None:     # a split arm's own changes first (as Envoy's weighted cluster's)
        pairs = apply_changes(pairs, arm, RESPONSE_INLINE)
    pairs = apply_changes(pairs, changes, RESPONSE_INLINE)
    if not body:    # Envoy's local reply: no body, no `content-type` (even one the route set)
        pairs = [(n, v) for n, v in pairs if n != "content-type"]
    elif not any(n == "content-type" for n, _ in pairs):
        pairs.insert(0, ("content-type", "text/plain"))   # Envoy types the body unless the route did
    return b"".join(b"%s: %s\r\n" % (n.encode("latin-1"), encode_value(v)) for n, v in pairs
                    if n not in RESPONSE_NOT_SETTABLE and n not in ("date", "content-length"))


