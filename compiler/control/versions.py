"""Versions are content hashes: the same resources give the same version on every server (two
replicas on the same sources agree), and a version changes exactly when a resource does."""

from __future__ import annotations

import hashlib


def version_of(packed: dict) -> str:
    """The version of one type's resources for one node: SHA-256 over each name and the SHA-256
    of the deterministic binary form of its resource, in name order (16 hex digits)."""
    return version_from_digests({name: resource_digest(value.SerializeToString(deterministic=True))
                                 for name, value in packed.items()})


def resource_digest(serialized: bytes) -> bytes:
    """What a version takes of one resource: the SHA-256 of its deterministic binary form (the
    snapshot builder keeps these 32 bytes, not the resource's bytes a second time)."""
    return hashlib.sha256(serialized).digest()


def version_from_digests(digests: dict[str, bytes]) -> str:
    """`version_of` from each resource's `resource_digest`."""
    digest = hashlib.sha256()
    for name in sorted(digests):
        for part in (name.encode(), digests[name]):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()[:16]
