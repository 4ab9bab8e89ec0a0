"""Every settings block of the language, described once: each setting's key, the form of its
values, its default, its range and one line of documentation.

The checks read the ranges, labels and choices (compiler/semantic/checks/values.py), the
lowering the defaults (compiler/lower/), the formatter the forms (compiler/syntax/render.py), the
language server its hover text and docs/language.md §19 its defaults table (both generated from
here by compiler/tooling/reference.py; a test keeps the document current). The grammar states
the same keys (grammar/mesh.lark); tests/test_grammar.py holds the two equal.

A value form is a kind, `int`, `duration` (whole milliseconds), `percent` (0-100), `string` or
`name`; `KIND?` is an optional last value, `("max", KIND)` a value written after the word `max`.
`conditions` is the bracketed list of retry conditions, and a setting without forms is a flag.
Defaults are in the IR's units: milliseconds, percentages, counts.
"""

from __future__ import annotations

UINT32_MAX = 2**32 - 1


class Setting:
    """One setting of a block. A plain class rather than a NamedTuple or a dataclass: `meshc check`
    reads these at every start, and neither `typing` nor generated methods are worth their time."""
    __slots__ = ("key", "forms", "default", "doc", "low", "high", "label", "choices", "default_text")

    def __init__(self, key: str, forms: tuple, default: object, doc: str, low: int = 1, high: int = UINT32_MAX,
                 label: str = "", choices: tuple[str, ...] = (), default_text: str = ""):
        self.key = key                      # the setting's keyword
        self.forms = forms                  # the values it takes, in order (see above)
        self.default = default              # what lowering writes when it is not written (IR unit); None: none
        self.doc = doc                      # one line, for hover and the reference
        self.low, self.high = low, high     # the range of an `int` value (E0302)
        self.label = label                  # how diagnostics name the value (default: the key in backticks)
        self.choices = choices              # the words a `name` value may be (E0312)
        self.default_text = default_text    # the default in words, when it is a rule rather than a value

    @property
    def what(self) -> str:
        return self.label or f"`{self.key}`"

    def __repr__(self) -> str:
        return f"Setting({self.key!r})"


class Block:
    """A settings block: its keyword, its section of docs/language.md, its settings in order."""
    __slots__ = ("kind", "section", "doc", "settings", "when", "_by_key")

    def __init__(self, kind: str, section: str, doc: str, settings: tuple[Setting, ...], when: str = ""):
        self.kind = kind                    # the block's keyword (`limits`), or `mesh`
        self.section = section
        self.doc = doc                      # one line
        self.settings = settings
        self.when = when                    # when its defaults apply, if not always
        self._by_key = {s.key: s for s in settings}

    def __getitem__(self, key: str) -> Setting:
        return self._by_key[key]

    def keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.settings)

    def default(self, key: str):
        return self._by_key[key].default


MTLS_MODES = ("strict", "permissive", "disable")
ESCAPED_SLASHES = ("reject", "decode", "keep")

MESH = Block("mesh", "§4", "mesh-wide settings, at most one block per program", (
    Setting("trust_domain", ("string",), "cluster.local", "the first part of every SPIFFE ID of the program"),
    Setting("mtls", ("name",), "disable", "what every sidecar's inbound listener accepts, unless its service says: "
            "mutual TLS only, also plaintext, or plaintext only", choices=MTLS_MODES),
    Setting("certificates", ("string",), "/etc/meshc/certs", "the root of the identity files: sidecar S reads "
            "`DIR/S/cert.pem`, `key.pem` and `ca.pem`"),
    Setting("cluster_domain", ("string",), "cluster.local", "the Kubernetes cluster domain: every service also "
            "answers to `NAME.NAMESPACE.svc` and `NAME.NAMESPACE.svc.DOMAIN`"),
))

PROPAGATIONS = ("w3c",)

TRACING = Block("tracing", "§4.2", "trace propagation and span export by every sidecar (inside `mesh`); no block, "
                "no tracing", (
    Setting("sampling", ("percent",), 100.0, "share of requests without a trace decision yet that are traced, in "
            "steps of 0.01% (Envoy's default: all)", label="tracing sampling"),
    Setting("propagation", ("name",), "w3c", "the trace context headers read and written: W3C `traceparent` and "
            "`tracestate`", choices=PROPAGATIONS),
    Setting("otlp", ("string",), None, "`\"http://HOST:PORT/PATH\"`: where sampled spans are sent over OTLP/HTTP",
            default_text="none: headers only, no span export"),
), when="when the block is written")

