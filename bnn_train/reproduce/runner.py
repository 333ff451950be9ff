"""Run a reproduction: plan every (cell, run), train each with ``bnn_train.fit``, append one CSV row per run.

Layout of ``OUT`` (one experiment per folder)::

    OUT/reproduce.json          experiment, epochs, seed base, pooling, ensemble size: a resume must match them
    OUT/results.csv             one row per finished run, appended (and fsynced) as each run ends
    OUT/runs/CELL/seedS/        the run directory bnn_train writes (config, checkpoint, metrics.jsonl)
    OUT/report.md, *.png        written by report.py and plots.py after the runs (also when interrupted)

Runs go run index first (every cell's run 0, then every cell's run 1, ...), so a reproduction cut
short has the same number of runs in every cell, give or take one. Resuming skips every run
with a CSV row, recovers a row from a finished run directory (killed between the two writes),
and continues an interrupted run from its last epoch checkpoint (``bnn_train.train.resume``).

With ``ensemble`` K > 1 the runs of a cell train K at a time as one batched network
(``bnn_train.ensemble_fit``): up to K runs of a cell that have not started form one work unit,
cells interleaved unit by unit (every cell's runs 0..K-1, then K..2K-1, ...). Each member
still writes its own run directory and CSV row; a row's ``seconds`` is the unit's wall time
divided by its members. A run interrupted mid-way continues on its own, as with K = 1.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .. import rundir
from ..errors import CheckpointError
from .experiments import DEFAULT_ENSEMBLE, Cell, CellKey, Experiment, ReproduceError

MANIFEST = "reproduce.json"
RESULTS = "results.csv"
RUNS = "runs"
FIELDS = (
    "run_key",
    "table",
    "model",
    "dataset",
    "config",
    "dim",
    "hidden",
    "batch_size",
    "lr",
    "run",
    "seed",
    "epochs",
    "test_accuracy",
    "best_test_accuracy",
    "train_accuracy",
    "final_loss",
    "test_loss",
    "diverged",
    "seconds",
    "device",
)


@dataclass(frozen=True)
class RunSpec:
    cell: Cell
    run: int  # 0-based index within the cell
    seed: int

    @property
    def key(self) -> str:
        return f"{self.cell.name}/seed{self.seed}"


class Listener:
    """Progress hooks; every method is optional."""

    def on_plan(self, total: int, done: int) -> None: ...

    def on_run_start(self, spec: RunSpec) -> None: ...

    def on_epoch(self, spec: RunSpec, record: dict) -> None: ...

    def on_run_end(self, spec: RunSpec, row: dict, reused: bool) -> None: ...

    def on_run_failed(self, spec: RunSpec, reason: str) -> None: ...


def plan(cells: list[Cell], runs: int, seed: int) -> list[RunSpec]:
    """Run i of every cell uses seed ``seed + i``; run-index-major order."""
    return [RunSpec(cell=cell, run=i, seed=seed + i) for i in range(runs) for cell in cells]


def check_manifest(out: Path, exp: Experiment, epochs: int, seed: int, ensemble: int) -> None:
    """Write ``reproduce.json``, or check that an existing one describes the same reproduction (the ensemble size
    too: members match their one-at-a-time runs only within a tolerance, so one table does not mix the two)."""
    path = out / MANIFEST
    want = {"experiment": exp.name, "epochs": epochs, "seed": seed, "pool": exp.pool, "ensemble": ensemble}
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except (OSError, ValueError):
            raise ReproduceError(f"{path} is unreadable; remove it or choose another --out") from None
        have.setdefault("pool", "qmean")  # written before --pool existed: the paper's pooling
        have.setdefault("ensemble", 1)  # written when the CPU trained one run at a time
        for k, v in want.items():
            if have.get(k) != v:
                same = "" if k == "experiment" else f"pass --{k} {have.get(k)} or "
                raise ReproduceError(
                    f"{out} holds a reproduction with {k}={have.get(k)}, not {v}; {same}choose another --out"
                )
        return
    out.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_json(path, want)


def read_results(out: Path) -> list[dict]:
    """The rows of ``results.csv``; a torn last line (killed mid-write) is dropped from the file."""
    path = out / RESULTS
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        rundir.atomic_write_bytes(path, text.encode())
    rows = list(csv.DictReader(io.StringIO(text)))
    return [r for r in rows if r.get("run_key") and None not in r.values()]


def _append(out: Path, row: dict) -> None:
    path = out / RESULTS
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def _row(
    exp: Experiment, spec: RunSpec, epochs: int, final: dict, history: list[dict], seconds: float, device: str
) -> dict:
    last = history[-1] if history else {}
    c = spec.cell
    return {
        "run_key": spec.key,
        "table": exp.table,
        "model": exp.model,
        "dataset": exp.dataset,
        "config": c.config,
        "dim": "" if c.dim is None else c.dim,
        "hidden": "" if c.hidden is None else c.hidden,
        "batch_size": c.batch_size,
        "lr": f"{c.lr:g}",
        "run": spec.run,
        "seed": spec.seed,
        "epochs": epochs,
        "test_accuracy": final["test_accuracy"],
        "best_test_accuracy": final["best_test_accuracy"],
        "train_accuracy": final["train_accuracy"],
        "final_loss": final["loss"],
        "test_loss": last.get("test_loss"),
        "diverged": int(bool(final["diverged"])),
        "seconds": round(seconds, 2),
        "device": device,
    }


def _train(
    exp: Experiment, spec: RunSpec, run_dir: Path, epochs: int, device: str, data_dir: str | None, listener: Listener
) -> tuple[dict, float]:
    """Train (or finish) one run; returns (final metrics, seconds spent here)."""
    from ..train import Callback, fit, resume  # the models and datasets are imported only when something runs

    class EpochHook(Callback):
        def on_epoch(self, record: dict) -> None:  # finished epochs go to the listener
            listener.on_epoch(spec, record)

    hook = EpochHook()
    start = time.perf_counter()
    if (run_dir / rundir.CHECKPOINT).exists():
        try:
            final = resume(run_dir, epochs=epochs, data_dir=data_dir, device=device, callback=hook, plot=False)
            return final, time.perf_counter() - start
        except CheckpointError:  # unreadable: start the run again
            shutil.rmtree(run_dir)
    cfg = exp.run_config(spec.cell, epochs, spec.seed, device, data_dir)
    final = fit(cfg, run_dir, callback=hook, plot=False)
    return final, time.perf_counter() - start


def _train_group(
    exp: Experiment,
    specs: list[RunSpec],
    run_dirs: list[Path],
    epochs: int,
    device: str,
    data_dir: str | None,
    listener: Listener,
) -> tuple[list[dict], float]:
    """Train fresh runs of one cell together as an ensemble; returns (their final metrics, seconds per run)."""
    import torch

    from ..ensemble_fit import fit_ensemble
    from ..train import Callback

    class EpochHook(Callback):
        def __init__(self, spec):
            self.spec = spec

        def on_epoch(self, record: dict) -> None:
            listener.on_epoch(self.spec, record)

    for d in run_dirs:  # a member that never finished its first epoch left at most a config file
        if d.exists() and not (d / rundir.CHECKPOINT).exists():
            shutil.rmtree(d)
    cfgs = [exp.run_config(s.cell, epochs, s.seed, device, data_dir) for s in specs]
    start = time.perf_counter()
    try:
        finals = fit_ensemble(cfgs, run_dirs, callbacks=[EpochHook(s) for s in specs])
    except CheckpointError:  # members' checkpoints disagree (killed between two writes): one at a time
        finals = [
            _train(exp, s, d, epochs, device, data_dir, listener)[0] for s, d in zip(specs, run_dirs, strict=False)
        ]
    except torch.cuda.OutOfMemoryError:
        raise ReproduceError(
            f"the GPU ran out of memory training {len(specs)} runs as one ensemble; pass a smaller --ensemble"
        ) from None
    except (MemoryError, RuntimeError) as e:  # the CPU's allocator: "DefaultCPUAllocator: can't allocate memory"
        if isinstance(e, RuntimeError) and "can't allocate memory" not in str(e):
            raise
        raise ReproduceError(
            f"the machine ran out of memory training {len(specs)} runs as one ensemble; pass a smaller --ensemble"
        ) from None
    return finals, (time.perf_counter() - start) / len(specs)


def work_units(specs: list[RunSpec], out: Path, ensemble: int) -> list[list[RunSpec]]:
    """The runs to train, as units trained together: up to K runs of one cell that have finished the same number
    of epochs (0 for fresh ones), cells interleaved unit by unit."""
    if ensemble <= 1:
        return [[s] for s in specs]
    groups: dict[tuple, list[RunSpec]] = {}
    for s in specs:
        groups.setdefault((s.cell, len(rundir.read_metrics_lines(_run_dir(out, s)))), []).append(s)
    chunks = {key: [v[i : i + ensemble] for i in range(0, len(v), ensemble)] for key, v in groups.items()}
    rounds = max((len(v) for v in chunks.values()), default=0)
    return [chunks[key][i] for i in range(rounds) for key in chunks if i < len(chunks[key])]


def _recover(run_dir: Path, epochs: int) -> dict | None:
    """Final metrics of a run that finished but has no CSV row yet, else None."""
    path = run_dir / rundir.METRICS
    if not path.exists():
        return None
    final = json.loads(path.read_text())
    return final if final.get("epochs") == epochs or final.get("diverged") else None


def run_reproduction(
    exp: Experiment,
    cells: list[Cell],
    out: str | Path,
    runs: int,
    epochs: int,
    seed: int = 0,
    device: str = "auto",
    data_dir: str | None = None,
    listener: Listener | None = None,
    ensemble: int = DEFAULT_ENSEMBLE,
    ray_address: str | None = None,
    threads: int | None = None,
) -> list[dict]:
    """Train every planned run not yet in ``OUT/results.csv`` (``ensemble`` runs of a cell at a time; as Ray
    tasks on the cluster at ``ray_address``, "local" for one started here); returns the rows of the planned runs
    (finished ones: a run that failed on Ray has none, and the same call again trains it)."""
    if not (isinstance(ensemble, int) and ensemble >= 1):
        raise ReproduceError(f"--ensemble must be a positive integer (1: one run at a time), got {ensemble}")
    listener = listener or Listener()
    out = Path(out)
    if ray_address is not None:  # before anything is written: an unreachable cluster leaves OUT as it was
        from . import ray_backend

        ray = ray_backend.connect(ray_address)
    check_manifest(out, exp, epochs, seed, ensemble)
    specs = plan(cells, runs, seed)
    done = {r["run_key"]: r for r in read_results(out)}
    todo = [s for s in specs if s.key not in done]
    listener.on_plan(len(specs), len(specs) - len(todo))
    rows = {s.key: done[s.key] for s in specs if s.key in done}

    def finish(spec: RunSpec, final: dict, seconds: float, reused: bool) -> None:
        run_dir = _run_dir(out, spec)
        used = json.loads((run_dir / rundir.CONFIG).read_text()).get("device", device)
        row = _row(exp, spec, epochs, final, rundir.read_metrics_lines(run_dir), seconds, used)
        _append(out, row)
        rows[spec.key] = row
        listener.on_run_end(spec, row, reused)

    pending = []
    for spec in todo:  # finished but unrecorded runs (killed between the two writes) first
        final = _recover(_run_dir(out, spec), epochs)
        if final is None:
            pending.append(spec)
        else:
            finish(spec, final, float(final.get("train_seconds") or 0.0), True)
    units = work_units(pending, out, ensemble)
    if ray_address is not None:
        for unit in units:
            for spec in unit:
                listener.on_run_start(spec)
        ray_backend.run_units(
            ray,
            units,
            exp,
            out,
            epochs,
            device,
            data_dir,
            threads,
            on_done=lambda unit, finals, seconds: [
                finish(s, f, seconds, False) for s, f in zip(unit, finals, strict=False)
            ],
            on_failed=lambda unit, why: [listener.on_run_failed(s, why) for s in unit],
        )
        units = []
    for unit in units:
        for spec in unit:
            listener.on_run_start(spec)
        if len(unit) == 1:
            final, seconds = _train(exp, unit[0], _run_dir(out, unit[0]), epochs, device, data_dir, listener)
            finish(unit[0], final, seconds, False)
            continue
        finals, seconds = _train_group(exp, unit, [_run_dir(out, s) for s in unit], epochs, device, data_dir, listener)
        for spec, final in zip(unit, finals, strict=False):
            finish(spec, final, seconds, False)
    return [rows[s.key] for s in specs if s.key in rows]


def _run_dir(out: Path, spec: RunSpec) -> Path:
    return out / RUNS / spec.cell.name / f"seed{spec.seed}"


def finished_rows(out: str | Path, cells: list[Cell], runs: int, seed: int) -> list[dict]:
    """The CSV rows of the planned runs that have finished, in plan order."""
    done = {r["run_key"]: r for r in read_results(Path(out))}
    return [done[s.key] for s in plan(cells, runs, seed) if s.key in done]


def write_outputs(
    exp: Experiment,
    cells: list[Cell],
    rows: list[dict],
    out: str | Path,
    epochs: int,
    seed: int,
    command: str | None = None,
    plots: bool = True,
) -> dict[str, list[Path]]:
    """Write ``report.md``, the heatmaps and the training curves from the rows of the planned runs."""
    from .report import cell_stats, markdown

    out = Path(out)
    stats = cell_stats(exp, cells, rows)
    devices = sorted({str(r.get("device")) for r in rows if r.get("device")})
    report = out / "report.md"
    rundir.atomic_write_bytes(report, markdown(exp, stats, epochs, seed, devices, command).encode())
    written = {"report": [report], "heatmaps": [], "curves": []}
    if plots and rows:
        from .plots import plot_heatmaps, plot_table_curves
        from .report import row_key

        run_dirs: dict[CellKey, list[Path]] = {}
        for r in rows:
            cell_name, seed_dir = r["run_key"].split("/")
            run_dirs.setdefault(row_key(r), []).append(out / RUNS / cell_name / seed_dir)
        labels = {s.cell.config: s.paper_label for s in stats}
        written["heatmaps"] = plot_heatmaps(exp, stats, out)
        written["curves"] = plot_table_curves(exp, run_dirs, labels, out)
    return written
