"""The serving process's side of `meshc proxy --xds-server`: the xDS client helper process.

The proxy does not speak gRPC (docs/control-plane.md, "The native proxy"): it spawns
`python -m runtime_proxy.xds_client` (a new process, started by fork+exec from a process that
never imported grpc) and talks to it over two pipes, one JSON object a line:

    helper -> proxy (its stdout)   {"apply": N, "path": STATE/config.json, "sha": SHA-256 of the file}
    proxy -> helper (its stdin)    {"applied": N, "ok": true|false, "message": "..."}

An `apply` goes through the proxy's own reload path (net/reload.py: validated in a child, compiled,
identity files loaded; refused as a whole or applied for new requests), and the helper ACKs or
NACKs the server's response by its answer. A file whose SHA-256 is the one the proxy runs is
answered at once (`unchanged`), without a reload: a helper that restarts, or reconnects to
another server with the same versions, changes nothing.

Before the first config the proxy does not listen (the listeners' addresses are in the config):
`first()` waits, as long as it takes, for a config that starts; unless the state directory holds
the config.json the proxy last applied and it starts (`started_from`): then the proxy serves it
at once and the helper brings it up to date when a server answers. When the helper dies, the proxy
keeps serving its last config and starts a new helper after a backoff (0.5 s, doubled up to 30 s,
back to 0.5 s after a helper that lived 30 s). When the proxy stops, it closes the helper's stdin,
and the helper exits.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("runtime_proxy")

BACKOFF_FIRST, BACKOFF_MAX, HEALTHY_SECONDS = 0.5, 30.0, 30.0


class Stop(Exception):
    """SIGTERM or SIGINT while waiting for the first config."""


class XdsLink:
    def __init__(self, servers: list[str], node: str, state_dir: str, identity_dir: str | None,
                 log_level: str) -> None:
        self.servers = servers
        self.node = node
        self.state_dir = state_dir
        self.identity_dir = identity_dir
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.delay = BACKOFF_FIRST
        self.buffer = b""
        self.applied_sha: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app: Any = None
        self.stopping = False

    # ---- the helper process -----------------------------------------------------------------------

    def spawn(self) -> None:
        cmd = [sys.executable, "-m", "runtime_proxy.xds_client", "--node", self.node,
               "--state-dir", self.state_dir, "--log-level", self.log_level]
        for server in self.servers:
            cmd += ["--xds-server", server]
        if self.identity_dir is not None:
            cmd += ["--xds-identity", self.identity_dir]
        if self.applied_sha is not None:   # what the proxy runs: the helper restores it after a NACK
            cmd += ["--running", self.applied_sha]
        env = dict(os.environ)
        env.setdefault("GRPC_VERBOSITY", "NONE")   # gRPC's own log lines: only when asked for
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.started = time.monotonic()
        self.buffer = b""

    def _ended(self) -> float:
        """The helper closed its stdout: reap it; the delay before the next one."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:   # its stdout closed: it is ending (or broken); never wait on it
            proc.kill()
        code = proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        if time.monotonic() - self.started >= HEALTHY_SECONDS:
            self.delay = BACKOFF_FIRST
        delay, self.delay = self.delay, min(self.delay * 2, BACKOFF_MAX)
        log.warning("xDS client (pid %d) exited with code %s; keeping the current config, a new one in %.1f s",
                    proc.pid, code, delay)
        return delay

    def _read(self) -> list[dict[str, Any]] | None:
        """The complete messages the helper has written; None at its end."""
        assert self.proc is not None and self.proc.stdout is not None
        try:
            data = os.read(self.proc.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return []
        if not data:
            return None
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        out = []
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and isinstance(msg.get("apply"), int) and isinstance(msg.get("path"), str):
                out.append(msg)
        return out

    def reply(self, msg: dict[str, Any], ok: bool, message: str) -> None:
        """Answer an apply; the message on one line (a located config error has one line per problem)."""
        message = " ".join(line.strip() for line in message.splitlines())
        proc = self.proc
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(json.dumps({"applied": msg["apply"], "ok": ok, "message": message}).encode() + b"\n")
            proc.stdin.flush()
        except (OSError, ValueError):   # the helper is gone: its successor asks again
            pass

    # ---- before serving: the first config -----------------------------------------------------------

    def first(self, start: Callable[[str], tuple[bool, str]]) -> None:
        """Wait for the helper's first config that `start(path)` accepts ((ok, message)); raises
        Stop when a signal ends the wait."""
        log.info("waiting for the first config from the xDS server %s (node %s)", ", ".join(self.servers), self.node)
        self.spawn()
        while True:
            assert self.proc is not None and self.proc.stdout is not None
            ready, _, _ = select.select([self.proc.stdout.fileno()], [], [], 1.0)
            if not ready:
                continue
            msgs = self._read()
            if msgs is None:
                time.sleep(self._ended())
                self.spawn()
                continue
            for msg in msgs:
                ok, message = start(msg["path"])
                self.reply(msg, ok, message)
                if ok:
                    self.applied_sha = msg.get("sha")
                    return
                log.error("the first config from the xDS server cannot start: %s", message)

    def started_from(self, sha: str) -> None:
        """The proxy started from the state directory's config.json (SHA-256 `sha`), before any
        server answered: the helper's first config with that SHA-256 is `unchanged`."""
        self.applied_sha = sha
        self.spawn()

    # ---- while serving ----------------------------------------------------------------------------------

    def attach(self, app: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Read the helper on `loop`; each config goes through `app.reload` (net/reload.py)."""
        self.app, self.loop = app, loop
        self._watch()

    def _watch(self) -> None:
        assert self.loop is not None and self.proc is not None and self.proc.stdout is not None
        self.loop.add_reader(self.proc.stdout.fileno(), self._readable)

    def _readable(self) -> None:
        assert self.loop is not None and self.proc is not None and self.proc.stdout is not None
        msgs = self._read()
        if msgs is None:
            self.loop.remove_reader(self.proc.stdout.fileno())
            if not self.stopping:
                self.loop.call_later(self._ended(), self._respawn)
            return
        for msg in msgs:
            self._apply(msg)

    def _apply(self, msg: dict[str, Any]) -> None:
        sha = msg.get("sha")
        if sha is not None and sha == self.applied_sha:
            self.reply(msg, True, "unchanged")
            return

        def done(ok: bool, message: str) -> None:
            if ok:
                self.applied_sha = sha
            self.reply(msg, ok, message)

        self.app.reload("xDS", done)

    def _respawn(self) -> None:
        if self.stopping:
            return
        self.spawn()
        self._watch()

    def forget(self) -> None:
        """In a forked worker of --workers N: let go of the helper's pipes (the supervisor holds
        the one stream), so the helper sees its stdin close when the supervisor closes it."""
        proc, self.proc, self.stopping = self.proc, None, True
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    os.close(pipe.fileno())

    def stop(self) -> None:
        """Close the helper's stdin (it exits), and wait for it briefly."""
        self.stopping = True
        proc = self.proc
        if proc is None:
            return
        if self.loop is not None and proc.stdout is not None and not proc.stdout.closed:
            try:
                self.loop.remove_reader(proc.stdout.fileno())
            except (RuntimeError, ValueError):   # the loop is closed already
                pass
        if proc.poll() is None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
