"""What the language server knows about a document, without the language server.

`meshc lsp` (compiler/tooling/lsp/server.py, on pygls) is a thin protocol shell over this module: the analysis of
an editor buffer together with the files it imports, the references in it (for hover and
go-to-definition), completion candidates and keyword documentation. Everything here works in
code points and offsets, never in LSP's UTF-16 columns (the shell converts), and imports neither
pygls nor lsprotocol, so benchmarks and tests can call it directly.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field

from compiler.core.diagnostics import Diagnostic
from compiler.core.source import SourceFile, Span
from compiler.semantic.program import STDLIB_PACKAGE, Program, resolve_import, stdlib_modules
from compiler.semantic.symbols import Context, subset_names
from compiler.syntax import ast
from compiler.syntax.parse import ItemCache
from compiler.tooling.reference import hover_docs

STD_DISPLAY = "<std>/"   # how compiler/semantic/program.py names standard-library files

# ---- paths and URIs ---------------------------------------------------------------------------


def uri_to_path(uri: str) -> str | None:
    """The file-system path of a `file:` URI, else None (an unsaved `untitled:` buffer)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "file":
        return None
    path = urllib.parse.unquote(parsed.path)
    if os.name == "nt" and re.match(r"/[A-Za-z]:", path):  # file:///C:/x is C:/x
        path = path[1:]
    return path


def path_to_uri(path: str) -> str:
    from pathlib import Path

    return Path(os.path.abspath(path)).as_uri()


def stdlib_dir() -> str:
    """Where the standard library's `.mesh` files are (the `stdlib_policies` package)."""
    import importlib

    package = importlib.import_module(STDLIB_PACKAGE)
    assert package.__file__ is not None  # a regular package, not a namespace package
    return os.path.dirname(package.__file__)


def real_path(display: str) -> str:
    """The file behind a display path of compiler/semantic/program.py (`<std>/NAME.mesh` or a path)."""
    if display.startswith(STD_DISPLAY):
        return os.path.join(stdlib_dir(), display[len(STD_DISPLAY):])
    return os.path.abspath(display)


# ---- analysis ---------------------------------------------------------------------------------


@dataclass
class Analysis:
    """One document checked together with its imports: the program, its symbols, its diagnostics."""

    uri: str
    path: str                       # display path of the document: absolute, or made up for `untitled:`
    text: str
    program: Program
    ctx: Context
    diagnostics: list[Diagnostic]
    _refs: list[Reference] | None = field(default=None, repr=False)

    @property
    def source(self) -> SourceFile:
        return self.program.sources[self.path]

    def uri_of(self, display: str) -> str:
        """The URI of a file of the program: the document's own URI for the document."""
        return self.uri if display == self.path else path_to_uri(real_path(display))

    def references(self) -> list[Reference]:
        if self._refs is None:
            self._refs = _references(self)
        return self._refs


def document_path(uri: str) -> str:
    """The display path under which a document is analysed: its file, or a made-up name next to
    the working directory for a buffer that has no file (its imports resolve from there)."""
    path = uri_to_path(uri)
    if path is not None:
        return os.path.abspath(path)
    return os.path.join(os.getcwd(), re.sub(r"[^A-Za-z0-9_.-]+", "_", uri) + ".mesh")


def analyse_document(uri: str, text: str, cache: ItemCache | None = None) -> Analysis:
    """Parse and check a buffer in memory, with the files it imports from disk and the stdlib.

    With a `cache` (one per document, kept between keystrokes), only the top-level items whose
    text changed are parsed again; the diagnostics are those of a check from scratch
    (tests/test_lsp_incremental.py holds the two equal over random edits). The cache owns what it
    returns: an earlier `Analysis` of the same cache may see its spans shifted by a later one, so
    keep only the latest (the server does)."""
    from compiler import api

    path = document_path(uri)
    comp = api.check([api.Text(path, text)], shard=False, cache=cache)
    assert comp.program is not None and comp.context is not None  # an unsharded check keeps both
    return Analysis(uri, path, text, comp.program, comp.context, comp.diagnostics)


