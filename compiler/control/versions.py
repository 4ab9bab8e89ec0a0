"""Versions are content hashes: the same resources give the same version on every server (two
replicas on the same sources agree), and a version changes exactly when a resource does."""

from __future__ import annotations

import hashlib


def version_of(packed: dict) -> str:
    """The version of one type's resources for one node: SHA-256 over each name and the
    deterministic binary form of its resource, in name order (16 hex digits)."""
    return version_from({name: value.SerializeToString(deterministic=True) for name, value in packed.items()})


def version_from(serialized: dict[str, bytes]) -> str:
    """`version_of` from the resources already serialized (name -> deterministic binary form of
    its `Any`): the same digest, without serializing again (the snapshot builder keeps each
    resource's bytes once)."""
    digest = hashlib.sha256()
    for name in sorted(serialized):
        for part in (name.encode(), serialized[name]):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()[:16]
