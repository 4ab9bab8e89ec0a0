"""The one request decision: from the compiled table, a request head and the random draws, what
the sidecar does with the request (docs/language.md §1, "How a request flows").

`decide_request(table, head, draws)` is a pure function: no socket, no clock, no random source.
The running proxy (runtime_proxy/net/exchange.py) calls it when a request's head is complete and
then only does the I/O it says; the equivalence suite's native model (tests/equivalence/
native_model.py) calls the same function on generated requests. Its answer is either a local
reply (a refused head, no host, a rejected path, no route, a denial, a fault's abort) or where the
request goes: the cluster, the route (with its timeout, retries and mirror), the request line and
header lines every attempt sends, and a fault delay to wait first. What depends on the state of
the destination (the endpoint, the limits, the retry budget, outlier detection) is the second
decision, runtime_proxy/decide/upstream.py.

`explain`, when given, records why each route did or did not match and which authorization rule
decided (runtime_proxy/decide/explain.py); without it the decision pays nothing for the hook.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

from runtime_proxy.decide import authz as authz_mod
from runtime_proxy.decide import cors as cors_mod
from runtime_proxy.decide import fault as fault_mod
from runtime_proxy.decide import mirror as mirror_mod
from runtime_proxy.decide import split as split_mod
from runtime_proxy.decide.answer import location, rewritten_head
from runtime_proxy.decide.headers import apply_changes
from runtime_proxy.decide.http import (
    BODY_FAULT,
    BODY_RBAC,
    HOP_BY_HOP_BYTES,
    REQUEST_INLINE,
    STRIPPED_REQUEST,
    connection_tokens,
    decode_value,
    encode_value,
    reason_phrase,
)
from runtime_proxy.decide.normalize import normalize
from runtime_proxy.decide.routing import COMPILE_AFTER, COMPILE_MAX_TESTS, compile_select, select_route, select_size
from runtime_proxy.decide.table import CRoute
from runtime_proxy.decide.trace import TRACE_HEADERS, CTracing, Span, decide_span, trace_reason

if TYPE_CHECKING:
    from runtime_proxy.decide.explain import Explanation
    from runtime_proxy.decide.table import CHeaderChanges, CMirror, CSubsetRef, CWeightedSubset, HeaderMap, Table

# A request's header lines as received: (name as sent, value).
RawHeaders = list[tuple[bytes, bytes]]

# Request headers never copied upstream as they came: connection-level ones, router control
# headers, and the framing the proxy writes itself. `x-forwarded-for` passes unchanged and is
# never added: Envoy's connection manager as the compiler emits it (use_remote_address false)
# does not touch it (equivalence suite, tests/test_equivalence_live.py).
UP_SKIP = frozenset(HOP_BY_HOP_BYTES | {n.encode() for n in STRIPPED_REQUEST}
                    | {b"content-length", b"x-forwarded-client-cert"})   # XFCC: Envoy's SANITIZE
_RID = frozenset({b"x-request-id"})
_UP_SKIP_RID = UP_SKIP | _RID
_UP_SKIP_TRACED = _UP_SKIP_RID | TRACE_HEADERS
_ABSOLUTE = re.compile(r"[Hh][Tt][Tt][Pp][Ss]?://([^/?#]*)(.*)", re.S).fullmatch
# an absolute-form target's authority as Envoy's URL parser takes it: [userinfo@]host[:port]
_AUTHORITY = re.compile(r"(?:[^@]*@)?(?:\[[0-9A-Fa-f:.]*\]|[^:@\[\]]*)(?::[0-9]+)?").fullmatch
# a byte a Host value may not have (Envoy checks the authority with nghttp2_check_authority:
# letters, digits, `-._~`, sub-delims, `%`, `:`, `@`, `[`, `]`; empty is allowed)
_HOST_BAD = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=%:@\[\]]").search
# Host values seen valid (bounded: hosts are few; random ones only fill it up to the cap)
_HOSTS_OK: set[str] = set()
# Methods whose requests Envoy's HTTP/1 codec sends without a body (HeaderUtility::requestShouldHaveNoBody).
BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "TRACE", "CONNECT"})
XFCC = "x-forwarded-client-cert"

# Listener counters a decision adds one to (runtime_proxy/net/metrics.py ListenerStats).
BAD_REQUEST, NO_ROUTE, RBAC_DENIED, RBAC_ALLOWED = "bad_request", "no_route", "rbac_denied", "rbac_allowed"
# Envoy counts authorization per RBAC filter (the deny rules' filter, then, under `default deny`,
# the allow rules' one), each adding to the same `rbac.allowed`/`rbac.denied`: a request that
# passes both counts two `allowed`, one that passes the deny rules and meets the default counts
# one of each. These combined counters say so in one increment (ListenerStats renders the sums).
RBAC_ALLOWED_TWICE, RBAC_ALLOWED_DENIED = "rbac_allowed_twice", "rbac_allowed_denied"
RBAC_DENIALS = frozenset({RBAC_DENIED, RBAC_ALLOWED_DENIED})     # the counters of a 403 by authorization
ABORTS_INJECTED, DELAYS_INJECTED = "aborts_injected", "delays_injected"


class RequestHead(Protocol):
    """What the decisions read of a request head: a `Head`, or the proxy's own request object
    (net/exchange.py Exchange), which carries these attributes itself."""
    @property
    def inbound(self) -> bool: ...
    @property
    def method(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def raw(self) -> RawHeaders: ...
    @property
    def headers(self) -> HeaderMap: ...
    @property
    def content_length(self) -> int | None: ...
    @property
    def chunked(self) -> bool: ...
    @property
    def reject(self) -> int: ...
    @property
    def peer(self) -> str | None: ...
    @property
    def xfcc(self) -> bytes | None: ...


class RequestDraws(Protocol):
    """The random draws a decision may ask for: `Draws`, or the proxy's net/exchange.py RandomDraws."""
    def fault_delay(self) -> float: ...
    def fault_abort(self) -> float: ...
    def split(self) -> int: ...
    def mirror(self) -> float: ...
    def request_id(self) -> bytes: ...
    def trace_ids(self) -> int: ...


