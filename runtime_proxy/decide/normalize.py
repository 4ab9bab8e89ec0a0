"""Request-target normalisation (docs/language.md section 6), exactly as Envoy 1.40 does it with
`normalize_path: true`, `merge_slashes: true` and the sidecar's `path_with_escaped_slashes_action`.

The steps, in Envoy's order (`ConnectionManagerUtility::maybeNormalizePath`):

1. reject (400) a method that is not all upper case, a target that does not start with `/`
   (not origin-form) and a target with a `#`;
2. escaped slashes `%2F` / `%5C` (any case) in the path: `reject` -> 400; `decode` -> `/` and `\\`
   before the steps below run (so they take part in dot-segment removal and merging); `keep` ->
   left alone (and never decoded later: they stay escaped);
3. canonicalise the path as Envoy's snapshot of Chromium's `CanonicalizePath` does: decode escapes
   of unreserved characters, remove `.` and `..` segments (`%2e` counts as a dot), turn `\\` into
   `/`, percent-encode `" < > ^ ` { | }`, controls, space, DEL and bytes >= 0x80, keep other escapes
   as written, turn a stray `%` that would start an escape after decoding into `%25`
   (`%%30%30` -> `%2500`), and reject `%00`. Before that, one measured step (ENVOY_NOTES, "Path
   normalization"; equivalence model layer): a literal `.` or `..` segment right after a literal
   `/` loses its `;params`, up to the next `/` (`/..;/admin` -> `/../admin` -> `/admin`,
   `/a/..;x\\b/c` -> `/c`); encoded dots, or dots after a `\\`, keep them (`/a/%2e%2e;/b` ->
   `/a/..;/b`, `/a\\..;x/b` -> `/a/..;x/b`);
4. merge runs of slashes; a path made only of slashes becomes `//` (Envoy's `mergeSlashes`).

The query string is never changed. Hot path: a path without `%`, `\\`, `/.`, `//` or a character
to encode needs none of steps 2-4 and is returned as it is.
"""

from __future__ import annotations

import re
from typing import Any

BAD_REQUEST = 400

# A character that makes steps 2-4 do work (besides `/.` and `//`, tested with `in`: an
# alternation would make the regex several times slower).
_NEEDS_WORK = re.compile(r'[%\\\x00-\x20"<>^`{|}\x7f-\U0010ffff]')
_CACHE_SIZE = 4096          # recent targets per escaped_slashes setting; cleared when full
_CACHES: dict[str, dict[str, tuple[str, str] | int]] = {"reject": {}, "decode": {}, "keep": {}}
_ESCAPED_SLASH = re.compile(r"%(?:2[fF]|5[cC])")
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})

# ---- the character table of Envoy's chromium_url snapshot (url_canon_path.cc) ----------------
_SPECIAL, _ESCAPE_BIT, _UNESCAPE, _INVALID_BIT = 1, 2, 4, 8
_ESCAPE = _ESCAPE_BIT | _SPECIAL
_INVALID = _INVALID_BIT | _SPECIAL


def _flags() -> bytes:
    table = [0] * 256                              # PASS
    table[0] = _INVALID
    for c in range(1, 0x20):
        table[c] = _ESCAPE
    for ch in ' "#%<>?\\^`{|}':
        table[ord(ch)] = _ESCAPE
    table[ord(".")] = _SPECIAL
    for ch in "-_~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
        table[ord(ch)] = _UNESCAPE
    for c in range(0x7F, 0x100):
        table[c] = _ESCAPE
    return bytes(table)


_FLAGS = _flags()
_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_SLASH, _BACKSLASH, _DOT, _PERCENT, _SEMI = 0x2F, 0x5C, 0x2E, 0x25, 0x3B
_UPPER_HEX = b"0123456789ABCDEF"


