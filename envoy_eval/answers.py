"""What Envoy 1.40 does for a route with `redirect`, `direct_response`, or a `RouteAction` that
rewrites (`prefix_rewrite`, `regex_rewrite`, `host_rewrite_literal`), written from Envoy's
RouteEntryImplBase (`newUri`, `processRequestHost`, `rewritePathHeader`) and the measurements of
docs/semantics.md, independently of the native proxy's decide/answer.py."""

from __future__ import annotations

from typing import Any

import re2

REDIRECT_CODES = {"MOVED_PERMANENTLY": 301, "FOUND": 302, "SEE_OTHER": 303, "TEMPORARY_REDIRECT": 307,
                  "PERMANENT_REDIRECT": 308}
_RX: dict[str, Any] = {}


def _unsupported(what: str) -> Exception:
    from envoy_eval.evaluator import Unsupported  # (the evaluator imports this module)

    return Unsupported(what)


def _split(path: str) -> tuple[str, str | None]:
    q = path.find("?")
    return (path, None) if q < 0 else (path[:q], path[q + 1:])


def _matched_prefix(match: dict) -> str | None:
    for key in ("prefix", "path_separated_prefix"):
        if key in match:
            return match[key]
    return None


def _substitute(m: Any, substitution: str) -> str:
    out = []
    i = 0
    while i < len(substitution):
        c = substitution[i]
        if c == "\\" and i + 1 < len(substitution):
            d = substitution[i + 1]
            out.append((m.group(int(d)) or "") if d.isdigit() else d)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def regex_replace_all(pattern: str, substitution: str, text: str) -> str:
    """RE2::GlobalReplace (Envoy's `replaceAll`): matches left to right, no empty match right
    after the previous match (one character is copied past it)."""
    rx = _RX.get(pattern)
    if rx is None:
        rx = _RX[pattern] = re2.compile(pattern)
    pieces: list[str] = []
    pos, last_end, replaced = 0, None, False
    while pos <= len(text):
        m = rx.search(text, pos)
        if m is None:
            break
        s, e = m.start(), m.end()
        pieces.append(text[pos:s])
        if s == e and s == last_end:
            pieces.append(text[pos:pos + 1])
            pos += 1
            continue
        pieces.append(_substitute(m, substitution))
        replaced = True
        pos = last_end = e
    if not replaced:
        return text
    pieces.append(text[pos:])
    return "".join(pieces)


def new_path(config: dict, match: dict, path: str) -> str | None:
    """The `:path` (path and query) after a `prefix_rewrite` or `regex_rewrite` of `config` (a
    RouteAction or a RedirectAction), or None when it has neither or a `regex_rewrite` gives an
    empty path (the path then stays as it came, with no `x-envoy-original-path`)."""
    if config.get("prefix_rewrite") is not None and config["prefix_rewrite"] != "":
        prefix = _matched_prefix(match)
        if prefix is None:
            raise _unsupported(f"prefix_rewrite with the match {sorted(match)}")
        return config["prefix_rewrite"] + path[len(prefix):]
    rr = config.get("regex_rewrite")
    if rr is not None:
        just, query = _split(path)
        out = regex_replace_all(rr["pattern"]["regex"], rr["substitution"], just)
        if not out:     # measured (Envoy 1.40): an empty result is no rewrite, no redirect path
            return None
        return out if query is None else out + "?" + query
    return None


def redirect(action: dict, match: dict, host: str, path: str, headers: list[tuple[str, str]]) -> tuple[int, str]:
    """(status, location) of a `RedirectAction`. The request's scheme is `:scheme`, which the
    connection manager takes from an `x-forwarded-proto` of `http` or `https` (any case, made lower
    case), else the plaintext connection's `http`; the port test reads `x-forwarded-proto` as sent
    (`http` when absent: the connection manager sets it)."""
    protos = [v for n, v in headers if n == "x-forwarded-proto"]
    proto = protos[0] if protos else "http"
    scheme = proto.lower() if proto.lower() in ("http", "https") else "http"
    if action.get("scheme_redirect"):
        scheme = action["scheme_redirect"]
    elif action.get("https_redirect"):
        scheme = "https"
    port = f":{action['port_redirect']}" if action.get("port_redirect") else ""
    if action.get("host_redirect"):
        final_host = action["host_redirect"]
    else:
        final_host = host
        if host:
            end = (host.rfind("]:") + 1 or -1) if host.startswith("[") else host.rfind(":")
            if end >= 0:
                req_port = host[end:]
                drop = bool(port)
                if scheme != proto:
                    drop = drop or (proto.lower() == "https" and req_port == ":443") or (
                        proto.lower() == "http" and req_port == ":80")
                if drop:
                    final_host = host[:end]
    query = _split(path)[1]
    if action.get("path_redirect"):
        if "?" in action["path_redirect"]:
            raise _unsupported("path_redirect with a query")
        final = action["path_redirect"] + ("" if query is None else "?" + query)
    else:
        final = new_path(action, match, path) or path
    if action.get("strip_query"):
        final = _split(final)[0]
    code = REDIRECT_CODES[action.get("response_code", "MOVED_PERMANENTLY")]
    return code, f"{scheme}://{final_host}{port}{final}"
