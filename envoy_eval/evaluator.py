"""An evaluator of the emitted Envoy xDS JSON: what Envoy 1.40 decides for one request.

Written from Envoy's documented semantics and the measured facts in ENVOY_NOTES (§2, §3, §5.2,
§5.3, §5.11, §5.12, "Path normalization") and nothing else: it reads only the xDS dicts of a
`Compiled` (the outbound RouteConfiguration, the sidecar's listeners, the clusters) and imports
nothing from `compiler` or `runtime_proxy`, so that it can disagree with both. The slow layer
(real Envoy) keeps it honest; its unit tests in tests/test_equivalence_model.py pin it to the
measured behaviour.

What it models, in Envoy's order:

1. the HTTP/1 codec: header names lower-cased, values trimmed of SP/HTAB, a method that is not
   upper case is a 400;
2. the connection manager's path handling (`maybeNormalizePath`): a `#` or a target that is not
   origin-form is a 400; `path_with_escaped_slashes_action` on `%2F`/`%5C`; `normalize_path`
   (RFC 3986 dot segments, unreserved escapes decoded, unsafe characters escaped, `%00`
   rejected); `merge_slashes`;
3. virtual host by Host (exact, then `*.suffix` and `prefix*` wildcards, longest first, then
   `*`; the port is part of the Host), first route that matches (`prefix` on the whole `:path`,
   `path`, `path_separated_prefix` and `safe_regex` on the path without query, `headers`,
   `query_parameters`), 404 otherwise;
0. on the inbound listener, the connection: the filter chain for a TLS or a plaintext caller
   (`filter_chain_match.transport_protocol`, told by the `tls_inspector` listener filter), its
   transport socket (a `DownstreamTlsContext` refuses a plaintext caller; a plaintext chain
   cannot answer a TLS caller), and the peer's certificate (`principal_name` of an
   `authenticated` RBAC principal against its URI SANs, then its DNS SANs, then its subject;
   `forward_client_cert_details` for the `x-forwarded-client-cert` the application gets). Callers
   are taken to present a certificate of the trusted CA (the suite's callers all do);
4. the HTTP filters of the listener in order: RBAC (DENY/ALLOW, per-route overrides by filter
   name), CORS (only a route with a per-route `CorsPolicy`: `cors_decision`), fault (per-route
   config replaces the filter's), then the router: weighted clusters
   with `header_name` (§3), timeout, retry policy, mirror policies, header mutations (route,
   then virtual host, then route configuration; removals, then overwrites, then appends; values
   are format strings where `%%` is `%`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import re2

from envoy_eval import answers
from envoy_eval.decisions import (
    BODY_FAULT,
    BODY_RBAC,
    REFUSED,
    SAMPLE_RESPONSE,
    Decision,
    canonical_fault,
    canonical_mirror,
    canonical_pick,
    canonical_retry,
    model_der,
    visible_request_headers,
)

FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_PER_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
CORS_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TLS_INSPECTOR_TYPE = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"

# Envoy's router retry_on tokens (docs: x-envoy-retry-on); any other token is silently ignored.
RETRY_TOKENS = frozenset({"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
                          "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
                          "retriable-headers", "http3-post-connect-failure"})
DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}

# Envoy's inline headers (source/common/http/header_map_impl.h INLINE_REQ_HEADERS,
# INLINE_REQ_RESP_HEADERS, INLINE_RESP_HEADERS, plus the custom inline headers its extensions
# register), as measured on 1.40: the header map keeps one entry for each, so a repeated line is
# appended to it with "," and so is an APPEND_IF_EXISTS_OR_ADD option (appendToHeader).
INLINE_REQUEST = frozenset({
    "accept", "accept-encoding", "access-control-request-headers", "access-control-request-method",
    "authorization", "cache-control", "content-encoding", "content-type", "expect", "grpc-accept-encoding",
    "grpc-timeout", "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
    "origin", "pragma", "proxy-status", "referer", "user-agent", "via", "x-client-trace-id",
    "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-request-id",
})
INLINE_RESPONSE = frozenset({
    "access-control-allow-credentials", "access-control-allow-headers", "access-control-allow-methods",
    "access-control-allow-origin", "access-control-expose-headers", "access-control-max-age", "age",
    "cache-control", "content-encoding", "content-type", "etag", "expires", "grpc-message", "grpc-status",
    "last-modified", "location", "proxy-status", "vary", "via", "x-request-id",
})


def append_to_header(value: str, data: str) -> str:
    """HeaderMapImpl::appendToHeader: nothing for empty data, no delimiter after an empty value."""
    if not data:
        return value
    return value + "," + data if value else data


def join_inline(headers: list[tuple[str, str]], inline: frozenset) -> list[tuple[str, str]]:
    """Header lines as Envoy's header map holds them: the repeated lines of an inline header
    appended to its first one."""
    out: list[tuple[str, str]] = []
    first: dict[str, int] = {}
    for n, v in headers:
        if n in inline:
            at = first.get(n)
            if at is not None:
                out[at] = (n, append_to_header(out[at][1], v))
                continue
            first[n] = len(out)
        out.append((n, v))
    return out


class Unsupported(Exception):
    """A config construct this evaluator does not model (so a comparison would mean nothing)."""


# ---- small value helpers ---------------------------------------------------------------------

def duration_ms(text: str | None, default: int) -> int:
    """A proto3 JSON Duration (`1.500s`) in whole milliseconds."""
    if text is None:
        return default
    if not text.endswith("s"):
        raise Unsupported(f"duration {text!r}")
    seconds = float(text[:-1])
    return round(seconds * 1000)


def fraction_percent(fp: dict | None) -> float:
    """A `type.v3.FractionalPercent` as a percentage (0..100); an absent one is 0 %."""
    if fp is None:
        return 0.0
    denominator = DENOMINATORS[fp.get("denominator", "HUNDRED")]
    numerator = int(fp.get("numerator", 0))
    return min(numerator, denominator) * 100.0 / denominator


def format_string(value: str) -> str:
    """A header value of `*_headers_to_add`, which Envoy reads as a format string: `%%` is a
    literal `%`; a `%COMMAND%` would be substituted (not modelled)."""
    if "%" not in value:
        return value
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "%":
            if value.startswith("%%", i):
                out.append("%")
                i += 2
                continue
            raise Unsupported(f"format command in header value {value!r}")
        out.append(c)
        i += 1
    return "".join(out)


def wire(text: str) -> str:
    """A config string (JSON text is Unicode; Envoy holds it as UTF-8 bytes) in the domain this
    evaluator works in: bytes shown as latin-1, which is how a request's bytes arrive."""
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


