"""The fast layer's observation: what a data plane decides for one request, without sockets.

Both evaluators of the model layer return a `Decision`: `envoy_model.EnvoyModel` (an evaluator
of the emitted Envoy JSON, written from Envoy's documented and measured semantics) and
`native_model.NativeModel` (the native proxy's own pure decision functions). Two decisions are
compared with `==`; `diff` and `side_by_side` explain a difference.

Outbound request (to the sidecar's outbound listener; Host picks the destination):

- `status`: the local reply status (400 path rejected by normalisation, 404 no virtual host or
  no route, a fault abort's status), None when the request is forwarded;
- `body`: the local reply's body;
- `route`: `SERVICE/ROUTE` of the route that took the request (Envoy's route name without the
  `/N` of one match of a multi-match route), None when no route did;
- `cluster`: the picked cluster when the pick is deterministic for this request, else
  `candidates`: the clusters with a weight > 0 that a random draw picks from (sorted);
- `path`: the path and query forwarded upstream;
- `upstream_headers`: the request headers the upstream gets after the route's changes, in
  order, excluding what each proxy adds or strips itself (`ignored_request_header`); values
  are the bytes on the wire shown as latin-1 (a request is sent as latin-1, policy values are
  UTF-8);
- `response_headers`: the route's response changes applied to a fixed sample upstream response;
- `timeout_ms`, `retry` (`RetryDecision`), `fault` (`FaultDecision`), `mirror` (a tuple of
  (cluster, percent)): the route's settings, in one canonical form (a setting that can never
  act is None: no retries, 0 % faults and mirrors);
- `location`: a redirect's `location` (a route that answers itself has `status`, `body`, `route`
  and, as `response_headers`, its own header lines after the route's response changes);
- `upstream_host`: the Host a rewrite sends upstream (None without a Host rewrite);
- `fault_random`: the abort applies to a random share of requests (neither 0 % nor 100 %),
  so the request is shown as forwarded;
- `cors`: a CORS request's CORS response headers (a preflight: status 200 and its whole answer),
  None for any other request.

Inbound request (to the sidecar's inbound listener, authorization of `client`, from a caller
with a SPIFFE ID over mTLS or from a plaintext one): `status` (`REFUSED` when the listener does
not take the connection at all: a plaintext caller of a `strict` listener, a TLS caller of a
plaintext one; 400 path rejected, 403 denied, None allowed), `body`, `path`, and `xfcc`: the
`x-forwarded-client-cert` values the local application gets (a request that is forwarded).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

# Request headers neither side's own additions or removals should show: the proxies write
# x-request-id, x-forwarded-* and x-envoy-* themselves, and strip or rewrite hop-by-hop ones. The
# trace headers (x-request-id, traceparent, tracestate) are the live layer's to compare, by what
# they mean (dataplanes.trace_semantics): the model of Envoy leaves tracing out.
IGNORED_REQUEST_EXACT = frozenset({"host", "x-request-id", "traceparent", "tracestate", "content-length",
                                   "connection", "keep-alive", "proxy-connection", "te", "trailer",
                                   "transfer-encoding", "upgrade"})
IGNORED_PREFIXES = ("x-envoy-", "x-forwarded-")

# The response an upstream sends in the model layer, before the route's response changes.
# Values, here and in every Decision, are bytes shown as latin-1 (`caf\xc3\xa9` is UTF-8 `café`).
SAMPLE_RESPONSE = (("content-type", "application/json"), ("x-backend", "sample"), ("x-r0", "1"),
                   ("cache-control", "no-cache"), ("x-r0", "2"), ("x-note", "caf\xc3\xa9"), ("x-raw", "\xfc"),
                   ("vary", ""), ("vary", "a"), ("vary", ""), ("vary", "b"), ("x-pad", "t \t"))

REFUSED = 0     # no HTTP exchange: the connection was refused (as the live layer's status 0)
BODY_FAULT = "fault filter abort"
BODY_RBAC = "RBAC: access denied"


def model_der(spiffe_id: str) -> bytes:
    """The model layer's stand-in for the DER of a caller's certificate (the data planes only show
    its SHA-256); the live layer uses the real certificates' bytes."""
    return b"model certificate of " + spiffe_id.encode()


def ignored_request_header(name: str) -> bool:
    n = name.lower()
    return n in IGNORED_REQUEST_EXACT or n.startswith(IGNORED_PREFIXES)


