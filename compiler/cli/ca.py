"""`meshc ca`: the development certificate authority (init, issue, rotate, show).

A thin shell over compiler/ca/files.py: parse the arguments, call, print one line. Status lines go
to standard error like every `meshc: ...` line, `show` prints to standard output, and nothing ever
prints a key. `cryptography` is imported only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

from compiler.cli.exits import EXIT_INPUT, EXIT_USAGE
from compiler.language import defaults
from compiler.language.settings import MESH

MAX_HOURS = 876_000  # a hundred years
MIN_HOURS = 0.1     # six minutes: the certificate starts a minute in the past, and must outlive its first use


def add_parser(sub) -> None:
    """Declare `meshc ca COMMAND` on the top-level subparsers."""
    ca = sub.add_parser("ca", help="a development CA: issue and rotate SPIFFE workload certificates",
                        description="A development certificate authority for mTLS between sidecars: make a CA, "
                                    "issue short-lived SPIFFE certificates into identity directories and rotate them "
                                    "with one atomic rename (docs/identity.md). For production, point `certificates` "
                                    "at files from your own CA.")
    ca.set_defaults(ca_parser=ca)
    cmds = ca.add_subparsers(dest="ca_command", metavar="COMMAND", parser_class=type(ca))
    init = cmds.add_parser("init", help="make a CA (DIR/ca.pem, DIR/ca-key.pem)",
                           description="Make a CA (EC P-256) in DIR: ca.pem, and ca-key.pem readable by its owner "
                                       "only. An existing CA is replaced only with --force.")
    init.add_argument("dir", metavar="DIR", help="the CA directory (made if missing)")
    trust_domain = MESH.default("trust_domain")
    init.add_argument("--trust-domain", default=trust_domain, metavar="TD",
                      help=f"the trust domain of every ID the CA issues (default: {trust_domain})")
    init.add_argument("--days", type=_positive(int, 36500), default=365, help="validity in days (default: 365)")
    init.add_argument("--force", action="store_true", help="replace an existing CA")

    issue = cmds.add_parser("issue", help="issue a workload certificate into an identity directory",
                            description="Issue a short-lived certificate whose URI SAN is the service's SPIFFE ID "
                                        "into OUTDIR (cert.pem, key.pem, ca.pem, switched in by one rename). The ID is "
                                        "--spiffe-id, or the service's `identity` in --policy, or "
                                        "spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE.")
    issue.add_argument("service", metavar="SERVICE", help="the service (its sidecar presents the certificate)")
    issue.add_argument("--ca", required=True, metavar="DIR", help="the CA directory (`meshc ca init`)")
    issue.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="the identity directory to write")
    which = issue.add_mutually_exclusive_group()
    which.add_argument("--spiffe-id", metavar="ID", help="the SPIFFE ID, in the CA's trust domain")
    which.add_argument("--policy", action="append", metavar="FILE",
                       help="a .mesh file or directory (repeatable): take SERVICE's identity from the policy")
    issue.add_argument("--namespace", metavar="NS",
                       help=f"the namespace of the default ID (default: {defaults.NAMESPACE})")
    issue.add_argument("--hours", type=_positive(float, MAX_HOURS, MIN_HOURS), default=24.0,
                       help="validity in hours (default: 24)")

    rotate = cmds.add_parser("rotate", help="re-issue an identity's certificate when it is due",
                             description="Issue a new certificate with the same SPIFFE ID when less than --before of "
                                         "the current one's lifetime is left (or it was not signed by this CA, or "
                                         "--force), and switch it in with one atomic rename. Exit 0 either way.")
    rotate.add_argument("output", metavar="OUTDIR", help="an identity directory written by `meshc ca issue`")
    rotate.add_argument("--ca", required=True, metavar="DIR", help="the CA directory")
    rotate.add_argument("--hours", type=_positive(float, MAX_HOURS, MIN_HOURS), default=None,
                        help="validity of the new certificate in hours (default: as the current one)")
    rotate.add_argument("--before", type=_fraction, default=1 / 3, metavar="FRACTION",
                        help="rotate when less than this fraction of the lifetime is left (default: 1/3)")
    rotate.add_argument("--force", action="store_true", help="rotate now, due or not")

    show = cmds.add_parser("show", help="print a certificate's SPIFFE ID, issuer and validity",
                           description="Print the SPIFFE ID, serial, issuer and validity of an identity directory's "
                                       "certificate, a CA directory's, or a PEM file's.")
    show.add_argument("path", metavar="PATH", help="an identity directory, a CA directory or a PEM certificate")


def run(args) -> int:
    """Run `meshc ca COMMAND`; a CaError becomes one `meshc: error:` line and exit 1 (bad input)
    or 2 (a file that cannot be read or written)."""
    if args.ca_command is None:  # like a bare `meshc`: the help, on standard error
        args.ca_parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.ca_command == "issue" and args.namespace is not None and (args.spiffe_id or args.policy):
        print("meshc: error: --namespace applies to the default ID only, not with --spiffe-id or --policy",
              file=sys.stderr)
        return EXIT_USAGE
    from compiler.ca.certs import CaError, CaFileError

    try:
        return _COMMANDS[args.ca_command](args)
    except CaFileError as err:
        print(f"meshc: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except CaError as err:
        print(f"meshc: error: {err}", file=sys.stderr)
        return EXIT_INPUT


def _init(args) -> int:
    from compiler.ca import files as ca_files

    info = ca_files.init_ca(args.dir, args.trust_domain, args.days, args.force, ca_files.utcnow())
    print(f"meshc: made CA {os.path.join(args.dir, ca_files.CA_CERT)} for trust domain `{args.trust_domain}`, "
          f"valid until {_when(info.not_after)} (key: {os.path.join(args.dir, ca_files.CA_KEY)}, mode 0600)",
          file=sys.stderr)
    return 0


def _issue(args) -> int:
    from compiler.ca import certs as build
    from compiler.ca import files as ca_files

    ca = ca_files.read_ca(args.ca)
    if args.spiffe_id is not None:
        spiffe_id = args.spiffe_id
    elif args.policy:
        spiffe_id = _policy_identity(args.policy, args.service)
    else:
        spiffe_id = build.default_spiffe_id(ca.trust_domain, args.namespace, args.service)
    now = ca_files.utcnow()
    info = ca_files.issue_identity(ca, args.output, spiffe_id, args.hours, now)
    print(f"meshc: issued {_summary(info, args.output, now + dt.timedelta(hours=args.hours))}", file=sys.stderr)
    return 0


def _rotate(args) -> int:
    from compiler.ca import certs as build
    from compiler.ca import files as ca_files

    ca = ca_files.read_ca(args.ca)
    now = ca_files.utcnow()
    done = ca_files.rotate_identity(ca, args.output, args.hours, args.before, args.force, now)
    info = done.info
    if done.rotated:
        asked = now + dt.timedelta(hours=args.hours if args.hours is not None else build.lifetime_hours(info))
        print(f"meshc: rotated ({done.reason}): {_summary(info, args.output, asked)}", file=sys.stderr)
    else:
        assert done.due_at is not None  # known when not rotated
        print(f"meshc: {args.output}: not due until {_when(done.due_at)} ({info.spiffe_id}: "
              f"{_span(info.not_after - now)} left of {_span(info.lifetime)}; --force rotates now)", file=sys.stderr)
    return 0


def _show(args) -> int:
    from compiler.ca import certs as build
    from compiler.ca import files as ca_files
    from compiler.ca.certs import CaFileError

    path = args.path
    if os.path.isdir(path):
        for name in ("cert.pem", ca_files.CA_CERT):
            if os.path.lexists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise CaFileError(f"{args.path}: neither cert.pem nor {ca_files.CA_CERT} in this directory")
    info = build.cert_info(build.load_cert(ca_files.read_file(path), path))
    now = ca_files.utcnow()
    left = info.not_after - now
    lines = [("certificate", path)]
    if info.spiffe_id is not None:
        lines.append(("spiffe id", info.spiffe_id))
    if info.subject:
        lines.append(("subject", info.subject))
    lines += [("issuer", info.issuer), ("serial", info.serial), ("ca", "yes" if info.is_ca else "no"),
              ("not before", _when(info.not_before)), ("not after", _when(info.not_after)),
              ("left", f"{_span(left)} ({left / dt.timedelta(days=1):.2f} days)" if left.total_seconds() > 0
               else f"none: expired {_span(-left)} ago")]
    for key, value in lines:
        print(f"{key + ':':<13}{value}")
    return 0


_COMMANDS = {"init": _init, "issue": _issue, "rotate": _rotate, "show": _show}


def _policy_identity(paths: list[str], service: str) -> str:
    """The `identity` the policy gives `service` (its IR), after a full check of the policy."""
    from compiler import api
    from compiler.ca.certs import CaError, CaFileError
    from compiler.cli.inputs import expand_paths
    from compiler.core.diagnostics import did_you_mean, render_human, summary_line, use_color

    files, missing = expand_paths(paths)
    if missing:
        raise CaFileError(f"no such file or directory: {missing[0]}")
    if not files:
        raise CaFileError("no .mesh files found in " + ", ".join(paths))
    result = api.compile(files, shard=False)
    if result.has_errors:
        color = use_color(sys.stderr)
        for d in result.diagnostics:
            print(render_human(d, color) + "\n", file=sys.stderr)
        raise CaError(f"the policy has errors ({summary_line(result.diagnostics)}): no certificate issued")
    program = result.ir
    assert program is not None  # lowered: there is no error
    names = [s.name for s in program.services]
    from compiler.ir.workloads import proxy_names, service_of

    if service not in names and service in proxy_names(program):   # a workload's sidecar: its service's identity
        service = service_of(service)
    if service not in names:
        hint = did_you_mean(service, names)
        raise CaError(f"no service `{service}` in the policy {', '.join(paths)}" + (f" ({hint})" if hint else ""))
    return program.service(service).identity


def _summary(info, out_dir: str, asked: dt.datetime) -> str:
    cut = " (cut to the CA's expiry)" if info.not_after < asked - dt.timedelta(seconds=1) else ""
    return f"{info.spiffe_id} serial {info.serial} valid until {_when(info.not_after)}{cut} into {out_dir}"


def _when(t: dt.datetime) -> str:
    from compiler.ca.certs import when

    return when(t)


def _span(delta: dt.timedelta) -> str:
    from compiler.ca.certs import span

    return span(delta)


def _positive(kind, maximum, minimum=None):
    """An argparse type: a number of `kind` in (0, maximum], or [minimum, maximum] (a hundred years
    is plenty, and keeps the dates within what certificates can carry)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not 0 < value <= maximum:
            raise argparse.ArgumentTypeError(f"expected a positive {'whole ' * (kind is int)}number "
                                             f"up to {maximum}, got `{text}`")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"expected at least {minimum:g}, got `{text}`: a certificate "
                                             "would expire before it is in use")
        return value
    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], such as 0.33, got `{text}`")
    return value
