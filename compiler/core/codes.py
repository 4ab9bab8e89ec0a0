"""The registry of diagnostic codes: one place for code, severity, title and explanation.

Codes are grouped by hundreds: E01xx syntax, E02xx names and imports, E03xx values,
E04xx routes and timeouts, E05xx resilience, E06xx authorization, E07xx target limitations (what a
backend cannot express exactly; reported by `compile --emit envoy|native`, never by `check`), E08xx policy
tests (E0801-E0819 by `check`, E0820 and up by `meshc test` when it runs them). W-codes are warnings.
"""

from __future__ import annotations

from compiler.language.retry import RETRY_CONDITIONS


class Code:
    """One registered diagnostic code. A plain class: the registry is built at every start-up."""

    __slots__ = ("code", "severity", "title", "explanation")

    def __init__(self, code: str, severity: str, title: str, explanation: str):
        self.code, self.severity, self.title, self.explanation = code, severity, title, explanation

    def __repr__(self) -> str:
        return f"Code({self.code!r}, {self.severity!r}, {self.title!r})"


def _registry(*rows: tuple[str, str, str]) -> dict[str, Code]:
    return {code: Code(code, "error" if code.startswith("E") else "warning", title, text)
            for code, title, text in rows}


CODES: dict[str, Code] = _registry(
    # ---- syntax
    ("E0101", "syntax error", "The parser met a token it did not expect. The message says what it expected instead, in "
              "words; the parser then resumes at the next top-level item, so independent mistakes are all reported."),
    ("E0102", "unexpected character", "A character that cannot start any token of the language, such as `;` or `@`."),
    ("E0103", "unexpected end of file", "The file ended inside an item, usually because a `}` is missing."),
    ("E0104", "invalid string", "A string literal with an unknown escape sequence. Escapes are `\\\\`, `\\\"`, `\\n`, "
              "`\\t`, `\\r` and `\\uXXXX`."),
    ("E0105", "duplicate setting", "A setting that may appear once was written twice in the same block; the second "
              "would silently win."),
    ("E0106", "file is not UTF-8", "Policy files are UTF-8 text; a file that is not cannot be read as a policy."),
    ("E0107", "not a usable source file", "A file given on the command line or imported is not a regular file (a "
              "device such as `/dev/zero`, a FIFO, a directory), or is larger than 64 MiB, the limit for one source "
              "file. meshc reads only regular files, and at most 64 MiB of each, so an endless or huge input fails at "
              "once instead of filling memory; split a larger policy into files that import each other."),
    # ---- names and imports
    ("E0201", "unknown service", "A name that should refer to a service declared in this program or an imported file."),
    ("E0202", "duplicate name", "Two declarations share a name in the same scope (services, subsets, routes of one "
              "service, policies, rules)."),
    ("E0203", "unknown subset", "A destination names a subset that the service does not declare."),
    ("E0204", "unknown policy", "A reference to a named policy that no file in the program declares."),
    ("E0205", "import not found", "An `import` names a file that does not exist. Relative paths are resolved against "
              "the importing file; `std/NAME` refers to the standard library shipped with meshc."),
    ("E0206", "import cycle", "Files import each other in a cycle. Move the shared declarations into a third file."),
    ("E0207", "policy of the wrong kind", "A reference names a policy that exists but is of another kind (a `rules` "
              "set used as a `retry`, for example)."),
    ("E0208", "ambiguous destination", "`to SERVICE` without a subset is allowed only when the service has exactly one "
              "subset."),
    ("E0209", "block for an unknown service", "`routes NAME` and `authorization NAME` must name a declared service."),
    ("E0210", "name too long", "A declared name (service, subset, route, policy, rule) or a namespace is longer than "
              "63 characters, the limit of a DNS label and of a Kubernetes name. Names become DNS names and TLS "
              "server names (`NAME.NAMESPACE`), SPIFFE IDs, Envoy cluster, route and stat names, and the names of "
              "the files `meshc compile` writes."),
    ("E0211", "invalid host", "A service's `hosts` holds something that is not a hostname (`api.example.com`, "
              "optionally with the service's `:PORT`) or one of Envoy's wildcard forms: `*.SUFFIX` (the whole first "
              "label), `PREFIX.*` (the whole last label) or `*` (the catch-all). A wildcard inside a name, such as "
              "`api.*.com` or `*api.example.com`, is not taken."),
    ("E0212", "host claimed twice", "Two services answer to the same `Host` domain: one written in `hosts`, or one "
              "of a service's default names (`NAME`, `NAME.NAMESPACE`, `NAME.NAMESPACE.svc`, "
              "`NAME.NAMESPACE.svc.CLUSTER_DOMAIN`, with and without the port). A Host must name one service: Envoy "
              "rejects a route configuration in which two virtual hosts share a domain."),
    ("E0213", "host with another port", "A host in `hosts` is written with a port the service does not listen on. "
              "A host written without a port answers with and without the service's port."),
    ("E0214", "unknown caller", "A route's `caller` condition names no declared service. `caller NAME` keeps a match "
              "for the sidecar of service NAME alone (Istio's `sourceLabels`)."),
    # ---- values
    ("E0301", "missing setting", "A required setting is missing, such as the `port` of a service or the destination of "
              "a route."),
    ("E0302", "number out of range", "A number outside its allowed range: ports 1-65535, limits and thresholds at "
              "least 1, retry attempts 0-100, weights 0 to 2^32-1, status codes by context. A number above "
              "2^64-1 is reported once, as written, by the parser (\"too large\")."),
    ("E0303", "percentage out of range", "Percentages are between 0% and 100% inclusive, with at most four decimals."),
    ("E0304", "invalid regex", "Regular expressions use RE2 syntax (the engine Envoy uses) and must compile. "
              "Backreferences and lookaround are not RE2."),
    ("E0305", "split weights total zero", "A weighted split needs a positive total weight; zero weights are allowed "
              "for individual subsets."),
    ("E0306", "invalid duration", "A duration that must be positive is zero, or one that is too large to be meaningful "
              "(over 24 hours)."),
    ("E0307", "invalid endpoint", "Endpoints are `host:port` with an IPv4 address, a bracketed IPv6 address or a DNS "
              "name, and a port 1-65535."),
    ("E0308", "invalid header name", "Header names are HTTP tokens (letters, digits and `!#$%&'*+-.^_`|~`), matched "
              "case-insensitively. Pseudo-headers such as `:path` are not allowed here."),
    ("E0309", "unknown method", "Methods are the standard HTTP methods, in upper case: GET, HEAD, POST, PUT, DELETE, "
              "CONNECT, OPTIONS, TRACE, PATCH."),
    ("E0310", "unknown retry condition", "Retry conditions are " + ", ".join(f"`{c}`" for c in RETRY_CONDITIONS)
              + " and HTTP status codes such as `409`."),
    ("E0311", "invalid identity", "Identities are SPIFFE IDs: `spiffe://TRUST-DOMAIN/PATH`. A pattern may end in `/*` "
              "to match a path prefix."),
    ("E0312", "invalid setting value", "A setting has a value outside its documented set of choices. The hint "
              "names the closest choice (the same word in another case first); the checks that depend on the "
              "setting treat its value as unknown rather than guess one."),
    ("E0313", "contradicting header changes", "The same header is both removed and set or added on one route; the "
              "result would depend on the order a target applies them in."),
    ("E0314", "invalid path", "Paths in matches start with `/`. Prefixes are segment-aware unless written "
              "`raw_prefix`."),
    ("E0315", "route with two destinations", "A route has exactly one of `to` and `split`."),
    ("E0316", "invalid access log path", "A sidecar's `access_log` is the absolute path of one file (not a "
              "directory, without control characters): both planes open it from their own working directory."),
    ("E0317", "invalid span collector endpoint", "The `otlp` of `tracing` is where every sidecar sends its "
              "spans (OpenTelemetry's protocol over HTTP): a plain `http://HOST:PORT/PATH` URL (the path "
              "defaults to `/v1/traces`), without credentials, a query or a fragment. The sidecars send spans "
              "only there."),
    # ---- routes and timeouts
    ("E0401", "impossible timeout", "A per-try timeout that is not less than the route timeout can never fire before "
              "the route gives up, so no retry after a slow try could ever happen. Shorten the per-try timeout or "
              "raise the route timeout."),
    ("E0402", "no route for a service with several subsets", "A service with several subsets needs a `routes` block "
              "that says which subset takes which request."),
    ("W0401", "unreachable route", "Routes are evaluated first match in written order. A route whose every match is "
              "already taken by an earlier route can never be selected."),
    ("W0402", "backoff longer than the route timeout", "The retry backoff base is not shorter than the route timeout: "
              "most retries would start after the route has already given up (the first backoff is random in [0, "
              "base))."),
    ("W0403", "mirror to the route's own destination", "The route mirrors to a subset it already sends the request to: "
              "that subset receives every mirrored request twice."),
    ("W0404", "route timeout longer than the stream idle timeout", "Every request of a route passes the inbound "
              "listener of its service's own sidecar, which ends a request on which nothing moves for its "
              "`stream_idle_timeout` (5 min by default): 504 if the response has not started. A route timeout "
              "longer than that is cut short whenever the service is silent that long. Raise the sidecar's "
              "`stream_idle_timeout`, or shorten the route timeout. `timeout none` is not reported: it bounds "
              "the whole request by nothing, and silence by the stream idle timeout."),
    ("W0410", "route for a caller that cannot call the service", "A `caller` condition names a service that the "
              "destination's authorization can never admit (no `allow` rule whose `from` its identity satisfies, "
              "and `default deny`): the destination is outside that caller's scope, so its sidecar holds none of "
              "the destination's routes and the match never applies."),
    # ---- resilience
    ("W0501", "retries on non-idempotent methods", "The route can match POST or PATCH requests (explicitly, or because "
              "it has no `method` condition) and retries on conditions that arise after the request reached the "
              "upstream. A retried payment is a double payment. Restrict the methods, retry only on "
              "`connect-failure`/`refused-stream`, or opt in with `allow_non_idempotent`."),
    ("W0502", "retries without a retry budget", "Retries multiply load when an upstream is already failing (a retry "
              "storm). A `retry_budget` on the destination service caps retries in flight to a share of active "
              "requests."),
    ("E0501", "backoff base above its maximum", "The backoff base interval must not exceed its maximum."),
    ("W0503", "retry limit ignored under a retry budget", "With a `retry_budget` the budget decides how many retries "
              "may be in flight; a `limits { retries N }` on the same service is ignored (as Envoy ignores "
              "max_retries)."),
    # ---- authorization
    ("E0601", "authorization without a default", "Every `authorization` block states `default allow` or `default "
              "deny`; there is no implicit behaviour to be surprised by."),
    ("W0601", "authorization rule that can never apply", "An `allow` rule whose every request is also matched by a "
              "`deny` rule: deny wins, so the allow can never take effect."),
    ("W0602", "authorization rule with no effect", "A rule that gives the same answer as the default for every request "
              "it matches and is not needed to override another rule."),
    ("W0603", "duplicate authorization rule", "Two rules of the same action with the same conditions."),
    ("W0604", "identity rule on a service that accepts plaintext", "A rule with a `from` condition matches only a "
              "caller whose identity was verified by mutual TLS. A service with `mtls permissive` also accepts "
              "plaintext callers, and one with `mtls disable` accepts nothing else: such callers have no identity, so "
              "the rule never applies to them. A `deny from ...` rule is then bypassed by any caller that skips TLS, "
              "and an `allow from ...` rule never admits a plaintext caller. Use `mtls strict` once every caller has a "
              "sidecar."),
    # ---- proven authorization properties (`assert`, docs/testing.md)
    ("E0850", "assert without exactly one destination", "An `assert` speaks about the requests one destination "
              "receives: it has exactly one `to SERVICE` line. Write another assert for another destination."),
    ("E0851", "assert violated", "`meshc check` proved the assert false: the message gives a counterexample request "
              "(caller, method, normalised path, headers), replayed through the native proxy's own authorization "
              "decision, that the destination admits (`assert never`) or does not admit (`assert always`)."),
    ("W0850", "assert not proven", "`meshc check` could not decide the assert exactly, and says why: a regex outside "
              "what the prover reads as RE2 does (or `interegular` not installed), a condition on a header the "
              "sidecar sets itself, a header condition that values made of characters outside printable ASCII "
              "hold or fail, percent-escapes that a condition tells apart, or more combinations than the "
              "prover searches. The property may hold; it is not reported as proven."),
    ("W0851", "assert that names no request", "The assert's conditions hold for no request at all (such as "
              "`header \"x\" present` with `header \"x\" absent`), so it holds without saying anything; it is not "
              "counted as proven."),
    # ---- target limitations (Envoy backend)
    ("E0701", "CONNECT is not routable by Envoy", "Envoy sends a CONNECT request only to a route with a "
              "`connect_matcher` (and an upgrade config); an ordinary route never matches one, and the inbound "
              "listener answers an allowed CONNECT with 404 instead of forwarding it. A route match or an `allow` rule "
              "that lists CONNECT would never do what it says."),
    ("E0702", "services that Envoy cannot tell apart", "Envoy picks the destination service by the request's `Host`, "
              "case-insensitively, and rejects two virtual hosts with the same domain: service names that differ only "
              "in case cannot both be reached."),
    ("E0703", "tracing without a collector", "Envoy's OpenTelemetry tracer refuses a configuration without an "
              "exporter (the listener is rejected when Envoy loads it), so a `tracing` block without `otlp` has no "
              "Envoy form: the native proxy propagates trace headers without exporting, Envoy cannot."),
    ("W0701", "fraction of a percent ejected", "Envoy's `max_ejection_percent` is a whole number: a fractional "
              "`max_ejected` is rounded down."),
    ("W0702", "condition on a header Envoy changes", "Envoy removes some headers from every request before routing and "
              "authorization (hop-by-hop headers such as `connection` and `upgrade`, its own `x-envoy-*` control "
              "headers, `x-forwarded-client-cert`) and adds others when they are missing (`x-request-id`, "
              "`x-forwarded-proto`). A condition on such a header sees what Envoy left, not what the client sent."),
    ("W0703", "query condition that never holds under Envoy", "Envoy compares query parameters as they are sent, "
              "without percent-decoding. A name or value with a space, a control character, `#` or `&` (or a name with "
              "`=`) never appears as it is in a query string, so the condition never holds."),
    # ---- policy tests (`test` blocks; E0820 and up are reported by `meshc test` when it runs them)
    ("E0801", "incomplete test", "A `test` block needs a `request { … }` with a caller (`from service NAME`, `from "
              "identity \"spiffe://…\"` or `from unauthenticated`) and a request line such as `GET "
              "\"http://SERVICE/PATH\"`."),
    ("E0802", "duplicate test name", "Two tests have the same name. A failure names its test, so each needs its own."),
    ("E0803", "unknown caller", "`from service NAME` names a service the program does not declare: the request "
              "would go through the sidecar of a service that does not exist."),
    ("E0804", "caller identity is not a SPIFFE ID", "`from identity` takes a SPIFFE ID such as "
              "`\"spiffe://shop.local/ns/web/sa/frontend\"`: the identity the caller's certificate carries."),
    ("E0805", "not a request method", "The request line starts with a method in upper case (`GET`, `POST`, ...): "
              "both targets answer a method in lower case with 400, so a test would never reach the policy."),
    ("E0806", "not an http:// URL", "A test's URL is `http://HOST[:PORT][/PATH][?QUERY]`: the Host picks the "
              "destination service and the path and query are matched after normalisation."),
    ("E0807", "no service answers to the URL", "The URL's host and port are the `Host` header, and the "
              "destination is the service whose Host domains hold it, as the sidecars look it up: `NAME`, "
              "`NAME.NAMESPACE`, `NAME.NAMESPACE.svc`, `NAME.NAMESPACE.svc.CLUSTER_DOMAIN` and the service's "
              "`hosts`, with and without `:PORT`, ASCII case-insensitive (`http://reviews/…`, "
              "`http://reviews.shop:9080/…`); no service of the program answers to it."),
    ("E0808", "expectation that needs a sidecar", "Routes, destinations, forwarded paths and headers, timeouts, "
              "retries and mirrors are decided by the caller's sidecar. A request `from identity` or `from "
              "unauthenticated` comes from outside the mesh and meets the destination's authorization alone, so "
              "only `status`, `denied_by` and `allowed_by` apply to it."),
    ("E0809", "not an HTTP status", "`status` takes a code from 100 to 599, or 0 for a connection the "
              "destination refuses (a caller without a certificate at a `strict` listener)."),
    ("E0810", "unknown route", "`route SERVICE.ROUTE` names a route of the destination's `routes` block; the "
              "block has no route of that name, the service has no routes block (its one route is then "
              "`SERVICE.default`), or it is another service's."),
    ("E0811", "unknown authorization rule", "`denied_by authorization SERVICE.RULE` (or `allowed_by`) names a rule "
              "of the service's authorization block as the targets name it (`use` sets as `SET.RULE`, for example "
              "`std.allow_health_checks.healthz`), or `SERVICE.default` for the block's default."),
    ("E0812", "rule of another service", "The destination's own authorization decides a request: a rule of "
              "another service can never be the one that did."),
    ("E0813", "request header the sidecars write", "`request_header` compares a header of the request the "
              "destination gets. The sidecars write, strip or rewrite some headers themselves: the trace headers "
              "(`x-request-id`, `traceparent`, `tracestate`), `x-forwarded-*`, `x-envoy-*`, `host` and the hop-by-hop "
              "and framing ones (`connection`, `upgrade`, `content-length`, ...). `meshc test` leaves them out of "
              "what it compares, so an expectation on one could never be held to what the sidecar sends."),
    ("E0814", "request a test cannot send", "Both targets take a test's request as an HTTP/1.1 head: a header "
              "name is a token (no spaces, not empty), a value is latin-1 without control characters (a tab may "
              "be), the `Host` comes from the URL (no `host` header), a `from identity` SPIFFE ID is ASCII without "
              "spaces, and the request switches no protocol (no `CONNECT`, no `upgrade` header)."),
    ("E0820", "test failed", "`meshc test` ran the test's request through both targets (the native proxy's "
              "decision function and the evaluator of the emitted Envoy configuration); they agree, and what they "
              "decided differs from what the test expects. The message names the expectation and what happened."),
    ("E0821", "the targets disagree on a test's request", "The native proxy's decision and the evaluator of the "
              "emitted Envoy configuration (or, with `--live`, a real Envoy and a real native proxy) decided a "
              "test's request differently. This is a bug of meshc, not of the policy: the message says which layer "
              "differs and on what; please report it with the policy."),
    ("W0801", "test without expectations", "A test with an empty `expect` block (or none) passes whenever both "
              "targets agree on the request, whatever they decide."),
    # ---- lint rules (meshc lint only)
    ("L0101", "retries that outlast the route timeout", "Every try of the route at its per-try timeout, plus the "
              "longest backoffs between them, takes longer than the route timeout: the route timeout ends the request "
              "while retries are still planned, so the last attempts never run and the caller sees a 504."),
    ("L0102", "fault delay not shorter than the route timeout", "An injected delay runs before the route timeout "
              "starts, so a delayed request can take the delay plus the whole timeout. Callers that budget for the "
              "route timeout give up first, and the experiment tests their timeouts rather than the route's."),
    ("L0103", "split key header also used for routing", "A split `by header` picks a destination from the key's value, "
              "and another route of the same block matches on that header: some keys are routed before the split "
              "sees them, so the split's weights no longer describe the traffic."),
    ("L0201", "retries without outlier detection", "A route retries to a service that has no `outlier` block: a retry "
              "can go back to the same failing endpoint again and again, since nothing takes it out of rotation."),
    ("L0301", "authorization trusts a raw path prefix", "`raw_prefix \"/admin\"` matches every path that starts with "
              "those characters, `/administrator` and `/admin-old` included. Authorization almost always means a "
              "segment: `prefix \"/admin\"` matches `/admin` and `/admin/...` only."),
    ("L0302", "deny rule bypassed through escaped slashes", "Under `escaped_slashes keep` a path such as "
              "`/api%2Fadmin` is matched as it is, so a deny rule on `/api/admin` does not see it, while an "
              "application that decodes `%2F` serves `/api/admin`. Reject (the default) or decode escaped slashes on a "
              "service with deny rules on paths."),
    ("L0303", "deny rule bypassed by case, `;params` or double encoding", "A deny rule on `path prefix \"/admin\"` "
              "compares the path as it is: `/ADMIN`, `/admin;x` and `/%2561dmin` are not denied, in either target "
              "(Envoy matches the same way). An application that ignores case, strips `;params` from a segment or "
              "percent-decodes twice serves them as `/admin`. Add `ignore_case` to the path condition, or allow what "
              "is public under `default deny` instead of denying what is not, and keep the application from "
              "stripping `;params` or decoding twice."),
    ("L0401", "unused named policy", "A named policy in the program's own files that no service, route or "
              "authorization block refers to."),
    ("L0402", "unused import", "An import that contributes nothing: the file declares no service, routes or "
              "authorization, and none of its named policies is used."),
)


def code_info(code: str) -> Code:
    """The registered code: a diagnostic's (CODES), or a `meshc doctor` finding's
    (compiler/core/host_codes.py, loaded only when one is asked for)."""
    entry = CODES.get(code)
    if entry is None:
        from compiler.core.host_codes import HOST_CODES

        entry = next(Code(*row) for row in HOST_CODES if row[0] == code)
    return entry
