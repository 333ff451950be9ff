"""Any model ``bnn train`` builds, as a float32 ONNX graph (eval mode), one handler per module kind.

Used for networks that are not binary (float weights, smooth activations: no .bnn) and for
the float baseline of ``bnn bench``. Binary layers export sign(w) as float weights. The input
is the same uint8 batch the runtime takes.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from bnn_runtime.bits import sign_is_positive
from bnn_train.activations import Activation
from bnn_train.layers import BinaryConv2d, BinaryLinear, QuadMeanPool2d, Scale

from .errors import ExportError
from .fold import check_conv
from .graph import FLOAT, INT64, UINT8, Graph, heaviside


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy()


def _weight(m: nn.Module) -> np.ndarray:
    w = _np(m.weight)
    if isinstance(m, (BinaryConv2d, BinaryLinear)):
        return np.where(sign_is_positive(w), 1.0, -1.0).astype(np.float32)
    return w


def _bias(g: Graph, m: nn.Module, n: int) -> str:
    return g.const(_np(m.bias) if m.bias is not None else np.zeros(n, np.float32), "bias")


def _conv(g: Graph, m: nn.Conv2d, x: str) -> str:
    ph, pw = m.padding  # float_to_onnx checked the convolution with fold's check_conv
    return g.op(
        "Conv",
        [x, g.const(_weight(m), "w"), _bias(g, m, m.out_channels)],
        "conv",
        kernel_shape=list(m.kernel_size),
        strides=list(m.stride),
        pads=[ph, pw, ph, pw],
    )


def _linear(g: Graph, m: nn.Linear, x: str) -> str:
    return g.op("Gemm", [x, g.const(_weight(m), "w"), _bias(g, m, m.out_features)], "gemm", transB=1)


def _batchnorm(g: Graph, m: nn.modules.batchnorm._BatchNorm, x: str) -> str:
    n = m.num_features
    gamma = _np(m.weight) if m.affine else np.ones(n, np.float32)
    beta = _np(m.bias) if m.affine else np.zeros(n, np.float32)
    return g.op(
        "BatchNormalization",
        [
            x,
            g.const(gamma, "gamma"),
            g.const(beta, "beta"),
            g.const(_np(m.running_mean), "mean"),
            g.const(_np(m.running_var), "var"),
        ],
        "bn",
        epsilon=float(m.eps),
    )


def _scale(g: Graph, m: Scale, x: str) -> str:
    return g.op("Mul", [x, g.const(np.array(float(m.c), np.float32), "scale")])


def _maxpool(g: Graph, m: nn.MaxPool2d, x: str) -> str:
    k = list(m.kernel_size) if isinstance(m.kernel_size, tuple) else [m.kernel_size] * 2
    s = m.stride if m.stride is not None else m.kernel_size
    s = list(s) if isinstance(s, tuple) else [s] * 2
    return g.op("MaxPool", [x], "maxpool", kernel_shape=k, strides=s)


def _qmean(g: Graph, m: QuadMeanPool2d, x: str) -> str:
    k = [m.kernel_size] * 2
    mean_sq = g.op("AveragePool", [g.op("Mul", [x, x])], "qmean", kernel_shape=k, strides=k)
    return g.op("Sqrt", [g.op("Max", [mean_sq, g.const(np.array(1e-12, np.float32), "eps")])])


def _flatten(g: Graph, m: nn.Flatten, x: str) -> str:
    return g.op("Flatten", [x], "flatten", axis=1)


def _f32(g: Graph, v: float, hint: str = "c") -> str:
    return g.const(np.array(v, np.float32), hint)


def _activation(g: Graph, m: Activation, x: str) -> str:
    name, p = m.forward_fn.name, m.params
    if name == "heaviside":
        return g.op("Cast", [heaviside(g, x, _f32(g, 0.0))], to=FLOAT)
    if name == "sign":
        return g.op("Where", [heaviside(g, x, _f32(g, 0.0)), _f32(g, 1.0), _f32(g, -1.0)], "sign")
    if name == "sigmoid_tanh":
        t = g.op("Tanh", [g.op("Mul", [x, _f32(g, p.st_beta)])])
        return g.op("Sigmoid", [g.op("Mul", [t, _f32(g, p.st_k)])])
    op = {"logistic": "Sigmoid", "relu": "Relu", "linear": "Identity", "tanh": "Tanh"}[name]
    return g.op(op, [x], name)


HANDLERS = [
    (Scale, _scale),  # InputScale is a Scale
    (nn.Conv2d, _conv),
    (nn.Linear, _linear),
    (nn.modules.batchnorm._BatchNorm, _batchnorm),
    (nn.MaxPool2d, _maxpool),
    (QuadMeanPool2d, _qmean),
    (nn.Flatten, _flatten),
    (Activation, _activation),
]


def float_to_onnx(
    model: nn.Sequential, input_shape: tuple[int, ...], single_unit: bool = False, metadata: dict | None = None
) -> onnx.ModelProto:
    """Outputs ``logits`` (float32; a SUC's activation) and ``label`` (int64)."""
    g = Graph("bnn_float")
    x = g.op("Cast", [g.input("images", UINT8, ["N", *input_shape])], to=FLOAT)
    flat = len(input_shape) == 1
    for name, m in model.named_children():
        if isinstance(m, nn.Conv2d):
            check_conv(name, m)  # the same rule, and error type, as the .bnn exporter
        if isinstance(m, nn.Flatten) and flat:
            continue  # (N, features) already: no node (the exact graph writes none either)
        flat = flat or isinstance(m, nn.Flatten)
        for kind, handler in HANDLERS:
            if isinstance(m, kind):
                x = handler(g, m, x)
                break
        else:
            raise ExportError(f"{name}: no ONNX exporter for {type(m).__name__}")
    if single_unit:
        act = model[-1].forward_fn
        middle = _f32(g, act.decision_threshold)
        label = g.op("Squeeze", [g.op("Cast", [heaviside(g, x, middle)], to=INT64), g.const(np.array([1], np.int64))])
        g.output(x, "logits", FLOAT, ["N", 1])
    else:
        label = g.op("ArgMax", [x], "argmax", axis=1, keepdims=0, select_last_index=0)
        g.output(x, "logits", FLOAT, ["N", None])
    g.output(label, "label", INT64, ["N"])
    return g.model(metadata)
