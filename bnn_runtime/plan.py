"""Load-time re-packing: a validated .bnn file -> the flat arrays the kernels run on (NumPy only, done once).

The file keeps the canonical bit layout of docs/FORMAT.md; the runtime re-packs it here:

* activations between layers are bit strings per image; a convolution writes them
  channels-last, bit ``(y * W + x) * C + c``, so that a kernel row of a patch (kw pixels x C
  channels) is one contiguous run of bits. The weights that read them are permuted to match:
  a conv's fan-in order becomes (i, j, c), a dense layer after a conv reads (y, x, c);
* every weight row is padded with zero words to a multiple of 4 (whole vectors for the
  popcount loop; zero bits add nothing to ``popcount(a & w)``) and the outputs to a multiple
  of 4 (whole register blocks; the padded outputs are never written);
* thresholds become ``dir * T`` so that a bit is ``dir * s >= dir * T``; ``pm1`` layers get the
  constants of ``s = 4 p - 2 pa - 2 pw + n`` (see kernels.py);
* a first convolution on uint8 input becomes, per output, the list of its taps of the rarer
  sign (flat offsets into the zero-padded image) and that sign: ``s = sigma (2 A - B)``
  (kernels.conv_u8); its sums are int16 when ``255 * fan_in`` fits, else int32.

All layers' numbers go into a few pooled arrays with one row of integers per layer (``params``,
columns in ``COLUMNS``), so that one compiled function serves every model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bits import n_words, pack_bits, unpack_signs
from .errors import BnnFormatError
from .format import BnnFile

KIND_CONV_U8, KIND_DENSE_U8, KIND_CONV_BITS, KIND_DENSE_BITS = 0, 1, 2, 3
# one row of ``params`` per layer, in this order (kernels.run_tile reads them by position)
COLUMNS = ("kind", "last", "n_out", "n_out_pad", "nw", "w_off", "c_off", "alpha", "beta",
           "c", "h", "w", "kh", "kw", "ph", "pw", "oh", "ow", "sh", "sw", "acc16", "rows_per_image")
BLOCK = 4  # outputs per register block
WORD_ALIGN = 4  # weight rows are padded to a multiple of this many words
INT16_MAX = 2**15 - 1


@dataclass
class Plan:
    params: np.ndarray  # (layers, len(COLUMNS)) int64
    wpool: np.ndarray  # uint64: every binary weight matrix, (n_out_pad, nw) each
    cpool: np.ndarray  # int64: (gamma, dir * T, dir) of every layer, (3, n_out_pad) each
    taps: np.ndarray  # int64 (O, 1 + L): count, then flat offsets of a first conv layer's taps (else (1, 1))
    scale: np.ndarray  # float64 per class (ones for a single-unit network)
    offset: np.ndarray
    final_threshold: np.ndarray  # (3, 1) consts of a final single-unit threshold layer, else (3, 0)
    sizes: np.ndarray  # scratch: [bit words per image, rows per image, row words, int16 conv buffer, int32 conv buffer]
    n_scores: int
    word_ops: list[int]  # AND+popcount word operations per image, per layer (0 for the integer conv)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _pack_rows(signs: np.ndarray, n_out_pad: int, nw: int) -> np.ndarray:
    """+-1 (O, K) -> (n_out_pad, nw) uint64 with zero padding rows and words."""
    out = np.zeros((n_out_pad, nw), np.uint64)
    packed = pack_bits(signs > 0)
    out[: len(packed), : packed.shape[1]] = packed
    return out


def _consts(layer: dict, bnn: BnnFile, signs: np.ndarray, n_out_pad: int) -> np.ndarray:
    c = np.zeros((3, n_out_pad), np.int64)
    o = len(signs)
    if layer["in_encoding"] == "pm1":  # s = 4 p - 2 pa - 2 pw + n
        c[0, :o] = layer["fan_in"] - 2 * (signs > 0).sum(axis=1)
    if layer["output"] == "threshold":
        d = bnn.array(layer, "direction").astype(np.int64)
        c[1, :o] = d * bnn.array(layer, "threshold").astype(np.int64)
        c[2, :o] = d
    return c


def _conv_taps(signs: np.ndarray, hp: int, pitch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output: the taps of its rarer sign as flat offsets (c * hp + i) * pitch + j, and that sign."""
    o = len(signs)
    flat = signs.reshape(o, -1)
    c, kh, kw = signs.shape[1:]
    cc, ii, jj = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
    offsets = ((cc * hp + ii) * pitch + jj).ravel()
    sigma = np.where((flat > 0).sum(axis=1) <= (flat < 0).sum(axis=1), 1, -1)
    chosen = [offsets[flat[k] == sigma[k]] for k in range(o)]
    taps = np.zeros((o, 1 + max(len(t) for t in chosen)), np.int64)
    for k, t in enumerate(chosen):
        taps[k, 0] = len(t)
        taps[k, 1 : 1 + len(t)] = t
    return taps, sigma


