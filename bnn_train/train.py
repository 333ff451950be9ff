"""The training loop: ``fit`` starts a run, ``resume`` continues one; ``train_one_epoch`` and ``evaluate``.

Every epoch ends with an atomic checkpoint of {model, optimiser, scheduler, epoch, config,
history}. The random state at the start of epoch e is a function of (seed, e) alone, so a run
resumed from its last checkpoint repeats, on the same device and thread count, exactly what
the uninterrupted run would have done.

The learning rate of epoch e (0-based) is a closed form of (lr, e, epochs): constant, or
``lr * (1 + cos(pi * e / epochs)) / 2`` for the cosine schedule. Resuming with a larger
``epochs`` therefore re-plans the cosine over the new total: the remaining epochs follow the
curve of a run planned with that total from the start (lr rises again from wherever the old
plan had brought it, e.g. from 0 at its end), and a one-line notice says so.

With ``val_split`` > 0 every epoch is measured on the held-out validation part, the epoch of
highest validation accuracy is kept in ``best.pt`` beside the last checkpoint, and the test set
is evaluated once, at the end, for both. Without it (the paper's tables) the test set is
evaluated every epoch, as the paper reports it.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed, rundir
from .augment import random_shift
from .batches import MIN_BATCH, batch_slices
from .config import RunConfig
from .data import Data, load_dataset, split_validation
from .distill import Teacher, distill_loss, load_teacher
from .errors import CheckpointError, ConfigError, DatasetError
from .layers import clip_latent_weights
from .models import build_model, is_single_unit
from .softstep import set_soft_width, soft_width


class Callback:
    """Hooks for progress display; every method is optional."""

    def on_start(self, cfg: RunConfig, data: Data, start_epoch: int, steps_per_epoch: int) -> None: ...

    def on_batch(self, epoch: int, step: int, loss: float | None) -> None: ...

    def on_epoch(self, record: dict) -> None: ...

    def on_notice(self, text: str) -> None:
        """Something the user should know (e.g. a re-planned schedule): one line on stderr by default."""
        print(f"note: {text}", file=sys.stderr)


class PrintProgress(Callback):
    """``fit(..., progress=True)``: one line per finished epoch on stderr."""

    def on_epoch(self, record: dict) -> None:
        print(epoch_line(record), file=sys.stderr)


def epoch_line(r: dict) -> str:
    """One epoch's numbers as one line: loss, train accuracy, validation and/or test accuracy, speed, lr."""
    held = "".join(f"  {name} {r[f'{name}_accuracy']:.4f}" for name in ("val", "test") if f"{name}_accuracy" in r)
    return (
        f"epoch {r['epoch']:>3}  loss {r['loss']:.4f}  train {r['train_accuracy']:.4f}{held}  "
        f"{r['images_per_s']:.0f} img/s  lr {r['lr']:.3g}"
    )


def learning_rate(cfg: RunConfig, epoch: int) -> float:
    """The learning rate of 0-based ``epoch`` under ``cfg.train``'s schedule, planned over ``cfg.train.epochs``."""
    t = cfg.train
    if t.schedule == "cosine":
        return t.lr * (1 + math.cos(math.pi * min(epoch, t.epochs) / t.epochs)) / 2
    return t.lr


def set_threads(n: int | None) -> None:
    """Let torch use ``n`` CPU threads (None: torch's default, all cores)."""
    if n is None:
        return
    cpus = os.cpu_count() or 1  # more would only oversubscribe -- and 10**8 makes OpenMP allocate gigabytes and exit
    if not (isinstance(n, int) and 1 <= n <= cpus):
        raise ConfigError(f"--threads must be an integer from 1 to {cpus} (this machine's CPUs), got {n}")
    torch.set_num_threads(n)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device cuda: no CUDA device is available to torch {torch.__version__}")
    return torch.device(name)


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def loss_and_predictions(
    model: nn.Module,
    cfg: RunConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    smoothing: float = 0.0,
    soft: torch.Tensor | None = None,
):
    """Loss and predictions: cross-entropy on logits (label ``smoothing``), or squared error on a SUC's activation.

    ``soft``: a teacher's logits for the batch (``--distill``), mixed into the loss as bnn_train/distill.py says.
    """
    out = model(x.float())
    if is_single_unit(cfg.model):
        act = getattr(model, "module", model)[-1].forward_fn  # the network itself, also inside DDP
        out = out.squeeze(1)
        target = act.low + (act.high - act.low) * y.to(out.dtype)
        return F.mse_loss(out, target), (out >= act.decision_threshold).long()
    if soft is not None:
        t = cfg.train
        return distill_loss(out, soft, y, t.distill_alpha, t.distill_temperature, smoothing), out.argmax(1)
    return F.cross_entropy(out, y, label_smoothing=smoothing), out.argmax(1)


