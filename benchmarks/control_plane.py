"""The control plane at fleet scale (issue 14, docs/control-plane.md "Push performance"): what
`meshc serve` serves and `meshc compile --proxy all` writes, how fast an edit reaches 1,000
connected sidecars, what each connected sidecar costs the server, and how the simulated
sidecars compare with real Envoys.

The program is benchmarks/compile_scale.py's `generate(n, "strict")` (authorization `default
deny`, one caller per destination: svcI admits svcI+1), with one change for the push: svc0's
authorization is `default allow`, so that svc0 is a destination every sidecar may call (the
worst case of a one-route edit).

- **Fleet size** (`--sizes`): per size, the bytes served (the sum over sidecars of each
  resource's serialized `Any`, as a state-of-the-world response carries it; and the distinct
  resources, what the server holds) and the files and bytes `meshc compile --target envoy
  --proxy all` writes into an empty directory, against the same in a baseline tree
  (`--baseline REF`, a git ref of this repository extracted into a temporary directory; today's
  layout grows with the square of the fleet, so sizes above `--baseline-max` are skipped there).
- **Push** (`--services`, `--clients`, `--edits`): `meshc serve` on the program, `--clients`
  simulated sidecars in a separate process (grpc.aio, one channel and one ADS stream each; like
  Envoy they ask for clusters and listeners, then for the route configurations the listeners
  name and the secrets the clusters and listeners name, and ACK every response with its version
  and nonce). Then one-route edits, each saved to the file and signalled with SIGHUP: the worst
  case (a route of svc0) and the one-caller case (a route of svc5, which only svc6 may call).
  Per edit: the time from saving to the last ACK, and how many sidecars received anything.
- **Cost per sidecar**: the server's RSS and CPU time before and after the clients connect.
- **Calibration** (`--envoys K`): after the simulated run, K real Envoys (`--bootstrap ads`,
  `--concurrency 1`) connect as svc1..svcK beside the simulated clients of the same node ids
  (the calibrated services get their own sidecar ports and real certificates from `meshc ca`),
  and the worst-case edit is applied again: each Envoy's time to apply the new route
  configuration (`last_updated` in its `/config_dump`) against the simulated clients' receive
  times for the same edit.

Figures are medians (and the maximum, the p99 of a handful of edits) over the edits, measured in
one run; a quick run: `--sizes 100 --services 100 --clients 100 --edits 3 --envoys 0`.

    python benchmarks/control_plane.py [--sizes 100,300,1000] [--baseline REF] [--baseline-max 300]
                                       [--services 1000] [--clients 1000] [--edits 5] [--envoys 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compile_scale import child_env, generate  # noqa: E402

PYTHON = sys.executable


# ---- the program -----------------------------------------------------------------------------------

def program(n: int, certificates: str | None = None, sidecars: dict[str, tuple[int, int, int]] | None = None) -> str:
    """generate(n, "strict") with svc0 callable by every service; optionally a certificates root
    and sidecar ports (inbound, outbound, admin) for some services (the calibrated Envoys)."""
    text = generate(n, "strict")
    text = re.sub(r"authorization svc0 \{.*?\n\}", "authorization svc0 {\n  default allow\n}", text,
                  count=1, flags=re.S)
    if certificates:
        text = text.replace("mtls strict }", f'mtls strict  certificates "{certificates}" }}', 1)
    for svc, (inbound, outbound, admin) in (sidecars or {}).items():
        text = text.replace(f"service {svc} {{\n  port 8080\n",
                            f"service {svc} {{\n  port 8080\n  sidecar {{ inbound {inbound}  outbound {outbound}  "
                            f"admin {admin}  app \"127.0.0.1:{free_port()}\" }}\n", 1)
    return text


def route_edit(text: str, svc: str, k: int) -> str:
    """`svc`'s route r0 with a new path prefix (a one-route edit; the text after it moves, as
    after most edits)."""
    pattern = re.compile(r'(route r0 \{ match \{ path prefix ")[^"]*("  method \[GET, HEAD\] \} to ' + svc + r"\.v1)")
    new, count = pattern.subn(rf"\g<1>/api/r0-{'e' * (k % 7 + 1)}{k}\g<2>", text, count=1)
    assert count == 1, svc
    return new


def free_port() -> int:
    """A free loopback port below the ephemeral range (the 1,000 client connections take
    ephemeral ports, and one of them could take a port chosen early for a later Envoy)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
        low = int(fh.read().split()[0])
    for port in random.sample(range(max(1024, low - 12000), low), 2000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


# ---- fleet size --------------------------------------------------------------------------------------

SERVED = r"""
import json, os, sys, time
sys.setrecursionlimit(10000)
from compiler import api
from compiler.control import snapshot
path = sys.argv[1]
started = time.perf_counter()
compilation = api.compile([path], shard=False)
builder = getattr(snapshot, "Builder", None)
snaps = builder().build(compilation) if builder else snapshot.build_all(compilation)
total = resources = 0
unique = {}
for snap in snaps.values():
    for named in snap.packed.values():
        for packed in named.values():
            data = packed.SerializeToString(deterministic=True)
            total += len(data)
            resources += 1
            unique[id(packed)] = len(data)
print(json.dumps({"sidecars": len(snaps), "resources": resources, "bytes": total,
                  "distinct_bytes": sum(unique.values()), "seconds": time.perf_counter() - started}))
"""


def served(tree: str, path: str) -> dict:
    out = subprocess.run([PYTHON, "-c", SERVED, path], cwd=tree, env=child_env({"PYTHONPATH": tree, "MESHC_JOBS": "1"}),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def written(tree: str, path: str) -> dict:
    out = tempfile.mkdtemp(prefix="meshc-cp-out-")
    try:
        started = time.perf_counter()
        subprocess.run([PYTHON, "-m", "compiler", "compile", path, "--target", "envoy", "--proxy", "all", "-o", out],
                       cwd=tree, env=child_env({"PYTHONPATH": tree}), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        files = size = 0
        for base, _, names in os.walk(out):
            for name in names:
                files += 1
                size += os.path.getsize(os.path.join(base, name))
        return {"files": files, "bytes": size, "seconds": seconds}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def extract(ref: str) -> str:
    """The tree of git ref `ref` of this repository, in a temporary directory."""
    tree = tempfile.mkdtemp(prefix="meshc-cp-baseline-")
    archive = subprocess.run(["git", "-C", ROOT, "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    return tree


def fleet_sizes(sizes: list[int], baseline: str | None, baseline_max: int) -> None:
    trees = [("this tree", ROOT)]
    if baseline:
        trees.append((f"baseline {baseline}", extract(baseline)))
    work = tempfile.mkdtemp(prefix="meshc-cp-")
    print("\n## Fleet size (mtls strict)\n")
    print("| services | tree | served: sidecars, resources | bytes served (distinct) | `--proxy all`: files "
          "| bytes written |")
    print("|---|---|---|---|---|---|")
    try:
        for n in sizes:
            path = os.path.join(work, f"fleet{n}.mesh")
            with open(path, "w") as fh:
                fh.write(generate(n, "strict"))
            for label, tree in trees:
                if tree != ROOT and n > baseline_max:
                    print(f"| {n:,} | {label} | skipped (> --baseline-max {baseline_max}) | | | |", flush=True)
                    continue
                s, w = served(tree, path), written(tree, path)
                print(f"| {n:,} | {label} | {s['sidecars']:,}, {s['resources']:,} | {mb(s['bytes'])} "
                      f"({mb(s['distinct_bytes'])}) | {w['files']:,} | {mb(w['bytes'])} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for _, tree in trees[1:]:
            shutil.rmtree(tree, ignore_errors=True)


def mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{n / 1e3:,.1f} kB"


# ---- the simulated sidecars (a separate process: --client) ------------------------------------------

def client_main(address: str, nodes: list[str]) -> None:
    """Connect one ADS stream per node and ACK like Envoy; print `synced` once every stream has
    its clusters, listeners and routes, then one line per response: `r NODE TYPE VERSION T` (the
    wall-clock time it was received; the ACK is sent right after)."""
    import grpc
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.core.v3 import base_pb2
    from envoy.config.listener.v3 import listener_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
    from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

    T = "type.googleapis.com/envoy."
    CDS, LDS = T + "config.cluster.v3.Cluster", T + "config.listener.v3.Listener"
    RDS, SDS = T + "config.route.v3.RouteConfiguration", T + "extensions.transport_sockets.tls.v3.Secret"
    out: list[str] = []
    synced = 0

    def secrets_of(ctx) -> set[str]:
        common = ctx.common_tls_context
        names = {c.name for c in common.tls_certificate_sds_secret_configs}
        if common.HasField("validation_context_sds_secret_config"):
            names.add(common.validation_context_sds_secret_config.name)
        return names

    def socket_secrets(sock, kind) -> set[str]:
        if not sock.HasField("typed_config"):
            return set()
        ctx = kind()
        sock.typed_config.Unpack(ctx)
        return secrets_of(ctx)

    async def one(node: str) -> None:
        nonlocal synced
        channel = grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", -1)])
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        requests: asyncio.Queue = asyncio.Queue()

        async def send():
            while True:
                yield await requests.get()

        names = {RDS: set(), SDS: set()}
        cluster_secrets: set[str] = set()
        listener_secrets: set[str] = set()
        seen: set[str] = set()
        first = True

        def request(type_url, version="", nonce="", resource_names=()):
            nonlocal first
            req = discovery_pb2.DiscoveryRequest(type_url=type_url, version_info=version, response_nonce=nonce,
                                                 resource_names=sorted(resource_names))
            if first:
                req.node.CopyFrom(base_pb2.Node(id=node, cluster=node, user_agent_name="meshc-bench"))
                first = False
            requests.put_nowait(req)

        request(CDS)
        request(LDS)
        call = stub.StreamAggregatedResources(send())
        async for response in call:
            now = time.time()
            t = response.type_url
            out.append(f"r {node} {t.rpartition('.')[2]} {response.version_info} {now:.6f}")
            if t == CDS:
                found = set()
                for any_ in response.resources:
                    cluster = cluster_pb2.Cluster()
                    any_.Unpack(cluster)
                    if cluster.HasField("transport_socket"):
                        found |= socket_secrets(cluster.transport_socket, tls_pb2.UpstreamTlsContext)
                cluster_secrets = found
            elif t == LDS:
                routes, found = set(), set()
                for any_ in response.resources:
                    listener = listener_pb2.Listener()
                    any_.Unpack(listener)
                    for chain in listener.filter_chains:
                        if chain.HasField("transport_socket"):
                            found |= socket_secrets(chain.transport_socket, tls_pb2.DownstreamTlsContext)
                        for f in chain.filters:
                            if f.typed_config.type_url.endswith("HttpConnectionManager"):
                                hcm = hcm_pb2.HttpConnectionManager()
                                f.typed_config.Unpack(hcm)
                                if hcm.HasField("rds"):
                                    routes.add(hcm.rds.route_config_name)
                listener_secrets = found
            # ACK, then ask for what the resources name (as Envoy does after applying them)
            request(t, response.version_info, response.nonce, names.get(t, ()))
            if t in (CDS, LDS) and cluster_secrets | listener_secrets != names[SDS]:
                names[SDS] = cluster_secrets | listener_secrets
                request(SDS, resource_names=names[SDS])
            if t == LDS and routes != names[RDS]:
                names[RDS] = routes
                request(RDS, resource_names=routes)
            seen.add(t)
            if {CDS, LDS, RDS} <= seen and "synced" not in seen:
                seen.add("synced")
                synced += 1

    async def main():
        tasks = [asyncio.ensure_future(one(node)) for node in nodes]
        while synced < len(nodes):
            await asyncio.sleep(0.05)
            for task in tasks:
                if task.done() and task.exception():
                    raise task.exception()
        print("synced", flush=True)
        while True:
            await asyncio.sleep(0.02)
            if out:
                lines, out[:] = "\n".join(out), []
                print(lines, flush=True)

    asyncio.run(main())


# ---- the push -------------------------------------------------------------------------------------------

class Process:
    """A child whose output lines are collected, with the time each arrived."""

    def __init__(self, cmd: list[str], stream: str, env: dict | None = None):
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(env), text=True,
                                     stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
                                     stderr=subprocess.PIPE if stream == "stderr" else None)
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        pipe = self.proc.stdout if stream == "stdout" else self.proc.stderr
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe) -> None:
        for line in pipe:
            with self.cond:
                self.lines.append((time.time(), line.rstrip("\n")))
                self.cond.notify_all()

    def wait_for(self, test, start: int = 0, timeout: float = 600) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.lines)):
                    if test(self.lines[i][1]):
                        return i, self.lines[i][1]
                start = len(self.lines)
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = "\n".join(line for _, line in self.lines[-20:])
                    raise RuntimeError(f"{self.proc.args[:4]} exited or timed out:\n{tail}")
                self.cond.wait(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def usage(pid: int) -> tuple[float, int]:
    """(CPU seconds, user and system, RSS bytes) of a process."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as fh:
        rss = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
    return cpu, rss


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def push(n: int, clients: int, edits: int, envoys: int) -> None:
    work = tempfile.mkdtemp(prefix="meshc-cp-push-")
    procs: list = []
    try:
        calibrated = {f"svc{i}": (free_port(), free_port(), free_port()) for i in range(1, envoys + 1)}
        certificates = os.path.join(work, "certs") if envoys else None
        if envoys:
            issue_certificates(work, list(calibrated))
        path = os.path.join(work, "fleet.mesh")
        text = program(n, certificates, calibrated)
        with open(path, "w") as fh:
            fh.write(text)
        serve = Process([PYTHON, "-m", "compiler", "serve", path, "--listen", f"127.0.0.1:{free_port()}",
                         "--watch", "0", "--color", "never"], "stderr")
        procs.append(serve)
        started = time.time()
        _, line = serve.wait_for(lambda s: "over ADS on" in s or "error" in s)
        address = line.rpartition(" on ")[2]
        print(f"\n## Push: {n:,} services, {clients:,} simulated sidecars\n")
        print(f"- server up in {time.time() - started:.1f} s (compile and first build of {n:,} sidecars)")
        cpu0, rss0 = usage(serve.proc.pid)
        nodes = [f"svc{i % n}" for i in range(clients)]
        client = Process([PYTHON, os.path.abspath(__file__), "--client", address, "--nodes", ",".join(nodes)], "stdout",
                         {"PYTHONPATH": ROOT})
        procs.append(client)
        connect = time.time()
        client.wait_for(lambda s: s == "synced")
        time.sleep(1)
        cpu1, rss1 = usage(serve.proc.pid)
        print(f"- {clients:,} sidecars connected and synced in {time.time() - connect - 1:.1f} s")
        print(f"- server RSS {rss0 / 2**20:.0f} MiB before, {rss1 / 2**20:.0f} MiB with them: "
              f"{(rss1 - rss0) / clients / 1024:.0f} KiB per connected sidecar; CPU {cpu1 - cpu0:.1f} s to sync "
              f"them: {(cpu1 - cpu0) / clients * 1000:.1f} ms per sidecar")
        results: dict[str, list[dict]] = {"worst": [], "one": []}
        for k in range(edits):
            for case, svc in (("worst", "svc0"), ("one", "svc5")):
                text = route_edit(text, svc, k)
                results[case].append(apply(path, text, serve, client))
        for case, label in (("worst", "worst case (a route of svc0, every sidecar may call it)"),
                            ("one", "one caller (a route of svc5, only svc6 may call it)")):
            report(label, results[case])
        cpu2, rss2 = usage(serve.proc.pid)
        print(f"- after the edits: server RSS {rss2 / 2**20:.0f} MiB, CPU {cpu2 - cpu1:.1f} s for {2 * edits} edits")
        if envoys:
            calibrate(path, text, serve, client, calibrated, address, work, max(1, min(edits, 3)))
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)


def apply(path: str, text: str, serve: Process, client: Process, quiet: float = 1.5) -> dict:
    """Save `text`, SIGHUP, and wait until the pushes are over; the edit's figures."""
    mark_serve, mark_client = len(serve.lines), len(client.lines)
    cpu_before = usage(serve.proc.pid)[0]
    saved = time.time()
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)
    serve.proc.send_signal(signal.SIGHUP)
    index, published = serve.wait_for(lambda s: "published" in s or "still serving" in s, mark_serve)
    if "published" not in published:
        raise RuntimeError(published)
    published_at = serve.lines[index][0]
    while True:   # quiet: no response for `quiet` seconds since the server published
        with client.cond:
            last = client.lines[-1][0] if len(client.lines) > mark_client else 0
        if time.time() - max(last, published_at) > quiet:
            break
        time.sleep(0.1)
    cpu = usage(serve.proc.pid)[0] - cpu_before
    received = [r for r in (line.split() for _, line in client.lines[mark_client:] if line.startswith("r "))
                if float(r[4]) >= saved]
    times = [float(r[4]) for r in received]
    steps = re.search(r"; (\d+) ms: (.*) ms\)", published)
    return {"published": published, "sidecars": len({r[1] for r in received}), "responses": len(received),
            "last": max(times) - saved if times else None, "first": min(times) - saved if times else None,
            "each": [t - saved for t in times], "reload_ms": int(steps.group(1)) if steps else None,
            "steps": steps.group(2) if steps else "", "saved": saved, "received": received, "cpu": cpu}


def report(label: str, runs: list[dict]) -> None:
    lasts = [r["last"] for r in runs if r["last"] is not None]
    each = [t for r in runs for t in r["each"]]
    print(f"\n### {label}: {len(runs)} edits\n")
    print("| edit | sidecars pushed | responses | reload (server) | first response | last ACK | server CPU |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(runs):
        print(f"| {i + 1} | {r['sidecars']:,} | {r['responses']:,} | {r['reload_ms']} ms ({r['steps']} ms) | "
              f"{fmt(r['first'])} | {fmt(r['last'])} | {r['cpu']:.2f} s |")
    if lasts:
        print(f"\nsave to last ACK: median {fmt(statistics.median(lasts))}, max (the p99 of {len(lasts)} edits) "
              f"{fmt(max(lasts))}; over every sidecar's response: p50 {fmt(pct(each, 0.5))}, "
              f"p99 {fmt(pct(each, 0.99))}")


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


# ---- calibration against real Envoys --------------------------------------------------------------

def issue_certificates(work: str, services: list[str]) -> None:
    ca = os.path.join(work, "ca")
    meshc = [PYTHON, "-m", "compiler", "ca"]
    env = child_env({"PYTHONPATH": ROOT})
    subprocess.run(meshc + ["init", ca, "--trust-domain", "bench.local"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for svc in services:
        i = int(svc[3:])
        subprocess.run(meshc + ["issue", svc, "--ca", ca, "--namespace", f"ns{i % 50}", "-o",
                                os.path.join(work, "certs", svc)], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def calibrate(path: str, text: str, serve: Process, client: Process, calibrated: dict, address: str, work: str,
              edits: int) -> None:
    sys.path.insert(0, ROOT)
    from compiler.core.envoy_binary import envoy_binary

    boot = os.path.join(work, "boot")
    proxies = [a for svc in calibrated for a in ("--proxy", svc)]
    subprocess.run([PYTHON, "-m", "compiler", "compile", path, "--target", "envoy", *proxies, "--bootstrap", "ads",
                    "--xds-server", address, "-o", boot], cwd=ROOT, env=child_env({"PYTHONPATH": ROOT}), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    envoy = envoy_binary()
    running = []
    try:
        started = time.time()
        for svc, (_, _, admin) in calibrated.items():
            with open(os.path.join(work, f"{svc}.log"), "w") as log:   # Envoy writes to its own copy
                running.append((svc, admin, subprocess.Popen(
                    [envoy, "-c", os.path.join(boot, f"{svc}.envoy.json"), "--disable-hot-restart",
                     "--concurrency", "1", "-l", "warning"], stdout=log, stderr=subprocess.STDOUT)))
        for svc, admin, proc in running:
            wait_ready(admin, proc, os.path.join(work, f"{svc}.log"))
        print(f"\n### Calibration: {len(running)} real Envoys (svc1..svc{len(running)}) beside the simulated "
              "sidecars\n")
        print(f"- all ready (listeners and clusters from the server) in {time.time() - started:.1f} s")
        print("\n| edit | Envoys: median, max to apply | simulated, same nodes: median, max | simulated, all: max |")
        print("|---|---|---|---|")
        envoy_all, sim_all = [], []
        for k in range(edits):
            text = route_edit(text, "svc0", 100 + k)
            run = apply(path, text, serve, client)
            stamps = [route_updated(admin) for _, admin, _ in running]
            applied = [t - run["saved"] for t in stamps if t is not None]
            same = [float(r[4]) - run["saved"] for r in run["received"]
                    if r[1] in calibrated and r[2] == "RouteConfiguration"]
            envoy_all += applied
            sim_all += same
            print(f"| {k + 1} | {fmt(statistics.median(applied))}, {fmt(max(applied))} | "
                  f"{fmt(statistics.median(same))}, {fmt(max(same))} | {fmt(run['last'])} |")
        print(f"\nover the {edits} edits: Envoys median {fmt(statistics.median(envoy_all))} "
              f"(p99 {fmt(pct(envoy_all, 0.99))}), "
              f"simulated (same nodes) median {fmt(statistics.median(sim_all))} (p99 {fmt(pct(sim_all, 0.99))})")
    finally:
        for _, _, proc in running:
            proc.terminate()
        for _, _, proc in running:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_ready(admin: int, proc, log: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log) as fh:
                raise RuntimeError(f"envoy exited: {fh.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    with open(log) as fh:
        raise RuntimeError(f"envoy not ready: {fh.read()[-2000:]}")


def route_updated(admin: int) -> float | None:
    """When the Envoy behind `admin` last applied a route configuration (wall clock, seconds);
    None when its configuration dump shows none (said in the output)."""
    from datetime import datetime

    for _ in range(5):
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/config_dump?resource=dynamic_route_configs",
                                    timeout=10) as r:
            data = json.load(r)
        stamps = [c["last_updated"] for c in data.get("configs", []) if "last_updated" in c]
        if stamps:
            return max(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps)
        time.sleep(0.2)
    print(f"  (the Envoy with admin port {admin} shows no route configuration: {json.dumps(data)[:300]})")
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,300,1000", help="fleet sizes for the size table ('' skips it)")
    ap.add_argument("--baseline", help="a git ref whose tree is the baseline of the size table")
    ap.add_argument("--baseline-max", type=int, default=300, help="the largest size measured on the baseline")
    ap.add_argument("--services", type=int, default=1000, help="services of the push program (0 skips the push)")
    ap.add_argument("--clients", type=int, default=1000, help="simulated sidecars")
    ap.add_argument("--edits", type=int, default=5, help="one-route edits per case")
    ap.add_argument("--envoys", type=int, default=20, help="real Envoys for the calibration (0 skips it)")
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--nodes", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client_main(args.client, args.nodes.split(","))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if sizes:
        fleet_sizes(sizes, args.baseline, args.baseline_max)
    if args.services:
        push(args.services, args.clients, args.edits, args.envoys)


if __name__ == "__main__":
    main()