def check_document(uri: str, text: str) -> list[Diagnostic]:
    """The diagnostics of a buffer (in every file of its program), as `meshc check` would give."""
    return analyse_document(uri, text).diagnostics


# ---- references ---------------------------------------------------------------------------------


@dataclass
class Reference:
    """A name in the document that stands for a declaration: `kind` is service, subset, policy or
    import; `target` is the service name, (service, subset), (policy kind, qualified name) or the
    import string."""

    start: int
    end: int
    kind: str
    target: str | tuple[str, str]


def _references(analysis: Analysis) -> list[Reference]:
    module = next((m for m in analysis.program.modules if m.path == analysis.path), None)
    out: list[Reference] = []
    if module is None:
        return out

    def add(span: Span | None, kind: str, target: str | tuple[str, str]) -> None:
        if span is not None:
            out.append(Reference(span.start, span.end, kind, target))

    def destination(ref: ast.Ref) -> None:
        if ref.span is None:
            return
        if ref.scope is None:
            add(ref.span, "service", ref.name)
            return
        dot = ref.span.text().find(".")
        out.append(Reference(ref.span.start, ref.span.start + dot, "service", ref.scope))
        out.append(Reference(ref.span.start + dot + 1, ref.span.end, "subset", (ref.scope, ref.name)))

    def rules(items) -> None:
        for rule in items:
            if isinstance(rule, ast.UseRules):
                add(rule.ref.span, "policy", ("rules", str(rule.ref)))
                continue
            for cond in rule.conditions:
                if isinstance(cond, ast.FromCond) and cond.kind == "service":
                    for value in cond.values:
                        add(value.span, "service", value.value)

    for item in module.items:
        if isinstance(item, ast.Import):
            add(item.path.span, "import", item.path.value)
        elif isinstance(item, ast.Service):
            add(item.name.span, "service", item.name.value)
            for sub in item.subsets:
                add(sub.name.span, "subset", (item.name.value, sub.name.value))
            for kind in ("limits", "outlier", "retry_budget"):
                node = getattr(item, kind)
                if isinstance(node, ast.Ref):
                    add(node.span, "policy", (kind, str(node)))
        elif isinstance(item, ast.Routes):
            add(item.service.span, "service", item.service.value)
            for route in item.routes:
                if route.to is not None:
                    destination(route.to)
                if route.split is not None:
                    for entry in route.split.entries:
                        destination(entry.target)
                for m in route.mirrors:
                    destination(m.target)
                if isinstance(route.retry, ast.Ref):
                    add(route.retry.span, "policy", ("retry", str(route.retry)))
        elif isinstance(item, ast.Authorization):
            add(item.service.span, "service", item.service.value)
            rules(item.items)
        elif isinstance(item, ast.Policy):
            add(item.name.span, "policy", (item.kind, item.name.value))
            if item.kind == "rules":
                rules(item.body)
        elif isinstance(item, ast.Assert):   # `to SERVICE` and `from service X` name services
            for dest in item.destinations:
                add(dest.span, "service", dest.value)
            for cond in item.conditions:
                if isinstance(cond, ast.FromCond) and cond.kind == "service":
                    for value in cond.values:
                        add(value.span, "service", value.value)
        elif isinstance(item, ast.Test):
            req = item.request
            if req is not None and req.caller_kind == "service" and req.caller is not None:
                add(req.caller.span, "service", req.caller.value)
            for ex in item.expect:
                if ex.kind in ("to", "to_any") or (ex.kind == "mirror" and ex.values):
                    for ref in ex.values[:None if ex.kind != "mirror" else 1]:
                        destination(ref)
    out.sort(key=lambda r: (r.start, r.end))
    return out


def reference_at(analysis: Analysis, offset: int) -> Reference | None:
    """The reference under the cursor (a cursor just after a name counts as on it)."""
    best = None
    for ref in analysis.references():
        if ref.start <= offset <= ref.end and (best is None or ref.end - ref.start < best.end - best.start):
            best = ref
    return best


