"""What the serving proxy keeps in memory (issue 19: RSS at most 0.45x Envoy's, docs/benchmarks.md).

A plaintext proxy that has served requests (a split, which draws, and a local reply, which needs
a reason phrase) has not imported the modules it does not need: shutil's compressors (argparse
reaches for shutil to learn the terminal's width), the `idna` codec's tables (uvloop encodes a
listener's host with it), random.py and the http.HTTPStatus enum, nor pydantic and orjson (the
config is validated in a child process). Each costs the process a few hundred KB of RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from http import HTTPStatus

import pytest
from proxy_backend import Backend
from proxy_harness import ROOT, config, get, route, service, subset, write_config

from runtime_proxy.decide.http import reason_phrase

# Runs the proxy in its own process, and when the test says so (a file appears) writes the names
# of the modules it has imported, then stops itself (os, time, threading and signal are loaded by
# then anyway).
SERVE = """
import os, signal, sys, threading, time
import runtime_proxy.__main__ as proxy
go, out = sys.argv[1], sys.argv[2]
def report():
    while not os.path.exists(go):
        time.sleep(0.02)
    with open(out, "w") as fh:
        fh.write("\\n".join(sorted(sys.modules)))
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=report, daemon=True).start()
sys.exit(proxy.main(sys.argv[3:]))
"""

NOT_SERVING = ("shutil", "bz2", "lzma", "encodings.idna", "unicodedata", "stringprep", "random", "http",
               "pydantic", "orjson", "tempfile", "datetime")


def test_a_serving_plaintext_proxy_does_not_import_what_it_does_not_use(tmp_path):
    a, b = Backend("a"), Backend("b")
    try:
        svc = service("svc", [subset("v1", [a.port], "svc"), subset("v2", [b.port], "svc")],
                      [route("split", split=[(("svc", "v1"), 50), (("svc", "v2"), 50)])])
        path = write_config(tmp_path / "cfg.json", config([svc], app_port=a.port))
        ports_file, go, out = tmp_path / "ports.json", tmp_path / "go", tmp_path / "modules"
        env = dict(os.environ, PYTHONPATH=ROOT)
        proc = subprocess.Popen([sys.executable, "-c", SERVE, str(go), str(out), path, "--ports-file",
                                 str(ports_file), "--log-level", "warning"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 15
            while not ports_file.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            ports = json.loads(ports_file.read_text())
            answered = {json.loads(get(ports["outbound"], "/x").body)["backend"] for _ in range(20)}
            assert answered == {"a", "b"}                             # the split drew both ways
            assert get(ports["outbound"], "/", host="nowhere").status == 404  # a local reply
            go.write_text("")
            assert proc.wait(timeout=15) == 0, proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
        loaded = set(out.read_text().split("\n"))
        assert "runtime_proxy.net.server" in loaded and "uvloop" in loaded
        assert sorted(m for m in loaded if m.split(".")[0] in NOT_SERVING or m in NOT_SERVING) == []
    finally:
        a.stop()
        b.stop()


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the table is Python 3.11's phrases")
def test_the_reason_phrases_are_python_311s():
    for status in HTTPStatus:
        assert reason_phrase(status.value) == status.phrase
    assert reason_phrase(299) == reason_phrase(999) == "Unknown"


def test_a_forked_worker_draws_its_own_numbers():
    """The proxy's generator is reseeded in each forked worker of --workers N, as random.py's own
    is: without it every worker would draw the same sequence."""
    from runtime_proxy.net import exchange

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: its next draws, then out without running anything of pytest's
        os.write(write, repr([exchange._random() for _ in range(4)]).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as fh:
        theirs = fh.read()
    assert theirs != repr([exchange._random() for _ in range(4)])