def _is_dot(s: bytes, i: int, end: int) -> int:
    """Length of a dot at `i`: 1 for `.`, 3 for `%2e`/`%2E`, 0 for no dot (Chromium's IsDot)."""
    c = s[i]
    if c == _DOT:
        return 1
    if c == _PERCENT and i + 3 <= end and s[i + 1] == 0x32 and s[i + 2] in (0x65, 0x45):
        return 3
    return 0


def _decode_escaped(s: bytes | bytearray, i: int, end: int) -> int:
    """The byte value of the escape `%XX` at `i`, or -1 (Chromium's DecodeEscaped)."""
    if i + 3 > end:
        return -1
    hi = _HEX.get(s[i + 1])
    lo = _HEX.get(s[i + 2])
    if hi is None or lo is None:
        return -1
    return hi * 16 + lo


# A literal `.` or `..` segment (after a literal `/`) with `;params`: Envoy drops the params, up
# to the next `/` (a `\\` does not end them), before it canonicalises the path (measured with
# Envoy 1.40: `/a/..;x\\b/c` -> `/c`, `/a\\..;x/b` -> `/a/..;x/b`, `/.;%00/x` -> `/x`).
_DOT_PARAMS = re.compile(r"(?<=/)(\.\.?);[^/]*")


def strip_dot_params(path: str) -> str:
    """`path` with the `;params` of its literal dot segments removed (`/..;x/admin` ->
    `/../admin`)."""
    if ";" not in path:
        return path
    return _DOT_PARAMS.sub(r"\1", path)


# dispositions of a dot preceded by a slash
_NOT_A_DIRECTORY, _DIRECTORY_CUR, _DIRECTORY_UP = 0, 1, 2


def _classify_after_dot(s: bytes, after: int, end: int) -> tuple[int, int]:
    """(disposition, input consumed after the first dot): Chromium's ClassifyAfterDot."""
    if after == end:
        return _DIRECTORY_CUR, 0
    c = s[after]
    if c == _SLASH or c == _BACKSLASH:  # noqa: SIM109 - `in (_SLASH, _BACKSLASH)` builds a tuple a call
        return _DIRECTORY_CUR, 1
    second = _is_dot(s, after, end)
    if second:
        after2 = after + second
        if after2 == end:
            return _DIRECTORY_UP, second
        c2 = s[after2]
        if c2 == _SLASH or c2 == _BACKSLASH:  # noqa: SIM109 - as above
            return _DIRECTORY_UP, second + 1
    return _NOT_A_DIRECTORY, 0


def _back_up_to_previous_slash(out: bytearray) -> None:
    """Drop the last segment of `out` (which ends with a slash), never going above the root."""
    i = len(out) - 1
    if i == 0:
        return
    i -= 1
    while out[i] != _SLASH and i > 0:
        i -= 1
    del out[i + 1:]


def _append_escaped(out: bytearray, c: int) -> None:
    out.append(_PERCENT)
    out.append(_UPPER_HEX[c >> 4])
    out.append(_UPPER_HEX[c & 15])


def _check_nested_escapes(s: bytes, next_i: int, end: int, last_invalid: int, out: bytearray) -> None:
    """Chromium's CheckForNestedEscapes: a stray `%` that decoding turned into the start of a valid
    escape becomes `%25`, so that the output cannot be decoded into something else later."""
    length = len(out)
    last_unescaped = out[length - 1]
    append_next = last_invalid == length - 2
    if append_next:
        if next_i == end or s[next_i] >= 0x80:
            return
        out.append(s[next_i])
    if _decode_escaped(out, last_invalid, len(out)) >= 0:
        if not append_next:
            out.append(out[last_invalid + 1])
        out[last_invalid + 1] = 0x32          # '2'
        out[last_invalid + 2] = 0x35          # '5'
        out.append(last_unescaped)
    elif append_next:
        del out[length:]


