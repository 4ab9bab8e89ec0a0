"""A generator profile limited to what an HTTPRoute carries (Gateway API v1.6.1, experimental
channel): the policies of `tests/test_gateway_api.py`'s comparison with the native proxy's
decision.

The general generators (`policies.py`) combine every feature, and `--target gateway-api` refuses
most of what they make (faults E0945, regex paths that overlap other routes E0943, raw and
case-insensitive prefixes E0946, `absent`/`not header` E0947, empty or non-ASCII header values
E0950, regex rewrites E0955, `strip_query` E0956, direct responses E0954, caller conditions).
This profile draws the same kind of program around the sidecar `client` (destinations `s0`…`s2`
with subsets, ordered routes with path, header, query and method matches, `to` and `split`,
timeouts, status-code retries, mirrors, header changes, redirects and rewrites by whole path, by
segment prefix or of the Host, `cors` with exact origins and a max age) from the constructs
Gateway API can say, so that the comparison compares requests:

- paths are `exact` or segment `prefix` (no trailing `/`, no `ignore_case`, no regex);
- each header or query name has at most one non-exact test in the whole policy (`HEADER_TESTS`,
  `QUERY_TESTS`): two different patterns of one name are what no single HTTPRouteMatch says
  together (order.py's "inexpressible" conflict, E0943);
- a service's routes are sorted by Gateway API's precedence of their most specific match (exact
  path, longest prefix, method, header count, query count; a route without a match last), so that
  the written order is mostly the one Gateway API ranks (order.py adds the matches that keep it
  where it is not);
- header values are printable ASCII words; a header is changed once per route.

Requests are `policies.requests` (the general request generator) aimed at the profile's policies:
the outbound ones, each header name once (`gateway_cases`).
"""

from __future__ import annotations

import dataclasses
import re

from hypothesis import strategies as st

from tests.equivalence.policies import (
    CLIENT_NAMESPACE,
    MATCH_HEADERS,
    QUERY_NAMES,
    QUERY_VALUES,
    SERVICE_PORT,
    SPLIT_HEADER,
    SPLIT_KEYS,
    SUBSETS,
    TRUST_DOMAIN,
    TWIN_NAMESPACES,
    VALUES,
    Endpoint,
    GenPolicy,
    GenRequest,
    _paths,
    namespace_of,
    q,
    requests,
    short_name,
)

# per name: exact tests, and at most one other test (whose pattern is then the same everywhere)
HEADER_TESTS = {"x-h0": ('exact "a"', 'exact "ab"', 'prefix "a"'), "x-h1": ('exact "1"', 'regex "[0-9]+"'),
                "x-h2": ('exact "A"', "present"), "accept": ('exact "a,b"', 'suffix "b"')}
QUERY_TESTS = {"q": ('exact "1"', 'exact "x"', "present"), "v": ('exact "2"', 'regex "[0-9]+"')}
METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")
SET_HEADERS = ("x-h0", "x-h1", "x-set", "x-add", "x-k", "accept")
RESPONSE_HEADERS = ("x-r0", "x-r1", "cache-control", "x-backend", "content-type")
SET_VALUES = ("v", "100%", "two words", "a,b", "%%")   # (Gateway API: printable ASCII words, E0950)
# the origins a `cors` allows (requests come from these and from others: policies.CORS_ORIGINS)
CORS_ORIGINS = ("https://app.example", "https://app.example:8443", "http://localhost:3000")
RETRY_ON = ("5xx", "gateway-error", "retriable-4xx", "409", "503", "500")


