"""Load-time re-packing: a validated .bnn file -> the flat arrays the kernels run on (NumPy only, done once).

The file keeps the canonical bit layout of docs/FORMAT.md; the runtime re-packs it here:

* activations between layers are bit strings per image; a convolution writes them
  channels-last, bit ``(y * W + x) * C + c``, so that a kernel row of a patch (kw pixels x C
  channels) is one contiguous run of bits. The weights that read them are permuted to match:
  a conv's fan-in order becomes (i, j, c), a dense layer after a conv reads (y, x, c);
* dense layers and convolutions of bits pad their outputs to a multiple of 8 (the padded
  outputs are never written) and store their weights by columns of 8 outputs,
  ``wt[(b * nw + k) * 8 + j] = w[8 b + j, k]``, so that one 512-bit load holds word k of 8
  outputs (kernels.gemm, first_layer.dense_u8); a dense layer's rows are padded with zero
  words to a multiple of 4 (zero bits add nothing to ``popcount(a & w)``);
* thresholds become ``dir * T`` so that a bit is ``dir * s >= dir * T``; ``pm1`` layers get the
  constants of ``s = 4 p - 2 pa - 2 pw + n`` (see kernels.py);
* a first dense layer on uint8 input whose fan-in is a multiple of 4 keeps one signed byte per
  weight, by blocks of 16 outputs, on a CPU with AVX512-VNNI (simd._vnni_cols; off with
  ``BNN_RUNTIME_VNNI=off``); otherwise it runs on the 8 bit planes of the input (first_layer.dense_u8);
* a first convolution on uint8 input becomes, per output, the list of its taps of the rarer
  sign (flat offsets into the zero-padded image) and that sign: ``s = sigma (2 A - B)``
  (first_layer.conv_u8); its sums are int16 when ``255 * fan_in`` fits, else int32;
* a convolution of bits with at most 8 input channels whose kernel rows (kw * C bits) fit 64 bits
  runs on patches of those runs (conv_runs.conv_runs): weights in (i, j, c) order, each kernel row
  padded to a slot of 32 or 64 bits, by columns of 8 outputs; wider kernel rows (or, with that
  planner off, every such layer) become a table (kernels.conv_lut): per
  group of g pixels of one kernel row (g * C <= 8 bits), every output's share of the sum for
  every value of those bits, dir-signed, int16; it is stored in ``wpool`` (as int16 viewed in
  uint64 words: the table, then the thresholds), its tap offsets in ``cpool``. Layers whose
  table would exceed ``LUT_MAX_BYTES`` or int16 keep the im2col + popcount product.

All layers' numbers go into a few pooled arrays with one row of integers per layer (``params``,
columns in ``COLUMNS``), so that one compiled function serves every model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import host, split_plan
from .bits import n_words, pack_bits, unpack_signs
from .errors import BnnFormatError
from .format import BnnFile
from .layout import (
    COL_ACC16,
    COL_KIND,
    COLUMNS,
    KIND_CONV_BITS,
    KIND_CONV_LUT,
    KIND_CONV_RUNS,
    KIND_CONV_U8,
    KIND_DENSE_BITS,
    KIND_DENSE_U8,
    KIND_DENSE_VNNI,
    N_SLOTS,
    SLOT_BITS,
    SLOT_I16,
    SLOT_I32,
    SLOT_ROW_WORDS,
    SLOT_ROWS,
    SLOT_SPLIT,
    TAP_LANES,
    USES_CONV_U8_I32,
    USES_SPLIT,
    scratch_parts,
)
from .reference import conv_stride, pool_stride

LUT_MAX_CHANNELS = 8  # a table has 2 ** (g * C) rows, g * C <= 8
LUT_MAX_BYTES = 256 * 1024
LUT_LANES = 16  # outputs per table block (one 16 x int16 vector)
BLOCK = 4  # outputs of a first or a table convolution are padded to a multiple of this
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
    sizes: np.ndarray  # scratch sizes, by the slots layout.SLOT_*
    n_scores: int
    word_ops: list[int]  # AND+popcount word operations per image, per layer (0 for the integer conv)
    _scratch_words: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # tile -> words

    @property
    def kernel_args(self) -> tuple:
        """The arrays driver.forward takes after the batch, tile and sizes."""
        return self.params, self.wpool, self.cpool, self.taps, self.scale, self.offset, self.final_threshold

    def scratch(self, tile: int, threads: int) -> np.ndarray:
        """int64 (threads, words): each thread's own scratch for driver.forward (layout.scratch_parts), in whole
        cache lines. (The words per tile are remembered: summing NumPy integers costs microseconds of a batch.)"""
        words = self._scratch_words.get(tile)
        if words is None:
            words = self._scratch_words[tile] = -(-int(sum(scratch_parts(tile, self.sizes, self.n_scores))) // 8) * 8
        return np.empty((threads, words), np.int64)

    @property
    def uses(self) -> int:
        """The layer kinds the driver must be compiled for (layout.USES_*: one bit per kind, conv_u8 int32 apart)."""
        mask = 0
        for p in self.params:
            int32 = p[COL_KIND] == KIND_CONV_U8 and not p[COL_ACC16]
            mask |= 1 << (USES_CONV_U8_I32 if int32 else int(p[COL_KIND]))
        if sum(self.word_ops) >= split_plan.SPLIT_MIN_WORD_OPS:
            mask |= 1 << USES_SPLIT
        return mask


@dataclass
class LayerInput:
    """What a planner gets: one layer of the file, its +-1 weights (O, fan_in) in canonical order, its place."""

    bnn: BnnFile
    layer: dict
    signs: np.ndarray
    after_conv: bool  # a dense layer after a convolution reads its input as (y, x, c)
    last: bool

    @property
    def n_out(self) -> int:
        return self.layer["out_features"]

    @property
    def alpha_beta(self) -> tuple[int, int]:
        return (4, -2) if self.layer["in_encoding"] == "pm1" else (2, -1)

    def row(self, kind: int, n_out_pad: int, **columns) -> dict:
        """The layer's params row: the columns every kind has, then the kind's own."""
        alpha, beta = self.alpha_beta
        return (
            dict(
                kind=kind,
                last=int(self.last),
                n_out=self.n_out,
                n_out_pad=n_out_pad,
                alpha=alpha,
                beta=beta,
                rows_per_image=1,
            )
            | columns
        )

    def consts(self, n_out_pad: int, signs: np.ndarray | None = None) -> np.ndarray:
        return _consts(self.layer, self.bnn, self.signs if signs is None else signs, n_out_pad)


@dataclass
class LayerPlan:
    """What a planner returns: its params row (by column name), its weights and constants, its scratch needs."""

    row: dict
    weights: np.ndarray  # uint64 blob, appended to Plan.wpool
    consts: np.ndarray  # int64 blob, appended to Plan.cpool
    scratch: dict = field(default_factory=dict)  # layout.SLOT_* -> size this layer needs
    word_ops: int = 0  # AND+popcount word operations per image
    taps: np.ndarray | None = None  # a first convolution's tap lists


NO_WEIGHTS = np.zeros(0, np.uint64)


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


def _conv_taps(signs: np.ndarray, grid: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per output: the taps of its rarer sign as flat offsets into the polyphase image (phase_offset), and that
    sign; a last row with every tap (the box sum). grid: the layer's stride and phase grid (``sh, sw, grid_h,
    grid_w, tap_copy``: with copies, the offsets are into the copies)."""
    o = len(signs)
    flat = signs.reshape(o, -1)
    c, kh, kw = signs.shape[1:]
    cc, ii, jj = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
    offsets = phase_offset(grid, cc, ii, jj).ravel()
    if grid.get("tap_copy"):  # padded pixel xp[P + q] is copy q's element P (phase_grid)
        offsets += (jj // grid["sw"]).ravel() * (grid["tap_copy"] - 1)
    sigma = np.where((flat > 0).sum(axis=1) <= (flat < 0).sum(axis=1), 1, -1)
    chosen = [offsets[flat[k] == sigma[k]] for k in range(o)] + [offsets]  # and every tap: the box
    taps = np.zeros((o + 1, 1 + len(offsets)), np.int64)
    for k, t in enumerate(chosen):
        taps[k, 0] = len(t)
        taps[k, 1 : 1 + len(t)] = t
    return taps, sigma


TAP_ALIGN = 32  # elements: 32 int16 (or int32) lanes are whole 64-byte cache lines


def phase_grid(geo: dict) -> dict:
    """The polyphase layout of a first convolution's zero-padded image (first_layer.conv_u8): the padded
    pixel (c, y, x) goes to phase (c, y % SH, x % SW), a grid_h x grid_w image, at (y // SH, x // SW), so
    that conv output (yo, xo) reads tap (c, i, j) at phase_offset(c, i, j) + yo * grid_w + xo: a stride-S
    convolution is a stride-1 sum over the phases, and only the strided outputs are computed (stride 1:
    one phase, the padded image itself).

    Aligned taps: when grid_w rounded up to TAP_ALIGN costs at most a seventh more positions, it is, and
    the kernel keeps ceil(kw / SW) copies of that image, copy q shifted left by q elements, tap_copy
    elements apart: every tap (c, i, j) then reads copy j // SW at a multiple of TAP_ALIGN from a block's
    first position (whole cache lines, no load split between two: measured 1.5-1.9x faster loads).
    """
    hp, pitch = geo["h"] + 2 * geo["ph"], geo["w"] + 2 * geo["pw"]
    gh, gw = -(-hp // geo["sh"]), -(-pitch // geo["sw"])
    aligned = _round_up(gw, TAP_ALIGN) - gw <= gw // 7
    gw = _round_up(gw, TAP_ALIGN) if aligned else gw
    n_xp = geo["c"] * geo["sh"] * geo["sw"] * gh * gw + geo["kw"] + TAP_LANES  # as first_layer.conv_u8
    return dict(grid_h=gh, grid_w=gw, tap_copy=_round_up(n_xp, TAP_ALIGN) if aligned else 0)


def phase_offset(grid: dict, c, i, j):
    """Flat offset in the polyphase image of padded pixel (c, i, j) (see phase_grid): phases in (c, y % SH, x % SW)
    order, each grid_h x grid_w."""
    sh, sw, gh, gw = grid["sh"], grid["sw"], grid["grid_h"], grid["grid_w"]
    return ((c * sh + i % sh) * sw + j % sw) * gh * gw + (i // sh) * gw + j // sw


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


def params_row(**columns) -> np.ndarray:
    """One row of Plan.params from column values by name (layout.COL_*; the rest 0)."""
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"not columns of Plan.params: {sorted(unknown)}")
    return np.array([columns.get(k, 0) for k in COLUMNS], np.int64)


def conv_geometry(layer: dict) -> dict:
    """The params columns of a convolution: input, kernel, padding, stride, its output, pooling window and
    stride, the pooled output (format version 2: ``stride`` and ``pool.stride``; absent = 1 and the pool size)."""
    c, h, w = layer["in_shape"]
    kh, kw = layer["kernel"]
    ph, pw = layer["padding"]
    sh, sw = conv_stride(layer)
    pool = layer.get("pool")
    qh, qw = pool["size"] if pool else (1, 1)
    qsh, qsw = pool_stride(pool) if pool else (1, 1)
    if min(sh, sw, qh, qw, qsh, qsw) < 1:
        raise BnnFormatError(f"layer {layer['name']!r}: strides and pooling windows must be >= 1")
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out_h, out_w = (oh - qh) // qsh + 1, (ow - qw) // qsw + 1
    if min(oh, ow, out_h, out_w) < 1 or list(layer["out_shape"]) != [layer["out_features"], out_h, out_w]:
        raise BnnFormatError(
            f"layer {layer['name']!r}: out_shape {layer['out_shape']} disagrees with its "
            f"kernel, padding, stride and pooling ({out_h}x{out_w})"
        )
    return dict(
        c=c,
        h=h,
        w=w,
        kh=kh,
        kw=kw,
        ph=ph,
        pw=pw,
        sh=sh,
        sw=sw,
        oh=oh,
        ow=ow,
        pool_h=qh,
        pool_w=qw,
        pool_sh=qsh,
        pool_sw=qsw,
        out_h=out_h,
        out_w=out_w,
    )


def conv_u8_scratch(geo: dict) -> int:
    """Elements of first_layer.conv_u8's buffer (geo: conv_geometry with phase_grid): room to align, the polyphase
    image + kw + a block (or its column-shifted copies), and 2 maps of the output rows (grid_w wide, rounded up to
    whole blocks): the box sums, the bits (bytes, 2 maps of them)."""
    gh, gw = geo["grid_h"], geo["grid_w"]
    nv = _round_up(geo["oh"] * gw, TAP_LANES)
    n_xp = geo["c"] * geo["sh"] * geo["sw"] * gh * gw + geo["kw"] + TAP_LANES
    if geo.get("tap_copy"):
        n_xp = -(-geo["kw"] // geo["sw"]) * geo["tap_copy"]
    return TAP_ALIGN + n_xp + 2 * nv


# --------------------------------------------------------------------------- one planner per layer kind


def plan_conv_u8(li: LayerInput) -> LayerPlan:
    """First convolution on uint8 pixels: per output, the taps of its rarer sign and that sign (first_layer.conv_u8)."""
    geo = conv_geometry(li.layer)
    geo |= phase_grid(geo)
    o, n_out_pad = li.n_out, _round_up(li.n_out, BLOCK)
    taps, sigma = _conv_taps(li.signs.reshape(o, geo["c"], geo["kh"], geo["kw"]), geo)
    acc16 = int(255 * li.layer["fan_in"] <= INT16_MAX)
    consts = li.consts(n_out_pad)
    consts[0, :o] = sigma
    return LayerPlan(
        row=li.row(KIND_CONV_U8, n_out_pad, acc16=acc16, **geo),
        weights=NO_WEIGHTS,
        consts=consts.ravel(),
        scratch={SLOT_I16 if acc16 else SLOT_I32: conv_u8_scratch(geo)},
        taps=taps,
    )


def plan_conv_lut(li: LayerInput) -> LayerPlan | None:
    """Convolution of bits with few channels by table lookup (kernels.conv_lut); None when its table does not fit."""
    geo = conv_geometry(li.layer)
    o, n_out_pad = li.n_out, _round_up(li.n_out, BLOCK)
    g, _ = lut_layout(geo["c"], geo["kw"])
    pitch = geo["w"] + 2 * geo["pw"] + g - 1
    alpha, beta = li.alpha_beta
    lut = lut_table(li.signs.reshape(o, geo["c"], geo["kh"], geo["kw"]), alpha, beta, li.consts(n_out_pad), pitch)
    if lut is None:
        return None
    table, thr, toff, tbase = lut
    blob = np.concatenate([table, thr])
    weights = np.concatenate([blob, np.zeros(-len(blob) % 4, np.int16)]).view(np.uint64)
    row = li.row(KIND_CONV_LUT, n_out_pad, lut_g=g, lut_taps=len(toff), lut_size=len(table), **geo)
    scratch = {SLOT_I16: LUT_LANES, SLOT_I32: (geo["h"] + 2 * geo["ph"]) * pitch}  # window maxima; the tap grid
    return LayerPlan(row=row, weights=weights, consts=np.concatenate([toff, tbase]), scratch=scratch)


RUN_SLOTS = (32, 64)  # bits per kernel-row slot of conv_runs


def conv_runs_scratch(geo: dict, nw: int) -> dict:
    """conv_runs.conv_runs's scratch rows of nw words (geo: conv_geometry): a pooling window's patches, then
    the run table and its pairs (2 x padded rows x conv output columns), a word per patch, 4 words, a word per
    patch word, in whole rows."""
    nwin = geo["pool_h"] * geo["pool_w"]
    extra = 2 * (geo["h"] + 2 * geo["ph"]) * geo["ow"] + nwin + 4 + nw
    return {SLOT_ROWS: nwin + -(-extra // nw), SLOT_ROW_WORDS: nw}


def plan_conv_runs(li: LayerInput) -> LayerPlan | None:
    """Convolution of bits with at most 8 channels whose kernel rows (kw * C bits) fit a slot of 32 or 64 bits:
    patches of runs (conv_runs.conv_runs); the weights' fan-in (i, j, c), each kernel row padded to its slot
    with -1 (bit 0: the patches' padding bits are 0, so it adds nothing to popcount(a & w)), by columns of 8
    outputs. None: too wide, or too many channels."""
    geo = conv_geometry(li.layer)
    o, c, kh, kw = li.n_out, geo["c"], geo["kh"], geo["kw"]
    slot = next((s for s in RUN_SLOTS if kw * c <= s), None)
    if slot is None or c > LUT_MAX_CHANNELS:  # (measured where the tables ran; wider inputs keep im2col + gemm)
        return None
    n_out_pad, nw = _round_up(o, COLUMN), -(-kh * slot // 64)
    signs = li.signs.reshape(o, c, kh, kw).transpose(0, 2, 3, 1).reshape(o, kh, kw * c)
    padded = np.full((o, kh, slot), -1, np.int8)
    padded[:, :, : kw * c] = signs
    rows = geo["out_h"] * geo["out_w"] * geo["pool_h"] * geo["pool_w"]
    return LayerPlan(
        row=li.row(KIND_CONV_RUNS, n_out_pad, nw=nw, run_slot=slot, **geo),
        weights=_columns(padded.reshape(o, kh * slot), n_out_pad, nw),
        consts=li.consts(n_out_pad).ravel(),
        scratch=conv_runs_scratch(geo, nw),
        word_ops=rows * o * nw,
    )


def plan_conv_bits(li: LayerInput) -> LayerPlan:
    """Convolution of bits: one image's im2col rows in (i, j, c) order times the weights by columns of 8 outputs
    (kernels.gemm, the dense layers' product); rows of exactly the fan-in's words (the product takes any count)."""
    geo = conv_geometry(li.layer)
    o, n_out_pad, fan_in = li.n_out, _round_up(li.n_out, COLUMN), li.layer["fan_in"]
    signs = li.signs.reshape(o, geo["c"], geo["kh"], geo["kw"]).transpose(0, 2, 3, 1).reshape(o, -1)
    nw = n_words(fan_in)
    rows = geo["out_h"] * geo["out_w"] * geo["pool_h"] * geo["pool_w"]  # one patch per pooling window position
    return LayerPlan(
        row=li.row(KIND_CONV_BITS, n_out_pad, nw=nw, rows_per_image=rows, **geo),
        weights=_columns(signs, n_out_pad, nw),
        consts=li.consts(n_out_pad, signs).ravel(),
        scratch={SLOT_ROWS: rows, SLOT_ROW_WORDS: nw},
        word_ops=rows * o * nw,
    )


def plan_dense_vnni(li: LayerInput) -> LayerPlan:
    """First dense layer on bytes with VNNI: +-1 bytes by blocks of 16 outputs (simd._vnni_cols)."""
    o, fan_in = li.n_out, li.layer["fan_in"]
    n_out_pad = _round_up(o, VNNI_COLUMN)
    w = np.zeros((n_out_pad, fan_in), np.int8)
    w[:o] = li.signs
    w = w.reshape(-1, VNNI_COLUMN, fan_in // 4, 4).transpose(0, 2, 1, 3)
    return LayerPlan(
        row=li.row(KIND_DENSE_VNNI, n_out_pad, nw=fan_in // 4),
        weights=np.ascontiguousarray(w).reshape(-1).view(np.uint64),
        consts=li.consts(n_out_pad).ravel(),
    )


def _columns(signs: np.ndarray, n_out_pad: int, nw: int) -> np.ndarray:
    """+-1 (O, K) -> weight bits by columns of 8 outputs, wt[(b * nw + k) * 8 + j] = w[8 b + j, k] (kernels.gemm)."""
    return _pack_rows(signs, n_out_pad, nw).reshape(-1, COLUMN, nw).transpose(0, 2, 1).ravel()


def _dense_columns(li: LayerInput, kind: int, signs: np.ndarray, rows: int) -> LayerPlan:
    """A dense layer's weights by columns of 8 outputs (_columns), rows padded to WORD_ALIGN words."""
    o, fan_in = li.n_out, li.layer["fan_in"]
    nw, n_out_pad = _round_up(n_words(fan_in), WORD_ALIGN), _round_up(o, COLUMN)
    scratch = {SLOT_ROW_WORDS: nw, **({SLOT_ROWS: rows} if kind == KIND_DENSE_U8 else {})}
    return LayerPlan(
        row=li.row(kind, n_out_pad, nw=nw, rows_per_image=rows),
        weights=_columns(signs, n_out_pad, nw),
        consts=li.consts(n_out_pad, signs).ravel(),
        scratch=scratch,
        word_ops=rows * o * n_words(fan_in),
    )


def plan_dense_u8(li: LayerInput) -> LayerPlan:
    """First dense layer on bytes: its 8 bit planes (first_layer.dense_u8)."""
    return _dense_columns(li, KIND_DENSE_U8, li.signs, rows=8)


def plan_dense_bits(li: LayerInput) -> LayerPlan:
    """Dense layer on bits; after a convolution its fan-in is read as (y, x, c), the conv's bit order."""
    signs = li.signs
    if li.after_conv:
        pc, ph, pw = li.bnn.layers[li.bnn.layers.index(li.layer) - 1]["out_shape"]
        signs = signs.reshape(li.n_out, pc, ph, pw).transpose(0, 2, 3, 1).reshape(li.n_out, -1)
    return _dense_columns(li, KIND_DENSE_BITS, signs, rows=1)


def plan_layer(li: LayerInput) -> LayerPlan:
    """The planner of a layer's kind, by its kind, input encoding and shape."""
    uint8 = li.layer["in_encoding"] == "uint8"
    if li.layer["kind"] == "conv":
        return plan_conv_u8(li) if uint8 else plan_conv_runs(li) or plan_conv_lut(li) or plan_conv_bits(li)
    if uint8:
        return plan_dense_vnni(li) if host.USE_VNNI and li.layer["fan_in"] % 4 == 0 else plan_dense_u8(li)
    return plan_dense_bits(li)


def build_plan(bnn: BnnFile) -> Plan:
    layers = bnn.layers
    if layers[-1]["kind"] != "dense":
        raise BnnFormatError(f"layer {layers[-1]['name']!r}: the runtime needs a dense last layer, not a convolution")
    rows, wblobs, cblobs, word_ops = [], [], [], []
    taps = np.zeros((1, 1), np.int64)
    sizes = np.ones(N_SLOTS, np.int64)
    w_off = c_off = 0
    for idx, layer in enumerate(layers):
        signs = unpack_signs(bnn.array(layer, "weight"), layer["fan_in"])
        after_conv = idx > 0 and layers[idx - 1]["kind"] == "conv"
        last = idx == len(layers) - 1
        lp = plan_layer(LayerInput(bnn=bnn, layer=layer, signs=signs, after_conv=after_conv, last=last))
        for slot, size in lp.scratch.items():
            sizes[slot] = max(sizes[slot], size)
        if idx > 0:  # the input bit string, with one spare word for im2col reads, and the words a dense row reads
            in_words = n_words(int(np.prod(layers[idx - 1]["out_shape"])))
            sizes[SLOT_BITS] = max(sizes[SLOT_BITS], in_words + 1, lp.row.get("nw", 0))
        if lp.taps is not None:
            taps = lp.taps
        rows.append(params_row(**lp.row, w_off=w_off, c_off=c_off))
        wblobs.append(lp.weights)
        cblobs.append(lp.consts)
        word_ops.append(lp.word_ops)
        w_off, c_off = w_off + lp.weights.size, c_off + lp.consts.size
    sizes[SLOT_BITS] = max(sizes[SLOT_BITS], n_words(int(np.prod(layers[-1]["out_shape"]))) + 1)

    last = layers[-1]
    if last["output"] == "scores":
        scale, offset = bnn.array(last, "scale").astype(np.float64), bnn.array(last, "offset").astype(np.float64)
        final = np.zeros((3, 0), np.int64)
    else:
        scale, offset = np.ones(1), np.zeros(1)
        final = np.ascontiguousarray(cblobs[-1].reshape(3, -1)[:, :1])
    wpool = np.concatenate(wblobs)
    params = np.array(rows, dtype=np.int64)
    sizes[SLOT_SPLIT] = split_plan.plan_split(params, [int(np.prod(layer["out_shape"])) for layer in layers])
    return Plan(
        params=params,
        wpool=wpool if wpool.size else np.zeros(1, np.uint64),
        cpool=np.concatenate(cblobs),
        taps=taps,
        scale=np.ascontiguousarray(scale),
        offset=np.ascontiguousarray(offset),
        final_threshold=final,
        sizes=sizes,
        n_scores=last["out_features"],
        word_ops=word_ops,
    )
