"""`meshc trace`'s engine: one request through both hops, decided by the proxy's own function.

The program is compiled once (compiler/api.py); the native config of each sidecar the request
meets is emitted in memory and compiled into the proxy's table (runtime_proxy/decide/table.py),
and `runtime_proxy.decide.request.decide_request` decides each hop with an `Explanation`, exactly
as the running proxy decides it (net/exchange.py). Nothing of the decision is re-implemented
here: this module builds the request heads the two sidecars receive, picks the random draws,
and turns the decisions and their explanations into plain data (`Trace.data()`, the JSON shape,
`schema` 1) that compiler/cli/trace_render.py prints for people.

The hops:
1. With `--from SERVICE`: SERVICE's sidecar, outbound. Its decision (Host -> destination, route,
   fault, split, mirror, the upstream head) is taken; a local reply ends the trace there.
2. The destination's sidecar, inbound: first the listener's choice for the connection
   (`decide.identity.accepts`: mTLS or plaintext against the destination's mode), then the
   decision (normalisation, authorization, the local application). The head it receives is the
   one the first hop sends (its request line and header lines), with the identity the caller's
   certificate carries (`--identity` overrides it; `none`: a plaintext, unauthenticated peer).
   Without `--from`, the caller is outside the mesh: the destination is the service whose Host
   domains hold the URL's host (what such a client resolves), and it connects to the
   destination's inbound listener directly, plaintext unless `--identity ID` is given.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from runtime_proxy.decide.explain import Explanation
from runtime_proxy.decide.identity import accepts, xfcc_line
from runtime_proxy.decide.request import Decision, Head, decide_request, header_dict
from runtime_proxy.decide.table import Table, compile_config

SCHEMA = 1
_ALMOST_ONE = 1.0 - 2.0 ** -40          # the highest draw: a percentage below 100 never applies
UNSEEDED_REQUEST_ID = b"00000000-0000-4000-8000-000000000000"
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.S)
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class TraceInputError(ValueError):
    """A request, header or option that cannot be traced: exit 1 with its message."""


class Request:
    """The request as given: `target` is origin-form (path and query as written), `headers` the
    -H values in order (a Host given with -H for a path is `host`)."""

    def __init__(self, method: str, url: str, host: str, target: str, headers: list[tuple[str, str]]) -> None:
        self.method, self.url, self.host, self.target, self.headers = method, url, host, target, headers


def parse_request(text: str, headers: list[str]) -> Request:
    """'METHOD URL' and the -H values. The URL is absolute (`http://HOST[:PORT]/path?query`), or
    an origin-form target (`/path`) with a `-H 'host: ...'`."""
    parts = text.split()
    if len(parts) != 2:
        raise TraceInputError(f"the request must be 'METHOD URL', e.g. 'GET http://reviews/reviews/0': got {text!r}")
    method, url = parts
    if TOKEN.fullmatch(method) is None:
        raise TraceInputError(f"`{method}` is not an HTTP method (a token: letters, digits, !#$%&'*+-.^_`|~)")
    pairs = [parse_header(h) for h in headers]
    given_host = [v for n, v in pairs if n.lower() == "host"]
    m = _URL.fullmatch(url)
    if m is not None:
        scheme, authority, rest = m.group(1).lower(), m.group(2), m.group(3)
        if scheme not in ("http", "https"):
            raise TraceInputError(f"`{url}`: the scheme must be http or https, not {scheme}")
        if not authority:
            raise TraceInputError(f"`{url}` names no host")
        if _BAD_VALUE.search(authority) or " " in authority:
            raise TraceInputError(f"`{url}`: the host `{authority}` has a control character or a space")
        try:
            authority.encode("latin-1")
        except UnicodeEncodeError:
            raise TraceInputError(f"`{url}`: the host `{authority}` has a character outside latin-1 (write an "
                                  "internationalised name in its xn-- form)") from None
        if given_host:
            raise TraceInputError("a Host header with an absolute URL: give the host once, in the URL "
                                  "(or an origin-form target such as /path with -H 'host: NAME')")
        target = rest or "/"
        if target[:1] == "?":
            target = "/" + target
        host = authority
    elif url[:1] == "/":
        if len(given_host) != 1:
            raise TraceInputError(f"`{url}` is a path: name the host in the URL (http://HOST{url}) or with one "
                                  "-H 'host: NAME'")
        target, host = url, given_host[0]
        pairs = [(n, v) for n, v in pairs if n.lower() != "host"]
    else:
        raise TraceInputError(f"`{url}` is not a URL: write http://HOST/path (or /path with -H 'host: NAME')")
    if _BAD_VALUE.search(target) or " " in target:
        raise TraceInputError(f"`{target}`: a request target has no spaces or control characters "
                              "(percent-encode them: %20)")
    return Request(method, url, host, target, pairs)


def parse_header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon:
        raise TraceInputError(f"-H {text!r}: a header is 'name: value'")
    if TOKEN.fullmatch(name) is None:
        raise TraceInputError(f"-H {text!r}: `{name}` is not a header name (a token, no spaces)")
    value = value.strip(" \t")
    if _BAD_VALUE.search(value):
        raise TraceInputError(f"-H {text!r}: a header value has no control characters")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise TraceInputError(f"-H {text!r}: a header value is bytes: write it in latin-1 "
                              "(ASCII, or percent-encode)") from None
    return name, value


class TraceDraws:
    """The decision's random draws (request.Draws' protocol), each noted when the decision asks
    for it. Unseeded, they are the draws under which nothing random happens: no fault delay or
    abort below 100 %, no mirror copy below 100 %, a split's bucket 0 (the first arm with a
    weight), a fixed request id; with a seed, the draws of `random.Random(seed)`."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self.rng = None
        if seed is not None:
            import random

            self.rng = random.Random(seed)
        self.made: list[dict[str, Any]] = []

    def _note(self, name: str, value: Any) -> Any:
        self.made.append({"draw": name, "value": value.decode() if isinstance(value, bytes) else value})
        return value

    def _float(self) -> float:
        return self.rng.random() if self.rng is not None else _ALMOST_ONE

    def fault_delay(self) -> float:
        return self._note("fault_delay", self._float())

    def fault_abort(self) -> float:
        return self._note("fault_abort", self._float())

    def split(self) -> int:
        return self._note("split", self.rng.getrandbits(64) if self.rng is not None else 0)

    def mirror(self) -> float:
        return self._note("mirror", self._float())

    def request_id(self) -> bytes:
        if self.rng is None:
            return self._note("request_id", UNSEEDED_REQUEST_ID)
        import uuid

        return self._note("request_id", str(uuid.UUID(int=self.rng.getrandbits(128), version=4)).encode())

    def trace_ids(self) -> int:
        """A traced hop's new trace and span ids (`mesh { tracing }`): 192 bits; unseeded, fixed."""
        return self._note("trace_ids", self.rng.getrandbits(192) if self.rng is not None else 1)


