"""Every value is well-formed and in range (E03xx): ports, endpoints, identities, percentages,
durations, weights, status codes, header names, methods, retry conditions, RE2 regexes."""

from __future__ import annotations

import re
from functools import lru_cache

from compiler.core.diagnostics import Label, did_you_mean
from compiler.language import defaults
from compiler.language.endpoints import parse_endpoint, parse_otlp_url
from compiler.language.identity import DNS_LABEL, MAX_NAME_LENGTH, SPIFFE_ID, TRUST_DOMAIN
from compiler.language.retry import RETRY_CONDITIONS
from compiler.language.settings import (
    BLOCKS,
    FAULT,
    MESH,
    REDIRECT_SCHEMES,
    REDIRECT_STATUSES,
    SIDECAR,
    SIDECAR_PORTS,
    TRACING,
    Setting,
    sidecar_ports,
)
from compiler.semantic.checks.names import all_rules
from compiler.semantic.symbols import Context
from compiler.syntax import ast

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
UINT32_MAX = 2**32 - 1
DAY_MS = 86_400_000
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


@lru_cache(maxsize=8192)
def regex_error(pattern: str) -> str | None:
    """The RE2 compile error of a pattern, or None if it compiles (google-re2: Envoy's engine)."""
    import re2

    options = re2.Options()
    options.log_errors = False  # the library would print its own copy of the error on stderr
    try:
        re2.compile(pattern, options=options)
        return None
    except Exception as err:  # re2 raises its own error type, with bytes in the message
        msg = err.args[0] if err.args else str(err)
        if isinstance(msg, bytes):
            msg = msg.decode("utf-8", "replace")
        return str(msg)


_SLASHES = re.compile(r"/{2,}")
_ESCAPED_SLASH = re.compile(r"%(2[Ff]|5[Cc])")
_UNRESERVED_ESCAPE = re.compile(r"%(2[DdEe]|3[0-9]|[46][1-9A-Fa-f]|[57][0-9Aa]|5[Ff]|7[Ee])")


def normal_path(path: str) -> str:
    """The form a request path takes after the normalisation both targets apply before matching:
    unreserved `%XX` decoded, RFC 3986 dot segments removed, repeated slashes merged."""
    if "%" not in path and "//" not in path and "/." not in path:
        return path  # the common case: nothing to normalise
    path = _UNRESERVED_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), path)
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments[1:], 1):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return _SLASHES.sub("/", "/" + "/".join(out))