@st.composite
def _match(draw, paths: list[str]) -> tuple[str, tuple]:
    """(a match block, its rank under Gateway API's precedence: smaller ranks first)."""
    conds = []
    kind, value = None, "/"
    if draw(st.integers(0, 3)) > 0:
        kind = draw(st.sampled_from(("exact", "prefix", "prefix")))
        value = draw(_paths)
        if paths and draw(st.integers(0, 3)) == 0:   # below a path drawn before: a more specific match
            value = draw(st.sampled_from(paths)).rstrip("/") + value
        conds.append(f"path {kind} {q(value)}")
        paths.append(value)
    names = draw(st.lists(st.sampled_from(sorted(HEADER_TESTS)), max_size=2, unique=True))
    conds += [f"header {q(n)} {draw(st.sampled_from(HEADER_TESTS[n]))}" for n in names]
    queries = draw(st.lists(st.sampled_from(sorted(QUERY_TESTS)), max_size=1 if draw(st.integers(0, 2)) else 0))
    conds += [f"query {q(n)} {draw(st.sampled_from(QUERY_TESTS[n]))}" for n in queries]
    method = draw(st.integers(0, 2)) == 0
    if method:
        methods = draw(st.lists(st.sampled_from(METHODS), min_size=1, max_size=2, unique=True))
        conds.append(f"method {methods[0]}" if len(methods) == 1 else f"method [{', '.join(methods)}]")
    rank = (0 if kind == "exact" else 1, -len(value) if kind != "exact" else 0, 0 if method else 1,
            -len(names), -len(queries))
    return "match { " + "  ".join(conds) + " }", rank


@st.composite
def _changes(draw, names: tuple[str, ...]) -> str:
    """A request_headers/response_headers body changing each header once."""
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    ops = []
    for name in chosen:
        op = draw(st.sampled_from(("remove", "set", "add")))
        ops.append(f"remove {q(name)}" if op == "remove" else f"{op} {q(name)} {q(draw(st.sampled_from(SET_VALUES)))}")
    return "{ " + "  ".join(ops) + " }"


@st.composite
def _route(draw, index: int, destinations: list[str], paths: list[str]) -> tuple[tuple, str]:
    """(the route's rank, its text)."""
    kind = draw(st.sampled_from(("forward",) * 4 + ("redirect",) * 2 + ("rewrite",) * 3))
    blocks = [draw(_match(paths)) for _ in range(draw(st.integers(0, 2)))]
    prefix = None
    if kind != "forward" and draw(st.booleans()):   # a prefix replacement: one `path prefix` match
        value = draw(_paths)
        paths.append(value)
        conds = [f"path prefix {q(value)}"]
        if draw(st.integers(0, 2)) == 0:
            name = draw(st.sampled_from(sorted(HEADER_TESTS)))
            conds.append(f"header {q(name)} {HEADER_TESTS[name][0]}")
        if draw(st.integers(0, 2)) == 0:
            conds.append("method [GET, HEAD]")
        blocks = [("match { " + "  ".join(conds) + " }",
                   (1, -len(value), 0 if "method" in conds[-1] else 1, -(len(conds) > 1 and "header" in conds[1]), 0))]
        # (`/x/` ends in `/`, which Gateway API joins to the rest with one `/` and meshc keeps: E0957)
        prefix = draw(st.sampled_from(("/new", "/", "/a/b") * 4 + ("/x/",)))
        if draw(st.integers(0, 3)) == 0:   # first, before more specific routes: order.plan adds their
            blocks = [(blocks[0][0], (-1,))]   # matches to this one, each rule with its own replacement
    rank = min((r for _, r in blocks), default=(2,))
    body = [b for b, _ in blocks]
    if kind == "redirect":
        settings = []
        if draw(st.booleans()):
            settings.append(f"scheme {q(draw(st.sampled_from(('http', 'https'))))}")
        if draw(st.integers(0, 2)) == 0:
            settings.append(f"host {q('www.example.com')}")
        settings.append(f"port {draw(st.sampled_from((80, 443, 8443)))}")
        settings.append(f"prefix {q(prefix)}" if prefix is not None
                        else f"path {q(draw(st.sampled_from(('/moved', '/', '/a/b'))))}")
        if draw(st.booleans()):
            settings.append(f"status {draw(st.sampled_from((301, 302, 303, 307, 308)))}")
        body.append("redirect { " + "  ".join(settings) + " }")
        return rank, f"  route r{index} {{\n    " + "\n    ".join(body) + "\n  }"
    if draw(st.integers(0, 2)) == 0:
        chosen = draw(st.lists(st.sampled_from(destinations), min_size=1, max_size=3, unique=True))
        weights = [draw(st.sampled_from((0, 1, 30, 70, 100))) for _ in chosen]
        if sum(weights) == 0:
            weights[0] = 1
        arms = []
        for d, w in zip(chosen, weights):
            arm = f"{d} {w}"
            if draw(st.integers(0, 3)) == 0:
                arm += " request_headers " + draw(_changes(SET_HEADERS))
            arms.append(arm)
        by = f" by header {q(SPLIT_HEADER)}" if draw(st.integers(0, 3)) == 0 else ""
        body.append(f"split {{ {'  '.join(arms)} }}{by}")
    else:
        body.append(f"to {draw(st.sampled_from(destinations))}")
    if kind == "rewrite":
        settings = []
        if prefix is not None:
            settings.append(f"prefix {q(prefix)}")
        elif draw(st.booleans()):
            settings.append(f"path {q(draw(st.sampled_from(('/fixed', '/', '/a/b'))))}")
        if draw(st.booleans()) or not settings:
            settings.append(f"host {q('api.internal')}")
        body.append("rewrite { " + "  ".join(settings) + " }")
    timeout = draw(st.sampled_from(("", "timeout 250ms", "timeout 3s", "timeout none")))
    if timeout:
        body.append(timeout)
    if draw(st.integers(0, 2)) == 0:
        on = draw(st.lists(st.sampled_from(RETRY_ON), min_size=1, max_size=2, unique=True))
        body.append(f"retry {{ attempts {draw(st.integers(1, 3))}  on [{', '.join(on)}]  backoff 1ms max 10ms }}")
    if draw(st.integers(0, 4)) == 0:
        targets = draw(st.lists(st.sampled_from(destinations), min_size=1, max_size=2, unique=True))
        shares = ("100%",) if len(targets) > 1 else ("0%", "100%", "12.5%")
        body += [f"mirror {t} {draw(st.sampled_from(shares))}" for t in targets]
    if draw(st.integers(0, 3)) == 0:
        body.append("request_headers " + draw(_changes(SET_HEADERS)))
    if draw(st.integers(0, 3)) == 0:
        body.append("response_headers " + draw(_changes(RESPONSE_HEADERS)))
    if draw(st.integers(0, 4)) == 0:
        body.append(draw(_cors()))
    return rank, f"  route r{index} {{\n    " + "\n    ".join(body) + "\n  }"


