"""IR authorization to the RBAC filters of a service's inbound listener.

The language decides: any matching deny denies, else any matching allow allows, else the
default. Envoy's RBAC filter has one action per filter, so this takes two filters in a row:
a DENY filter holding the deny rules (a request one of them matches gets 403), then, under
`default deny` only, an ALLOW filter holding the allow rules (a request none of them matches
gets 403; with no allow rule at all that is every request). Under `default allow` the allow
rules cannot change an answer (W0602), so the DENY filter alone decides. Policy names are the
rule names; Envoy evaluates policies as a set, as the language evaluates rules.
"""

from __future__ import annotations

from compiler import ir
from compiler.backends.envoy import names
from compiler.backends.envoy.matches import any_value, header_matcher, string_matcher

ANY = {"any": True}


def path_permission(p: ir.PathMatch) -> dict:
    """`url_path` sees the normalised path without the query, as the language's `path` does. A
    segment-aware prefix `P` is `P` itself or anything under `P/`. `ignore_case` is the
    StringMatcher's (ASCII letters only; never on a regex, E0312)."""
    if p.kind == "segment_prefix":
        return {"or_rules": {"rules": [{"url_path": {"path": string_matcher("exact", p.value, p.ignore_case)}},
                                       {"url_path": {"path": string_matcher("prefix", p.value + "/", p.ignore_case)}}]}}
    if p.kind == "prefix" and p.value == "/":
        return ANY  # every normalised path starts with `/`
    kind = {"exact": "exact", "prefix": "prefix", "regex": "regex"}[p.kind]
    return {"url_path": {"path": string_matcher(kind, p.value, p.ignore_case)}}


def method_permission(methods: tuple[str, ...]) -> dict:
    rules = [{"header": {"name": ":method", "string_match": {"exact": m}}} for m in methods]
    return rules[0] if len(rules) == 1 else {"or_rules": {"rules": rules}}


def exclusions(rule: ir.AuthzRule) -> list[dict]:
    """`not path` / `not method`: one `not_rule` each, over the excluded paths (or methods) ORed."""
    out = []
    if rule.not_paths:
        paths = [path_permission(p) for p in rule.not_paths]
        out.append({"not_rule": paths[0] if len(paths) == 1 else {"or_rules": {"rules": paths}}})
    if rule.not_methods:
        out.append({"not_rule": method_permission(rule.not_methods)})
    return out


def permission(rule: ir.AuthzRule) -> dict:
    """All conditions of the rule ANDed; a rule without conditions matches every request."""
    parts = []
    if rule.path is not None:
        parts.append(path_permission(rule.path))
    if rule.methods is not None:
        parts.append(method_permission(rule.methods) if rule.methods else {"not_rule": ANY})
    parts += [{"not_rule": ANY} if any_value(h) and h.invert else {"header": header_matcher(h)} for h in rule.headers]
    parts += exclusions(rule)
    parts = [p for p in parts if p is not ANY]
    if not parts:
        return ANY
    return parts[0] if len(parts) == 1 else {"and_rules": {"rules": parts}}


def principals(rule: ir.AuthzRule) -> list[dict]:
    """The caller's SPIFFE ID is the URI SAN of its client certificate, which is what
    `authenticated.principal_name` matches; a caller without a verified certificate matches none."""
    if rule.principals is None:
        return [ANY]
    if not rule.principals:
        return [{"not_id": ANY}]  # an empty list admits nobody (the front end rejects it: E0301)
    return [{"authenticated": {"principal_name": {p.kind: p.value}}} for p in rule.principals]


def policy(rule: ir.AuthzRule) -> dict:
    return {"permissions": [permission(rule)], "principals": principals(rule)}


def _filter(name: str, action: str, rules: list[ir.AuthzRule]) -> dict:
    return {
        "name": name,
        "typed_config": {
            "@type": names.RBAC,
            "rules": {"action": action, "policies": {r.name: policy(r) for r in rules}},
        },
    }


def rbac_filters(authz: ir.Authorization) -> list[dict]:
    """The RBAC HTTP filters of an inbound listener, DENY first (deny wins over allow)."""
    deny = [r for r in authz.rules if r.action == "deny"]
    allow = [r for r in authz.rules if r.action == "allow"]
    out = []
    if deny:
        out.append(_filter(names.RBAC_DENY_FILTER, "DENY", deny))
    if authz.default == "deny":
        out.append(_filter(names.RBAC_ALLOW_FILTER, "ALLOW", allow))
    return out


def provenance(svc: ir.Service) -> dict:
    """Where the authorization and each of its rules (RBAC policies) were written. RBAC policies
    have no metadata field, so the inbound listener's metadata carries this."""
    authz = svc.authorization
    return {
        "authorization": {
            "default": authz.default,
            "rules": {r.name: {"action": r.action, "source": str(r.source)} for r in authz.rules},
            "source": str(authz.source) if authz.source is not None else None,
        },
        "service": svc.name,
        "source": str(svc.source),
    }
