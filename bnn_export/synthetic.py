"""A deployable .bnn of any ``--arch`` network without training: random ±1 weights, BatchNorm statistics
measured on random uint8 inputs (so thresholds fall inside the range of the sums and bits vary).

For benchmarks (``bnn bench --arch``): the speed of a network does not depend on what it learned.
"""

from __future__ import annotations

import numpy as np
import torch

from bnn_runtime.format import VERSION
from bnn_train.budget import sample_batch
from bnn_train.config import ModelConfig, RunConfig, TrainConfig
from bnn_train.models import build_model
from bnn_train.train import recompute_batchnorm

from .fold import fold

SAMPLE_IMAGES = 64  # random inputs whose statistics set the BatchNorm thresholds


@torch.no_grad()
def synthetic_bnn(
    spec: str, in_shape: tuple[int, ...], num_classes: int = 10, act: str = "heaviside/ste", seed: int = 0
) -> tuple[dict, dict]:
    """(manifest, arrays) of the untrained --arch network ``spec`` on uint8 input ``in_shape``."""
    cfg = ModelConfig(
        model="arch", arch=spec, act=act, in_shape=tuple(in_shape), num_classes=num_classes, input_scale=1 / 255
    )
    cfg.validate()
    n = sample_batch(cfg, SAMPLE_IMAGES)  # fewer images for a network too large for 64 in memory; refused if not 2
    torch.manual_seed(seed)
    model = build_model(cfg)
    x = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, size=(n, *in_shape), dtype=np.uint8))
    recompute_batchnorm(model, x, n)
    layers, arrays = fold(model.eval(), tuple(in_shape))
    manifest = {
        "format": "bnn",
        "version": VERSION,
        "input": {"dtype": "uint8", "shape": list(in_shape)},
        "classes": [str(i) for i in range(num_classes)],
        "layers": layers,
        "provenance": {
            "synthetic": f"untrained --arch {spec}, seed {seed}",
            "config": RunConfig(model=cfg, train=TrainConfig()).to_dict(),
        },
    }
    return manifest, arrays
