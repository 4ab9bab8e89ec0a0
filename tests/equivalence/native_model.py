"""The native proxy's decisions for one request, made by the functions the running proxy uses.

`NativeModel(compiled)` loads `Compiled.native` as the proxy loads its file (pydantic in strict
JSON mode, then `loading.semantic_errors`), compiles it with `table.compile_config` and builds
the route index (`route_index.build`), as `server.Runtime.apply` does. `decide` then follows
`exchange.Exchange.start` / `start_inbound` / `forward_outbound` / `build_upstream_head` /
`on_response_head` step by step, calling the same pure functions: the request head is parsed by
httptools (the proxy's parser) into the same `hdict`, then `normalize.normalize`,
`table.service_for_host`, `routing.select_route` over the route index's view,
`fault.decide`, `split.pick` / `split.key_value`, `authz.decide` and `headers.apply_changes`.
An inbound request first meets the inbound listener's choice for its connection (the mTLS mode,
runtime_proxy/listener.py) and, over mTLS, the peer identity and the `x-forwarded-client-cert`
line that `server.TlsDownstream` reads from the verified certificate (`tls.peer_identity`,
`tls.xfcc_line`). Only the random draws are chosen here (to tell a certain outcome from a random
one) and the I/O is left out.
"""

from __future__ import annotations

import json

import httptools

from runtime_proxy.decide import authz as authz_mod
from runtime_proxy.decide import fault as fault_mod
from runtime_proxy.decide import split as split_mod
from runtime_proxy.net import tls as tls_mod
from runtime_proxy.config.model import Config
from runtime_proxy.net.exchange import UP_SKIP, changed_request_headers, changed_response_lines, upstream_target
from runtime_proxy.net.http import BODY_FAULT, BODY_RBAC, RESPONSE_SKIP, connection_tokens
from runtime_proxy.config.loading import semantic_errors
from runtime_proxy.decide.normalize import normalize
from runtime_proxy.decide.route_index import build as build_route_index
from runtime_proxy.decide.routing import select_route
from runtime_proxy.net.server import Downstream, header_dict
from runtime_proxy.decide.table import compile_config
from runtime_proxy.net.upstream import RESPONSE_INLINE_BYTES, add_inline_line
from tests.equivalence.decisions import (REFUSED, SAMPLE_RESPONSE, Decision, canonical_fault, canonical_mirror,
                                         canonical_pick, canonical_retry, model_der, visible_request_headers)

_ALMOST_ONE = 1.0 - 2.0 ** -40
_XFCC = b"x-forwarded-client-cert"


def admitted(mode: str, tls: bool) -> bool:
    """Whether the inbound listener takes a connection (listener.TlsListener._handle): `strict`
    closes a plaintext client; a TLS client of a plaintext listener (`disable`: the event loop's
    own server, or the TLS listener after a reload turned TLS off) gets the parser's plaintext
    400 to its ClientHello, which no TLS client reads as an answer."""
    if mode == "disable":
        return not tls
    return tls or mode == "permissive"


def peer_certificate(caller: str) -> dict:
    """What `getpeercert()` shows of a caller's verified certificate that the identity rules and
    the XFCC line read (its one URI SAN; the suite's certificates have an empty subject)."""
    return {"subject": (), "subjectAltName": (("URI", caller),)}


class _Head:
    """What server.Downstream's httptools callbacks need to collect a request head; the
    callbacks themselves are Downstream's own (`on_url`, `on_header`)."""
    __slots__ = ("url", "raw", "parsing", "done")

    def __init__(self):
        self.url = b""
        self.raw = []
        self.parsing = None
        self.done = False

    on_url = Downstream.on_url
    on_header = Downstream.on_header

    def on_headers_complete(self):
        self.done = True


def parse_head(request):
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
    head = _Head()
    parser = httptools.HttpRequestParser(head)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return bad
    if not head.done:
        return bad
    method = parser.get_method().decode("latin-1")
    hdict, raw = header_dict(head.raw)       # as server.Downstream.on_headers_complete
    return method, head.url.decode("latin-1"), raw, hdict


