"""Authorization decision (docs/language.md section 14): deny rules, then allow rules, then the
default. The order of the rules within each action does not change the outcome; the rule named in
the result is the first matching one in written order (for logs and stats)."""

from __future__ import annotations

from runtime_proxy.decide.table import CAuthorization, CAuthzRule


def rule_matches(rule: CAuthzRule, peer_identity: str | None, method: str, path: str, headers) -> bool:
    """Whether every condition of `rule` holds. A peer without a verified identity never
    satisfies a `from` condition."""
    if rule.principals is not None:
        if peer_identity is None:
            return False
        exact, prefixes = rule.principals
        if peer_identity not in exact and not any(peer_identity.startswith(p) for p in prefixes):
            return False
    if rule.methods is not None and method not in rule.methods:
        return False
    if rule.path is not None and not rule.path(path):
        return False
    for test in rule.headers:
        if not test(headers):
            return False
    return True


def decide(authz: CAuthorization, peer_identity: str | None, method: str, path: str,
           headers) -> tuple[bool, str | None]:
    """(allowed, name of the deciding rule or None when the default decided). `path` is the
    normalised path without the query."""
    for rule in authz.deny:
        if rule_matches(rule, peer_identity, method, path, headers):
            return False, rule.name
    for rule in authz.allow:
        if rule_matches(rule, peer_identity, method, path, headers):
            return True, rule.name
    return authz.default_allow, None
