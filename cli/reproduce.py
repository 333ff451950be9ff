"""``bnn reproduce``: re-run one of the paper's result tables (2-14) and report it beside the paper's numbers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bnn_train.config import MAX_EPOCHS
from bnn_train.reproduce.experiments import DEFAULT_ENSEMBLE, PAPER_RUNS, POOL_READINGS

from .choices import Device, _enum
from .common import CliError, command_line, positive, progress_bar, stderr_console
from .paths import check_output_dir

PoolReading = _enum("PoolReading", POOL_READINGS)


def reproduce(
    table: Annotated[
        str | None, typer.Argument(help="Experiment name: table2 ... table11, table13, table14.", show_default=False)
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the experiments and exit.")] = False,
    runs: Annotated[int, typer.Option(help="Runs per cell (the paper's number).", callback=positive)] = PAPER_RUNS,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Epochs per run (default: per experiment, see --list).", show_default=False, callback=positive
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output folder (default: repro/TABLE); re-run the same command to resume.", show_default=False
        ),
    ] = None,
    device: Annotated[Device, typer.Option(help="auto = cuda when available.")] = "auto",
    seed: Annotated[int, typer.Option(help="Run i of every cell uses seed SEED + i.")] = 0,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder with the IDX files of mnist / fashion-mnist (or with mnist/ and fashion-mnist/ in it)."
        ),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(
            help="Keep only some cells, e.g. bs=256,lr=0.1,config=relu/tied (a key given twice keeps either value)."
        ),
    ] = None,
    max_cells: Annotated[
        int | None, typer.Option(help="Keep only the first N cells (after --only).", callback=positive)
    ] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Write the CSV and the Markdown only.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar (a line per run still prints).")
    ] = False,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch [default: all cores].")] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Send the runs to a Ray cluster as tasks: 'local' starts one here, HOST:PORT joins one "
            "(needs the [ray] extra; --out on storage every worker sees)."
        ),
    ] = None,
    pool: Annotated[
        PoolReading,
        typer.Option(
            help="LeNet-5 pooling: qmean = the paper's quadratic mean after the activation (§4.1); max = max-pool "
            "the pre-activations, then the activation "
            "(docs/REPRODUCTION.md, 'Step/I: the gap, settled')."
        ),
    ] = "qmean",
    ensemble: Annotated[
        int | None,
        typer.Option(
            help="Train up to K runs of a cell at once as one batched network (1: one at a time) "
            "[default: 8, on the CPU too: 3.4x the runs per hour of one at a time, docs/REPRODUCTION.md]. "
            "Members match their one-at-a-time runs within the tolerance of docs/REPRODUCTION.md.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Re-run a table of the paper's §4-5: results.csv, report.md (ours next to the paper's) and plots.

    Every run: plain SGD without momentum; loss averaged over the batch (summed in table3).
    Cross-entropy for the MLP and LeNet-5, squared error on the output for the SUC.
    Float weights, torch's default init, BatchNorm only for +bn, gradient-norm clip 1 for +gc.
    LeNet-5 pools with the quadratic mean, also with a Heaviside forward (--pool max: the other reading).
    Run i of a cell uses seed SEED + i. Run the same command again to resume.
    Reasons and our results: docs/REPRODUCTION.md.
    """
    from bnn_train.reproduce.experiments import EXPERIMENTS, get_experiment, select_cells

    if list_:
        _print_list(EXPERIMENTS)
        return
    if table is None:
        raise CliError(f"name an experiment ({', '.join(EXPERIMENTS)}) or pass --list")
    exp = get_experiment(table, pool=PoolReading(pool).value)
    if ensemble is None:
        ensemble = DEFAULT_ENSEMBLE
    if ensemble < 1:
        raise CliError(f"--ensemble must be a positive integer (1: one run at a time), got {ensemble}")
    epochs = epochs or exp.epochs
    if epochs > MAX_EPOCHS:  # (before any run starts; a run's TrainConfig says the same)
        raise CliError(f"--epochs {epochs} is above the limit of {MAX_EPOCHS}")
    cells = select_cells(exp, only, max_cells)
    if not cells:
        raise CliError(f"--only {only} keeps no cell of {exp.name}")
    out = out or Path("repro") / exp.name
    check_output_dir("--out", out)
    command = command_line() if sys.argv[1:2] == ["reproduce"] else None

    from bnn_train.reproduce.runner import finished_rows, run_reproduction, write_outputs
    from bnn_train.train import set_threads

    set_threads(threads)
    if ensemble > 1 and device.value != "cuda":
        from bnn_train.cpu_memory import keep_freed_memory

        keep_freed_memory()  # the ensembles' activations are K times a run's: reuse them (bnn_train/cpu_memory.py)

    progress = _Progress(exp, quiet)
    rows: list[dict] = []
    try:
        with progress:
            rows = run_reproduction(
                exp,
                cells,
                out,
                runs,
                epochs,
                seed,
                device.value,
                str(data_dir) if data_dir else None,
                listener=progress,
                ensemble=ensemble,
                ray_address=ray,
                threads=threads,
            )
    finally:  # also when interrupted or failed: report what has finished
        if not rows and progress.started:
            rows = finished_rows(out, cells, runs, seed)
        if rows:
            written = write_outputs(exp, cells, rows, out, epochs, seed, command, plots=not no_plots)
    n_png = len(written["heatmaps"]) + len(written["curves"]) if rows else 0
    typer.echo(
        f"{out}: {len(rows)} of {runs * len(cells)} runs finished ({len(cells)} cells x {runs} runs, "
        f"{epochs} epochs); {out / 'report.md'} and {n_png} plots"
    )