class Head:
    """A request head as the decisions read it. `raw` are the header lines as received (name as
    sent, value; Envoy's inline headers joined, see `header_dict`), `headers` lower-case name ->
    values. `peer` is the caller's verified SPIFFE ID (an mTLS client certificate, or a trusted
    identity header), `xfcc` the `x-forwarded-client-cert` line the sidecar writes for it over mTLS."""
    __slots__ = ("inbound", "method", "target", "raw", "headers", "content_length", "chunked", "reject",
                 "peer", "xfcc")

    def __init__(self, inbound: bool, method: str, target: str, raw: RawHeaders, headers: HeaderMap,
                 content_length: int | None = None, chunked: bool = False, reject: int = 0,
                 peer: str | None = None, xfcc: bytes | None = None) -> None:
        self.inbound = inbound                # the inbound listener (else the outbound one)
        self.method = method
        self.target = target                  # the request target as received
        self.raw = raw
        self.headers = headers
        self.content_length = content_length  # None: no Content-Length
        self.chunked = chunked
        self.reject = reject                  # a status the parser decided already (426, 403 upgrade), or 0
        self.peer = peer
        self.xfcc = xfcc


class Draws:
    """Fixed random draws, for a caller that chooses them (the tests; the proxy draws each one as
    the decision asks for it, net/exchange.py RandomDraws): uniform in [0, 1) for the fault's delay
    and abort and for the mirror, a uniform 64-bit integer for a split that its key header does
    not decide, the `x-request-id` of a request that has none, and a traced hop's new ids (192
    uniform bits: a trace id, a span id). Methods, so that a draw that is never needed is never made."""
    __slots__ = ("_fault_delay", "_fault_abort", "_split", "_mirror", "_request_id", "_trace_ids")

    def __init__(self, fault_delay: float, fault_abort: float, split: int, mirror: float, request_id: bytes,
                 trace_ids: int = 1) -> None:
        self._fault_delay, self._fault_abort, self._split = fault_delay, fault_abort, split
        self._mirror, self._request_id, self._trace_ids = mirror, request_id, trace_ids

    def fault_delay(self) -> float:
        return self._fault_delay

    def fault_abort(self) -> float:
        return self._fault_abort

    def split(self) -> int:
        return self._split

    def mirror(self) -> float:
        return self._mirror

    def request_id(self) -> bytes:
        return self._request_id

    def trace_ids(self) -> int:
        return self._trace_ids


