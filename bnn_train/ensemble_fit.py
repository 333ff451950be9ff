"""``fit_ensemble``: train K runs that differ only in their seed as one ``Ensemble``, each into its own run directory.

Member k gets what its one-at-a-time ``fit`` would: initialisation from ``torch.manual_seed(seed_k)``,
the data order and jamming noise of (seed_k, epoch), the same learning rates, its own gradient
clipping, BatchNorm re-estimation and divergence stop. Its run directory (checkpoint, best.pt,
metrics) is the one ``fit`` writes, so ``resume``, ``export`` and the reproduction's report read
it alike. Arithmetic differs only in the order of floating-point sums inside the batched
operations (grouped convolutions, batched matmuls): a member matches its own run to rounding
at first, and as rounding differences grow through training, to within the tolerance that
docs/REPRODUCTION.md states and tests/test_ensemble.py checks.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from . import rundir
from .augment import random_shift
from .batches import batch_slices
from .config import RunConfig
from .ensemble import Ensemble
from .errors import CheckpointError, ConfigError
from .models import build_model, is_single_unit
from .train import (
    Callback,
    _epoch_seed,
    _final_metrics,
    _final_test,
    _prepare,
    learning_rate,
    make_optimizer,
    recompute_batchnorm,
)


def check_members(cfgs: list[RunConfig]) -> None:
    """Members must differ in their seed alone (one architecture, one batch size, one recipe)."""
    if not cfgs:
        raise ConfigError("an ensemble needs at least one member")
    base = replace(cfgs[0], train=replace(cfgs[0].train, seed=0))
    for c in cfgs[1:]:
        if replace(c, train=replace(c.train, seed=0)) != base:
            raise ConfigError("ensemble members must differ in --seed only")
    t = cfgs[0].train
    if t.distill or t.soft_step > 0:  # the ensemble's own loop has neither a teacher nor ramps
        raise ConfigError("ensembles train without --distill and --soft-step; train such runs one at a time")


def _losses(
    out: torch.Tensor, cfg: RunConfig, y: torch.Tensor, model0, smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member mean losses (K,) and predictions (B, K); y is (B, K) or (B,) shared (as ``loss_and_predictions``)."""
    b, k = out.shape[:2]
    y = y if y.dim() == 2 else y[:, None].expand(b, k)
    if is_single_unit(cfg.model):
        act = model0[-1].forward_fn
        o = out.squeeze(2)
        target = act.low + (act.high - act.low) * y.to(o.dtype)
        return ((o - target) ** 2).mean(0), (o >= act.decision_threshold).long()
    ce = F.cross_entropy(out.reshape(b * k, -1), y.reshape(b * k), reduction="none", label_smoothing=smoothing).reshape(
        b, k
    )
    return ce.mean(0), out.argmax(2)


def _member_optimizer_state(ens: Ensemble, opt_state: dict, k: int) -> dict:
    modules = ens.param_modules()
    params = list(ens.parameters())
    state = {}
    for i, s in opt_state["state"].items():
        state[i] = {
            n: (ens.split(modules[i], v)[k].clone() if torch.is_tensor(v) and v.shape == params[i].shape else v)
            for n, v in s.items()
        }
    return {"state": state, "param_groups": opt_state["param_groups"]}


def _joined_optimizer_state(ens: Ensemble, states: list[dict]) -> dict:
    modules, params = ens.param_modules(), list(ens.parameters())
    joined = {}
    for i, s in states[0]["state"].items():
        joined[i] = {}
        for n, v in s.items():
            if torch.is_tensor(v) and v.dim() > 0:
                parts = [st["state"][i][n] for st in states]
                layout = getattr(modules[i], "layout", "shared")
                joined[i][n] = torch.stack(parts) if layout == "stacked" else torch.cat(parts)
                assert joined[i][n].shape == params[i].shape
            else:
                joined[i][n] = v
    return {"state": joined, "param_groups": states[0]["param_groups"]}


