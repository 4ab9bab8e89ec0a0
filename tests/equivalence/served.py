"""The live layer's data planes fed by the control plane: `meshc serve` over ADS instead of files.

`ServedEnvoyPlane` has the interface of `dataplanes.EnvoyPlane` (`compile`, `swap`, `stop`,
`ports`, `envoy`), so `dataplanes.Session(first, envoy=ServedEnvoyPlane)` runs the same policies
and requests through it, compared with the native proxy as ever. One `meshc serve` subprocess
and one real Envoy (from `meshc compile --bootstrap ads --proxy client`) serve the whole session;
a policy is swapped in by the edit path: the rendered text is renamed over the served `.mesh`
file, `meshc serve` gets SIGHUP, prints `published (...)`, and pushes what changed; the swap is
over when the server's status (the same report as `meshc status`) shows Envoy's stream up to date
on every type it asked for (Envoy acknowledged the new versions) and Envoy's admin stats show no
cluster or listener warming. A reload the server refuses, or a NACK, is a `SwapError`.

The identity files: the served resources name them through the policy's `certificates`
setting (added to the rendered text's `mesh` block, `CERTIFICATES`), the same paths the file
planes get from `--certs-dir`, so mTLS policies run too.

The native plane is the session's `native` factory, chosen by name from `NATIVE_PLANES` with
`MESHC_EQUIVALENCE_NATIVE` (default `files`: the file-fed `dataplanes.NativePlane`). The native
proxy's xDS client (`meshc proxy --xds-server ADDR --node SERVICE`) plugs in as one more entry,
`NATIVE_PLANES["serve"] = ServedNativePlane`: a class with NativePlane's interface (`compile`,
`swap`, `stop`, `ports`, `proc`, `log`) whose proxy subscribes to its own `meshc serve` (or to
the Envoy plane's, `ServedEnvoyPlane.address`, when the session passes it), and whose `swap`
is the edit path as here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from tests.envoy_support import Envoy, free_port, terminate
from tests.equivalence.compile import SIDECAR, Compiled, compile_text
from tests.equivalence.dataplanes import ROOT, NativePlane, Plane, SwapError
from tests.equivalence.policies import GenPolicy

CERTIFICATES = '  certificates "{}"\n'

# The native planes by name (MESHC_EQUIVALENCE_NATIVE): how the native proxy gets its config.
NATIVE_PLANES: dict[str, type] = {"files": NativePlane}


def native_plane() -> type:
    name = os.environ.get("MESHC_EQUIVALENCE_NATIVE", "files")
    if name not in NATIVE_PLANES:
        raise RuntimeError(f"MESHC_EQUIVALENCE_NATIVE={name}: no such native plane ({', '.join(NATIVE_PLANES)})")
    return NATIVE_PLANES[name]


def with_certificates(text: str, certs_dir: str | None) -> str:
    """`text` whose `mesh` block names `certs_dir` as the root of the identity files (a block is
    added when there is none)."""
    if certs_dir is None:
        return text
    line = CERTIFICATES.format(certs_dir)
    if "mesh {\n" in text:
        return text.replace("mesh {\n", "mesh {\n" + line, 1)
    return "mesh {\n" + line + "}\n" + text


class ServedEnvoyPlane(Plane):
    """One `meshc serve` and one Envoy over ADS for the session; policies swapped by editing the
    served file and SIGHUP."""

    name = "envoy"

    def __init__(self, policy: GenPolicy, upstream_ports: dict[str, int], certs_dir: str | None = None):
        from compiler.control import status

        self._status = status
        self.dir = tempfile.mkdtemp(prefix="meshc-equivalence-served-")
        self.path = os.path.join(self.dir, "policy.mesh")
        self.ports = {"INBOUND": free_port(), "OUTBOUND": free_port(), "ADMIN": free_port()}
        self.upstream_ports = upstream_ports
        self.certs_dir = certs_dir
        self.swap_times: list[float] = []
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.envoy: Envoy | None = None
        compiled = self.compile(policy)
        self._write(compiled.text)
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "compiler", "serve", self.path, "--listen", self.address, "--watch", "0",
             "--color", "never"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self._wait_line("serving", after=0)
            boot = os.path.join(self.dir, "boot")
            proc = subprocess.run([sys.executable, "-m", "compiler", "compile", self.path, "--target", "envoy",
                                   "--proxy", SIDECAR, "--bootstrap", "ads", "--xds-server", self.address, "-o", boot],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise RuntimeError(f"meshc compile --bootstrap ads failed: {proc.stderr}")
            self.envoy = Envoy(os.path.join(boot, f"{SIDECAR}.envoy.json"), "--reject-unknown-dynamic-fields")
            self._settle(time.monotonic() + 20)
        except BaseException:
            self.stop()
            raise

    def compile(self, policy: GenPolicy) -> Compiled:
        """The policy as `meshc serve` will compile it (the text with `certificates`), in process:
        for the model layer's evaluator and the native plane."""
        text = with_certificates(self.render(policy, self.upstream_ports), self.certs_dir)
        return compile_text(text, certs_dir=self.certs_dir)

    def _write(self, text: str) -> None:
        tmp = os.path.join(self.dir, "next.mesh")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, self.path)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def _wait_line(self, *texts: str, after: int, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[after:]:
                    if any(t in line for t in texts):
                        return line
                if self.proc.poll() is not None:
                    raise SwapError(f"meshc serve exited {self.proc.returncode}: {''.join(self.lines[-20:])}")
                if time.monotonic() > deadline:
                    raise SwapError(f"no {texts} from meshc serve: {''.join(self.lines[-20:])}")
                self._cond.wait(0.05)

    def _settle(self, deadline: float) -> None:
        """Until Envoy's stream is up to date on every type it asked for, and nothing warms."""
        assert self.envoy is not None
        while True:
            report = self._status.fetch(self.address)
            streams = [s for s in report["streams"] if s["node"] == SIDECAR]
            states = {t: e["state"] for s in streams for t, e in s["types"].items()}
            rejected = [e["last_rejection"] for s in streams for e in s["types"].values()
                        if e["state"] == "rejected"]
            if rejected:
                raise SwapError(f"envoy rejected the served config: {rejected[0]}")
            if len(streams) == 1 and states and set(states.values()) == {"up to date"} and \
                    {"Cluster", "Listener"} <= set(states):
                stats = self.envoy.stats("warming")
                if stats.get("cluster_manager.warming_clusters", 0) == 0 and \
                        stats.get("listener_manager.total_listeners_warming", 0) == 0:
                    return
            if time.monotonic() > deadline:
                raise SwapError(f"envoy not up to date after the push: {states}\n{self.envoy.output()[-2000:]}")
            time.sleep(0.002)

    def swap(self, compiled: Compiled) -> float:
        """Serve `compiled.text` (the edit path: the file renamed into place, SIGHUP) and wait until
        Envoy acknowledged it; the seconds it took."""
        start = time.perf_counter()
        with self._cond:
            mark = len(self.lines)
        self._write(compiled.text)
        self.proc.send_signal(signal.SIGHUP)
        line = self._wait_line("published (", "still serving the last good snapshot", after=mark)
        if "published (" not in line:
            raise SwapError(f"meshc serve refused the policy: {''.join(self.lines[mark:])}")
        self._settle(time.monotonic() + 10)
        took = time.perf_counter() - start
        self.swap_times.append(took)
        return took

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        if self.proc.poll() is None:
            terminate(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
