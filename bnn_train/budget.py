"""Resource-hungry settings refused before anything is allocated, with the limit named.

A typo (``--hidden 100000,100000``, ``--width 1000``, ``--n-samples 10000000000``) would otherwise
try to allocate tens of gigabytes and die with a MemoryError, or swap the machine. The network's
size (and, for ``bnn bench --arch``, its activations per image) is counted on PyTorch's ``meta``
device (shapes only, no memory); the synthetic dataset's size is its sample count times its dimension.
"""

from __future__ import annotations

import math
from dataclasses import replace

from .config import ModelConfig, RunConfig
from .errors import ConfigError

MAX_PARAMETERS = 2**28  # 1 GiB of float32 weights (and as much again for Adam's two moments)
MAX_SYNTHETIC_VALUES = 2**30  # the `ones` dataset: n_samples * dim bytes
MAX_BATCH_ACTIVATION_BYTES = 2**30  # float32 outputs of every layer for one batch (bnn bench --arch's sample batch)


def parameter_count(cfg: RunConfig) -> int:
    """Parameters of the network ``cfg`` describes, without allocating them."""
    in_shape, num_classes = cfg.train.dataset_shape()
    return model_parameter_count(replace(cfg.model, in_shape=in_shape, num_classes=num_classes))


def model_parameter_count(model_cfg: ModelConfig) -> int:
    """Parameters of the network of ``model_cfg`` (``in_shape``, ``num_classes`` set), without allocating them."""
    import torch

    from .models import build_model

    try:
        with torch.device("meta"):
            model = build_model(model_cfg)
    except RuntimeError as e:  # a layer of more than 2**63 weights: torch refuses even the shape
        if "overflow" not in str(e):
            raise
        raise ConfigError(
            f"the network's weights overflow 64-bit sizes; the limit is {MAX_PARAMETERS:,} parameters: "
            "lower --hidden, --width or the --arch widths"
        ) from None
    return sum(p.numel() for p in model.parameters())


def activation_values(model_cfg: ModelConfig) -> int:
    """Values every layer of the network outputs for one image, summed, counted on the meta device (no memory)."""
    import torch

    from .models import build_model

    with torch.device("meta"):
        model = build_model(model_cfg).eval()
        counts: list[int] = []
        for m in model:
            m.register_forward_hook(lambda _m, _i, out: counts.append(out.numel()))
        model(torch.empty((1, *model_cfg.in_shape)))
    return sum(counts)


def check_parameters(n: int) -> None:
    if n > MAX_PARAMETERS:
        raise ConfigError(
            f"the network has {n:,} parameters; the limit is {MAX_PARAMETERS:,} (1 GiB of float32 "
            "weights): lower --hidden, --width or the --arch widths"
        )


def sample_batch(model_cfg: ModelConfig, wanted: int) -> int:
    """How many images (at most ``wanted``, at least 2 for BatchNorm) one batch of this network may hold within
    ``MAX_BATCH_ACTIVATION_BYTES``; ConfigError naming the limit when not even 2 fit (or the weights are too many)."""
    if 2 * 4 * math.prod(model_cfg.in_shape) > MAX_BATCH_ACTIVATION_BYTES:
        raise ConfigError(_too_large_image(model_cfg, 4 * math.prod(model_cfg.in_shape)))
    check_parameters(model_parameter_count(model_cfg))
    per_image = 4 * (activation_values(model_cfg) + math.prod(model_cfg.in_shape))
    if 2 * per_image > MAX_BATCH_ACTIVATION_BYTES:
        raise ConfigError(_too_large_image(model_cfg, per_image))
    return max(2, min(wanted, MAX_BATCH_ACTIVATION_BYTES // per_image))


def _too_large_image(model_cfg: ModelConfig, per_image: int) -> str:
    return (
        f"one image of shape {list(model_cfg.in_shape)} makes {per_image:,} bytes of activations in this network; "
        f"the limit is {MAX_BATCH_ACTIVATION_BYTES // 2:,}: a smaller input or fewer channels"
    )


def check_budget(cfg: RunConfig) -> None:
    t = cfg.train
    if t.dataset == "ones" and t.n_samples * t.dim > MAX_SYNTHETIC_VALUES:
        raise ConfigError(
            f"--n-samples {t.n_samples} x --dim {t.dim} = {t.n_samples * t.dim:,} values; "
            f"the limit is {MAX_SYNTHETIC_VALUES:,} (1 GiB)"
        )
    check_parameters(parameter_count(cfg))
