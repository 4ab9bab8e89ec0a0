"""Redirects, direct responses and rewrites (docs/language.md §8.1-§8.3), compiled once per
config (`compile_answers`) and applied by the request decision (decide/request.py) as Envoy 1.40
applies them (measured; docs/semantics.md):

- a redirect's `location` is SCHEME://HOST[:PORT]PATH[?QUERY]: the scheme written, else the
  request's (`x-forwarded-proto` when it is `http` or `https` in any case, lower-cased, else
  `http`); the host written, else the request's Host, whose port is dropped when the redirect
  writes a port, or when the new scheme differs from `x-forwarded-proto` as received and the port
  is that protocol's default (`:80` for http, `:443` for https, compared case-insensitively), as
  Envoy's processRequestHost does; the path changed as written, the query kept (an empty `?` too)
  unless `strip_query`;
- a rewrite changes the request line's path (the query kept) and the Host line, and writes the
  original ones into `x-envoy-original-path` (path and query as normalised) and
  `x-envoy-original-host` (replacing a caller's line of that name where it stands).

Pure functions; the only state is what `compile_answers` builds."""

from __future__ import annotations

from typing import Any

try:  # google-re2: the engine Envoy uses
    import re2 as _re2
except ImportError:  # pragma: no cover - google-re2 is a dependency
    _re2 = None


class CPathRewrite:
    """A compiled path change: `apply(path)` is the new path (without the query); an empty one
    (a regex substitution that gives nothing) means no change at all, as in Envoy 1.40: the path
    and query as they came, and no `x-envoy-original-path`."""
    __slots__ = ("kind", "pattern", "substitution", "segment", "cut", "rx", "rewrite")

    def __init__(self, p: dict[str, Any]) -> None:
        self.kind: str = p["kind"]
        self.pattern: str = p["pattern"]
        self.substitution: str = p["substitution"]
        self.segment: bool = p.get("segment", False)
        self.cut = len(self.pattern)
        self.rx = None
        self.rewrite: list[str | int] = []
        if self.kind == "regex":
            if _re2 is None:  # pragma: no cover
                raise ValueError("google-re2 is not installed")
            options = _re2.Options()
            options.log_errors = False
            self.rx = _re2.compile(self.pattern, options=options)
            self.rewrite = rewrite_parts(self.substitution)

    def apply(self, path: str) -> str:
        kind = self.kind
        if kind == "path":
            return self.substitution
        if kind == "prefix":
            rest = path[self.cut:]
            if self.segment and self.substitution == "/" and rest[:1] == "/":
                rest = rest[1:]    # `/old/x` -> `/x`, not `//x` (Envoy: the regex_rewrite `^/old/?` -> `/`)
            return self.substitution + rest
        return global_replace(self.rx, self.rewrite, path)


def rewrite_parts(text: str) -> list[str | int]:
    """An RE2 rewrite string as literal pieces and group numbers (`\\N`; `\\\\` a backslash)."""
    out: list[str | int] = []
    lit: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt.isdigit():
                if lit:
                    out.append("".join(lit))
                    lit = []
                out.append(int(nxt))
                i += 2
                continue
            lit.append(nxt)
            i += 2
            continue
        lit.append(ch)
        i += 1
    if lit:
        out.append("".join(lit))
    return out


def global_replace(rx: Any, parts: list[str | int], s: str) -> str:
    """RE2::GlobalReplace, which Envoy's regex_rewrite runs: every non-overlapping match from the
    left replaced; an empty match right where the previous match ended is not replaced (one
    character is copied instead), which is where Python's `re.sub` differs (`b*` on `abc`: RE2
    gives `-a-c-`, Python `-a--c-`). Matching continues in the whole string, so `^` holds only at
    its start."""
    out: list[str] = []
    p, n, lastend, count = 0, len(s), -1, 0
    while p <= n:
        m = rx.search(s, p)
        if m is None:
            break
        start, end = m.span()
        if p < start:
            out.append(s[p:start])
        if start == lastend and start == end:
            if p < n:
                out.append(s[p])
            p += 1
            continue
        for part in parts:
            if part.__class__ is int:
                out.append(m.group(part) or "")
            else:
                out.append(part)                  # type: ignore[arg-type]
        p = lastend = end
        count += 1
    if count == 0:
        return s
    if p < n:
        out.append(s[p:])
    return "".join(out)


