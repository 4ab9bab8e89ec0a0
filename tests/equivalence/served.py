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
`MESHC_EQUIVALENCE_NATIVE`: `serve` (the default), `ServedNativePlane`, the native proxy fed by
the same `meshc serve` as Envoy (`meshc proxy --xds-server ADDR --node client`), so that both
planes are fed by the server; or `files`, the file-fed `dataplanes.NativePlane`.
"""

from __future__ import annotations

import http.client
import json
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

def native_plane() -> type:
    """The native plane named by MESHC_EQUIVALENCE_NATIVE (NATIVE_PLANES, below), `serve` by default."""
    name = os.environ.get("MESHC_EQUIVALENCE_NATIVE", "serve")
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
            streams = [s for s in report["streams"] if s["node"] == SIDECAR and s["kind"] == "envoy"]
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


class ServedNativePlane(Plane):
    """The native proxy fed by the session's `meshc serve` (the Envoy plane's: `envoy`, a
    ServedEnvoyPlane): `meshc proxy --xds-server ADDR --node client` with listener ports of its
    own (`--inbound-port`, `--outbound-port`, `--admin-port`: the served config names the Envoy
    plane's, and a reload keeps the ports the proxy bound). A policy reaches it by the same edit as
    Envoy (the Envoy plane's swap renames the served file and sends SIGHUP): its swap waits until
    the server's status shows its stream up to date on every type (the proxy acknowledged the new
    `SidecarConfig`, and `Secret` when it asks for it, which it does once only after applying) and
    its admin `/config` shows the compiled version. A NACK, or a proxy that exits, is a SwapError."""

    name = "native"
    served = True               # for the tally: this plane is fed by meshc serve
    needs_envoy_plane = True    # dataplanes.Session passes its Envoy plane as `envoy`

    def __init__(self, policy: GenPolicy, upstream_ports: dict[str, int], certs_dir: str | None = None,
                 envoy: Plane | None = None):
        if not isinstance(envoy, ServedEnvoyPlane):
            raise RuntimeError("MESHC_EQUIVALENCE_NATIVE=serve feeds the native proxy from the Envoy plane's "
                               "meshc serve: it needs the Envoy plane of tests/equivalence/served.py")
        self.server = envoy
        self.upstream_ports = upstream_ports
        self.certs_dir = certs_dir
        self.ports = {"INBOUND": free_port(), "OUTBOUND": free_port(), "ADMIN": free_port()}
        self.dir = tempfile.mkdtemp(prefix="meshc-equivalence-native-served-")
        self.swap_times: list[float] = []
        self.log_path = os.path.join(self.dir, "proxy.log")
        ports_file = os.path.join(self.dir, "ports.json")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "compiler", "proxy", "--xds-server", envoy.address, "--node", SIDECAR,
                 "--state-dir", os.path.join(self.dir, "state"), "--ports-file", ports_file,
                 "--inbound-port", str(self.ports["INBOUND"]), "--outbound-port", str(self.ports["OUTBOUND"]),
                 "--admin-port", str(self.ports["ADMIN"]), "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(ports_file):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the native proxy fed by meshc serve did not start:\n{self.log()}")
                time.sleep(0.01)
            with open(ports_file) as fh:
                bound = json.load(fh)
            assert (bound["inbound"], bound["outbound"], bound["admin"]) == (
                self.ports["INBOUND"], self.ports["OUTBOUND"], self.ports["ADMIN"]), bound
            self._settle(self.compile(policy), time.monotonic() + 20)
        except BaseException:
            self.stop()
            raise

    def compile(self, policy: GenPolicy) -> Compiled:
        """What the server serves (the Envoy plane's text, compiled under the served file's name,
        which the config's version and sources carry): the native config the proxy receives."""
        server = self.server
        text = with_certificates(server.render(policy, server.upstream_ports), server.certs_dir)
        return compile_text(text, path=server.path, certs_dir=server.certs_dir)

    def admin(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["ADMIN"], timeout=30)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _settle(self, compiled: Compiled, deadline: float) -> None:
        version = compiled.native["version"]
        while True:
            if self.proc.poll() is not None:
                raise SwapError(f"the native proxy exited with {self.proc.returncode}:\n{self.log()}")
            report = self.server._status.fetch(self.server.address)
            streams = [s for s in report["streams"] if s["node"] == SIDECAR and s["kind"] == "native"]
            rejected = [e["last_rejection"] for s in streams for e in s["types"].values() if e["state"] == "rejected"]
            if rejected:
                raise SwapError(f"the native proxy rejected the served config: {rejected[0]}")
            states = {e["state"] for s in streams for e in s["types"].values()}
            if len(streams) == 1 and states == {"up to date"}:
                status, body = self.admin("/config")
                if status == 200 and json.loads(body)["config"]["version"] == version:
                    return
            if time.monotonic() > deadline:
                raise SwapError(f"the native proxy is not up to date after the push: {streams}\n{self.log()}")
            time.sleep(0.002)

    def swap(self, compiled: Compiled) -> float:
        """The Envoy plane's swap has edited the served file and seen it published: wait until the
        native proxy acknowledged it and runs it; the seconds that took."""
        start = time.perf_counter()
        self._settle(compiled, time.monotonic() + 10)
        took = time.perf_counter() - start
        self.swap_times.append(took)
        return took

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        terminate(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


# The native planes by name (MESHC_EQUIVALENCE_NATIVE): how the native proxy gets its config.
NATIVE_PLANES: dict[str, type] = {"serve": ServedNativePlane, "files": NativePlane}
