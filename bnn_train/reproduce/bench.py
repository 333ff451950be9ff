"""Throughput of a reproduction cell: K runs as one ensemble against the same runs one at a time, interleaved.

Both sides do the whole work of a run as ``bnn reproduce`` does it (load the data, build, train,
evaluate every epoch, write the run directory), into a temporary folder, alternating within one
process so that a busy machine slows both alike. The ratio of runs per hour is the figure of merit.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

from .experiments import Cell, Experiment


def ensemble_speedup(
    exp: Experiment,
    cell: Cell,
    runs: int,
    epochs: int,
    ensemble: int,
    rounds: int = 1,
    device: str = "auto",
    data_dir: str | None = None,
    seed: int = 0,
) -> dict:
    """Seconds for ``runs`` runs of ``cell`` one at a time and as ensembles of ``ensemble``, ``rounds`` times each."""
    from ..cpu_memory import keep_freed_memory
    from ..ensemble_fit import fit_ensemble
    from ..train import fit

    keep_freed_memory()  # what fit_ensemble sets on the CPU, set before either side runs: both under the same malloc

    cfgs = [exp.run_config(cell, epochs, seed + i, device, data_dir) for i in range(runs)]
    single, together = [], []
    accuracy: dict[str, list[float]] = {"one_at_a_time": [], "ensemble": []}
    with tempfile.TemporaryDirectory(prefix="bnn-bench-ensemble-") as tmp:
        for r in range(rounds):
            start = time.perf_counter()
            finals = [fit(c, Path(tmp, f"single{r}", str(i)), plot=False) for i, c in enumerate(cfgs)]
            single.append(time.perf_counter() - start)
            accuracy["one_at_a_time"] = [f["test_accuracy"] for f in finals]
            start = time.perf_counter()
            finals = []
            for g in range(math.ceil(runs / ensemble)):
                group = cfgs[g * ensemble : (g + 1) * ensemble]
                finals += fit_ensemble(group, [Path(tmp, f"ens{r}", str(g * ensemble + i)) for i in range(len(group))])
            together.append(time.perf_counter() - start)
            accuracy["ensemble"] = [f["test_accuracy"] for f in finals]
    best_single, best_together = min(single), min(together)
    return {
        "experiment": exp.name,
        "cell": cell.name,
        "runs": runs,
        "epochs": epochs,
        "ensemble": ensemble,
        "rounds": rounds,
        "seconds_one_at_a_time": single,
        "seconds_ensemble": together,
        "runs_per_hour_one_at_a_time": runs * 3600 / best_single,
        "runs_per_hour_ensemble": runs * 3600 / best_together,
        "speedup": best_single / best_together,
        "test_accuracy": accuracy,
    }
