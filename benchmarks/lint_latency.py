"""Lint latency, where editors and pre-commit hooks feel it. Side by side in one run, interleaved:

- `python -c pass` (the floor every Python command pays),
- `meshc lint ONE.mesh` on a generated 300-line file, whole process, without the cache
  (`--no-cache`: what the first hook run pays) and with it (every later run on unchanged files),
- `meshc lint examples/`, whole process, without and with the cache,
- the in-process re-check of a 1,000-line document after a one-line edit: from scratch
  (`compiler.tooling.lsp.analysis.check_document`) and as the language server does it, with the
  document's parse cache (`analyse_document(uri, text, cache)`: only the edited item is parsed
  again), interleaved.

Medians over --runs runs. Targets (issue 19): whole-process lint of one file, uncached, at most
5x `python -c pass`; the server's re-check at most a third of the full re-check.
Run it from an installed copy, as users run meshc:

    python -m venv /tmp/v && /tmp/v/bin/pip install . && /tmp/v/bin/python benchmarks/lint_latency.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from compile_scale import child_env, generate  # noqa: E402  (the same generated policies)


def wall(cmd: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def lines_for(target: int) -> str:
    """A generated policy of about `target` lines (each generated service is about 30 lines)."""
    n = 1
    while generate(n + 1).count("\n") <= target:
        n += 1
    return generate(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    meshc = [sys.executable, "-m", "compiler", "lint", "--exit-zero"]
    with tempfile.TemporaryDirectory() as tmp:
        one = os.path.join(tmp, "one.mesh")
        with open(one, "w", encoding="utf-8") as fh:
            fh.write(lines_for(300))
        examples = os.path.join(ROOT, "examples")
        cases = {
            "python -c pass": ([sys.executable, "-c", "pass"], tmp),
            "lint one file (300 lines), no cache": (meshc + ["--no-cache", one], tmp),
            "lint one file (300 lines), cached": (meshc + [one], tmp),
            "lint examples/, no cache": (meshc + ["--no-cache", examples], tmp),
            "lint examples/, cached": (meshc + [examples], tmp),
        }
        for cmd, cwd in cases.values():  # warm: grammar tables, bytecode, the lint cache
            wall(cmd, cwd)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):  # interleaved rounds: load changes hit every case alike
            for name, (cmd, cwd) in cases.items():
                times[name].append(wall(cmd, cwd))
        from compiler.syntax.parse import ItemCache
        from compiler.tooling.lsp.analysis import analyse_document, check_document

        doc = lines_for(1000)
        uri = "file://" + os.path.join(tmp, "doc.mesh")
        lines = doc.split("\n")
        middle = len(lines) // 2

        def keystroke(i: int) -> str:  # a one-line edit in the middle of the document, new each time
            edited = list(lines)
            edited[middle] += f"  # keystroke {i}"
            return "\n".join(edited)

        check_document(uri, doc)
        cache = ItemCache()
        analyse_document(uri, doc, cache)
        recheck, incremental = [], []
        for i in range(args.runs):  # interleaved: a full re-check, then the language server's
            text = keystroke(i)
            start = time.perf_counter()
            check_document(uri, text)
            recheck.append(time.perf_counter() - start)
            start = time.perf_counter()
            analyse_document(uri, text, cache)
            incremental.append(time.perf_counter() - start)
    floor = statistics.median(times["python -c pass"])
    print(f"{'case':42} {'median':>9} {'x python -c pass':>17}")
    for name, values in times.items():
        m = statistics.median(values)
        print(f"{name:42} {m * 1000:7.0f} ms {m / floor:16.1f}x")
    full, inc = statistics.median(recheck), statistics.median(incremental)
    print(f"{'in-process full re-check, ' + str(doc.count(chr(10))) + ' lines':42} {full * 1000:7.1f} ms")
    print(f"{'in-process incremental re-check (server)':42} {inc * 1000:7.1f} ms {inc / full:16.2f}x full")


if __name__ == "__main__":
    main()
