"""Header changes of a route (docs/language.md section 13) and the mirror's Host.

Headers here are a list of (name, value) pairs in wire order, one pair per header line; names are
compared case-insensitively and the names a change writes are lower case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime_proxy.decide.http import HOP_BY_HOP

if TYPE_CHECKING:
    from runtime_proxy.decide.table import CHeaderChanges


def apply_changes(headers: list[tuple[str, str]], changes: CHeaderChanges,
                  inline: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """`headers` after `changes` (a compiled table.CHeaderChanges): first every `remove`, then
    every `set` (all old values of the name go, the one new value is appended), then every `add`
    (one more line each, in written order; for a name in `inline`, one of Envoy's inline headers,
    ",VALUE" appended to the line already there). Returns a new list; the input is not changed."""
    if changes.empty:
        return list(headers)
    touched, sets, adds = changes.touched, changes.set, changes.add
    if touched:
        out = [(n, v) for n, v in headers if n.lower() not in touched]
    else:
        out = list(headers)
    out.extend(sets)
    for n, v in adds:
        if n in inline:
            for i in range(len(out) - 1, -1, -1):
                if out[i][0].lower() == n:
                    if v:     # Envoy appends nothing (no comma either) for an empty value
                        out[i] = (out[i][0], out[i][1] + "," + v if out[i][1] else v)
                    break
            else:
                out.append((n, v))
        else:
            out.append((n, v))
    return out


def strip_hop_by_hop(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`headers` without the hop-by-hop ones and those named in `connection`."""
    named: set[str] = set()
    for n, v in headers:
        if n.lower() == "connection":
            named.update(t.strip().lower() for t in v.split(","))
    drop = HOP_BY_HOP | named
    return [(n, v) for n, v in headers
            if n.lower() not in drop or (n.lower() == "te" and v.strip().lower() == "trailers"
                                         and "te" not in named)]


def shadow_host(host: str) -> str:
    """The Host of a mirrored request: `-shadow` after the host part, before any port
    (`payments:9000` -> `payments-shadow:9000`). As Envoy 1.40 (`shadowAppendedHost`, measured):
    the port starts at the last `:` unless a `]` comes after it (`[::1]:8080` ->
    `[::1]-shadow:8080`, `[::1]` -> `[::1]-shadow`, `a:b:c` -> `a:b-shadow:c`); without one the
    suffix goes at the end."""
    colon = host.rfind(":")
    if colon < 0 or host.rfind("]") > colon:
        return host + "-shadow"
    return f"{host[:colon]}-shadow{host[colon:]}"
