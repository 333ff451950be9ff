"""``bnn bench-ensemble``: runs per hour of a reproduction cell as ensembles against one run at a time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bnn_train.reproduce.experiments import DEFAULT_ENSEMBLE

from .common import CliError, command_line
from .train import Device


def bench_ensemble(
    table: Annotated[str, typer.Argument(help="Experiment name (bnn reproduce --list), e.g. table14.")],
    only: Annotated[
        str | None,
        typer.Option(help="Pick the cell, e.g. bs=256,lr=0.1,config=heaviside/rect (the first kept cell is timed)."),
    ] = None,
    runs: Annotated[int, typer.Option(help="Runs of the cell on each side.")] = 8,
    epochs: Annotated[int, typer.Option(help="Epochs per run.")] = 1,
    ensemble: Annotated[int, typer.Option(help="Members per ensemble.")] = DEFAULT_ENSEMBLE,
    rounds: Annotated[
        int, typer.Option(help="Interleaved rounds (one at a time, then ensembles); the fastest of each side counts.")
    ] = 1,
    device: Annotated[Device, typer.Option(help="auto = cuda when available.")] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the IDX files of mnist / fashion-mnist.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch [default: all cores].")] = None,
) -> None:
    """Time RUNS runs of one reproduction cell one at a time and as ensembles of K, interleaved in one process.

    Prints JSON: seconds per side and round, runs per hour, their ratio and each side's test accuracies.
    """
    from bnn_train.reproduce.bench import ensemble_speedup
    from bnn_train.reproduce.experiments import get_experiment, select_cells
    from bnn_train.train import set_threads

    for name, value in (("--runs", runs), ("--epochs", epochs), ("--ensemble", ensemble), ("--rounds", rounds)):
        if value < 1:
            raise CliError(f"{name} must be a positive integer, got {value}")
    exp = get_experiment(table)
    cells = select_cells(exp, only)
    if not cells:
        raise CliError(f"--only {only} keeps no cell of {exp.name}")
    set_threads(threads)
    result = ensemble_speedup(
        exp, cells[0], runs, epochs, ensemble, rounds, device.value, str(data_dir) if data_dir else None
    )
    result["command"] = command_line()
    typer.echo(json.dumps(result, indent=2))