_RE_CACHE: dict[str, object] = {}


def re2_full(pattern: str, value: str) -> bool:
    """RE2 (UTF-8 mode, as Envoy builds it) full match of the bytes of `value`."""
    rx: Any = _RE_CACHE.get(pattern)
    if rx is None:
        rx = _RE_CACHE[pattern] = re2.compile(pattern.encode("utf-8"))
    return rx.fullmatch(value.encode("latin-1")) is not None


def string_match(m: dict, value: str) -> bool:
    """`type.matcher.v3.StringMatcher` on one value (`safe_regex` is an RE2 full match)."""
    ignore_case = m.get("ignore_case", False)

    def fold(s: str) -> str:
        return s.translate(_ASCII_LOWER) if ignore_case else s

    if "exact" in m:
        return fold(value) == fold(wire(m["exact"]))
    if "prefix" in m:
        return fold(value).startswith(fold(wire(m["prefix"])))
    if "suffix" in m:
        return fold(value).endswith(fold(wire(m["suffix"])))
    if "contains" in m:
        return fold(wire(m["contains"])) in fold(value)
    if "safe_regex" in m:
        return re2_full(m["safe_regex"]["regex"], value)
    raise Unsupported(f"string matcher {m!r}")


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# ---- the request as Envoy's HTTP/1 codec gives it to the filters -------------------------------

@dataclass(frozen=True)
class Peer:
    """The verified certificate of an mTLS caller, as Envoy's SSL connection info shows it."""
    uris: tuple[str, ...]             # URI SANs
    der: bytes                        # the certificate (for the XFCC Hash)
    dns: tuple[str, ...] = ()         # DNS SANs
    subject: str = ""                 # RFC 2253 subject (a SPIFFE workload certificate has none)


class Req:
    """Headers as a list of (lower-case name, value) with the pseudo-headers looked up
    separately; `path` is the `:path` after normalisation (path and query); `peer` the caller's
    verified certificate (None: plaintext)."""
    __slots__ = ("method", "host", "headers", "path", "peer")

    def __init__(self, method: str, host: str, headers: list[tuple[str, str]], path: str, peer: Peer | None = None):
        self.method, self.host, self.headers, self.path, self.peer = method, host, headers, path, peer

    def values(self, name: str) -> list[str]:
        if name == ":method":
            return [self.method]
        if name in (":authority", "host"):
            return [self.host]
        if name == ":path":
            return [self.path]
        return [v for n, v in self.headers if n == name]

    @property
    def path_only(self) -> str:
        q = self.path.find("?")
        return self.path if q < 0 else self.path[:q]

    @property
    def query(self) -> str | None:
        q = self.path.find("?")
        return None if q < 0 else self.path[q + 1:]


def cors_decision(policy: dict | None, req: Req) -> tuple[bool, list[tuple[str, str]]] | None:
    """Envoy's CORS filter (extensions.filters.http.cors.v3) on a request whose route has the
    per-route `policy` (None: the filter does nothing): None when the request is no CORS request
    (no or an empty `Origin`, or an origin no `allow_origin_string_match` allows: forwarded as
    it is), else (preflight, headers). An origin is allowed when a matcher matches the text `*`
    or the origin. A preflight is OPTIONS with a non-empty `access-control-request-method`: a
    200 with an empty body, headers allow-origin (the origin echoed), allow-credentials `true`
    (`allow_credentials`), allow-methods, allow-headers, max-age (each when set), then the
    expose-headers that the filter's encodeHeaders sets on every CORS response; any other CORS
    request's response gets allow-origin, allow-credentials and expose-headers."""
    if policy is None:
        return None
    origin = next((v for n, v in req.headers if n == "origin"), "")
    if not origin:
        return None
    matchers = policy.get("allow_origin_string_match", ())
    if not any(string_match(m, "*") or string_match(m, origin) for m in matchers):
        return None
    credentials = [("access-control-allow-credentials", "true")] if policy.get("allow_credentials") else []
    expose = [("access-control-expose-headers", policy["expose_headers"])] if policy.get("expose_headers") else []
    out = [("access-control-allow-origin", origin), *credentials]
    request_method = next((v for n, v in req.headers if n == "access-control-request-method"), "")
    if req.method == "OPTIONS" and request_method:
        for field, name in (("allow_methods", "access-control-allow-methods"),
                            ("allow_headers", "access-control-allow-headers"),
                            ("max_age", "access-control-max-age")):
            value = policy.get(field)
            if value == "*" and field == "allow_headers":   # measured: the request's own list is echoed
                value = next((v for n, v in req.headers if n == "access-control-request-headers"), "")
                out.append((name, value))
            elif value:
                out.append((name, value))
        return True, out + expose
    return False, out + expose