class CRedirect:
    __slots__ = ("status", "scheme", "host", "port", "path", "strip_query")

    def __init__(self, r: dict[str, Any]) -> None:
        self.status: int = r["status"]
        self.scheme: str = r["scheme"]
        self.host: str = r["host"]
        self.port: str = f":{r['port']}" if r["port"] else ""
        self.path = CPathRewrite(r["path"]) if r.get("path") else None
        self.strip_query: bool = r.get("strip_query", False)


class CDirect:
    __slots__ = ("status", "body")

    def __init__(self, d: dict[str, Any]) -> None:
        self.status: int = d["status"]
        self.body: bytes = d["body"].encode()


class CRewrite:
    __slots__ = ("path", "host")

    def __init__(self, r: dict[str, Any]) -> None:
        self.path = CPathRewrite(r["path"]) if r.get("path") else None
        self.host: str = r.get("host", "")


def _is_http(proto: str) -> bool:
    return proto.lower() == "http"


def _is_https(proto: str) -> bool:
    return proto.lower() == "https"


def request_host(host: str, new_scheme: str, new_port: str, proto: str) -> str:
    """Envoy's processRequestHost: the request's Host, its port dropped when the redirect writes a
    port, or when the scheme changes from the one `x-forwarded-proto` says and the port is that
    one's default."""
    if not host:
        return host
    if host[0] == "[":
        at = host.rfind("]:")
        at = at + 1 if at >= 0 else -1
    else:
        at = host.rfind(":")
    if at >= 0:
        port = host[at:]
        remove = bool(new_port)
        if new_scheme != proto:
            remove = remove or (_is_https(proto) and port == ":443") or (_is_http(proto) and port == ":80")
        if remove:
            return host[:at]
    return host


def location(r: CRedirect, host: str, path: str, query: str, target: str, protos: list[str] | None) -> str:
    """The `location` of a redirect for a request with this Host, normalised path and query (the
    target as received tells an empty `?`), and its `x-forwarded-proto` values (None: none, which
    Envoy's connection manager sets to `http` on a plaintext connection)."""
    proto = protos[0] if protos else "http"
    scheme = r.scheme
    if not scheme:
        low = proto.lower()
        scheme = low if low in ("http", "https") else "http"
    final_host = r.host or request_host(host, scheme, r.port, proto)
    new_path = (r.path.apply(path) if r.path is not None else "") or path   # empty: unchanged
    if not r.strip_query and (query or "?" in target):
        new_path = new_path + "?" + query
    return f"{scheme}://{final_host}{r.port}{new_path}"


def rewritten_head(head: bytes, rw: CRewrite, path: str, query: str, target: str, original: str) -> bytes:
    """The upstream head (request line and header lines, lower-case names) after a rewrite: the
    request line's path changed (the query kept), the Host line replaced, and the original path
    (with its query) and Host in `x-envoy-original-path` and `x-envoy-original-host`, each
    replacing a caller's line of that name or added after the others."""
    lines = head.split(b"\r\n")
    method, _, rest = lines[0].partition(b" ")
    version = rest.rpartition(b" ")[2]
    add: dict[bytes, bytes] = {}
    new = rw.path.apply(path) if rw.path is not None else ""
    if new:     # (an empty result: no rewrite, as Envoy)
        new_target = new + "?" + query if query or "?" in target else new
        lines[0] = b"%s %s %s" % (method, new_target.encode("latin-1"), version)
        add[b"x-envoy-original-path"] = original.encode("latin-1")
    if rw.host:
        for i, line in enumerate(lines):
            if line[:6] == b"host: ":
                add[b"x-envoy-original-host"] = line[6:]
                lines[i] = b"host: " + rw.host.encode("latin-1")
                break
    for i, line in enumerate(lines):
        name = line.partition(b": ")[0]
        if name in add:
            lines[i] = name + b": " + add.pop(name)
    tail = lines.pop() if lines and lines[-1] == b"" else None
    for name in (b"x-envoy-original-host", b"x-envoy-original-path"):
        if name in add:
            lines.append(name + b": " + add[name])
    if tail is not None:
        lines.append(tail)
    return b"\r\n".join(lines)
