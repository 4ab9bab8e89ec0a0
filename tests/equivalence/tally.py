"""What the equivalence suite compared in this session, for the one summary line that
tests/conftest.py prints at the end of the run:

    equivalence: N policies, M requests through envoy and native, K decisions in the model layer, D disagreements

Counters only ever go up; a test adds to them as it compares (after hypothesis shrinking has
replayed an example, the counts include the replays: they are what was actually run)."""

from __future__ import annotations

import threading

_lock = threading.Lock()
counts = {"policies": 0, "requests": 0, "decisions": 0, "disagreements": 0}
used = False


def add(policies: int = 0, requests: int = 0, decisions: int = 0, disagreements: int = 0) -> None:
    global used
    with _lock:
        used = True
        counts["policies"] += policies
        counts["requests"] += requests
        counts["decisions"] += decisions
        counts["disagreements"] += disagreements


def summary() -> str:
    c = counts
    return (f"equivalence: {c['policies']} policies, {c['requests']} requests through envoy and native, "
            f"{c['decisions']} decisions in the model layer, {c['disagreements']} disagreements")