@st.composite
def _cors(draw) -> str:
    """A `cors` the CORS filter carries: exact origins, a written max age, named headers."""
    origins = draw(st.lists(st.sampled_from(CORS_ORIGINS), min_size=1, max_size=2, unique=True))
    parts = ["origins [" + ", ".join(f"exact {q(o)}" for o in origins) + "]"]
    if draw(st.booleans()):
        parts.append("methods " + draw(st.sampled_from(("[GET]", "[GET, POST, PUT]", "[DELETE, PATCH]"))))
    if draw(st.booleans()):
        parts.append("headers " + draw(st.sampled_from(('["x-h0"]', '["x-h0", "content-type"]'))))
    if draw(st.booleans()):
        parts.append("expose " + draw(st.sampled_from(('["x-backend"]', '["x-r0", "x-r1"]'))))
    parts.append("max_age " + draw(st.sampled_from(("10s", "1h"))))
    if draw(st.booleans()):
        parts.append("credentials")
    return "cors { " + "  ".join(parts) + " }"


@st.composite
def gateway_policies(draw) -> GenPolicy:
    """A program around the sidecar of `client` whose routes an HTTPRoute carries (module docstring)."""
    services = [f"s{i}" for i in range(draw(st.integers(1, 3)))]
    # sometimes s0 has a twin in another namespace (policies.py): a route to the other one is a
    # backendRef to another namespace's Service, which its ReferenceGrant lets through
    twin = draw(st.sampled_from(TWIN_NAMESPACES))
    if twin is not None:
        services[:1] = ["default/s0", f"{twin}/s0"]
    endpoints: list[Endpoint] = []
    lines = [f'mesh {{\n  trust_domain "{TRUST_DOMAIN}"\n  mtls disable\n}}\n',
             f'service client {{\n  port 8000\n  namespace "{CLIENT_NAMESPACE}"\n  endpoints ["127.0.0.1:@APP@"]\n'
             f'  sidecar {{ inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" }}\n}}\n']
    destinations = []
    for svc in services:
        body = [f"  port {SERVICE_PORT[short_name(svc)]}"]
        if "/" in svc:
            body.append(f"  namespace {q(namespace_of(svc))}")
        for name in SUBSETS[:draw(st.integers(1, 3))]:
            ep = Endpoint(len(endpoints), svc, name)
            endpoints.append(ep)
            body.append(f'  subset {name} {{ endpoints ["127.0.0.1:@EP{ep.index}@"] }}')
            destinations.append(f"{svc}.{name}")
        lines.append(f"service {short_name(svc)} {{\n" + "\n".join(body) + "\n}\n")
    paths: list[str] = []
    for svc in services:
        drawn = [draw(_route(i, destinations, paths)) for i in range(draw(st.integers(1, 4)))]
        ordered = [text for _, text in sorted(drawn, key=lambda r: r[0])]   # (stable: ties as drawn)
        lines.append(f"routes {svc} {{\n" + "\n".join(ordered) + "\n}\n")
    return GenPolicy(text="\n".join(lines), endpoints=tuple(endpoints), services=tuple(services),
                     paths=tuple(paths), header_names=MATCH_HEADERS, header_values=VALUES, query_names=QUERY_NAMES,
                     query_values=QUERY_VALUES, split_keys=SPLIT_KEYS, mtls="disable",
                     meta={"routes": {}, "focus": frozenset(), "foreign_routes": [], "profile": "gateway-api"})


