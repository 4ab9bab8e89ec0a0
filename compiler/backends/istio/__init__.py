"""The Istio target (`meshc compile --target istio -o DIR`): Kubernetes YAML that Istio runs.

Built on the shared Kubernetes helpers (compiler/backends/kube/); what Istio cannot carry exactly
is a located diagnostic (E09xx/W09xx, docs/kubernetes.istio.md). Reads only the IR.
"""

from __future__ import annotations

from compiler.backends.base import Emitted, Options
from compiler.backends.istio.build import IstioTarget
from compiler.backends.kube import emit_kube


def emit(program, proxies: list[str], options: Options, sources: dict) -> Emitted:
    """Every object of the program (`proxies` does not apply: Istio configures every workload)."""
    return emit_kube(IstioTarget(), program, sources)
