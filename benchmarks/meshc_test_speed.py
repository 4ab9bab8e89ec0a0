"""`meshc test examples/` against `meshc check examples/`, whole processes, in the same run.

The target (issue 15): `meshc test` within 3x the time of `meshc check` on the same program. Both
commands run interleaved, --runs times each (after one warm-up run of each, which also fills the
grammar cache); the medians and their ratio are printed. `meshc test` checks the program, lowers
it, emits both targets' files for the sidecars the tests need, and decides every hop of every
test twice (the native proxy's decision function, the Envoy evaluator): 57 tests on the
examples. Run it from an installed copy, as users run meshc:

    python -m venv /tmp/v && /tmp/v/bin/pip install . && /tmp/v/bin/python benchmarks/meshc_test_speed.py
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

from compile_scale import child_env  # noqa: E402  (the same environment for every child)

TARGET = 3.0


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("paths", nargs="*", default=["examples/"])
    args = parser.parse_args()
    meshc = [sys.executable, "-m", "compiler"]
    cases = {"meshc check": meshc + ["check", *args.paths], "meshc test": meshc + ["test", *args.paths]}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for cmd in cases.values():
        wall(cmd)
    for _ in range(args.runs):
        for name, cmd in cases.items():
            times[name].append(wall(cmd))
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, m in medians.items():
        print(f"{name} {' '.join(args.paths)}: median {m * 1000:.0f} ms over {args.runs} runs "
              f"(min {min(times[name]) * 1000:.0f} ms)")
    ratio = medians["meshc test"] / medians["meshc check"]
    verdict = "within" if ratio <= TARGET else "NOT within"
    print(f"ratio test/check: {ratio:.2f} ({verdict} the target of {TARGET:g}x)")


if __name__ == "__main__":
    main()