def stand_in_der(spiffe_id: str) -> bytes:
    """A trace has no certificate: the bytes whose SHA-256 stands for the caller's in the
    `x-forwarded-client-cert` line (By and URI are the real values)."""
    return b"meshc trace: no certificate of " + spiffe_id.encode()


def stand_in_xfcc(own_id: str, peer: str) -> bytes:
    """The `x-forwarded-client-cert` line a sidecar whose SPIFFE ID is `own_id` writes for a
    caller `peer` over mTLS, with the stand-in certificate (`meshc trace` and `meshc diff`)."""
    return xfcc_line(own_id, stand_in_der(peer), {"subjectAltName": (("URI", peer),)})


def table_of(comp: Any, service: str) -> Table:
    """The proxy's table of `service`'s sidecar: its native config, emitted in memory."""
    emitted = comp.emit("native", [service])
    return compile_config(orjson.loads(emitted.files[f"{service}.native.json"]))


def _steps(explanation: Explanation) -> list[dict[str, Any]]:
    return [{"what": s.what, "outcome": s.outcome, "detail": s.detail, "data": s.data} for s in explanation.steps]


def _head_of(d: Decision) -> tuple[str, str, list[tuple[bytes, bytes]]]:
    """(method, target, header lines) of the request a decision forwards: its request line and the
    header lines every attempt sends."""
    lines = d.up_head.split(b"\r\n")
    method, target, _ = lines[0].decode("latin-1").split(" ", 2)
    raw = []
    for line in lines[1:] + d.up_tail.split(b"\r\n"):
        if line:
            n, _, v = line.partition(b": ")
            raw.append((n, v))
    return method, target, raw


