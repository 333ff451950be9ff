"""``bnn train``: fit a SUC, MLP or LeNet-5 with an untied FORWARD/BACKWARD activation into a run directory."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from bnn_train import choices

from .common import CliError, parse_ints, progress_bar


def _enum(name: str, values: tuple[str, ...]) -> type[Enum]:
    return Enum(name, [(v, v) for v in values], type=str)


Model = _enum("Model", choices.MODELS)
Dataset = _enum("Dataset", choices.DATASETS)
Weights = _enum("Weights", choices.WEIGHTS)
Pool = _enum("Pool", choices.POOLS)
Init = _enum("Init", choices.INITS)
Optimizer = _enum("Optimizer", choices.OPTIMIZERS)
Schedule = _enum("Schedule", choices.SCHEDULES)
Device = _enum("Device", choices.DEVICES)

# Options a resumed run may change; every other one is fixed by the run directory.
_RESUMABLE = {"out", "resume", "epochs", "data_dir", "device", "quiet", "threads"}

ARCH_HELP = (
    "Your own network, in the notation of the BNN literature: tokens joined by '-'. "
    "[Nx]KCk[sS][pP] = N convolutions of K channels, k x k kernel, stride S (default 1), zero padding P "
    "(default k//2); MPk[sS] = max pooling, window k, stride S (default k); [Nx]KFC = N dense layers of K units. "
    "The classifier is appended; BatchNorm (--batchnorm) and --act follow every hidden layer. "
    "E.g. 32C3-MP2-64C3-MP2-256FC. Checked against the input size and for export before any data is loaded."
)
_M = "Model"
_A = "Activation (shape parameters of the backward functions)"
_T = "Training"
_D = "Data"


def train(
    ctx: typer.Context,
    model: Annotated[Model, typer.Option(help="suc, mlp or lenet5 (paper §4.1); arch: the network of --arch.", rich_help_panel=_M)] = "lenet5",
    arch: Annotated[Optional[str], typer.Option(help=ARCH_HELP, rich_help_panel=_M)] = None,
    act: Annotated[str, typer.Option(help="FORWARD/BACKWARD, e.g. heaviside/rect, logistic/tied, relu/full_jam.", rich_help_panel=_M)] = "heaviside/rect",
    weights: Annotated[Weights, typer.Option(help="binary: sign(w) forward, clipped straight-through backward (BinaryConnect).", rich_help_panel=_M)] = "binary",
    batchnorm: Annotated[bool, typer.Option(help="BatchNorm after every linear/conv layer.", rich_help_panel=_M)] = True,
    hidden: Annotated[str, typer.Option(help="MLP hidden widths, comma-separated.", rich_help_panel=_M)] = "256,128",
    width: Annotated[float, typer.Option(help="LeNet-5 channel/unit multiplier.", rich_help_panel=_M)] = 1.0,
    pool: Annotated[Pool, typer.Option(help="LeNet-5 pooling; auto = max (OR of bits) for heaviside/sign, else quadratic mean.", rich_help_panel=_M)] = "auto",
    init: Annotated[Init, typer.Option(help="Weight initialisation.", rich_help_panel=_M)] = "default",
    rect_width: Annotated[float, typer.Option(help="rect: height 1/w on |z| <= w/2.", rich_help_panel=_A)] = 1.0,
    triang_width: Annotated[float, typer.Option(help="triang: base width w, peak 2/w.", rich_help_panel=_A)] = 8.0,
    jam_width: Annotated[float, typer.Option(help="rect_jam: noise on |z| <= w/2.", rich_help_panel=_A)] = 10.0,
    jam_mean: Annotated[Optional[float], typer.Option(help="Mean of the jamming noise [default: mean of f' over the noise window].", rich_help_panel=_A)] = None,
    st_k: Annotated[float, typer.Option(help="sigmoid_tanh: k in sigmoid(k tanh(beta z)).", rich_help_panel=_A)] = 6.0,
    st_beta: Annotated[float, typer.Option(help="sigmoid_tanh: beta.", rich_help_panel=_A)] = 1.0,
    dataset: Annotated[Dataset, typer.Option(help="digits works offline; mnist/fashion-mnist download or read --data-dir.", rich_help_panel=_D)] = "digits",
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder with the four IDX files of mnist/fashion-mnist.", rich_help_panel=_D)] = None,
    dim: Annotated[int, typer.Option(help="ones: input dimension.", rich_help_panel=_D)] = 10,
    n_samples: Annotated[int, typer.Option(help="ones: samples generated (80/20 split).", rich_help_panel=_D)] = 10000,
    epochs: Annotated[int, typer.Option(help="Epochs to train (with --resume: the new total).", rich_help_panel=_T)] = 20,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size.", rich_help_panel=_T)] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate.", rich_help_panel=_T)] = 0.01,
    optimizer: Annotated[Optimizer, typer.Option(help="sgd or adam.", rich_help_panel=_T)] = "adam",
    momentum: Annotated[float, typer.Option(help="SGD momentum.", rich_help_panel=_T)] = 0.9,
    schedule: Annotated[Schedule, typer.Option(help="Learning-rate schedule: cosine decays it to 0 over --epochs (per epoch), none keeps it constant.", rich_help_panel=_T)] = "cosine",
    grad_clip: Annotated[Optional[float], typer.Option(help="Clip the gradient norm to this value.", rich_help_panel=_T)] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, shuffling and noise.", rich_help_panel=_T)] = 0,
    device: Annotated[Device, typer.Option(help="auto = cuda when available.", rich_help_panel=_T)] = "auto",
    val_split: Annotated[float, typer.Option(help="Hold out this share of the training set for validation: metrics per epoch on it, best.pt kept by it, the test set evaluated at the end. 0: none (the paper's tables).", rich_help_panel=_T)] = 0.0,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch [default: all cores].", rich_help_panel=_T)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory [default: runs/MODEL-DATASET-FORWARD-BACKWARD].")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last completed epoch.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a network and write a run directory (config, checkpoint, metrics, curves)."""
    from bnn_train.activations import ActParams
    from bnn_train.config import ModelConfig, RunConfig, TrainConfig
    from bnn_train.train import fit, set_threads
    from bnn_train.train import resume as resume_run

    if arch is not None:
        if _given(ctx, "model") and model.value != "arch":
            raise CliError(f"--arch builds its own network; drop --model {model.value}")
        model = Model("arch")
    name = arch if arch is not None else model.value
    out = out or Path("runs") / f"{name}-{dataset.value}-{act.replace('/', '-')}"
    set_threads(threads)
    progress = None if quiet else RichProgress()
    if resume:
        explicit = sorted(p for p in ctx.params if p not in _RESUMABLE and _given(ctx, p))
        if explicit:
            opts = ", ".join("--" + p.replace("_", "-") for p in explicit)
            raise CliError(f"--resume continues {out} with its own configuration; drop {opts} (only --epochs, --data-dir, --device may change)")
        overrides = {k: ctx.params[k] for k in ("epochs", "data_dir", "device") if _given(ctx, k)}
        run = lambda: resume_run(out, callback=progress, **_resume_kwargs(overrides))  # noqa: E731
    else:
        cfg = RunConfig(
            ModelConfig(
                model=model.value, arch=arch or "", act=act, weights=weights.value, batchnorm=batchnorm,
                hidden=parse_ints("--hidden", hidden), width=width, pool=pool.value, init=init.value,
                act_params=ActParams(rect_width, triang_width, jam_width, jam_mean, st_k, st_beta),
            ),
            TrainConfig(
                dataset=dataset.value, data_dir=str(data_dir) if data_dir else None, dim=dim, n_samples=n_samples,
                epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer.value, momentum=momentum,
                schedule=schedule.value, grad_clip=grad_clip, seed=seed, device=device.value, val_split=val_split,
            ),
        )
        cfg.validate()  # every invalid option is rejected before any data is loaded
        if cfg.model.model == "arch":
            _check_deployable(cfg)
        run = lambda: fit(cfg, out, callback=progress)  # noqa: E731
    if progress is not None:
        with progress:
            final = run()
    else:
        final = run()
    best = (f"; best.pt (epoch {final['best_epoch']}, validation {final['best_val_accuracy']:.4f}): "
            f"test {final['best_test_accuracy']:.4f}") if final.get("best_epoch") else ""
    speed = f" ({final['images_per_s']:.0f} images/s)" if final.get("images_per_s") else ""
    typer.echo(
        f"{out}: test accuracy {final['test_accuracy']:.4f} after {final['epochs']} epochs"
        f"{speed}{best}{' — diverged' if final['diverged'] else ''}"
    )


