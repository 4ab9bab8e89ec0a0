"""Hot reload: SIGHUP, or the config file replaced or changed (polled every 0.5 s).

The file is polled by `os.stat` (inode, modification time, size): an atomic rename onto the
path changes the inode, an edit in place the time or size. A poll costs one system call, which
is cheaper than keeping a watcher thread. A new config is validated by a child process
(runtime_proxy/config/child.py) whose answer the event loop reads as it comes, then compiled; only when
both succeed does it replace the active one, for new requests (in-flight requests finish under
the config they started with). A config that fails is refused and logged, and the last good
config keeps serving.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from runtime_proxy.config import child
from runtime_proxy.decide.table import TableError, compile_config
from runtime_proxy.net.tls import TlsError
from runtime_proxy.net.tracing import TracingError

if TYPE_CHECKING:
    import asyncio

    from runtime_proxy.decide.table import Table
    from runtime_proxy.net.server import Runtime

log = logging.getLogger("runtime_proxy")

POLL_SECONDS = 0.5

Done = Callable[[bool, str], None]      # done(applied, message): told how a reload ended


class ReloadApp(Protocol):
    """What a reload changes (__main__.ProxyApp, which imports this module)."""
    @property
    def rt(self) -> Runtime: ...
    def config_applied(self, old: Table) -> None: ...


def file_state(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Reloader:
    """Watches the config file and reloads it; at most one load runs at a time."""

    def __init__(self, app: ReloadApp, path: str, loop: asyncio.AbstractEventLoop, poll: bool = True) -> None:
        self.app = app
        self.polling = poll   # False: only SIGHUP and reload() (a config from xDS: net/xds_link.py)
        self.path = path
        self.loop = loop
        self.state = file_state(path)
        self.handle: asyncio.TimerHandle | None = None
        # (child pid, pipe fd, chunks, reason, callbacks) of the running load
        self.pending: tuple[int, int, list[bytes], str, list[Done | None]] | None = None
        self.again: list[tuple[str, Done | None]] = []   # reloads asked for while one was running

    def start(self) -> None:
        try:
            self.loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
        if self.polling:
            self.handle = self.loop.call_later(POLL_SECONDS, self.poll)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def poll(self) -> None:
        state = file_state(self.path)
        if state is not None and state != self.state:
            self.state = state
            self.reload("file changed")
        self.handle = self.loop.call_later(POLL_SECONDS, self.poll)

    def reload(self, reason: str, done: Done | None = None) -> None:
        """Load, compile and apply the config file, without blocking the event loop (the child
        that validates it is read as it answers). `done(applied, message)` is called at the end."""
        if self.pending is not None:     # one at a time; the file may change again meanwhile
            self.again.append((reason, done))
            return
        self.state = file_state(self.path) or self.state
        try:
            pid, fd = child.start(self.path)
        except OSError as err:
            self._finished(reason, [done], False, f"config reload ({reason}) failed: cannot start the loader: {err}")
            return
        self.pending = (pid, fd, [], reason, [done])
        self.loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        pid, fd, chunks, reason, dones = self.pending  # type: ignore[misc]  # read only while a load is pending
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if data:
            chunks.append(data)
            return
        self.loop.remove_reader(fd)
        os.close(fd)
        self.pending = None
        rt = self.app.rt
        old = rt.table
        try:
            config_data = child.finish(pid, b"".join(chunks))
            table = compile_config(config_data)
            rt.apply(table, config_data)     # changes nothing when it raises (identity files)
        except (child.LoadError, TableError, TlsError, TracingError) as err:
            rt.metrics.reloads_rejected += 1
            if isinstance(err, TlsError):
                text = f"cannot use the identity files (mtls): {err.message}"
            elif isinstance(err, TracingError):
                text = err.message
            else:
                text = err.message if isinstance(err, child.LoadError) else str(err)
            self._finished(reason, dones, False,
                           f"config reload ({reason}) refused, still serving version {rt.table.version}: {text}")
        else:
            if table.listeners != old.listeners:
                log.warning("config reload (%s): listener addresses changed; they apply at the next start", reason)
            self.app.config_applied(old)
            rt.metrics.reloads_ok += 1
            self._finished(reason, dones, True,
                           f"config reload ({reason}): version {table.version} applied (was {old.version})")
        if self.again:   # asked for while this one ran: once more, for all of them
            queued, self.again = self.again, []
            self.reload(queued[0][0], queued[0][1])
            if self.pending is not None:
                self.pending[4].extend(d for _, d in queued[1:])

    def _finished(self, reason: str, dones: list[Done | None], ok: bool, message: str) -> None:
        if ok:
            log.info("%s", message)
        else:
            log.error("%s", message)
        for done in dones:
            if done is not None:
                done(ok, message)
