"""The live layer of the equivalence suite with both planes fed by `meshc serve` over ADS
(tests/equivalence/served.py) instead of files: generated policies, one after the other, reach
one Envoy and one native proxy for the whole session, both subscribed to one `meshc serve`, by
the edit path (the served file rewritten, SIGHUP, a push, each proxy's ACK), and every generated
request must get the same normalised observation from that Envoy as from that native proxy (and
as the model layer predicts), as in tests/test_equivalence_live.py.

Profiles: CI runs a subset (8 policies, 25 to 40 requests each); `MESHC_EQUIVALENCE_SERVED=full`
runs the live layer's profile (110 policies, 1,000 with `MESHC_EQUIVALENCE=nightly` too).
`MESHC_EQUIVALENCE_NATIVE` picks how the native proxy gets its config (tests/equivalence/
served.py, `NATIVE_PLANES`): `serve` by default, `files` for the file-fed native proxy.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from tests.envoy_support import requires_envoy
from tests.equivalence import policies as gen
from tests.equivalence import tally
from tests.equivalence.policies import GenPolicy, GenRequest
from tests.test_equivalence_live import disagreement, observe_features, sample_policy

pytestmark = requires_envoy

FULL = os.environ.get("MESHC_EQUIVALENCE_SERVED") == "full"
NIGHTLY = os.environ.get("MESHC_EQUIVALENCE") == "nightly"
POLICIES = (1000 if NIGHTLY else 110) if FULL else 8
MIN_REQUESTS, MAX_REQUESTS = (15, 30) if FULL else (25, 40)


@pytest.fixture(scope="module")
def served_session():
    from tests.equivalence.dataplanes import Session
    from tests.equivalence.served import ServedEnvoyPlane, native_plane

    session = Session(sample_policy(), envoy=ServedEnvoyPlane, native=native_plane())
    yield session
    swaps = sorted(session.envoy.swap_times)
    if swaps:
        print(f"\nmeshc serve → envoy, {len(swaps)} policies by the edit path: SIGHUP to Envoy's ACK "
              f"median {swaps[len(swaps) // 2] * 1000:.0f} ms, max {swaps[-1] * 1000:.0f} ms")
    after = sorted(session.native.swap_times) if getattr(session.native, "served", False) else []
    if after:
        print(f"meshc serve → native, the same {len(after)} policies: from Envoy's ACK to the native proxy's "
              f"ACK and its /config median {after[len(after) // 2] * 1000:.0f} ms, max {after[-1] * 1000:.0f} ms")
    session.stop()


def check(session, policy: GenPolicy, requests: list[GenRequest]) -> list:
    from tests.equivalence.dataplanes import model_report, side_by_side

    results = session.run(policy, requests)
    tally.add(policies=1, requests=len(requests), mtls_requests=sum(r.caller is not None for r in requests),
              served=True, served_native=getattr(session.native, "served", False))
    bad = [c for c in results if c.problem is not None]
    if bad:
        disagreement()
        fed = "both fed by meshc serve" if getattr(session.native, "served", False) else "envoy fed by meshc serve"
        pytest.fail(f"envoy and native ({fed}) disagree on {len(bad)} of {len(requests)} request(s); "
                    "the first:\n" + side_by_side(policy, bad[0]), pytrace=False)
    wrong = [c for c in results if c.model is not None]
    if wrong:
        disagreement()
        pytest.fail(f"the model layer's Envoy evaluator mispredicted {len(wrong)} of {len(requests)} request(s) "
                    "of the Envoy fed by meshc serve; the first:\n" + model_report(policy, wrong[0]), pytrace=False)
    observe_features(session, results)
    return results


@settings(max_examples=POLICIES, deadline=None, derandomize=not NIGHTLY, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(gen.cases(max_requests=MAX_REQUESTS, min_requests=MIN_REQUESTS))
def test_equivalence_served_generated_policies(served_session, case):
    policy, requests = case
    check(served_session, policy, requests)