def fit_ensemble(
    cfgs: list[RunConfig], out_dirs: list[str | Path], callbacks: list[Callback] | None = None, plot: bool = False
) -> list[dict]:
    """Train (or continue, when every member's run directory holds a checkpoint of the same epoch) K runs at once.

    Returns each member's final metrics, as ``fit`` would.
    """
    check_members(cfgs)
    outs = [Path(o) for o in out_dirs]
    callbacks = callbacks or [Callback() for _ in cfgs]
    ckpts = [rundir.load_checkpoint(o) if (o / rundir.CHECKPOINT).exists() else None for o in outs]
    if any(c is not None for c in ckpts) and (None in ckpts or len({int(c["epoch"]) for c in ckpts}) != 1):
        raise CheckpointError("an ensemble resumes only members that all stopped after the same epoch")
    prepared = [_prepare(c) for c in cfgs[:1]]
    cfg0, data, device = prepared[0]
    cfgs = [
        cfg0 if i == 0 else c.with_dataset(data.in_shape, data.num_classes, data.input_scale)
        for i, c in enumerate(cfgs)
    ]
    members = []
    for c in cfgs:
        torch.manual_seed(c.train.seed)
        members.append(build_model(c.model))
    ens = Ensemble(members, data.in_shape, device).to(device)
    optimizer = make_optimizer(ens, cfg0)
    start, histories = 0, [[] for _ in cfgs]
    if ckpts[0] is not None:
        start = int(ckpts[0]["epoch"])
        histories = [list(c["history"]) for c in ckpts]
        try:
            for k, c in enumerate(ckpts):
                ens.load_member(k, c["model"])
            if all(c.get("optimizer") for c in ckpts):
                optimizer.load_state_dict(_joined_optimizer_state(ens, [c["optimizer"] for c in ckpts]))
        except (RuntimeError, ValueError, KeyError, AssertionError) as e:
            raise CheckpointError(f"a member's checkpoint does not match the ensemble ({e})") from None
    data = data.to(device)
    validating = data.x_val is not None
    best = [
        (max((r["val_accuracy"] for r in h if r.get("val_accuracy") is not None), default=-1.0), None)
        for h in histories
    ]
    for o, c in zip(outs, cfgs, strict=False):
        o.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_json(
            o / rundir.CONFIG,
            {
                "config": c.to_dict(),
                "data": data.info(),
                "device": str(device),
                "torch": torch.__version__,
                "ensemble": len(cfgs),
            },
        )
    t = cfg0.train
    steps = len(batch_slices(len(data.y_train), t.batch_size))
    for k, cb in enumerate(callbacks):
        cb.on_start(cfgs[k], data, start, steps)
    active = [not any(r.get("diverged") for r in h) for h in histories]
    for epoch in range(start, t.epochs):
        if not any(active):
            break
        lr = learning_rate(cfg0, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        stats = _train_epoch(ens, cfgs, data, optimizer, epoch, members[0], callbacks)
        recompute_batchnorm(ens, data.x_train, t.eval_batch_size)
        held = ("val", data.x_val, data.y_val) if validating else ("test", data.x_test, data.y_test)
        losses, accs = _evaluate(ens, cfg0, held[1], held[2], members[0])
        finite = ens.member_finite()
        for k in range(len(cfgs)):
            if not active[k]:
                continue
            record = {
                "epoch": epoch + 1,
                **{n: v[k] for n, v in stats.items()},
                f"{held[0]}_loss": losses[k],
                f"{held[0]}_accuracy": accs[k],
                "lr": lr,
                "diverged": not finite[k],
            }
            histories[k].append(record)
            active[k] = finite[k]
            ckpt = {
                "config": cfgs[k].to_dict(),
                "data": data.info(),
                "epoch": epoch + 1,
                "history": histories[k],
                "model": ens.member_state(k),
                "optimizer": _member_optimizer_state(ens, optimizer.state_dict(), k),
                "scheduler": {"schedule": t.schedule, "epochs": t.epochs},
            }
            if validating and finite[k] and record["val_accuracy"] > best[k][0]:
                best[k] = (record["val_accuracy"], ckpt["model"])
                rundir.save_checkpoint(outs[k], ckpt, rundir.BEST)
            rundir.save_checkpoint(outs[k], ckpt)
            rundir.write_metrics_lines(outs[k], histories[k])
            callbacks[k].on_epoch(record)
    finals = []
    for k, c in enumerate(cfgs):
        final = _final_metrics(c, data, histories[k])
        if validating:
            model = build_model(c.model).to(device)
            model.load_state_dict(ens.member_state(k))
            best_model = best[k][1]
            if best_model is None and (outs[k] / rundir.BEST).is_file():
                best_model = rundir.load_checkpoint(outs[k] / rundir.BEST, device)["model"]
            final.update(_final_test(model, c, data, best_model))
        rundir.atomic_write_json(outs[k] / rundir.METRICS, final)
        if plot:
            from .plots import plot_curves

            plot_curves(histories[k], outs[k] / rundir.CURVES, title=f"{c.model.model} {c.model.act} on {data.name}")
        finals.append(final)
    return finals


def _train_epoch(ens: Ensemble, cfgs: list[RunConfig], data, optimizer, epoch: int, model0, callbacks) -> dict:
    """One pass over the training set; member k in the order of (seed_k, epoch), with its noise of (seed_k, epoch)."""
    import time

    t = cfgs[0].train
    device = data.x_train.device
    n = len(data.y_train)
    gens = [torch.Generator().manual_seed(_epoch_seed(c.train.seed, epoch, 0)) for c in cfgs]
    orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)  # (K, N)
    ens.rng.seed([_epoch_seed(c.train.seed, epoch, 1) for c in cfgs])
    shifts = [torch.Generator().manual_seed(_epoch_seed(c.train.seed, epoch, 2)) for c in cfgs]
    binary = cfgs[0].model.weights == "binary"
    ens.train()
    k = len(cfgs)
    loss_sum = torch.zeros(k, device=device)
    correct = torch.zeros(k, device=device, dtype=torch.long)
    seen = 0
    start = time.perf_counter()
    batches = batch_slices(n, t.batch_size)
    steps = len(batches)
    for step, s in enumerate(batches):
        idx = orders[:, s].t()  # (B, K)
        x, y = data.x_train[idx], data.y_train[idx]  # (B, K, ...), (B, K)
        if t.augment_shift > 0:  # each member's images shifted by its own generator, as in its own run
            x = torch.stack([random_shift(x[:, j], t.augment_shift, shifts[j]) for j in range(k)], dim=1)
        losses, pred = _losses(ens(x.float()), cfgs[0], y, model0, t.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        (losses.sum() * len(y) if t.loss_reduction == "sum" else losses.sum()).backward()
        if t.grad_clip is not None:
            ens.clip_grad_norms(t.grad_clip)
        optimizer.step()
        if binary:
            ens.clip_latent_weights()
        loss_sum += losses.detach() * len(y)
        correct += (pred == y).sum(0)
        seen += len(y)
        if step % 20 == 19 or step == steps - 1:
            means = (loss_sum / seen).tolist()
            for cb, m in zip(callbacks, means, strict=False):
                cb.on_batch(epoch, step + 1, m)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "loss": (loss_sum / seen).tolist(),
        "train_accuracy": (correct.double() / seen).tolist(),
        "images_per_s": [seen / seconds] * k,
        "train_seconds": [seconds] * k,
    }


@torch.no_grad()
def _evaluate(ens: Ensemble, cfg: RunConfig, x: torch.Tensor, y: torch.Tensor, model0) -> tuple[list, list]:
    """Every member's mean loss and accuracy in eval mode on (x, y)."""
    ens.eval()
    k = ens.k
    loss_sum = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device, dtype=torch.long)
    bs = cfg.train.eval_batch_size
    for i in range(0, len(y), bs):
        yb = y[i : i + bs]
        losses, pred = _losses(ens(x[i : i + bs].float()), cfg, yb, model0)
        loss_sum += losses * len(yb)
        correct += (pred == yb[:, None]).sum(0)
    ens.train()
    return (loss_sum / len(y)).tolist(), (correct.double() / len(y)).tolist()