class Decision:
    """What to do with a request. `status` > 0 is a local reply (after `delay_ms`, a fault's abort);
    `status` 0 forwards it to `cluster`. With both `delay_ms` and `status`, the abort (and its
    ABORTS_INJECTED count) comes after the delay; `counter` is counted at once. The defaults are
    class attributes and a decision sets only what differs: this runs for every request, and
    creating it then runs no Python code (measured: fewer instructions than a slotted __init__)."""

    status = 0                      # a local reply's status; 0: forward
    body = b""                      # the local reply's body
    close = False                   # close the connection after the local reply
    counter: str | None = None      # the listener counter to add one to (BAD_REQUEST, ...), or None
    flags = ""                      # Envoy's response flags for the access log (NR, RBAC, FI, DI)
    host = ""                       # the Host the request named (several lines joined, as Envoy)
    path = ""                       # the normalised path
    query = ""                      # the query as received, without `?`
    service = ""                    # the destination (outbound) or the sidecar's own service (inbound)
    route: CRoute | None = None     # the route that took the request (outbound)
    cluster: str | None = None      # the cluster to send it to: a subset's, or the local app's
    delay_ms = 0                    # a fault delay to wait before the rest of the decision
    up_head = b""                   # request line and header lines every attempt sends
    up_tail = b"\r\n"               # the framing line(s) ending the head
    mirrors: tuple[CMirror, ...] = ()   # the route's mirrors that copy this request, once the body is known
    arm_response: CHeaderChanges | None = None   # the chosen split arm's response changes (before the route's)
    up_host = ""                    # the Host a rewrite sent upstream instead of `host` ("": none)
    extra = b""                     # a local reply's own header lines (a redirect's `location`)
    routed_path = ""                # `:path` after a route's path rewrite (a rewrite's, a redirect's `prefix`
                                    # or `regex`, which Envoy writes into the request too); "": unchanged
    # a CORS request's header lines (decide/cors.py): the preflight's answer (status 200), or the
    # lines the response gets; b"": none (no `cors` on the route, no or another origin)
    cors = b""
    expect_continue = False         # answer `100 Continue` before forwarding
    rule: str | None = None         # the authorization rule that decided (inbound), None: the default
    # the `x-request-id` the hop writes itself when the sidecar has `tracing`, sampled or not (its
    # trace reason written in, decide/trace.py); b"": no `tracing`, the id is kept or added as is
    request_id = b""
    span: Span | None = None        # a traced hop's span (decide/trace.py)


def local(d: Decision, status: int, body: bytes = b"", counter: str | None = BAD_REQUEST, flags: str = "",
          close: bool = False) -> Decision:
    d.status, d.body, d.counter, d.flags, d.close = status, body, counter, flags, close
    return d