def response_lines(response) -> list[bytes]:
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
    `decisions.model_der`)."""

    def __init__(self, compiled, certs: dict[str, bytes] | None = None):
        self.certs = certs or {}
        data = compiled.native
        raw = json.dumps(data).encode()
        self.config = Config.model_validate_json(raw, strict=True)
        errors = semantic_errors(data)
        if errors:
            raise ValueError("the native config does not load: " + "; ".join(errors))
        self.table = compile_config(data)
        self.route_index = build_route_index(self.table)

    def decide(self, request, key_draw: int | None = None, response=SAMPLE_RESPONSE) -> Decision:
        kind = request.kind
        source = xfcc_line = None
        if kind == "inbound":
            tls = request.caller is not None
            if not admitted(self.table.mtls_mode, tls):
                return Decision(kind, status=REFUSED)
            if tls:   # server.TlsDownstream.connection_made; the handshake presented config.identity's cert
                cert = peer_certificate(request.caller)
                der = self.certs.get(request.caller) or model_der(request.caller)
                source = tls_mod.peer_identity(cert)
                xfcc_line = tls_mod.xfcc_line(self.table.identity, der, cert)
        parsed = parse_head(request)
        if isinstance(parsed, Decision):
            return parsed
        method, target, raw, hdict = parsed
        hosts = hdict.get("host")
        if hosts is None or len(hosts) != 1:
            return Decision(kind, status=400)
        host = hosts[0]
        table = self.table
        if method == "CONNECT" or target[:1] != "/":      # exchange.start
            if method == "CONNECT" and target[:1] != "/":
                return Decision(kind, status=404)
            return Decision(kind, status=400, body="Bad Request")
        norm = normalize(method, target, table.escaped_slashes)
        if norm.__class__ is int:
            return Decision(kind, status=norm)
        path, query = norm
        forwarded = upstream_target(path, query, target)     # exchange.build_upstream_head
        if kind == "inbound":
            # exchange.start_inbound: the verified identity (no identity header is configured);
            # authorization sees our XFCC over mTLS, none over plaintext
            if xfcc_line is not None or "x-forwarded-client-cert" in hdict:
                hdict.pop("x-forwarded-client-cert", None)
                if xfcc_line is not None:
                    hdict["x-forwarded-client-cert"] = [xfcc_line.decode("latin-1").split(": ", 1)[1].rstrip("\r\n")]
            allowed, _rule = authz_mod.decide(table.authorization, source, method, path, hdict)
            if not allowed:
                return Decision(kind, status=403, body=BODY_RBAC.decode())
            # exchange.build_upstream_head: the caller's XFCC lines unless skipped, then ours
            lines = [] if _XFCC in UP_SKIP else [v for n, v in raw if n.lower() == _XFCC]
            if xfcc_line is not None:
                lines.append(xfcc_line[len(_XFCC) + 2:-2])
            return Decision(kind, path=forwarded, xfcc=tuple(v.decode("latin-1") for v in lines))
        svc = table.service_for_host(host)
        if svc is None:
            return Decision(kind, status=404)
        route = select_route(self.route_index[svc].view(method, path), method, path, query, hdict)
        if route is None:
            return Decision(kind, status=404)
        r = route.retry
        retry = None if r is None else canonical_retry(
            r.num_retries, r.retry_on, r.retriable_status_codes, r.per_try_timeout_ms,
            r.backoff_base_ms, r.backoff_max_ms)
        mirror = None if route.mirror is None else canonical_mirror(
            [(route.mirror.subset.cluster, route.mirror.percent)])
        f = route.fault
        fault = None if f is None else canonical_fault(f.delay_ms, f.delay_percent, f.abort_status, f.abort_percent)
        fault_random = False
        common = dict(route=f"{svc.name}/{route.name}", timeout_ms=route.timeout_ms, retry=retry,
                      fault=fault, mirror=mirror)
        if route.fault is not None:
            # exchange.start: the same call with the lowest and the highest draws
            _d0, abort_low = fault_mod.decide(route.fault, 0.0, 0.0)
            _d1, abort_high = fault_mod.decide(route.fault, _ALMOST_ONE, _ALMOST_ONE)
            if abort_low is not None and abort_high is not None:
                return Decision(kind, status=abort_high, body=BODY_FAULT.decode(), fault_random=False, **common)
            fault_random = abort_low is not None
        common["fault_random"] = fault_random
        # exchange.forward_outbound: the pick
        cluster = candidates = None
        if route.split is not None:
            split = route.split
            keyed = split.key_header is not None and split_mod.key_value(hdict.get(split.key_header)) is not None
            if keyed or key_draw is not None:
                cluster = split_mod.pick(split, hdict, key_draw if key_draw is not None else 0).subset.cluster
            else:
                cluster, candidates = canonical_pick(t.subset.cluster for t in split.targets if t.weight > 0)
        else:
            cluster = route.to.subset.cluster
        # exchange.build_upstream_head: the headers sent as they came, less UP_SKIP and the
        # `connection` tokens, then the route's changes
        skip = UP_SKIP
        if "connection" in hdict:
            skip = skip | {t.encode() for t in connection_tokens(hdict.get("connection", ()))}
        if not route.request_headers.empty:
            up = changed_request_headers(raw, skip, route.request_headers)
        else:
            up = [(n.lower(), v) for n, v in raw if n.lower() not in skip]
        upstream = tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in up)
        # exchange.on_response_head: the upstream's header lines (upstream.Connection.on_header
        # formats them), then the route's changes
        lines = response_lines(response)
        if not route.response_headers.empty:
            lines = changed_response_lines(lines, None, route.response_headers)
        return Decision(kind, cluster=cluster, candidates=candidates, path=forwarded,
                        upstream_headers=visible_request_headers(upstream),
                        response_headers=_latin1_pairs(lines), **common)
