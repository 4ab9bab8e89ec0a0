"""What every backend shares: the target options, the files a backend returns, and where a
sidecar's identity files are."""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.core.diagnostics import Diagnostic


@dataclass
class Options:
    """Target options from the command line; each backend reads the ones that concern it."""
    bootstrap: str | None = None       # envoy: "static" (self-contained), "xds" (file-based dynamic) or
                                       # "ads" (from a control plane over gRPC); None: backend default
    xds_servers: tuple[tuple[str, int], ...] = ()   # envoy, with "ads": the control plane's replicas (host, port)
    xds_identity: str | None = None    # envoy, with "ads": the identity directory of the mTLS channel to it (absolute)
    xds_dir: str | None = None         # envoy: where the xds/ files live at run time (absolute);
                                       # None: under the output directory
    output_dir: str | None = None      # the -o directory, absolute
    certs_dir: str | None = None       # --certs-dir: the root of the identity files at run time, over `certificates`
    channel: str | None = None         # gateway-api: "standard" or "experimental" (--channel); None: its default
    # envoy, `xds`: a scope of one compiled sidecar keeps its files in that sidecar's directory. The
    # control plane turns it off: its snapshots name no files, and with it off a sidecar's files
    # depend on no other sidecar's scope, so an edit rebuilds only the sidecars whose scope it changes.
    alone_scope_in_own_dir: bool = True


@dataclass(frozen=True)
class Link:
    """A symbolic link among the outputs: `target` is relative to the link's own directory."""
    target: str


@dataclass
class Emitted:
    files: dict[str, bytes] = field(default_factory=dict)   # relative path -> content
    diagnostics: list[Diagnostic] = field(default_factory=list)
    links: dict[str, Link] = field(default_factory=dict)    # relative path -> symbolic link (envoy, `xds`)
    links_before: str | None = None   # the file of `files` before which the links are written (else last)
    validation: object | None = None  # a Kubernetes target's validation report (compiler/kubeschema Report)
    # a Kubernetes object's list whose elements come from different constructs: (kind, namespace,
    # name) -> (the list's field, e.g. `spec.rules`; each element's FILE:LINE:COL), to locate a
    # validation problem of one element at its own construct
    part_sources: dict[tuple[str, str | None, str], tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)

    def outputs(self) -> dict[str, bytes | Link]:
        """Every output in the order to write it: the files, with the links before `links_before`."""
        out: dict[str, bytes | Link] = {}
        for path, data in self.files.items():
            if path == self.links_before:
                out.update(self.links)
            out[path] = data
        out.update(self.links)   # (no-op when already placed: same keys, same order)
        return out


# The identity files of a sidecar, in its directory (docs/identity.md; `meshc ca issue` writes them).
CERT_FILE, KEY_FILE, CA_FILE = IDENTITY_FILES = ("cert.pem", "key.pem", "ca.pem")


def identity_dir(svc, options: Options) -> str:
    """Where `svc`'s sidecar finds its identity files at run time."""
    if options.certs_dir is not None:
        return f"{options.certs_dir.rstrip('/')}/{svc.name}"
    return svc.mtls.directory


def needs_identity(program, svc, anywhere: bool | None = None) -> bool:
    """Whether `svc`'s sidecar uses a certificate: it accepts mTLS, or it may call a service that
    does (conservatively any service of the program, whatever the sidecar's scope, so that a
    change of scope never changes its identity files). A caller asking for every sidecar passes
    `anywhere` (`mtls_anywhere(program)`, computed once: else each call walks every service)."""
    if svc.mtls.mode != "disable":
        return True
    return mtls_anywhere(program) if anywhere is None else anywhere


def mtls_anywhere(program) -> bool:
    """Whether any service of the program accepts mTLS (then every sidecar needs an identity)."""
    return any(s.mtls.mode != "disable" for s in program.services)