def decide_request(table: Table, head: RequestHead, draws: RequestDraws,
                   explain: Explanation | None = None) -> Decision:
    """The decision for one request head (`table`: a runtime_proxy/decide/table.Table; `explain`:
    an explain.Explanation to record the reasons in, or None)."""
    d = Decision()
    if head.reject:   # Envoy's codec errors carry the reason phrase; its upgrade refusal (403) has none
        return local(d, head.reject, b"" if head.reject == 403 else reason_phrase(head.reject).encode(), close=True)
    target, raw, headers = head.target, head.raw, head.headers
    method = head.method
    hosts = headers.get("host")
    if target[:1] != "/" and method != "CONNECT":
        absolute = _ABSOLUTE(target)
        if absolute is not None:   # absolute-form: Envoy takes the path and the authority from it
            authority, rest = absolute.group(1), absolute.group(2)
            if (hosts is not None and len(hosts) > 1) or _AUTHORITY(authority) is None or _host_refused([authority]):
                return local(d, 400, b"Bad Request", close=True)   # (`h:1:2`, `h:x`: Envoy's URL parser)
            if rest[:1] != "/" and rest:    # `http://h?q`: Envoy's path is `?q`
                return _pathless(d, [authority])
            target = rest or "/"
            raw = [(n, v) for n, v in raw if n.lower() != b"host"] + [(b"host", authority.encode("latin-1"))]
            headers = dict(headers)
            hosts = headers["host"] = [authority]
        elif target == "*" and method == "OPTIONS":   # asterisk-form (any other method: 400 below)
            return _pathless(d, hosts)
    if hosts is None:
        return local(d, 400, close=True)
    if len(hosts) != 1:     # more than one Host line (_host_refused)
        return local(d, 400, b"Bad Request", close=True)
    d.host = hosts[0]
    if d.host not in _HOSTS_OK and _host_refused(hosts):   # before any other answer; a known Host: one lookup
        return local(d, 400, b"Bad Request", close=True)
    if "expect" in headers and headers["expect"][0].lower() == "100-continue":
        d.expect_continue = True
    max_body = table.proxy.max_request_body_bytes
    if max_body and head.content_length is not None and head.content_length > max_body:
        return local(d, 413, b"Payload Too Large", close=True)
    if method == "CONNECT" or target[:1] != "/":
        # Envoy's codec refuses a target that is not origin-form (and CONNECT with one) with "Bad
        # Request"; a CONNECT to an authority matches no route (no connect_matcher): 404
        if method == "CONNECT" and target[:1] != "/":
            return local(d, 404, counter=NO_ROUTE, flags="NR", close=True)
        return local(d, 400, b"Bad Request", close=True)
    norm = normalize(method, target, table.escaped_slashes)
    if norm.__class__ is int:
        if explain is not None:
            from runtime_proxy.decide.normalize import explain_normalize

            explain_normalize(method, target, table.escaped_slashes, norm, explain)
        return local(d, norm, close=True)
    d.path, d.query = path, query = norm  # type: ignore[misc]  # a tuple: the int (400) returned above
    if explain is not None:
        from runtime_proxy.decide.normalize import explain_normalize

        explain_normalize(method, target, table.escaped_slashes, norm, explain)
    tracing = table.tracing
    if tracing is not None:
        _trace(d, headers, draws, tracing)
    if head.inbound:
        return _inbound(table, head, draws, d, method, path, target, raw, headers, explain)
    svc = table.service_for_host(d.host)
    if svc is None:
        if explain is not None:
            explain.note("host", "unknown", f"no service answers to `{d.host}`: 404",
                         {"host": d.host, "known": sorted(table.hosts)})
        return local(d, 404, counter=NO_ROUTE, flags="NR")
    d.service = svc.name
    if explain is not None:
        from runtime_proxy.decide.explain import explain_policy
        from runtime_proxy.decide.routing import explain_routes

        explain.note("host", "service", svc.name, {"host": d.host, "domains": list(svc.domains)})
        explain_policy(explain_routes(svc, method, path, query, headers, explain), explain)
    index = table.index[svc]
    view = index.view(method, path)
    select = view.select
    if select is None:
        route = select_route(view, method, path, query, headers)
        if view.cached:      # a view the index keeps and uses gets its function (routing.compile_select)
            view.uses += 1
            if view.uses >= COMPILE_AFTER:
                if select_size(view.routes) <= COMPILE_MAX_TESTS:
                    view.select = index.compiled(view.routes, compile_select)
                else:
                    view.cached = False     # too large to build on the request path: never asked again
    else:
        route = select(method, path, query, headers)
    if route is None:
        return local(d, 404, counter=NO_ROUTE, flags="NR")
    d.route = route
    if route.cors is not None:   # before the fault, as Envoy's CORS filter (decide/cors.py)
        if explain is None:
            preflight, d.cors = cors_mod.decide(route.cors, method, headers)
        else:
            preflight, d.cors = cors_mod.explain_decide(route.cors, method, headers, explain)
        if preflight:
            return local(d, 200, counter=None)
    if route.fault is not None:
        if explain is None:
            delay_ms, abort = fault_mod.decide(route.fault, draws.fault_delay(), draws.fault_abort())
        else:
            delay_ms, abort = fault_mod.explain_decide(route.fault, draws.fault_delay(), draws.fault_abort(), explain)
        if delay_ms:
            d.delay_ms = delay_ms
            d.counter, d.flags = DELAYS_INJECTED, "DI"
        if abort is not None:   # after the delay, if any: the abort is the answer
            d.status, d.body = abort, BODY_FAULT
            if route.split is not None and any(t.response_headers is not None for t in route.split.targets):
                # Envoy picks the weighted cluster with the route, before the fault filter: the
                # abort gets the picked arm's response changes too (measured, Envoy 1.40)
                arm = split_mod.pick(route.split, headers, draws.split())
                d.arm_response = arm.response_headers
            if not delay_ms:
                d.counter, d.flags = ABORTS_INJECTED, "FI"
            return d
    if route.split is not None:
        if explain is None:
            ref: CSubsetRef = split_mod.pick(route.split, headers, draws.split())
        else:
            ref = split_mod.explain_pick(route.split, headers, draws.split(), explain)
        if ref.request_headers is not None or ref.response_headers is not None:  # type: ignore[attr-defined]
            raw = _arm_changes(d, ref, raw)  # type: ignore[arg-type]  # a split's pick is a CWeightedSubset
    else:
        ref = route.to  # type: ignore[assignment]  # not None unless the route answers itself
        if ref is None:
            return _answer(d, route, target, headers, explain)
    d.cluster = ref.subset.cluster
    if route.mirrors:
        _mirrors(d, route.mirrors, draws.mirror(), explain)
    _upstream_head(d, head, draws, method, target, raw, headers, route, None)
    if route.rewrite is not None:
        _rewrite(d, route, target, explain)
    return d


