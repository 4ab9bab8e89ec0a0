"""What Envoy 1.40 cannot express exactly: diagnostics at the policy's own line.

Every finding here was verified against the real Envoy (see docs/language.md §17 and the tests
in tests/test_envoy_diagnostics.py): an error (E07xx) where Envoy would behave differently in a
way a user would not expect, a warning (W07xx) for an approximation. Checks run over the IR
only, before anything is emitted; an error means no file is written.
"""

from __future__ import annotations

from compiler import ir
from compiler.backends.located import located

# Headers that Envoy's connection manager removes from every request (as an edge proxy: every
# request is external) before routing and authorization look at it: hop-by-hop headers, its
# own control headers and the client-certificate header. `te` is kept only as `te: trailers`.
REMOVED_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "expect",
    "x-forwarded-client-cert", "x-envoy-internal", "x-envoy-retry-on", "x-envoy-retry-grpc-on",
    "x-envoy-max-retries", "x-envoy-upstream-rq-timeout-ms", "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-expected-rq-timeout-ms", "x-envoy-hedge-on-per-try-timeout", "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names", "x-envoy-force-trace", "x-envoy-ip-tags",
    "x-envoy-upstream-alt-stat-name", "x-envoy-upstream-stream-duration-ms",
})
# The client-certificate header, which an mTLS inbound chain sets instead (listeners.py).
CLIENT_CERT_HEADER = "x-forwarded-client-cert"
# Headers it adds to every request that lacks them, before routing and authorization.
ADDED_HEADERS = frozenset({"x-request-id", "x-forwarded-proto"})

# Characters that a query string never carries as they are (they arrive percent-encoded), while
# Envoy compares query parameters as sent, without decoding them.
_NEVER_RAW_IN_QUERY = frozenset(" \t#&") | frozenset(chr(c) for c in range(32)) | {"\x7f"}


def check_program(program: ir.Program, sources: dict) -> list:
    """Every E07xx/W07xx finding of the program, in service and route order."""
    out: list = []
    _check_domains(program, sources, out)
    tracing = program.tracing
    if tracing is not None and tracing.otlp_host is None:
        out.append(located(
            "E0703", "Envoy's OpenTelemetry tracer needs a collector: this `tracing` block has no `otlp`",
            tracing.source, sources,
            hint='add `otlp "http://HOST:PORT/v1/traces"` (Envoy rejects a tracer without an exporter); the native '
                 "proxy alone can propagate trace headers without exporting"))
    for svc in program.services:
        for sub in svc.subsets:
            if sub.labels:   # docs/language.md, "Label-selected subsets"
                out.append(located(
                    "E0750", f"subset `{sub.name}` of service `{svc.name}` selects Kubernetes pods by label: Envoy's "
                             "clusters need its endpoints", sub.source, sources,
                    hint="a label-selected subset is for `--target istio`; for Envoy, write `endpoints [...]`"))
        if svc.outlier is not None and svc.outlier.max_ejection_percent != int(svc.outlier.max_ejection_percent):
            pct = svc.outlier.max_ejection_percent
            out.append(located(
                "W0701", f"Envoy ejects at most a whole percentage of endpoints: `max_ejected {pct:g}%` of service "
                         f"`{svc.name}` is applied as {int(pct)}%", svc.source, sources,
                hint="Envoy's max_ejection_percent is an integer; "
                     "write a whole percentage to say exactly what is enforced"))
        for route in svc.routes:
            _check_route(svc, route, sources, out)
        for rule in svc.authorization.rules:
            _check_rule(svc, rule, sources, out)
    return out


def _check_domains(program: ir.Program, sources: dict, out: list) -> None:
    """Envoy matches `Host` case-insensitively and rejects a route configuration in which two
    virtual hosts share a domain, so service names that differ only in case cannot both exist."""
    seen: dict[str, ir.Service] = {}
    for svc in program.services:
        key = svc.name.lower()
        first = seen.get(key)
        if first is None:
            seen[key] = svc
            continue
        out.append(located(
            "E0702", f"services `{first.name}` and `{svc.name}` differ only in case: Envoy matches the `Host` "
                     "of a request case-insensitively and cannot tell them apart", svc.source, sources,
            hint=f"rename one of them; both would answer to `Host: {key}`"))


def _check_route(svc: ir.Service, route: ir.Route, sources: dict, out: list) -> None:
    connect, headers, queries = False, set(), set()
    for m in route.matches:  # the common case (nothing to report) allocates nothing
        if m.methods and "CONNECT" in m.methods:
            connect = True
        for h in m.headers:
            if h.name in REMOVED_HEADERS or h.name in ADDED_HEADERS:
                headers.add(h.name)
        for q in m.query:
            text = q.name + (q.value if q.kind == "exact" and q.value else "")
            if "=" in q.name or any(c in _NEVER_RAW_IN_QUERY for c in text):
                queries.add(q.name)
    if not (connect or headers or queries):
        return
    where = f"route `{route.name}` of `{svc.name}`"
    if connect:
        out.append(located(
            "E0701", f"{where} matches `CONNECT` requests, which Envoy never sends through an ordinary route",
            route.source, sources,
            hint="Envoy routes CONNECT only with a connect_matcher and an upgrade config; "
                 "remove CONNECT from the method list"))
    for name in sorted(headers):
        _check_header(name, where, route.source, sources, out)
    for name in sorted(queries):
        out.append(located(
            "W0703", f"{where} tests query parameter `{name}` on a text that a request's query string never "
                     "carries as it is: Envoy compares parameters as sent, without percent-decoding",
            route.source, sources,
            hint="this condition never holds under Envoy; "
                 "match the encoded form with `regex` if that is what is meant"))


def _check_rule(svc: ir.Service, rule: ir.AuthzRule, sources: dict, out: list) -> None:
    where = f"authorization rule `{rule.name}` of `{svc.name}`"
    if rule.action == "allow" and rule.methods and "CONNECT" in rule.methods:
        out.append(located(
            "E0701", f"{where} allows `CONNECT` requests, which Envoy never forwards to the application "
                     "(they get 404 after authorization)", rule.source, sources,
            hint="Envoy forwards CONNECT only with a connect_matcher and an upgrade config; "
                 "remove CONNECT from the method list"))
    for name in sorted({h.name for h in rule.headers}):
        if name == CLIENT_CERT_HEADER and svc.mtls.mode != "disable":
            # Verified: on an mTLS filter chain (SANITIZE_SET) the connection manager writes the
            # header before the RBAC filters run, so a rule sees the sidecar's value (the native
            # proxy does the same), never the caller's.
            out.append(located(
                "W0702", f"{where} tests header `{name}`, which Envoy sets from the caller's certificate before "
                         "authorization on an mTLS connection (`By=…;Hash=…;URI=…`) and removes on a plaintext one",
                rule.source, sources,
                hint="under Envoy the condition sees that value from every mTLS caller; "
                     "match callers with `from` instead"))
        else:
            _check_header(name, where, rule.source, sources, out)


def _check_header(name: str, where: str, source: ir.Location, sources: dict, out: list) -> None:
    if name in REMOVED_HEADERS:
        what = "removes" + (" (unless it is `te: trailers`)" if name == "te" else "")
        out.append(located(
            "W0702", f"{where} tests header `{name}`, which Envoy {what} from every request before routing "
                     "and authorization", source, sources,
            hint="the condition sees the header as absent under Envoy"))
    elif name in ADDED_HEADERS:
        out.append(located(
            "W0702", f"{where} tests header `{name}`, which Envoy adds to every request that lacks it before "
                     "routing and authorization", source, sources,
            hint="the condition never sees this header absent under Envoy"))