def _check_deployable(cfg) -> None:
    """A binary --arch network with a bit-valued forward must export: fold it before training (a float
    or ReLU network is for comparison and exports as float ONNX)."""
    from dataclasses import replace

    if cfg.model.weights != "binary" or cfg.model.forward_name not in ("heaviside", "sign"):
        return
    from bnn_export.check import check_exportable
    from bnn_train.models import build_model

    in_shape, num_classes = cfg.train.dataset_shape()
    check_exportable(build_model(replace(cfg.model, in_shape=in_shape, num_classes=num_classes)), in_shape)


def _given(ctx: typer.Context, name: str) -> bool:
    """Was option ``name`` typed on the command line (rather than left at its default)?"""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _resume_kwargs(overrides: dict) -> dict:
    kwargs = {}
    if "epochs" in overrides:
        kwargs["epochs"] = overrides["epochs"]
    if "data_dir" in overrides:
        kwargs["data_dir"] = str(overrides["data_dir"])
    if "device" in overrides:
        kwargs["device"] = overrides["device"].value
    return kwargs


class RichProgress:
    """A bnn_train Callback drawing one rich progress bar over all epochs, with a line per epoch."""

    def __init__(self):
        self.progress = progress_bar("[bold]{task.description}")
        self.task = None
        self.epochs = 0
        self.steps = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.task is not None:
            self.progress.stop()

    def on_start(self, cfg, data, start_epoch, steps_per_epoch):
        self.progress.start()
        self.epochs, self.steps = cfg.train.epochs, steps_per_epoch
        total = (cfg.train.epochs - start_epoch) * steps_per_epoch
        self.progress.console.print(
            f"{cfg.model.model} {cfg.model.act} ({cfg.model.weights} weights) on {data.name}: "
            f"{len(data.y_train)} train / {len(data.y_test)} test, {steps_per_epoch} steps per epoch"
            + (f", resuming after epoch {start_epoch}" if start_epoch else "")
        )
        self.task = self.progress.add_task(f"epoch {start_epoch + 1}/{self.epochs}", total=total, status="")
        self.done_before = 0

    def on_batch(self, epoch, step, loss):
        self.progress.update(self.task, completed=self.done_before + step, description=f"epoch {epoch + 1}/{self.epochs}",
                             status=f"loss {loss:.4f}" if loss is not None else "")

    def on_epoch(self, r):
        from bnn_train.train import epoch_line

        self.done_before += self.steps
        self.progress.console.print(epoch_line(r), markup=False, highlight=False)

    def on_notice(self, text):
        self.progress.console.print(f"note: {text}", markup=False, highlight=False)
