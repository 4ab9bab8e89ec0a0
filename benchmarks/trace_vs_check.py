"""`meshc trace` of one request against `meshc check` of the same file, whole processes, in the
same run, interleaved (issue 15's target: trace within 2x check).

For each case the two commands run alternately --runs times; the figure is the ratio of their
medians. `trace` pays what `check` pays (start-up, parse, checks) plus lowering, the native
config of the two sidecars the request meets (in memory), the proxy's table and its decision;
`check` must not get slower for it (tests/test_packaging.py holds `check`'s imports). Run it
from an installed copy, as users run meshc:

    python -m venv /tmp/v && /tmp/v/bin/pip install . && /tmp/v/bin/python benchmarks/trace_vs_check.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from compile_scale import child_env  # noqa: E402

# (file, trace arguments): a denial through both hops, a keyed split, a fault
CASES = [
    ("examples/zero-trust.mesh", ["--from", "frontend", "GET http://payments/api/charges/42"]),
    ("examples/canary.mesh", ["--from", "frontend", "GET http://recommendations/recommendations/7",
                              "-H", "x-user-bucket: 93"]),
    ("examples/resilience.mesh", ["--from", "orders", "GET http://orders/orders/12", "-H", "x-chaos: on"]),
]


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.decode()[-500:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    meshc = [sys.executable, "-m", "compiler"]
    wall(meshc + ["check", CASES[0][0]])   # warm the grammar cache and the bytecode
    ratios = []
    print(f"{'file':<28} {'check ms':>9} {'trace ms':>9} {'ratio':>6}")
    for path, trace_args in CASES:
        check_times, trace_times = [], []
        for _ in range(args.runs):
            check_times.append(wall(meshc + ["check", path]))
            trace_times.append(wall(meshc + ["trace", path] + trace_args))
        check, trace = statistics.median(check_times), statistics.median(trace_times)
        ratios.append(trace / check)
        print(f"{path:<28} {check * 1000:>9.0f} {trace * 1000:>9.0f} {trace / check:>5.2f}x", flush=True)
    print(f"worst ratio {max(ratios):.2f}x (target: within 2x)")


if __name__ == "__main__":
    main()