def gateway_policy_of(routes: str, twin: str | None = None) -> GenPolicy:
    """A written policy of the profile's form: `client`, a destination `s0` with subsets `a` and `b`,
    and `routes` (the body of `routes s0`). With `twin`, s0 has a twin in that namespace (subset
    `a`): the two are `default/s0` and `TWIN/s0`, and `routes` is the body of `routes default/s0`."""
    services = ("default/s0", f"{twin}/s0") if twin else ("s0",)
    endpoints = (Endpoint(0, services[0], "a"), Endpoint(1, services[0], "b")) + (
        (Endpoint(2, services[1], "a"),) if twin else ())
    namespace = '  namespace "default"\n' if twin else ""
    text = (f'mesh {{\n  trust_domain "{TRUST_DOMAIN}"\n  mtls disable\n}}\n\n'
            f'service client {{\n  port 8000\n  namespace "{CLIENT_NAMESPACE}"\n  endpoints ["127.0.0.1:@APP@"]\n'
            '  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" }\n}\n\n'
            f'service s0 {{\n  port {SERVICE_PORT["s0"]}\n{namespace}  subset a {{ endpoints ["127.0.0.1:@EP0@"] }}\n'
            '  subset b { endpoints ["127.0.0.1:@EP1@"] }\n}\n\n')
    if twin:
        text += (f'service s0 {{\n  port {SERVICE_PORT["s0"]}\n  namespace "{twin}"\n'
                 '  subset a { endpoints ["127.0.0.1:@EP2@"] }\n}\n\n'
                 f"routes {twin}/s0 {{\n  route all {{ to {twin}/s0.a }}\n}}\n\n")
    text += f"routes {services[0]} {{\n{routes}\n}}\n"
    paths = tuple(dict.fromkeys(v for _, v in re.findall(r'path (exact|prefix) "([^"]*)"', routes)))
    return GenPolicy(text=text, endpoints=endpoints, services=services, paths=paths, header_names=MATCH_HEADERS,
                     header_values=VALUES, query_names=QUERY_NAMES, query_values=QUERY_VALUES,
                     split_keys=SPLIT_KEYS, mtls="disable",
                     meta={"routes": {}, "focus": frozenset(), "foreign_routes": [], "profile": "gateway-api"})


def _outbound(request: GenRequest) -> bool:
    return request.kind == "outbound"


def _once(request: GenRequest) -> GenRequest:
    """The request with each header name once (the first line of each kept): Gateway API leaves the
    test of a repeated header to the implementation."""
    seen: set[str] = set()
    kept = []
    for name, value in request.headers:
        if name.lower() not in seen:
            seen.add(name.lower())
            kept.append((name, value))
    return dataclasses.replace(request, headers=tuple(kept))


@st.composite
def gateway_cases(draw, max_requests: int = 20, min_requests: int = 5):
    """(policy, requests aimed at it): `policies.requests` with `live=False`, outbound ones only
    (an HTTPRoute routes what a caller sends to the Service), each header name once."""
    policy = draw(gateway_policies())
    outbound = requests(policy, live=False).filter(_outbound).map(_once)
    return policy, draw(st.lists(outbound, min_size=min_requests, max_size=max_requests))
