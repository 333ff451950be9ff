"""Resource-hungry settings refused before anything is allocated, with the limit named.

A typo (``--hidden 100000,100000``, ``--width 1000``, ``--n-samples 10000000000``) would otherwise
try to allocate tens of gigabytes and die with a MemoryError, or swap the machine. The network's
size is counted on PyTorch's ``meta`` device (shapes only, no memory); the synthetic dataset's
size is its sample count times its dimension.
"""

from __future__ import annotations

from dataclasses import replace

from .config import RunConfig
from .errors import ConfigError

MAX_PARAMETERS = 2**28  # 1 GiB of float32 weights (and as much again for Adam's two moments)
MAX_SYNTHETIC_VALUES = 2**30  # the `ones` dataset: n_samples * dim bytes


def parameter_count(cfg: RunConfig) -> int:
    """Parameters of the network ``cfg`` describes, without allocating them."""
    import torch

    from .models import build_model

    in_shape, num_classes = cfg.train.dataset_shape()
    model_cfg = replace(cfg.model, in_shape=in_shape, num_classes=num_classes)
    with torch.device("meta"):
        model = build_model(model_cfg)
    return sum(p.numel() for p in model.parameters())


def check_budget(cfg: RunConfig) -> None:
    t = cfg.train
    if t.dataset == "ones" and t.n_samples * t.dim > MAX_SYNTHETIC_VALUES:
        raise ConfigError(
            f"--n-samples {t.n_samples} x --dim {t.dim} = {t.n_samples * t.dim:,} values; "
            f"the limit is {MAX_SYNTHETIC_VALUES:,} (1 GiB)"
        )
    n = parameter_count(cfg)
    if n > MAX_PARAMETERS:
        raise ConfigError(
            f"the network has {n:,} parameters; the limit is {MAX_PARAMETERS:,} (1 GiB of float32 "
            "weights): lower --hidden, --width or the --arch widths"
        )