class _Values:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.add = ctx.diags.add

    # ---- small helpers ---------------------------------------------------------------------
    def count(self, lit: ast.Lit, what: str, low: int = 1, high: int = UINT32_MAX) -> None:
        if not low <= lit.value <= high and lit.value != ast.TOO_LARGE:  # (E0302 from the parser)
            self.add("E0302", f"{what} `{lit.value}` is out of range", lit.span,
                     hint=f"{what} is between {low} and {high}")

    def port(self, lit: ast.Lit, what: str = "port") -> None:
        self.count(lit, what, 1, 65535)

    def percent(self, lit: ast.Lit | None, what: str) -> None:
        if lit is not None and not 0 <= lit.value <= 100:
            self.add("E0303", f"{what} `{_as_written(lit, f'{lit.value:g}%')}` is outside 0% to 100%", lit.span)

    def duration(self, lit: ast.Lit, what: str) -> None:
        if lit.value <= 0:
            self.add("E0306", f"{what} must be longer than zero", lit.span)
        elif lit.value > DAY_MS:
            self.add("E0306", f"{what} `{lit.value} ms` is longer than a day", lit.span,
                     hint="durations are at most 24h")

    def header_name(self, lit: ast.Lit, what: str = "header") -> None:
        name = lit.value
        if name.startswith(":"):
            self.add("E0308", f"pseudo-header `{name}` cannot be used in a {what}", lit.span,
                     hint="match the path with `path`, the method with `method`")
        elif not _TOKEN.match(name):
            self.add("E0308", f"`{name}` is not a valid header name", lit.span,
                     hint="header names are HTTP tokens: letters, digits and !#$%&'*+-.^_`|~")

    def regex(self, lit: ast.Lit) -> None:
        error = regex_error(lit.value)
        if error is not None:
            self.add("E0304", f"invalid regex `{lit.value}`: {error}", lit.span,
                     hint="regexes use RE2 syntax and must match the whole value")

    def methods(self, cond: ast.MethodCond) -> None:
        for m in cond.methods:
            if m.value not in METHODS:
                hint = f"did you mean `{m.value.upper()}`?" if m.value.upper() in METHODS else \
                    did_you_mean(m.value.upper(), METHODS)
                self.add("E0309", f"unknown method `{m.value}`", m.span, hint=hint or "methods: " + ", ".join(METHODS))

    def path_value(self, cond: ast.PathCond) -> None:
        if cond.kind == "regex":
            self.regex(cond.value)
            if cond.ignore_case:
                self.add("E0312", "`ignore_case` does not apply to a `regex` path", cond.span,
                         hint="Envoy ignores case folding on a regex route: write `(?i)` at the start of "
                              "the regex, or use `exact`, `prefix` or `raw_prefix` with `ignore_case`")
        elif not cond.value.value.startswith("/"):
            self.add("E0314", f"path `{cond.value.value}` does not start with `/`", cond.value.span,
                     hint=f'write `"/{cond.value.value}"`')
        elif "?" in cond.value.value or "#" in cond.value.value:
            self.add("E0314", f"path `{cond.value.value}` contains a query or fragment", cond.value.span,
                     hint="paths are matched without the query string; use a `query` condition")
        elif _ESCAPED_SLASH.search(cond.value.value):
            self.add("E0314", f"path `{cond.value.value}` contains an escaped slash", cond.value.span,
                     hint="requests with `%2F` or `%5C` are rejected, or decoded to `/` with `escaped_slashes decode`: "
                          "write the path with `/`")
        else:
            normal = normal_path(cond.value.value)
            if normal != cond.value.value:
                self.add("E0314", f"path `{cond.value.value}` is not in normal form, so it can never match",
                         cond.value.span, hint=f"requests are normalised before matching (dot segments removed, "
                                                f"`//` merged, unreserved `%XX` decoded): write `{normal}`")

    def header_cond(self, cond: ast.HeaderCond) -> None:
        self.header_name(cond.name, "match")
        if cond.test == "regex":
            assert cond.value is not None  # a regex test has its operand (the grammar says so)
            self.regex(cond.value)
        if cond.ignore_case and cond.test in ("present", "absent", "regex"):
            self.add("E0312", f"`ignore_case` does not apply to `{cond.test}`", cond.span,
                     hint="use it with `exact`, `prefix` or `suffix`; a regex can use `(?i)`")

    def conditions(self, conditions, where: str) -> None:
        seen: dict[str, object] = {}
        for cond in conditions:
            if isinstance(cond, ast.NotCond):     # `not path` / `not method` (rules only): as often as wanted
                cond = cond.cond
                if isinstance(cond, ast.PathCond):
                    self.path_value(cond)
                else:
                    if not cond.methods:
                        self.add("E0301", "the method list is empty", cond.span,
                                 hint="list at least one method, or leave the `not method` condition out")
                    self.methods(cond)
                continue
            kind = {ast.PathCond: "path", ast.MethodCond: "method", ast.FromCond: "from",
                    ast.CallerCond: "caller"}.get(type(cond))
            if kind is not None:
                if kind in seen:
                    self.add("E0105", f"two `{kind}` conditions in one {where}", cond.span,
                             hint="a path takes one value: write a second match for another path" if kind == "path"
                             else "list several values in one condition")
                seen[kind] = cond
            if isinstance(cond, ast.PathCond):
                self.path_value(cond)
            elif isinstance(cond, ast.HeaderCond):
                self.header_cond(cond)
            elif isinstance(cond, ast.QueryCond):
                if not cond.name.value:
                    self.add("E0312", "query parameter name is empty", cond.name.span)
                if cond.test == "regex":
                    assert cond.value is not None  # a regex test has its operand (the grammar says so)
                    self.regex(cond.value)
            elif isinstance(cond, ast.MethodCond):
                if not cond.methods:
                    self.add("E0301", "the method list is empty", cond.span,
                             hint="list at least one method, or leave the condition out to match any method")
                self.methods(cond)
            elif isinstance(cond, ast.CallerCond):
                if not cond.callers:
                    self.add("E0301", "the caller list is empty", cond.span,
                             hint="list at least one calling service, or leave the condition out for every caller")
            elif isinstance(cond, ast.FromCond):
                if not cond.values and cond.kind not in ("same_namespace", "unauthenticated", "any"):
                    self.add("E0301", f"the `from {cond.kind}` list is empty", cond.span,
                             hint="list at least one, or leave the condition out to match any peer")
                self.from_cond(cond)

    def from_cond(self, cond: ast.FromCond) -> None:
        for v in cond.values:
            if cond.kind == "identity":
                value = v.value[:-2] + "/x" if v.value.endswith("/*") else v.value
                if not SPIFFE_ID.match(value):
                    self.add("E0311", f"`{v.value}` is not a SPIFFE ID", v.span,
                             hint="write `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/NAME`, or end it with `/*` for a "
                                  "prefix")
                elif "*" in v.value[:-1]:
                    self.add("E0311", f"`{v.value}` has a `*` that is not at the end", v.span,
                             hint="patterns may only end in `/*`")
            elif cond.kind == "namespace" and len(v.value) <= MAX_NAME_LENGTH and not DNS_LABEL.match(v.value):
                self.add("E0312", f"`{v.value}` is not a valid namespace name", v.span,
                         hint="namespaces are lower-case DNS labels")

    # ---- blocks --------------------------------------------------------------------------
    def block(self, block: ast.Block) -> None:
        """Every value of a settings block, by the form its description gives it
        (compiler/language/settings.py), then what only the block's own check knows."""
        desc = BLOCKS[block.kind]
        for s in block.settings:
            setting = desc[s.key]
            forms = setting.forms * len(s.values) if setting.forms == ("conditions",) else setting.forms
            for form, lit in zip(forms, s.values):
                kind = (form[1] if isinstance(form, tuple) else form).rstrip("?")
                self.setting_value(block.kind, setting, kind, lit)
        extra = getattr(self, f"block_{block.kind}", None)
        if extra is not None:
            extra(block)

    def setting_value(self, block: str, setting: Setting, kind: str, lit: ast.Lit) -> None:
        if block == "fault" or setting.key == "status":
            return  # a status and a share: block_fault says it in its own words
        if kind == "int":
            self.count(lit, setting.what, setting.low, setting.high)
        elif kind == "duration":
            self.duration(lit, setting.what)
        elif kind == "percent":
            self.percent(lit, setting.what)
        elif kind == "conditions":
            self.retry_condition(lit)

    def block_retry(self, block: ast.Block) -> None:
        for s in block.settings:
            if s.key == "backoff" and len(s.values) == 2 and s.values[0].value > s.values[1].value > 0:
                self.add("E0501", f"backoff base `{s.values[0].value} ms` is above its maximum "
                         f"`{s.values[1].value} ms`", s.span, hint="swap them, or raise the maximum")
            elif s.key == "on" and not s.values:
                self.add("E0310", "retry conditions are empty", s.span,
                         hint="list at least one condition, or write `retry none`")

    def retry_condition(self, v: ast.Lit) -> None:
        word = v.value
        if word.isdigit():
            if len(word) != 3 or not 100 <= int(word) <= 599:
                self.add("E0302", f"status code `{word}` is out of range", v.span,
                         hint="retriable status codes are between 100 and 599")
            return
        if word not in RETRY_CONDITIONS:
            hint = did_you_mean(word, RETRY_CONDITIONS) or (
                "conditions: " + ", ".join(f"`{c}`" for c in RETRY_CONDITIONS) + ", or a status code")
            self.add("E0310", f"unknown retry condition `{word}`", v.span, hint=hint)

    def block_fault(self, block: ast.Block) -> None:
        if not block.settings:
            self.add("E0301", "the fault block is empty", block.span,
                     hint="add `abort STATUS PERCENT` or `delay DURATION PERCENT`")
        for s in block.settings:
            setting = FAULT[s.key]
            if s.key == "abort":
                status = s.values[0]
                if not setting.low <= status.value <= setting.high and status.value != ast.TOO_LARGE:
                    self.add("E0302", f"abort status `{status.value}` is out of range", status.span,
                             hint=f"an injected abort has a status between {setting.low} and {setting.high}")
            else:
                self.duration(s.values[0], setting.what)
            if len(s.values) > 1:
                self.percent(s.values[1], f"{s.key} percentage")

    # ---- redirects, rewrites, direct responses (docs/language.md §8.1-§8.3) ----------------------
    def block_redirect(self, block: ast.Block) -> None:
        for s in block.settings:
            v = s.values[0] if s.values else None
            if s.key == "status" and v is not None and v.value not in REDIRECT_STATUSES \
                    and v.value != ast.TOO_LARGE:
                self.add("E0330", f"redirect status `{v.value}` is not a redirect status", v.span,
                         hint="a redirect answers 301 (moved permanently, the default), 302 (found), 303 (see other), "
                              "307 (temporary redirect) or 308 (permanent redirect); to answer another status, "
                              "write `respond STATUS`")
            elif s.key == "scheme" and v is not None and v.value not in REDIRECT_SCHEMES:
                guess = did_you_mean(v.value.lower(), REDIRECT_SCHEMES) if v.value.lower() not in REDIRECT_SCHEMES \
                    else f"write `\"{v.value.lower()}\"`"
                self.add("E0332", f"redirect scheme `{v.value}` is not `http` or `https`", v.span,
                         hint=guess or "a redirect's scheme is `\"http\"` or `\"https\"`, in lower case")
            elif s.key == "host" and v is not None:
                self.redirect_host(v, port=False)
            elif s.key in ("path", "prefix") and v is not None:
                self.replacement_path(v, s.key)
            elif s.key == "regex" and v is not None:
                self.rewrite_regex(v, s.values[1])
        self.one_path_change(block)

    def block_rewrite(self, block: ast.Block) -> None:
        if not block.settings:
            self.add("E0301", "the rewrite block is empty", block.span,
                     hint="add `prefix \"/NEW\"`, `path \"/NEW\"`, `regex \"PATTERN\" \"SUBSTITUTION\"` "
                          "or `host \"NAME\"`")
        for s in block.settings:
            v = s.values[0]
            if s.key == "host":
                self.redirect_host(v, port=True)
            elif s.key in ("path", "prefix"):
                self.replacement_path(v, s.key)
            elif s.key == "regex":
                self.rewrite_regex(v, s.values[1])
        self.one_path_change(block)

    def one_path_change(self, block: ast.Block) -> None:
        changes = [s for s in block.settings if s.key in ("path", "prefix", "regex")]
        if len(changes) > 1:
            self.add("E0422", f"the {block.kind} block changes the path twice, with `{changes[0].key}` and "
                     f"`{changes[1].key}`", changes[1].span,
                     hint="a path is changed one way: `path` replaces it all, `prefix` the prefix the route matched, "
                          "`regex` what a pattern matches")

    def redirect_host(self, v: ast.Lit, port: bool) -> None:
        host, sep, rest = v.value.rpartition(":") if port and not v.value.endswith("]") else ("", "", "")
        if not sep or not rest.isdigit():
            host = v.value
        name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        from compiler.language.endpoints import _DNS_NAME, is_ip

        numeric = ":" in name or name.replace(".", "").isdigit()
        ok = bool(name) and (is_ip(name) if numeric else bool(_DNS_NAME.match(name)))
        ok = ok and (":" not in name or host.startswith("["))
        if sep and rest.isdigit() and not 0 < int(rest) < 65536:
            ok = False
        if not ok:
            where = "rewritten Host" if port else "redirect host"
            self.add("E0333", f"{where} `{v.value}` is not a host name", v.span,
                     hint="write a DNS name such as `api.example.com` or an IP address"
                          + (" (with `:PORT` if the upstream needs one)" if port else
                             "; its port is the redirect's `port` setting"))

    def replacement_path(self, v: ast.Lit, key: str) -> None:
        bad = next((ch for ch in v.value if ch in "?#" or ord(ch) <= 32 or ord(ch) >= 127), None)
        if not v.value.startswith("/"):
            self.add("E0334", f"`{key}` replacement `{v.value}` does not start with `/`", v.span,
                     hint=f"write `\"/{v.value}\"`")
        elif bad is not None:
            what = {"?": "a query", "#": "a fragment"}.get(bad, "a space, a control character or a non-ASCII one")
            self.add("E0334", f"`{key}` replacement `{v.value}` has {what}", v.span,
                     hint="a replacement is a path only: the request's query is kept (or dropped with `strip_query`); "
                          "write other characters percent-encoded")

    def rewrite_regex(self, pattern: ast.Lit, substitution: ast.Lit) -> None:
        err = regex_error(pattern.value) if pattern.value else "an empty pattern"
        if err is not None:
            self.add("E0331", f"rewrite pattern `{pattern.value}` does not compile: {err}", pattern.span,
                     hint="patterns are RE2 (Envoy's engine): no backreferences or lookaround")
            return
        import re2

        groups = re2.compile(pattern.value).groups
        text = substitution.value
        i = 0
        while i < len(text):
            if text[i] == "\\":
                nxt = text[i + 1:i + 2]
                if (nxt.isdigit() and int(nxt) <= groups) or nxt == "\\":
                    i += 2
                    continue
                what = f"group `\\{nxt}`, which the pattern does not have (it has {groups})" if nxt.isdigit() \
                    else f"`\\{nxt}`, which is neither a group nor `\\\\`"
                self.add("E0331", f"rewrite substitution `{text}` names {what}", substitution.span,
                         hint="in a substitution `\\0` is the whole match, `\\1` to `\\9` the pattern's groups and "
                              "`\\\\` a backslash (write each backslash twice in a string)")
                return
            i += 1
        self.substitution_slash(pattern.value, substitution)

    def substitution_slash(self, pattern: str, substitution: ast.Lit) -> None:
        """W0422: the new path starts with `/` whatever the request only when the substitution
        starts with `/` (a match at the start of the path is replaced by it; else the path's own
        `/` stays first), or with `\\0` (the whole match: a match at the start begins with the
        path's `/`) followed by nothing or `/`, or by anything when the pattern starts with `^/`
        and neither a quantifier nor a `|` can make its match empty. Anything else may take the
        `/` away (`^/(.*)$` to `\\1`: `/a` becomes `a`), and the upstream gets a request target
        without one (a 503)."""
        text, span = substitution.value, substitution.span
        if text.startswith("/"):
            return
        never_empty = pattern.startswith("^/") and pattern[2:3] not in ("?", "*", "{") and "|" not in pattern
        if text.startswith("\\0") and (text[2:3] in ("", "/") or never_empty):
            return
        if text == "":
            self.add("W0422", f"the empty substitution removes what `{pattern}` matches: a path may lose its "
                     "leading `/`", span, hint="replace a match with `/` (or start the substitution with `/`); "
                                                "a path the pattern wholly removes is not rewritten at all")
        else:
            written = text.replace("\\", "\\\\")     # as in the source: each backslash twice
            self.add("W0422", f"rewrite substitution `{text}` may give a path without a leading `/`", span,
                     hint=f"start the substitution with `/` (`\"/{written}\"`), or with `\\\\0`: the upstream "
                          "answers a request target without `/` with an error")

    def respond(self, r: ast.Respond) -> None:
        if not 200 <= r.status.value <= 599 and r.status.value != ast.TOO_LARGE:
            self.add("E0335", f"direct response status `{r.status.value}` is out of range", r.status.span,
                     hint="a direct response has a status between 200 and 599; a redirect is `redirect { … }`")
        elif 300 <= r.status.value <= 399:
            self.add("E0335", f"direct response status `{r.status.value}` is a redirection", r.status.span,
                     hint="Envoy adds a `location` (the request's own URL) to a 3xx direct response: write "
                          "`redirect { … }` to send the client elsewhere")
        elif r.status.value == 204 and r.body is not None and r.body.value:
            self.add("E0335", "a 204 direct response has no body", r.body.span,
                     hint="204 means no content: remove the body, or answer 200")
        if r.body is not None:
            size = len(r.body.value.encode())
            if size > defaults.DIRECT_RESPONSE_MAX_BYTES:
                self.add("E0336", f"direct response body of {size} bytes is larger than "
                         f"{defaults.DIRECT_RESPONSE_MAX_BYTES}", r.body.span,
                         hint="Envoy refuses an inline body over 4 KiB (max_direct_response_body_size_bytes): "
                              "answer from a service for a larger body")

    def choice(self, setting: Setting, value: ast.Lit, hint: str | None = None) -> None:
        """A `name` value that must be one of the setting's choices (E0312)."""
        if value.value not in setting.choices:
            guess = did_you_mean(value.value, setting.choices)
            self.add("E0312", f"`{setting.key}` is {one_of(setting.choices)}, not `{value.value}`", value.span,
                     hint=f"{guess} {hint}" if guess and hint else guess or hint)

    def mtls_mode(self, value: ast.Lit) -> None:
        self.choice(MESH["mtls"], value,
                    hint="`strict` accepts only mutual TLS; `permissive` also plaintext, during a migration")

    def block_tracing(self, block: ast.Block) -> None:
        for s in block.settings:
            v = s.values[0]
            if s.key == "sampling" and 0 <= v.value <= 100 and abs(v.value * 100 - round(v.value * 100)) > 1e-6:
                self.add("E0303", f"tracing sampling `{_as_written(v, f'{v.value:g}%')}` is finer than 0.01%", v.span,
                         hint="sampling counts in steps of 0.01% (Envoy draws it per 10 000 requests): "
                              f"write `{round(v.value, 2):g}%`")
            elif s.key == "propagation":
                self.choice(TRACING["propagation"], v,
                            hint="Envoy 1.40's OpenTelemetry tracer reads and writes only W3C trace context "
                                 "(`traceparent`, `tracestate`); B3 would need its Zipkin tracer, which exports "
                                 "Zipkin spans, not OpenTelemetry ones")
            elif s.key == "otlp" and parse_otlp_url(v.value) is None:
                self.add("E0317", f"`{v.value}` is not a collector endpoint for span export", v.span,
                         hint='write `otlp "http://HOST:PORT/v1/traces"`: plain http (a collector next to the sidecar, '
                              "such as the OpenTelemetry Collector on 127.0.0.1:4318), a host and a port")

    def block_sidecar(self, block: ast.Block) -> None:
        written = {s.key: s.values[0] for s in block.settings}
        ports = SIDECAR_PORTS
        base = written.get("ports")
        effective = sidecar_ports({k: v.value for k, v in written.items()
                                   if k in ports or (k == "ports" and v.value != ast.TOO_LARGE)})
        given = "its default" if base is None or base.value == ast.TOO_LARGE else f"from `ports {base.value}`"
        for s in block.settings:
            v = s.values[0]
            if s.key in effective and v.value != ast.TOO_LARGE:
                clash = next((k for k, p in effective.items() if k != s.key and p == v.value), None)
                if clash is not None and (clash not in written or ports.index(clash) < ports.index(s.key)):
                    what = "" if clash in written else f" ({given})"
                    self.add("E0312", f"{s.key} port `{v.value}` is also the {clash} port{what}", v.span,
                             hint="the sidecar's inbound, outbound and admin ports must differ")
            elif s.key == "app":
                if parse_endpoint(v.value) is None:
                    self.add("E0307", f"app address `{v.value}` is not `host:port`", v.span)
            elif s.key == "escaped_slashes":
                self.choice(SIDECAR["escaped_slashes"], v)
            elif s.key == "access_log":
                self.access_log(v)

    def access_log(self, value: ast.Lit) -> None:
        """The access log's file: an absolute path, as both planes open it from their own working
        directory, without a control character (Envoy and the native proxy take it as written)."""
        path = value.value
        if not path.startswith("/"):
            self.add("E0316", f"access log path `{path}` is not absolute", value.span,
                     hint='write the whole path, such as `"/var/log/meshc/SERVICE.log"`: the proxies do not '
                          "share a working directory")
        elif path.endswith("/") or any(ord(c) < 0x20 or c == "\x7f" for c in path):
            what = "names a directory" if path.endswith("/") else "has a control character"
            self.add("E0316", f"access log path `{path}` {what}", value.span,
                     hint="the access log is one file, such as `\"/var/log/meshc/SERVICE.log\"`")

    # ---- declarations ------------------------------------------------------------------------
    def service(self, svc: ast.Service) -> None:
        name = svc.name.value
        if svc.port is None:
            self.add("E0301", f"service `{name}` has no `port`", svc.name.span,
                     hint="add `port N`: the port its application listens on")
        else:
            self.port(svc.port)
        if (svc.namespace is not None and len(svc.namespace.value) <= MAX_NAME_LENGTH  # longer: E0210
                and not DNS_LABEL.match(svc.namespace.value)):
            self.add("E0312", f"`{svc.namespace.value}` is not a valid namespace name", svc.namespace.span,
                     hint="namespaces are lower-case DNS labels")
        if svc.identity is not None and not SPIFFE_ID.match(svc.identity.value):
            self.add("E0311", f"`{svc.identity.value}` is not a SPIFFE ID", svc.identity.span,
                     hint="write `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/NAME`")
        if svc.mtls is not None:
            self.mtls_mode(svc.mtls)
        if svc.endpoints is None and not svc.subsets:
            self.add("E0301", f"service `{name}` has no endpoints", svc.name.span,
                     hint='add `endpoints ["host:port"]`, or subsets with endpoints')
        if svc.endpoints is not None:
            self.endpoints(svc.endpoints, svc.span, f"service `{name}`")
        seen: dict[str, ast.Service | ast.Subset] = {defaults.IMPLICIT_SUBSET: svc} if svc.endpoints is not None else {}
        for sub in svc.subsets:
            if sub.name.value in seen:
                what = ("the subset made by the service's own `endpoints`"
                        if sub.name.value == defaults.IMPLICIT_SUBSET else "declared twice")
                self.add("E0202", f"subset `{sub.name.value}` of service `{name}` is {what}", sub.name.span)
            seen[sub.name.value] = sub
            if sub.labels is not None:
                self.labels(sub)
            elif sub.endpoints is None and sub.sidecar is None:   # (a workload's default: its inbound listener)
                self.add("E0301", f"subset `{sub.name.value}` has no endpoints", sub.name.span,
                         hint='add `endpoints ["host:port"]`, `labels { KEY "VALUE" }` to select Kubernetes pods, '
                              "or a `sidecar { … }` block: a workload reached at its own sidecar's inbound port")
            if sub.endpoints is not None:
                self.endpoints(sub.endpoints, sub.span, f"subset `{sub.name.value}`")
            if sub.sidecar is not None:
                self.block(sub.sidecar)
        for node in (svc.limits, svc.outlier, svc.retry_budget, svc.sidecar):
            if isinstance(node, ast.Block):
                self.block(node)

    def labels(self, sub: ast.Subset) -> None:
        """A label-selected subset (docs/language.md §4, "Label-selected subsets"): one `labels`
        block, not next to `endpoints`, with at least one label, each key once, keys and values as
        Kubernetes takes them."""
        from compiler.language.labels import key_problem, value_problem

        assert sub.labels is not None
        name = sub.name.value
        if sub.endpoints is not None or len(sub.labels) > 1:
            self.add("E0360", f"subset `{name}` is both an endpoint list and label-selected"
                     if sub.endpoints is not None else f"subset `{name}` has two `labels` blocks", sub.span,
                     hint="a subset is either `endpoints [...]` or one `labels { … }` block")
        entries = [e for block in sub.labels for e in block]
        if not entries:
            self.add("E0364", f"subset `{name}` selects by no label", sub.name.span,
                     hint='write the labels its pods carry, e.g. `labels { version "v1" }`')
        seen: set[str] = set()
        for e in entries:
            key, value = e.key.value, e.value.value
            problem = key_problem(key)
            if problem is not None:
                self.add("E0361", f"`{key}` is not a Kubernetes label key: {problem}", e.key.span,
                         hint="a key is `NAME` or `PREFIX/NAME`, e.g. `version` or `app.kubernetes.io/version`")
            elif key in seen:
                self.add("E0363", f"label `{key}` is written twice in subset `{name}`", e.key.span)
            seen.add(key)
            problem = value_problem(value)
            if problem is not None:
                self.add("E0362", f"`{value}` is not a Kubernetes label value: {problem}", e.value.span,
                         hint="at most 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or "
                              "digit (or empty)")

    def endpoints(self, endpoints: tuple[ast.Lit, ...], span, what: str) -> None:
        if not endpoints:
            self.add("E0301", f"{what} has an empty endpoint list", span)
        seen = set()
        for e in endpoints:
            if parse_endpoint(e.value) is None:
                self.add("E0307", f"endpoint `{e.value}` is not `host:port`", e.span,
                         hint="write `10.0.0.1:8080`, `[::1]:8080` or `name.example:8080`; ports are 1-65535")
            elif e.value in seen:
                self.add("E0307", f"endpoint `{e.value}` is listed twice", e.span)
            seen.add(e.value)

    def route(self, route: ast.Route) -> None:
        name = route.name.value
        if route.to is not None and route.split is not None:
            self.add("E0315", f"route `{name}` has both `to` and `split`", route.split.span,
                     hint="a route has one destination: a subset, or a weighted split")
        elif route.to is None and route.split is None and route.redirect is None and route.respond is None:
            self.add("E0301", f"route `{name}` has no destination", route.name.span,
                     hint="add `to SERVICE.SUBSET` or `split { … }` (or answer with `redirect { … }` or `respond`)")
        if route.redirect is not None:
            self.block(route.redirect)
        if route.rewrite is not None:
            self.block(route.rewrite)
        if route.respond is not None:
            self.respond(route.respond)
        for match in route.matches:
            self.conditions(match.conditions, "match")
        if route.split is not None:
            self.split(route.split, name)
            self.split_header_ops(route)
        if route.timeout is not None and route.timeout.value is not None:
            if route.timeout.value == 0:
                self.add("E0306", "a zero timeout is ambiguous", route.timeout.span,
                         hint="write `timeout none` to disable the timeout")
            else:
                self.duration(route.timeout, "route timeout")
        if isinstance(route.retry, ast.Block):
            self.block(route.retry)
        if route.fault is not None:
            self.block(route.fault)
        for m in route.mirrors:
            self.percent(m.percent, "mirror percentage")
        for ops, side in ((route.request_headers, "request"), (route.response_headers, "response")):
            if ops is not None:
                self.header_ops(ops, side)
        if route.cors is not None:
            from compiler.semantic.checks.cors import check_cors

            check_cors(route.cors, self.add, self.regex, self.header_name, self.methods, regex_error)

    def split(self, split: ast.Split, route: str) -> None:
        total = 0
        seen = set()
        for entry in split.entries:
            self.count(entry.weight, "weight", 0)
            total += entry.weight.value
            key = str(entry.target)
            if key in seen:
                self.add("E0202", f"`{key}` appears twice in the split of route `{route}`", entry.target.span,
                         hint="give it one entry with the sum of the weights")
            seen.add(key)
        if not split.entries:
            self.add("E0305", f"the split of route `{route}` is empty", split.span)
        elif total == 0:
            self.add("E0305", f"weights of the split of route `{route}` total `0`", split.span,
                     hint="give at least one subset a positive weight")
        elif total > UINT32_MAX and all(e.weight.value != ast.TOO_LARGE for e in split.entries):
            self.add("E0302", f"weights of the split of route `{route}` total more than {UINT32_MAX}", split.span)
        if split.key_header is not None:
            self.header_name(split.key_header, "split key")

    def split_header_ops(self, route: ast.Route) -> None:
        """A split destination's own header changes: checked as a route's, and W0431 where the
        route's own changes (applied after them, as in Envoy) undo one: a `set` or `remove` of the
        same header on the route."""
        assert route.split is not None
        for entry in route.split.entries:
            for ops, mine, side in ((entry.request_headers, route.request_headers, "request"),
                                    (entry.response_headers, route.response_headers, "response")):
                if ops is None:
                    continue
                self.header_ops(ops, side)
                undoing = {op.name.value.lower(): op for op in (mine.ops if mine is not None else ())
                           if op.op in ("set", "remove")}
                for op in ops.ops:
                    later = undoing.get(op.name.value.lower())
                    if later is not None and op.op != "remove":
                        self.ctx.diags.add(
                            "W0431", f"`{op.op}` of header `{op.name.value}` for `{entry.target}` is undone by the "
                            f"route's own `{later.op}`", op.span,
                            hint="a split destination's changes come first and the route's after them: change the "
                                 "header in one place", labels=(Label(later.span, "the route's change"),))

    def header_ops(self, ops: ast.HeaderOps, side: str) -> None:
        changed: dict[str, ast.HeaderOp] = {}
        for op in ops.ops:
            self.header_name(op.name, "header change")
            if op.value is not None and any(ch in op.value.value for ch in "\r\n\0"):
                self.add("E0312", f"the value of header `{op.name.value}` contains a line break or NUL", op.value.span,
                         hint="header values are one line; a CR or LF would split the request")
            name = op.name.value.lower()
            if name == "host":
                self.add("E0308", "the `host` header cannot be changed here", op.name.span,
                         hint="routing uses the host; both targets forbid rewriting it with header changes")
            elif name in FRAMING_HEADERS:
                self.add("E0308", f"the `{name}` header belongs to the connection and cannot be changed", op.name.span,
                         hint="the sidecar writes the framing and connection headers itself, on each hop")
            elif side == "response" and name == "server":
                self.add("E0308", "the `server` response header cannot be changed", op.name.span,
                         hint="the sidecar always answers with `server: envoy` (Envoy overwrites it)")
            first = changed.get(name)
            if first is not None and (op.op == "remove" or first.op == "remove" or op.op == first.op == "set"):
                self.add("E0313", f"header `{name}` is both `{first.op}` and `{op.op}` on one route", op.span,
                         hint="keep one change per header (several `add`s are fine)")
            changed.setdefault(name, op)

    def authorization(self, authz: ast.Authorization) -> None:
        if authz.default is None:
            self.add("E0601", f"authorization `{authz.service.value}` has no `default`", authz.service.span,
                     hint="add `default deny` (recommended) or `default allow`")


