"""``bnn train``: fit a SUC, MLP or LeNet-5 with an untied FORWARD/BACKWARD activation into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bnn_train.config import ActParams, ModelConfig, TrainConfig, option_name

from .choices import Device, Init, Model, Optimizer, Pool, Schedule, Weights
from .common import CliError, from_setting, parse_ints, progress_bar
from .paths import check_output_dir
from .terminal import plain

# Options a resumed run may change; every other one is fixed by the run directory.
_RESUMABLE = {"out", "resume", "epochs", "data_dir", "device", "quiet", "threads"}

_M = "Model"
_A = "Activation (shape parameters of the backward functions)"
_T = "Training"
_D = "Data"


def _m(name: str, panel: str = _M):
    return from_setting(ModelConfig, name, panel=panel)


def _a(name: str):
    return from_setting(ActParams, name, panel=_A)


def _t(name: str, panel: str = _T):
    return from_setting(TrainConfig, name, panel=panel)


_MODEL, _ACT, _TRAIN = ModelConfig(), ActParams(), TrainConfig()


def train(
    ctx: typer.Context,
    model: Annotated[Model, _m("model")] = _MODEL.model,
    arch: Annotated[str | None, _m("arch")] = None,
    act: Annotated[str, _m("act")] = _MODEL.act,
    weights: Annotated[Weights, _m("weights")] = _MODEL.weights,
    batchnorm: Annotated[bool, _m("batchnorm")] = _MODEL.batchnorm,
    hidden: Annotated[str, _m("hidden")] = ",".join(map(str, _MODEL.hidden)),
    width: Annotated[float, _m("width")] = _MODEL.width,
    pool: Annotated[Pool, _m("pool")] = _MODEL.pool,
    init: Annotated[Init, _m("init")] = _MODEL.init,
    rect_width: Annotated[float, _a("rect_width")] = _ACT.rect_width,
    triang_width: Annotated[float, _a("triang_width")] = _ACT.triang_width,
    jam_width: Annotated[float, _a("jam_width")] = _ACT.jam_width,
    jam_mean: Annotated[float | None, _a("jam_mean")] = _ACT.jam_mean,
    st_k: Annotated[float, _a("st_k")] = _ACT.st_k,
    st_beta: Annotated[float, _a("st_beta")] = _ACT.st_beta,
    dataset: Annotated[str, _t("dataset", _D)] = _TRAIN.dataset,
    input_size: Annotated[str | None, _t("input_size", _D)] = None,
    data_dir: Annotated[Path | None, _t("data_dir", _D)] = _TRAIN.data_dir,
    dim: Annotated[int, _t("dim", _D)] = _TRAIN.dim,
    n_samples: Annotated[int, _t("n_samples", _D)] = _TRAIN.n_samples,
    epochs: Annotated[int, _t("epochs")] = _TRAIN.epochs,
    batch_size: Annotated[int, _t("batch_size")] = _TRAIN.batch_size,
    lr: Annotated[float, _t("lr")] = _TRAIN.lr,
    optimizer: Annotated[Optimizer, _t("optimizer")] = _TRAIN.optimizer,
    momentum: Annotated[float, _t("momentum")] = _TRAIN.momentum,
    schedule: Annotated[Schedule, _t("schedule")] = _TRAIN.schedule,
    grad_clip: Annotated[float | None, _t("grad_clip")] = _TRAIN.grad_clip,
    augment_shift: Annotated[int, _t("augment_shift")] = _TRAIN.augment_shift,
    label_smoothing: Annotated[float, _t("label_smoothing")] = _TRAIN.label_smoothing,
    soft_step: Annotated[float, _t("soft_step")] = _TRAIN.soft_step,
    distill: Annotated[str, _t("distill")] = _TRAIN.distill,
    distill_alpha: Annotated[float, _t("distill_alpha")] = _TRAIN.distill_alpha,
    distill_temperature: Annotated[float, _t("distill_temperature")] = _TRAIN.distill_temperature,
    seed: Annotated[int, _t("seed")] = _TRAIN.seed,
    device: Annotated[Device, _t("device")] = _TRAIN.device,
    val_split: Annotated[float, _t("val_split")] = _TRAIN.val_split,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch [default: all cores].", rich_help_panel=_T)
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory [default: runs/MODEL-DATASET-FORWARD-BACKWARD].")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last completed epoch.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a network and write a run directory (config, checkpoint, metrics, curves)."""
    from bnn_train.budget import check_budget
    from bnn_train.config import RunConfig
    from bnn_train.train import fit, set_threads
    from bnn_train.train import resume as resume_run

    if arch is not None:
        if _given(ctx, "model") and model.value != "arch":
            raise CliError(f"--arch builds its own network; drop --model {model.value}")
        model = Model("arch")
    name = arch if arch is not None else model.value
    out = out or Path("runs") / f"{name}-{_dataset_label(dataset)}-{act.replace('/', '-')}"
    check_output_dir("--out", out)
    set_threads(threads)
    progress = None if quiet else RichProgress()
    if resume:
        explicit = sorted(p for p in ctx.params if p not in _RESUMABLE and _given(ctx, p))
        if explicit:
            opts = ", ".join(option_name(p) for p in explicit)
            raise CliError(
                f"--resume continues {out} with its own configuration; drop {opts} "
                "(only --epochs, --data-dir, --device may change)"
            )
        overrides = {k: ctx.params[k] for k in ("epochs", "data_dir", "device") if _given(ctx, k)}
        run = lambda: resume_run(out, callback=progress, **_resume_kwargs(overrides))  # noqa: E731
    else:
        act_params = ActParams(
            rect_width=rect_width,
            triang_width=triang_width,
            jam_width=jam_width,
            jam_mean=jam_mean,
            st_k=st_k,
            st_beta=st_beta,
        )
        cfg = RunConfig(
            model=ModelConfig(
                model=model.value,
                arch=arch or _MODEL.arch,
                act=act,
                weights=weights.value,
                batchnorm=batchnorm,
                hidden=parse_ints("--hidden", hidden),
                width=width,
                pool=pool.value,
                init=init.value,
                act_params=act_params,
            ),
            train=TrainConfig(
                dataset=dataset,
                data_dir=str(data_dir) if data_dir else None,
                dim=dim,
                n_samples=n_samples,
                input_size=input_size or _TRAIN.input_size,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                optimizer=optimizer.value,
                momentum=momentum,
                schedule=schedule.value,
                grad_clip=grad_clip,
                augment_shift=augment_shift,
                label_smoothing=label_smoothing,
                soft_step=soft_step,
                distill=distill,
                distill_alpha=distill_alpha,
                distill_temperature=distill_temperature,
                seed=seed,
                device=device.value,
                val_split=val_split,
            ),
        )
        cfg.validate()  # every invalid option is rejected before any data is loaded
        check_budget(cfg)  # and every one that would ask for more memory than a run may take
        _refuse_ignored(ctx, cfg)
        if cfg.model.model == "arch":
            _check_deployable(cfg)
        run = lambda: fit(cfg, out, callback=progress)  # noqa: E731
    try:
        if progress is not None:
            with progress:
                final = run()
        else:
            final = run()
    except KeyboardInterrupt:
        typer.echo(_interrupted_line(out), err=True)
        raise typer.Exit(130) from None
    best = (
        (
            f"; best.pt (epoch {final['best_epoch']}, validation {final['best_val_accuracy']:.4f}): "
            f"test {final['best_test_accuracy']:.4f}"
        )
        if final.get("best_epoch")
        else ""
    )
    speed = f" ({final['images_per_s']:.0f} images/s)" if final.get("images_per_s") else ""
    typer.echo(
        f"{plain(out)}: test accuracy {final['test_accuracy']:.4f} after {final['epochs']} epochs"
        f"{speed}{best}{' — diverged' if final['diverged'] else ''}"
    )


