"""Configs loaded in a child process, so that the serving process never imports pydantic.

Validation is runtime_proxy/config/loading.py's (pydantic in strict mode, then the semantic
checks), but pydantic and the compiled validators of the config models take about 9 MB that a
sidecar would carry for its whole life to use them once per (re)load. So the proxy forks: the
child imports the loader, validates the file and writes the validated config back through a pipe
as JSON (`model_dump`: every structural default, such as an empty list, filled in); the serving
process compiles that data into its table (runtime_proxy/decide/table.py).

Where `os.fork` does not exist, the config is loaded in-process instead.
"""

from __future__ import annotations

import json
import os
from typing import Any


class LoadError(Exception):
    """A config that cannot be used: `message` is loading.ConfigError's located message."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _child(path: str, w: int) -> None:
    try:
        from runtime_proxy.config import loading

        try:
            config = loading.load(path)
            out: dict[str, Any] = {"config": config.model_dump(mode="json")}
        except loading.ConfigError as err:
            out = {"error": err.message}
    except BaseException as err:  # a bug, or an import that failed: still a message, no traceback
        out = {"error": f"{path}: cannot load the config: {type(err).__name__}: {err}"}
    import orjson  # in the child only: the serving process reads the answer with json (no orjson: 1.3 MB of RSS)

    data = memoryview(orjson.dumps(out))
    while data:
        n = os.write(w, data)
        data = data[n:]
    os._exit(0)


def start(path: str) -> tuple[int, int]:
    """Fork the loading child; (child pid, read end of its pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        # drop the inherited sockets at once: a client connection the proxy closes meanwhile must
        # not stay open (no FIN) until this child exits
        os.closerange(3, w)
        os.closerange(w + 1, 1 << 16)
        _child(path, w)
    os.close(w)
    return pid, r


def finish(pid: int, payload: bytes) -> dict[str, Any]:
    """The child's answer: the validated config's JSON data, or LoadError."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    try:
        out = json.loads(payload)
    except ValueError:      # JSONDecodeError, and UnicodeDecodeError for an answer cut inside a character
        raise LoadError("the config loader stopped without an answer") from None
    if "error" in out:
        raise LoadError(out["error"])
    return out["config"]


def load(path: str) -> dict[str, Any]:
    """Load and validate the config at `path` (blocking): its JSON data, or LoadError."""
    if not hasattr(os, "fork"):  # pragma: no cover
        from runtime_proxy.config import loading

        try:
            config = loading.load(path)
        except loading.ConfigError as err:
            raise LoadError(err.message) from None
        return config.model_dump(mode="json")
    pid, r = start(path)
    chunks: list[bytes] = []
    while True:
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    return finish(pid, b"".join(chunks))
