"""Kubernetes label keys and values, as a label-selected subset writes them (`subset v1 { labels
{ version "v1" } }`): the rules of k8s.io/apimachinery/pkg/util/validation (IsQualifiedName,
IsValidLabelValue), checked by `meshc check` (E0361, E0362) whatever the target, since a label
means something only to Kubernetes."""

from __future__ import annotations

import re

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")


def _subdomain(text: str) -> bool:
    return 0 < len(text) <= 253 and all(len(p) <= 63 and _DNS_LABEL.match(p) for p in text.split("."))


def _name_problem(name: str, it: str) -> str | None:
    if not name:
        return f"{it} is empty"
    if len(name) > 63:
        return f"{it} has {len(name)} characters, more than 63"
    if not _NAME.match(name):
        return f"{it} must be letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit"
    return None


def key_problem(key: str) -> str | None:
    """None for a valid label key (`[PREFIX/]NAME`, PREFIX a DNS subdomain), else why not."""
    prefix, slash, name = key.rpartition("/")
    if slash and not _subdomain(prefix):
        return f"its prefix `{prefix}` is not a DNS subdomain (lower-case letters, digits, `-` and `.`)"
    return _name_problem(name, "its name" if slash else "it")


def value_problem(value: str) -> str | None:
    """None for a valid label value (empty included), else why not."""
    return None if value == "" else _name_problem(value, "it")
