"""The deployed .bnn network as a standard-operator ONNX graph: ``bnn_to_onnx`` picks the form.

``bnn_to_onnx`` writes the exact graph of ``onnx_exact_float`` (convolutions as QLinearConv, banded
MatMulInteger or float Conv, integer dense layers: onnxruntime's fast kernels) when every sum fits
float32 exactly, else the integer graph built here (``bnn_to_onnx_integer``).
Both are built from the .bnn model itself, one handler per layer kind, so onnxruntime computes
exactly the numbers the runtime does. The integer graph:

* every layer takes uint8 (pixels, or bits as 0/1): ``ConvInteger`` / ``MatMulInteger`` with
  int8 +-1 weights give the int32 sums; for ``pm1`` inputs ``s = 2 * s01 - sum(w)``;
* threshold: ``bit = d*s >= d*T`` (``heaviside``), cast to uint8; OR-pooling is ``MaxPool``;
* outputs: ``scores`` (int32, the last layer's sums) and ``label`` (int64, argmax of the
  per-class affine in float64, or the bit of a single-unit model).
"""

from __future__ import annotations

import numpy as np
import onnx

from bnn_runtime.format import BnnFile
from bnn_runtime.reference import conv_stride, pool_stride, unpacked_weights

from .graph import DOUBLE, INT32, INT64, UINT8, Graph, heaviside
from .onnx_exact_float import bnn_to_onnx_float, exact_float_fits


def _conv(g: Graph, model: BnnFile, layer: dict, x: str) -> str:
    c = layer["in_shape"][0]
    kh, kw = layer["kernel"]
    ph, pw = layer["padding"]
    w = unpacked_weights(model, layer).reshape(-1, c, kh, kw)
    return g.op(
        "ConvInteger",
        [x, g.const(w, f"{layer['name']}_w")],
        layer["name"],
        pads=[ph, pw, ph, pw],
        strides=list(conv_stride(layer)),
    )


def _dense(g: Graph, model: BnnFile, layer: dict, x: str) -> str:
    flat = g.op("Flatten", [x], "flatten", axis=1)
    w = np.ascontiguousarray(unpacked_weights(model, layer).T)
    return g.op("MatMulInteger", [flat, g.const(w, f"{layer['name']}_w")], layer["name"])


LAYER_HANDLERS = {"conv": _conv, "dense": _dense}


def _channel_shape(layer: dict) -> tuple[int, ...]:
    return (1, -1, 1, 1) if layer["kind"] == "conv" else (1, -1)


def _threshold(g: Graph, model: BnnFile, layer: dict, s: str) -> str:
    shape = _channel_shape(layer)
    d = model.array(layer, "direction").astype(np.int32)
    t = model.array(layer, "threshold").astype(np.int64) * d  # |T| <= 255*fan_in + 1: fits int32
    signed = g.op("Mul", [s, g.const(d.reshape(shape), "dir")])
    bits = g.op("Cast", [heaviside(g, signed, g.const(t.astype(np.int32).reshape(shape), "thr"))], to=UINT8)
    pool = layer.get("pool")
    if pool:
        bits = g.op("MaxPool", [bits], "or_pool", kernel_shape=pool["size"], strides=list(pool_stride(pool)))
    return bits


def bnn_to_onnx(model: BnnFile, metadata: dict | None = None) -> onnx.ModelProto:
    """The ONNX model to deploy: the exact float32 graph where it is exact, else the integer graph."""
    if exact_float_fits(model):
        return bnn_to_onnx_float(model, {**(metadata or {}), "graph": "exact float32"})
    return bnn_to_onnx_integer(model, {**(metadata or {}), "graph": "integer"})


def bnn_to_onnx_integer(model: BnnFile, metadata: dict | None = None) -> onnx.ModelProto:
    """An ONNX model computing ``model``'s integer scores and labels; checked with onnx.checker."""
    g = Graph("bnn")
    x = g.input("images", UINT8, ["N", *model.input_shape])
    for layer in model.layers:
        s = LAYER_HANDLERS[layer["kind"]](g, model, layer, x)
        if layer["in_encoding"] == "pm1":  # sum over +-1 inputs from the 0/1 form
            wsum = unpacked_weights(model, layer).sum(axis=1, dtype=np.int32).reshape(_channel_shape(layer))
            s = g.op("Sub", [g.op("Mul", [s, g.const(np.array(2, np.int32), "two")]), g.const(wsum, "wsum")])
        if layer["output"] == "threshold":
            x = _threshold(g, model, layer, s)
            continue
        logits = g.op(
            "Add",
            [
                g.op("Mul", [g.op("Cast", [s], to=DOUBLE), g.const(model.array(layer, "scale"), "scale")]),
                g.const(model.array(layer, "offset"), "offset"),
            ],
            "logits",
        )
        label = g.op("ArgMax", [logits], "argmax", axis=1, keepdims=0, select_last_index=0)
        g.output(s, "scores", INT32, ["N", layer["out_features"]])
        g.output(label, "label", INT64, ["N"])
        break
    else:  # a single-unit network ends in its threshold: the label is its bit, the score its sum
        g.output(s, "scores", INT32, ["N", 1])
        g.output(
            g.op("Cast", [g.op("Squeeze", [x, g.const(np.array([1], np.int64), "axis")])], to=INT64),
            "label",
            INT64,
            ["N"],
        )
    return g.model(metadata)