def _arm_changes(d: Decision, arm: CWeightedSubset, raw: RawHeaders) -> RawHeaders:
    """A split arm's own header changes: its request changes applied to the request's lines now,
    before the route's (as Envoy applies a weighted cluster's, docs/language.md §8); its response
    changes kept for the response, where they come before the route's too."""
    d.arm_response = arm.response_headers
    if arm.request_headers is None:
        return raw
    pairs = [(n.lower().decode("latin-1"), decode_value(v)) for n, v in raw]
    changed = apply_changes(pairs, arm.request_headers, REQUEST_INLINE)
    return [(n.encode("latin-1"), encode_value(v)) for n, v in changed]


def _mirrors(d: Decision, mirrors: tuple[CMirror, ...], draw: float, explain: Explanation | None) -> None:
    """The mirrors that copy this request: one draw for them all, as Envoy (decide/mirror.py)."""
    residue = mirror_mod.stream_residue(draw)
    fired = tuple(m for m in mirrors if mirror_mod.copies(m.numerator, m.denominator, residue))
    if fired:
        d.mirrors = fired
    if explain is not None:
        for m in mirrors:
            explain.note("mirror", "copied" if m in fired else "not copied",
                         f"{m.percent:g} % of requests to {m.subset.cluster}",
                         {"percent": m.percent, "draw": draw, "cluster": m.subset.cluster,
                          "random": 0.0 < m.percent < 100.0, "residue": residue,
                          "fraction": [m.numerator, m.denominator]})


