"""The parallel path through the native driver (bnn_runtime/native.py) against numba's, side by side in one process.

For MODEL, at 1 and 2 threads, the same large batch through the driver loaded from its native file and through
numba's compiled driver, interleaved (best of --runs, a short pause between): images per second, and the
process's CPU seconds per wall second while a batch runs (about 2 when both threads compute at once: the
native call releases the GIL as numba's does). Scores are checked equal to the reference on the first runs::

    .venv/bin/python scripts/native_parallel.py tests/golden/lenet5_mnist.bnn [--images 8192] [--runs 7]

On a machine shared with other work the 2-thread numbers say little (both paths alike); run it quiet.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bnn_runtime import compiled, native
from bnn_runtime.format import read_bnn
from bnn_runtime.model import BnnModel
from bnn_runtime.reference import reference_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--images", type=int, default=8192)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    bnn = read_bnn(a.model)
    uses = BnnModel(bnn).plan.uses
    drivers = {"numba": compiled.specialised(uses), "native": native.load(uses)}  # (specialised writes the file)
    if drivers["native"] is None:
        raise SystemExit("error: no native driver for this model here (BNN_NATIVE=0, or not loadable)")
    x = np.random.default_rng(0).integers(0, 256, (a.images, *bnn.input_shape), dtype=np.uint8)
    ref = reference_scores(bnn, x[:256])
    best: dict[str, float] = {}
    ratio: dict[str, float] = {}
    for run in range(a.runs):
        for name, driver in drivers.items():
            compiled._drivers.clear()
            compiled._drivers[uses] = driver
            for threads in (1, 2):
                model = BnnModel(bnn, threads=threads)
                if run == 0 and not np.array_equal(model.scores(x)[:256], ref):
                    raise SystemExit(f"error: {name} at {threads} threads: scores differ from the reference")
                w, c = time.perf_counter(), time.process_time()
                model.predict(x)
                wall, cpu = time.perf_counter() - w, time.process_time() - c
                key = f"{name}, {threads} thread{'s' * (threads > 1)}"
                if wall < best.get(key, float("inf")):
                    best[key], ratio[key] = wall, cpu / wall
                time.sleep(0.05)
    table = {k: {"images_per_s": round(a.images / v), "cpu_per_wall": round(ratio[k], 2)} for k, v in best.items()}
    print(json.dumps(table))


if __name__ == "__main__":
    main()
