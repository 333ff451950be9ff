"""``bnn infer``: run a .bnn model with the Numba runtime -- on images, on a .npy batch, or on a test set."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from bnn_train import choices

from .choices import Dataset
from .common import CliError, positive
from .terminal import markup, plain


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def infer(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL.bnn", help="The .bnn model file.")],
    images: Annotated[
        list[Path] | None, typer.Argument(help="Image files to classify (PNG, JPEG, ...; needs Pillow).")
    ] = None,
    npy: Annotated[
        Path | None,
        typer.Option(
            help="A .npy batch (N, *input shape) of the model's input values "
            "(its manifest's range, e.g. 0..16 for Digits) to classify."
        ),
    ] = None,
    dataset: Annotated[
        Dataset | None, typer.Option(help="Evaluate on this test set [default: the model's own dataset].")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the IDX files of mnist/fashion-mnist.")] = None,
    limit: Annotated[
        int | None, typer.Option(help="Evaluate on the first N test images only.", callback=positive)
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Threads the runtime uses [default: all cores].")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output: table, csv or json.")] = Format.table,
    logits: Annotated[
        bool,
        typer.Option("--logits", help="Also print every class's logit (the per-class affine of the integer scores)."),
    ] = False,
) -> None:
    """Classify images or a .npy batch with a .bnn model, or measure its accuracy and speed on a test set.

    With neither images nor --npy, the model is evaluated on the test set of --dataset (by
    default the dataset it was trained on): accuracy and images/s. Every readable image is
    classified; each one that cannot be read gets one line on stderr, and the exit status is 1.
    Image files are scaled from 0..255 to the input range the model's manifest records (e.g.
    0..16 for Digits); each prediction comes with its probability (the softmax of the logits).
    """
    from bnn_runtime.model import load

    if images and npy is not None:
        raise CliError("give image files or --npy, not both")
    if (images or npy is not None) and (dataset is not None or limit is not None):
        raise CliError("--dataset and --limit evaluate a test set; they do not combine with images or --npy")
    model = load(model_path, threads=threads)
    if images or npy is not None:
        names, x, failures = _read_images(images, model.input_spec) if images else (*_read_npy(npy), [])
        if x is not None:
            scores, labels = model.run(x)
            _print_predictions(model, model_path, names, scores, labels, fmt, logits)
        if failures:  # every readable image was classified; each other one gets its line, and the exit status says so
            for line in failures:
                typer.echo(f"error: {plain(line)}", err=True)
            raise typer.Exit(1)
        return
    _print_evaluation(_evaluate(model, model_path, dataset, data_dir, limit), fmt)


def _read_npy(path: Path):
    import numpy as np

    from bnn_runtime.fileio import special_file

    if special_file(path):  # a pipe would block the read forever
        raise CliError(f"{path}: not a regular file (a device, pipe or socket), not a .npy file")
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError) as e:
        raise CliError(f"{path}: not a readable .npy array ({e})") from None
    if not hasattr(x, "shape") or x.ndim == 0:
        raise CliError(f"{path}: holds no array of images")
    return [f"{path.name}[{i}]" for i in range(len(x))], x


def _read_images(paths: list[Path], spec):
    """(names, uint8 batch (N, C, H, W) of the readable files scaled to the model's input range (``spec``:
    ``pixels.InputSpec``), one error line per unreadable file)."""
    import numpy as np

    from .images import pillow, read_image

    pillow()  # one line if Pillow is missing, rather than one per file
    if not spec.is_image:
        raise CliError(f"the model takes {spec.describe()}, not images; pass a .npy batch with --npy")
    names, batch, failures = [], [], []
    for path in paths:
        try:
            batch.append(read_image(path, spec.shape))
            names.append(str(path))
        except CliError as e:
            failures.append(str(e))
    x = spec.from_pixels(np.stack(batch).astype(np.uint8)) if batch else None
    return names, x, failures


def _evaluate(model, model_path: Path, dataset, data_dir: Path | None, limit: int | None) -> dict:
    try:
        from bnn_train.config import RunConfig, TrainConfig
        from bnn_train.data import load_test_arrays
    except ImportError as e:  # an edge install: numpy and numba only
        raise CliError(
            f"evaluating on a test set needs the training extras ({e.name} is missing): "
            "pip install 'untied-bnn[train]', or classify images or a --npy batch"
        ) from None

    provenance = model.manifest.get("provenance", {})
    name = dataset.value if dataset is not None else provenance.get("dataset")
    if name not in choices.DATASETS:
        raise CliError(
            f"{model_path} names no dataset it was trained on; pass --dataset ({', '.join(choices.DATASETS)}) "
            "or give images or --npy"
        )
    train = TrainConfig(dataset=name, data_dir=str(data_dir) if data_dir else None)
    try:  # the synthetic 'ones' task is generated from the run's own dim and n_samples
        saved = RunConfig.from_dict(provenance["config"]).train
        train = replace(train, dim=saved.dim, n_samples=saved.n_samples)
    except Exception:  # no or foreign config in the provenance: the dataset's defaults
        pass
    num_classes = train.dataset_shape()[1]
    if num_classes != len(model.classes):  # before reading (or downloading) the data
        raise CliError(f"{name} has {num_classes} classes, the model {len(model.classes)}")
    _, x, y = load_test_arrays(train, limit)
    model.compile().predict(x[: 4 * model.tile * model.threads])  # the kernels, compiled or loaded, before the clock
    start = time.perf_counter()
    pred = model.predict(x)
    seconds = time.perf_counter() - start
    correct = int((pred == y).sum())
    return {
        "model": str(model_path),
        "dataset": name,
        "images": len(y),
        "correct": correct,
        "accuracy": correct / len(y),
        "seconds": seconds,
        "images_per_second": len(y) / seconds,
        "threads": model.threads,
    }


def _print_evaluation(result: dict, fmt: Format) -> None:
    if fmt is Format.json:
        typer.echo(json.dumps(result, indent=2))
    elif fmt is Format.csv:
        typer.echo(",".join(result))
        typer.echo(",".join(str(v) for v in result.values()))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"bnn infer {markup(result['model'])}")
        for col in ("dataset", "images", "accuracy", "images/s", "threads"):
            table.add_column(col)
        table.add_row(
            result["dataset"],
            f"{result['images']:,}",
            f"{result['accuracy']:.4%}",
            f"{result['images_per_second']:,.0f}",
            str(result["threads"]),
        )
        Console().print(table)


def _print_predictions(
    model, model_path: Path, names: list[str], scores, labels, fmt: Format, show_logits: bool
) -> None:
    from bnn_runtime.reference import logits_from_scores, softmax

    classes = model.classes
    logits = logits_from_scores(model.file, scores)
    probs = softmax(logits)
    rows = []
    for n, k, s, z, p in zip(names, labels, scores, logits, probs, strict=True):
        row = {
            "input": n,
            "index": int(k),
            "class": classes[int(k)],
            "probability": float(p[k]),
            "scores": [int(v) for v in s],
        }
        rows.append({**row, "logits": [float(v) for v in z]} if show_logits else row)
    if fmt is Format.json:
        typer.echo(json.dumps({"model": str(model_path), "classes": classes, "predictions": rows}, indent=2))
    elif fmt is Format.csv:
        import csv
        import sys

        writer = csv.writer(sys.stdout, lineterminator="\n")
        logit_columns = [f"logit_{plain(c)}" for c in classes] if show_logits else []
        writer.writerow(["input", "index", "class", "probability", *logit_columns])
        for r in rows:
            writer.writerow(
                [
                    plain(r["input"]),
                    r["index"],
                    plain(r["class"]),
                    repr(r["probability"]),
                    *map(repr, r.get("logits", [])),
                ]
            )
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="bnn infer")
        for col in ("input", "class", "probability") + (("logits",) if show_logits else ()):
            table.add_column(col)
        for r in rows:  # file names only: full paths are in csv and json
            cells = [markup(Path(r["input"]).name), markup(r["class"]), f"{r['probability']:.1%}"]
            table.add_row(*cells, *([" ".join(f"{v:.3g}" for v in r["logits"])] if show_logits else []))
        Console().print(table)