def _interrupted_line(out: Path) -> str:
    """What Ctrl-C leaves behind, and the command that continues it."""
    import shlex

    from bnn_train import rundir

    try:
        ckpt = rundir.load_checkpoint(out)
    except Exception:  # no (readable) checkpoint yet: nothing was saved
        return f"interrupted before the first epoch was saved; start again: bnn train ... --out {plain(out)}"
    done, planned, _ = rundir.progress(ckpt)
    return (
        f"interrupted at epoch {done + 1} of {planned} ({done} saved); "
        f"resume with: bnn train --resume --out {plain(shlex.quote(str(out)))}"
    )


def _refuse_ignored(ctx: typer.Context, cfg) -> None:
    """An option typed for a setting this run does not use (``--hidden`` for lenet5) is a mistake: say so."""
    typed = [f"{option_name(n)} {why}" for n, why in cfg.ignored_settings().items() if _given(ctx, n)]
    if typed:
        raise CliError("; ".join(typed) + ": drop " + ("it" if len(typed) == 1 else "them"))


def _dataset_label(dataset: str) -> str:
    """folder:~/photos/train -> folder-train: a run directory name without the path."""
    if ":" not in dataset:
        return dataset
    kind, path = dataset.split(":", 1)
    return f"{kind}-{Path(path).stem or 'data'}"


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
        self.progress.update(
            self.task,
            completed=self.done_before + step,
            description=f"epoch {epoch + 1}/{self.epochs}",
            status=f"loss {loss:.4f}" if loss is not None else "",
        )

    def on_epoch(self, r):
        from bnn_train.train import epoch_line

        self.done_before += self.steps
        self.progress.console.print(epoch_line(r), markup=False, highlight=False)

    def on_notice(self, text):
        self.progress.console.print(f"note: {text}", markup=False, highlight=False)