def _policy(ctx: Context, kind: str, name: str) -> ast.Policy | None:
    found = ctx.policies.get((kind, name))
    if found is None:  # a reference of the wrong kind (E0207) still leads to the policy
        found = next((p for (k, n), p in ctx.policies.items() if n == name), None)
    return found


def declaration(analysis: Analysis, ref: Reference) -> tuple[str, int, int] | None:
    """(display path, start, end) of what a reference names; for an import, the whole file."""
    ctx = analysis.ctx
    # (the isinstance tests narrow the target for the type checker: its kind says what it is)
    if ref.kind == "service" and isinstance(ref.target, str):
        svc = ctx.services.get(ref.target)
        return _span_of(svc.name.span) if svc is not None else None
    if ref.kind == "subset" and isinstance(ref.target, tuple):
        service, subset = ref.target
        svc = ctx.services.get(service)
        if svc is None:
            return None
        for sub in svc.subsets:
            if sub.name.value == subset:
                return _span_of(sub.name.span)
        if subset in subset_names(svc):  # the implicit `default` subset: the service's endpoints
            return _span_of(svc.endpoints[0].span if svc.endpoints else svc.name.span)
        return None
    if ref.kind == "policy":
        policy = _policy(ctx, *ref.target)
        return _span_of(policy.name.span) if policy is not None else None
    if ref.kind == "import" and isinstance(ref.target, str):
        key, display = resolve_import(os.path.abspath(analysis.path), ref.target)
        if key.startswith("std:"):
            path = real_path(display)
            return (display, 0, 0) if os.path.isfile(path) else None
        return (display, 0, 0) if os.path.isfile(key) else None
    return None


def _span_of(span: Span | None):
    return (span.path, span.start, span.end) if span is not None else None


def definition(analysis: Analysis, offset: int) -> tuple[str, int, int, SourceFile | None] | None:
    """Where the name under the cursor is declared: (real file path, start, end, its source)."""
    ref = reference_at(analysis, offset)
    if ref is None:
        return None
    found = declaration(analysis, ref)
    if found is None:
        return None
    display, start, end = found
    return real_path(display), start, end, analysis.program.sources.get(display)


# ---- hover ------------------------------------------------------------------------------------------

