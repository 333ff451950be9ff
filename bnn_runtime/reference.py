"""A plain NumPy executor of the .bnn format: slow, unpacked, obviously correct. The oracle for tests.

It unpacks every weight to +-1 integers and every activation to 0/1 or +-1 integers and
computes the network with int64 sums, exactly as docs/FORMAT.md describes it:

* conv: zero padding, stride (default 1), cross-correlation, fan-in order (channel, row, column)
* threshold: bit = s >= T if direction is +1 else s <= T; then OR-pooling over windows at a
  stride (default: the window), no padding
* dense: input flattened in (C, H, W) order
* scores: the last layer's integer sums; the logits are scale * s + offset and the prediction
  their argmax (first maximum), or the bit of a final single-unit threshold layer;
  probabilities are the softmax of the logits.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .bits import unpack_bits, unpack_signs
from .format import BnnFile
from .inputs import prepare_input

PATCH_ELEMENTS = 1 << 22  # im2col elements per step of _conv_sums (32 MiB as int64)


def _values(bits: np.ndarray, encoding: str) -> np.ndarray:
    return bits.astype(np.int64) * 2 - 1 if encoding == "pm1" else bits.astype(np.int64)


def _conv_sums(a: np.ndarray, w: np.ndarray, padding: tuple[int, int], stride: tuple[int, int] = (1, 1)) -> np.ndarray:
    """a: (N, C, H, W) int64, w: (O, C, kh, kw) int64 -> (N, O, OH, OW) int64.

    The patches of a few images at a time (im2col, fan-in order (c, i, j)) times the weight rows, in the
    float type that holds every partial sum exactly (_exact_dtype): the integer sums of the definition,
    in BLAS time."""
    ph, pw = padding
    o, c, kh, kw = w.shape
    dtype = _exact_dtype(a, w, c * kh * kw)
    a = np.pad(a.astype(dtype, copy=False), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = sliding_window_view(a, (kh, kw), axis=(2, 3))[:, :, :: stride[0], :: stride[1]]  # (N, C, OH, OW, kh, kw)
    n, _, oh, ow = windows.shape[:4]
    wt = w.reshape(o, -1).T.astype(dtype)
    step = max(1, PATCH_ELEMENTS // max(1, oh * ow * c * kh * kw))
    out = np.empty((n, o, oh, ow), np.int64)
    for i in range(0, n, step):
        patches = windows[i : i + step].transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)
        out[i : i + step] = (patches @ wt).astype(np.int64).reshape(-1, oh, ow, o).transpose(0, 3, 1, 2)
    return out


def _or_pool(bits: np.ndarray, size: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """OR (max) of 0/1 bits over size windows every stride pixels; a remainder that fits no window is dropped.

    The OR of the window's shifted, strided views: out[y, x] = OR over (dy, dx) of bits[y * sh + dy, x * sw + dx]."""
    (qh, qw), (sh, sw) = size, stride
    oh, ow = (bits.shape[2] - qh) // sh + 1, (bits.shape[3] - qw) // sw + 1
    out = np.zeros((*bits.shape[:2], oh, ow), bits.dtype)
    for dy in range(qh):
        for dx in range(qw):
            np.maximum(out, bits[:, :, dy : dy + (oh - 1) * sh + 1 : sh, dx : dx + (ow - 1) * sw + 1 : sw], out=out)
    return out


def conv_stride(layer: dict) -> tuple[int, int]:
    """A conv layer's stride: format version 2's ``stride``, (1, 1) when absent (every version-1 file)."""
    return tuple(layer.get("stride", (1, 1)))


def pool_stride(pool: dict) -> tuple[int, int]:
    """A pool's stride: ``stride`` (format version 2), else its window ``size``."""
    return tuple(pool.get("stride", pool["size"]))


def layer_sums(model: BnnFile, layer: dict, a: np.ndarray) -> np.ndarray:
    """Integer pre-activation sums of one layer for input values ``a`` (int64)."""
    w = unpack_signs(model.array(layer, "weight"), layer["fan_in"]).astype(np.int64)
    if layer["kind"] == "conv":
        c = layer["in_shape"][0]
        kh, kw = layer["kernel"]
        return _conv_sums(a, w.reshape(len(w), c, kh, kw), tuple(layer["padding"]), conv_stride(layer))
    return _exact_matmul(a.reshape(len(a), -1), w.T)