def _answer(d: Decision, route: CRoute, target: str, headers: HeaderMap, explain: Explanation | None) -> Decision:
    """A route that answers itself: a redirect (its `location`, an empty body) or a direct
    response (decide/answer.py). Neither is counted as a bad request, nor flagged."""
    redirect = route.redirect
    if redirect is not None:
        loc = location(redirect, d.host, d.path, d.query, target, headers.get("x-forwarded-proto"))
        if redirect.path is not None and redirect.path.kind != "path":
            new = redirect.path.apply(d.path) or d.path    # (an empty result: the path as it came, as Envoy)
            d.routed_path = upstream_target(new, d.query, target)
        d.extra = b"location: " + encode_value(loc) + b"\r\n"
        if explain is not None:
            explain.note("answer", "redirect", f"{redirect.status} to {loc}", {"status": redirect.status,
                                                                             "location": loc})
        return local(d, redirect.status, counter=None)
    direct = route.direct
    assert direct is not None  # compile_config: a route without `to` or `split` answers itself
    if explain is not None:
        explain.note("answer", "direct response", f"{direct.status}", {"status": direct.status,
                                                                      "body": direct.body.decode()})
    return local(d, direct.status, direct.body, counter=None)


def _rewrite(d: Decision, route: CRoute, target: str, explain: Explanation | None) -> None:
    """A forwarded route's rewrite of the upstream head (every attempt and the mirror copy send it)."""
    rw = route.rewrite
    assert rw is not None
    original = upstream_target(d.path, d.query, target)
    d.up_head = rewritten_head(d.up_head, rw, d.path, d.query, target, original)
    if rw.path is not None:
        d.routed_path = d.up_head.split(b" ", 2)[1].decode("latin-1")
    if rw.host:
        d.up_host = rw.host
    if explain is not None:
        new = d.up_head.split(b" ", 2)[1].decode("latin-1")
        explain.note("rewrite", "rewritten", f"{original} -> {new}" + (f", Host {rw.host}" if rw.host else ""),
                     {"from": original, "to": new, "host": rw.host or None})


def _trace(d: Decision, headers: HeaderMap, draws: RequestDraws, tracing: CTracing) -> None:
    """A traced hop's `x-request-id` and span (decide/trace.py), once the request is routable."""
    rids = headers.get("x-request-id")
    rid = rids[0] if rids is not None else draws.request_id().decode("latin-1")
    traced, rid = trace_reason(rid, tracing.per_10000, "x-client-trace-id" in headers)
    d.request_id = encode_value(rid)
    d.span = decide_span(headers, traced, rid, draws.trace_ids())


def _host_refused(hosts: list[str] | None) -> bool:
    """More than one Host line (RFC 9112 3.2: 400; stricter than Envoy, which joins them:
    docs/semantics.md, "Known limits"), or a Host with a byte an authority cannot have (Envoy's
    codec checks it with nghttp2_check_authority). A valid Host is remembered (_HOSTS_OK), so
    that an inbound request checks a known one with one set lookup."""
    if hosts is None:
        return False
    if len(hosts) != 1:
        return True
    host = hosts[0]
    if _HOST_BAD(host) is not None:
        return True
    if len(_HOSTS_OK) < 4096:
        _HOSTS_OK.add(host)
    return False


def _pathless(d: Decision, hosts: list[str] | None) -> Decision:
    """`OPTIONS *`, or an absolute-form target with a query and no path (`http://h?q`): Envoy's
    connection manager answers 404 for a path not starting with `/`, before any filter (no
    authorization, no route), once its codec has accepted the Host."""
    if hosts is None:
        return local(d, 400, close=True)
    if _host_refused(hosts):
        return local(d, 400, b"Bad Request", close=True)
    d.host = hosts[0]
    return local(d, 404, counter=None)