# One line per keyword, from docs/language.md (the section is given for the long story).
KEYWORDS: dict[str, str] = {
    "import": "`import \"std/NAME\"` or `import \"path.mesh\"`: load a standard-library module or another file "
              "into the one program (names are program-wide; §3)",
    "service": "`service NAME { port … }` declares a service; in `from service NAME`, the caller with that "
               "service's identity (§5, §14)",
    "port": "the port the service's application listens on, 1–65535; required (§5.1)",
    "namespace": "the service's namespace, a lower-case DNS label, default `default`; in `from namespace`, "
                 "callers of that namespace (§5.1, §14)",
    "identity": "the service's SPIFFE ID, default `spiffe://<trust domain>/ns/<namespace>/sa/<name>`; in "
                "`from identity`, callers with that ID (`/*` suffix: a prefix) (§5.2, §14)",
    "endpoints": "`endpoints [\"HOST:PORT\", …]`: a subset's endpoints; directly in a service, the implicit "
                 "subset `default` (§5.3)",
    "hosts": "`hosts [\"api.example.com\", \"*.example.com\", \"*\"]`: more Host names the service answers "
             "to: exact names (with and without the port), wildcards `*.SUFFIX` and `PREFIX.*`, and the catch-all "
             "`*`; exact names win, then the longest wildcard, then `*` (§5.1)",
    "subset": "`subset NAME { endpoints […] }`: a named group of endpoints (a version) that routes send to (§5.3); "
              "with a `sidecar { … }` block, a workload with its own sidecar, `SERVICE.NAME` (§5.9); "
              "`subset NAME { labels { KEY \"VALUE\" } }`: the Kubernetes pods with those labels (§5.3)",
    "labels": "`labels { KEY \"VALUE\" … }`: a label-selected subset, the Kubernetes pods carrying these labels; "
              "for `--target istio` only (E0750 on the Envoy and native targets) (§5.3)",
    "routes": "`routes SERVICE { route … }`: what a caller's sidecar does with requests to SERVICE; "
              "first matching route wins, else 404 (§7)",
    "route": "`route NAME { match … to … }`: one route; routes are tried in written order (§7)",
    "match": "`match { CONDITION … }`: all conditions must hold; several match blocks are alternatives (§7)",
    "path": "`path exact|prefix|raw_prefix|regex \"VALUE\" [ignore_case]`: a condition on the normalised path "
            "(§7, §6)",
    "exact": "the whole value equals the string (case-sensitive unless `ignore_case`) (§7)",
    "prefix": "path: segment-aware prefix (`/api` matches `/api/x`, not `/apis`); header: value starts with (§7)",
    "raw_prefix": "path: a plain string prefix (`/r` matches `/rb`) (§7)",
    "regex": "an RE2 regex that must match the whole value (§7)",
    "suffix": "header: a value ends with the string (§7)",
    "header": "`[not] header \"NAME\" TEST`: a condition on a request header (case-insensitive name); "
              "`by header` keys a split (§7, §8)",
    "caller": "`caller SERVICE | [SERVICE, …]`: the match applies only in these calling services' sidecars "
              "(Istio's sourceLabels); resolved when compiling (§7)",
    "not": "`not header …`: the header is present and no value passes the test (§7); in an authorization "
           "rule, `not path …` / `not method …`: the rule matches only what they do not (§14)",
    "ignore_case": "compare ASCII letters case-insensitively: a header value (`exact`, `prefix`, `suffix`) or "
                   "a path (`exact`, `prefix`, `raw_prefix`; `/ADMIN` passes `path prefix \"/admin\" "
                   "ignore_case`), never a regex (§7)",
    "present": "the header or query parameter is present, even empty (§7)",
    "absent": "the header is not present at all (§7)",
    "query": "`query \"NAME\" exact|regex \"V\"` or `present`: a condition on the first value of a query "
             "parameter (§7)",
    "method": "`method GET` or `method [GET, HEAD]`: the request method is one of the list (§7)",
    "to": "`to SERVICE.SUBSET`: send every request of the route to that subset (§8)",
    "respond": "`respond STATUS [\"BODY\"]`: the route answers itself (200-599, a body of at most 4096 bytes, "
               "`text/plain`); nothing is forwarded (§8.2)",
    "split": "`split { S.A 90  S.B 10 } [by header \"K\"]`: weighted pick of a subset, once per request; "
             "deterministic with `by header`; a destination may have its own `request_headers` / "
             "`response_headers` after its weight, applied before the route's (§8)",
    "by": "`by header \"K\"`: pick the split by `value mod total` of an integer header (§8)",
    "none": "`timeout none` disables the route timeout; `retry none` means no retries (§9, §10)",
    "request_headers": "`request_headers { remove … set … add … }`: change the request sent upstream (§13); "
                       "after a split destination's weight: that destination's own, before the route's (§8)",
    "response_headers": "`response_headers { … }`: change the upstream's response (§13)",
    "set": "`set \"NAME\" \"VALUE\"`: replace every value of a header (applied after removes) (§13)",
    "add": "`add \"NAME\" \"VALUE\"`: append one more header line (applied last) (§13)",
    "remove": "`remove \"NAME\"`: remove every value of a header (applied first) (§13)",
    "authorization": "`authorization SERVICE { default … allow … deny … }`: enforced by SERVICE's own sidecar; "
                     "any deny wins, then any allow, then the default (§14)",
    "default": "authorization: `default allow | deny`, the answer when no rule matches (required, E0601) (§14)",
    "allow": "`allow [NAME] { CONDITION … }`: allow requests matching all conditions (unless a deny matches) (§14)",
    "deny": "`deny [NAME] { CONDITION … }`: deny (403) requests matching all conditions; deny rules win (§14)",
    "use": "`use RULES-POLICY`: insert the rules of a `policy rules`, e.g. `std.allow_health_checks` (§14)",
    "from": "`from identity|namespace|service|same_namespace …`: a condition on the caller's mTLS identity (§14)",
    "same_namespace": "`from same_namespace`: callers in the protected service's own namespace (§14)",
    "policy": "`policy retry|outlier|limits|retry_budget|rules NAME { … }`: a named block, referenced by name; "
              "kinds have separate namespaces (§15)",
    "rules": "`policy rules NAME { allow … deny … }`: a rule set for `use` in authorization blocks (§15)",
    "assert": "`assert never|always { from …  to SERVICE  CONDITION … }`: a property `meshc check` proves over "
              "every request, or refutes with a counterexample (§14.1, docs/testing.md)",
    "never": "`assert never`: SERVICE's sidecar admits none of the requests the assert names (§14.1)",
    "always": "`assert always`: SERVICE's sidecar admits every request the assert names (§14.1)",
    "unauthenticated": "`from unauthenticated`: a caller without a verified identity, in an assert (§14.1) or a "
                       "test (plaintext, §20)",
    "any": "`from any` in an assert: every caller, with any identity or none (the default) (§14.1)",
    "test": "`test \"NAME\" { request { … } expect { … } }`: a policy test, run by `meshc test` through both "
            "targets; the compiled policy ignores it (§20, docs/testing.md)",
    "request": "a test's request: `from service NAME | identity \"SPIFFE-ID\" | unauthenticated`, "
               "`METHOD \"http://SERVICE/PATH\"`, `header \"NAME\" \"VALUE\"` (§20)",
    "expect": "a test's expectations: `status`, `route`, `to`, `path`, `request_header`, `response_header`, "
              "`timeout`, `retries`, `mirror`, `denied_by`, `allowed_by` (§20)",
    "status": "`status CODE`: the status the caller gets (a local reply, 403, or 200 from the application; "
              "0: the connection refused) (§20)",
    "request_header": "`request_header \"NAME\" \"VALUE\" | present | absent`: a header line of the request "
                      "the destination gets (§20)",
    "response_header": "`response_header \"NAME\" \"VALUE\" | present | absent`: a header of the response after "
                       "the route's changes (§20)",
    "denied_by": "`denied_by authorization SERVICE.RULE | SERVICE.default`: the rule that denied the request (§20)",
    "allowed_by": "`allowed_by authorization SERVICE.RULE | SERVICE.default`: the rule that allowed it (§20)",
    # CORS (§13a)
    "cors": "`cors { origins […] methods […] headers […] expose […] max_age D credentials }`: the route's CORS "
            "policy; the caller's sidecar answers a preflight from an allowed origin (200) and adds the CORS "
            "headers to the response of any other request from it (§13a)",
    "origins": "`origins [exact \"https://HOST[:PORT]\", prefix \"https://…\", regex \"RE2\"]`: the origins a "
               "`cors` block allows (`exact \"*\"`: any); the caller's origin is echoed, never `*` (§13a)",
    "methods": "`methods [GET, POST, …]`: `access-control-allow-methods` of a preflight (§13a)",
    "headers": "`headers [\"NAME\", …]`: `access-control-allow-headers` of a preflight (§13a)",
    "expose": "`expose [\"NAME\", …]`: `access-control-expose-headers` of every CORS response (§13a)",
    "max_age": "`max_age DURATION`: `access-control-max-age` of a preflight, whole seconds, 1s to 24h; not sent "
               "when unwritten (§13a)",
    "credentials": "`credentials`: `access-control-allow-credentials: true`; never with an origin that allows "
                   "every site (E0341) (§13a)",
}
# Settings, settings blocks and the other defaulted words: generated from their one description. A
# word that is also a keyword elsewhere (`path`, `status` in a redirect) gets both texts.
for _word, _doc in hover_docs().items():
    KEYWORDS[_word] = f"{KEYWORDS[_word]}\n\n{_doc}" if _word in KEYWORDS else _doc
