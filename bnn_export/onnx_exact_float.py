"""The deployed .bnn network as an exact ONNX graph of the operators onnxruntime runs fastest.

Every value in the network is a small integer: pixels 0..255, bits 0/1, weights +-1, sums of at
most ``255 * fan_in``. Per layer, with ``d`` the channel's direction and ``T`` its threshold
(docs/FORMAT.md), the weights are ``d * w`` (``2 * d * w`` for ``pm1`` inputs, which travel as 0/1
bits: ``s = 2 s01 - sum w``) and the bias ``-d * T + 1`` (minus ``d * sum w`` for ``pm1``), so the
layer computes ``d (s - T) + 1``, which is >= 1 exactly when the bit is set.

* a convolution takes one of three forms (``conv_form``), whichever onnxruntime runs fastest for it:

  - ``QLinearConv`` (``_quantized_conv``) for a hidden one with >= 16 input channels: uint8 input,
    int8 weights, every scale 1 but the output's, so that the requantized int32 sums saturate to the
    bit as uint8 0 / 255 (an OR-pool is a uint8 ``MaxPool`` of those). onnxruntime runs it in NHWC on
    its integer kernels (VNNI): 2-3x its float ``Conv`` on a VGG net's 128-512 channels;
  - a banded ``MatMulInteger`` (``onnx_band_conv``) for one with fewer input channels and a narrow
    input (LeNet-5's): the float ``Conv`` wastes most of its 16-channel NCHWc blocks there, and
    ``QLinearConv`` is slower still;
  - else a float ``Conv``: float32 holds every integer below 2**24 exactly, so with every partial
    sum below 2**24 it computes the integer sums exactly, in any order of addition (``ConvInteger``
    is im2col and slow: the integer graph's 0.1-0.2x). Its step is ``HardSigmoid(., alpha=1, beta=0)``
    = ``min(max(., 0), 1)`` (``graph.heaviside_of_integers``) on the max-pooled sums (a max commutes
    with a monotone step); where no pool follows, onnxruntime fuses it into the Conv;

* a dense layer is ``MatMulInteger`` of uint8 values (the pixels as they come, or the 0/1 bits: a
  convolution's bits are cast once) and int8 weights: exact int32 sums, in onnxruntime's integer
  GEMM (VNNI/AMX where the CPU has them: 3x the float network on a 784-130-65-10 MLP, 4x with
  4096-wide layers). Its step is ``GreaterOrEqual(acc, 1 - bias)`` on the int32 sums, cast to uint8;
* the last layer: ``scores`` (int32), ``logits`` (float64, ``scale * s + offset``) and ``label``
  (int64, their first argmax), as the runtime computes them.

``exact_float_fits`` says whether a model's sums all stay below 2**24 (a first layer with a fan-in
of more than about 65,000 pixels does not); ``onnx_bnn.bnn_to_onnx`` then writes the integer graph.
"""

from __future__ import annotations

import numpy as np
import onnx

from bnn_runtime.format import BnnFile
from bnn_runtime.reference import conv_stride, pool_stride, unpacked_weights

from .graph import BOOL, DOUBLE, FLOAT, INT32, INT64, UINT8, Graph, heaviside, heaviside_of_integers
from .onnx_band_conv import band_conv, banded, from_rows, rows_order, to_rows

FLOAT32_EXACT = 2**24  # every integer of smaller magnitude is a float32
INT32_EXACT = 2**31  # the int32 accumulators of QLinearConv / MatMulInteger
BITS = 255  # a QLinearConv's output bit: 0 or 255 (uint8), saturated from its sums
QUANTIZED_CONV_MIN_CHANNELS = 16  # fewer input channels: the float Conv is faster (docs/PERFORMANCE.md)


def _max_input(layer: dict) -> int:
    return 255 if layer["in_encoding"] == "uint8" else 1


def _folded(model: BnnFile, layer: dict) -> tuple[np.ndarray, np.ndarray]:
    """(float weights (out, fan_in), float bias (out,)) of ``d * (s - T) + 1`` -- or of ``s`` for the last layer."""
    w = unpacked_weights(model, layer).astype(np.int64)
    bias = np.zeros(len(w), np.int64)
    if layer["in_encoding"] == "pm1":  # 0/1 bits b carry the values 2b - 1
        bias -= w.sum(axis=1)
        w = 2 * w
    if layer["output"] == "threshold":
        d = model.array(layer, "direction").astype(np.int64)
        reach = _max_input(layer) * layer["fan_in"] + 1  # beyond it a threshold is always or never met
        t = np.clip(model.array(layer, "threshold").astype(np.int64), -reach, reach)
        w, bias = w * d[:, None], (bias - t) * d + 1
    return w, bias


def _bound(model: BnnFile, layer: dict) -> int:
    """The largest magnitude of any partial sum of ``d (s - T) + 1`` (or ``s``) the layer computes."""
    w, bias = _folded(model, layer)
    return int(np.abs(w).sum(axis=1).max()) * _max_input(layer) + int(np.abs(bias).max())


