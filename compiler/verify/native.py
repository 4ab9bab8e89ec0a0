"""The native proxy's decisions for one request, made by the function the running proxy uses.

Run by `meshc test` (compiler/verify/run.py) and by the equivalence suite's model layer.

`NativeModel(compiled)` loads `Compiled.native` as the proxy loads its file (pydantic in strict
JSON mode, then `loading.semantic_errors`) and compiles it into the proxy's table
(`table.compile_config`). `decide` then asks the proxy's one request decision,
`runtime_proxy.decide.request.decide_request`, exactly as `net.exchange.Exchange.start` does: the
request head is parsed by httptools with the proxy's own parser callbacks into the same header
dict, an inbound request first meets the listener's choice for its connection
(`decide.identity.accepts`) and, over mTLS, the peer identity and `x-forwarded-client-cert` line
that `server.TlsDownstream` reads from the verified certificate (`decide.identity`). Only the
random draws are chosen here, to tell a certain outcome from a random one (the lowest and the
highest draws, and the decision's own explanation of how a split picked); the response side is
`decide.response.response_lines` on a sample upstream response. Nothing of the request flow is
re-implemented here: this module only turns the proxy's decision into the suite's `Decision`.
"""

from __future__ import annotations

import json
from typing import Any

import httptools

from envoy_eval.decisions import (
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
from runtime_proxy.decide.cors import merge as merge_cors
from runtime_proxy.decide.explain import Explanation
from runtime_proxy.decide.http import RESPONSE_SKIP
from runtime_proxy.decide.identity import accepts, peer_identity, xfcc_line
from runtime_proxy.decide.request import Draws, Head, decide_request, header_dict
from runtime_proxy.decide.response import (
    RESPONSE_INLINE_BYTES,
    add_inline_line,
    local_reply_changes,
    response_lines,
)
from runtime_proxy.decide.table import compile_config

_ALMOST_ONE = 1.0 - 2.0 ** -40
_XFCC = b"x-forwarded-client-cert"


def peer_certificate(caller: str) -> dict:
    """What `getpeercert()` shows of a caller's verified certificate that the identity rules and
    the XFCC line read (its one URI SAN; the suite's certificates have an empty subject)."""
    return {"subject": (), "subjectAltName": (("URI", caller),)}


_OWS = (b" ", b"\t")


class _TooManyHeaders(Exception):
    pass


class _Head:
    """A request head collected by httptools callbacks that do what server.Downstream's do
    (`on_url`, `on_header`; tests/test_policy_tests.py feeds both the same heads and holds them
    equal). Not Downstream's own methods: importing the proxy's I/O (asyncio with it) would cost
    `meshc test` more than `meshc check` takes in all."""
    __slots__ = ("url", "raw", "done", "max_count", "too_large")

    def __init__(self, max_count: int):
        self.max_count = max_count    # on_header stops the parser past it (431 in the proxy)
        self.too_large = False
        self.url = b""
        self.raw: list[tuple[bytes, bytes]] = []
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if value[-1:] in _OWS:    # llhttp keeps trailing white space; Envoy's codec trims it
            value = value.rstrip(b" \t")
        self.raw.append((name, value))
        if len(self.raw) > self.max_count:   # the proxy stops the parser here (431)
            self.too_large = True
            raise _TooManyHeaders()

    def on_headers_complete(self) -> None:
        self.done = True


def parse_head(request, max_count: int):
    """(method, target, raw header pairs, hdict) as server.Downstream builds them, or a
    Decision when the parser refuses the head (server.Downstream.reject: 400 with the reason
    phrase). The wire form is the one the live layer sends (tests/equivalence/dataplanes.py
    `send`): latin-1, `host` first."""
    lines = [f"{request.method} {request.target} HTTP/1.1", f"host: {request.host}"]
    lines += [f"{n}: {v}" for n, v in request.headers]
    bad = Decision(request.kind, status=400, body="Bad Request")
    try:
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        return bad
    head = _Head(max_count)
    parser = httptools.HttpRequestParser(head)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass     # CONNECT or an upgrade: the head is complete, the parser stops (as server.Downstream)
    except httptools.HttpParserError:
        if head.too_large:   # more header lines than the sidecar's max_request_headers
            return Decision(request.kind, status=431, body="Request Header Fields Too Large")
        return bad
    if not head.done:
        return bad
    method = parser.get_method().decode("latin-1")
    hdict, raw = header_dict(head.raw)       # as server.Downstream.on_headers_complete
    return method, head.url.decode("latin-1"), raw, hdict


def upstream_lines(response) -> list[bytes]:
    """The upstream's response header lines as upstream.UpstreamConn.on_header formats them:
    lower-case names, values trimmed, the hop-by-hop and framing headers set apart, Envoy's
    inline headers joined (upstream.add_inline_line)."""
    lines: list[bytes] = []
    seen = None
    for n, v in response:
        ln, value = n.lower().encode("latin-1"), v.encode("latin-1").rstrip(b" \t")
        if ln in RESPONSE_SKIP:
            continue
        if ln in RESPONSE_INLINE_BYTES:
            seen = add_inline_line(lines, seen, ln, value)
        else:
            lines.append(b"%s: %s\r\n" % (ln, value))
    return lines


def _latin1_pairs(lines) -> tuple[tuple[str, str], ...]:
    out = []
    for line in lines:
        n, _, v = line[:-2].partition(b": ")
        out.append((n.decode("latin-1"), v.decode("latin-1")))
    return tuple(out)


class NativeModel:
    """`certs`: a caller's SPIFFE ID -> the DER of its certificate (by default
    `decisions.model_der`). `validate`: check the config first as the proxy's loader does (its
    pydantic contract and `semantic_errors`), about 0.3 s of imports; `meshc test` leaves it out
    for a config its own backend just emitted (tests/test_native_schema.py holds every emitted
    config to the contract), the equivalence suite keeps it."""

    def __init__(self, compiled, certs: dict[str, bytes] | None = None, validate: bool = True):
        self.certs = certs or {}
        data = compiled.native
        if validate:
            from runtime_proxy.config.loading import semantic_errors
            from runtime_proxy.config.model import Config

            Config.model_validate_json(json.dumps(data).encode(), strict=True)
            errors = semantic_errors(data)
            if errors:
                raise ValueError("the native config does not load: " + "; ".join(errors))
        self.table = compile_config(data)

    def decide(self, request, key_draw: int | None = None, response=SAMPLE_RESPONSE,
               why: dict | None = None) -> Decision:
        """`why`, when given, gets `rule` (inbound: the authorization rule that decided, None for
        the default) and `split` (outbound: the subset a split picked and how)."""
        kind = request.kind
        inbound = kind == "inbound"
        source = xfcc = None
        if inbound:
            tls = request.caller is not None
            if not accepts(self.table.mtls_mode, tls):
                return Decision(kind, status=REFUSED)
            if tls:   # server.TlsDownstream.connection_made; the handshake presented the table's identity
                cert = peer_certificate(request.caller)
                der = self.certs.get(request.caller) or model_der(request.caller)
                source = peer_identity(cert)
                xfcc = xfcc_line(self.table.identity, der, cert)
        parsed = parse_head(request, self.table.proxy.max_request_headers)
        if isinstance(parsed, Decision):
            return parsed
        method, target, raw, hdict = parsed
        head = Head(inbound, method, target, raw, hdict, None, False, 0, source, xfcc)
        # the same request with the lowest and the highest draws: an outcome both give is certain
        low = decide_request(self.table, head, Draws(0.0, 0.0, key_draw or 0, 0.0, b"-"))
        explanation = Explanation()
        high = decide_request(self.table, head, Draws(_ALMOST_ONE, _ALMOST_ONE, key_draw or 0, _ALMOST_ONE, b"-"),
                              explanation)
        if why is not None:
            why["rule"] = high.rule
            why["steps"] = explanation.steps
        if high.route is None:
            if high.status:
                return Decision(kind, status=high.status, body=high.body.decode())
            return Decision(kind, path=_target_of(high), xfcc=_lines_of(high, "x-forwarded-client-cert"))
        route = high.route
        if route.redirect is not None or route.direct is not None:   # the route answers itself
            lines = local_reply_changes(high.body, high.extra, route.response_headers).split(b"\r\n")
            loc = high.extra[len(b"location: "):-2].decode("latin-1") if high.extra else None
            return Decision(kind, status=high.status, body=high.body.decode("latin-1"),
                            route=f"{high.service}/{route.name}", location=loc,
                            response_headers=_latin1_pairs(line + b"\r\n" for line in lines if line))
        r = route.retry
        retry = None if r is None else canonical_retry(
            r.num_retries, r.retry_on, r.retriable_status_codes, r.per_try_timeout_ms,
            r.backoff_base_ms, r.backoff_max_ms)
        mirror = canonical_mirror([(m.subset.cluster, m.percent) for m in route.mirrors])
        f = route.fault
        fault = None if f is None else canonical_fault(f.delay_ms, f.delay_percent, f.abort_status, f.abort_percent)
        common: dict[str, Any] = {"route": f"{high.service}/{route.name}", "timeout_ms": route.timeout_ms,
                                  "retry": retry, "fault": fault, "mirror": mirror}
        cors = _cors_pairs(high.cors)
        if high.status == 200 and high.cors:   # a CORS preflight, answered before the fault could act
            common["fault"] = None
            return Decision(kind, status=200, fault_random=False, cors=cors, **common)
        if high.status:        # aborted even with the highest draw: a certain abort
            return Decision(kind, status=high.status, body=high.body.decode(), fault_random=False, cors=cors,
                            **common)
        common["fault_random"] = low.status != 0
        cluster, candidates = high.cluster, None
        split = next((s for s in explanation.steps if s.what == "split"), None)
        if split is not None and key_draw is None and split.detail == "by the random draw":
            targets = route.split.targets if route.split is not None else ()
            cluster, candidates = canonical_pick(t.subset.cluster for t in targets if t.weight > 0)
            if candidates is not None and any(t.request_headers is not None or t.response_headers is not None
                                              for t in targets):   # the heads depend on the draw
                return Decision(kind, cluster=cluster, candidates=candidates, path=_target_of(high), cors=cors,
                                **common)
        upstream = visible_request_headers(_headers_of(high))
        lines = response_lines(route, upstream_lines(response), [], high.arm_response)
        if high.cors:   # as the proxy writes them (net/exchange.py): in place, or after the other lines
            lines, tail = merge_cors(lines, high.cors)
            lines = [*lines, *(x + b"\r\n" for x in tail.split(b"\r\n") if x)]
        return Decision(kind, cluster=cluster, candidates=candidates, path=_target_of(high),
                        upstream_headers=upstream, response_headers=_latin1_pairs(lines),
                        upstream_host=high.up_host or None, cors=cors, **common)


def _cors_pairs(lines: bytes) -> tuple[tuple[str, str], ...] | None:
    """A decision's CORS header lines as (name, value) pairs; None: not a CORS request."""
    if not lines:
        return None
    return tuple((n.decode("latin-1"), v.decode("latin-1"))
                 for n, _, v in (x.partition(b": ") for x in lines.split(b"\r\n") if x))


def _head_lines(d) -> list[bytes]:
    return d.up_head.split(b"\r\n")


def _target_of(d) -> str:
    """The request target the decision sends upstream (its request line)."""
    return _head_lines(d)[0].split(b" ")[1].decode("latin-1")


def _headers_of(d) -> list[tuple[str, str]]:
    out = []
    for line in _head_lines(d)[1:]:
        if line:
            n, _, v = line.partition(b": ")
            out.append((n.decode("latin-1"), v.decode("latin-1")))
    return out


def _lines_of(d, name: str) -> tuple[str, ...]:
    return tuple(v for n, v in _headers_of(d) if n == name)