# Values that are words only after one keyword.
_VALUE_DOCS: dict[tuple[str, str], str] = {
    ("escaped_slashes", "reject"): "`%2F`/`%5C` in a path: answer 400 (the default) (§6)",
    ("escaped_slashes", "decode"): "`%2F`/`%5C` in a path become `/`, and the path is normalised again (§6)",
    ("escaped_slashes", "keep"): "`%2F`/`%5C` in a path are left as they are, and are not separators (§6)",
}

# Keywords followed by the name of what they declare.
_NAMED_BY = frozenset({"service", "routes", "route", "subset", "authorization"})

# A cheap tokenizer for hover and completion: comments and strings whole, names with their dots.
_TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"?|[A-Za-z0-9_][A-Za-z0-9_.%-]*|\S')


def _tokens(text: str, end: int | None = None) -> list[re.Match]:
    return [m for m in _TOKEN.finditer(text, 0, len(text) if end is None else end) if m.group()[0] != "#"]


def _token_at(text: str, offset: int) -> tuple[re.Match | None, re.Match | None]:
    """The token under the cursor (or just before it) and the token before it; None in a comment."""
    previous = None
    for m in _TOKEN.finditer(text):
        if m.start() > offset:
            break
        if m.end() >= offset:
            return (None, None) if m.group()[0] == "#" else (m, previous)
        if m.group()[0] != "#":
            previous = m
    return None, None


