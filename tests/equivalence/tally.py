"""What the equivalence suite compared in this session, for the one summary line that
tests/conftest.py prints at the end of the run (shown here on two lines):

    equivalence: N policies, M requests through envoy and native (T over mTLS),
    K decisions in the model layer (I with a peer identity), D disagreements

and, when the layer fed by `meshc serve` ran (tests/test_equivalence_served.py), before the
disagreements: `, S of the policies and R of the requests with both planes (envoy and native) fed by
meshc serve over ADS` (or `with envoy fed by meshc serve over ADS` when the native proxy was fed by
files there, MESHC_EQUIVALENCE_NATIVE=files; both parts when some of each ran).

`T` counts the live requests whose caller presented a client certificate, `I` the model
decisions for such a caller; the other inbound requests come from a plaintext caller without
identity. Counters only ever go up; a test adds to them as it compares (after hypothesis
shrinking has replayed an example, the counts include the replays: they are what was actually
run).

Under it, printed with it, the pairwise feature coverage (tests/equivalence/features.py):

    pairs: C of P that can interact covered (X %; model a of b (..), live c of d (..); ...)

With `MESHC_EQUIVALENCE_PAIRS=-` the full report (features, uncovered pairs, the pairs that
cannot interact and why) follows it; with `MESHC_EQUIVALENCE_PAIRS=FILE` it is written to FILE."""

from __future__ import annotations

import threading

_lock = threading.Lock()
counts = {"policies": 0, "requests": 0, "mtls_requests": 0, "decisions": 0, "identity_decisions": 0,
          "disagreements": 0, "served_policies": 0, "served_requests": 0, "served_native_policies": 0,
          "served_native_requests": 0}
used = False


def add(policies: int = 0, requests: int = 0, decisions: int = 0, disagreements: int = 0,
        mtls_requests: int = 0, identity_decisions: int = 0, served: bool = False,
        served_native: bool = False) -> None:
    """`served`: the policies and requests went through the Envoy fed by `meshc serve`;
    `served_native`: and through the native proxy fed by it too."""
    global used
    with _lock:
        used = True
        if served and served_native:
            counts["served_native_policies"] += policies
            counts["served_native_requests"] += requests
        elif served:
            counts["served_policies"] += policies
            counts["served_requests"] += requests
        counts["policies"] += policies
        counts["requests"] += requests
        counts["mtls_requests"] += mtls_requests
        counts["decisions"] += decisions
        counts["identity_decisions"] += identity_decisions
        counts["disagreements"] += disagreements


def summary() -> str:
    c = counts
    return (f"equivalence: {c['policies']} policies, {c['requests']} requests through envoy and native "
            f"({c['mtls_requests']} over mTLS), {c['decisions']} decisions in the model layer "
            f"({c['identity_decisions']} with a peer identity), "
            + (f"{c['served_native_policies']} of the policies and {c['served_native_requests']} of the requests "
               "with both planes (envoy and native) fed by meshc serve over ADS, "
               if c["served_native_policies"] else "")
            + (f"{c['served_policies']} of the policies and {c['served_requests']} of the requests with envoy fed "
               "by meshc serve over ADS, " if c["served_policies"] else "")
            + f"{c['disagreements']} disagreements") + _pairs()


def _pairs() -> str:
    from tests.equivalence import features

    if not features.used():
        return ""
    out = "\n" + features.summary()
    where = features.report_requested()
    if where == "-":
        out += "\n" + features.report()
    elif where:
        with open(where, "w", encoding="utf-8") as fh:
            fh.write(features.report() + "\n")
        out += f" (report: {where})"
    return out
