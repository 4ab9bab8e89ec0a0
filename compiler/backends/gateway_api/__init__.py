"""The Gateway API target (`meshc compile --target gateway-api [--channel standard|experimental]`):
one HTTPRoute per service for the mesh (GAMMA: its `parentRefs` name the Service), on the shared
Kubernetes helpers (compiler/backends/kube/). What an HTTPRoute of the chosen channel cannot carry
exactly is a located diagnostic (E0943-E0979/W0940-W0979, docs/kubernetes.gateway-api.md); the
written first-match order is kept only where Gateway API's precedence selects the same route
(order.py). Reads only the IR.
"""

from __future__ import annotations

from compiler.backends.base import Emitted, Options
from compiler.backends.gateway_api.build import GatewayApiTarget
from compiler.backends.kube import emit_kube


def emit(program, proxies: list[str], options: Options, sources: dict) -> Emitted:
    """Every service's HTTPRoute (`proxies` does not apply: the routes configure every caller)."""
    return emit_kube(GatewayApiTarget(options.channel or "standard"), program, sources)