def hover(analysis: Analysis, offset: int) -> str | None:
    """Markdown for the name under the cursor: a policy's declaration and comment, a service's or
    subset's declaration line, or a keyword's one-line documentation."""
    ref = reference_at(analysis, offset)
    if ref is not None and ref.kind in ("service", "subset", "policy"):
        found = declaration(analysis, ref)
        if found is not None:
            return _declaration_hover(analysis, ref, found)
        return None
    if ref is not None:
        return None
    token, previous = _token_at(analysis.text, offset)
    if token is None:
        return None
    word = token.group()
    if previous is not None and previous.group() in _NAMED_BY:
        return None  # a name being declared, even one spelt like a keyword (`route match { … }`)
    if previous is not None and (previous.group(), word) in _VALUE_DOCS:
        return f"**{word}**: {_VALUE_DOCS[previous.group(), word]}"
    doc = KEYWORDS.get(word)
    return f"**{word}** (keyword): {doc}" if doc else None


def _declaration_hover(analysis: Analysis, ref: Reference, found: tuple[str, int, int]) -> str:
    display, start, _ = found
    source = analysis.program.sources[display]
    line, col = source.line_col(start)
    where = _display_name(display) + f":{line}:{col}"
    if ref.kind == "policy":
        policy = _policy(analysis.ctx, *ref.target)
        assert policy is not None  # declaration() found it
        text = policy.span.text() if policy.span is not None else ""
        comment = _leading_comment(source, source.line_col(policy.span.start)[0])
        kind, name = policy.kind, ("std." if display.startswith(STD_DISPLAY) else "") + policy.name.value
        parts = [f"**{kind} policy `{name}`**"]
        if comment:
            parts.append(comment)
        parts.append(f"```mesh\n{text}\n```")
        parts.append(f"declared in `{where}`")
        return "\n\n".join(parts)
    what = "service" if ref.kind == "service" else "subset"
    name = ref.target if isinstance(ref.target, str) else ".".join(ref.target)  # a service, or a subset
    return f"**{what} `{name}`**\n\n```mesh\n{source.line_text(line).strip()}\n```\n\ndeclared in `{where}`"


def _display_name(display: str) -> str:
    if display.startswith(STD_DISPLAY):
        return "std/" + display[len(STD_DISPLAY):]
    try:
        rel = os.path.relpath(display)
    except ValueError:  # another drive on Windows
        return display
    return display if rel.startswith("..") else rel


def _leading_comment(source: SourceFile, line: int) -> str:
    """The `#` lines just above a declaration (up to a blank line), without their `#`."""
    lines = []
    n = line - 1
    while n >= 1:
        text = source.line_text(n).strip()
        if not text.startswith("#"):
            break
        lines.append(text[1:].strip())
        n -= 1
    return "\n".join(reversed(lines)).strip()