# Headers that describe one hop's connection and framing: each sidecar writes them itself, so a
# route's header changes cannot set or remove them (Envoy drops or rewrites them too).
FRAMING_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
                             "content-length"})


def check_values(ctx: Context) -> None:
    v = _Values(ctx)
    if ctx.mesh is not None:
        for s in ctx.mesh.settings:
            if s.key == "trust_domain" and not TRUST_DOMAIN.match(s.values[0].value):
                v.add("E0312", f"`{s.values[0].value}` is not a valid trust domain", s.values[0].span,
                      hint="a trust domain is a lower-case DNS name such as `shop.local`")
            elif s.key == "cluster_domain" and not TRUST_DOMAIN.match(s.values[0].value):
                v.add("E0312", f"`{s.values[0].value}` is not a valid cluster domain", s.values[0].span,
                      hint="a cluster domain is a lower-case DNS name such as `cluster.local`")
            elif s.key == "mtls":
                v.mtls_mode(s.values[0])
            elif s.key == "certificates" and not s.values[0].value.strip("/ "):
                v.add("E0312", "`certificates` needs a directory", s.values[0].span,
                      hint='write the root of the identity files, such as `certificates "/etc/meshc/certs"`')
        if ctx.mesh.tracing is not None:
            v.block(ctx.mesh.tracing)
    for _, svc in ctx.local_services():
        v.service(svc)
    for block in ctx.routes.values():
        if ctx.reuse is None:
            for route in block.routes:
                v.route(route)
        else:   # the language server, `meshc serve`: an unchanged block that read unchanged items
            ctx.reuse.unit(ctx, "values", block, route_values, ctx, block)
    for policy in ctx.policies.values():
        if isinstance(policy.body, ast.Block):
            v.block(policy.body)
    for authz in ctx.authorizations.values():
        v.authorization(authz)
    for rule in all_rules(ctx):
        v.conditions(rule.conditions, "rule")


def route_values(ctx: Context, block: ast.Routes) -> None:
    """The values of one routes block's routes (a `_Values` of its own: it reports through the
    `ctx.diags` of the moment, compiler/semantic/reuse.py)."""
    v = _Values(ctx)
    for route in block.routes:
        v.route(route)


def _as_written(lit: ast.Lit, made: str) -> str:
    """A value as its source wrote it (a float such as `1e+22` or `inf` is a number nobody wrote),
    shortened when very long; `made` for a literal without a span."""
    text = lit.span.text() if lit.span is not None else made
    return text if len(text) <= 40 else text[:20] + "…"


def one_of(words) -> str:
    """`a`, `b` or `c`."""
    quoted = [f"`{w}`" for w in words]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]
