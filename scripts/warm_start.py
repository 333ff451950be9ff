"""Warm starts measured: fresh processes, from spawn to the first prediction, with the CPU seconds of each stage.

Each run is a new ``python -c`` process (bytecode written: an installed package has its .pyc files) that
imports numpy and ``bnn_runtime``, loads MODEL and predicts one image, with the kernels already in the cache
(the driver's machine code, run without numba: bnn_runtime/native.py). Printed per tree: the wall time from
spawn to the first prediction (min / median / max, and how many runs took over 0.5 s), the median CPU seconds
of import numpy, the runtime's import + ``load``, and the first ``predict`` (batch 1), and in how many runs
numba was imported. ``--numba`` interleaves the same tree with BNN_NATIVE=0 (numba's cached driver, as before
native.py), ``--compare DIR`` a second checkout (its ``bnn_runtime`` on PYTHONPATH, its own cache directory),
run after run, for a before/after on a shared machine::

    .venv/bin/python scripts/warm_start.py tests/golden/lenet5_mnist.bnn --runs 12 [--numba] [--compare /tmp/old]

The first run of each tree fills its cache (BNN_CACHE_DIR under a temporary directory) and is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("numpy", "load", "batch1")
CHILD = """
import sys, time
w0, c0 = time.time(), time.process_time()
cpu = []
import numpy as np
cpu.append(time.process_time())
import bnn_runtime
model = bnn_runtime.load(sys.argv[1])
x = np.zeros((1, *model.input_shape), np.uint8)
cpu.append(time.process_time())
model.predict(x)
cpu.append(time.process_time())
end = time.time()
print(end, int("numba" in sys.modules), *(b - a for a, b in zip([c0] + cpu, cpu)))
"""


def run_once(model: Path, tree: Path, cache: Path, env_extra: dict) -> tuple[float, list[float], int]:
    """(seconds from spawn to the first prediction, CPU seconds per stage, numba imported) of one fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "BNN_NATIVE")}
    env.update(PYTHONPATH=str(tree), BNN_CACHE_DIR=str(cache), **env_extra)
    t = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD, str(model)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"error: the child process failed: {out.stderr.strip().splitlines()[-1:]}")
    end, numba, *cpu = map(float, out.stdout.split())
    return end - t, cpu, int(numba)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--compare", type=Path, help="another checkout, interleaved")
    ap.add_argument("--numba", action="store_true", help="this checkout with BNN_NATIVE=0 too, interleaved")
    ap.add_argument("--pause", type=float, default=0.3, help="seconds between runs")
    a = ap.parse_args()
    trees = {"this": (ROOT, "this", {})}  # name: (checkout, cache, environment)
    if a.numba:
        trees["this, BNN_NATIVE=0"] = (ROOT, "this", {"BNN_NATIVE": "0"})
    if a.compare:
        trees["compare"] = (a.compare.resolve(), "compare", {})
    with tempfile.TemporaryDirectory() as tmp:
        for tree, cache, env in trees.values():
            run_once(a.model, tree, Path(tmp) / cache, env)  # fills the cache (and the .pyc files)
        results: dict[str, list] = {name: [] for name in trees}
        for _ in range(a.runs):
            for name, (tree, cache, env) in trees.items():
                results[name].append(run_once(a.model, tree, Path(tmp) / cache, env))
                time.sleep(a.pause)
    for name, rs in results.items():
        first = sorted(r[0] for r in rs)
        cpu = {s: round(statistics.median(r[1][i] for r in rs), 3) for i, s in enumerate(STAGES)}
        print(
            json.dumps(
                {
                    "tree": f"{trees[name][0]}" + (" (BNN_NATIVE=0)" if trees[name][2] else ""),
                    "first_prediction_s": [round(first[0], 3), round(statistics.median(first), 3), round(first[-1], 3)],
                    "over_0.5_s": f"{sum(f > 0.5 for f in first)}/{len(first)}",
                    "median_cpu_s": cpu,
                    "cpu_total_s": round(sum(cpu.values()), 3),
                    "numba_imported": f"{sum(r[2] for r in rs)}/{len(rs)}",
                }
            )
        )
    print(f"(load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
