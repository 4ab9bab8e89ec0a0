"""`python -m runtime_proxy CONFIG` (also `meshc proxy CONFIG`): run the native sidecar proxy.

Exit codes: 0 after a clean shutdown (SIGTERM or SIGINT, in-flight requests drained), 1 for a
config that cannot be used, identity files (mTLS) included (a located message, never a
traceback), 2 for a usage error or a listener that cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime_proxy.decide.table import Table
    from runtime_proxy.net.listener import TlsListener
    from runtime_proxy.net.reload import Done, Reloader
    from runtime_proxy.net.server import Downstream, Runtime, TlsDownstream
    from runtime_proxy.net.xds_link import XdsLink

EXIT_OK, EXIT_CONFIG, EXIT_USAGE = 0, 1, 2
MAX_WORKERS = 64

log = logging.getLogger("runtime_proxy")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's own, with the terminal's width found as `shutil.get_terminal_size` finds it, but
    without importing shutil: argparse makes a formatter for every `add_argument`, and shutil's
    imports (bz2, lzma) would then stay in every serving proxy (0.8 MB of RSS)."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ.get("COLUMNS", "0"))
        except ValueError:
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                columns = 0
        super().__init__(prog, width=(columns or 80) - 2)


def build_parser(prog: str = "python -m runtime_proxy") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, formatter_class=HelpFormatter,
                                description="Run the native sidecar proxy on a compiled "
                                "native config (SERVICE.native.json from `meshc compile --target native`).")
    p.add_argument("config", nargs="?", metavar="CONFIG", help="the config file to run")
    p.add_argument("--check-config", metavar="FILE",
                   help="validate FILE against the config's JSON Schema and semantic checks, print "
                        "every problem (JSON path: reason), exit 1 when invalid; runs nothing (with "
                        "--app-address: the config with its app there)")
    p.add_argument("--inbound-port", type=int, metavar="N",
                   help="override the inbound listener port (0: any free port)")
    p.add_argument("--outbound-port", type=int, metavar="N", help="override the outbound listener port")
    p.add_argument("--admin-port", type=int, metavar="N", help="override the admin listener port")
    p.add_argument("--app-address", metavar="HOST:PORT",
                   help="override where the inbound listener forwards to: the local application (the "
                        "config's `app`; a host that is not an IP address is resolved by DNS)")
    p.add_argument("--ports-file", metavar="PATH",
                   help="write the bound ports as JSON {inbound, outbound, admin, pid} once listening")
    p.add_argument("--access-log", metavar="PATH|-",
                   help="one JSON line per request to PATH (or - for stdout); off by default")
    p.add_argument("--identity-header", metavar="NAME",
                   help="take the caller's identity (SPIFFE ID) for authorization from this request "
                        "header; only behind a trusted mTLS terminator, or in tests. Ignored when "
                        "the config's mtls mode is strict or permissive: then the identity is the "
                        "verified client certificate's (default: none)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help=f"serve with N worker processes (1-{MAX_WORKERS}) sharing the listening ports "
                        "(SO_REUSEPORT), their circuit breakers, retry budgets and outlier detection, "
                        "behind one admin port (docs/native-proxy.md, \"Workers\"); default 1: one process")
    x = p.add_argument_group("control plane", "take the config (and the mTLS identity) from `meshc serve` over "
                             "xDS instead of a CONFIG file (docs/control-plane.md)")
    x.add_argument("--xds-server", metavar="HOST:PORT", action="append",
                   help="the `meshc serve` to subscribe to, once per replica (each new stream goes to the "
                        "next); a helper process holds the stream (needs the [control] extra: grpcio, "
                        "xds-protos); the proxy starts listening once the first config has arrived, or at "
                        "once from the config.json of --state-dir that it last applied")
    x.add_argument("--node", metavar="SERVICE", help="the node id: the service whose sidecar this is, or "
                   "SERVICE.SUBSET for a workload's own sidecar (required with --xds-server)")
    x.add_argument("--xds-identity", metavar="DIR",
                   help="mTLS on the xDS channel: DIR/cert.pem, key.pem, ca.pem (`meshc ca issue`); without "
                        "it, a plaintext channel")
    x.add_argument("--state-dir", metavar="DIR",
                   help="a private directory (made 0700) for the config received and the certificates "
                        "(files 0600); a restart with the same DIR serves its last config.json until a "
                        "server answers; default: a new temporary directory, removed at exit")
    return p


# A DNS name as the compiler takes one for `app` (RFC 1123 labels; compiler/language/endpoints.py)
_DNS_NAME = (r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
             r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z")


def parse_address(text: str) -> tuple[str, int] | None:
    """(host, port) of `HOST:PORT` (`[V6]:PORT` for IPv6; HOST an IPv4 address or an RFC 1123 DNS
    name), or None."""
    import ipaddress
    import re

    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        return None
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1])), int(port)
        except ValueError:
            return None
    if re.fullmatch(r"[0-9.]+", host):   # (256.1.1.1 is neither an address nor a name)
        try:
            return str(ipaddress.IPv4Address(host)), int(port)
        except ValueError:
            return None
    if not host.isascii() or not re.match(_DNS_NAME, host):
        return None
    return host, int(port)


def discovery(host: str) -> str:
    """How the proxy finds an address: `static` for an IP address, else `dns` (as the compiler decides)."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return "static"
    except ValueError:
        return "dns"


