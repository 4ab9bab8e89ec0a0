"""The part of the IR that says what a request is matched against and where a construct was
written: path, header and query conditions, callers, authorization rules and locations.

It is its own module because the semantic checks reason with it (shadowed routes and rules,
compiler/semantic/matching.py) and `meshc check` must not pay for loading the rest of the IR,
which only lowering and the backends need. Every field is documented as in model.py, which
re-exports these classes: `ir.Match` is the same class whichever module it is read from.
"""

from __future__ import annotations

from compiler.core.nodes import Node, node

__all__ = ["AuthzRule", "HeaderMatch", "Location", "Match", "PathMatch", "Principal", "QueryMatch", "rules_admit"]


# ---- provenance ----------------------------------------------------------------------------------

@node
class Location(Node):
    """Where a construct was written. Backends report a diagnostic at it (the source text comes
    from the compilation, never from reading the file again), and the targets carry it as
    provenance: `str(location)` is `FILE:LINE:COLUMN`, Envoy's `metadata.filter_metadata.meshc.source`."""
    file: str          # the path as the program names it: as given on the command line, relative to the
                       # working directory for imports, `<std>/NAME.mesh` for the standard library
    line: int          # 1-based
    column: int        # 1-based, in code points

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


# ---- matches -------------------------------------------------------------------------------------

@node
class PathMatch(Node):
    """A condition on the normalised request path (docs/language.md §6, §7), without the query."""
    kind: str          # "exact" | "prefix" (a plain string prefix; the language's `raw_prefix`, or a `prefix`
                       # ending in `/`) | "segment_prefix" (`prefix "/a"`: `/a` or `/a/...`) | "regex" (RE2,
                       # matching the whole path)
    value: str         # starts with `/` (E0314) unless a regex
    ignore_case: bool = False   # not for a regex (E0312): ASCII letters of the path and the value compared
                                # case-insensitively (Envoy: RouteMatch `case_sensitive: false`, StringMatcher
                                # `ignore_case`); a non-ASCII letter, percent-encoded in a normalised path,
                                # never folds. Read by envoy, native and checks (shadowing, rule coverage)


@node
class HeaderMatch(Node):
    """A condition on a request header; a header sent several times is tested value by value."""
    name: str          # lower case
    kind: str          # "exact" | "prefix" | "suffix" | "regex" (RE2, whole value) | "present" | "absent"
    value: str | None  # None for present/absent
    invert: bool       # string kinds only (`not header`): the header is present and no value passes
    ignore_case: bool  # string kinds but regex only: ASCII letters compared case-insensitively


@node
class QueryMatch(Node):
    """A condition on a query parameter, compared as sent (not percent-decoded); a repeated key is
    tested on its first value."""
    name: str
    kind: str          # "exact" | "regex" (RE2, whole value) | "present" (even with an empty value)
    value: str | None  # None for present


@node
class Match(Node):
    """All conditions must hold (AND). A route matches when any of its matches does (OR). Read by
    envoy (one Envoy route per match), native (compiled to tests) and checks (shadowing, W0401)."""
    path: PathMatch | None             # None: any path
    headers: tuple[HeaderMatch, ...]
    query: tuple[QueryMatch, ...]
    methods: tuple[str, ...] | None    # upper-case methods (E0309); None: any method
    callers: tuple[str, ...] | None = None  # the calling services whose sidecars take it (`caller`);
                                            # None: every caller. Never in a sidecar's own config: its
                                            # backend keeps the matches for that caller, without it


# ---- callers and rules ---------------------------------------------------------------------------

@node
class Principal(Node):
    """A caller identity: its verified SPIFFE ID (the URI SAN of its mTLS client certificate)."""
    kind: str          # "exact" (one SPIFFE ID) or "prefix" (a trust domain, a namespace, a `/*` pattern)
    value: str


@node
class AuthzRule(Node):
    """One rule: it matches a request when every condition holds (a caller without a verified
    identity never satisfies `from`)."""
    name: str          # as written, else `allow-N`/`deny-N` by position, `SET.NAME` for a used rule set;
                       # unique in the service (E0202): Envoy's RBAC policy name
    action: str        # "allow" | "deny"
    source: Location
    principals: tuple[Principal, ...] | None   # None: any caller; else any of these
    path: PathMatch | None             # matched on the normalised path
    methods: tuple[str, ...] | None
    headers: tuple[HeaderMatch, ...]
    # `not path` / `not method` (Istio's notPaths / notMethods): the rule matches only when none of
    # these paths matches the normalised path and the method is none of these. Read by envoy (RBAC
    # `not_rule`), native (authorization) and checks (rule coverage, W0610)
    not_paths: tuple[PathMatch, ...] = ()
    not_methods: tuple[str, ...] = ()


def rules_admit(default: str, rules: tuple[AuthzRule, ...], ident: str) -> bool:
    """Whether an authorization (its default and its rules) can admit a caller with the SPIFFE ID
    `ident` (compiler/ir/scope.py): a `default allow`, an allow rule without `from`, or an allow
    rule with a principal `ident` satisfies. Here, in the light part of the IR, so that `meshc
    check`'s W0410 reasons with it without loading the rest."""
    if default == "allow" or any(r.action == "allow" and r.principals is None for r in rules):
        return True
    for rule in rules:
        if rule.action != "allow" or rule.principals is None:
            continue
        for p in rule.principals:
            if (p.value == ident) if p.kind == "exact" else ident.startswith(p.value):
                return True
    return False