def visible_request_headers(pairs) -> tuple[tuple[str, str], ...]:
    return tuple((n.lower(), v) for n, v in pairs if not ignored_request_header(n))


@dataclass(frozen=True)
class RetryDecision:
    num_retries: int
    retry_on: tuple[str, ...]            # sorted condition tokens (`5xx`, `reset`, ...)
    status_codes: tuple[int, ...]        # sorted retriable status codes
    per_try_timeout_ms: int              # 0: none
    backoff_base_ms: int
    backoff_max_ms: int


@dataclass(frozen=True)
class FaultDecision:
    delay_ms: int                        # 0: no delay
    delay_percent: float
    abort_status: int | None
    abort_percent: float


def percent(value: float) -> float:
    """A percentage in one comparable form (four decimals, as the language allows)."""
    return round(float(value), 4)


def canonical_fault(delay_ms: int, delay_percent: float, abort_status, abort_percent: float):
    delay_percent, abort_percent = percent(min(delay_percent, 100.0)), percent(min(abort_percent, 100.0))
    if not delay_ms or delay_percent <= 0:
        delay_ms, delay_percent = 0, 0.0
    if abort_status is None or abort_percent <= 0:
        abort_status, abort_percent = None, 0.0
    if not delay_ms and abort_status is None:
        return None
    return FaultDecision(delay_ms, delay_percent, abort_status, abort_percent)


def canonical_retry(num_retries: int, retry_on, status_codes, per_try_ms: int, base_ms: int, max_ms: int):
    retry_on = tuple(sorted(set(retry_on)))
    status_codes = tuple(sorted(set(status_codes)))
    if num_retries <= 0 or not (retry_on or status_codes):
        return None
    return RetryDecision(num_retries, retry_on, status_codes, per_try_ms, base_ms, max_ms)


def canonical_mirror(pairs) -> tuple[tuple[str, float], ...] | None:
    out = tuple((c, percent(min(p, 100.0))) for c, p in pairs if p > 0)
    return out or None


def canonical_pick(candidates) -> tuple[str | None, tuple[str, ...] | None]:
    """(cluster, candidates) for a random pick among `candidates` (weight > 0)."""
    cands = tuple(sorted(set(candidates)))
    if len(cands) == 1:
        return cands[0], None
    return None, cands


@dataclass(frozen=True)
class Decision:
    kind: str                                                    # "outbound" | "inbound"
    status: int | None = None
    body: str = ""
    route: str | None = None
    cluster: str | None = None
    candidates: tuple[str, ...] | None = None
    path: str | None = None
    upstream_headers: tuple[tuple[str, str], ...] | None = None
    response_headers: tuple[tuple[str, str], ...] | None = None
    timeout_ms: int | None = None
    retry: RetryDecision | None = None
    fault: FaultDecision | None = None
    fault_random: bool = False
    mirror: tuple[tuple[str, float], ...] | None = None
    xfcc: tuple[str, ...] | None = None                          # inbound, forwarded: x-forwarded-client-cert
    location: str | None = None                                  # a redirect's `location`
    upstream_host: str | None = None                             # the Host a rewrite sends upstream (None: none)
    # outbound, a CORS request: the CORS headers of its response (a preflight's whole answer, status
    # 200), in order; None: not a CORS request (no CORS policy on the route, no or another origin)
    cors: tuple[tuple[str, str], ...] | None = None

    @property
    def forwarded(self) -> bool:
        return self.status is None


def diff(a: Decision, b: Decision) -> list[str]:
    """The fields on which two decisions differ, one line each."""
    out = []
    for f in fields(Decision):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if va != vb:
            out.append(f"{f.name}: {va!r} != {vb!r}")
    return out


def _show(value) -> list[str]:
    if isinstance(value, tuple) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return [f"{n}: {v}" for n, v in value]
    return [repr(value)]


def side_by_side(a: Decision, b: Decision, left: str = "envoy", right: str = "native") -> str:
    """Both decisions field by field in two columns; differing fields are marked with `!`."""
    rows = [("", left, right)]
    for f in fields(Decision):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        la, lb = _show(va), _show(vb)
        mark = "!" if va != vb else " "
        for i in range(max(len(la), len(lb))):
            rows.append((f"{mark} {f.name}" if i == 0 else "", la[i] if i < len(la) else "",
                         lb[i] if i < len(lb) else ""))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{r[0]:<{w0}} | {r[1]:<{w1}} | {r[2]}" for r in rows)