def check_config(path: str, app_address: tuple[str, int] | None = None) -> int:
    """`--check-config PATH`: the config as the proxy would run it (with `--app-address`, its `app` there)."""
    from runtime_proxy.config import loading

    app = None
    if app_address is not None:
        app = {"host": app_address[0], "port": app_address[1], "discovery": discovery(app_address[0])}
    problems = loading.check_with_schema(path, app)
    if not problems:
        with_app = f" (the application at {app_address[0]}:{app_address[1]})" if app_address else ""
        print(f"{path}: valid{with_app}")
        return EXIT_OK
    for line in problems:
        print(line if line.startswith(path) else f"{path}: {line}", file=sys.stderr)
    return EXIT_CONFIG


def main(argv: list[str] | None = None, prog: str = "python -m runtime_proxy") -> int:
    args = build_parser(prog).parse_args(argv)
    args.worker = None          # set in each worker of --workers N (runtime_proxy/workers.py)
    if not 1 <= args.workers <= MAX_WORKERS:
        print(f"{prog}: error: --workers {args.workers}: a number of worker processes from 1 to {MAX_WORKERS}",
              file=sys.stderr)
        return EXIT_USAGE
    if args.app_address is not None:
        app_address = parse_address(args.app_address)
        if app_address is None:
            print(f"{prog}: error: --app-address {args.app_address}: not HOST:PORT (HOST an IPv4 address, an IPv6 "
                  "address in brackets or a DNS name of letters, digits, `-` and dots; a port 1-65535)",
                  file=sys.stderr)
            return EXIT_USAGE
        args.app_address = app_address
    if args.check_config:
        return check_config(args.check_config, args.app_address)
    if args.xds_server is not None or args.node is not None:
        return main_xds(args, prog)
    if args.xds_identity is not None or args.state_dir is not None:
        print(f"{prog}: error: --xds-identity and --state-dir go with --xds-server", file=sys.stderr)
        return EXIT_USAGE
    if not args.config:
        print(f"{prog}: error: a CONFIG file is needed (or --check-config FILE)", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s runtime_proxy %(levelname)s %(message)s")
    if args.workers > 1:
        from runtime_proxy.workers import supervise

        return supervise(args, open_app, write_atomic)
    app = open_app(args, args.config)
    if isinstance(app, str):
        print(app, file=sys.stderr)
        return EXIT_CONFIG
    return app.run()


def open_app(args: argparse.Namespace, path: str, link: Any = None) -> ProxyApp | str:
    """The proxy on the config at `path`, or why it cannot run it (one line)."""
    # the config is validated in a child process: pydantic never enters this one (config/child.py)
    from runtime_proxy.config import child
    from runtime_proxy.decide.table import TableError, compile_config
    from runtime_proxy.net.tls import TlsError
    from runtime_proxy.net.tracing import TracingError

    try:
        data = child.load(path)
        if args.app_address is not None:   # --app-address: the application elsewhere than the config says
            host, port = args.app_address
            data["app"] = {**data["app"], "host": host, "port": port, "discovery": discovery(host)}
        table = compile_config(data)
        return ProxyApp(args, table, data, link)
    except child.LoadError as err:
        return err.message
    except TableError as err:
        return f"{path}: invalid config: {err}"
    except TlsError as err:
        return f"{path}: cannot use the identity files (mtls): {err.message}"
    except TracingError as err:
        return f"{path}: {err.message}"


def check_startable(path: str) -> tuple[bool, str]:
    """(True, what) when the config at `path` loads and compiles, else (False, why)."""
    from runtime_proxy.config import child
    from runtime_proxy.decide.table import TableError, compile_config

    try:
        table = compile_config(child.load(path))
    except child.LoadError as err:
        return False, err.message
    except TableError as err:
        return False, f"{path}: invalid config: {err}"
    return True, f"version {table.version} applied"


def main_xds(args: argparse.Namespace, prog: str) -> int:
    """`--xds-server HOST:PORT --node SERVICE`: the config comes from the server, through the
    helper process of net/xds_link.py, into STATE/config.json; then the proxy runs as from a file."""
    import shutil
    import tempfile

    from runtime_proxy.net.xds_link import Stop, XdsLink

    if args.config:
        print(f"{prog}: error: a CONFIG file and --xds-server exclude each other", file=sys.stderr)
        return EXIT_USAGE
    if not args.xds_server or not args.node:
        print(f"{prog}: error: --xds-server HOST:PORT and --node SERVICE go together", file=sys.stderr)
        return EXIT_USAGE
    for address in args.xds_server:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            print(f"{prog}: error: --xds-server {address}: not HOST:PORT", file=sys.stderr)
            return EXIT_USAGE
        if args.xds_server.count(address) > 1:
            print(f"{prog}: error: --xds-server {address}: given twice (once per replica)", file=sys.stderr)
            return EXIT_USAGE
    if args.xds_identity is not None:
        missing = [n for n in ("cert.pem", "key.pem", "ca.pem")
                   if not os.path.isfile(os.path.join(args.xds_identity, n))]
        if missing:
            print(f"{prog}: error: --xds-identity {args.xds_identity}: no {', '.join(missing)}", file=sys.stderr)
            return EXIT_USAGE
    import importlib.util

    # the helper needs the [control] extra; find it without importing it into this process
    if importlib.util.find_spec("grpc") is None or importlib.util.find_spec("envoy") is None:
        print(f"{prog}: error: --xds-server needs grpcio and xds-protos, which are not installed: "
              "pip install 'meshc[control]'", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s runtime_proxy %(levelname)s %(message)s")
    temporary = args.state_dir is None
    try:
        if temporary:
            state_dir = tempfile.mkdtemp(prefix=f"meshc-proxy-{args.node}-")   # made 0700
        else:
            state_dir = os.path.abspath(args.state_dir)
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            os.chmod(state_dir, 0o700)
    except OSError as err:
        print(f"{prog}: error: --state-dir {args.state_dir}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    args.config = os.path.join(state_dir, "config.json")
    link = XdsLink(args.xds_server, args.node, state_dir, args.xds_identity, args.log_level)
    apps: list[ProxyApp] = []

    def start(path: str) -> tuple[bool, str]:
        if args.workers > 1:    # the supervisor only checks it; its workers open it (runtime_proxy/workers.py)
            return check_startable(path)
        app = open_app(args, path, link)
        if isinstance(app, str):
            return False, app
        apps.append(app)
        return True, f"version {app.rt.table.version} applied"

    def stop(signum: int, frame: object) -> None:
        raise Stop

    handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            last = None if temporary else last_config(args.config, args.node, start)
            if last is not None:
                link.started_from(last)
            else:
                link.first(start)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if args.workers > 1:
            from runtime_proxy.workers import supervise

            return supervise(args, open_app, write_atomic, link)
        return apps[0].run()
    except Stop:
        log.info("stopped before the first config")
        return EXIT_OK
    finally:
        link.stop()
        if temporary:
            shutil.rmtree(state_dir, ignore_errors=True)


def last_config(path: str, node: str, start: Callable[[str], tuple[bool, str]]) -> str | None:
    """The SHA-256 of the config.json of --state-dir when it is the config of `node`'s service
    (node `SERVICE` or `SERVICE.SUBSET`: its `"service"` is SERVICE) and it starts (`start`: the
    ordinary checks, as for any config), and the proxy serves it until a server answers; None when
    there is none, it is another service's, or it cannot start (then the proxy waits for the server)."""
    import hashlib

    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        log.error("the last config %s cannot be read (%s); waiting for the xDS server", path, err.strerror or err)
        return None
    sha = hashlib.sha256(text).hexdigest()
    service = node.partition(".")[0]
    try:
        saved = json.loads(text).get("service")
    except (ValueError, AttributeError):   # not a JSON object: `start` says what is wrong with it
        saved = service
    if saved != service:
        log.error("the last config %s is the config of service %s, not of --node %s; not served, waiting for the "
                  "xDS server", path, json.dumps(saved), node)
        return None
    ok, message = start(path)
    if not ok:
        log.error("the last config cannot start, waiting for the xDS server: %s", " ".join(message.split()))
        return None
    log.info("serving the last config %s (%s) until an xDS server answers", path, message)
    return sha


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # the default loop works, only slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ProxyApp:
    """The listeners, the reloader and the signal handlers around one Runtime."""

    def __init__(self, args: argparse.Namespace, table: Table, data: dict[str, Any],
                 link: XdsLink | None = None) -> None:
        self.args = args
        self.link = link   # --xds-server: the helper process that brings new configs
        self.config_path = args.config
        self.loop = new_loop()
        from runtime_proxy.net.server import Runtime

        # a worker of --workers N shares breakers and outlier detection (runtime_proxy/workers.py)
        shared = args.worker.region if args.worker is not None else None
        self.rt = Runtime(self.loop, table, data, access_log=args.access_log,
                          identity_header=args.identity_header, shared=shared)
        self.servers: dict[str, asyncio.Server | TlsListener] = {}
        self.reloader: Reloader | None = None
        self.stopping = False
        self.sweeper: asyncio.TimerHandle | None = None

    # ---- start --------------------------------------------------------------------------------

    def listen(self) -> dict[str, int]:
        from runtime_proxy.net.admin import AdminProtocol
        from runtime_proxy.net.listener import ip_literal, listening_socket

        Downstream = self.downstream_classes()[0]
        rt, loop, args = self.rt, self.loop, self.args
        lst = rt.table.listeners
        # a worker of --workers N: the ports are shared (SO_REUSEPORT), its admin is private
        worker = args.worker
        reuse_port = worker is not None
        admin_host = lst.admin[0] if worker is None else "127.0.0.1"
        plan = {
            "inbound": (lst.inbound[0], lst.inbound[1] if args.inbound_port is None else args.inbound_port,
                        lambda: Downstream(rt, "inbound")),
            "outbound": (lst.outbound[0], lst.outbound[1] if args.outbound_port is None else args.outbound_port,
                         lambda: Downstream(rt, "outbound")),
            "admin": (admin_host, lst.admin[1] if args.admin_port is None else args.admin_port,
                      lambda: AdminProtocol(self)),
        }
        ports: dict[str, int] = {}
        for name, (host, port, factory) in plan.items():
            if name == "inbound" and rt.table.mtls_mode != "disable":
                server: asyncio.Server | TlsListener = self.tls_listener(host, port, reuse_port=reuse_port)
            elif ip_literal(host):   # (the usual case: no name to resolve, net/listener.py says why)
                sock = listening_socket(host, port, reuse_port and name != "admin")
                server = loop.run_until_complete(loop.create_server(factory, sock=sock, backlog=2048))
            elif reuse_port and name != "admin":
                server = loop.run_until_complete(
                    loop.create_server(factory, host, port, reuse_address=True, reuse_port=True, backlog=2048))
            else:
                server = loop.run_until_complete(
                    loop.create_server(factory, host, port, reuse_address=True, backlog=2048))
            self.servers[name] = server
            ports[name] = server.sockets[0].getsockname()[1]
        self.inbound_address = (lst.inbound[0], ports["inbound"])
        rt.metrics.inbound_address = f"{lst.inbound[0]}_{ports['inbound']}"     # Envoy's spelling
        return ports

    def tls_listener(self, host: str, port: int, sock: socket.socket | None = None,
                     reuse_port: bool = False) -> TlsListener:
        """The inbound listener for mode strict or permissive (runtime_proxy/net/listener.py)."""
        from runtime_proxy.net.listener import TlsListener

        Downstream, TlsDownstream = self.downstream_classes()
        rt = self.rt
        return TlsListener(self.loop, rt, host, port, lambda: Downstream(rt, "inbound"),
                           lambda own_id: TlsDownstream(rt, own_id), sock=sock, reuse_port=reuse_port)

    def downstream_classes(self) -> tuple[type[Downstream], type[TlsDownstream]]:
        """The client-side protocols: a worker of --workers N counts its connections against the
        listener limit shared by all workers (net/shared.py)."""
        from runtime_proxy.net.server import Downstream, TlsDownstream

        worker = self.args.worker
        if worker is None:
            return Downstream, TlsDownstream
        return worker.region.downstream_class(Downstream), worker.region.downstream_class(TlsDownstream)

    def config_applied(self, old: Table) -> None:
        """After a reload: a sidecar that turns mTLS on needs the TLS listener in place of the
        loop's own server, on the same port (TLS turned off is served by the TLS listener too)."""
        from runtime_proxy.net.listener import TlsListener

        if self.rt.table.mtls_mode == "strict":
            ended = self.rt.end_plaintext_inbound()
            if ended:
                log.info("inbound listener: now strict; %d plaintext connection(s) closed once idle", ended)
        server = self.servers.get("inbound")
        if self.rt.table.mtls_mode == "disable" or server is None or isinstance(server, TlsListener):
            return
        # Take the listening socket over (a duplicate of its descriptor outlives the loop's server),
        # so the port never closes and nothing can take it meanwhile.
        old_sock = server.sockets[0]
        sock = socket.socket(old_sock.family, socket.SOCK_STREAM, fileno=os.dup(old_sock.fileno()))
        server.close()
        host, port = self.inbound_address
        self.servers["inbound"] = self.tls_listener(host, port, sock)
        log.info("inbound listener: now mTLS (%s)", self.rt.table.mtls_mode)

    def run(self) -> int:
        from runtime_proxy.net.reload import Reloader

        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            ports = self.listen()
        except OSError as err:
            print(f"runtime_proxy: error: cannot listen: {err.strerror or err}", file=sys.stderr)
            self.close_servers()
            return EXIT_USAGE
        rt = self.rt
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.shutdown, sig.name)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_logs)
        # from a server, the file changes only when the helper says so (and waits for the outcome)
        poll = self.link is None and (self.args.worker is None or self.args.worker.poll)
        self.reloader = Reloader(self, self.config_path, loop, poll=poll)
        self.reloader.start()
        if self.link is not None:
            self.link.attach(self, loop)
        self.sweeper = loop.call_later(1.0, self.sweep)

        def announce() -> None:
            # Said from inside the running loop: uvloop starts watching for signals in run_forever,
            # and a SIGTERM sent between add_signal_handler and then was lost. Whoever waits for
            # the ports file (or this line) may signal the proxy at once.
            if self.args.ports_file:
                write_atomic(self.args.ports_file, json.dumps(dict(ports, pid=os.getpid())))
            log.info("listening: inbound %s:%d, outbound %s:%d, admin %s:%d; service %s, config version %s",
                     plan_host(rt, "inbound"), ports["inbound"], plan_host(rt, "outbound"), ports["outbound"],
                     plan_host(rt, "admin"), ports["admin"], rt.table.service, rt.table.version)

        loop.call_soon(announce)
        # Long-lived start-up objects (config, tables) never become garbage: move them out of the
        # collector's way, and collect young objects less often (requests make few cycles).
        gc.enable()              # (`meshc proxy` runs inside a command that turned it off)
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        try:
            loop.run_forever()
        finally:
            self.close_servers()
            if rt.access_log is not None:
                rt.access_log.close()
            if rt.tracer is not None:
                rt.tracer.close()
            loop.close()
        log.info("stopped")
        return EXIT_OK

    def reopen_logs(self) -> None:
        """SIGUSR1 (as Envoy's): the access log is reopened at the next sweep."""
        if self.rt.access_log is not None:
            self.rt.access_log.reopen_asked = True

    def sweep(self) -> None:
        self.rt.sweep()
        self.sweeper = self.loop.call_later(1.0, self.sweep)

    # ---- admin hooks --------------------------------------------------------------------------

    def admin_request(self, method: str, path: str, query: str) -> tuple[int, bytes, str]:
        from runtime_proxy.net.admin import handle

        return handle(self, method, path, query)

    def reload(self, reason: str, done: Done | None = None) -> None:
        self.reloader.reload(reason, done)  # type: ignore[union-attr]  # run() made it, before serving

    # ---- stop ---------------------------------------------------------------------------------

    def shutdown(self, reason: str) -> None:
        """Stop accepting, drain in-flight requests (up to proxy.drain_timeout_ms), then exit."""
        if self.stopping:
            return
        self.stopping = True
        rt = self.rt
        log.info("%s: draining %d request(s), up to %.1f s", reason, rt.active_requests(), rt.drain_timeout)
        for name in ("inbound", "outbound"):
            server = self.servers.get(name)
            if server is not None:
                server.close()
        rt.start_drain()
        if self.reloader is not None:
            self.reloader.stop()
        if self.link is not None:
            self.link.stop()
        deadline = self.loop.time() + rt.drain_timeout

        def check() -> None:
            if rt.active_requests() == 0 or self.loop.time() >= deadline:
                left = rt.active_requests()
                if left:
                    log.warning("drain timeout: %d request(s) cut off", left)
                for down in list(rt.downstreams):
                    down.close()
                self.loop.call_later(0.01, self.loop.stop)
                return
            self.loop.call_later(0.02, check)

        check()

    def close_servers(self) -> None:
        for server in self.servers.values():
            server.close()


def plan_host(rt: Runtime, listener: str) -> str:
    return getattr(rt.table.listeners, listener)[0]


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