LIMITS = Block("limits", "§5.4", "circuit breaking, per calling sidecar and per subset (Envoy's own defaults)", (
    Setting("connections", ("int",), 1024, "connections open at once to the subset's endpoints"),
    Setting("pending", ("int",), 1024, "requests waiting for a connection"),
    Setting("requests", ("int",), 1024, "requests in flight"),
    Setting("retries", ("int",), 3, "retries in flight; ignored under a `retry_budget` (W0503)"),
))

OUTLIER = Block("outlier", "§5.5", "passive health checking: eject an endpoint after consecutive errors", (
    Setting("consecutive_5xx", ("int",), 5, "eject an endpoint at its Nth 5xx in a row"),
    Setting("consecutive_gateway_errors", ("int",), 0, "eject at the Nth 502/503/504 in a row",
            default_text="0, not used"),
    Setting("interval", ("duration",), 10_000, "how often ejections are re-evaluated, and ejected endpoints returned"),
    Setting("ejection", ("duration",), 30_000, "base ejection time, multiplied by the number of ejections"),
    Setting("max_ejected", ("percent",), 10.0, "at most this share of a subset's endpoints ejected at once"),
), when="when the block is written")

RETRY_BUDGET = Block("retry_budget", "§5.6", "caps retries in flight at max(`min_concurrency`, `percent` × active "
                     "requests)", (
    Setting("percent", ("percent",), 20.0, "share of active requests that may be retries",
            label="retry budget percent"),
    Setting("min_concurrency", ("int",), 3, "retries always allowed in flight", low=0),
), when="when the block is written")

SIDECAR = Block("sidecar", "§5.7", "the service's own proxy: its ports, its application, path normalisation, "
                "its limits on clients", (
    Setting("inbound", ("int",), 15006, "port of the listener that receives traffic for the service",
            high=65535, label="inbound port"),
    Setting("outbound", ("int",), 15001, "port of the listener the local app sends its calls to",
            high=65535, label="outbound port"),
    Setting("admin", ("int",), 15000, "port of the proxy's admin interface", high=65535, label="admin port"),
    Setting("ports", ("int",), None, "first of three consecutive ports taken by the unwritten `inbound`, `outbound` "
            "and `admin`, in that order (a sidecar's own block of ports on a shared host)", high=65533,
            label="first port", default_text="none: each port its own default"),
    Setting("app", ("string",), None, "`\"HOST:PORT\"` where inbound traffic is forwarded",
            default_text="`127.0.0.1:<port>`, the service's own port"),
    Setting("escaped_slashes", ("name",), "reject", "what `%2F` and `%5C` in a path do: `reject` (400), `decode` or "
            "`keep`", choices=ESCAPED_SLASHES),
    Setting("max_request_headers", ("int",), 100, "a request with more header lines is answered 431 (Envoy's "
            "default)", high=10_000, label="request header count limit"),
    Setting("max_request_headers_kb", ("int",), 60, "a request head larger than this many KiB is answered 431 "
            "(Envoy's default)", high=8192, label="request head size limit (KiB)"),
    Setting("request_headers_timeout", ("duration",), 10_000, "a request head not complete this long after its "
            "first byte is answered 408 and its connection closed", label="request headers timeout"),
    Setting("idle_timeout", ("duration",), 3_600_000, "a client connection without a request in flight this long "
            "is closed (Envoy's default)", label="idle timeout"),
    Setting("stream_idle_timeout", ("duration",), 300_000, "a request on which nothing moves this long in either "
            "direction is ended: 408 or 504, or reset once its response started; bounds `timeout none` too "
            "(Envoy's default)", label="stream idle timeout"),
    Setting("max_connections", ("int",), 4096, "client connections open at once on each listener; one more is "
            "accepted and closed at once", high=1_000_000, label="connection limit"),
    Setting("access_log", ("string",), "", "`\"/ABSOLUTE/PATH\"`: both planes append one JSON object per request "
            "and line to this file, with the same fields (docs/observability.md)", label="access log path",
            default_text="off"),
))