def _inbound(table: Table, head: RequestHead, draws: RequestDraws, d: Decision, method: str, path: str, target: str,
             raw: RawHeaders, headers: HeaderMap, explain: Explanation | None) -> Decision:
    """Authorization of the sidecar's own service, then its local application."""
    xfcc = head.xfcc
    if (xfcc is not None or XFCC in headers) and table.authorization.reads_xfcc:
        # Authorization sees the header as Envoy's RBAC does: the sidecar's own value over mTLS
        # (SANITIZE_SET writes it first), none over plaintext (SANITIZE removes it). (Nothing
        # else of the decision reads it: without a rule on it, the map stays as it came.)
        headers = dict(headers)
        headers.pop(XFCC, None)
        if xfcc is not None:
            headers[XFCC] = [xfcc.decode("latin-1").split(": ", 1)[1].rstrip("\r\n")]
    allowed, rule = authz_mod.decide(table.authorization, head.peer, method, path, headers)
    if explain is not None:
        from runtime_proxy.decide.authz import explain_rules

        explain_rules(table.authorization, head.peer, method, path, headers, explain)
    d.service = table.service
    d.rule = rule
    authz = table.authorization
    if not allowed:   # by a deny rule (the first filter), or by the default (the allow rules' filter)
        return local(d, 403, BODY_RBAC, flags="RBAC",
                     counter=RBAC_ALLOWED_DENIED if rule is None and authz.deny else RBAC_DENIED)
    if authz.deny:
        d.counter = RBAC_ALLOWED if authz.default_allow else RBAC_ALLOWED_TWICE
    elif not authz.default_allow:
        d.counter = RBAC_ALLOWED
    # (no deny rule and `default allow`: Envoy has no RBAC filter, nothing is counted)
    d.cluster = table.app.cluster
    _upstream_head(d, head, draws, method, target, raw, headers, None, xfcc)
    return d


def _upstream_head(d: Decision, head: RequestHead, draws: RequestDraws, method: str, target: str, raw: RawHeaders,
                   headers: HeaderMap, route: CRoute | None, xfcc: bytes | None) -> None:
    """The request line and headers every attempt sends (each attempt adds its own lines)."""
    up_target = upstream_target(d.path, d.query, target)
    parts = [method.encode(), b" ", up_target.encode("latin-1"), b" HTTP/1.1\r\n"]
    skip = UP_SKIP
    # with `tracing` the hop writes its own x-request-id, and the trace headers when it has a span
    # (a traceparent that does not parse is forwarded as received)
    if d.request_id:
        skip = _UP_SKIP_TRACED if d.span is not None else _UP_SKIP_RID
    if "connection" in headers or d.expect_continue:
        extra = {t.encode() for t in connection_tokens(headers.get("connection", ()))}
        if d.expect_continue:
            extra.add(b"expect")
        skip = skip | extra
    rid = d.request_id            # a traced hop's; else the one made for a request without one
    if not rid and "x-request-id" not in headers:
        rid = draws.request_id()
    rid_written = False
    if route is not None and not route.request_headers.empty:
        if rid:
            # As Envoy: the route's changes see the x-request-id the connection manager wrote (made,
            # or the traced hop's), and the tracer writes traceparent and tracestate after them.
            changed = changed_request_headers([*raw, (b"x-request-id", rid)], skip - _RID,
                                              route.request_headers, drop=_RID)
            rid_written = True
            if d.span is not None:
                changed = [(n, v) for n, v in changed if n not in TRACE_HEADERS]
        else:
            changed = changed_request_headers(raw, skip, route.request_headers)
        for n, v in changed:
            parts += (n, b": ", v, b"\r\n")
    else:
        for n, v in raw:
            ln = n.lower()
            if ln not in skip:
                parts += (ln, b": ", v, b"\r\n")
    if "te" in headers and b"te" not in skip - UP_SKIP and any(v.strip().lower() == "trailers" for v in headers["te"]):
        parts.append(b"te: trailers\r\n")         # the one TE value that is forwarded (as Envoy)
    if "x-forwarded-proto" not in headers:     # the caller's scheme, as Envoy: https over mTLS
        parts.append(b"x-forwarded-proto: https\r\n" if head.xfcc is not None else b"x-forwarded-proto: http\r\n")
    if rid and not rid_written:
        parts += (b"x-request-id: ", rid, b"\r\n")
    span = d.span
    if span is not None:
        parts += (b"traceparent: ", span.traceparent().encode(), b"\r\ntracestate: ",
                  encode_value(span.tracestate), b"\r\n")
    if xfcc is not None:   # inbound over mTLS: Envoy's SANITIZE_SET (the client's was skipped)
        parts.append(xfcc)
    d.up_head = b"".join(parts)
    if head.chunked:
        d.up_tail = b"transfer-encoding: chunked\r\n\r\n"
    elif head.content_length is not None:
        d.up_tail = b"content-length: %d\r\n\r\n" % head.content_length
    elif method not in BODYLESS_METHODS:
        # Envoy's HTTP/1 codec writes `content-length: 0` on a request without a body unless
        # its method is one that has none (HeaderUtility::requestShouldHaveNoBody)
        d.up_tail = b"content-length: 0\r\n\r\n"


