"""Batch-1 latency of one image shared between threads (split.py) against one thread, in one process.

For docs/PERFORMANCE.md (*One image on two threads*): a model loaded with ``threads=1`` and one with
``threads=2`` (which splits a batch of 1 when the model has enough work per image), called in turns,
``CALLS`` calls of batch 1 per turn with a short pause between turns; prints the best, 10th percentile
and median microseconds of each and their ratios. On a shared machine the helper thread often gets no
core until the calling thread is done: read the ratio of a quiet machine.

    .venv/bin/python scripts/split_latency.py MODEL.bnn [TURNS]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from bnn_runtime import BnnModel, read_bnn

CALLS = 10
PAUSE = 0.02


def main(path: str, turns: int = 30) -> None:
    bnn = read_bnn(path)
    models = {threads: BnnModel(bnn, threads=threads) for threads in (1, 2)}
    x = np.random.default_rng(0).integers(0, 256, (1, *bnn.input_shape), dtype=np.uint8)
    assert np.array_equal(models[1].scores(x), models[2].scores(x))
    times = {threads: [] for threads in models}
    for _ in range(turns):
        for threads, model in models.items():
            for _ in range(CALLS):
                t = time.perf_counter()
                model.predict(x)
                times[threads].append(time.perf_counter() - t)
            time.sleep(PAUSE)
    stats = {t: np.percentile(np.array(v) * 1e6, [0, 10, 50]) for t, v in times.items()}
    for threads, (best, p10, median) in stats.items():
        print(f"threads {threads}: best {best:7.1f} us, p10 {p10:7.1f} us, median {median:7.1f} us")
    ratio = stats[2] / stats[1]
    print(f"2 threads / 1 thread: best {ratio[0]:.2f}, p10 {ratio[1]:.2f}, median {ratio[2]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