def exact_float_fits(model: BnnFile) -> bool:
    """Whether every partial sum of every layer stays below 2**24 in magnitude (so float32 is exact)."""
    return all(_bound(model, layer) < FLOAT32_EXACT for layer in model.layers)


CONV_FORMS = ("quantized", "banded", "float")


def conv_form(model: BnnFile, layer: dict, last: bool, prefer: str | None = None) -> str:
    """How a convolution is exported, one of ``CONV_FORMS``: ``QLinearConv`` for a hidden one with at least
    ``QUANTIZED_CONV_MIN_CHANNELS`` input channels (``_quantized_conv``), else banded ``MatMulInteger`` where
    ``onnx_band_conv.banded`` allows, else the float ``Conv``; ``prefer`` asks for one form wherever it is
    exact (a scores layer, and the last layer, are always float). Quantized sums, scaled by up to 255
    (``BITS``), must stay within int32 (and a float32's range once requantized)."""
    if layer["output"] != "threshold" or last:
        return "float"
    can_quantize = BITS * _bound(model, layer) < INT32_EXACT
    can_band = banded(layer)
    if prefer is not None:
        return prefer if {"quantized": can_quantize, "banded": can_band, "float": True}[prefer] else "float"
    if can_quantize and layer["in_shape"][0] >= QUANTIZED_CONV_MIN_CHANNELS:
        return "quantized"
    return "banded" if can_band else "float"


def _conv_sums(g: Graph, model: BnnFile, layer: dict, x: str) -> str:
    """The convolution's float sums ``d (s - T) + 1`` (or ``s``) of the float input x."""
    w, bias = _folded(model, layer)
    name = layer["name"]
    c = layer["in_shape"][0]
    kh, kw = layer["kernel"]
    ph, pw = layer["padding"]
    weights = g.const(w.reshape(-1, c, kh, kw).astype(np.float32), f"{name}_w")
    return g.op(
        "Conv",
        [x, weights, g.const(bias.astype(np.float32), f"{name}_b")],
        name,
        kernel_shape=[kh, kw],
        pads=[ph, pw, ph, pw],
        strides=list(conv_stride(layer)),
    )


def _quantized_conv(g: Graph, model: BnnFile, layer: dict, x: str, k: int) -> str:
    """The convolution's bits as uint8 0 / 255 (max-pooled) of the uint8 input x holding ``k`` times its values.

    ``QLinearConv`` with every scale 1 but the output's, ``k / 255``: its int32 sums ``acc + k * bias`` are
    ``k (d (s - T) + 1)``, requantized as ``saturate(round(255 / k * (acc + k * bias)))``: 0 where the sum is
    <= 0, 255 where it is >= 1 (``conv_form`` keeps every value within int32 and float32 range)."""
    w, bias = _folded(model, layer)
    name = layer["name"]
    c = layer["in_shape"][0]
    kh, kw = layer["kernel"]
    ph, pw = layer["padding"]
    one = g.const(np.array(1.0, np.float32), "one")
    zero_u8 = g.const(np.array(0, np.uint8), "zero")
    inputs = [
        [x, one, zero_u8],
        [g.const(w.reshape(-1, c, kh, kw).astype(np.int8), f"{name}_w"), one, g.const(np.array(0, np.int8), "zero")],
        [g.const(np.array(k / BITS, np.float32), "bit_scale"), zero_u8],
        [g.const((k * bias).astype(np.int32), f"{name}_b")],
    ]
    y = g.op(
        "QLinearConv",
        [i for group in inputs for i in group],
        name,
        kernel_shape=[kh, kw],
        pads=[ph, pw, ph, pw],
        strides=list(conv_stride(layer)),
    )
    pool = layer.get("pool")
    if pool:  # OR of the bits (0 / 255)
        y = g.op("MaxPool", [y], "or_pool", kernel_shape=pool["size"], strides=list(pool_stride(pool)))
    return y


def _as(g: Graph, x: str, k: int | None, to: int) -> str:
    """x -- float 0/1 bits (``k`` None) or uint8 holding ``k`` times its values -- as ``to`` (FLOAT or UINT8)."""
    if k == BITS:  # 0 / 255 -> 0 / 1
        x = g.op("Cast", [x], "bits", to=BOOL)
    elif (k is None) == (to == FLOAT):
        return x
    return g.op("Cast", [x], "pixels" if k == 1 and to == FLOAT else "bits", to=to)


def _dense_sums(
    g: Graph, model: BnnFile, layer: dict, x: str, order: np.ndarray | None = None
) -> tuple[str, np.ndarray]:
    """(int32 ``acc`` = the folded weights times the uint8 input x of shape (N, features), the folded bias):
    the layer computes ``acc + bias`` = ``d (s - T) + 1`` (or ``s``). ``order``: the input feature at each
    position of x (a flattened row layout), when not the natural one."""
    w, bias = _folded(model, layer)
    w = w if order is None else w[:, order]
    weights = g.const(np.ascontiguousarray(w.T).astype(np.int8), f"{layer['name']}_w")  # +-1, +-2 for pm1
    return g.op("MatMulInteger", [x, weights], layer["name"]), bias


