"""A convolution with few input channels as integer matrix products: one banded int8 matrix per pooled tap.

The float ``Conv`` of a layer like LeNet-5's first (1 -> 6 channels) wastes most of onnxruntime's
16-channel NCHWc blocks and reorders its output before the pool, and ``QLinearConv`` is slower still
on so few channels. Here the input travels in *row layout* ``(N, H, C, W)``: a ``Gather`` of the
``kh`` input rows behind each output row gives a ``(N * rows, kh * C * W)`` uint8 matrix, and one
``MatMulInteger`` with a banded int8 matrix (the kernel's taps repeated along the width, zero
padding left out of the band) gives the int32 sums ``d (s - T) + 1 - bias`` of a whole output row,
``(C_out, W_out)``, in onnxruntime's integer GEMM (VNNI/AMX). The width costs ``W / kw`` times the
multiply-adds of a direct convolution, which the integer GEMM repays where ``W <= BAND_MAX_WIDTH_RATIO * kw``.

Max pooling is the element-wise ``Max`` of one such product per position in the window (the rows
and columns it takes), before the step (a max commutes with the monotone step), and the step is
``GreaterOrEqual(acc, 1 - bias)`` on the int32 sums: uint8 bits 0/1, in row layout again for the
next banded layer; a dense layer after it takes its weights in the row layout's order (``rows_order``).
"""

from __future__ import annotations

import numpy as np

from bnn_runtime.plan import conv_geometry

from .graph import UINT8, Graph, heaviside

BAND_MAX_WIDTH_RATIO = 8  # multiply-adds over a direct convolution's: the input width over the kernel's
BAND_MAX_BYTES = 2**22  # the int8 band matrices of one layer, all pool positions together


def _geometry(layer: dict) -> dict:
    """The runtime's geometry of the convolution (bnn_runtime.plan.conv_geometry), in this module's names: pool
    window py x px, its stride sy x sx, the pooled output hp x wp, cout outputs."""
    g = conv_geometry(layer)
    names = dict(pool_h="py", pool_w="px", pool_sh="sy", pool_sw="sx", out_h="hp", out_w="wp")
    return {names.get(k, k): v for k, v in g.items()} | {"cout": layer["out_features"]}


def _span(d: dict) -> int:
    """Input rows behind one pooled output row."""
    return (d["py"] - 1) * d["sh"] + d["kh"]


def banded(layer: dict) -> bool:
    """Whether a (hidden, thresholded) convolution's input is narrow enough for its kernel to run banded."""
    d = _geometry(layer)
    size = _span(d) * d["c"] * d["w"] * d["py"] * d["px"] * d["cout"] * d["wp"]  # int8 bytes of band_conv's matrix
    return d["w"] <= BAND_MAX_WIDTH_RATIO * d["kw"] and size <= BAND_MAX_BYTES


def _band(w: np.ndarray, d: dict, b: int) -> np.ndarray:
    """(kh * C * W, C_out * W_pooled) int8: the taps of output columns ``jp * sx + b`` of one output row."""
    taps = w.reshape(d["cout"], d["c"], d["kh"], d["kw"]).transpose(2, 1, 3, 0)  # (kh, C, kw, C_out)
    band = np.zeros((d["kh"], d["c"], d["w"], d["cout"], d["wp"]), np.int8)
    for jp in range(d["wp"]):
        j = jp * d["sx"] + b
        for v in range(d["kw"]):
            col = j * d["sw"] + v - d["pw"]
            if 0 <= col < d["w"]:  # zero padding: no tap
                band[:, :, col, :, jp] = taps[:, :, v, :]
    return band.reshape(d["kh"] * d["c"] * d["w"], d["cout"] * d["wp"])


def band_conv(g: Graph, layer: dict, w: np.ndarray, bias: np.ndarray, x: str) -> str:
    """The layer's bits (uint8 0/1, row layout (N, H_pooled, C_out * W_pooled)) of uint8 x in row layout
    (N, H, C * W); ``w`` (C_out, fan_in) and ``bias`` fold the threshold and direction: bit = ``w . x + bias >= 1``.
    One product for all the pool's positions: the rows behind a pooled output row, times the bands side by side."""
    d = _geometry(layer)
    if d["ph"]:  # zero rows above and below (the width's padding is left out of the band)
        x = g.op("Pad", [x, g.const(np.array([0, d["ph"], 0, 0, d["ph"], 0], np.int64), "pads")])
    span = _span(d)
    first = np.arange(d["hp"]) * d["sy"] * d["sh"]
    rows = g.op("Gather", [x, g.const((first[:, None] + np.arange(span)).astype(np.int64), "rows")], axis=1)
    k = span * d["c"] * d["w"]
    rows = g.op("Reshape", [rows, g.const(np.array([-1, d["hp"], k], np.int64), "shape")], "band_rows")
    cols = d["cout"] * d["wp"]
    bands = np.zeros((span, d["c"] * d["w"], d["py"], d["px"], cols), np.int8)
    for a in range(d["py"]):
        for b in range(d["px"]):
            bands[a * d["sh"] : a * d["sh"] + d["kh"], :, a, b] = _band(w, d, b).reshape(d["kh"], -1, cols)
    acc = g.op("MatMulInteger", [rows, g.const(bands.reshape(k, -1), f"{layer['name']}_band")], layer["name"])
    if d["py"] * d["px"] > 1:
        acc = g.op("Max", g.split(acc, d["py"] * d["px"], axis=2, hint="pool_part"), "pool")
    thr = g.const(np.repeat(1 - bias, d["wp"]).astype(np.int32), "thr")  # per (C_out, W_pooled) column
    return g.op("Cast", [heaviside(g, acc, thr)], "bits", to=UINT8)


def rows_order(shape: tuple[int, int, int]) -> np.ndarray:
    """For a (C, H, W) tensor in row layout: its NCHW flat index at each flat position of the row layout."""
    c, h, w = shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 0, 2).reshape(-1)


def to_rows(g: Graph, x: str, shape: tuple[int, int, int]) -> str:
    """An (N, C, H, W) tensor in row layout (N, H, C * W)."""
    c, h, w = shape
    if c > 1:  # (one channel: the same order)
        x = g.op("Transpose", [x], "rows", perm=[0, 2, 1, 3])
    return g.op("Reshape", [x, g.const(np.array([-1, h, c * w], np.int64), "shape")])


def from_rows(g: Graph, x: str, shape: tuple[int, int, int]) -> str:
    """A row layout (N, H, C * W) tensor as (N, C, H, W)."""
    c, h, w = shape
    if c == 1:  # the same order
        return g.op("Reshape", [x, g.const(np.array([-1, 1, h, w], np.int64), "shape")])
    x = g.op("Reshape", [x, g.const(np.array([-1, h, c, w], np.int64), "shape")])
    return g.op("Transpose", [x], "nchw", perm=[0, 2, 1, 3])


__all__ = ["banded", "band_conv", "from_rows", "to_rows", "rows_order", "BAND_MAX_WIDTH_RATIO", "BAND_MAX_BYTES"]
