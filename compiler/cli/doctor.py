"""`meshc doctor`: is this host ready for the program's sidecars?

Compiles the program (nothing is written), then checks, for every sidecar asked for
(`--proxy`, default all) whose traffic uses mTLS, its identity files where the compiled config
will look for them (`certificates`/SERVICE, or `--certs-dir`/SERVICE) with compiler/ca/check.py:
present and readable, parsed, valid now (a warning within a day of expiry), exactly the service's
SPIFFE ID as URI SAN, the key of the certificate, signed through ca.pem; then that the sidecars
trust each other's certificates, and (a warning) that their listener ports can be bound.

Why: the native proxy refuses to start without valid identity files, but Envoy starts (and
`envoy --mode validate` says OK) and then fails every handshake. Findings are reported as
diagnostics with the host codes of compiler/core/host_codes.py, located at the service's
declaration, in any --output-format. Exit 0 ready (warnings allowed), 1 when the program or the
host has errors, 2 usage, 3 internal (compiler/cli/exits.py).
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import socket
import sys

from compiler.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from compiler.cli.report import print_diagnostics

TYPE_CHECKING = False
if TYPE_CHECKING:
    from compiler import ir
    from compiler.ca.check import Finding, Identity
    from compiler.core.diagnostics import Diagnostic
    from compiler.core.source import SourceFile


def doctor(files: list[str], args) -> int:
    from compiler import api
    from compiler.backends.base import Options, identity_dir, mtls_anywhere, needs_identity
    from compiler.ca.check import check_identity
    from compiler.cli.compile import _proxies

    comp = api.compile(files)
    if comp.has_errors:
        print_diagnostics(comp.diagnostics, args.output_format, args.color)
        return EXIT_INPUT
    program = comp.ir
    assert program is not None  # lowered: there is no error
    from compiler.ir.workloads import proxy_names, views

    proxies = _proxies(args.proxy or ["all"], proxy_names(program))
    if proxies is None:
        return EXIT_USAGE
    certs_dir = os.path.abspath(args.certs_dir) if args.certs_dir is not None else None
    options = Options(certs_dir=certs_dir)
    now = dt.datetime.now(dt.UTC)
    findings: list[tuple[ir.Service, Finding]] = []
    identities: dict[str, Identity] = {}
    sidecars = views(program, proxies)   # a workload's sidecar: its service's identity, its own ports
    anywhere = mtls_anywhere(program)
    for name in proxies:
        svc = sidecars[name]
        if not needs_identity(program, svc, anywhere):
            continue
        directory = identity_dir(svc, options)
        ident = check_identity(directory, svc.identity, now,
                               fix=f"meshc ca issue {svc.name} --ca CA-DIR -o {directory}")
        identities[name] = ident
        findings += [(svc, f) for f in ident.findings]
    findings += [(sidecars[name], f) for name, f in _trust(identities)]
    for name in proxies:
        findings += [(sidecars[name], f) for f in _ports(sidecars[name])]
    diags = [_diagnostic(svc, f, comp.sources) for svc, f in findings]
    diags = comp.diagnostics + sorted(diags, key=lambda d: d.sort_key())
    print_diagnostics(diags, args.output_format, args.color)
    errors = any(d.severity == "error" for d in diags)
    if args.output_format == "human":
        checked = len(identities)
        plural = "sidecar" if len(proxies) == 1 else "sidecars"
        state = "not ready" if errors else "ready"
        print(f"meshc: doctor: {len(proxies)} {plural} {state} on this host ({checked} with mTLS identity files "
              f"checked{', in ' + certs_dir if certs_dir else ''})", file=sys.stderr)
    return EXIT_INPUT if errors else EXIT_OK


def _trust(identities: dict[str, Identity]) -> list[tuple[str, Finding]]:
    """H0109: a sidecar whose ca.pem does not verify another's certificate (that certificate
    chaining to its own bundle: otherwise H0108 said it already)."""
    from compiler.ca.check import Finding, chain_signer

    out: list[tuple[str, Finding]] = []
    for name, ident in identities.items():
        if not ident.bundle:
            continue
        refused = [other for other, peer in identities.items()
                   if other != name and peer.chain and chain_signer(peer.chain, peer.bundle) is not None
                   and chain_signer(peer.chain, ident.bundle) is None]
        if refused:
            ca = os.path.join(ident.directory, "ca.pem")
            names = ", ".join(f"`{r}`" for r in refused)
            out.append((name, Finding("H0109", "error", ca,
                                      f"{ca} does not verify the certificates of {names}: the handshakes between "
                                      f"`{name}` and {'it' if len(refused) == 1 else 'them'} fail",
                                      "issue every identity from one CA (its ca.pem in every identity directory)")))
    return out


def _ports(svc: ir.Service) -> list[Finding]:
    """H0201/H0202: the listener and admin ports of `svc`'s sidecar, bound and released at once
    (as the proxies bind them: SO_REUSEADDR, so a port in TIME_WAIT is not reported)."""
    from compiler.ca.check import Finding

    sidecar = svc.sidecar
    out: list[Finding] = []
    for what, port in (("inbound", sidecar.inbound_port), ("outbound", sidecar.outbound_port),
                       ("admin", sidecar.admin_port)):
        where = f"{sidecar.listen_host}:{port}"
        try:
            family = socket.AF_INET6 if ":" in sidecar.listen_host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((sidecar.listen_host, port))
        except OSError as err:
            reason = (err.strerror or str(err)).lower()
            if err.errno == errno.EADDRINUSE:
                out.append(Finding("H0201", "warning", where,
                                   f"the {what} port {where} is in use (by another process, or this sidecar "
                                   "already running)"))
            else:
                out.append(Finding("H0202", "warning", where, f"cannot bind the {what} port {where}: {reason}"))
    return out


def _diagnostic(svc: ir.Service, finding: Finding, sources: dict[str, SourceFile]) -> Diagnostic:
    """A finding as a diagnostic at the service's declaration, naming the sidecar."""
    from compiler.backends.located import located

    d = located(finding.code, f"sidecar `{svc.sidecar.node or svc.name}`: {finding.message}", svc.source, sources,
                finding.hint)
    if d.span is None and d.path is None:
        d.path = finding.path
    return d
