"""The Istio objects of a program."""

from __future__ import annotations

from compiler import ir
from compiler.backends.kube import KubeObject
from compiler.core.diagnostics import Diagnostic

KINDS = ("ServiceEntry", "WorkloadEntry", "DestinationRule", "VirtualService", "PeerAuthentication",
         "AuthorizationPolicy", "Sidecar", "EnvoyFilter")


class IstioTarget:
    name: str = "istio"
    kinds: tuple[str, ...] = KINDS

    def build(self, program: ir.Program, sources: dict) -> tuple[list[KubeObject], list[Diagnostic]]:
        return [], []
