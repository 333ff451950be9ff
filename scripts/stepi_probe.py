"""Probe one Table 14 cell (default: Step/I = heaviside/const, batch 256, lr 0.1) under one changed setting.

The investigation behind docs/REPRODUCTION.md "Step/I: the gap, settled". It trains the cell exactly as
``bnn reproduce table14`` configures it (``Experiment.run_config``: same model, data order, seeds), with at
most one or two settings changed, and prints what a reproduction run does not: per-layer gradient norms in
the first steps, and per epoch the median |pre-activation| of every hidden activation and the share of
conv channels whose bit is the same for every pixel of every probed image.

    .venv/bin/python scripts/stepi_probe.py --data-dir DATA [--epochs 1] [--pool max|avg_after|max_after]
        [--init xavier] [--const 0.1] [--input standard|raw|unit] [--momentum 0.9] [--batchnorm]
        [--weights binary] [--loss-reduction sum] [--config heaviside/rect] [--lr 0.01] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from bnn_train import activations
from bnn_train.activations import Activation
from bnn_train.data import load_dataset
from bnn_train.layers import clip_latent_weights
from bnn_train.models import build_model
from bnn_train.reproduce.experiments import Cell, get_experiment
from bnn_train.train import _epoch_seed, evaluate, set_threads

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--config", default="heaviside/const")
    p.add_argument("--bs", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pool",
        default="qmean",
        choices=("qmean", "max", "auto", "avg_after", "max_after"),
        help="max/auto: max-pool the pre-activations, then the step; *_after: the step, then the pool",
    )
    p.add_argument("--init", default="default")
    p.add_argument("--const", type=float, default=1.0, help="value of the constant backward (heaviside/const)")
    p.add_argument("--input", default="unit", choices=("unit", "standard", "raw"))
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--batchnorm", action="store_true")
    p.add_argument("--weights", default="float", choices=("float", "binary"))
    p.add_argument("--loss-reduction", default="mean", choices=("mean", "sum"))
    p.add_argument("--grad-steps", default="0,1,2,5,10,50,100,200", help="steps of epoch 1 to log gradient norms")
    p.add_argument("--probe-images", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


class _Shift(nn.Module):
    """x -> (x - mean) / std after InputScale: the standardised-input reading."""

    def forward(self, x):
        return (x - MNIST_MEAN) / MNIST_STD


def _build(a, cfg, data):
    cfg = cfg.with_dataset(data.in_shape, data.num_classes, data.input_scale if a.input != "raw" else 1.0)
    model = build_model(cfg.model)
    if a.pool.endswith("_after"):  # replace the quadratic-mean pools that follow the activations
        for name in ("pool1", "pool2"):
            setattr(model, name, nn.AvgPool2d(2) if a.pool == "avg_after" else nn.MaxPool2d(2))
    if a.input == "standard":
        model = nn.Sequential(*[m for m in [model[0], _Shift()]], *list(model)[1:])
    return cfg, model


@torch.no_grad()
def _pre_activation_stats(model, x) -> list[str]:
    """Median |z| at every Activation, and for 4-d inputs the share of channels constant over all pixels/images."""
    rows = []
    hooks = []

    def hook(mod, inp, out):
        z = inp[0]
        med = float(z.abs().median())
        if z.dim() == 4:
            bits = (z >= 0).float()
            per_ch = bits.transpose(0, 1).reshape(z.shape[1], -1).mean(1)
            const = float(((per_ch == 0) | (per_ch == 1)).float().mean())
            rows.append(f"med|z|={med:.3g} const_ch={const:.2f} on={float(bits.mean()):.2f}")
        else:
            rows.append(f"med|z|={med:.3g} on={float((z >= 0).float().mean()):.2f}")

    for m in model.modules():
        if isinstance(m, Activation):
            hooks.append(m.register_forward_hook(hook))
    model.eval()
    model(x.float())
    for h in hooks:
        h.remove()
    return rows


def main() -> None:
    a = _args()
    set_threads(a.threads)
    if a.const != 1.0:
        value = a.const
        activations.BACKWARDS["const"] = lambda z, p, f: torch.full_like(z, value)
    exp = get_experiment("table14")
    cfg = exp.run_config(Cell(config=a.config, batch_size=a.bs, lr=a.lr), epochs=a.epochs, seed=a.seed, device="cpu")
    cfg = replace(
        cfg, train=replace(cfg.train, data_dir=a.data_dir, momentum=a.momentum, loss_reduction=a.loss_reduction)
    )
    built_pool = "qmean" if a.pool.endswith("_after") else a.pool
    cfg = replace(cfg, model=replace(cfg.model, pool=built_pool, init=a.init, batchnorm=a.batchnorm, weights=a.weights))
    data = load_dataset(cfg.train)
    torch.manual_seed(a.seed)
    cfg, model = _build(a, cfg, data)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    grad_steps = {int(s) for s in a.grad_steps.split(",") if s}
    params = [(n, p) for n, p in model.named_parameters() if n.endswith("weight")]
    print(f"# {vars(a)}")
    probe = data.x_test[: a.probe_images]
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(_epoch_seed(a.seed, epoch, 0))
        torch.manual_seed(_epoch_seed(a.seed, epoch, 1))
        order = torch.randperm(len(data.y_train), generator=gen)
        model.train()
        loss_sum, n = 0.0, 0
        for step in range(math.ceil(len(order) / a.bs)):
            idx = order[step * a.bs : (step + 1) * a.bs]
            out = model(data.x_train[idx].float())
            loss = F.cross_entropy(out, data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            (loss * len(idx) if a.loss_reduction == "sum" else loss).backward()
            if epoch == 0 and step in grad_steps:
                norms = " ".join(
                    f"{name.split('.')[0]}={float(p.grad.detach().norm()):.3g}/{float(p.detach().norm()):.3g}"
                    for name, p in params
                )
                print(f"step {step:4d} loss {float(loss):.4f} |grad|/|w|: {norms}", flush=True)
            opt.step()
            if a.weights == "binary":
                clip_latent_weights(model)
            if not math.isfinite(float(loss)):
                print("diverged (non-finite loss)")
                return
            loss_sum += float(loss) * len(idx)
            n += len(idx)
        _, acc = evaluate(model, cfg, data.x_test, data.y_test)
        stats = " | ".join(_pre_activation_stats(model, probe))
        print(
            f"epoch {epoch + 1} loss {loss_sum / n:.4f} test {acc:.4f} ({time.perf_counter() - t0:.0f}s) {stats}",
            flush=True,
        )


if __name__ == "__main__":
    main()
