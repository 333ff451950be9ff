"""Fold a trained binary ``nn.Sequential`` into .bnn layers: bits, integer thresholds, a final affine.

The model is walked once, one handler per module kind (the table ``HANDLERS``). Between two
binary layers every module is a per-channel monotone map; the handlers accumulate it as
``z = a * s + d`` on the integer sum ``s`` of the current layer, and the activation turns
``(a, d)`` into a threshold and a direction (docs/FORMAT.md, "How the exporter folds").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from bnn_runtime.bits import pack_signs, sign_is_positive
from bnn_train.activations import Activation
from bnn_train.layers import BinaryConv2d, BinaryLinear, InputScale, QuadMeanPool2d, Scale

from .errors import NotBinaryError, UnsupportedLayerError


@dataclass
class _Open:
    """The layer being folded: its integer-sum affine z = a * s + d per output channel."""

    name: str
    kind: str
    in_shape: tuple[int, ...]
    in_encoding: str
    weight: np.ndarray  # +-1, (out, fan_in)
    a: np.ndarray  # float64 (out,)
    d: np.ndarray
    max_abs_sum: int
    extra: dict = field(default_factory=dict)
    pool: dict | None = None  # {"kind": "or", "size": [..], "stride": [..] when not the size}


@dataclass
class _State:
    shape: tuple[int, ...]
    encoding: str = "uint8"
    input_scale: float = 1.0
    open: _Open | None = None
    layers: list = field(default_factory=list)
    arrays: dict = field(default_factory=dict)


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def _sign_bits(w: torch.Tensor) -> np.ndarray:
    return np.where(sign_is_positive(w.detach().cpu().numpy()), 1, -1).astype(np.int8)


def _start(state: _State, name: str, kind: str, weight: np.ndarray, bias, extra: dict) -> None:
    if state.open is not None:
        raise NotBinaryError(f"layer {name} follows {state.open.name} without an activation in between")
    out = weight.shape[0]
    fan_in = weight[0].size
    value_bound = 255 if state.encoding == "uint8" else 1
    scale = state.input_scale if state.encoding == "uint8" else 1.0
    b = _f64(bias) if bias is not None else np.zeros(out)
    state.open = _Open(
        name=name,
        kind=kind,
        in_shape=state.shape,
        in_encoding=state.encoding,
        weight=weight.reshape(out, fan_in),
        a=np.full(out, scale),
        d=b,
        max_abs_sum=value_bound * fan_in,
        extra=extra,
    )


def check_conv(name: str, m: nn.Conv2d) -> None:
    """The convolutions both exporters (.bnn and float ONNX) write; UnsupportedLayerError for any other."""
    if m.dilation != (1, 1) or m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise UnsupportedLayerError(
            f"layer {name}: only dilation 1, groups 1, numeric zero padding convolutions export"
        )


def _conv(state: _State, name: str, m: nn.Conv2d) -> None:
    check_conv(name, m)
    if not isinstance(m, BinaryConv2d):
        raise NotBinaryError(f"layer {name} has float weights (train with --weights binary)")
    if len(state.shape) != 3:
        raise NotBinaryError(f"layer {name} is a convolution but its input has shape {state.shape}")
    if state.encoding == "pm1" and any(m.padding):
        raise NotBinaryError(
            f"layer {name}: zero padding of sign activations is not representable in .bnn "
            "(a padded tap would be 0, which a sign bit cannot hold): use padding 0 (p0)"
        )
    extra = {"kernel": list(m.kernel_size), "padding": list(m.padding)}
    if tuple(m.stride) != (1, 1):
        extra["stride"] = list(m.stride)
    c, h, w = state.shape
    (kh, kw), (ph, pw), (sh, sw) = m.kernel_size, m.padding, m.stride
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise NotBinaryError(f"layer {name}: a {kh}x{kw} kernel does not fit its {h}x{w} input")
    _start(state, name, "conv", _sign_bits(m.weight), m.bias, extra)
    state.shape = (m.out_channels, oh, ow)


def _linear(state: _State, name: str, m: nn.Linear) -> None:
    if not isinstance(m, BinaryLinear):
        raise NotBinaryError(f"layer {name} has float weights (train with --weights binary)")
    state.shape = (math.prod(state.shape),)
    _start(state, name, "dense", _sign_bits(m.weight), m.bias, {})
    state.shape = (m.out_features,)


def _input_scale(state: _State, name: str, m: InputScale) -> None:
    if state.layers or state.open is not None:
        raise NotBinaryError(f"{name}: the input scale must come first")
    state.input_scale *= float(m.c)


def _scale(state: _State, name: str, m: Scale) -> None:
    _require_open(state, name)
    c = float(m.c)
    state.open.a *= c
    state.open.d *= c


def _batchnorm(state: _State, name: str, m: nn.modules.batchnorm._BatchNorm) -> None:
    o = _require_open(state, name)
    if o.pool is not None:
        raise NotBinaryError(f"{name}: BatchNorm after pooling cannot fold into a threshold")
    sigma = np.sqrt(_f64(m.running_var) + m.eps)
    gamma = _f64(m.weight) if m.affine else np.ones_like(sigma)
    beta = _f64(m.bias) if m.affine else np.zeros_like(sigma)
    mu = _f64(m.running_mean)
    o.a = gamma * o.a / sigma
    o.d = gamma * (o.d - mu) / sigma + beta


def _maxpool(state: _State, name: str, m: nn.MaxPool2d) -> None:
    size = _pair(m.kernel_size)
    stride = _pair(m.stride if m.stride is not None else m.kernel_size)
    if _pair(m.padding) != (0, 0) or _pair(m.dilation) != (1, 1) or m.ceil_mode:
        raise NotBinaryError(f"{name}: only max pooling without padding, dilation or ceil_mode exports")
    if len(state.shape) != 3:
        raise NotBinaryError(f"{name}: pooling must follow a convolution")
    c, h, w = state.shape
    oh, ow = (h - size[0]) // stride[0] + 1, (w - size[1]) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise NotBinaryError(f"{name}: a {size[0]}x{size[1]} pool does not fit its {h}x{w} input")
    pool = {"kind": "or", "size": list(size)}
    if stride != size:
        pool["stride"] = list(stride)
    if state.open is not None and state.open.kind == "conv" and state.open.pool is None:
        state.open.pool = pool  # pooling of pre-activations: f(max z) = max f(z) = OR of the bits
    elif (
        state.open is None
        and state.layers
        and state.layers[-1].get("pool") is None
        and state.layers[-1]["kind"] == "conv"
    ):
        last = state.layers[-1]  # pooling of bits after the activation: OR
        last["pool"] = pool
        last["out_shape"] = [c, oh, ow]
    else:
        raise NotBinaryError(f"{name}: pooling must follow a convolution (and at most one pool per layer)")
    state.shape = (c, oh, ow)


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _flatten(state: _State, name: str, m: nn.Flatten) -> None:
    if state.open is not None:
        raise NotBinaryError(f"{name}: flatten between a layer and its activation")


def _activation(state: _State, name: str, m: Activation) -> None:
    o = _require_open(state, name)
    bits = m.forward_fn.bits
    if bits is None:
        raise NotBinaryError(
            f"activation {name} is {m.forward_fn.name}, not a bit (train with a heaviside or sign forward)"
        )
    t, direction = thresholds(o.a, o.d, o.max_abs_sum)
    _close(state, "threshold", {"threshold": t, "direction": direction}, out_encoding=bits)
    state.encoding = bits


def _not_binary(state: _State, name: str, m: nn.Module) -> None:
    raise NotBinaryError(
        f"{name} ({type(m).__name__}) has no bit-exact form: quadratic-mean pooling needs a float network"
    )


HANDLERS = [
    (InputScale, _input_scale),
    (Scale, _scale),
    (BinaryConv2d, _conv),
    (nn.Conv2d, _conv),
    (BinaryLinear, _linear),
    (nn.Linear, _linear),
    (nn.modules.batchnorm._BatchNorm, _batchnorm),
    (nn.MaxPool2d, _maxpool),
    (nn.Flatten, _flatten),
    (Activation, _activation),
    (QuadMeanPool2d, _not_binary),
]


def _require_open(state: _State, name: str) -> _Open:
    if state.open is None:
        raise NotBinaryError(f"{name} does not follow a binary layer")
    return state.open


def thresholds(a: np.ndarray, d: np.ndarray, max_abs_sum: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer T and direction with  (a*s + d >= 0)  ==  (s >= T if dir > 0 else s <= T)  for integer s."""
    bound = max_abs_sum + 1
    t = np.zeros(len(a), dtype=np.int64)
    direction = np.ones(len(a), dtype=np.int8)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = -d / a
    pos, neg, zero = a > 0, a < 0, a == 0
    t[pos] = np.ceil(np.clip(x[pos], -bound, bound))
    t[neg] = np.floor(np.clip(x[neg], -bound, bound))
    # -d/a is rounded: move T by one where the rule disagrees with a*s + d >= 0 at the boundary
    for _ in range(2):
        on = a * t + d >= 0
        t[pos & on & (a * (t - 1) + d >= 0) & (t > -bound)] -= 1
        t[pos & ~on & (t < bound)] += 1
        t[neg & ~on & (t > -bound)] -= 1
        t[neg & on & (a * (t + 1) + d >= 0) & (t < bound)] += 1
    direction[neg] = -1
    t[zero] = np.where(d[zero] >= 0, -bound, bound)  # constant 1 / constant 0, direction +1
    return t.astype(np.int32), direction