# ---- completion ---------------------------------------------------------------------------------


@dataclass
class Completion:
    label: str
    kind: str          # keyword | service | subset | policy | module | value
    detail: str = ""


_POLICY_KEYWORDS = {"retry": "retry", "outlier": "outlier", "limits": "limits", "retry_budget": "retry_budget",
                    "use": "rules"}


def complete(analysis: Analysis | None, text: str, offset: int) -> tuple[int, list[Completion]]:
    """Candidates at the cursor, and the offset where the word they replace starts.

    Context-aware where it is cheap: a destination after `to`, `mirror` and inside `split { }`,
    a policy of the right kind after `retry`, `outlier`, `limits`, `retry_budget` and `use`, a
    service after `from service`, a module after `import`; keywords everywhere else."""
    start = offset
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_.-"):
        start -= 1
    tokens = _tokens(text, start)
    words = [m.group() for m in tokens[-2:]]
    previous = words[-1] if words else ""
    before = words[-2] if len(words) > 1 else ""
    ctx = analysis.ctx if analysis is not None else None
    if previous in ("to", "mirror") or _in_split(tokens):
        return start, _destinations(ctx)
    if previous in _POLICY_KEYWORDS and before != "policy":
        kind = _POLICY_KEYWORDS[previous]
        items = [Completion(name, "policy", f"{kind} policy") for (k, name) in sorted(ctx.policies) if k == kind] \
            if ctx is not None else []
        if previous == "retry":
            items.append(Completion("none", "keyword", "no retries"))
        return start, items
    if (previous, before) in (("service", "from"), ("[", "service")) or previous == "caller" \
            or (previous, before) == ("[", "caller"):
        names = sorted(ctx.services) if ctx is not None else []
        return start, [Completion(n, "service", "service") for n in names]
    if previous == "escaped_slashes":
        return start, [Completion(v, "value", doc) for (k, v), doc in _VALUE_DOCS.items() if k == previous]
    if previous == "import":
        start = offset
        while start > 0 and text[start - 1] not in ' \t\n"':
            start -= 1
        if start > 0 and text[start - 1] == '"':
            start -= 1
        return start, [Completion(f'"std/{m}"', "module", "standard library module") for m in stdlib_modules()]
    return start, [Completion(word, "keyword", doc) for word, doc in KEYWORDS.items()]


def _in_split(tokens: list[re.Match]) -> bool:
    """Is the cursor where a destination of a `split { … }` goes (after `{` or after a weight)?"""
    depth = 0
    for i in range(len(tokens) - 1, -1, -1):
        word = tokens[i].group()
        if word == "}":
            depth += 1
        elif word == "{":
            if depth == 0:
                if i == 0 or tokens[i - 1].group() != "split":
                    return False
                last = tokens[-1].group()
                return last == "{" or last.isdigit()
            depth -= 1
    return False


def _destinations(ctx: Context | None) -> list[Completion]:
    out: list[Completion] = []
    if ctx is None:
        return out
    for name in sorted(ctx.services):
        for subset in subset_names(ctx.services[name]):
            out.append(Completion(f"{name}.{subset}", "subset", f"subset `{subset}` of service `{name}`"))
    return out


def format_document(text: str, path: str) -> str | None:
    """The formatted text (compiler.syntax.fmt.format_text), or None when there is no formatter, the text
    does not parse or nothing changes."""
    try:
        from compiler.syntax import fmt
        formatter = fmt.format_text
    except (ImportError, AttributeError):
        return None
    try:
        out = formatter(text, path)
    except Exception:  # a syntax error (or a formatter bug): leave the text alone
        return None
    return out if isinstance(out, str) and out != text else None


__all__ = [
    "KEYWORDS",
    "Analysis",
    "Completion",
    "Reference",
    "analyse_document",
    "check_document",
    "complete",
    "definition",
    "format_document",
    "hover",
    "path_to_uri",
    "real_path",
    "reference_at",
    "uri_to_path",
]
