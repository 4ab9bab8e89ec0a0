"""Shared test configuration: the golden-file update flag and the hypothesis profiles."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, Phase, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# CI keeps property tests bounded; `HYPOTHESIS_PROFILE=nightly` runs many more examples.
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("nightly", max_examples=2000, deadline=None)
# For debugging a failure quickly: report the first failing example without shrinking it.
settings.register_profile("noshrink", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow],
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite golden files from the current output (and delete orphaned ones)")


@pytest.fixture
def update_goldens(request) -> bool:
    return request.config.getoption("--update-goldens")


def pytest_terminal_summary(terminalreporter):
    """The equivalence suite's one summary line, when any of it ran (tests/equivalence/tally.py)."""
    from tests.equivalence import tally

    if tally.used:
        terminalreporter.write_line(tally.summary())


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_envoy: runs the real Envoy binary (tests/envoy_support.py): "
                                       "skipped without one, failed under CI")


def pytest_runtest_setup(item):
    """A test marked `requires_envoy` without an Envoy binary: skipped, but failed under CI (the
    `CI` variable set, as .ci/run does), where a missing Envoy is a broken environment, not an
    optional tool."""
    if item.get_closest_marker("requires_envoy") is None:
        return
    from tests.envoy_support import ENVOY, ENVOY_MISSING

    if ENVOY is None:
        if os.environ.get("CI"):
            pytest.fail(ENVOY_MISSING, pytrace=False)
        pytest.skip(ENVOY_MISSING)
