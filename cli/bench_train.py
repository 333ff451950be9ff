"""``bnn bench-train``: training images/s of binary vs float LeNet-5 (or MLP), epochs interleaved in one process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .choices import Dataset, Device, Model
from .common import CliError, command_line, positive, stderr_console

MAX_EPOCHS = 100  # a benchmark is minutes, not days (bnn train has no such limit: a long run is its job)


def bench_train(
    dataset: Annotated[Dataset, typer.Option(help="Dataset to train on.")] = "mnist",
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the IDX files of mnist/fashion-mnist.")] = None,
    model: Annotated[Model, typer.Option(help="Network to time.")] = "lenet5",
    epochs: Annotated[int, typer.Option(help="Epochs per variant (interleaved).", callback=positive)] = 3,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size.")] = 256,
    batchnorm: Annotated[bool, typer.Option(help="BatchNorm in both variants.")] = True,
    device: Annotated[Device, typer.Option(help="auto = cuda when available.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Time training epochs of the binary network (±1 weights, Heaviside with bnn train's default backward)
    against float twins (relu/tied); all three train with TrainConfig's recipe (docs/ACCURACY.md).

    The float twin with max pooling has the binary network's topology; the one with
    quadratic-mean pooling is the paper's LeNet-5. Reports images/s per epoch (median over the
    interleaved epochs) and each network's epoch cost relative to the float one.
    """
    if epochs > MAX_EPOCHS:
        raise CliError(f"--epochs {epochs} is above the limit of {MAX_EPOCHS} for a benchmark")
    from bnn_train.config import ModelConfig, TrainConfig
    from bnn_train.speed import compare_training_speed

    train = TrainConfig(
        dataset=dataset.value,
        data_dir=str(data_dir) if data_dir else None,
        batch_size=batch_size,
        device=device.value,
        epochs=epochs,
    )
    train.validate()
    result = compare_training_speed(train, ModelConfig(model=model.value, batchnorm=batchnorm), epochs=epochs)
    result["command"] = command_line()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.table import Table

    table = Table(
        title=f"training speed: {result['model']} on {result['dataset']} ({result['device']}, "
        f"{result['threads']} threads, batch {result['batch_size']})"
    )
    for col in ("variant", "act", "weights", "pool", "images/s per epoch", "median", "epoch cost vs float"):
        table.add_column(col)
    for name, v in result["variants"].items():
        table.add_row(
            name,
            v["act"],
            v["weights"],
            v["pool"],
            ", ".join(f"{r:.0f}" for r in v["images_per_s"]),
            f"{v['median_images_per_s']:.0f}",
            f"{v['epoch_cost_vs_float']:.2f}x",
        )
    stderr_console().print(table)
    typer.echo(f"binary epoch cost = {result['variants']['binary']['epoch_cost_vs_float']:.2f}x the float network's")