RETRY = Block("retry", "§10", "retries after the first attempt (`retry { … }`, a `policy retry`, or `retry none`)", (
    Setting("attempts", ("int",), 2, "retries after the first attempt; 0 means none", low=0, high=100),
    Setting("on", ("conditions",), ("5xx",), "the conditions that make an attempt retried, and status codes",
            default_text="`[5xx]`"),
    Setting("per_try_timeout", ("duration",), 0, "bound on each attempt, shorter than the route timeout",
            label="per-try timeout", default_text="none: each try may use what is left of the route timeout"),
    Setting("backoff", ("duration", ("max", "duration?")), 25, "jittered exponential wait before each retry, "
            "and its longest", label="backoff", default_text="25ms, max 10 × the base"),
    Setting("allow_non_idempotent", (), None, "silences W0501 (retries of POST and PATCH); changes nothing else",
            default_text="off"),
), when="when the route retries")

FAULT = Block("fault", "§11", "injected failures: the delay first, then the abort", (
    Setting("abort", ("int", "percent?"), 100.0, "answer STATUS locally for a share of requests",
            low=200, high=599, default_text="100% of requests"),
    Setting("delay", ("duration", "percent?"), 100.0, "wait before forwarding, for a share of requests",
            label="fault delay", default_text="100% of requests"),
), when="the share, when it is not written")

REDIRECT_STATUSES = (301, 302, 303, 307, 308)   # Envoy's RedirectAction.response_code
REDIRECT_SCHEMES = ("http", "https")
# shared by `redirect` and `rewrite` (one Setting each: the same key has the same form)
_PATH = Setting("path", ("string",), None, "the whole path replaced by this one (the query is kept)",
                default_text="the request's")
_PREFIX = Setting("prefix", ("string",), None, "the prefix the route's `path prefix` matched replaced by this one, "
                  "segment by segment (`/old` → `/new`: `/old/x` → `/new/x`, `/old` → `/new`)",
                  default_text="the request's")
_REGEX = Setting("regex", ("string", "string"), None, "every match of the RE2 pattern in the path replaced by "
                 "the substitution (`\\1`: a group)", default_text="the request's")
_HOST = Setting("host", ("string",), None, "the Host: a DNS name or an IP address (a redirect's without a port)",
                default_text="the request's")

REDIRECT = Block("redirect", "§8.1", "the route answers with a redirect to the same request elsewhere", (
    Setting("scheme", ("string",), None, "`\"http\"` or `\"https\"`", default_text="the request's",
            choices=REDIRECT_SCHEMES),
    _HOST,
    Setting("port", ("int",), None, "the port written into the Location", high=65535, label="redirect port",
            default_text="the request's, dropped with a scheme change from its default port"),
    _PATH,
    _PREFIX,
    _REGEX,
    Setting("status", ("int",), 301, "301, 302, 303, 307 or 308", low=301, high=308, label="redirect status"),
    Setting("strip_query", (), None, "the Location has no query", default_text="the query is kept"),
))

REWRITE = Block("rewrite", "§8.3", "what the path and the Host of a forwarded request become", (
    _PATH,
    _PREFIX,
    _REGEX,
    _HOST,
))

BLOCKS: dict[str, Block] = {b.kind: b for b in (MESH, TRACING, LIMITS, OUTLIER, RETRY_BUDGET, SIDECAR, RETRY, FAULT,
                                                REDIRECT, REWRITE)}
# Every setting by key (a key names one setting: the formatter renders a setting by its key; a
# setting shared by two blocks is one object).
SETTINGS: dict[str, Setting] = {s.key: s for b in BLOCKS.values() for s in b.settings}
assert all(SETTINGS[s.key] is s for b in BLOCKS.values() for s in b.settings), "a key is used by two settings"

SIDECAR_PORTS = ("inbound", "outbound", "admin")   # the order in which `ports N` gives N, N+1, N+2


def sidecar_ports(written: dict) -> dict[str, int]:
    """A sidecar's three ports from its written settings (key -> value, unwritten ones absent or
    None): each written port, else `ports` plus the port's place in SIDECAR_PORTS when `ports` is
    written, else its default."""
    base = written.get("ports")
    return {k: written[k] if written.get(k) is not None else base + i if base is not None else SIDECAR.default(k)
            for i, k in enumerate(SIDECAR_PORTS)}


def default(kind: str, key: str):
    """The default of setting `key` of block `kind`, in the IR's unit."""
    return BLOCKS[kind].default(key)
