"""Backends: each reads only the IR (compiler/ir/model.py) and returns the files of one target.

A backend is a module with `emit(program, proxies, options) -> Emitted`. It never writes files
itself (the CLI writes everything atomically, or nothing) and never raises on a policy it
cannot express exactly: it reports a diagnostic at the policy's own line instead
(compiler/backends/located.py), an error when the target would behave differently in a way a
user would not expect, a warning for an approximation.
"""

from __future__ import annotations

from compiler.backends.base import (  # noqa: F401
    CA_FILE,
    CERT_FILE,
    IDENTITY_FILES,
    KEY_FILE,
    Emitted,
    Options,
    identity_dir,
    needs_identity,
)

TARGETS = ("ir", "envoy", "native", "istio", "gateway-api")


def emit(target: str, program, proxies: list[str], options: Options, sources=None) -> Emitted:
    """Run one backend. `proxies` are service names (already checked to exist); `sources` maps a
    path to its SourceFile, so that backend diagnostics can show an excerpt."""
    if target == "envoy":
        from compiler.backends import envoy
        return envoy.emit(program, proxies, options, sources or {})
    if target == "native":
        from compiler.backends import native
        return native.emit(program, proxies, options, sources or {})
    if target == "istio":   # Kubernetes YAML for the whole program: `proxies` does not apply
        from compiler.backends import istio
        return istio.emit(program, proxies, options, sources or {})
    if target == "gateway-api":   # HTTPRoutes for the whole program (GAMMA), of options.channel
        from compiler.backends import gateway_api
        return gateway_api.emit(program, proxies, options, sources or {})
    raise ValueError(f"unknown target {target!r}")
