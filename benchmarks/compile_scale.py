"""How meshc scales: whole-process time and peak memory of `meshc check` and `meshc compile
--emit ir` on generated policies of 100, 1,000 and 10,000 services (10 routes and 5
authorization rules each), of `meshc compile --target envoy --proxy all` (every sidecar of the
fleet) on 1,000 and 10,000 services, `meshc check` on one service with 2,500, 5,000 and 10,000 routes
against 10,000 routes spread over 1,000 services (the shadowing check must not grow with the
square of one service's routes: the 10,000 routes of one service within 3x the time of the spread
ones), and `meshc check` on the largest example against `python -c pass`.

Every figure is a median over several runs, measured side by side in the same run. Run:

    python benchmarks/compile_scale.py [--sizes 100,1000,10000] [--envoy-sizes 1000,10000] [--runs 3]
                                       [--routes 2500,5000,10000] [--startup-runs 21]

`--sizes ''`, `--envoy-sizes ''` or `--routes ''` skips that part. Each Envoy compile writes into an empty
directory of its own (a file already on disk with the same content is not rewritten, which would make
later runs cheaper than a first compile), and the outputs are removed only after the last Envoy
run: on ext4 without a journal (this machine's disk) the kernel will not reuse an inode deleted in
the last minute or so (several while its inode-table block is dirty), and finds that out by
reading each candidate (fs/ext4/ialloc.c, `recently_deleted`), so creating files just after
deleting many costs 150-320 µs a file instead of about 20 (`perf`: a third of the samples of a
10,000-service compile under `recently_deleted`). A benchmark that deleted the previous run's
40,000 files before each run measured the kernel's scan, not meshc; a second invocation of this
script within minutes of the first still meets some of it (ext4 with a journal does not scan).

Peak memory is the child's maximum resident set size (getrusage), time is wall-clock.

Side by side with an older meshc (issue 19's targets are ratios against main at 8a40910):

    python benchmarks/compile_scale.py --baseline-tree /work/base     # a checkout, run from its own directory
    python benchmarks/compile_scale.py --baseline 8a40910             # a revision, extracted with `git archive`
                                                                      # into a temporary directory

Each figure is then measured for the baseline and for this tree, interleaved, with the ratio
(baseline / this tree: above 1 is faster). Both run in this interpreter's environment (the
dependencies are the same). `--instructions` counts the instructions of each whole process with
valgrind's callgrind instead of timing it (one run each; a count does not depend on the load of a
shared machine, a wall-clock time does): use it with `--sizes 1000 --envoy-sizes 1000 --routes ''
--startup-runs 0`, as callgrind runs ~50 times slower.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate(n: int, mtls: str = "strict") -> str:
    """A policy of n services calling each other: 2 subsets, limits, outlier detection and a retry
    budget each; 10 routes (path prefix/exact/regex, methods, headers, a keyed split, timeouts,
    retries on idempotent routes) and an authorization block of 5 rules (identity rules need
    `mtls strict`; any other mode draws W0604 warnings)."""
    out = ['import "std/resilience"', "", f'mesh {{ trust_domain "bench.local"  mtls {mtls} }}', ""]
    for i in range(n):
        s, peer = f"svc{i}", f"svc{(i + 1) % n}"
        ip = f"10.{i // 250 % 250}.{i % 250}"
        out.append(f"""service {s} {{
  port 8080
  namespace "ns{i % 50}"
  subset v1 {{ endpoints ["{ip}.1:8080", "{ip}.2:8080"] }}
  subset v2 {{ endpoints ["{ip}.3:8080"] }}
  limits {{ connections 200  pending 50  requests 500 }}
  outlier std.standard
  retry_budget {{ percent 20%  min_concurrency 3 }}
}}
routes {s} {{""")
        for r in range(9):
            if r % 3 == 0:
                out.append(f'  route r{r} {{ match {{ path prefix "/api/r{r}"  method [GET, HEAD] }} '
                           f'to {s}.v1  timeout 3s  retry std.idempotent }}')
            elif r % 3 == 1:
                out.append(f'  route r{r} {{ match {{ path exact "/api/items/{r}"  header "x-tenant" exact "t{r}" }} '
                           f'to {s}.v2  timeout 1s }}')
            else:
                out.append(f'  route r{r} {{ match {{ path regex "/api/v[0-9]+/r{r}/.*" }} to {s}.v1 }}')
        out.append(f"""  route rest {{ split {{ {s}.v1 90  {s}.v2 10 }} by header "x-split-key" }}
}}
authorization {s} {{
  default deny""")
        for a in range(5):
            out.append(f'  allow a{a} {{ from service {peer}  path prefix "/api/r{a}"  method [GET, POST] }}')
        out.append("}\n")
    return "\n".join(out)


def generate_routes(n: int) -> str:
    """One service with n routes: the route mix of generate() (segment prefixes with methods,
    exact paths with a header, RE2 regexes), numbered through the whole table, and a last split
    route; none of them shadows another. The shadowing check (W0401) compares each route with
    the earlier ones of its service that can overlap it, so this is its worst realistic case."""
    out = ['import "std/resilience"', "", 'mesh { trust_domain "bench.local"  mtls strict }', "",
           """service big {
  port 8080
  subset v1 { endpoints ["10.0.0.1:8080", "10.0.0.2:8080"] }
  subset v2 { endpoints ["10.0.0.3:8080"] }
  outlier std.standard
  retry_budget { percent 20%  min_concurrency 3 }
}
routes big {"""]
    for r in range(n - 1):
        if r % 3 == 0:
            out.append(f'  route r{r} {{ match {{ path prefix "/api/r{r}"  method [GET, HEAD] }} '
                       f'to big.v1  timeout 3s  retry std.idempotent }}')
        elif r % 3 == 1:
            out.append(f'  route r{r} {{ match {{ path exact "/api/items/{r}"  header "x-tenant" exact "t{r}" }} '
                       f'to big.v2  timeout 1s }}')
        else:
            out.append(f'  route r{r} {{ match {{ path regex "/api/v[0-9]+/r{r}/.*" }} to big.v1 }}')
    out.append("""  route rest { split { big.v1 90  big.v2 10 } by header "x-split-key" }
}
""")
    return "\n".join(out)


def child_env(extra: dict | None = None) -> dict:
    """The environment of measured commands: bytecode caching on, as in any installed copy
    (with PYTHONDONTWRITEBYTECODE set, every run would recompile meshc from source)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra or {})
    return env


class Side:
    """One meshc to measure: this tree, or a baseline tree run from its own directory."""

    def __init__(self, label: str, root: str):
        self.label, self.root = label, root
        self.cmd = [sys.executable, "-m", "compiler"]
        # The tree first on the path, whatever meshc the environment has installed.
        self.env = {"PYTHONPATH": root}


# Set by --instructions: measure instruction counts (callgrind) instead of wall-clock time.
INSTRUCTIONS = False


def run_once(cmd: list[str], env: dict | None = None, cwd: str = ROOT) -> tuple[float, int, int]:
    """(wall seconds, or instructions with --instructions; peak RSS in KiB; exit code) of one whole
    process. The peak is wait4's ru_maxrss: the largest resident set of the process and of the
    children it waited for (a forked shard), not their sum; under callgrind it is a separate run
    without it."""
    if INSTRUCTIONS:
        return _instructions(cmd, env, cwd)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd, env=child_env(env))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_maxrss, os.waitstatus_to_exitcode(status)


