"""Random binary models for property tests: any width, sign or heaviside, BatchNorm with hostile statistics.

BatchNorm statistics are first measured on random inputs (so thresholds fall inside the
reachable range of the sums and bits actually vary), then perturbed: negative and zero
scales, zero variances, shifted means and offsets.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bnn_export.fold import fold
from bnn_runtime.format import BnnFile, parse, to_bytes
from bnn_train.config import ModelConfig
from bnn_train.models import build_model
from bnn_train.train import recompute_batchnorm


def random_config(
    rng: np.random.Generator,
    model: str,
    act: str = "heaviside",
    batchnorm: bool = True,
    hidden: tuple[int, ...] | None = None,
    width: float | None = None,
    in_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> ModelConfig:
    if model == "suc":
        in_shape = in_shape or (int(rng.integers(1, 150)),)
        num_classes = 2
    elif model == "mlp":
        hidden = hidden or tuple(int(h) for h in rng.integers(1, 140, size=rng.integers(1, 4)))
        in_shape = in_shape or ((1, 8, 8) if rng.random() < 0.5 else (int(rng.integers(1, 200)),))
    else:
        width = width or float(rng.choice([0.25, 0.5, 1.0, 1.5]))
        in_shape = in_shape or tuple(rng.choice([(1, 8, 8), (1, 12, 12), (1, 28, 28), (3, 16, 16)]))
    return ModelConfig(
        model=model,
        act=f"{act}/ste",
        weights="binary",
        batchnorm=batchnorm,
        hidden=hidden or (8,),
        width=width or 1.0,
        in_shape=tuple(int(s) for s in in_shape),
        num_classes=num_classes or int(rng.integers(2, 12)),
        input_scale=1 / 255,
    )


@torch.no_grad()
def random_model(cfg: ModelConfig, seed: int) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = build_model(cfg)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.weight.uniform_(-1, 1)
            if m.bias is not None:
                m.bias.normal_(0, 0.5)
    x = torch.from_numpy(rng.integers(0, 256, size=(64, *cfg.in_shape), dtype=np.uint8))
    recompute_batchnorm(model, x, 64)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            gamma = (
                torch.from_numpy(rng.normal(1.0, 0.5, n)).float() * torch.from_numpy(rng.choice([-1.0, 1.0], n)).float()
            )
            gamma[torch.from_numpy(rng.random(n) < 0.05)] = 0.0
            m.weight.copy_(gamma)
            m.bias.copy_(torch.from_numpy(rng.normal(0, 0.5, n)).float())
            m.running_mean.add_(torch.from_numpy(rng.normal(0, 0.3, n)).float() * m.running_var.sqrt())
            m.running_var[torch.from_numpy(rng.random(n) < 0.1)] = 0.0
    return model.eval()


def to_bnn(model: nn.Sequential, cfg: ModelConfig, classes: list[str] | None = None) -> tuple[BnnFile, bytes]:
    layers, arrays = fold(model, cfg.in_shape)
    manifest = {
        "format": "bnn",
        "version": 2,
        "input": {"dtype": "uint8", "shape": list(cfg.in_shape)},
        "classes": classes or [str(i) for i in range(cfg.num_classes)],
        "layers": layers,
        "provenance": {"test": True},
    }
    data = to_bytes(manifest, arrays)
    return parse(data), data


def random_inputs(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    """A mix of uniform noise, sparse images and constant images (all 0, all 255)."""
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    x[: n // 4] = np.where(rng.random((n // 4, *shape)) < 0.8, 0, x[: n // 4])
    if n >= 4:
        x[-1] = 0
        x[-2] = 255
    return x


@torch.no_grad()
def torch_predict(model: nn.Sequential, cfg: ModelConfig, x: np.ndarray) -> np.ndarray:
    out = model(torch.from_numpy(x).float())
    if cfg.model == "suc":
        act = model[-1].forward_fn
        return (out[:, 0] >= act.decision_threshold).long().numpy()
    return out.argmax(1).numpy()


def random_arch(
    rng: np.random.Generator, act: str, in_shape: tuple[int, int, int], runtime_geometry: bool = False
) -> str:
    """A random --arch spec that fits ``in_shape``: kernels 1-7, strides 1-3, any padding, pools of any
    window and stride; sign networks pad only their first convolution (a padded sign bit has no value).
    ``runtime_geometry``: stride-1 convolutions and non-overlapping pools only (what the Numba runtime runs)."""
    from bnn_train.arch import ArchError, check_arch

    for _ in range(200):
        tokens = []
        for i in range(int(rng.integers(1, 4))):
            k = int(rng.integers(1, 8))
            s = 1 if runtime_geometry else int(rng.integers(1, 4))
            p = 0 if act == "sign" and i > 0 else int(rng.integers(0, k // 2 + 2))
            c = int(rng.choice([1, 3, 5, 8, 13]))
            tokens.append(f"{c}C{k}s{s}p{p}")
            if rng.random() < 0.5:
                size = int(rng.integers(1, 4))
                stride = size if runtime_geometry else int(rng.integers(1, 4))
                tokens.append(f"MP{size}s{stride}")
        if rng.random() < 0.2:  # dense-only network
            tokens = []
        tokens += [f"{int(rng.choice([1, 7, 33, 65, 100]))}FC" for _ in range(int(rng.integers(0, 3)))]
        if not tokens:
            tokens = ["9FC"]
        spec = "-".join(tokens)
        try:
            check_arch(spec, in_shape)
            return spec
        except ArchError:
            continue
    return "5C1-9FC"


def random_arch_config(
    rng: np.random.Generator, act: str = "heaviside", batchnorm: bool = True, runtime_geometry: bool = False
) -> ModelConfig:
    c = int(rng.choice([1, 3]))
    in_shape = (c, int(rng.integers(5, 21)), int(rng.integers(5, 21)))
    return ModelConfig(
        model="arch",
        arch=random_arch(rng, act, in_shape, runtime_geometry),
        act=f"{act}/ste",
        weights="binary",
        batchnorm=batchnorm,
        in_shape=in_shape,
        num_classes=int(rng.integers(2, 12)),
        input_scale=1 / 255,
    )