def canonicalize(path: bytes) -> bytes | None:
    """Envoy's `PathUtil::canonicalPath` on a path that starts with `/` (no query): the canonical
    path, or None when it is invalid (`%00` or a NUL)."""
    out = bytearray()
    end = len(path)
    last_invalid = -(1 << 30)
    ok = True
    i = 0
    while i < end:
        c = path[i]
        flags = _FLAGS[c]
        if flags & _SPECIAL:
            dotlen = _is_dot(path, i, end)
            if dotlen:
                if out and out[-1] == _SLASH:
                    disposition, consumed = _classify_after_dot(path, i + dotlen, end)
                    if disposition == _NOT_A_DIRECTORY:
                        out.append(_DOT)
                        i += dotlen - 1
                    elif disposition == _DIRECTORY_CUR:
                        i += dotlen + consumed - 1
                    else:
                        _back_up_to_previous_slash(out)
                        if last_invalid >= len(out):   # the stray `%` went with the segment
                            last_invalid = -(1 << 30)
                        i += dotlen + consumed - 1
                else:
                    out.append(_DOT)
                    i += dotlen - 1
            elif c == _BACKSLASH:
                out.append(_SLASH)
            elif c == _PERCENT:
                value = _decode_escaped(path, i, end)
                if value >= 0:
                    i += 2
                    vflags = _FLAGS[value]
                    if vflags & _UNESCAPE:
                        out.append(value)
                        if last_invalid >= len(out) - 3:
                            _check_nested_escapes(path, i + 1, end, last_invalid, out)
                    else:
                        out.append(_PERCENT)
                        out.append(path[i - 1])
                        out.append(path[i])
                        if vflags & _INVALID_BIT:
                            ok = False
                else:
                    last_invalid = len(out)
                    out.append(_PERCENT)
            elif flags & _INVALID_BIT:
                _append_escaped(out, c)
                ok = False
            elif flags & _ESCAPE_BIT:
                _append_escaped(out, c)
        else:
            out.append(c)
        i += 1
    return bytes(out) if ok else None


def merge_slashes(path: str) -> str:
    """Envoy's `PathUtil::mergeSlashes`: runs of slashes become one, keeping a leading and a
    trailing slash (so a path made only of slashes becomes `//`)."""
    if "//" not in path:
        return path
    middle = "/".join(p for p in path.split("/") if p)
    return ("/" if path.startswith("/") else "") + middle + ("/" if path.endswith("/") else "")


def _to_bytes(path: str) -> bytes:
    try:
        return path.encode("latin-1")              # the I/O layer decodes the target as latin-1
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape")


def normalize_path(path: str, escaped_slashes: str) -> str | int:
    """Steps 2-4 on a path (no query) that starts with `/`: the normalised path or 400."""
    if "%" in path and _ESCAPED_SLASH.search(path) is not None:
        if escaped_slashes == "reject":
            return BAD_REQUEST
        if escaped_slashes == "decode":
            path = _ESCAPED_SLASH.sub(_unescape_slash, path)
    if "/." in path:
        path = strip_dot_params(path)
    if "/." not in path and "//" not in path and _NEEDS_WORK.search(path) is None:
        return path
    canonical = canonicalize(_to_bytes(path))
    if canonical is None:
        return BAD_REQUEST
    return merge_slashes(canonical.decode("ascii"))


def _unescape_slash(m: re.Match[str]) -> str:
    return "/" if m.group(0)[1] == "2" else "\\"


def normalize(method: str, target: str, escaped_slashes: str) -> tuple[str, str] | int:
    """`(path, query)` of a request, or 400. `query` is the raw query string without `?` ("" when
    there is none); `path` is what routing, authorization and the upstream see. Results are
    cached per target (the same paths come again and again)."""
    if method not in _KNOWN_METHODS and (not method or method.upper() != method):
        return BAD_REQUEST
    cache = _CACHES.get(escaped_slashes)
    if cache is None:
        return _normalize_target(target, escaped_slashes)
    result = cache.get(target)
    if result is None:
        result = _normalize_target(target, escaped_slashes)
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[target] = result
    return result