def upstream_target(path: str, query: str, target: str) -> str:
    """The request target sent upstream: the normalised path and the query as it came; an empty
    query keeps its `?` (`/a?` goes out as `/a?`, as from Envoy)."""
    return path + "?" + query if query or "?" in target else path


def changed_request_headers(raw: RawHeaders, skip: frozenset[bytes], changes: CHeaderChanges,
                            drop: frozenset[bytes] = frozenset()) -> RawHeaders:
    """The request header lines `raw` ((name as sent, value) bytes) that go upstream, less the
    lower-case names in `skip`, after the route's `changes` (a CHeaderChanges): lower-case names.
    Values are decoded as `decode_value` does, so that a value that is not changed goes out as
    the bytes that came in. The names in `drop` are dropped from `raw` but its last line (a traced
    hop's own x-request-id, which replaces the received one)."""
    pairs: list[tuple[str, str]] = []
    last = len(raw) - 1
    for i, (n, v) in enumerate(raw):
        ln = n.lower()
        if ln not in skip and (ln not in drop or i == last):
            pairs.append((ln.decode("latin-1"), decode_value(v)))
    return [(n.encode("latin-1"), encode_value(v)) for n, v in apply_changes(pairs, changes, REQUEST_INLINE)]


# ---- the head as received -----------------------------------------------------------------------

# raw header name -> lower-case str (bounded: names are few; random names only fill it to the cap)
_NAMES: dict[bytes, str] = {}


def header_dict(raw: RawHeaders) -> tuple[HeaderMap, RawHeaders]:
    """The request's headers as routing reads them: lower-case name -> values (decoded as
    `decode_value`), and the header lines to forward. Envoy keeps one value for each of its
    inline headers (http.REQUEST_INLINE): their repeated lines are joined, in both results."""
    try:   # the usual head: names seen before, ASCII values, no name twice (else the loop below)
        hdict = {_NAMES[n]: [v.decode("ascii")] for n, v in raw}
        if len(hdict) == len(raw):
            return hdict, raw
    except (KeyError, UnicodeDecodeError):
        pass
    hdict = {}
    joined = False
    names = _NAMES
    for n, v in raw:
        name = names.get(n)
        if name is None:
            name = n.decode("latin-1").lower()
            if len(names) < 4096:
                names[n] = name
        try:
            value = v.decode("ascii")
        except UnicodeDecodeError:
            value = decode_value(v)
        values = hdict.get(name)
        if values is None:
            hdict[name] = [value]
        elif name in REQUEST_INLINE:
            if value:         # Envoy's appendToHeader: nothing for an empty value, no comma after one
                values[0] = values[0] + "," + value if values[0] else value
            joined = True
        else:
            values.append(value)
    return hdict, (_join_inline(raw) if joined else raw)


def _join_inline(raw: RawHeaders) -> RawHeaders:
    """The request's header lines with the repeated lines of each of Envoy's inline headers
    joined, with ",", into the first one (http.REQUEST_INLINE), as Envoy's appendToHeader does:
    an empty line adds nothing, and a value after an empty one comes without a comma."""
    out: RawHeaders = []
    first: dict[str, int] = {}
    for n, v in raw:
        name = n.decode("latin-1").lower()
        if name in REQUEST_INLINE:
            at = first.get(name)
            if at is not None:
                if v:
                    out[at] = (out[at][0], out[at][1] + b"," + v if out[at][1] else v)
                continue
            first[name] = len(out)
        out.append((n, v))
    return out
