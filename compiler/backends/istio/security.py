"""PeerAuthentication (the mTLS modes) and AuthorizationPolicy: the DENY rules, then, under
`default deny`, one ALLOW policy with the allow rules (with none, Istio's allow-nothing policy).

Istio's AuthorizationPolicy matches strings in four forms only: exact, prefix `abc*`, suffix `*abc`
and presence `*` (security/v1beta1/authorization_policy.proto, "Rule"): a regex, a case-insensitive
letter or a literal `*` has no form there (E0905-E0907).
"""

from __future__ import annotations

from compiler import ir
from compiler.backends.istio.values import selector
from compiler.backends.located import located
from compiler.core.diagnostics import Diagnostic

MTLS_MODES = {"strict": "STRICT", "permissive": "PERMISSIVE", "disable": "DISABLE"}
SPIFFE = "spiffe://"


def peer_authentication(svc: ir.Service) -> dict:
    return {"selector": selector(svc), "mtls": {"mode": MTLS_MODES[svc.mtls.mode]}}


def _has_letters(text: str) -> bool:
    return any(c.isascii() and c.isalpha() for c in text)


class _Rules:
    def __init__(self, svc: ir.Service, sources: dict, diags: list[Diagnostic]):
        self.svc, self.sources, self.diags = svc, sources, diags

    def _error(self, code: str, rule: ir.AuthzRule, message: str, hint: str) -> None:
        self.diags.append(located(code, message, rule.source, self.sources, hint=hint))

    def _literal(self, rule: ir.AuthzRule, value: str, what: str) -> bool:
        if "*" in value or "{*" in value:
            self._error("E0907", rule, f"rule `{rule.name}` matches {what} `{value}` with a `*`, which Istio reads as "
                                       "a wildcard", "Istio's authorization strings are exact, `abc*`, `*abc` or `*`: "
                                       "a literal `*` cannot be matched")
            return False
        return True

    def _ignore_case(self, rule: ir.AuthzRule, value: str, what: str) -> bool:
        if _has_letters(value):
            self._error("E0906", rule, f"rule `{rule.name}` matches {what} `{value}` ignoring case, which Istio's "
                                       "authorization cannot", "Istio compares authorization paths and header "
                                       "values case-sensitively; list the spellings, or drop `ignore_case`")
            return False
        return True

    def paths(self, rule: ir.AuthzRule, path: ir.PathMatch) -> list[str] | None:
        if path.kind == "regex":
            self._error("E0905", rule, f"rule `{rule.name}` matches the path by a regex, which Istio's "
                                       "authorization does not support", "Istio's `paths` are exact, prefix "
                                       "(`/a*`), suffix (`*.js`) or presence (`*`); write the path as those")
            return None
        if not self._literal(rule, path.value, "the path"):
            return None
        if path.ignore_case and not self._ignore_case(rule, path.value, "the path"):
            return None
        if path.kind == "exact":
            return [path.value]
        if path.kind == "prefix" or path.value.endswith("/"):
            return [path.value + "*"]
        return [path.value, path.value + "/*"]      # segment prefix: `/a` or `/a/...`

    def header(self, rule: ir.AuthzRule, h: ir.HeaderMatch) -> dict | None:
        key = f"request.headers[{h.name}]"
        if h.kind == "present":
            return {"key": key, "values": ["*"]}
        if h.kind == "absent":
            return {"key": key, "notValues": ["*"]}
        assert h.value is not None
        if h.kind == "regex":
            self._error("E0905", rule, f"rule `{rule.name}` matches header `{h.name}` by a regex, which Istio's "
                                       "authorization does not support", "Istio's `when` values are exact, prefix "
                                       "(`abc*`), suffix (`*abc`) or presence (`*`)")
            return None
        if not self._literal(rule, h.value, f"header `{h.name}`"):
            return None
        if h.ignore_case and not self._ignore_case(rule, h.value, f"header `{h.name}`"):
            return None
        pattern = {"exact": h.value, "prefix": h.value + "*", "suffix": "*" + h.value}[h.kind]
        if h.invert:   # meshc: present and no value passes; Istio's notValues alone also takes an absent header
            return {"key": key, "values": ["*"], "notValues": [pattern]}
        return {"key": key, "values": [pattern]}

    def rule(self, rule: ir.AuthzRule) -> dict | None:
        out: dict = {}
        if rule.principals is not None:
            out["from"] = [{"source": {"principals": [principal(p) for p in rule.principals]}}]
        op: dict = {}
        if rule.path is not None:
            paths = self.paths(rule, rule.path)
            if paths is None:
                return None
            op["paths"] = paths
        if rule.methods is not None:
            op["methods"] = list(rule.methods)
        if rule.not_paths:
            # Istio's notPaths: the operation holds when the path is none of them (a segment prefix is
            # two of Istio's forms, both excluded)
            not_paths: list[str] = []
            for p in rule.not_paths:
                forms = self.paths(rule, p)
                if forms is None:
                    return None
                not_paths += forms
            op["notPaths"] = not_paths
        if rule.not_methods:
            op["notMethods"] = list(rule.not_methods)
        if op:
            out["to"] = [{"operation": op}]
        when = [self.header(rule, h) for h in rule.headers]
        if any(w is None for w in when):
            return None
        if when:
            out["when"] = when
        return out


def principal(p: ir.Principal) -> str:
    """Istio's principal: the SPIFFE ID without `spiffe://` (a prefix with a trailing `*`)."""
    value = p.value[len(SPIFFE):] if p.value.startswith(SPIFFE) else p.value
    return value if p.kind == "exact" else value + "*"


def authorization_policies(svc: ir.Service, sources: dict,
                           diags: list[Diagnostic]) -> list[tuple[str, str, dict]]:
    """(name suffix, action, spec) of each AuthorizationPolicy of `svc`: `deny` with its deny rules
    (when it has some), `allow` under `default deny` (Istio denies what no ALLOW policy admits as soon
    as one applies to the workload; with no allow rule, the ALLOW policy without rules admits nothing).
    Under `default allow`, allow rules change nothing (meshc) and are not written: an ALLOW policy
    would deny every other request in Istio."""
    authz = svc.authorization
    rules = _Rules(svc, sources, diags)
    out = []
    deny = [rules.rule(r) for r in authz.rules if r.action == "deny"]
    if deny:
        out.append(("deny", "DENY", {"selector": selector(svc), "action": "DENY", "rules": deny}))
    if authz.default == "deny":
        allow = [rules.rule(r) for r in authz.rules if r.action == "allow"]
        spec: dict = {"selector": selector(svc), "action": "ALLOW"}
        if allow:
            spec["rules"] = allow
        out.append(("allow", "ALLOW", spec))
    return out