def _reply(d: Decision) -> dict[str, Any]:
    from runtime_proxy.decide.http import reason_phrase

    return {"status": d.status, "reason": reason_phrase(d.status), "body": d.body.decode("latin-1"),
            "flags": d.flags or None, "delay_ms": d.delay_ms}


RESULT_KEYS = ("answered_by", "forwarded", "refused", "status", "reason", "body", "flags", "delay_ms", "rule")


def result(**values: Any) -> dict[str, Any]:
    """The trace's answer, every key always there (null when it does not apply): `answered_by`
    (a sidecar or the application; null when nobody is reached), `forwarded` (to the
    destination's application), `refused` (the connection), the local reply's `status`,
    `reason`, `body`, `flags` and fault `delay_ms`, the authorization `rule` that decided."""
    out: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    out.update(forwarded=False, refused=False)
    out.update(values)
    return out


def _forwarded(d: Decision) -> dict[str, Any]:
    method, target, raw = _head_of(d)
    return {"method": method, "target": target,
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in raw]}


class Trace:
    """One traced request: its hops and the answer."""

    def __init__(self, request: Request, caller: str | None, identity: str | None, seed: int | None) -> None:
        self.request = request
        self.caller = caller
        self.identity_option = identity          # None: the default; "none"; or a SPIFFE ID
        self.draws = TraceDraws(seed)
        self.hops: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {}

    def data(self) -> dict[str, Any]:
        r = self.request
        return {
            "schema": SCHEMA,
            "request": {"method": r.method, "url": r.url, "host": r.host, "target": r.target,
                        "headers": [list(h) for h in r.headers], "from": self.caller,
                        "identity": self.identity_option},
            "draws": {"seed": self.draws.seed, "made": self.draws.made},
            "hops": self.hops,
            "result": self.result,
        }


