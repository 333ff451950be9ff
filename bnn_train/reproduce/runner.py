"""Run a reproduction: plan every (cell, run), train each with ``bnn_train.fit``, append one CSV row per run.

Layout of ``OUT`` (one experiment per folder)::

    OUT/reproduce.json          experiment, epochs and seed base: a resumed reproduction must match them
    OUT/results.csv             one row per finished run, appended (and fsynced) as each run ends
    OUT/runs/CELL/seedS/        the run directory bnn_train writes (config, checkpoint, metrics.jsonl)
    OUT/report.md, *.png        written by report.py and plots.py after the runs (also when interrupted)

Runs go run index first (every cell's run 0, then every cell's run 1, ...), so a reproduction cut
short has the same number of runs in every cell, give or take one. Resuming skips every run
with a CSV row, recovers a row from a finished run directory (killed between the two writes),
and continues an interrupted run from its last epoch checkpoint (``bnn_train.train.resume``).
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
from .experiments import Cell, CellKey, Experiment, ReproduceError

MANIFEST = "reproduce.json"
RESULTS = "results.csv"
RUNS = "runs"
FIELDS = ("run_key", "table", "model", "dataset", "config", "dim", "hidden", "batch_size", "lr", "run", "seed",
          "epochs", "test_accuracy", "best_test_accuracy", "train_accuracy", "final_loss", "test_loss", "diverged",
          "seconds", "device")


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


def plan(cells: list[Cell], runs: int, seed: int) -> list[RunSpec]:
    """Run i of every cell uses seed ``seed + i``; run-index-major order."""
    return [RunSpec(cell=cell, run=i, seed=seed + i) for i in range(runs) for cell in cells]


def check_manifest(out: Path, exp: Experiment, epochs: int, seed: int) -> None:
    """Write ``reproduce.json``, or check that an existing one describes the same reproduction."""
    path = out / MANIFEST
    want = {"experiment": exp.name, "epochs": epochs, "seed": seed}
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except (OSError, ValueError):
            raise ReproduceError(f"{path} is unreadable; remove it or choose another --out") from None
        for k, v in want.items():
            if have.get(k) != v:
                same = "" if k == "experiment" else f"pass --{k} {have.get(k)} or "
                raise ReproduceError(f"{out} holds a reproduction with {k}={have.get(k)}, not {v}; "
                                     f"{same}choose another --out")
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


def _row(exp: Experiment, spec: RunSpec, epochs: int, final: dict, history: list[dict], seconds: float,
         device: str) -> dict:
    last = history[-1] if history else {}
    c = spec.cell
    return {
        "run_key": spec.key, "table": exp.table, "model": exp.model, "dataset": exp.dataset, "config": c.config,
        "dim": "" if c.dim is None else c.dim, "hidden": "" if c.hidden is None else c.hidden,
        "batch_size": c.batch_size, "lr": f"{c.lr:g}", "run": spec.run, "seed": spec.seed, "epochs": epochs,
        "test_accuracy": final["test_accuracy"], "best_test_accuracy": final["best_test_accuracy"],
        "train_accuracy": final["train_accuracy"], "final_loss": final["loss"], "test_loss": last.get("test_loss"),
        "diverged": int(bool(final["diverged"])), "seconds": round(seconds, 2), "device": device,
    }


def _train(exp: Experiment, spec: RunSpec, run_dir: Path, epochs: int, device: str, data_dir: str | None,
           listener: Listener) -> tuple[dict, float]:
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


def _recover(run_dir: Path, epochs: int) -> dict | None:
    """Final metrics of a run that finished but has no CSV row yet, else None."""
    path = run_dir / rundir.METRICS
    if not path.exists():
        return None
    final = json.loads(path.read_text())
    return final if final.get("epochs") == epochs or final.get("diverged") else None


def run_reproduction(exp: Experiment, cells: list[Cell], out: str | Path, runs: int, epochs: int, seed: int = 0,
                     device: str = "auto", data_dir: str | None = None, listener: Listener | None = None) -> list[dict]:
    """Train every planned run not yet in ``OUT/results.csv``; returns the rows of the planned runs."""
    listener = listener or Listener()
    out = Path(out)
    check_manifest(out, exp, epochs, seed)
    specs = plan(cells, runs, seed)
    done = {r["run_key"]: r for r in read_results(out)}
    todo = [s for s in specs if s.key not in done]
    listener.on_plan(len(specs), len(specs) - len(todo))
    rows = {s.key: done[s.key] for s in specs if s.key in done}
    for spec in todo:
        run_dir = out / RUNS / spec.cell.name / f"seed{spec.seed}"
        final, reused, seconds = _recover(run_dir, epochs), True, 0.0
        if final is None:
            listener.on_run_start(spec)
            final, seconds = _train(exp, spec, run_dir, epochs, device, data_dir, listener)
            reused = False
        else:
            seconds = float(final.get("train_seconds") or 0.0)
        used = json.loads((run_dir / rundir.CONFIG).read_text()).get("device", device)
        row = _row(exp, spec, epochs, final, rundir.read_metrics_lines(run_dir), seconds, used)
        _append(out, row)
        rows[spec.key] = row
        listener.on_run_end(spec, row, reused)
    return [rows[s.key] for s in specs]


def finished_rows(out: str | Path, cells: list[Cell], runs: int, seed: int) -> list[dict]:
    """The CSV rows of the planned runs that have finished, in plan order."""
    done = {r["run_key"]: r for r in read_results(Path(out))}
    return [done[s.key] for s in plan(cells, runs, seed) if s.key in done]


def write_outputs(exp: Experiment, cells: list[Cell], rows: list[dict], out: str | Path, epochs: int, seed: int,
                  command: str | None = None, plots: bool = True) -> dict[str, list[Path]]:
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
