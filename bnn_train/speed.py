"""Training-speed benchmark: images/s per epoch of a binary network against its float twin, side by side.

Both models train on the same data in the same process, epochs interleaved (binary, float,
binary, float, ...), so background load affects both alike; the ratio is what is reported.
This is a benchmark, not a test: nothing asserts on time.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

import torch

from .batches import batch_slices
from .config import ModelConfig, RunConfig, TrainConfig
from .data import load_dataset
from .models import build_model
from .train import Callback, loss_and_predictions, make_optimizer, resolve_device, train_one_epoch

VARIANTS = {
    "binary": dict(act=ModelConfig.act, weights="binary", pool="max"),  # bnn train's default backward
    "float_qmean": dict(act="relu/tied", weights="float", pool="qmean"),  # the paper's LeNet-5 pooling
    "float": dict(act="relu/tied", weights="float", pool="max"),  # the same topology as the binary one
}
WARMUP_BATCHES = 20


def _warm_up(model, cfg, data, optimizer) -> None:
    """A few untimed steps so that allocator and thread-pool start-up costs stay out of epoch 1."""
    for s in batch_slices(len(data.y_train), cfg.train.batch_size)[:WARMUP_BATCHES]:
        x, y = data.x_train[s], data.y_train[s]
        loss, _ = loss_and_predictions(model, cfg, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()


def compare_training_speed(
    train: TrainConfig, model: ModelConfig, epochs: int = 2, variants: dict[str, dict] | None = None, callback=None
) -> dict:
    """Train every variant for ``epochs`` interleaved epochs; images/s per epoch and epoch cost relative to
    the last variant."""
    variants = variants or VARIANTS
    device = resolve_device(train.device)
    data = load_dataset(train)
    cfgs = {
        name: RunConfig(model=replace(model, **changes), train=train).with_dataset(
            data.in_shape, data.num_classes, data.input_scale
        )
        for name, changes in variants.items()
    }
    data = data.to(device)
    models, opts = {}, {}
    for name, cfg in cfgs.items():
        cfg.validate()
        torch.manual_seed(train.seed)
        models[name] = build_model(cfg.model).to(device)
        opts[name] = make_optimizer(models[name], cfg)
        _warm_up(models[name], cfg, data, opts[name])
    rates: dict[str, list[float]] = {name: [] for name in cfgs}
    for epoch in range(epochs):
        for name, cfg in cfgs.items():
            record = train_one_epoch(models[name], cfg, data, opts[name], epoch, callback or Callback())
            rates[name].append(record["images_per_s"])
    base = list(cfgs)[-1]
    median = {name: statistics.median(r) for name, r in rates.items()}
    return {
        "dataset": data.name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "epochs": epochs,
        "batch_size": train.batch_size,
        "model": model.model,
        "variants": {
            name: {
                "act": cfgs[name].model.act,
                "weights": cfgs[name].model.weights,
                "batchnorm": cfgs[name].model.batchnorm,
                "pool": cfgs[name].model.pool_kind,
                "images_per_s": rates[name],
                "median_images_per_s": median[name],
                "epoch_cost_vs_" + base: median[base] / median[name],
            }
            for name in cfgs
        },
    }