def _int32(g: Graph, values: np.ndarray, hint: str) -> str:
    return g.const(values.astype(np.int32), hint)


def bnn_to_onnx_float(
    model: BnnFile, metadata: dict | None = None, prefer: str | dict | None = None
) -> onnx.ModelProto:
    """Outputs ``scores`` (int32), ``logits`` (float64) and ``label`` (int64), exactly the runtime's;
    a single-unit network outputs ``scores`` and ``label``. Check ``exact_float_fits`` first. ``prefer``:
    one of ``CONV_FORMS`` for every convolution, or {layer name: form}, where that form is exact (tests, and
    comparing the forms); else (and for a layer not named) the fastest by ``conv_form``'s rule."""
    g = Graph("bnn_exact_float")
    x = g.input("images", UINT8, ["N", *model.input_shape])
    k = 1  # x: uint8 holding k times its values (pixels, or bits 0/1 or 0/255), or float 0/1 bits (k None)
    rows = False  # x in row layout (N, H, C, W) (``onnx_band_conv``), else NCHW or (N, features)
    for i, layer in enumerate(model.layers):
        wish = prefer.get(layer["name"]) if isinstance(prefer, dict) else prefer
        form = conv_form(model, layer, i + 1 == len(model.layers), wish) if layer["kind"] == "conv" else None
        if form in ("quantized", "float") and rows:
            x, rows = from_rows(g, x, layer["in_shape"]), False
        if form == "quantized":
            if k is None:
                x, k = _as(g, x, k, UINT8), 1
            x, k = _quantized_conv(g, model, layer, x, k), BITS
            continue
        if form == "banded":
            x, k = _as(g, x, k, UINT8), 1
            if not rows:
                x, rows = to_rows(g, x, layer["in_shape"]), True
            x = band_conv(g, layer, *_folded(model, layer), x)
            continue
        if form == "float":
            x, k = _as(g, x, k, FLOAT), None
            s = _conv_sums(g, model, layer, x)
            shifted = None  # d (s - T') + 1 as int32, for a single unit's score
            if layer["output"] == "threshold":
                pool = layer.get("pool")
                if pool:  # max-pooling the sums, then the step: the same bits (a max commutes with a monotone step)
                    s = g.op("MaxPool", [s], "or_pool", kernel_shape=pool["size"], strides=list(pool_stride(pool)))
                x = heaviside_of_integers(g, s)
                continue
            scores = g.op("Cast", [s], to=INT32)
        else:
            flat = model.layers[i - 1]["kind"] != "conv" if i else len(model.input_shape) == 1
            if not flat:
                x = g.op("Flatten", [x], "flatten", axis=1)
            x, k = _as(g, x, k, UINT8), 1
            order = rows_order(model.layers[i - 1]["out_shape"]) if rows else None
            acc, bias = _dense_sums(g, model, layer, x, order)
            rows = False
            if layer["output"] == "threshold":  # acc + bias >= 1
                x = g.op("Cast", [heaviside(g, acc, _int32(g, 1 - bias, "thr"))], "bits", to=UINT8)
                shifted = g.op("Add", [acc, _int32(g, bias, "bias")]) if len(model.layers) == i + 1 else None
                continue
            scores = g.op("Add", [acc, _int32(g, bias, "bias")]) if bias.any() else acc
        logits = g.op(
            "Add",
            [
                g.op("Mul", [g.op("Cast", [scores], to=DOUBLE), g.const(model.array(layer, "scale"), "scale")]),
                g.const(model.array(layer, "offset"), "offset"),
            ],
            "logits",
        )
        g.output(scores, "scores", INT32, ["N", layer["out_features"]])
        g.output(logits, "logits", DOUBLE, ["N", layer["out_features"]])
        g.output(g.op("ArgMax", [logits], "argmax", axis=1, keepdims=0, select_last_index=0), "label", INT64, ["N"])
        break
    else:  # a single unit: its score is the sum d (s - T) + 1 turned back into s; the label its bit
        last = model.layers[-1]
        d = int(model.array(last, "direction")[0])
        t = int(model.array(last, "threshold")[0])
        if shifted is None:
            shifted = g.op("Cast", [s], to=INT32)  # d (s - T') + 1, T' the clipped threshold
        reach = _max_input(last) * last["fan_in"] + 1
        t_clipped = int(np.clip(t, -reach, reach))
        score = g.op(
            "Add",
            [
                g.op(
                    "Mul",
                    [
                        g.op("Sub", [shifted, g.const(np.array(1, np.int32), "one")]),
                        g.const(np.array(d, np.int32), "dir"),
                    ],
                ),
                g.const(np.array(t_clipped, np.int32), "thr"),
            ],
        )
        g.output(score, "scores", INT32, ["N", 1])
        bit = g.op("Squeeze", [x, g.const(np.array([1], np.int64), "axis")])
        g.output(g.op("Cast", [bit], to=INT64), "label", INT64, ["N"])
    return g.model(metadata)


__all__ = ["bnn_to_onnx_float", "conv_form", "exact_float_fits", "CONV_FORMS", "FLOAT32_EXACT"]