def _exact_dtype(a: np.ndarray, b: np.ndarray, fan_in: int):
    """The float type in which every partial sum of a dot product of ``fan_in`` terms a_i b_i is an integer it
    holds exactly (|sum| <= bound < 2**24 for float32, 2**53 for float64), so that BLAS, adding in any order,
    gives the exact integer sums; int64 (no BLAS) when neither does."""
    bound = float(np.abs(a).max(initial=0)) * float(np.abs(b).max(initial=0)) * fan_in
    return np.float32 if bound < 2.0**24 else np.float64 if bound < 2.0**53 else np.int64


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for integer matrices, exactly, in the float type of _exact_dtype (NumPy's integer matmul has no
    BLAS: minutes for a 4096-wide MLP or a 10,000-image export)."""
    dtype = _exact_dtype(a, b, a.shape[1])
    return (a.astype(dtype) @ b.astype(dtype)).astype(np.int64)


def threshold_bits(model: BnnFile, layer: dict, s: np.ndarray) -> np.ndarray:
    t = model.array(layer, "threshold").astype(np.int64)
    d = model.array(layer, "direction")
    shape = (1, -1) + (1,) * (s.ndim - 2)
    t, d = t.reshape(shape), d.reshape(shape)
    return np.where(d > 0, s >= t, s <= t).astype(np.uint8)


def reference_forward(model: BnnFile, x) -> tuple[np.ndarray, list[np.ndarray]]:
    """(integer scores of the last layer, the 0/1 bit maps every hidden layer produced)."""
    a = prepare_input(x, model.input_shape).astype(np.int64)
    hidden = []
    for layer in model.layers:
        s = layer_sums(model, layer, a)
        if layer["output"] == "scores":
            return s, hidden
        bits = threshold_bits(model, layer, s)
        if layer.get("pool"):
            bits = _or_pool(bits, tuple(layer["pool"]["size"]), pool_stride(layer["pool"]))
        hidden.append(bits)
        if layer is model.layers[-1]:
            return s, hidden
        a = _values(bits, layer["out_encoding"])
    raise AssertionError("unreachable: validated models end in scores or a threshold")


def reference_scores(model: BnnFile, x, chunk: int = 256) -> np.ndarray:
    """Integer scores, shape (N, classes) (or (N, 1) for a single-unit model), int32."""
    x = prepare_input(x, model.input_shape)
    parts = [reference_forward(model, x[i : i + chunk])[0] for i in range(0, len(x), chunk)]
    return np.concatenate(parts).astype(np.int32)


def logits_from_scores(model: BnnFile, scores: np.ndarray) -> np.ndarray:
    """float64 logits (N, classes): the per-class affine ``scale * s + offset`` of the integer scores.

    A single-unit network (its last layer thresholds) has two classes and no affine in the file:
    its logits are ``(0, direction * (s - T) + 1/2)``, the margin of the sum over the threshold,
    so that class 1 wins exactly when the unit's bit is 1. Their argmax is the prediction.
    """
    last = model.layers[-1]
    s = np.asarray(scores).astype(np.float64)
    if last["output"] == "scores":
        return s * model.array(last, "scale") + model.array(last, "offset")
    d = model.array(last, "direction").astype(np.float64)
    t = model.array(last, "threshold").astype(np.float64)
    margin = d * (s - t) + 0.5
    return np.concatenate([np.zeros_like(margin), margin], axis=1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities (rows sum to 1) of float logits, computed without overflow."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def predict_from_scores(model: BnnFile, scores: np.ndarray) -> np.ndarray:
    """Class indices from integer scores: argmax of the logits (first maximum), i.e. of the per-class
    affine, or the final unit's bit."""
    return logits_from_scores(model, scores).argmax(axis=1).astype(np.int64)


def reference_predict(model: BnnFile, x) -> np.ndarray:
    return predict_from_scores(model, reference_scores(model, x))


def reference_logits(model: BnnFile, x) -> np.ndarray:
    return logits_from_scores(model, reference_scores(model, x))


def reference_probabilities(model: BnnFile, x) -> np.ndarray:
    return softmax(reference_logits(model, x))


def unpacked_weights(model: BnnFile, layer: dict) -> np.ndarray:
    """+-1 int8 weights of a layer, shape (out, fan_in) -- for inspection and tests."""
    return unpack_signs(model.array(layer, "weight"), layer["fan_in"])


__all__ = [
    "reference_forward",
    "reference_scores",
    "reference_predict",
    "reference_logits",
    "reference_probabilities",
    "predict_from_scores",
    "logits_from_scores",
    "softmax",
    "unpacked_weights",
    "unpack_bits",
]