def _print_list(experiments) -> None:
    from bnn_train.reproduce.experiments import PAPER_RUNS

    typer.echo("name     table  model   dataset        cells  paper runs  default epochs  grid")
    for e in experiments.values():
        typer.echo(
            f"{e.name:<8} {e.table:>5}  {e.model:<7} {e.dataset:<14} {len(e.cells()):>5}  {PAPER_RUNS:>10}  "
            f"{e.epochs:>14}  {e.grid_text()}"
        )
        typer.echo(f"{'':>15}configs: {', '.join(e.configs)}" + (f"  [{e.note}]" if e.note else ""))
    typer.echo(
        "All runs: SGD without momentum, loss averaged over the batch (summed in table3), float weights, "
        "default init, BatchNorm only for +bn, grad-norm clip 1 for +gc, LeNet-5 with quadratic-mean pooling. "
        "See docs/REPRODUCTION.md."
    )


class _Progress:
    """A runner Listener: one rich bar over all runs (done / total, ETA), a line per finished run."""

    def __init__(self, exp, quiet: bool):
        self.exp, self.quiet = exp, quiet
        self.console = stderr_console()
        self.progress = progress_bar(f"[bold]{exp.name}", self.console, disable=quiet)
        self.task = None
        self.started = False

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def on_plan(self, total, done):
        self.started = True
        self.task = self.progress.add_task("runs", total=total, completed=done, status="")
        if done:
            self.console.print(f"{self.exp.name}: {done} of {total} runs already finished, resuming")

    def on_run_start(self, spec):
        self.progress.update(self.task, status=f"{spec.key}")

    def on_epoch(self, spec, record):
        self.progress.update(self.task, status=f"{spec.key} epoch {record['epoch']} acc {record['test_accuracy']:.3f}")

    def on_run_failed(self, spec, reason):
        self.console.print(f"{spec.key}: failed ({reason}); run the same command again to retry it", markup=False)

    def on_run_end(self, spec, row, reused):
        self.progress.advance(self.task)
        acc = float(row["test_accuracy"]) if row["test_accuracy"] not in ("", None) else float("nan")
        self.console.print(
            f"{spec.key}: test accuracy {acc:.4f} in {float(row['seconds']):.1f} s"
            + (" — diverged" if int(row["diverged"]) else "")
            + (" (recovered)" if reused else "")
        )