def _normalize_target(target: str, escaped_slashes: str) -> tuple[str, str] | int:
    if not target or target[0] != "/" or "#" in target:
        return BAD_REQUEST
    q = target.find("?")
    if q < 0:
        path, query = target, ""
    else:
        path, query = target[:q], target[q + 1:]
    if "/." not in path and "//" not in path and _NEEDS_WORK.search(path) is None:   # the common case
        return path, query
    result = normalize_path(path, escaped_slashes)
    if isinstance(result, int):
        return result
    return result, query


# ---- explanation (runtime_proxy/decide/explain.py): never on the request path without the hook -----

_DOT_SEGMENT = re.compile(r"[/\\](?:\.|%2[eE]){1,2}(?=[/\\]|$)")


def explain_normalize(method: str, target: str, escaped_slashes: str, result: tuple[str, str] | int,
                      explain: Any) -> None:
    """One `normalize` step for `result`, the answer `normalize` gave: the path routing sees and
    each of the steps above that changed it (replayed with the same functions), or why the
    target is refused."""
    path = target.partition("?")[0]
    if isinstance(result, int):
        if method not in _KNOWN_METHODS and (not method or method.upper() != method):
            why = f"method `{method}` is not upper case"
        elif not target or target[0] != "/":
            why = "the target does not start with `/`"
        elif "#" in target:
            why = "the target has a `#`"
        elif escaped_slashes == "reject" and _ESCAPED_SLASH.search(path) is not None:
            why = "an escaped slash (`%2F` or `%5C`) with `escaped_slashes reject`"
        else:
            why = "an encoded NUL (`%00`) in the path"
        explain.note("normalize", "rejected", f"`{target}`: {why}: {result}",
                     {"target": target, "status": result, "why": why})
        return
    steps: list[dict[str, str]] = []

    def step(what: str, before: str, after: str) -> str:
        if after != before:
            steps.append({"step": what, "from": before, "to": after})
        return after

    p = path
    if "%" in p and _ESCAPED_SLASH.search(p) is not None:
        if escaped_slashes == "decode":
            p = step("escaped slashes decoded (`escaped_slashes decode`)", p, _ESCAPED_SLASH.sub(_unescape_slash, p))
        else:
            steps.append({"step": "escaped slashes kept as written (`escaped_slashes keep`)", "from": p, "to": p})
    if "/." in p:
        p = step("the `;params` of a `.` or `..` segment dropped", p, strip_dot_params(p))
    if "/." in p or "//" in p or _NEEDS_WORK.search(p) is not None:
        canonical = canonicalize(_to_bytes(p))
        if canonical is not None:
            reasons = []
            if "\\" in p:
                reasons.append("`\\` read as `/`")
            if _DOT_SEGMENT.search(p) is not None:
                reasons.append("`.` and `..` segments removed")
            b = _to_bytes(p)
            if any(c == _PERCENT and _FLAGS[v] & _UNESCAPE for i, c in enumerate(b)
                   for v in (_decode_escaped(b, i, len(b)),) if v >= 0):
                reasons.append("escapes of unreserved characters decoded")
            if any(_FLAGS[c] & _ESCAPE_BIT and c not in (_PERCENT, _BACKSLASH) for c in b):
                reasons.append("characters that may not appear in a path escaped")
            p = step("canonicalised: " + (", ".join(reasons) or "escapes rewritten"), p,
                     canonical.decode("ascii"))
            p = step("runs of slashes merged", p, merge_slashes(p))
    final, query = result
    changed = [s["step"] for s in steps if s["from"] != s["to"]]
    detail = f"`{final}`" + (", as received" if final == path else f" from `{path}`: " + "; ".join(changed))
    if p != final:
        detail += " (the steps shown do not account for the whole change)"
    explain.note("normalize", "path", detail, {"target": target, "received": path, "path": final, "query": query,
                                               "changed": final != path, "steps": steps})