def _instructions(cmd: list[str], env: dict | None, cwd: str) -> tuple[float, int, int]:
    """Instructions executed by the whole process (callgrind's total, the process and the shards
    it forks: --trace-children), and the peak RSS of a plain run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out.%p")
        proc = subprocess.run(["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={out}",
                               *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
                              env=child_env(env), check=False)
        total = 0
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name)) as fh:
                for line in fh:
                    if line.startswith(("summary:", "totals:")):
                        total += int(line.split()[1])
                        break
    if "-o" in cmd:   # the plain run writes into a directory of its own, not onto the files just written
        at = cmd.index("-o") + 1
        cmd = cmd[:at] + [cmd[at] + "-plain"] + cmd[at + 1:]
    proc_plain = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
                                  env=child_env(env))
    _, _, usage = os.wait4(proc_plain.pid, 0)
    return float(total), usage.ru_maxrss, proc.returncode


def fmt(value: float) -> str:
    """A median: seconds, or instructions with --instructions."""
    return f"{value / 1e9:.2f} G instr" if INSTRUCTIONS else f"{value:.2f} s"


def median_of(cmd: list[str], runs: int, env: dict | None = None, cwd: str = ROOT,
              out_dir: str | None = None) -> tuple[float, int]:
    """With `out_dir`, each run writes into a new directory of that prefix (`-o`), all removed at
    the end: a run onto the files of the last would compare them, not write them."""
    times, peaks = [], []
    for k in range(1 if INSTRUCTIONS else runs):
        run_cmd = cmd if out_dir is None else cmd + ["-o", f"{out_dir}-{k}"]
        wall, peak, code = run_once(run_cmd, env, cwd)
        if code != 0:
            raise SystemExit(f"command failed with exit {code}: {' '.join(run_cmd)}")
        times.append(wall)
        peaks.append(peak)
    if out_dir is not None:
        for k in range(runs):
            for suffix in ("", "-plain"):
                shutil.rmtree(f"{out_dir}-{k}{suffix}", ignore_errors=True)
    return statistics.median(times), max(peaks)


def envoy_scale(sides: list[Side], tmp: str, sizes: list[int], runs: int) -> None:
    """`meshc compile --target envoy --proxy all` (the fleet layout: per sidecar its listeners
    and bootstrap; one CDS and one RDS file per distinct scope, compiler/ir/scope.py: here each
    service admits one caller, so each sidecar's scope is one destination and its own files),
    whole process, into an empty directory.

    The policy runs without mTLS (each sidecar's clusters would name its own certificate; with
    scoping that output grows with the caller->destination pairs, docs/control-plane.md
    "Scoping"); W0604 warnings are expected here."""
    print("--- envoy: compile --target envoy --proxy all (default mode, mtls disable)", flush=True)
    rows: dict[str, list[tuple[int, float]]] = {side.label: [] for side in sides}
    outputs = os.path.join(tmp, "envoy-outputs")   # removed after the last run (the docstring above)
    for n in sizes:
        path = os.path.join(tmp, f"mesh{n}-plaintext.mesh")
        if not os.path.exists(path):
            with open(path, "w") as fh:
                fh.write(generate(n, mtls="disable"))
        medians = {}
        for side_index, side in enumerate(sides):
            times, peaks = [], []
            for run in range(1 if INSTRUCTIONS else runs):
                out_dir = os.path.join(outputs, f"envoy{n}-{side_index}-{run}")
                wall, peak, code = run_once(side.cmd + ["compile", path, "--target", "envoy", "--proxy", "all",
                                                        "-o", out_dir], side.env, side.root)
                if code != 0:
                    raise SystemExit(f"{side.label}: envoy compile of {n} services failed with exit {code}")
                times.append(wall)
                peaks.append(peak)
            files = sum(len(names) for _, _, names in os.walk(out_dir))
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(out_dir) for f in names)
            medians[side.label] = statistics.median(times)
            rows[side.label].append((n, medians[side.label]))
            print(f"{side.label}{n:>6} services ({n * 10} routes): {fmt(statistics.median(times))}, "
                  f"{max(peaks) / 1024:.0f} MiB, {files} files, {size / 1e6:.0f} MB", flush=True)
        _ratio(sides, medians, f"{n} services envoy compile")
    shutil.rmtree(outputs, ignore_errors=True)
    for side in sides:
        for (n0, t0), (n1, t1) in itertools.pairwise(rows[side.label]):
            print(f"{side.label}growth {n0} -> {n1} services: envoy compile x{t1 / t0:.1f}")


def _ratio(sides: list[Side], medians: dict[str, float], what: str) -> None:
    if len(sides) == 2:
        base, ours = (medians[side.label] for side in sides)
        print(f"  {what}: baseline / this tree = x{base / ours:.2f}", flush=True)


def one_service(meshc: list[str], tmp: str, sizes: list[int], runs: int) -> None:
    """`meshc check` of one service with N routes (generate_routes) against 10,000 routes spread
    over 1,000 services (generate(1000)), medians of `runs`, in the same run."""
    print("--- one service: check of N routes in one service, against 10,000 routes in 1,000 services", flush=True)
    spread = os.path.join(tmp, "mesh1000.mesh")
    if not os.path.exists(spread):
        with open(spread, "w") as fh:
            fh.write(generate(1000))
    base, _ = median_of(meshc + ["check", spread], runs)
    print(f"10,000 routes in 1,000 services: check {base:.2f} s", flush=True)
    for n in sizes:
        path = os.path.join(tmp, f"routes{n}.mesh")
        with open(path, "w") as fh:
            fh.write(generate_routes(n))
        wall, peak = median_of(meshc + ["check", path], runs)
        verdict = f", x{wall / base:.2f} the spread routes" + (" (target: within x3)" if n == 10000 else "")
        print(f"{n:>6} routes in one service: check {wall:.2f} s {peak / 1024:.0f} MiB{verdict}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--envoy-sizes", default="1000,10000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--routes", default="2500,5000,10000")
    ap.add_argument("--startup-runs", type=int, default=21)
    ap.add_argument("--baseline-tree", metavar="DIR", help="also measure the meshc of this checkout, side by side")
    ap.add_argument("--baseline", metavar="REV", help="also measure this git revision (extracted into a temporary "
                                                      "directory), side by side")
    ap.add_argument("--instructions", action="store_true", help="count instructions (valgrind's callgrind) "
                                                                "instead of timing")
    args = ap.parse_args()
    global INSTRUCTIONS
    INSTRUCTIONS = args.instructions
    meshc = [sys.executable, "-m", "compiler"]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    envoy_sizes = [int(s) for s in args.envoy_sizes.split(",") if s]
    with tempfile.TemporaryDirectory() as tmp:
        sides = [Side("", ROOT)]
        if args.baseline_tree or args.baseline:
            root = os.path.abspath(args.baseline_tree) if args.baseline_tree else _extract(args.baseline, tmp)
            sides = [Side("[baseline] ", root), Side("[this tree] ", ROOT)]
        # Warm the grammar-table cache once, as any installed meshc would have it.
        for side in sides:
            subprocess.run(side.cmd + ["check", os.path.join(ROOT, "examples", "shop.mesh")], cwd=side.root,
                           env=child_env(side.env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        modes = [("default (two shards above 3 MB)", {}), ("one process (MESHC_JOBS=1)", {"MESHC_JOBS": "1"})]
        for label, env in modes if sizes else []:
            print(f"--- {label}", flush=True)
            rows: dict[str, list] = {side.label: [] for side in sides}
            for n in sizes:
                path = os.path.join(tmp, f"mesh{n}.mesh")
                if not os.path.exists(path):
                    with open(path, "w") as fh:
                        fh.write(generate(n))
                out_dir = os.path.join(tmp, f"out{n}")
                size_mb = os.path.getsize(path) / 1e6
                checks, comps = {}, {}
                for side in sides:
                    side_env = {**side.env, **env}
                    check = median_of(side.cmd + ["check", path], args.runs, side_env, side.root)
                    comp = median_of(side.cmd + ["compile", path, "--emit", "ir"], args.runs, side_env, side.root,
                                     out_dir=out_dir)
                    checks[side.label], comps[side.label] = check[0], comp[0]
                    rows[side.label].append((n, size_mb, check, comp))
                    print(f"{side.label}{n:>6} services ({n * 10} routes, {size_mb:.1f} MB): check {fmt(check[0])} "
                          f"{check[1] / 1024:.0f} MiB, compile --emit ir {fmt(comp[0])} {comp[1] / 1024:.0f} MiB",
                          flush=True)
                _ratio(sides, checks, f"{n} services check")
                _ratio(sides, comps, f"{n} services compile --emit ir")
            for side in sides:
                for (n0, _, c0, k0), (n1, _, c1, k1) in itertools.pairwise(rows[side.label]):
                    print(f"{side.label}growth {n0} -> {n1} services: check x{c1[0] / c0[0]:.1f}, "
                          f"compile x{k1[0] / k0[0]:.1f}")
        if envoy_sizes:
            envoy_scale(sides, tmp, envoy_sizes, args.runs)
        route_sizes = [int(s) for s in args.routes.split(",") if s]
        if route_sizes:
            one_service(meshc, tmp, route_sizes, args.runs)
    if args.startup_runs > 0:
        startup(meshc, args.startup_runs)


def _extract(rev: str, tmp: str) -> str:
    """A revision of this repository as a directory of its own (`git archive`)."""
    root = os.path.join(tmp, f"baseline-{rev}")
    os.makedirs(root)
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", root], input=archive, check=True)
    return root


def startup(meshc: list[str], runs: int) -> None:
    """The largest example, whole process, against `python -c pass`, interleaved."""
    examples = [os.path.join(ROOT, "examples", f) for f in os.listdir(os.path.join(ROOT, "examples"))]
    largest = max(examples, key=os.path.getsize)
    base, ours = [], []
    for _ in range(runs):
        base.append(run_once([sys.executable, "-c", "pass"])[0])
        ours.append(run_once(meshc + ["check", largest])[0])
    b, o = statistics.median(base), statistics.median(ours)
    print(f"\nstart-up: python -c pass {b * 1000:.0f} ms, meshc check {os.path.relpath(largest, ROOT)} "
          f"{o * 1000:.0f} ms (median of {runs}), ratio x{o / b:.1f}, meshc's own share {(o - b) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
