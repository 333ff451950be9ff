"""The paper's three networks (§4.1) as flat ``nn.Sequential`` stacks: SUC, MLP and LeNet-5.

Every model starts with ``InputScale`` (raw pixel values in, a positive scale only) and is a
plain sequence of named layers, so that the exporter can walk it with one handler per layer
kind. A linear layer is followed by BatchNorm (``--batchnorm``), or, for binary weights
without BatchNorm, by a fixed ``Scale(1/sqrt(fan_in))``.

Pooling: for bit-valued forwards (heaviside, sign) LeNet-5 max-pools the pre-activations
and then applies the activation. Because every forward is non-decreasing,
f(max z) = max f(z): the forward is that of "activate, then max-pool" -- an OR of bits in the
deployed network -- while the gradient reaches the largest pre-activation. Other forwards
use the paper's quadratic-mean pooling after the activation.

BatchNorm before a max pool starts with bias -E[max of the window's k*k standard normals]
(-1.03 for 2x2), so that the *pooled* pre-activations, not the unpooled ones, are centred on
the step: otherwise about 94 % of the pooled units sit above 0 and most of them outside a
narrow backward window (rect), so the conv layers get little gradient early on (the gain in
accuracy is in docs/PERFORMANCE.md).
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from .activations import Activation
from .arch import Conv, Pool, arch_shapes, check_arch
from .config import ModelConfig
from .init import apply_init
from .layers import BinaryConv2d, BinaryLinear, InputScale, QuadMeanPool2d, Scale


def _linear(cfg: ModelConfig, n_in: int, n_out: int) -> nn.Module:
    return (BinaryLinear if cfg.weights == "binary" else nn.Linear)(n_in, n_out)


def _conv(cfg: ModelConfig, c_in: int, c_out: int, k: int, padding, stride: int = 1) -> nn.Module:
    return (BinaryConv2d if cfg.weights == "binary" else nn.Conv2d)(c_in, c_out, k, stride=stride, padding=padding)


def _norm(cfg: ModelConfig, n: int, fan_in: int, conv: bool) -> nn.Module | None:
    if cfg.batchnorm:
        return nn.BatchNorm2d(n) if conv else nn.BatchNorm1d(n)
    if cfg.weights == "binary":
        return Scale(1.0 / math.sqrt(fan_in))
    return None


@functools.lru_cache
def expected_max_of_normals(n: int) -> float:
    """E[max(z_1..z_n)] for independent standard normal z_i (numerical integration; 1.0294 for n = 4)."""
    x = np.linspace(-10.0, 10.0, 20001)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2)))
    return float(np.sum(x * n * pdf * cdf ** (n - 1)) * (x[1] - x[0]))


def _centre_for_max_pool(norm: nn.Module | None, window: int) -> None:
    if isinstance(norm, nn.BatchNorm2d):
        with torch.no_grad():
            norm.bias.fill_(-expected_max_of_normals(window))


def _act(cfg: ModelConfig) -> Activation:
    return Activation(cfg.act, cfg.act_params)


class _Stack:
    """Collects named layers, numbering them per kind (linear1, bn1, act1, ...)."""

    def __init__(self):
        self.layers: OrderedDict[str, nn.Module] = OrderedDict()

    def add(self, kind: str, module: nn.Module | None, index: int | str = "") -> None:
        if module is not None:
            self.layers[f"{kind}{index}"] = module

    def build(self) -> nn.Sequential:
        return nn.Sequential(self.layers)


def _flat_size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def build_suc(cfg: ModelConfig) -> nn.Sequential:
    """Single unit classifier: y = f(w.x + b), one output unit (paper Fig. 3)."""
    s = _Stack()
    n = _flat_size(cfg.in_shape)
    s.add("input", InputScale(cfg.input_scale))
    s.add("flatten", nn.Flatten())
    s.add("linear", _linear(cfg, n, 1), 1)
    s.add("norm", _norm(cfg, 1, n, conv=False), 1)
    s.add("act", _act(cfg), 1)
    return s.build()


def build_mlp(cfg: ModelConfig) -> nn.Sequential:
    """Fully connected: in -> hidden[0] -> ... -> hidden[-1] -> classes (logits)."""
    s = _Stack()
    n = _flat_size(cfg.in_shape)
    s.add("input", InputScale(cfg.input_scale))
    s.add("flatten", nn.Flatten())
    for i, h in enumerate(cfg.hidden, start=1):
        s.add("linear", _linear(cfg, n, h), i)
        s.add("norm", _norm(cfg, h, n, conv=False), i)
        s.add("act", _act(cfg), i)
        n = h
    last = len(cfg.hidden) + 1
    s.add("linear", _linear(cfg, n, cfg.num_classes), last)
    s.add("norm", _norm(cfg, cfg.num_classes, n, conv=False), last)
    return s.build()


def lenet5_padding(size: int) -> int:
    """conv1 zero padding: 2 as in LeNet-5 on 28x28 MNIST; more for small images (8x8 digits)
    so that conv1's output is at least 16 wide and both pools fit. Padding the first layer is
    exact in the integer domain (pixel value 0)."""
    return max(2, math.ceil((20 - size) / 2))


def build_lenet5(cfg: ModelConfig) -> nn.Sequential:
    """LeNet-5: conv 6@5x5 pad 2 -> pool -> conv 16@5x5 -> pool -> fc 120 -> fc 84 -> fc classes.

    ``width`` multiplies the channel and unit counts.
    """
    c, h, w = cfg.in_shape
    c1, c2, f1, f2 = (max(1, round(n * cfg.width)) for n in (6, 16, 120, 84))
    pad = (lenet5_padding(h), lenet5_padding(w))
    h, w = (h + 2 * pad[0] - 4) // 2, (w + 2 * pad[1] - 4) // 2
    h, w = (h - 4) // 2, (w - 4) // 2
    if h < 1 or w < 1:
        raise ValueError(f"input {cfg.in_shape} is too small for lenet5")
    pool_max = cfg.pool_kind == "max"

    s = _Stack()
    s.add("input", InputScale(cfg.input_scale))
    for i, (cin, cout, p) in enumerate(((c, c1, pad), (c1, c2, 0)), start=1):
        s.add("conv", _conv(cfg, cin, cout, 5, p), i)
        norm = _norm(cfg, cout, cin * 25, conv=True)
        s.add("norm", norm, i)
        if pool_max:
            _centre_for_max_pool(norm, 2 * 2)
            s.add("pool", nn.MaxPool2d(2), i)
            s.add("act", _act(cfg), i)
        else:
            s.add("act", _act(cfg), i)
            s.add("pool", QuadMeanPool2d(2), i)
    s.add("flatten", nn.Flatten())
    n = c2 * h * w
    for i, units in enumerate((f1, f2), start=3):
        s.add("linear", _linear(cfg, n, units), i)
        s.add("norm", _norm(cfg, units, n, conv=False), i)
        s.add("act", _act(cfg), i)
        n = units
    s.add("linear", _linear(cfg, n, cfg.num_classes), 5)
    s.add("norm", _norm(cfg, cfg.num_classes, n, conv=False), 5)
    return s.build()


def build_arch(cfg: ModelConfig) -> nn.Sequential:
    """The network of ``cfg.arch`` (bnn_train/arch.py), then the classifier.

    A hidden layer is linear -> norm -> activation; a max pool that follows a convolution of a
    bit-valued forward pools the pre-activations before the activation (an OR of bits when
    deployed, see the module docstring), otherwise it pools after the activation. Module names
    carry the index of their linear layer (conv1, norm1, pool1, act1, linear2, ...); the
    model's ``arch_tokens`` maps each name to the token it came from.
    """
    layers = check_arch(cfg.arch, cfg.in_shape)
    bits_pool = cfg.forward_name in ("heaviside", "sign")
    s = _Stack()
    tokens: dict[str, str] = {}
    s.add("input", InputScale(cfg.input_scale))
    tokens["input"] = "the input"
    shape = tuple(cfg.in_shape)
    i = 0
    for j, layer in enumerate(layers):
        if isinstance(layer, Pool):
            continue
        i += 1
        pool = layers[j + 1] if j + 1 < len(layers) and isinstance(layers[j + 1], Pool) else None
        if isinstance(layer, Conv):
            fan_in = shape[0] * layer.kernel**2
            s.add("conv", _conv(cfg, shape[0], layer.channels, layer.kernel, layer.padding, layer.stride), i)
            norm = _norm(cfg, layer.channels, fan_in, conv=True)
        else:
            if len(shape) != 1:
                s.add("flatten", nn.Flatten())
            fan_in = _flat_size(shape)
            s.add("linear", _linear(cfg, fan_in, layer.units), i)
            norm = _norm(cfg, layer.units, fan_in, conv=False)
        s.add("norm", norm, i)
        if pool is not None and bits_pool:
            _centre_for_max_pool(norm, pool.size**2)
            s.add("pool", nn.MaxPool2d(pool.size, pool.stride), i)
        s.add("act", _act(cfg), i)
        if pool is not None and not bits_pool:
            s.add("pool", nn.MaxPool2d(pool.size, pool.stride), i)
        for name in s.layers:
            tokens.setdefault(name, pool.token if pool is not None and name == f"pool{i}" else layer.token)
        shape = arch_shapes(layers[j : j + 2 if pool else j + 1], shape)[-1]
    if len(shape) != 1:
        s.add("flatten", nn.Flatten())
    n = _flat_size(shape)
    s.add("linear", _linear(cfg, n, cfg.num_classes), i + 1)
    s.add("norm", _norm(cfg, cfg.num_classes, n, conv=False), i + 1)
    for name in s.layers:
        tokens.setdefault(name, "the classifier")
    model = s.build()
    model.arch_tokens = tokens
    return model


BUILDERS = {"suc": build_suc, "mlp": build_mlp, "lenet5": build_lenet5, "arch": build_arch}


def build_model(cfg: ModelConfig) -> nn.Sequential:
    """Build the network described by ``cfg`` and initialise it with ``cfg.init``."""
    cfg.validate()
    model = BUILDERS[cfg.model](cfg)
    apply_init(model, cfg.init)
    return model


def is_single_unit(cfg: ModelConfig) -> bool:
    """The SUC ends in its activation and is trained with a squared error on it."""
    return cfg.model == "suc"