def set_inline(headers: list[tuple[str, str]], values: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`setInline` of each (name, value): an existing header keeps its place, a new one goes last."""
    out = list(headers)
    for name, value in values:
        at = next((i for i, (n, _) in enumerate(out) if n == name), None)
        if at is None:
            out.append((name, value))
        else:
            out[at] = (name, value)
    return out


def header_matcher(h: dict, req: Req) -> bool:
    """`config.route.v3.HeaderMatcher` (Envoy 1.40, ENVOY_NOTES §5.2): several header lines are
    tested one value at a time; an absent header matches only `present_match: false` (or
    `present_match: true` with `invert_match`)."""
    for old in ("exact_match", "safe_regex_match", "range_match", "prefix_match", "suffix_match",
                "contains_match"):
        if old in h:
            raise Unsupported(f"deprecated header matcher field {old}")
    values = req.values(h["name"].lower())
    invert = h.get("invert_match", False)
    if not values:
        if h.get("treat_missing_header_as_empty"):
            values = [""]
        else:
            is_present = "present_match" in h
            return is_present and (h["present_match"] if invert else not h["present_match"])
    if "present_match" in h:
        def test(v: str) -> bool:
            return bool(h["present_match"])
    elif "string_match" in h:
        sm = h["string_match"]

        def test(v: str) -> bool:
            return string_match(sm, v)
    else:                               # no specifier: the header is present
        def test(v: str) -> bool:
            return True
    for v in values:
        if test(v):
            return not invert
    return invert


def query_params(query: str | None) -> dict[str, str]:
    """Envoy's `QueryParamsMulti::parseQueryString` without decoding, first value per key."""
    params: dict[str, str] = {}
    if query is None:
        return params
    for part in query.split("&"):
        if "=" in part:
            name, value = part.split("=", 1)
        else:
            name, value = part, ""
        params.setdefault(name, value)
    return params


def query_matcher(q: dict, params: dict[str, str]) -> bool:
    if q["name"] not in params:
        return False
    if q.get("present_match"):
        return True
    if "string_match" in q:
        return string_match(q["string_match"], params[q["name"]])
    return True


def route_matches(match: dict, req: Req) -> bool:
    # `case_sensitive: false` (route.proto: "prefix/path matching", "ignored for safe_regex
    # matching"): both sides with ASCII letters lower-cased, as absl's *IgnoreCase functions do.
    fold = (lambda s: s.translate(_ASCII_LOWER)) if match.get("case_sensitive") is False else (lambda s: s)
    if "prefix" in match:
        ok = fold(req.path).startswith(fold(wire(match["prefix"])))    # on the whole :path, query included
    elif "path" in match:
        ok = fold(req.path_only) == fold(wire(match["path"]))
    elif "path_separated_prefix" in match:
        p, v = fold(req.path_only), fold(wire(match["path_separated_prefix"]))
        ok = p == v or p.startswith(v + "/")
    elif "safe_regex" in match:
        ok = re2_full(match["safe_regex"]["regex"], req.path_only)
    else:
        raise Unsupported(f"route match {sorted(match)}")
    if not ok:
        return False
    for h in match.get("headers", ()):
        if not header_matcher(h, req):
            return False
    qs = match.get("query_parameters")
    if qs:
        params = query_params(req.query)
        for q in qs:
            if not query_matcher(q, params):
                return False
    return True


# ---- path normalisation (the connection manager) ----------------------------------------------

_ESCAPED_SLASH = re.compile(r"%(2[fF]|5[cC])")
_HEXDIGITS = "0123456789abcdefABCDEF"


def _hexdigit(a: _Atom) -> bool:
    return a.text is None and a.ch is not None and a.ch in _HEXDIGITS


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~")
_ESCAPED_CHARS = frozenset(' "#<>?^`{|}')


class _Atom:
    """One unit of a path while it is canonicalised: a character (`ch`), which a `/` atom makes
    a separator, or an escape kept as it was written (`text`, never a separator nor a dot).
    `encoded`: the character came from a `%XX`; `stray`: a `%` that started no escape."""
    __slots__ = ("ch", "text", "encoded", "stray")

    def __init__(self, ch: str | None = None, text: str | None = None, encoded: bool = False,
                 stray: bool = False):
        self.ch, self.text, self.encoded, self.stray = ch, text, encoded, stray

    def render(self) -> str:
        return self.text if self.text is not None else (self.ch or "")


def _byte_escape(b: int) -> str:
    return f"%{b:02X}"


def _atoms(path: str) -> list[_Atom] | None:
    """Scan the path (RFC 3986 percent-encoding): decode the escapes of unreserved characters
    and of `.`, keep the other escapes as written, escape what may not appear raw, turn `\\`
    into `/`. None when the path holds a NUL (raw or `%00`)."""
    atoms: list[_Atom] = []
    i, n = 0, len(path)
    while i < n:
        c = path[i]
        if c == "%":
            if i + 2 < n and path[i + 1] in _HEXDIGITS and path[i + 2] in _HEXDIGITS:
                value = int(path[i + 1:i + 3], 16)
                if value == 0:
                    return None
                ch = chr(value)
                if ch in _UNRESERVED or ch == ".":
                    atoms.append(_Atom(ch, encoded=True))
                else:
                    atoms.append(_Atom(text=path[i:i + 3]))
                i += 3
                continue
            atoms.append(_Atom("%", stray=True))
        elif c == "\\":
            atoms.append(_Atom("/"))
        elif c == "\x00":
            return None
        elif ord(c) < 0x20 or c == "\x7f" or c in _ESCAPED_CHARS:
            atoms.append(_Atom(text=_byte_escape(ord(c))))
        elif ord(c) > 0x7f:
            try:
                raw = c.encode("latin-1")
            except UnicodeEncodeError:
                raw = c.encode("utf-8", "surrogateescape")
            atoms.append(_Atom(text="".join(_byte_escape(b) for b in raw)))
        else:
            atoms.append(_Atom(c))
        i += 1
    return atoms


def _dot_kind(seg: list[_Atom]) -> int:
    """0: an ordinary segment; 1: `.`; 2: `..` (a dot may be `%2e`)."""
    def dot(a: _Atom) -> bool:
        return a.text is None and a.ch == "."

    if len(seg) == 1 and dot(seg[0]):
        return 1
    if len(seg) == 2 and dot(seg[0]) and dot(seg[1]):
        return 2
    return 0


def drop_dot_segment_params(path: str) -> str:
    """Measured on Envoy 1.40 (model layer probes, ENVOY_NOTES "Path normalization"): before
    canonicalising, a segment that is a literal `.` or `..` right after a literal `/` and goes on
    with `;` loses everything from the `;` to the next `/` (a backslash does not end it, `%00` in
    it is not seen): `/..;/admin` -> `/../admin`, `/a/..;x\\b/c` -> `/a/../c`. A dot segment after
    a backslash, or with an encoded dot, keeps its params (`/a\\..;x/b` -> `/a/..;x/b`)."""
    out = []
    i, n = 0, len(path)
    while i < n:
        c = path[i]
        out.append(c)
        i += 1
        if c != "/":
            continue
        for dots in ("..", "."):
            if path.startswith(dots + ";", i):
                out.append(dots)
                i += len(dots)
                while i < n and path[i] != "/":
                    i += 1
                break
    return "".join(out)


def canonical_path(path: str) -> str | None:
    """Envoy's `normalize_path` on a path (no query) that starts with `/`: RFC 3986 section
    5.2.4 dot-segment removal on the decoded segments. None: reject (400)."""
    atoms = _atoms(path)
    if atoms is None:
        return None
    # split into segments at `/` atoms; the path starts with `/`, so segments[0] is empty
    segments: list[list[_Atom]] = [[]]
    for a in atoms:
        if a.text is None and a.ch == "/":
            segments.append([])
        else:
            segments[-1].append(a)
    segments = segments[1:]
    out: list[list[_Atom]] = []
    for idx, seg in enumerate(segments):
        last = idx == len(segments) - 1
        kind = _dot_kind(seg)
        if kind == 0:
            out.append(seg)
            continue
        if kind == 2 and out:
            out.pop()
        if last:
            out.append([])     # `/a/.` is `/a/`, `/a/b/..` is `/a/`
    flat: list[_Atom] = []
    for seg in out:
        flat.append(_Atom("/"))
        flat.extend(seg)
    if not flat:
        flat.append(_Atom("/"))
    # a stray `%` that decoding placed in front of two hex digits would read as an escape: `%25`
    text = []
    for i, a in enumerate(flat):
        if a.stray and i + 2 < len(flat) and all(_hexdigit(x) for x in flat[i + 1:i + 3]):
            text.append("%25")
        else:
            text.append(a.render())
    return "".join(text)


def merge_slashes(path: str) -> str:
    """Envoy's `PathUtil::mergeSlashes` (only when the path has `//`): keep a leading and a
    trailing `/`, join the non-empty pieces with one `/`."""
    if "//" not in path:
        return path
    pieces = [p for p in path.split("/") if p]
    return ("/" if path.startswith("/") else "") + "/".join(pieces) + ("/" if path.endswith("/") else "")


def normalize(target: str, hcm: dict) -> str | int:
    """The `:path` after the connection manager, or a status (400)."""
    if not target.startswith("/") or "#" in target:
        return 400
    q = target.find("?")
    path, query = (target, None) if q < 0 else (target[:q], target[q + 1:])
    action = hcm.get("path_with_escaped_slashes_action", "IMPLEMENTATION_SPECIFIC_DEFAULT")
    if action in ("IMPLEMENTATION_SPECIFIC_DEFAULT", "KEEP_UNCHANGED"):
        pass
    elif _ESCAPED_SLASH.search(path):
        if action == "REJECT_REQUEST":
            return 400
        if action == "UNESCAPE_AND_FORWARD":
            path = _ESCAPED_SLASH.sub(lambda m: "/" if m.group(1)[0] == "2" else "\\", path)
        else:
            raise Unsupported(f"path_with_escaped_slashes_action {action}")
    if hcm.get("normalize_path"):
        canonical = canonical_path(drop_dot_segment_params(path))
        if canonical is None:
            return 400
        path = canonical
    if hcm.get("merge_slashes"):
        path = merge_slashes(path)
    return path if query is None else path + "?" + query


# ---- RBAC ----------------------------------------------------------------------------------------

def permission(p: dict, req: Req) -> bool:
    if p.get("any"):
        return True
    if "and_rules" in p:
        return all(permission(r, req) for r in p["and_rules"]["rules"])
    if "or_rules" in p:
        return any(permission(r, req) for r in p["or_rules"]["rules"])
    if "not_rule" in p:
        return not permission(p["not_rule"], req)
    if "header" in p:
        return header_matcher(p["header"], req)
    if "url_path" in p:
        up = p["url_path"]
        if "path" not in up:
            raise Unsupported(f"url_path {up!r}")
        return string_match(up["path"], req.path_only)
    raise Unsupported(f"RBAC permission {sorted(p)}")


def principal(p: dict, req: Req) -> bool:
    if p.get("any"):
        return True
    if "and_ids" in p:
        return all(principal(r, req) for r in p["and_ids"]["ids"])
    if "or_ids" in p:
        return any(principal(r, req) for r in p["or_ids"]["ids"])
    if "not_id" in p:
        return not principal(p["not_id"], req)
    if "authenticated" in p:
        return authenticated(p["authenticated"], req.peer)
    if "header" in p:
        return header_matcher(p["header"], req)
    raise Unsupported(f"RBAC principal {sorted(p)}")


def authenticated(a: dict, peer: Peer | None) -> bool:
    """RBAC's AuthenticatedMatcher: only a connection with a verified peer certificate; without
    `principal_name` any such peer, else the matcher against each URI SAN, then each DNS SAN,
    then the subject."""
    if peer is None:
        return False
    m = a.get("principal_name")
    if m is None:
        return True
    return any(string_match(m, v) for v in peer.uris + peer.dns) or string_match(m, peer.subject)


def matching_policies(rules: dict, req: Req) -> list[str]:
    """The names of the policies of one RBAC filter's `rules` that match the request."""
    return [name for name, pol in rules.get("policies", {}).items()
            if any(permission(p, req) for p in pol.get("permissions", ()))
            and any(principal(p, req) for p in pol.get("principals", ()))]


def rbac_allows(rules: dict | None, req: Req, why: list | None = None) -> bool:
    """One RBAC filter's `rules`: ALLOW lets through what a policy matches, DENY what none does;
    a filter without rules enforces nothing. `why`, when given, gets (action, the names of the
    matching policies) of a filter that enforces."""
    if rules is None:
        return True
    if why is not None:
        names = matching_policies(rules, req)
        why.append((rules.get("action", "ALLOW"), tuple(names)))
        matched = bool(names)
    else:
        matched = any(any(permission(p, req) for p in pol.get("permissions", ()))
                      and any(principal(p, req) for p in pol.get("principals", ()))
                      for pol in rules.get("policies", {}).values())
    action = rules.get("action", "ALLOW")
    if action == "ALLOW":
        return matched
    if action == "DENY":
        return not matched
    if action == "LOG":
        return True
    raise Unsupported(f"RBAC action {action}")


# ---- header mutations -----------------------------------------------------------------------------

def mutate(headers: list[tuple[str, str]], level: dict, side: str) -> list[tuple[str, str]]:
    """One level's `{side}_headers_to_remove` / `{side}_headers_to_add` (Envoy's HeaderParser:
    removals, then every overwrite, then every append)."""
    remove = {n.lower() for n in level.get(f"{side}_headers_to_remove", ())}
    out = [(n, v) for n, v in headers if n not in remove] if remove else list(headers)
    overwrites: list[tuple[str, ...]] = []
    appends: list[tuple[str, ...]] = []
    for opt in level.get(f"{side}_headers_to_add", ()):
        if "append" in opt:
            raise Unsupported("deprecated HeaderValueOption.append")
        key = opt["header"]["key"].lower()
        value = wire(format_string(opt["header"].get("value", "")))
        action = opt.get("append_action", "APPEND_IF_EXISTS_OR_ADD")
        if action == "APPEND_IF_EXISTS_OR_ADD":
            appends.append((key, value))
        elif action == "OVERWRITE_IF_EXISTS_OR_ADD":
            overwrites.append((key, value))
        elif action == "ADD_IF_ABSENT":
            appends.append((key, value, "absent"))
        elif action == "OVERWRITE_IF_EXISTS":
            overwrites.append((key, value, "exists"))
        else:
            raise Unsupported(f"append_action {action}")
    for item in overwrites:
        key, value = item[0], item[1]
        if len(item) == 3 and not any(n == key for n, _ in out):
            continue
        out = [(n, v) for n, v in out if n != key] + [(key, value)]
    inline = INLINE_REQUEST if side == "request" else INLINE_RESPONSE
    for item in appends:
        key, value = item[0], item[1]
        if len(item) == 3 and any(n == key for n, _ in out):
            continue
        at = next((i for i, (n, _) in enumerate(out) if n == key), None) if key in inline else None
        if at is not None:
            out[at] = (key, append_to_header(out[at][1], value))
        else:
            out.append((key, value))
    return out


# ---- the model --------------------------------------------------------------------------------------

def _chain_hcm(chain: dict, listener: dict) -> dict:
    for f in chain.get("filters", ()):
        tc = f.get("typed_config", {})
        if tc.get("@type") == HCM_TYPE:
            return tc
    raise Unsupported(f"listener {listener.get('name')} has a filter chain without an HTTP connection manager")


def _hcm(listener: dict) -> dict:
    chains = listener.get("filter_chains", ())
    if not chains:
        raise Unsupported(f"listener {listener.get('name')} has no filter chain")
    return _chain_hcm(chains[0], listener)


class Chain:
    """One filter chain of the inbound listener: which connections it takes and what it does."""

    def __init__(self, chain: dict, listener: dict, inspector: bool):
        match = dict(chain.get("filter_chain_match", {}))
        self.protocol = match.pop("transport_protocol", None)
        if match:
            raise Unsupported(f"filter_chain_match {sorted(match)}")
        if self.protocol is not None and not inspector:
            raise Unsupported("transport_protocol without the tls_inspector listener filter")
        if self.protocol not in (None, "tls", "raw_buffer"):
            raise Unsupported(f"transport_protocol {self.protocol}")
        socket = chain.get("transport_socket")
        self.tls = socket is not None
        if socket is not None and socket.get("typed_config", {}).get("@type") != DOWNSTREAM_TLS_TYPE:
            raise Unsupported(f"transport socket {socket.get('name')}")
        self.hcm = _chain_hcm(chain, listener)
        vhosts = self.hcm.get("route_config")
        if vhosts is None:
            raise Unsupported("the inbound listener has no inline route configuration")
        self.vhosts = EnvoyModel._index(vhosts.get("virtual_hosts", ()))

    def takes(self, tls: bool) -> bool:
        return self.protocol is None or self.protocol == ("tls" if tls else "raw_buffer")


def client_cert_details(hcm: dict, peer: Peer | None, own_uri: str | None) -> tuple[str, ...]:
    """The `x-forwarded-client-cert` values the application gets
    (ConnectionManagerUtility::mutateXfccRequestHeader; with the two modes modelled, whatever the
    caller sent is never kept): without a peer certificate the header is removed; SANITIZE
    removes it; SANITIZE_SET sets
    `By=<our first URI SAN>;Hash=<SHA-256 of the peer certificate>` and then the details asked
    for, in Envoy's order (Subject, URI, DNS)."""
    mode = hcm.get("forward_client_cert_details", "SANITIZE")
    if mode not in ("SANITIZE", "SANITIZE_SET"):
        raise Unsupported(f"forward_client_cert_details {mode}")
    if peer is None or mode == "SANITIZE":
        return ()
    details = hcm.get("set_current_client_cert_details", {})
    if details.get("cert") or details.get("chain"):
        raise Unsupported("client cert details cert/chain")
    parts = []
    if own_uri:
        parts.append("By=" + own_uri)
    parts.append("Hash=" + hashlib.sha256(peer.der).hexdigest())
    if details.get("subject"):
        parts.append(f'Subject="{peer.subject}"')
    if details.get("uri"):
        parts.append("URI=" + (peer.uris[0] if peer.uris else ""))
    if details.get("dns"):
        parts += ["DNS=" + d for d in peer.dns]
    return (";".join(parts),)


class EnvoyModel:
    """`own_uri`: the URI SAN of the certificate the sidecar presents (Envoy reads it from the
    SDS files, which the emitted JSON only names); `certs`: a caller's SPIFFE ID -> the DER of
    the certificate it presents (by default `decisions.model_der`)."""

    def __init__(self, compiled, own_uri: str | None = None, certs: dict[str, bytes] | None = None):
        self.own_uri = own_uri
        self.certs = certs or {}
        self.route_config = compiled.routes
        self.clusters = {c["name"]: c for c in compiled.clusters}
        self.listeners = {}
        for listener in compiled.listeners:
            self.listeners[listener["name"]] = listener
        self.outbound = _hcm(self.listeners["outbound"])
        rds = self.outbound.get("rds")
        if rds is not None and rds.get("route_config_name") != self.route_config["name"]:
            raise Unsupported("the outbound listener names another route configuration")
        self._vhosts = self._index(self.route_config.get("virtual_hosts", ()))
        inbound = self.listeners["inbound"]
        filters = inbound.get("listener_filters", ())
        inspector = any(f.get("typed_config", {}).get("@type") == TLS_INSPECTOR_TYPE for f in filters)
        if len(filters) != int(inspector):
            raise Unsupported("listener filters other than tls_inspector")
        if "default_filter_chain" in inbound:
            raise Unsupported("default_filter_chain")
        self.chains = [Chain(c, inbound, inspector) for c in inbound.get("filter_chains", ())]

    def _chain(self, tls: bool) -> Chain | None:
        """The filter chain a connection lands on: the one whose transport_protocol matches
        before one without (the more specific match wins); none: the connection is closed."""
        for specific in (True, False):
            for chain in self.chains:
                if (chain.protocol is not None) == specific and chain.takes(tls):
                    return chain
        return None

    def peer(self, caller: str | None) -> Peer | None:
        if caller is None:
            return None
        return Peer((caller,), self.certs.get(caller) or model_der(caller))

    @staticmethod
    def _index(vhosts) -> dict:
        exact: dict[str, dict] = {}
        suffix: list[tuple[str, dict]] = []
        prefix: list[tuple[str, dict]] = []
        star = None
        for vh in vhosts:
            for d in vh.get("domains", ()):
                d = d.lower()
                if d == "*":
                    star = star or vh
                elif d.startswith("*"):
                    suffix.append((d[1:], vh))
                elif d.endswith("*"):
                    prefix.append((d[:-1], vh))
                else:
                    exact.setdefault(d, vh)
        suffix.sort(key=lambda x: -len(x[0]))
        prefix.sort(key=lambda x: -len(x[0]))
        return {"exact": exact, "suffix": suffix, "prefix": prefix, "star": star}

    @staticmethod
    def _vhost(index: dict, host: str):
        """Envoy's virtual host lookup: exact domain, then the longest `*suffix` wildcard, then
        the longest `prefix*`, then `*` (a wildcard never matches the whole host by its empty
        part)."""
        host = host.lower()
        vh = index["exact"].get(host)
        if vh is not None:
            return vh
        for suffix, vh in index["suffix"]:
            if len(host) > len(suffix) and host.endswith(suffix):
                return vh
        for prefix, vh in index["prefix"]:
            if len(host) > len(prefix) and host.startswith(prefix):
                return vh
        return index["star"]

    # ---- the request ----

    @staticmethod
    def _codec(request) -> tuple[str, list[tuple[str, str]]] | Decision:
        """Envoy's HTTP/1 codec: a method that is not an upper-case token or a target that is not
        origin-form, or a target with a control character, DEL or a byte >= 0x80, is a 400 `Bad
        Request` (a CONNECT to an authority reaches the router, where
        no route has a connect_matcher: 404); names are lower-cased, values trimmed of SP/HTAB."""
        method = request.method
        if not method or method.upper() != method or not method.isalpha():
            return Decision(request.kind, status=400, body="Bad Request")
        if any(c <= " " or c >= "\x7f" for c in request.target):
            return Decision(request.kind, status=400, body="Bad Request")   # measured: raw controls, DEL, bytes >= 0x80
        if not request.target.startswith("/"):
            if method == "CONNECT":
                return Decision(request.kind, status=404)
            return Decision(request.kind, status=400, body="Bad Request")
        headers = [(n.lower(), v.strip(" \t")) for n, v in request.headers]
        return method, join_inline(headers, INLINE_REQUEST)

    def _filters(self, hcm: dict):
        return [(f["name"], f.get("typed_config", {})) for f in hcm.get("http_filters", ())]

    def decide(self, request, key_draw: int | None = None, response=SAMPLE_RESPONSE,
               why: list | None = None) -> Decision:
        """`why`, when given, gets one (action, matching policy names) per RBAC filter an inbound
        request went through, in order (`rbac_allows`)."""
        if request.kind == "inbound":
            return self._inbound(request, why)
        return self._outbound(request, key_draw, response)

    def _inbound(self, request, why: list | None = None) -> Decision:
        tls = request.caller is not None
        chain = self._chain(tls)
        # no chain; a plaintext caller of a TLS chain (the handshake fails); a TLS caller of a
        # plaintext chain (the codec answers its ClientHello with a plaintext 400)
        if chain is None or chain.tls != tls:
            return Decision("inbound", status=REFUSED)
        hcm = chain.hcm
        codec = self._codec(request)
        if isinstance(codec, Decision):
            return codec
        method, headers = codec
        path = normalize(request.target, hcm)
        if isinstance(path, int):
            return Decision("inbound", status=path)
        peer = self.peer(request.caller)
        # the connection manager's XFCC handling comes before routing and the filters
        xfcc = client_cert_details(hcm, peer, self.own_uri)
        headers = [(n, v) for n, v in headers if n != "x-forwarded-client-cert"]
        headers += [("x-forwarded-client-cert", v) for v in xfcc]
        req = Req(method, request.host, headers, path, peer)
        vh = self._vhost(chain.vhosts, request.host)
        route = None
        if vh is not None:
            route = next((r for r in vh.get("routes", ()) if route_matches(r["match"], req)), None)
        for name, cfg in self._filters(hcm):
            t = cfg.get("@type")
            if t == RBAC_TYPE:
                rules = cfg.get("rules")
                per = (route or {}).get("typed_per_filter_config", {}).get(name)
                if per is not None:
                    rules = per.get("rbac", {}).get("rules")
                if not rbac_allows(rules, req, why):
                    return Decision("inbound", status=403, body=BODY_RBAC)
            elif t == ROUTER_TYPE:
                break
            else:
                raise Unsupported(f"inbound filter {t}")
        if route is None:
            return Decision("inbound", status=404)
        return Decision("inbound", path=path, xfcc=xfcc)

    def _outbound(self, request, key_draw, response) -> Decision:
        codec = self._codec(request)
        if isinstance(codec, Decision):
            return codec
        method, headers = codec
        path = normalize(request.target, self.outbound)
        if isinstance(path, int):
            return Decision("outbound", status=path)
        req = Req(method, request.host, headers, path)
        vh = self._vhost(self._vhosts, request.host)
        if vh is None:
            return Decision("outbound", status=404)
        route = next((r for r in vh.get("routes", ()) if route_matches(r["match"], req)), None)
        if route is None:
            return Decision("outbound", status=404)
        action = route.get("route")
        name = route.get("name", "?")   # SERVICE/ROUTE[/N] (SERVICE may be NAMESPACE/NAME): without /N
        tail = name.rpartition("/")[2]
        name = name.rpartition("/")[0] if tail.isdigit() else name
        if action is None and ("redirect" in route or "direct_response" in route):
            return self._answer(route, name, vh, req)
        if action is None:
            raise Unsupported(f"route {route.get('name')} without a route action")
        # route-level settings (canonical)
        timeout_ms = duration_ms(action.get("timeout"), 15000)
        retry = self._retry(action.get("retry_policy") or vh.get("retry_policy"))
        mirror = canonical_mirror(
            (m["cluster"],
             fraction_percent(m["runtime_fraction"]["default_value"]) if "runtime_fraction" in m else 100.0)
            for m in action.get("request_mirror_policies", ()))
        # the HTTP filters before the router
        fault = None
        fault_random = False
        status = None
        cors = None
        for fname, cfg in self._filters(self.outbound):
            t = cfg.get("@type")
            if t == CORS_TYPE:
                cors = cors_decision(route.get("typed_per_filter_config", {}).get(fname), req)
                if cors is not None and cors[0]:
                    status = 200
                    break
            elif t == FAULT_TYPE:
                per = route.get("typed_per_filter_config", {}).get(fname)
                conf = per if per is not None else cfg
                fault, aborted, fault_random = self._fault(conf, req)
                if aborted is not None:
                    status = aborted
                    break
            elif t == RBAC_TYPE:
                raise Unsupported("RBAC on the outbound listener")
            elif t == ROUTER_TYPE:
                break
            else:
                raise Unsupported(f"outbound filter {t}")
        common = {"route": name, "timeout_ms": timeout_ms, "retry": retry, "fault": fault,
                  "fault_random": fault_random, "mirror": mirror}
        cors_lines = tuple(cors[1]) if cors is not None else None
        if cors is not None and cors[0]:      # a preflight, answered by the CORS filter
            return Decision("outbound", status=200, cors=cors_lines, **common)
        if status is not None:
            return Decision("outbound", status=status, body=BODY_FAULT, cors=cors_lines, **common)
        # the router: the cluster
        cluster, candidates, weighted_entry = self._pick(action, req, key_draw)
        if cluster is not None and cluster not in self.clusters:
            return Decision("outbound", status=503, **common)
        rewritten = answers.new_path(action, route["match"], path)   # (the route's: whichever arm)
        if rewritten is not None:
            path = rewritten
        if weighted_entry is _VARIES:
            return Decision("outbound", cluster=cluster, candidates=candidates, path=path, cors=cors_lines, **common)
        up = list(req.headers)
        levels = ([weighted_entry] if weighted_entry else []) + [route, vh, self.route_config]
        for level in levels:
            up = mutate(up, level, "request")
        upstream_host = None
        if action.get("host_rewrite_literal"):
            upstream_host = action["host_rewrite_literal"]
        resp = join_inline([(n.lower(), v.strip(" \t")) for n, v in response], INLINE_RESPONSE)   # (bytes as latin-1)
        for level in levels:
            resp = mutate(resp, level, "response")
        if cors is not None:   # the CORS filter's encodeHeaders comes after the router's changes
            resp = set_inline(resp, cors[1])
        return Decision("outbound", cluster=cluster, candidates=candidates, path=path,
                        upstream_headers=visible_request_headers(up), response_headers=tuple(resp),
                        upstream_host=upstream_host, cors=cors_lines, **common)

    def _answer(self, route: dict, name: str, vh: dict, req: Req) -> Decision:
        """A route that answers itself: a `redirect` (an empty body, `location`) or a
        `direct_response` (its inline body, `text/plain` unless the route's response changes set
        a content type; no content type at all without a body); the route's, the virtual host's
        and the configuration's response changes apply to it."""
        location = None
        if "redirect" in route:
            status, location = answers.redirect(route["redirect"], route["match"], req.host, req.path, req.headers)
            body = ""
            resp = [("location", location)]
        else:
            dr = route["direct_response"]
            status = dr["status"]
            body = dr.get("body", {}).get("inline_string", "").encode().decode("latin-1")   # bytes as latin-1
            resp = []
        for level in (route, vh, self.route_config):
            resp = mutate(resp, level, "response")
        if not body:    # measured: Envoy's local reply drops the type of an empty body
            resp = [(n, v) for n, v in resp if n != "content-type"]
        elif not any(n == "content-type" for n, _ in resp):
            resp.insert(0, ("content-type", "text/plain"))
        return Decision("outbound", status=status, body=body, route=name, location=location,
                        response_headers=tuple(resp))

    @staticmethod
    def _retry(rp: dict | None):
        if rp is None:
            return None
        tokens = {t.strip() for t in rp.get("retry_on", "").split(",") if t.strip()} & RETRY_TOKENS
        codes = tuple(rp.get("retriable_status_codes", ())) if "retriable-status-codes" in tokens else ()
        tokens.discard("retriable-status-codes")
        backoff = rp.get("retry_back_off", {})
        base = duration_ms(backoff.get("base_interval"), 25)
        cap = duration_ms(backoff.get("max_interval"), 10 * base)
        num = rp.get("num_retries", 1)
        return canonical_retry(num, tokens, codes, duration_ms(rp.get("per_try_timeout"), 0), base, cap)

    @staticmethod
    def _fault(conf: dict, req: Req):
        """(canonical fault, abort status when it certainly aborts, whether it may abort)."""
        for h in conf.get("headers", ()):
            if not header_matcher(h, req):
                return None, None, False
        delay = conf.get("delay")
        abort = conf.get("abort")
        delay_ms, delay_pct, abort_status, abort_pct = 0, 0.0, None, 0.0
        if delay is not None:
            if "fixed_delay" not in delay:
                raise Unsupported("header-controlled delay")
            delay_ms = duration_ms(delay["fixed_delay"], 0)
            delay_pct = fraction_percent(delay.get("percentage"))
        if abort is not None:
            if "http_status" not in abort:
                raise Unsupported(f"abort {sorted(abort)}")
            abort_status = abort["http_status"]
            abort_pct = fraction_percent(abort.get("percentage"))
        fault = canonical_fault(delay_ms, delay_pct, abort_status, abort_pct)
        if fault is None or fault.abort_status is None:
            return fault, None, False
        if fault.abort_percent >= 100.0:
            return fault, fault.abort_status, False
        return fault, None, True

    def _pick(self, action: dict, req: Req, key_draw):
        if "cluster" in action:
            return action["cluster"], None, None
        wc = action.get("weighted_clusters")
        if wc is None:
            raise Unsupported(f"route action {sorted(action)}")
        if wc.get("use_hash_policy") or wc.get("runtime_key_prefix"):
            raise Unsupported("weighted_clusters hash policy / runtime")
        entries = wc["clusters"]
        total = sum(int(e["weight"]) for e in entries)
        value = None
        if "header_name" in wc:
            value = simple_atoi_u64(req.values(wc["header_name"].lower()))
        if value is None:
            value = key_draw
        if value is None:
            cluster, candidates = canonical_pick(e["name"] for e in entries if int(e["weight"]) > 0)
            if cluster is not None:
                entry = next(e for e in entries if e["name"] == cluster)
                return cluster, None, entry
            if any(("request_headers_to_add" in e or "request_headers_to_remove" in e
                    or "response_headers_to_add" in e or "response_headers_to_remove" in e) for e in entries):
                return None, candidates, _VARIES   # the heads depend on the draw: decided with one
            return None, candidates, None
        sel = value % total
        acc = 0
        for e in entries:
            w = int(e["weight"])
            if acc <= sel < acc + w:
                return e["name"], None, e
            acc += w
        raise AssertionError("unreachable: sel < total")


# a random pick among weighted clusters with their own header changes: no head before the draw
_VARIES: dict = {}

_ATOI = re.compile(r"[ \t\n\v\f\r]*\+?([0-9]+)[ \t\n\v\f\r]*\Z", re.ASCII)


def simple_atoi_u64(values: list[str]) -> int | None:
    """The header's value as `absl::SimpleAtoi<uint64_t>` reads it, when there is exactly one
    (ENVOY_NOTES §3); None means the random draw decides."""
    if len(values) != 1:
        return None
    m = _ATOI.match(values[0])
    if m is None:
        return None
    n = int(m.group(1))
    return n if n < 2 ** 64 else None