def run(comp: Any, request: Request, caller: str | None, identity: str | None, seed: int | None) -> Trace:
    """Trace `request` through the compiled program `comp` (an api.Compilation without errors).
    Raises TraceInputError for a `--from` that names no service."""
    program = comp.ir
    names = [s.name for s in program.services]
    if caller is not None and caller not in names:
        from difflib import get_close_matches

        close = get_close_matches(caller, names, 1)
        raise TraceInputError(f"--from {caller}: no service `{caller}` in the program"
                              + (f" (did you mean `{close[0]}`?)" if close else "")
                              + "; its services: " + ", ".join(sorted(names)))
    if identity not in (None, "none") and not identity.startswith("spiffe://"):
        raise TraceInputError(f"--identity {identity}: a SPIFFE ID (spiffe://TRUST-DOMAIN/...) or `none`")
    if identity not in (None, "none") and (not identity.isascii() or _BAD_VALUE.search(identity)
                                           or " " in identity):
        raise TraceInputError(f"--identity {identity}: a SPIFFE ID is ASCII without spaces or control characters "
                              "(percent-encode anything else)")
    trace = Trace(request, caller, identity, seed)
    raw = [(b"host", request.host.encode("latin-1"))] + [(n.encode("latin-1"), v.encode("latin-1"))
                                                         for n, v in request.headers]
    if caller is not None:
        table = table_of(comp, caller)
        hdict, raw1 = header_dict(raw)
        why = Explanation()
        d = decide_request(table, Head(False, request.method, request.target, raw1, hdict), trace.draws, why)
        hop: dict[str, Any] = {"hop": 1, "sidecar": caller, "listener": "outbound", "identity": table.identity,
                               "steps": _steps(why)}
        trace.hops.append(hop)
        if d.status:
            hop["reply"] = _reply(d)
            trace.result = result(answered_by=f"{caller}'s sidecar (outbound)", **_reply(d))
            return trace
        sub = table.subsets[d.cluster]  # type: ignore[index]  # forwarded: a cluster
        dest = table.services[sub.service]
        route = d.route
        assert route is not None   # an outbound decision that forwards has a route
        hop["forward"] = {"service": dest.name, "route": route.name, "cluster": d.cluster, "subset": sub.name,
                          "endpoints": [f"{h}:{p}" for h, p in sub.endpoints], "mtls": dest.mtls,
                          "sni": dest.sni if dest.mtls else None,
                          "server_identity": dest.identity if dest.mtls else None,
                          "delay_ms": d.delay_ms, "mirror": [m.subset.cluster for m in d.mirrors],
                          "request": _forwarded(d)}
        method, target, raw2 = _head_of(d)
        tls = dest.mtls
        peer = table.identity if tls else None
        destination = dest.name
    else:
        found = _service_for_host(program, request.host)
        if found is None:
            trace.result = result(reason=f"no service of the program answers to `{request.host}`: a caller "
                                         "outside the mesh reaches none (with --from, the caller's sidecar "
                                         "answers 404)")
            return trace
        destination = found
        method, target, raw2 = request.method, request.target, raw
        tls, peer = False, None
    if identity == "none":
        tls, peer = False, None
    elif identity is not None:
        tls, peer = True, identity
    table2 = table_of(comp, destination)
    hop2: dict[str, Any] = {"hop": len(trace.hops) + 1, "sidecar": destination, "listener": "inbound",
                            "identity": table2.identity,
                            "connection": {"tls": tls, "peer": peer, "mode": table2.mtls_mode,
                                           "accepted": accepts(table2.mtls_mode, tls)}}
    trace.hops.append(hop2)
    if not hop2["connection"]["accepted"]:
        hop2["steps"] = []
        why_refused = ("its mode `strict` closes a plaintext connection" if not tls
                       else "its mode `disable` serves plaintext only: a TLS handshake fails")
        trace.result = result(answered_by=f"{destination}'s sidecar (inbound)", refused=True,
                              reason=f"the connection is refused: {why_refused}"
                              + ("; the caller's sidecar answers 503 (after its retries, if any)"
                                 if caller is not None else ""))
        return trace
    hdict2, raw2 = header_dict(raw2)
    xfcc = stand_in_xfcc(table2.identity, peer) if tls and peer is not None else None
    why2 = Explanation()
    d2 = decide_request(table2, Head(True, method, target, raw2, hdict2, peer=peer, xfcc=xfcc), trace.draws, why2)
    hop2["steps"] = _steps(why2)
    if d2.status:
        hop2["reply"] = _reply(d2)
        trace.result = result(answered_by=f"{destination}'s sidecar (inbound)", rule=d2.rule, **_reply(d2))
        return trace
    hop2["forward"] = {"service": destination, "cluster": d2.cluster,
                       "application": f"{table2.app.host}:{table2.app.port}", "rule": d2.rule,
                       "request": _forwarded(d2)}
    trace.result = result(answered_by=f"{destination}'s application", forwarded=True, rule=d2.rule,
                          delay_ms=trace.hops[0].get("forward", {}).get("delay_ms", 0))
    return trace


def _service_for_host(program: Any, host: str) -> str | None:
    """The service whose Host domains hold `host` (ASCII case-insensitive, as a sidecar's table
    looks it up): where a client outside the mesh that resolves the name connects."""
    from compiler.ir.names import seen_from, service_for_host

    # (no caller: a short name of a name several namespaces declare names none of them)
    return service_for_host(((svc.name, seen_from(svc.name, svc.namespace, svc.domains, None))
                             for svc in program.services), host)
