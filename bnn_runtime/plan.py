"""Load-time re-packing: a validated .bnn file -> the flat arrays the kernels run on (NumPy only, done once).

The file keeps the canonical bit layout of docs/FORMAT.md; the runtime re-packs it here:

* activations between layers are bit strings per image; a convolution writes them
  channels-last, bit ``(y * W + x) * C + c``, so that a kernel row of a patch (kw pixels x C
  channels) is one contiguous run of bits. The weights that read them are permuted to match:
  a conv's fan-in order becomes (i, j, c), a dense layer after a conv reads (y, x, c);
* every weight row is padded with zero words to a multiple of 4 (whole vectors for the
  popcount loop; zero bits add nothing to ``popcount(a & w)``) and the outputs to a multiple
  of 4 (whole register blocks; the padded outputs are never written); a dense layer pads its
  outputs to a multiple of 8 and stores its weights by columns of 8 outputs,
  ``wt[(b * nw + k) * 8 + j] = w[8 b + j, k]``, so that one 512-bit load holds word k of 8
  outputs (kernels.dense_bits, kernels.dense_u8);
* thresholds become ``dir * T`` so that a bit is ``dir * s >= dir * T``; ``pm1`` layers get the
  constants of ``s = 4 p - 2 pa - 2 pw + n`` (see kernels.py);
* a first dense layer on uint8 input whose fan-in is a multiple of 4 keeps one signed byte per
  weight, by blocks of 16 outputs, on a CPU with AVX512-VNNI (kernels._vnni_cols; off with
  ``BNN_RUNTIME_VNNI=off``); otherwise it runs on the 8 bit planes of the input (kernels.dense_u8);
* a first convolution on uint8 input becomes, per output, the list of its taps of the rarer
  sign (flat offsets into the zero-padded image) and that sign: ``s = sigma (2 A - B)``
  (kernels.conv_u8); its sums are int16 when ``255 * fan_in`` fits, else int32;
* a convolution of bits with at most 8 input channels becomes a table (kernels.conv_lut): per
  group of g pixels of one kernel row (g * C <= 8 bits), every output's share of the sum for
  every value of those bits, dir-signed, int16; it is stored in ``wpool`` (as int16 viewed in
  uint64 words: the table, then the thresholds), its tap offsets in ``cpool``. Layers whose
  table would exceed ``LUT_MAX_BYTES`` or int16 keep the im2col + popcount product.

All layers' numbers go into a few pooled arrays with one row of integers per layer (``params``,
columns in ``COLUMNS``), so that one compiled function serves every model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels
from .bits import n_words, pack_bits, unpack_signs
from .errors import BnnFormatError
from .format import BnnFile

KIND_CONV_U8, KIND_DENSE_U8, KIND_CONV_BITS, KIND_DENSE_BITS, KIND_CONV_LUT, KIND_DENSE_VNNI = 0, 1, 2, 3, 4, 5
# one row of ``params`` per layer, in this order (kernels.run_tile reads them by position)
COLUMNS = ("kind", "last", "n_out", "n_out_pad", "nw", "w_off", "c_off", "alpha", "beta",
           "c", "h", "w", "kh", "kw", "ph", "pw", "oh", "ow", "sh", "sw", "acc16", "rows_per_image",
           "lut_g", "lut_taps", "lut_size")
LUT_MAX_CHANNELS = 8  # a table has 2 ** (g * C) rows, g * C <= 8
LUT_MAX_BYTES = 256 * 1024
LUT_LANES = 16  # outputs per table block (one 16 x int16 vector)
BLOCK = 4  # outputs per register block (convolutions)
COLUMN = 8  # outputs per vector of a dense layer (its weights are stored by columns of 8 outputs)
VNNI_COLUMN = 16  # outputs per vector of the VNNI first layer (16 int32 lanes)
WORD_ALIGN = 4  # weight rows are padded to a multiple of this many words
INT16_MAX = 2**15 - 1


@dataclass
class Plan:
    params: np.ndarray  # (layers, len(COLUMNS)) int64
    wpool: np.ndarray  # uint64: every binary weight matrix, (n_out_pad, nw) each (dense: by columns of 8 outputs;
    #                    a VNNI first layer: bytes by blocks of 16 outputs; a conv table: int16)
    cpool: np.ndarray  # int64: (gamma, dir * T, dir) of every layer, (3, n_out_pad) each
    taps: np.ndarray  # int64 (O, 1 + L): count, then flat offsets of a first conv layer's taps (else (1, 1))
    scale: np.ndarray  # float64 per class (ones for a single-unit network)
    offset: np.ndarray
    final_threshold: np.ndarray  # (3, 1) consts of a final single-unit threshold layer, else (3, 0)
    sizes: np.ndarray  # scratch: [bit words per image, rows per image, row words, int16 conv buffer, int32 conv buffer]
    n_scores: int
    word_ops: list[int]  # AND+popcount word operations per image, per layer (0 for the integer conv)

    @property
    def kernel_args(self) -> tuple:
        """The arrays kernels.forward_serial / forward_parallel take after the batch, tile and sizes."""
        return self.params, self.wpool, self.cpool, self.taps, self.scale, self.offset, self.final_threshold


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


def lut_layout(c: int, kw: int) -> tuple[int, int]:
    """(g, groups per kernel row): the fewest groups of at most 8 // C pixels, as even as possible."""
    gmax = max(1, LUT_MAX_CHANNELS // c)
    ng = -(-kw // gmax)
    return -(-kw // ng), ng


def lut_table(signs: np.ndarray, alpha: int, beta: int, consts: np.ndarray, pitch: int):
    """The table of a convolution of bits (kernels.conv_lut), or None when it does not fit.

    signs: +-1 (O, C, kh, kw); consts: (gamma, dir * T, dir) per output. Returns (table int16
    (taps * 2^(gC) * O16), thr int16 (O16), toff int64, tbase int64): table[t, v, o] =
    dir_o (alpha popcount(v & w_o,t) + beta popcount(v & valid_t)), where bit d * C + ch of v is
    channel ch of pixel (i, g * jg + d) of tap group t = (i, jg) (valid_t: the pixels inside the
    kernel), and thr_o = dir_o T_o - dir_o gamma_o, clipped to the range of the sums.
    """
    o, c, kh, kw = signs.shape
    if c > LUT_MAX_CHANNELS:
        return None
    g, ng = lut_layout(c, kw)
    ntaps, e, o16 = kh * ng, 1 << (g * c), _round_up(o, LUT_LANES)
    if ntaps * e * o16 * 2 > LUT_MAX_BYTES:
        return None
    v = np.arange(e, dtype=np.uint64)
    d = consts[2, :o]
    table = np.zeros((ntaps, e, o16), np.int64)
    toff, tbase = np.zeros(ntaps, np.int64), np.arange(ntaps, dtype=np.int64) * e * o16
    for i in range(kh):
        for jg in range(ng):
            t = i * ng + jg
            toff[t] = i * pitch + jg * g
            wmask, vmask = np.zeros(o, np.uint64), np.uint64(0)
            for dd in range(g):
                j = jg * g + dd
                if j >= kw:
                    continue
                for ch in range(c):
                    b = np.uint64(1) << np.uint64(dd * c + ch)
                    vmask |= b
                    wmask[signs[:, ch, i, j] > 0] |= b
            pa = np.bitwise_count(v & vmask).astype(np.int64)
            p = np.bitwise_count(v[:, None] & wmask[None, :]).astype(np.int64)
            table[t, :, :o] = d * (alpha * p + beta * pa[:, None])
    bound = int(np.abs(table).max(axis=1).sum(axis=0).max()) if o else 0
    if bound + 1 > INT16_MAX:
        return None
    thr = np.zeros(o16, np.int64)
    thr[:o] = np.clip(consts[1, :o] - d * consts[0, :o], -bound, bound + 1)
    return table.ravel().astype(np.int16), thr.astype(np.int16), toff, tbase


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
            sizes[4 - p["acc16"]] = c * hp * pitch + kw + 3 * oh * pitch + hp * pitch  # kernels.conv_u8
            word_ops.append(0)
        else:
            lut = None
            if conv:  # canonical (c, i, j) -> (i, j, c), matching the channels-last bit strings
                g, _ = lut_layout(c, kw)
                lut = lut_table(signs.reshape(o, c, kh, kw), p["alpha"], p["beta"],
                                _consts(layer, bnn, signs, p["n_out_pad"]), w + 2 * pw + g - 1)
                signs = signs.reshape(o, c, kh, kw).transpose(0, 2, 3, 1).reshape(o, -1)
                p["kind"] = KIND_CONV_BITS
                p["rows_per_image"] = (oh // sh) * (ow // sw) * sh * sw
            elif len(prev_shape) == 3 and idx > 0:  # a dense layer after a conv reads (y, x, c)
                pc, ph_, pw_ = prev_shape
                signs = signs.reshape(o, pc, ph_, pw_).transpose(0, 2, 3, 1).reshape(o, -1)
                p["kind"] = KIND_DENSE_BITS
            elif layer["in_encoding"] == "uint8" and kernels.USE_VNNI and fan_in % 4 == 0:
                p["kind"] = KIND_DENSE_VNNI
            else:
                p["kind"] = KIND_DENSE_U8 if layer["in_encoding"] == "uint8" else KIND_DENSE_BITS
            if p["kind"] == KIND_DENSE_VNNI:  # bytes by blocks of 16 outputs (kernels._vnni_cols)
                p["n_out_pad"] = _round_up(o, VNNI_COLUMN)
                p["nw"] = fan_in // 4
                w = np.zeros((p["n_out_pad"], fan_in), np.int8)
                w[:o] = signs
                w = w.reshape(-1, VNNI_COLUMN, fan_in // 4, 4).transpose(0, 2, 1, 3)
                wblobs.append(np.ascontiguousarray(w).reshape(-1).view(np.uint64))
                word_ops.append(0)
            elif lut is not None:  # a table instead of im2col rows and weight words
                table, thr, toff, tbase = lut
                blob = np.concatenate([table, thr])
                wblobs.append(np.concatenate([blob, np.zeros(-len(blob) % 4, np.int16)]).view(np.uint64))
                p.update(kind=KIND_CONV_LUT, lut_g=g, lut_taps=len(toff), lut_size=len(table), rows_per_image=1)
                sizes[3] = max(sizes[3], LUT_LANES)  # the window maxima
                sizes[4] = max(sizes[4], (h + 2 * ph) * (w + 2 * pw + g - 1))  # the table-row grid
                word_ops.append(0)
            else:
                if p["kind"] == KIND_DENSE_U8:
                    p["rows_per_image"] = 8  # bit planes
                p["nw"] = _round_up(n_words(fan_in), WORD_ALIGN)
                if p["kind"] == KIND_CONV_BITS:
                    wblobs.append(_pack_rows(signs, p["n_out_pad"], p["nw"]).ravel())
                else:  # dense: by columns of 8 outputs, wt[(b * nw + k) * 8 + j] = w[8 b + j, k] (kernels.dense_bits)
                    p["n_out_pad"] = _round_up(o, COLUMN)
                    w = _pack_rows(signs, p["n_out_pad"], p["nw"])
                    wblobs.append(w.reshape(-1, COLUMN, p["nw"]).transpose(0, 2, 1).ravel())
                if p["kind"] != KIND_DENSE_BITS:
                    sizes[1] = max(sizes[1], p["rows_per_image"])
                sizes[2] = max(sizes[2], p["nw"])
                word_ops.append(p["rows_per_image"] * o * n_words(fan_in))  # rows: bit planes, patches or 1
            p["w_off"], w_off = w_off, w_off + wblobs[-1].size
        if idx > 0:  # the input bit string (with one spare word for im2col reads) and the words read
            sizes[0] = max(sizes[0], out_words[idx - 1] + 1, p["nw"])
        consts = _consts(layer, bnn, signs, p["n_out_pad"])
        if p["kind"] == KIND_CONV_U8:
            consts[0, :o] = sigma
        if p["kind"] == KIND_CONV_LUT:  # tap offsets into the grid, then table offsets
            consts = np.concatenate([toff, tbase])
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
