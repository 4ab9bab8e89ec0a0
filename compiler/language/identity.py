"""Workload identities: SPIFFE IDs (`spiffe://TRUST-DOMAIN/PATH`), the one helper every part of
meshc uses to write and recognise them (the checks, the lowering, `meshc ca`)."""

from __future__ import annotations

import re

# A SPIFFE ID: a lower-case trust domain and at least one non-empty path segment (E0311).
SPIFFE_ID = re.compile(r"spiffe://([a-z0-9][-a-z0-9._]*)(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+\Z")
# A trust domain on its own (`mesh { trust_domain "..." }`, `meshc ca init --trust-domain`).
TRUST_DOMAIN = re.compile(r"[a-z0-9]([-a-z0-9._]*[a-z0-9])?\Z")
# A Kubernetes namespace (or service account) name: a lower-case DNS label.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
# The longest name of anything a program declares (services, subsets, routes, policies, rules)
# and of a namespace (E0210): a DNS label's limit (RFC 1035), which is also Kubernetes' for names
# and namespaces. Names become DNS names and SNI (`NAME.NAMESPACE`), SPIFFE IDs, Envoy cluster,
# route and stat names, and the names of the files `meshc compile` writes.
MAX_NAME_LENGTH = 63


def spiffe_id(trust_domain: str, namespace: str, name: str) -> str:
    """The default SPIFFE ID of service `name`: its Kubernetes service account's,
    `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/NAME`."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{name}"


def namespace_prefix(trust_domain: str, namespace: str) -> str:
    """The prefix every SPIFFE ID of a namespace starts with (`from namespace`)."""
    return f"spiffe://{trust_domain}/ns/{namespace}/"


def is_spiffe_id(value: str) -> bool:
    return SPIFFE_ID.match(value) is not None


def trust_domain_of(spiffe: str) -> str | None:
    """The trust domain of a SPIFFE ID, or None when `spiffe` is not one."""
    m = SPIFFE_ID.match(spiffe)
    return m.group(1) if m else None