def _close(state: _State, output: str, arrays: dict, out_encoding: str | None = None) -> None:
    o = state.open
    out = o.weight.shape[0]
    out_shape = list(state.shape)
    layer = {
        "name": o.name,
        "kind": o.kind,
        "in_encoding": o.in_encoding,
        "in_shape": list(o.in_shape),
        "fan_in": int(o.weight.shape[1]),
        "out_features": out,
        "output": output,
        "pool": o.pool,
        "out_shape": out_shape,
        **o.extra,
    }
    if out_encoding:
        layer["out_encoding"] = out_encoding
    refs = {"weight": f"{o.name}.weight"}
    state.arrays[refs["weight"]] = pack_signs(o.weight)
    for role, value in arrays.items():
        refs[role] = f"{o.name}.{role}"
        state.arrays[refs[role]] = value
    layer["arrays"] = refs
    state.layers.append(layer)
    state.open = None


def fold(model: nn.Sequential, input_shape: tuple[int, ...]) -> tuple[list[dict], dict[str, np.ndarray]]:
    """(layers, arrays) of the .bnn manifest for a binary model in eval mode; NotBinaryError otherwise."""
    state = _State(shape=tuple(input_shape))
    for name, m in model.named_children():
        for kind, handler in HANDLERS:
            if isinstance(m, kind):
                handler(state, name, m)
                break
        else:
            raise NotBinaryError(f"{name}: no exporter for {type(m).__name__}")
    if state.open is not None:  # the last layer yields scores and a per-class affine
        if state.open.pool is not None:
            raise NotBinaryError("the last layer cannot pool")
        _close(state, "scores", {"scale": state.open.a.astype(np.float64), "offset": state.open.d.astype(np.float64)})
    if not state.layers:
        raise NotBinaryError("the model has no binary layer")
    return state.layers, state.arrays
