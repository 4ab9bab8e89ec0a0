"""Kubernetes' name rules (k8s.io/apimachinery/pkg/util/validation), checked on the names a
Kubernetes target writes, with located diagnostics (E0901) where Kubernetes would reject one.

- a DNS label (RFC 1123): lower-case letters, digits and `-`, starting and ending with a letter or
  digit, at most 63 characters: namespaces, and the names Istio requires to be labels (a
  DestinationRule's subsets);
- a DNS-1035 label: the same, starting with a letter: a Kubernetes Service's name, which is the
  host a meshc service becomes (`NAME.NAMESPACE.svc.cluster.local`);
- a DNS subdomain: DNS labels joined by `.`, at most 253 characters: the names of most objects;
- a label key (`[PREFIX/]NAME`, NAME at most 63 characters of letters, digits, `-`, `_`, `.`,
  starting and ending with a letter or digit, PREFIX a DNS subdomain) and a label value (the
  same as NAME, or empty).

meshc's own names (`[A-Za-z_][A-Za-z0-9_-]*`, at most 63 characters: E0210) admit upper case and
`_`, which Kubernetes rejects: `meshc check` accepts them (the Envoy and native targets do), a
Kubernetes target reports them.
"""

from __future__ import annotations

import re

from compiler import ir
from compiler.backends.located import located
from compiler.core.diagnostics import Diagnostic

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_LABEL_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")

NAME_CODE = "E0901"
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def is_dns_label(name: str, rfc1035: bool = False) -> bool:
    return len(name) <= 63 and (_LABEL_1035 if rfc1035 else _LABEL).match(name) is not None


def is_dns_subdomain(name: str) -> bool:
    return 0 < len(name) <= 253 and all(is_dns_label(part) for part in name.split("."))


def _why_not_label(name: str, rfc1035: bool) -> str:
    if not name:
        return "it is empty"
    if len(name) > 63:
        return f"it has {len(name)} characters, more than 63"
    bad = sorted({c for c in name if c not in _LABEL_CHARS})
    if bad:
        shown = ", ".join(f"`{c}`" for c in bad)
        return f"it has {shown} (only lower-case letters, digits and `-` are allowed)"
    if rfc1035 and not name[0].isalpha():
        return "it does not start with a letter"
    return "it does not start and end with a letter or digit"


def _suggest(name: str) -> str:
    fixed = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return fixed or "a-name"


def check_dns_label(name: str, what: str, where: ir.Location | None, sources: dict,
                    rfc1035: bool = False) -> list[Diagnostic]:
    """[] when `name` is a DNS label (a DNS-1035 one with `rfc1035`), else one E0901 at `where`."""
    if is_dns_label(name, rfc1035):
        return []
    kind = "a DNS-1035 label" if rfc1035 else "a DNS label"
    return [located(NAME_CODE, f"{what} `{name}` is not {kind}, which Kubernetes requires: "
                               f"{_why_not_label(name, rfc1035)}", where, sources,
                    hint=f"rename it, for example `{_suggest(name)}`")]


def check_dns_subdomain(name: str, what: str, where: ir.Location | None, sources: dict) -> list[Diagnostic]:
    """[] when `name` is a DNS subdomain, else one E0901 at `where`."""
    if is_dns_subdomain(name):
        return []
    why = (f"it has {len(name)} characters, more than 253" if len(name) > 253
           else next((_why_not_label(p, False) for p in name.split(".") if not is_dns_label(p)), "it is empty"))
    return [located(NAME_CODE, f"{what} `{name}` is not a DNS subdomain, which Kubernetes requires: {why}",
                    where, sources)]


def check_label_key(key: str) -> str | None:
    """None when `key` is a valid Kubernetes label key, else why not."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return "its prefix before `/` is empty"
        if not is_dns_subdomain(prefix):
            return f"its prefix `{prefix}` is not a DNS subdomain (lower-case letters, digits, `-` and `.`)"
    return _why_not_qualified(name, "its name")


def check_label_value(value: str) -> str | None:
    """None when `value` is a valid Kubernetes label value (empty is valid), else why not."""
    return None if value == "" else _why_not_qualified(value, "it")


def _why_not_qualified(name: str, it: str) -> str | None:
    if not name:
        return f"{it} is empty"
    if len(name) > 63:
        return f"{it} has {len(name)} characters, more than 63"
    if _QUALIFIED.match(name) is None:
        return (f"{it} must be letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit")
    return None


def check_program_names(program: ir.Program, sources: dict) -> list[Diagnostic]:
    """The names of a program a Kubernetes target writes: each service's name (a DNS-1035 label:
    the Kubernetes Service), its namespace and its subsets' names (DNS labels)."""
    out: list[Diagnostic] = []
    seen_ns: set[str] = set()
    for svc in program.services:
        out += check_dns_label(svc.name.rpartition("/")[2], "service name", svc.source, sources, rfc1035=True)
        if svc.namespace not in seen_ns:
            found = check_dns_label(svc.namespace, "namespace", svc.source, sources)
            if found:
                seen_ns.add(svc.namespace)   # once per namespace, at its first service
            out += found
        for sub in svc.subsets:
            out += check_dns_label(sub.name, "subset name", sub.source, sources)
    return out
