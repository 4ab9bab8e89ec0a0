"""The registry of diagnostic codes: one place for code, severity, title and explanation.

Codes are grouped by hundreds: E01xx syntax, E02xx names and imports, E03xx values,
E04xx routes and timeouts, E05xx resilience, E06xx authorization, E07xx target limitations (what a
backend cannot express exactly; reported by `compile --emit envoy|native`, never by `check`), E08xx policy
tests (E0801-E0819 by `check`, E0820 and up by `meshc test` when it runs them), E09xx Kubernetes targets
(what `compile --target istio|gateway-api` cannot write exactly, and names Kubernetes would reject;
E0901-E0939 Istio and the shared name checks). W-codes are warnings.
E10xx import: `meshc import istio`, located in the YAML it reads (never by `check`).
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
    ("E0215", "ambiguous service name", "A service name declared in several namespaces is written alone where no "
              "namespace decides which one it means. Inside `routes S { … }` and `authorization S { … }` a bare name "
              "means the service of S's namespace; elsewhere, or when that namespace has none of them, write "
              "`NAMESPACE/NAME`."),
    ("E0216", "service not in that namespace", "A reference `NAMESPACE/NAME` names a namespace in which no service "
              "`NAME` is declared, although one is declared in another namespace."),
    ("E0217", "namespace in a declared name", "A declared name (a service, subset, route, policy or rule) contains "
              "a `/`. Only a reference to a service may carry its namespace, `NAMESPACE/NAME`; a service's own "
              "namespace is its `namespace` setting."),
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
    ("E0350", "sidecars on one host share a port", "Workloads (subsets with their own `sidecar` block) that "
              "write no `endpoints` are reached at their own inbound listener on the loopback interface, so they "
              "run on one host: two of them binding the same port, one binding the port of another's local "
              "application, or two applications on one port, could not all start. Give each its own ports "
              "(`ports N` takes N, N+1 and N+2)."),
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
    ("E0330", "invalid redirect status", "A redirect answers with 301 (moved permanently, the default), 302 (found), "
              "303 (see other), 307 (temporary redirect) or 308 (permanent redirect): the statuses Envoy's "
              "`RedirectAction` can send. Another status is a direct response (`respond STATUS`)."),
    ("E0331", "rewrite pattern that does not compile", "A `regex` rewrite's pattern is RE2 (Envoy's engine) and must "
              "compile; its substitution may use `\\0` (the whole match), `\\1` to `\\9` (groups the pattern has) and "
              "`\\\\` (a backslash), and nothing else after a backslash."),
    ("E0332", "invalid redirect scheme", "A redirect's `scheme` is `\"http\"` or `\"https\"`, in lower case. Envoy "
              "writes any other word into the Location as it is, and compares it case-sensitively when it decides "
              "whether to drop a default port."),
    ("E0333", "invalid host", "A redirect's `host` is a DNS name or an IP address (its port is the `port` setting); a "
              "rewrite's `host` may add `:PORT`. Envoy writes either into a header as it is, so a value that is not a "
              "host makes a Location or a Host that no client or upstream can use."),
    ("E0334", "invalid replacement path", "The `path` and `prefix` of a redirect or a rewrite start with `/` and "
              "hold a path only: no query or fragment (the request's query is kept, or dropped with `strip_query`), "
              "no space, control or non-ASCII character (write them percent-encoded)."),
    ("E0335", "direct response status out of range", "`respond STATUS` answers with a status between 200 and 599, "
              "not a redirection (3xx: Envoy adds a `location` to those, the request's own URL; write `redirect`), "
              "and a 204 has no body."),
    ("E0336", "direct response body too large", "Envoy refuses a route configuration with an inline direct response "
              "body over 4096 bytes (`max_direct_response_body_size_bytes`), so the whole configuration would be "
              "rejected. Serve a larger body from a service."),
    ("E0340", "invalid origin in a `cors` block",
              "An `exact` origin of a `cors` block is what a browser sends in `Origin`: "
              "`scheme://host[:port]`, without a path or a trailing slash (or `\"*\"` for any origin). A `prefix` "
              "starts with `scheme://` and ends at the host or port. A value that can never equal a browser's "
              "`Origin` would silently allow nothing."),
    ("E0341", "`credentials` for every origin", "`credentials` lets a browser send cookies and authorization "
              "with a cross-origin request. With an origin that allows every site (`exact \"*\"`, or a regex that "
              "matches `*` such as `.*`: Envoy then allows every origin) the proxy echoes whatever origin called, "
              "so every site on the web could act with the user's credentials. List the origins that may."),
    ("E0342", "`cors` block without origins",
              "A `cors` block with no `origins` allows no origin, so it does nothing: "
              "list the origins that may call, such as `origins [exact \"https://app.example.com\"]`."),
    ("E0343", "invalid `max_age` of a `cors` block",
              "`max_age` is how long a browser may keep a preflight's answer. It is "
              "written in `Access-Control-Max-Age` in whole seconds, between 1 s and a day (the longest any "
              "browser honours)."),
    ("E0360", "subset both label-selected and an endpoint list", "A subset is either a list of endpoints (`endpoints "
              "[...]`, for every target) or label-selected (one `labels { KEY \"VALUE\" }` block: the Kubernetes pods "
              "carrying those labels, for the Kubernetes targets), never both, and has one `labels` block."),
    ("E0361", "invalid label key", "A label key is a Kubernetes qualified name: `NAME` or `PREFIX/NAME`, NAME at "
              "most 63 letters, digits, `-`, `_` and `.` starting and ending with a letter or digit, "
              "PREFIX a DNS subdomain."),
    ("E0362", "invalid label value", "A label value is empty or at most 63 letters, digits, `-`, `_` and `.`, starting "
              "and ending with a letter or digit, as Kubernetes takes it."),
    ("E0363", "duplicate label", "A label-selected subset names each label key once: a pod has one value per key."),
    ("E0364", "label-selected subset without a label", "`labels { }` selects by no label, that is every pod of the "
              "service: write the labels that tell this subset's pods apart."),
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
    ("E0420", "a route that answers itself also forwards", "A route with `redirect { … }` or `respond` answers the "
              "request on the caller's sidecar: nothing is forwarded, so a destination (`to`, `split`), a "
              "`timeout`, `retry`, `mirror`, `rewrite` or `request_headers` would never apply. A `fault` cannot go "
              "with it either: its abort would be a second answer. `response_headers` apply to the answer."),
    ("E0421", "prefix replacement without a prefix", "A `prefix` replacement (in a `rewrite` or a `redirect`) replaces "
              "the prefix that the route's `path prefix` matched, so every match of the route needs a `path "
              "prefix` (or `raw_prefix`), the same one (`path prefix \"/\"` matches everything and replaces "
              "nothing: use `regex`). Use `path` to replace the whole path."),
    ("E0422", "two path changes", "A `rewrite` or a `redirect` changes the path one way: `path` (the whole path), "
              "`prefix` (the matched prefix) or `regex` (what a pattern matches)."),
    ("W0420", "prefix replacement that joins or doubles slashes", "A prefix ending in `/` (or a `raw_prefix`) is "
              "replaced as a string, so `/api/` replaced by `/v2` makes `/api/x` into `/v2x`; a segment prefix "
              "(`path prefix \"/api\"`) is replaced segment by segment, so a replacement ending in `/` makes "
              "`/api/x` into `/v2//x`."),
    ("W0421", "redirect to the same URL", "The redirect changes neither the scheme, the host, the port nor the path: "
              "a client that follows it asks for the same URL again, and loops."),
    ("W0422", "a regex substitution that may give a path without a leading `/`", "A `regex` rewrite (or "
              "redirect) replaces every match of its pattern by the substitution; when a match starts the path, the "
              "new path starts with the substitution. Unless the substitution starts with `/` (or with `\\0`, the "
              "whole match, which begins with the path's `/`), the new path may not start with `/`: `^/(.*)$` to "
              "`\\1` sends `GET a/b` upstream, which answers an error (a 503). An empty result is no rewrite."),
    ("W0430", "the same subset mirrored twice", "A route has two `mirror` lines to one subset: that subset gets "
              "two copies of every request both mirrors copy. Keep one `mirror` line with the share wanted."),
    ("W0431", "a split destination's header change undone by the route", "A destination of a `split` sets or "
              "adds a header that the route's own `request_headers` (or `response_headers`) set or remove too. The "
              "destination's changes come first and the route's after them (as Envoy applies a weighted "
              "cluster's), so the destination's change never shows. Change the header in one place."),
    ("W0410", "route for a caller that cannot call the service", "A `caller` condition names a service that the "
              "destination's authorization can never admit (no `allow` rule whose `from` its identity satisfies, "
              "and `default deny`): the destination is outside that caller's scope, so its sidecar holds none of "
              "the destination's routes and the match never applies."),
    ("W0435", "an entry of a `cors` block listed twice",
              "An origin, method or header appears twice in one `cors` block "
              "(header names compared without case): the second says nothing more. Remove one."),
    # ---- resilience
    ("W0411", "caller-specific route under Gateway API", "An HTTPRoute of a Service (GAMMA) routes every caller's "
              "requests alike: `--target gateway-api` writes the routes as a caller that no `caller` condition "
              "names takes them, and leaves the caller-specific matches out (`--target istio` writes them as "
              "sourceLabels)."),
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
    ("W0610", "authorization rule whose exclusions take everything", "A rule's `not path` or `not method` "
              "excludes every request its own conditions name: its `method` list is all excluded, or an excluded "
              "path takes every path of its `path`. The rule never matches. Remove or narrow the exclusion."),
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
    ("E0750", "label-selected subset on the Envoy or native target", "A label-selected subset (`labels { … }`) names "
              "the Kubernetes pods that carry those labels: only a Kubernetes target (`--target istio`) has pods to "
              "select. Envoy's clusters and the native proxy need the subset's endpoints, so compiling to them "
              "refuses it."),
    ("W0701", "fraction of a percent ejected", "Envoy's `max_ejection_percent` is a whole number: a fractional "
              "`max_ejected` is rounded down."),
    ("W0702", "condition on a header Envoy changes", "Envoy removes some headers from every request before routing and "
              "authorization (hop-by-hop headers such as `connection` and `upgrade`, its own `x-envoy-*` control "
              "headers, `x-forwarded-client-cert`) and adds others when they are missing (`x-request-id`, "
              "`x-forwarded-proto`). A condition on such a header sees what Envoy left, not what the client sent."),
    ("W0703", "query condition that never holds under Envoy", "Envoy compares query parameters as they are sent, "
              "without percent-decoding. A name or value with a space, a control character, `#` or `&` (or a name with "
              "`=`) never appears as it is in a query string, so the condition never holds."),
    # ---- Kubernetes targets (`compile --target istio|gateway-api`; docs/kubernetes.md)
    ("E0901", "name Kubernetes would reject", "A Kubernetes target writes meshc's names as Kubernetes names: a "
              "service becomes a Kubernetes Service (a DNS-1035 label: lower-case letters, digits and `-`, starting "
              "with a letter, at most 63 characters), its namespace and its subsets DNS labels (the same, starting "
              "with a letter or digit). meshc's own names also admit upper case and `_`, which Kubernetes rejects; the "
              "Envoy and native targets accept them."),
    ("E0902", "one header tested twice in a match, for Istio", "Istio's HTTPMatchRequest holds header conditions in "
              "two maps by header name (`headers` and `withoutHeaders`): one match cannot test one header with two "
              "conditions of the same kind. Combine them into one `regex`."),
    ("E0903", "one header added twice, for Istio", "Istio's `headers.add` is a map by header name: a route cannot add "
              "two values of one header. Join them into one value."),
    ("E0904", "retry status code Istio cannot read", "Istio's `retryOn` takes a number as a status code only when Go's "
              "net/http names it (`http.StatusText`); any other number is passed to Envoy as a condition name, which "
              "Envoy rejects."),
    ("E0905", "regex in authorization, for Istio", "Istio's AuthorizationPolicy matches paths and header values "
              "exactly, by prefix (`abc*`), by suffix (`*abc`) or by presence (`*`): it has no regex."),
    ("E0906", "case-insensitive authorization, for Istio", "Istio's AuthorizationPolicy compares paths and header "
              "values case-sensitively: `ignore_case` on a value with letters has no Istio form."),
    ("E0907", "literal `*` in authorization, for Istio", "Istio's AuthorizationPolicy reads a `*` at either end of a "
              "path or header value as a wildcard (and `{*}` in a path as a template): a value holding `*` cannot be "
              "matched literally."),
    ("E0908", "identity Istio cannot give", "An Istio workload's SPIFFE ID is its Kubernetes service account's, "
              "`spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT`, in the service's own namespace: another `identity` "
              "cannot be issued to it."),
    ("E0909", "label-selected and endpoint subsets in one service, for Istio", "An endpoint-list subset becomes the "
              "endpoints of a ServiceEntry, a label-selected one selects the pods of the Kubernetes Service: both "
              "would claim the service's host. Every subset of a service is one kind for Istio."),
    ("E0910", "redirect path change Istio cannot say", "Istio's HTTPRedirect `uri` replaces the whole path (Envoy's "
              "`path_redirect`): a redirect that replaces a prefix or a regex match of the path has no Istio form "
              "(Istio reads `%PREFIX()%` only in routes it makes from Gateway API)."),
    ("E0911", "redirect without the query, for Istio", "Istio's HTTPRedirect has no `strip_query`: the Location "
              "always keeps the request's query."),
    ("E0912", "one header changed for a lone destination and its route, for Istio", "When a split has one "
              "destination (the others weigh 0), Istio makes it the route's cluster and appends its header changes "
              "after the route's, where meshc applies the destination's first: a header changed in both places "
              "would end differently."),
    ("E0913", "a host Istio cannot write", "A VirtualService's `hosts` takes a DNS name with a dot or a "
              "`*.SUFFIX` wildcard: a host with a port, a `PREFIX.*` wildcard, the catch-all `*` (refused for the "
              "mesh) and a dotless name (a short name Istio resolves against the namespace) have no Istio form."),
    ("E0917", "one query parameter tested twice in a match, for Istio", "Istio's HTTPMatchRequest holds query "
              "parameter conditions in one map by parameter name (`queryParams`): one match cannot test one "
              "parameter with two different conditions. Combine them into one `regex`."),
    ("W0901", "split key not carried by Istio", "Istio's weighted destinations are picked at random by weight: there "
              "is no field for a split key, so the same key may reach another subset. The shares are kept."),
    ("W0902", "backoff maximum not carried by Istio", "Istio's `retries.backoff` sets only Envoy's base interval; the "
              "maximum is then Envoy's default, 10 times the base."),
    ("W0903", "split weights scaled for Istio", "Istio's weights are 32-bit signed integers: larger weights are "
              "divided by their common divisor, and when that is not enough, scaled (the shares change slightly)."),
    ("W0904", "fraction of a percent ejected, for Istio", "Istio's `maxEjectionPercent` is a whole number: a fraction "
              "is rounded down."),
    ("W0905", "tracing not written for Istio", "Istio's tracing is the mesh's: an `opentelemetry` extension provider "
              "in MeshConfig and a Telemetry resource. The output does not configure it."),
    ("W0906", "a split or mirror target outside the caller's scope, under Istio", "An Istio Sidecar's egress imports "
              "a host whole: a service that a caller's routes send to (a split, a mirror) but whose authorization "
              "does not admit the caller is reachable by its Host under Istio (403 from its authorization), where "
              "meshc answers 404 (outside the scope)."),
    ("W0907", "sidecar settings not carried by Istio", "Istio's sidecar has fixed ports (15006, 15001, "
              "15000), forwards to the port a request was for, drains for the mesh's `terminationDrainDuration`, "
              "streams bodies without a limit and logs through the mesh's Telemetry: these settings of a `sidecar` "
              "block, when they differ, are not in the output."),
    ("W0908", "empty header value skipped by Istio", "Envoy drops a header option whose value is empty unless the "
              "option says `keep_empty_value`, which meshc's Envoy output does and Istio's `headers` cannot: a header "
              "set or added with an empty value is left as it was under Istio."),
    ("W0909", "workload sidecar settings not carried by Istio", "Istio configures a service's sidecars with one "
              "EnvoyFilter that selects all its pods (by the `app` label): a workload (a subset with its own "
              "`sidecar` block) whose settings differ from the service's gets the service's under Istio. Its ports "
              "and application are Istio's own per pod anyway."),
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
    # ---- Kubernetes targets: offline validation and Gateway API (E0940-E0979; docs/kubernetes.md)
    ("E0940", "object the CRD's schema rejects", "`--target istio|gateway-api` validates every object it writes "
              "against the vendored CRD (its `openAPIV3Schema`, as the Kubernetes API server would with "
              "`kubectl apply --validate=strict`): an unknown field, a wrong type, a value out of its range or "
              "longer than its limit. Nothing is written; the message names the object and the field."),
    ("E0941", "object a CRD's CEL rule rejects", "The CRD's `x-kubernetes-validations` rules (CEL) are evaluated on "
              "every object written, as the API server evaluates them on a create: a rule that does not hold rejects "
              "the object with the rule's own message (Gateway API refuses a path with `//`, Istio a `0s` "
              "duration). Nothing is written."),
    ("E0942", "CEL rule the validator cannot evaluate", "A CRD rule could not be evaluated (it calls a function the "
              "validator does not provide, or it fails on the value): the validator never counts such a rule as "
              "passed, so the object is refused. This is a gap of meshc's validator; please report it."),
    ("E0943", "Gateway API would route a request elsewhere", "An HTTPRoute's rules are not tried in the order "
              "written: Gateway API ranks every match by precedence (an exact path, then the longest path prefix, a "
              "method, the most header matches, the most query matches; regex paths where the implementation "
              "puts them) and only then by rule order. meshc's routes are first-match, so where an earlier route's "
              "match ranks below a later one's and some request matches both, the two disagree: the message shows "
              "such a request. Nothing is written."),
    ("E0944", "retry in the standard channel", "HTTPRoute `retry` exists only in Gateway API's experimental "
              "channel (v1.6.1): the standard channel's CRD rejects the field, and leaving it out would drop the "
              "route's retries. Compile with `--channel experimental`, or remove the retry."),
    ("E0945", "fault injection in an HTTPRoute", "Gateway API has no fault injection: a route's `fault` cannot be "
              "written. `--target istio` carries it (VirtualService `fault`)."),
    ("E0946", "path condition Gateway API cannot carry", "Gateway API's path matches are `Exact`, `PathPrefix` "
              "(whole segments, a trailing `/` ignored: `/a/` matches `/a`) and `RegularExpression`, all case "
              "sensitive: a plain string prefix (`raw_prefix`, or a `prefix` ending in `/`) and `ignore_case` have "
              "no equivalent."),
    ("E0947", "condition Gateway API cannot carry", "An HTTPRouteMatch tests that headers and query parameters are "
              "present with a value, and one method of a fixed list: `not header`, `absent`, a header compared "
              "ignoring case and other methods have no equivalent."),
    ("E0948", "split weight too large for Gateway API", "A backendRef's `weight` is at most 1,000,000. Scale the "
              "weights down in the same proportions."),
    ("E0950", "header value Gateway API cannot carry", "Gateway API's header values (a header set or added, a "
              "header match) are printable ASCII words separated by single spaces or tabs, 1 to 4096 characters, and "
              "a query parameter match has a value of at least one character: an empty value, spaces at its ends "
              "or in a row, or a character outside printable ASCII cannot be written."),
    ("E0952", "more routes than an HTTPRoute holds", "An HTTPRoute has at most 16 rules, and meshc writes one "
              "HTTPRoute per service: Gateway API breaks ties between the rules of several HTTPRoutes by their "
              "creation time, which the written order cannot decide. Merge routes that share a destination and "
              "policy (a route takes several matches)."),
    ("E0953", "header changed twice under Gateway API", "An HTTPRoute's header filter names each header once in "
              "`set`, `add` and `remove` (each a map by name), and Gateway API does not say in which order the three "
              "apply: a header added twice, or removed or set and also added, has no equivalent. meshc applies "
              "`remove`, then `set`, then `add`, in order."),
    ("E0954", "direct response under Gateway API", "An HTTPRoute has no direct response: a route that answers "
              "itself (`respond`) cannot be written. Istio's VirtualService has `directResponse`."),
    ("E0955", "path or Host change Gateway API cannot say", "Gateway API's HTTPPathModifier replaces the whole path "
              "(ReplaceFullPath) or the matched PathPrefix (ReplacePrefixMatch, whole segments): a regex replacement, "
              "or the prefix of a plain or case-insensitive match, has no form; URLRewrite's `hostname` has no port."),
    ("E0956", "redirect without the query, under Gateway API", "HTTPRequestRedirectFilter has no field for the "
              "query: a redirect with `strip_query` cannot be written."),
    ("E0957", "prefix replacement Gateway API makes differently", "Gateway API's ReplacePrefixMatch (in a "
              "redirect or a rewrite) joins the replacement and the rest of the path with one `/` (`/foo/bar`, "
              "prefix `/foo`, replacement `/xyz/`: `/xyz/bar`), where meshc keeps the rest as it is (`/xyz//bar`, "
              "W0420): a replacement other than `/` that ends in `/` is refused. Gateway API allows "
              "ReplacePrefixMatch only in a rule with exactly one match, a PathPrefix: meshc writes a route whose "
              "match is several HTTPRouteMatches (several methods, or the matches added to keep the written order) "
              "as one rule per match, each with the path meshc makes of its own match (ReplaceFullPath for an "
              "exact path, ReplacePrefixMatch for a longer prefix); E0957 also when that path is not one Gateway "
              "API takes."),
    ("E0958", "routes for named callers only, for Gateway API", "When every route of a service has a `caller` "
              "condition, meshc's other callers have no route to it and are answered 404; an HTTPRoute cannot name "
              "callers, and without one a Service forwards every request."),
    ("E0959", "CORS Gateway API's CORS filter cannot say", "Gateway API's `CORS` HTTPRoute filter (HTTPCORSFilter, "
              "v1.6.1, both channels) says what a mesh `cors` block says only for exact origins "
              "(`http(s)://host[:port]` of lower-case DNS labels, without the scheme's default port, whose `*` "
              "would be a wildcard), a written `max_age` (the filter's default is 5 s, meshc sends none) and named "
              "headers: a prefix or regex origin, `exact \"*\"` (which Gateway API may answer with `*` where meshc "
              "echoes the origin), `headers [\"*\"]`, `expose [\"*\"]`, a method outside its list, or a route that "
              "also changes an `access-control-*` response header (the two are not ordered) is refused with the "
              "reason: use `--target istio` (VirtualService `corsPolicy`) or the Envoy target."),
    ("W0940", "retry conditions Gateway API leaves to the implementation", "meshc's `5xx` and `gateway-error` also "
              "retry resets, connect failures and per-try timeouts, and `reset`/`connect-failure` are connection "
              "conditions: Gateway API's retry names status codes only, so only those are written and the rest is "
              "the implementation's choice."),
    ("W0941", "retry backoff only a minimum under Gateway API", "Gateway API's `retry.backoff` is the minimum "
              "wait between attempts; the implementation chooses the growth and the maximum. Every retry's backoff "
              "base (25ms unless written) is written there, and meshc's exponential growth up to the maximum "
              "(ten times the base unless written) is not."),
    ("W0942", "route without retries under Gateway API", "An HTTPRoute cannot say \"no retries\": `retry.attempts` "
              "is at least 1, and without `retry` the implementation's default applies (Istio retries twice on "
              "connect failures and 503)."),
    ("W0943", "split key header not carried", "A split `by header` picks the destination from the header's value; "
              "Gateway API splits by weight at random, so one user may see both destinations."),
    ("W0944", "regular expression under Gateway API", "A `RegularExpression` match (a regex path, or a header or "
              "query condition other than an exact value) has an implementation-specific dialect in Gateway API; "
              "meshc writes RE2, the dialect of Istio and Envoy Gateway."),
    ("W0945", "authorization not carried by Gateway API", "HTTPRoute has no authorization: a service's "
              "`authorization` block is not written by `--target gateway-api`. Enforce it with the mesh's own "
              "policy (`--target istio` writes an AuthorizationPolicy)."),
    ("W0946", "destination policies not carried by Gateway API", "Connection limits, outlier detection, retry "
              "budgets and mTLS are "
              "the mesh implementation's own policies, not HTTPRoute fields: `--target gateway-api` does not write "
              "them (`--target istio` writes a DestinationRule and a PeerAuthentication)."),
    ("W0947", "retry without a status code", "Gateway API's HTTPRouteRetry retries on response status codes "
              "(`codes`) only: a retry `on` connection conditions alone (`reset`, `connect-failure`, "
              "`refused-stream`) has nothing to write, and the implementation's default retries apply instead "
              "(Istio's retry connect failures and refused streams, as such a policy does, and 503s)."),
    ("W0948", "redirect port derived by Gateway API", "Without `port`, Gateway API writes the scheme's "
              "well-known port (with `scheme`) or the listener's port (for a mesh route, the Service's) into the "
              "Location, where meshc keeps the request Host's own port. Write `port` to make them agree."),
    ("W0949", "destination and route header changes in an unspecified order", "A split destination's own header "
              "changes become its backendRef's filters, and Gateway API does not say whether they apply before or "
              "after the rule's: meshc applies the destination's first. A header changed in both places may end "
              "differently."),
    ("W0950", "several mirrors with shares under Gateway API", "meshc (like Envoy, and so Istio) decides every "
              "mirror of a route with one random draw per request; Gateway API leaves it to the implementation, "
              "which may draw once per mirror: the shares hold, the overlap between mirrors may differ."),
    ("W0951", "hosts not carried by Gateway API", "An HTTPRoute whose parentRef is a Service (GAMMA) applies to "
              "the traffic sent to that Service, whatever its Host, and GAMMA implementations ignore the route's "
              "`hostnames`: a service's written `hosts` have no Gateway API form, so requests to them are not "
              "routed by the mesh unless DNS sends them to the Service."),
    ("W0952", "CORS filter details Gateway API leaves to the implementation", "A route's `cors` is written as "
              "Gateway API's CORS filter with meshc's origins, lists, credentials and max age, and Gateway API "
              "leaves three things to the implementation: the status of a preflight (200 or 204; meshc answers "
              "200), whether a preflight from an origin not allowed is answered by the implementation (200, 204 or "
              "403 without CORS headers) where meshc forwards it to the route's destination, and how an Origin "
              "header that browsers never send (upper case, the scheme's default port written) compares. (Whether "
              "a preflight's answer also carries `access-control-expose-headers`, as meshc's and Envoy's do, is "
              "not said either; browsers read it on other responses only.)"),
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
              "stripping `;params` or decoding twice. The same holds for the path an allow rule excludes under "
              "`default deny` (`allow { path prefix \"/\"  not path prefix \"/admin\" }` allows `/ADMIN`)."),
    ("L0401", "unused named policy", "A named policy in the program's own files that no service, route or "
              "authorization block refers to."),
    ("L0402", "unused import", "An import that contributes nothing: the file declares no service, routes or "
              "authorization, and none of its named policies is used."),
    # ---- import (`meshc import istio`, located in the YAML it reads)
    ("E1001", "malformed YAML", "A YAML file that does not parse (or is not UTF-8, or repeats a key in one mapping, or "
              "uses a merge key): the message says where the parser stopped. Nothing is written."),
    ("E1002", "YAML refused as hostile", "The importer reads YAML as plain data and bounds it: a tag that "
              "could construct an object (`!!python/object`, any custom tag), a file over 16 MiB, nesting deeper "
              "than 64 levels, more "
              "than two million nodes, or aliases that would expand to more than two million nodes (an alias bomb: "
              "a few hundred bytes that expand to gigabytes when walked) are refused before anything is built."),
    ("E1003", "not an importable object", "A YAML document that is not a Kubernetes object with `apiVersion`, "
              "`kind` and `metadata.name`, or of a kind the importer does not read. VirtualService, DestinationRule, "
              "AuthorizationPolicy, PeerAuthentication, ServiceEntry and Service are translated; workloads and "
              "configuration (Deployment, ConfigMap, ServiceAccount, …) are skipped with W1001."),
    ("E1004", "unknown field", "A field that the real Istio CRD schema (istio/api v1.30) does not declare at "
              "that place: usually a misspelling, which Istio would reject (or, with validation off, ignore)."),
    ("E1005", "cannot be translated", "An Istio field or value that meshc has no construct for (a redirect, CORS "
              "that ignores unmatched preflights, a gateway, a suffix path pattern, a source with both principals "
              "and namespaces, …). The import "
              "stops rather than leave it out silently: remove it, or keep that object in Istio YAML."),
    ("E1006", "invalid value", "A value of the wrong type or out of range (a weight that is not an integer, a duration "
              "Istio would not parse, a name that is not a meshc name)."),
    ("E1007", "unknown host", "A VirtualService, DestinationRule or destination names a host that no imported "
              "Kubernetes Service or ServiceEntry declares. Short names resolve in the namespace of the object."),
    ("E1008", "unknown subset", "A route or mirror names a subset that the destination's DestinationRule does not "
              "declare (Istio would answer 503 `no healthy upstream`), or a subset that selects no endpoint."),
    ("E1009", "defined twice", "Two services with one name (meshc names are unique across namespaces), or two "
              "VirtualServices for one host (Istio merges them only on gateways)."),
    ("E1010", "imported policy does not check", "The translated policy fails `meshc check`: the message gives meshc's "
              "own diagnostic, reported at the YAML it came from (a path value that is not in normal form, a split "
              "whose weights are all 0, …)."),
    ("E1011", "rejected by the CRD schema", "The real Istio CRD (istio/api v1.30.3, vendored in "
              "compiler/kubeschema/crds) rejects the object: its OpenAPI schema (a type, a range, a required field) "
              "or one of its CEL validation rules (`x-kubernetes-validations`). The API server would refuse it, so "
              "it is not translated; a rule the validator cannot evaluate is this error too, never a pass."),
    ("W1001", "skipped object", "A Kubernetes object that carries no mesh policy (Deployment, ServiceAccount, "
              "ConfigMap, …) is skipped; a Deployment's pod labels and service account still tell which pods a "
              "Service has."),
    ("W1002", "Istio default or retry detail approximated", "Istio retries every route that says nothing about "
              "retries (2 attempts on connect-failure, refused-stream, 503 and the gRPC statuses unavailable and "
              "cancelled, each on another endpoint). meshc writes that as a `retry` block without the gRPC statuses "
              "and without the choice of another endpoint: write `retries: {attempts: 0}` or "
              "`retryIgnorePreviousHosts: false` in the YAML to make the translation exact."),
    ("W1003", "approximated", "The translation is close but not exact, and the message says how: Istio's outlier "
              "detection turns Envoy's panic threshold off unless `minHealthPercent` is written, a Service with "
              "several ports keeps its first, a policy that selects no imported service is skipped."),
)


def code_info(code: str) -> Code:
    """The registered code: a diagnostic's (CODES), or a `meshc doctor` finding's
    (compiler/core/host_codes.py, loaded only when one is asked for)."""
    entry = CODES.get(code)
    if entry is None:
        from compiler.core.host_codes import HOST_CODES

        entry = next(Code(*row) for row in HOST_CODES if row[0] == code)
    return entry
