"""Backends: each reads only the IR (compiler/ir.py) and returns the files of one target.

A backend is a module with `emit(program, proxies, options) -> Emitted`. It never writes files
itself (the CLI writes everything atomically, or nothing) and never raises on a policy it
cannot express exactly: it reports a diagnostic at the policy's own line instead
(compiler/backends/located.py), an error when the target would behave differently in a way a
user would not expect, a warning for an approximation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.diagnostics import Diagnostic

TARGETS = ("ir", "envoy", "native")


@dataclass
class Options:
    """Target options from the command line; each backend reads the ones that concern it."""
    bootstrap: str | None = None       # envoy: "static" (self-contained) or "xds" (file-based dynamic); None: backend default
    xds_dir: str | None = None         # envoy: where the xds/ files live at run time (absolute); None: under the output directory
    output_dir: str | None = None      # the -o directory, absolute
    certs_dir: str | None = None       # --certs-dir: the root of the identity files at run time, over `certificates`


@dataclass
class Emitted:
    files: dict[str, bytes] = field(default_factory=dict)   # relative path -> content
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


# The identity files of a sidecar, in its directory (docs/identity.md; `meshc ca issue` writes them).
CERT_FILE, KEY_FILE, CA_FILE = IDENTITY_FILES = ("cert.pem", "key.pem", "ca.pem")


def identity_dir(svc, options: Options) -> str:
    """Where `svc`'s sidecar finds its identity files at run time."""
    if options.certs_dir is not None:
        return f"{options.certs_dir.rstrip('/')}/{svc.name}"
    return svc.mtls.directory


def needs_identity(program, svc) -> bool:
    """Whether `svc`'s sidecar uses a certificate: it accepts mTLS, or it may call a service that
    does (every sidecar can call every service of the program)."""
    return svc.mtls.mode != "disable" or any(s.mtls.mode != "disable" for s in program.services)


def emit(target: str, program, proxies: list[str], options: Options, sources=None) -> Emitted:
    """Run one backend. `proxies` are service names (already checked to exist); `sources` maps a
    path to its SourceFile, so that backend diagnostics can show an excerpt."""
    if target == "envoy":
        from compiler.backends import envoy as backend
    elif target == "native":
        from compiler.backends import native as backend
    else:
        raise ValueError(f"unknown target {target!r}")
    return backend.emit(program, proxies, options, sources or {})
