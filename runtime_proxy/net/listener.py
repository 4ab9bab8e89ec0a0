"""The inbound listener of a sidecar with mTLS (mode strict or permissive).

The event loop's own server cannot do this: with `create_server(ssl=...)` a failed handshake is
invisible (no callback, nothing to count or log), and a permissive port must look at the first
byte before it knows whether to speak TLS at all (uvloop starts reading before connection_made
returns, so a protocol cannot peek). So this listener accepts itself, waits until the client
has sent something, peeks at the first byte (0x16 opens a TLS handshake record), and hands the
socket to the loop with the current server context, or without TLS for a plaintext client of a
permissive port. A strict port closes a plaintext client at once. Handshake failures are
counted by reason and logged, one line each (at most LOG_PER_SECOND lines a second).

The context is taken per connection from the active identity (tls.Identities.current), so a
rotation reaches the next handshake and never a connection already open. A sidecar in mode
`disable` keeps the loop's own server (runtime_proxy/__main__.py): the plaintext fast path.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runtime_proxy.decide.identity import TLS_HANDSHAKE, accepts
from runtime_proxy.net.tls import HANDSHAKE_TIMEOUT, describe, failure_reason

if TYPE_CHECKING:
    from runtime_proxy.net.metrics import TlsStats
    from runtime_proxy.net.server import Runtime

log = logging.getLogger("runtime_proxy")


def ip_literal(host: str) -> bool:
    """Whether `host` is an IPv4 or IPv6 address rather than a name."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except (OSError, ValueError):
        return False
    return True


def listening_socket(host: str, port: int, reuse_port: bool = False, backlog: int = 2048) -> socket.socket:
    """A socket listening on host:port (an IP address), set up as the event loop's `create_server`
    sets up its own (SO_REUSEADDR; IPv6 only on an IPv6 address). Made here because uvloop's
    `create_server(host, port)` encodes the host with the `idna` codec, whose tables
    (unicodedata, stringprep) would then stay in every serving proxy: 0.65 MB of RSS."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:          # a worker of --workers N: the port is shared
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


FIRST_BYTE_TIMEOUT = 15.0     # Envoy's listener_filters_timeout: a client that sends nothing is closed
LOG_PER_SECOND = 10           # refusal log lines a second (the metric counts all of them)


class TlsListener:
    """Accepts inbound connections for `rt` (server.Runtime) on host:port; the mode is read from
    the active config for each connection, so a reload may switch strict and permissive."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rt: Runtime, host: str, port: int,
                 plain_factory: Callable[[], asyncio.BaseProtocol], tls_factory: Callable[[str], asyncio.BaseProtocol],
                 backlog: int = 2048, sock: socket.socket | None = None, reuse_port: bool = False) -> None:
        """`sock`: a listening socket to take over (a reload that turns mTLS on keeps the port
        open, so no connection is refused and there is no bind to fail); else bind host:port."""
        self.loop = loop
        self.rt = rt
        self.plain_factory = plain_factory      # () -> protocol for a plaintext client
        self.tls_factory = tls_factory          # (own SPIFFE ID) -> protocol for an mTLS client
        if sock is None:
            sock = listening_socket(host, port, reuse_port, backlog)
        sock.setblocking(False)
        self.sockets = [sock]                   # as asyncio.Server's, for the bound port
        self.task: asyncio.Task[None] | None = loop.create_task(self._accept(sock))
        self.handling: set[asyncio.Task[None]] = set()
        self.log_window = 0
        self.log_count = 0

    def close(self) -> None:
        """Stop accepting (connections already open go on)."""
        if self.task is not None:
            self.task.cancel()
            self.task = None
        for sock in self.sockets:
            sock.close()
        for task in list(self.handling):        # clients still in their handshake
            task.cancel()

    async def _accept(self, lsock: socket.socket) -> None:
        loop = self.loop
        while True:
            try:
                sock, addr = await loop.sock_accept(lsock)
            except asyncio.CancelledError:
                raise
            except OSError as err:          # out of file descriptors, most likely: breathe, go on
                log.error("inbound listener: accept failed: %s", err.strerror or err)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._handle(sock, addr))
            self.handling.add(task)
            task.add_done_callback(self.handling.discard)

    async def _handle(self, sock: socket.socket, addr: Any) -> None:
        loop = self.loop
        stats: TlsStats = self.rt.metrics.tls  # type: ignore[assignment]  # a TLS listener: TLS stats exist
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.rt.table.mtls_mode == "disable":    # a reload turned TLS off: plaintext only
                await loop.connect_accepted_socket(self.plain_factory, sock)
                return
            first = await self._first_byte(sock)
        except (TimeoutError, OSError):
            sock.close()
            return
        except asyncio.CancelledError:
            sock.close()
            raise
        if not first:                   # closed before a byte
            sock.close()
            return
        mode = self.rt.table.mtls_mode
        if first[0] != TLS_HANDSHAKE:
            if not accepts(mode, tls=False):   # strict
                stats.failed("downstream", "not_tls")
                self._refused(addr, "not_tls", "plaintext on a strict mTLS port")
                sock.close()
                return
            stats.plaintext += 1        # permissive: plain HTTP on the same port
            try:
                await loop.connect_accepted_socket(self.plain_factory, sock)
            except OSError:
                sock.close()
            return
        tls = self.rt.tls
        if tls is None:                 # cannot happen (a TLS mode needs identity files); never plaintext
            sock.close()
            return
        identity = tls.current
        try:
            await loop.connect_accepted_socket(lambda: self.tls_factory(identity.uri), sock, ssl=identity.server,
                                               ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except asyncio.CancelledError:
            sock.close()
            raise
        except (TimeoutError, OSError, EOFError) as err:   # ssl.SSLError is an OSError
            reason = failure_reason(err)
            stats.failed("downstream", reason)
            self._refused(addr, reason, describe(err))
            sock.close()

    async def _first_byte(self, sock: socket.socket) -> bytes:
        """Wait until the client sent something; its first byte, left in the socket (b"": closed)."""
        loop = self.loop
        fut = loop.create_future()
        fd = sock.fileno()

        def readable() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await asyncio.wait_for(fut, FIRST_BYTE_TIMEOUT)
        finally:
            loop.remove_reader(fd)
        return sock.recv(1, socket.MSG_PEEK)

    def _refused(self, addr: Any, reason: str, detail: str) -> None:
        now = int(time.monotonic())
        if now != self.log_window:
            if self.log_count > LOG_PER_SECOND:
                log.warning("inbound TLS: %d more refusal(s) not logged", self.log_count - LOG_PER_SECOND)
            self.log_window = now
            self.log_count = 0
        self.log_count += 1
        if self.log_count <= LOG_PER_SECOND:
            peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and len(addr) >= 2 else str(addr)
            log.warning("inbound TLS from %s refused: %s (%s)", peer, reason, detail)
