"""Authorization decision (docs/language.md section 14): deny rules, then allow rules, then the
default. The order of the rules within each action does not change the outcome; the rule named in
the result is the first matching one in written order (for logs and stats)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime_proxy.decide.table import CAuthorization, CAuthzRule

if TYPE_CHECKING:
    from runtime_proxy.decide.explain import Explanation
    from runtime_proxy.decide.table import HeaderMap


def rule_matches(rule: CAuthzRule, peer_identity: str | None, method: str, path: str, headers: HeaderMap) -> bool:
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
    for test in rule.headers:  # noqa: SIM110 - a plain loop: all() would add a generator a request
        if not test(headers):
            return False
    return True


def decide(authz: CAuthorization, peer_identity: str | None, method: str, path: str,
           headers: HeaderMap) -> tuple[bool, str | None]:
    """(allowed, name of the deciding rule or None when the default decided). `path` is the
    normalised path without the query."""
    for rule in authz.deny:
        if rule_matches(rule, peer_identity, method, path, headers):
            return False, rule.name
    for rule in authz.allow:
        if rule_matches(rule, peer_identity, method, path, headers):
            return True, rule.name
    return authz.default_allow, None


def explain_rules(authz: CAuthorization, peer_identity: str | None, method: str, path: str, headers: HeaderMap,
                  explain: Explanation) -> None:
    """Every rule of `authz`, denies first, with whether it matched (and the first condition
    that failed it), then what decided: the same answer as `decide`."""
    from runtime_proxy.decide.explain import describe_header, describe_path
    from runtime_proxy.decide.table import path_test

    for rule in authz.deny + authz.allow:
        spec = rule.spec
        why = None
        if rule.principals is not None and (peer_identity is None or (
                peer_identity not in rule.principals[0]
                and not any(peer_identity.startswith(p) for p in rule.principals[1]))):
            why = "no verified identity" if peer_identity is None else f"caller `{peer_identity}` is not named"
        elif rule.methods is not None and method not in rule.methods:
            why = (f"method {method} is excluded (`not method`)" if method in (spec.get("not_methods") or ())
                   else f"method {method} is not one of {', '.join(sorted(spec.get('methods') or ()))}")
        elif rule.path is not None and not rule.path(path):
            base = spec.get("path")
            why = (f"{describe_path(base)} does not match `{path}`"
                   if base and not path_test(base["kind"], base["value"], base.get("ignore_case", False))(path)
                   else f"`{path}` is excluded (`not path`)")
        else:
            why = next((describe_header(h) + " does not hold"
                        for h, test in zip(spec.get("headers") or (), rule.headers) if not test(headers)), None)
        explain.note("authz", "no match" if why else "matched",
                     f"{rule.action} `{rule.name}`" + (f": {why}" if why else ""),
                     {"rule": rule.name, "action": rule.action, "source": rule.source, "matched": why is None,
                      "why": why})
    allowed, name = decide(authz, peer_identity, method, path, headers)
    explain.note("authz", "allowed" if allowed else "denied", f"by rule `{name}`" if name else "by the default",
                 {"allowed": allowed, "rule": name, "default": "allow" if authz.default_allow else "deny",
                  "peer": peer_identity, "source": authz.source})