def build_plan(bnn: BnnFile) -> Plan:
    layers = bnn.layers
    if layers[-1]["kind"] != "dense":
        raise BnnFormatError(f"layer {layers[-1]['name']!r}: the runtime needs a dense last layer, not a convolution")
    rows, wblobs, cblobs, w_off, c_off = [], [], [], 0, 0
    taps = np.zeros((1, 1), np.int64)
    word_ops, sizes = [], np.zeros(5, np.int64)
    out_words = [n_words(int(np.prod(layer["out_shape"]))) for layer in layers]
    prev_shape = tuple(bnn.input_shape)
    for idx, layer in enumerate(layers):
        p = dict.fromkeys(COLUMNS, 0)
        o, fan_in = layer["out_features"], layer["fan_in"]
        signs = unpack_signs(bnn.array(layer, "weight"), fan_in)
        last = idx == len(layers) - 1
        p.update(last=int(last), n_out=o, n_out_pad=_round_up(o, BLOCK), sh=1, sw=1, rows_per_image=1)
        p["alpha"], p["beta"] = (4, -2) if layer["in_encoding"] == "pm1" else (2, -1)
        conv = layer["kind"] == "conv"
        if conv:
            c, h, w = layer["in_shape"]
            kh, kw = layer["kernel"]
            ph, pw = layer["padding"]
            oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
            sh, sw = layer["pool"]["size"] if layer.get("pool") else (1, 1)
            p.update(c=c, h=h, w=w, kh=kh, kw=kw, ph=ph, pw=pw, oh=oh, ow=ow, sh=sh, sw=sw)
        if layer["in_encoding"] == "uint8" and conv:
            p["kind"] = KIND_CONV_U8
            taps, sigma = _conv_taps(signs.reshape(o, c, kh, kw), h + 2 * ph, w + 2 * pw)
            p["acc16"] = int(255 * fan_in <= INT16_MAX)
            hp, pitch = h + 2 * ph, w + 2 * pw
            sizes[4 - p["acc16"]] = c * hp * pitch + kw + (o + 1) * oh * pitch + hp * pitch + o * ow  # kernels.conv_u8
            word_ops.append(0)
        else:
            if conv:  # canonical (c, i, j) -> (i, j, c), matching the channels-last bit strings
                signs = signs.reshape(o, c, kh, kw).transpose(0, 2, 3, 1).reshape(o, -1)
                p["kind"] = KIND_CONV_BITS
                p["rows_per_image"] = (oh // sh) * (ow // sw) * sh * sw
            elif len(prev_shape) == 3 and idx > 0:  # a dense layer after a conv reads (y, x, c)
                pc, ph_, pw_ = prev_shape
                signs = signs.reshape(o, pc, ph_, pw_).transpose(0, 2, 3, 1).reshape(o, -1)
                p["kind"] = KIND_DENSE_BITS
            else:
                p["kind"] = KIND_DENSE_U8 if layer["in_encoding"] == "uint8" else KIND_DENSE_BITS
            if p["kind"] == KIND_DENSE_U8:
                p["rows_per_image"] = 8  # bit planes
            p["nw"] = _round_up(n_words(fan_in), WORD_ALIGN)
            wblobs.append(_pack_rows(signs, p["n_out_pad"], p["nw"]).ravel())
            p["w_off"], w_off = w_off, w_off + wblobs[-1].size
            if p["kind"] != KIND_DENSE_BITS:
                sizes[1] = max(sizes[1], p["rows_per_image"])
            sizes[2] = max(sizes[2], p["nw"])
            word_ops.append(p["rows_per_image"] * o * n_words(fan_in))  # rows: bit planes, patches or 1
        if idx > 0:  # the input bit string (with one spare word for im2col reads) and the words read
            sizes[0] = max(sizes[0], out_words[idx - 1] + 1, p["nw"])
        consts = _consts(layer, bnn, signs, p["n_out_pad"])
        if p["kind"] == KIND_CONV_U8:
            consts[0, :o] = sigma
        cblobs.append(consts.ravel())
        p["c_off"], c_off = c_off, c_off + cblobs[-1].size
        rows.append([p[k] for k in COLUMNS])
        prev_shape = tuple(layer["out_shape"])
    sizes[0] = max(sizes[0], 1)
    sizes[1], sizes[2] = max(sizes[1], 1), max(sizes[2], 1)
    sizes[3], sizes[4] = max(sizes[3], 1), max(sizes[4], 1)

    last = layers[-1]
    n_scores = last["out_features"]
    if last["output"] == "scores":
        scale, offset = bnn.array(last, "scale").astype(np.float64), bnn.array(last, "offset").astype(np.float64)
        final = np.zeros((3, 0), np.int64)
    else:
        scale, offset = np.ones(1), np.zeros(1)
        final = np.ascontiguousarray(cblobs[-1].reshape(3, -1)[:, :1])
    return Plan(
        params=np.array(rows, dtype=np.int64),
        wpool=np.concatenate(wblobs) if wblobs else np.zeros(1, np.uint64),
        cpool=np.concatenate(cblobs),
        taps=taps,
        scale=np.ascontiguousarray(scale), offset=np.ascontiguousarray(offset), final_threshold=final,
        sizes=sizes, n_scores=n_scores, word_ops=word_ops,
    )
