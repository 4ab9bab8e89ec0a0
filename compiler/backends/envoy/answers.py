"""Redirects, direct responses and rewrites (docs/language.md §8.1-§8.3) as Envoy route fields:
`redirect` (`RedirectAction`) and `direct_response` replace a route's `route` action; a rewrite
adds `prefix_rewrite`, `regex_rewrite` or `host_rewrite_literal` to it."""

from __future__ import annotations

import re

from compiler import ir

# RedirectAction.response_code (an enum; MOVED_PERMANENTLY, 301, is its default)
RESPONSE_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT",
                  308: "PERMANENT_REDIRECT"}
# a pattern that matches the whole path once: RE2's GlobalReplace with it replaces the path
WHOLE_PATH = "^.*$"


def _literal_substitution(text: str) -> str:
    """`text` as an RE2 rewrite string that writes it as it is (a backslash doubled)."""
    return text.replace("\\", "\\\\")


def path_change(p: ir.PathRewrite, redirect: bool) -> dict:
    """The fields of a path change, shared by `RouteAction` and `RedirectAction` (both take
    `prefix_rewrite` and `regex_rewrite`; only a redirect has `path_redirect`). A segment prefix
    replaced by `/` is a `regex_rewrite` that also drops the `/` after the prefix: Envoy's plain
    `prefix_rewrite` would make `/old/x` into `//x` (measured), where the language (and Gateway
    API's ReplacePrefixMatch) says `/x`."""
    if p.kind == "path":
        if redirect:
            return {"path_redirect": p.substitution}
        return {"regex_rewrite": {"pattern": {"regex": WHOLE_PATH},
                                  "substitution": _literal_substitution(p.substitution)}}
    if p.kind == "regex":
        return {"regex_rewrite": {"pattern": {"regex": p.pattern}, "substitution": p.substitution}}
    if p.segment and p.substitution == "/":
        regex = ("(?i)" if p.ignore_case else "") + "^" + re.escape(p.pattern) + "/?"
        return {"regex_rewrite": {"pattern": {"regex": regex}, "substitution": "/"}}
    return {"prefix_rewrite": p.substitution}


def redirect_action(r: ir.Redirect) -> dict:
    """`config.route.v3.RedirectAction`: Envoy builds the Location as the language says
    (docs/language.md §8.1; the rules of the port measured with Envoy 1.40)."""
    out: dict = {}
    if r.scheme:
        out["scheme_redirect"] = r.scheme
    if r.host:
        out["host_redirect"] = r.host
    if r.port:
        out["port_redirect"] = r.port
    if r.path is not None:
        out.update(path_change(r.path, True))
    if r.status != 301:
        out["response_code"] = RESPONSE_CODES[r.status]
    if r.strip_query:
        out["strip_query"] = True
    return out


def direct_response(d: ir.DirectResponse) -> dict:
    """`config.route.v3.DirectResponseAction`: the body inline (at most 4096 bytes: E0336)."""
    out: dict = {"status": d.status}
    if d.body:
        out["body"] = {"inline_string": d.body}
    return out


def answer(r: ir.Route) -> dict | None:
    """The field that replaces the route's `route` action when it answers itself, or None."""
    if r.redirect is not None:
        return {"redirect": redirect_action(r.redirect)}
    if r.direct_response is not None:
        return {"direct_response": direct_response(r.direct_response)}
    return None


def rewrite_fields(rw: ir.Rewrite) -> dict:
    """What a rewrite adds to a `RouteAction` (Envoy then sends `x-envoy-original-path` and
    `x-envoy-original-host` upstream, as the native proxy does)."""
    out: dict = {}
    if rw.path is not None:
        out.update(path_change(rw.path, False))
    if rw.host:
        out["host_rewrite_literal"] = rw.host
    return out