@torch.no_grad()
def evaluate(model: nn.Module, cfg: RunConfig, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` in eval mode on (x, y)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    bs = cfg.train.eval_batch_size
    for i in range(0, len(y), bs):
        loss, pred = loss_and_predictions(model, cfg, x[i : i + bs], y[i : i + bs])
        loss_sum += loss * len(pred)
        correct += (pred == y[i : i + bs]).sum()
    model.train(was_training)
    return float(loss_sum) / len(y), int(correct) / len(y)


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Replace BatchNorm running statistics by their exact average over ``x`` (forward passes in train mode).

    The exponential running average lags and jitters when binary weights flip and inputs are
    bits; evaluation and export then see statistics of no particular network. Training itself
    is unaffected (train mode normalises with batch statistics).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    was_training = model.training
    model.train()
    for s in batch_slices(len(x), batch_size):
        model(x[s].float())
    for m, (momentum, tracked) in zip(bns, saved, strict=True):
        m.momentum = momentum
        m.num_batches_tracked.copy_(tracked)
    model.train(was_training)


def train_one_epoch(
    model, cfg: RunConfig, data: Data, optimizer, epoch: int, callback: Callback, teacher: Teacher | None = None
) -> dict:
    """One pass over the training set in a shuffled order fixed by (seed, epoch); ``teacher``: ``--distill``'s."""
    t = cfg.train
    device = data.x_train.device
    gen = torch.Generator().manual_seed(_epoch_seed(t.seed, epoch, 0))
    torch.manual_seed(_epoch_seed(t.seed, epoch, 1))  # jamming noise and any other sampling
    shifts = torch.Generator().manual_seed(_epoch_seed(t.seed, epoch, 2))
    order = torch.randperm(len(data.y_train), generator=gen).to(device)
    binary = cfg.model.weights == "binary"
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    start = time.perf_counter()
    batches = batch_slices(len(order), t.batch_size)
    steps = len(batches)
    for step, s in enumerate(batches):
        idx = distributed.shard(order[s])  # all of it outside torchrun
        x, y = random_shift(data.x_train[idx], t.augment_shift, shifts), data.y_train[idx]
        if t.soft_step > 0:
            set_soft_width(model, soft_width(t.soft_step, t.epochs, epoch, step, steps))
        soft = teacher(idx, x) if teacher is not None else None
        loss, pred = loss_and_predictions(model, cfg, x, y, t.label_smoothing, soft)
        optimizer.zero_grad(set_to_none=True)
        (loss * len(y) if t.loss_reduction == "sum" else loss).backward()  # the logged loss stays a mean
        if t.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        if binary:
            clip_latent_weights(model)
        loss_sum += loss.detach() * len(y)
        correct += (pred == y).sum()
        seen += len(y)
        if step % 20 == 19 or step == steps - 1:
            callback.on_batch(epoch, step + 1, float(loss_sum) / seen)
    set_soft_width(model, 0.0)  # evaluation and BatchNorm statistics see the exact steps
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "loss": float(loss_sum) / seen,
        "train_accuracy": int(correct) / seen,
        "images_per_s": seen / seconds,
        "train_seconds": seconds,
    }


def make_optimizer(model: nn.Module, cfg: RunConfig):
    """The run's optimiser over the model's parameters (Adam, or SGD with momentum)."""
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=t.lr)
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum)


def _finite(model: nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def _check_sizes(cfg: RunConfig, data: Data) -> None:
    """Enough samples to train on and to measure: a test sample, and ``MIN_BATCH`` training samples for BatchNorm."""
    n_train, n_test = len(data.y_train), len(data.y_test)
    if n_test == 0 or n_train == 0:
        raise DatasetError(
            f"{data.name} has {n_train} training and {n_test} test samples; a run needs at least one of each"
            + (" (--n-samples 3 or more)" if data.name == "ones" else "")
        )
    if cfg.model.batchnorm and n_train < MIN_BATCH:  # no batch of the rule in batches.py can hold 2
        raise DatasetError(
            f"{n_train} training sample cannot train BatchNorm (it needs {MIN_BATCH} or more per batch); "
            "use more data, a smaller --val-split or --no-batchnorm"
        )


def _prepare(cfg: RunConfig) -> tuple[RunConfig, Data, torch.device]:
    cfg.validate()  # every option, the model against its dataset's shape: before any data is loaded
    device = resolve_device(cfg.train.device)
    data = split_validation(load_dataset(cfg.train), cfg.train.val_split)
    _check_sizes(cfg, data)
    return cfg.with_dataset(data.in_shape, data.num_classes, data.input_scale), data, device


def fit(
    cfg: RunConfig, out_dir: str | Path, callback: Callback | None = None, plot: bool = True, progress: bool = False
) -> dict:
    """Train a new run into ``out_dir`` (which must not hold a run yet); returns the final metrics.

    ``callback`` receives the run's events (``Callback``); ``progress=True`` without one prints a
    line per epoch on stderr.
    """
    out = Path(out_dir)
    if (out / rundir.CHECKPOINT).exists():
        raise CheckpointError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    cfg, data, device = _prepare(cfg)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    callback = callback or (PrintProgress() if progress else None)
    return _run(cfg, data, device, model, out, start_epoch=0, history=[], callback=callback, plot=plot)


def resume(
    out_dir: str | Path,
    epochs: int | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    callback: Callback | None = None,
    plot: bool = True,
    progress: bool = False,
) -> dict:
    """Continue the run in ``out_dir`` from its last completed epoch.

    ``epochs`` sets a new total (a cosine schedule is re-planned over it, see the module's
    docstring); ``data_dir`` and ``device`` say where the data and the computation are now.
    Everything else comes from the checkpoint.
    """
    out = Path(out_dir)
    ckpt = rundir.load_checkpoint(out)
    cfg = RunConfig.from_dict(ckpt["config"])
    planned, done = cfg.train.epochs, int(ckpt["epoch"])
    changes = {k: v for k, v in (("epochs", epochs), ("data_dir", data_dir), ("device", device)) if v is not None}
    cfg = replace(cfg, train=replace(cfg.train, **changes))
    cfg, data, device = _prepare(cfg)
    callback = callback or (PrintProgress() if progress else Callback())
    if cfg.train.epochs <= done:
        callback.on_notice(f"{out} has already trained {done} epochs; --epochs {cfg.train.epochs} adds none")
    elif cfg.train.epochs != planned and cfg.train.schedule == "cosine":
        old = learning_rate(replace(cfg, train=replace(cfg.train, epochs=planned)), done)
        callback.on_notice(
            f"the cosine schedule planned over {planned} epochs is re-planned over {cfg.train.epochs}: "
            f"epoch {done + 1} trains at lr {learning_rate(cfg, done):.3g} (the old plan: {old:.3g})"
        )
    model = build_model(cfg.model)
    state = {"model": ckpt["model"], "optimizer": ckpt.get("optimizer")}
    return _run(
        cfg,
        data,
        device,
        model,
        out,
        start_epoch=done,
        history=list(ckpt["history"]),
        callback=callback,
        plot=plot,
        state=state,
    )


def _load_state(model, optimizer, state: dict, out: Path) -> None:
    try:
        model.load_state_dict(state["model"])
        if state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint in {out} does not match its configuration ({e})") from None


def _best_state(out: Path, history: list[dict]) -> tuple[float, dict | None]:
    """(best validation accuracy so far, its model state) of a run being resumed."""
    scores = [r["val_accuracy"] for r in history if r.get("val_accuracy") is not None]
    if not scores or not (out / rundir.BEST).is_file():
        return -1.0, None
    return max(scores), rundir.load_checkpoint(out / rundir.BEST)["model"]


def _run(cfg, data, device, model, out: Path, start_epoch: int, history: list, callback, plot, state=None) -> dict:
    device = distributed.setup(device)  # under torchrun: the process group, and this rank's GPU
    main = distributed.is_main()  # only rank 0 writes and reports
    callback = (callback or Callback()) if main else Callback()
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    if state is not None:
        _load_state(model, optimizer, state, out)
    data = data.to(device)  # small datasets stay resident on the device
    validating = data.x_val is not None
    best_acc, best_model = _best_state(out, history) if validating else (-1.0, None)
    trained = distributed.wrap(model, device)
    teacher = _teacher(cfg, data)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        rundir.remove_stale_temp_files(out)  # of writes a kill interrupted
        rundir.reconcile_metrics_lines(out, history)  # metrics.json and the curves are rewritten at the end
        rundir.atomic_write_json(
            out / rundir.CONFIG,
            {
                "config": cfg.to_dict(),
                "data": data.info(),
                "device": str(device),
                "torch": torch.__version__,
                "processes": distributed.world()[1],
            },
        )
    steps = len(batch_slices(len(data.y_train), cfg.train.batch_size))
    callback.on_start(cfg, data, start_epoch, steps)
    diverged = any(r.get("diverged") for r in history)
    for epoch in range(start_epoch, cfg.train.epochs):
        if diverged:
            break
        lr = learning_rate(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        record = {"epoch": epoch + 1, **train_one_epoch(trained, cfg, data, optimizer, epoch, callback, teacher)}
        recompute_batchnorm(model, data.x_train, cfg.train.eval_batch_size)
        held = ("val", data.x_val, data.y_val) if validating else ("test", data.x_test, data.y_test)
        record[f"{held[0]}_loss"], record[f"{held[0]}_accuracy"] = evaluate(model, cfg, held[1], held[2])
        record["lr"] = lr
        diverged = not _finite(model)
        record["diverged"] = diverged
        history.append(record)
        ckpt = {
            "config": cfg.to_dict(),
            "data": data.info(),
            "epoch": epoch + 1,
            "history": history,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": {"schedule": cfg.train.schedule, "epochs": cfg.train.epochs},
        }
        if validating and not diverged and record["val_accuracy"] > best_acc:
            best_acc, best_model = (
                record["val_accuracy"],
                {k: v.detach().clone() for k, v in model.state_dict().items()},
            )
            if main:
                rundir.save_checkpoint(out, ckpt, rundir.BEST)
        if main:
            rundir.save_checkpoint(out, ckpt)
            rundir.write_metrics_lines(out, history)
        callback.on_epoch(record)
    final = _final_metrics(cfg, data, history)
    if validating:
        final.update(_final_test(model, cfg, data, best_model))
    if main:
        rundir.atomic_write_json(out / rundir.METRICS, final)
    if plot and main:
        from .plots import plot_curves, run_panels

        plot_curves(run_panels(history), out / rundir.CURVES, title=f"{cfg.model.model} {cfg.model.act} on {data.name}")
    return final


def _teacher(cfg: RunConfig, data: Data) -> Teacher | None:
    """``--distill``'s teacher; its logits on the training set kept when no augmentation changes the images."""
    t = cfg.train
    if not t.distill:
        return None
    cache = t.augment_shift == 0
    return load_teacher(t.distill, data.in_shape, data.num_classes, data.x_train, t.eval_batch_size, cache)


def _final_test(model, cfg: RunConfig, data: Data, best_model: dict | None) -> dict:
    """The test set, once, at the end of a validated run: for the last model and for the best checkpoint."""
    _, last = evaluate(model, cfg, data.x_test, data.y_test)
    best = last
    if best_model is not None:
        current = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_model)
        _, best = evaluate(model, cfg, data.x_test, data.y_test)
        model.load_state_dict(current)
    return {"test_accuracy": last, "best_test_accuracy": best}


def _final_metrics(cfg: RunConfig, data: Data, history: list[dict]) -> dict:
    """The run's final numbers. Without validation data ``best_test_accuracy`` is the best epoch's test
    accuracy (as the paper reports it); with it, the test accuracy of ``best.pt`` (``_final_test``)."""
    last = history[-1] if history else {}
    vals = [(r["val_accuracy"], -r["epoch"]) for r in history if r.get("val_accuracy") is not None]  # ties: first
    return {
        "test_accuracy": last.get("test_accuracy"),
        "train_accuracy": last.get("train_accuracy"),
        "loss": last.get("loss"),
        "best_test_accuracy": max((r["test_accuracy"] for r in history if "test_accuracy" in r), default=None),
        "val_accuracy": last.get("val_accuracy"),
        "best_val_accuracy": max(vals)[0] if vals else None,
        "best_epoch": -max(vals)[1] if vals else None,
        "epochs": len(history),
        "diverged": bool(last.get("diverged", False)),
        "images_per_s": float(np.mean([r["images_per_s"] for r in history])) if history else None,
        "train_seconds": float(sum(r["train_seconds"] for r in history)),
        "dataset": data.name,
        "model": cfg.model.model,
        "act": cfg.model.act,
        "weights": cfg.model.weights,
    }
