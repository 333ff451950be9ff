"""Numba kernels of binary layers: packed popcount products with the threshold, OR-pooling and packing fused in.

Every kernel is a plain module-level ``@njit(cache=True)`` function on arrays it is given (no
globals but the shared constants), small enough to read at once; driver.py runs a whole network
in one call, and ``model.BnnModel`` validates every input before a kernel sees it. The numba
cache is keyed on every runtime source file (cache.py), so kernels may call across modules.
All arithmetic on the integer path is exact integer arithmetic (no ``fastmath``).

Dense layers and convolutions of bits (one image's im2col rows at a time) are one product, gemm:
the weights are stored by columns of 8 outputs (plan.py), a 512-bit vector holds word k of 8
outputs and meets a broadcast activation word, so each lane accumulates one output's sum (no
reduction) and the threshold runs on whole vectors (simd._popcount_cols); convolutions of few
channels look their sums up in tables (conv_lut).

Hidden layers never store a sum: ``bit = dir_o * s >= dir_o * T_o`` is evaluated on the
block of sums still in registers and OR-ed straight into the next layer's bit rows (OR-pooling
is the same OR: the rows of one pooling window share an output bit).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import cache  # noqa: F401  (the kernel cache locator, before any kernel is decorated)
from .layout import (
    COL_C,
    COL_H,
    COL_KH,
    COL_KW,
    COL_LUT_G,
    COL_LUT_TAPS,
    COL_N_OUT,
    COL_OUT_H,
    COL_OUT_W,
    COL_PH,
    COL_POOL_H,
    COL_POOL_SH,
    COL_POOL_SW,
    COL_POOL_W,
    COL_PW,
    COL_SH,
    COL_SW,
    COL_W,
)
from .simd import (
    and_popcount_pass,
    cols_bits1x1,
    cols_bits1x4,
    cols_bits4x1,
    cols_bits4x4,
    cols_sums1x1,
    ge_mask16,
    lut_max16,
    popcount,
)

# Two rules keep these loops fast (both measured: docs/PERFORMANCE.md):
# * no call to a small array-taking kernel inside a hot loop: numba increments and decrements the
#   reference count of every array argument (atomic operations) on each such call, so register
#   blocks, bit copies and epilogues are written inline, and kernels are called per layer or image;
# * offsets read from data index arrays as uint64: a signed index gets a negative-index check
#   that keeps LLVM from vectorising the loop.


@njit(cache=True, inline="always")
def or_run(out, bit, v, nb):
    """OR the nb (<= 64) bits v into the flat bit string out from bit ``bit`` on (it may span 2 words)."""
    q, sft = np.uint64(bit) >> np.uint64(6), np.uint64(bit) & np.uint64(63)
    out[q] |= v << sft
    if sft + np.uint64(nb) > np.uint64(64):
        out[q + np.uint64(1)] |= v >> (np.uint64(64) - sft)


ALL = 1 << 62  # a range end past every output vector / pooled position: gemm and im2col_bits clip it
# (no default arguments: numba dispatches a Python call that omits one on its slow path, ~150 us)


@njit(cache=True)
def gemm(a, nrows, nw, wt, n_out, alpha, beta, consts, rowbit, bit0, out, scores, row0, last, blk0, blk1):
    """The popcount product of a binary layer with its fused epilogue: rows 0..nrows-1 of ``a`` (an image's
    im2col rows, or a tile's images) times the weights wt, stored by columns of 8 outputs (see
    simd._popcount_cols), 4 rows x 32 outputs per block; the rows and outputs left over go in blocks
    of 1 row and of 8 outputs (batch 1 of a dense layer: 1 x 32).

    Sums ``s = alpha p + beta pa + gamma`` (consts = (gamma, dir * T, dir) per output) go to
    scores[row0 + r] (``last``) or become the bits dir * s >= dir * T of row r, OR-ed into the flat
    output bits ``out`` at bit0 + rowbit[r] + o, 32 (or 8) at a time, while the block is in
    registers (rows of one pooling window share their rowbit: the OR is the pooling).

    Only the vectors of 8 outputs blk0 <= b < blk1 (clipped to the layer's) are computed: one thread's
    share of a layer (split.py).
    """
    nblk = min((n_out + 7) // 8, blk1)
    pa = np.empty(nrows, np.int64)
    for r in range(nrows):
        t = np.uint64(0)
        for k in range(nw):
            t += popcount(a[r, k])
        pa[r] = beta * np.int64(t)
    res = np.empty(8, np.int64)
    if last:
        for b in range(blk0, nblk):
            for r in range(nrows):
                cols_sums1x1(a, r, wt, b, nw, alpha, pa, r, consts, 8 * b, res)
                for j in range(min(8, n_out - 8 * b)):
                    scores[row0 + r, 8 * b + j] = res[j]
        return
    n4 = nrows - nrows % 4
    b = blk0
    while b < nblk:  # outputs outside: 32 outputs' weights are read from L1 by every row
        nv = 4 if b + 4 <= nblk else 1  # the last 1-3 vectors of 8 outputs go one at a time
        o = 8 * b
        nb = min(8 * nv, n_out - o)
        valid = (np.uint64(1) << np.uint64(nb)) - np.uint64(1)
        for r in range(0, n4, 4):
            if nv == 4:
                cols_bits4x4(a, r, wt, b, nw, alpha, pa, r, consts, o, res)
            else:
                cols_bits4x1(a, r, wt, b, nw, alpha, pa, r, consts, o, res)
            for i in range(4):
                or_run(out, bit0 + rowbit[r + i] + o, np.uint64(res[i]) & valid, nb)
        for r in range(n4, nrows):
            if nv == 4:
                cols_bits1x4(a, r, wt, b, nw, alpha, pa, r, consts, o, res)
            else:
                cols_bits1x1(a, r, wt, b, nw, alpha, pa, r, consts, o, res)
            or_run(out, bit0 + rowbit[r] + o, np.uint64(res[0]) & valid, nb)
        b += nv


@njit(cache=True)
def row_bit_offsets(nrows, rows_per_image, group, n_out, image_bits, rowbit):
    """rowbit[r] = bit (in the flattened output rows) of row r's output 0, counting without a division.

    Row r belongs to image r // rows_per_image and, within it, to output position
    (r % rows_per_image) // group (``group`` consecutive rows form one pooling window).
    """
    img = q = g = 0
    for r in range(nrows):
        rowbit[r] = img * image_bits + q * n_out
        g += 1
        if g == group:
            g, q = 0, q + 1
            if q * group == rows_per_image:
                q, img = 0, img + 1


@njit(cache=True)
def im2col_bits(src, img, geo, dst, row0, nw, q0, q1):
    """Patches of image img's bits (row img of src: an (H, W, C) channels-last bit string) into rows of dst.

    ``geo`` is the layer's row of Plan.params (columns layout.COL_*): input C x H x W, kernel, padding,
    stride, pooling window and stride, pooled size. Row order follows the pooling windows,
    ``((py * OUT_W + px) * POOL_H + dy) * POOL_W + dx``, so that the rows of one window are consecutive
    (overlapping windows repeat a patch); the patch of conv output (yo, xo) = (py * POOL_SH + dy,
    px * POOL_SW + dx) holds its bits in (i, j, c) order: kernel row i is the run of (j1 - j0) * c
    bits at ((yy * W + xs - PW + j0) * c) of the source, yy = yo * SH + i - PH, xs = xo * SW, 0 outside
    the image (zero padding of 01 bits); whole words when C is a multiple of 64. Source rows have a
    spare word. Only the pooled positions q0 <= py * OUT_W + px < q1 (clipped): one thread's share of
    a layer (split.py). Returns the next free row.
    """
    c, h, w, kh, kw, ph, pw = geo[COL_C], geo[COL_H], geo[COL_W], geo[COL_KH], geo[COL_KW], geo[COL_PH], geo[COL_PW]
    sh, sw, qh, qw = geo[COL_SH], geo[COL_SW], geo[COL_POOL_H], geo[COL_POOL_W]
    qsh, qsw = geo[COL_POOL_SH], geo[COL_POOL_SW]
    r = row0
    out_w = geo[COL_OUT_W]
    for pos in range(q0, min(q1, geo[COL_OUT_H] * out_w)):
        py, px = pos // out_w, pos % out_w
        for dy in range(qh):
            for dx in range(qw):
                y, x = (py * qsh + dy) * sh, (px * qsw + dx) * sw  # the patch's top left, unpadded
                for k in range(nw):
                    dst[r, k] = 0
                j0, j1 = max(0, pw - x), min(kw, w + pw - x)
                for i in range(kh):
                    yy = y + i - ph
                    if yy < 0 or yy >= h or j0 >= j1:
                        continue
                    so, do, n = (yy * w + x - pw + j0) * c, (i * kw + j0) * c, (j1 - j0) * c
                    if c % 64 == 0:  # whole words (C a multiple of 64): a plain copy
                        sq, dq = np.uint64(so >> 6), np.uint64(do >> 6)
                        for k in range(np.uint64(n >> 6)):
                            dst[r, dq + k] = src[img, sq + k]
                        continue
                    while n > 0:  # copy n bits, at most a word at a time
                        take = min(n, 64)
                        q, sft = so >> 6, np.uint64(so & 63)
                        v = src[img, q] >> sft
                        if sft:
                            v |= src[img, q + 1] << (np.uint64(64) - sft)
                        if take < 64:
                            v &= (np.uint64(1) << np.uint64(take)) - np.uint64(1)
                        q, sft = do >> 6, np.uint64(do & 63)
                        dst[r, q] |= v << sft
                        if sft and sft + np.uint64(take) > np.uint64(64):
                            dst[r, q + 1] |= v >> (np.uint64(64) - sft)
                        so, do, n = so + take, do + take, n - take
                r += 1
    return r


# --------------------------------------------------------------------------- convolution of few channels: tables
# A convolution of bits with C <= 8 input channels reads, per kernel tap, a small integer (the
# C bits of one pixel, or of g pixels side by side: a "group" of g * C <= 8 bits). Its share of
# every output's sum depends on nothing else, so it is looked up: T[tap][v] holds the partial
# sums of all outputs at once (int16 lanes, 16 outputs per block), and one output position costs
# one 16-lane vector add per tap instead of a patch copy and O x words popcounts. The two
# intrinsics below emit those vector operations directly (numba itself would not vectorise them).


@njit(cache=True, inline="always")
def lut_grid(src, img, c, h, w, ph, pw, pitch, g, o16, grid):
    """grid[y * pitch + x] = o16 * (the g * C bits of the g padded pixels from (y, x) on), the table row of a tap
    group there: pixel (y, x) of the zero-padded image is source pixel (y - ph, x - pw), bits c .. c + C of
    image img's channels-last bit string; 0 outside the image. Rows are ``pitch >= W + 2 pw + g - 1`` wide."""
    hp = h + 2 * ph
    mask = (np.uint64(1) << np.uint64(c)) - np.uint64(1)
    for t in range(hp * pitch):
        grid[t] = 0
    for y in range(h):
        r = (y + ph) * pitch + pw
        for x in range(w):
            bit = (y * w + x) * c
            q, sft = bit >> 6, np.uint64(bit & 63)
            v = src[img, q] >> sft
            if sft + np.uint64(c) > np.uint64(64):
                v |= src[img, q + 1] << (np.uint64(64) - sft)
            grid[r + x] = np.int32(v & mask)
    if (
        g > 1
    ):  # group values: pixel x's bits, then x + 1's above them, ... (reads stay in the row: pitch is wide enough)
        for y in range(hp):
            r = y * pitch
            for x in range(pitch - g + 1):
                v = grid[r + x]
                for d in range(1, g):
                    v |= grid[r + x + d] << (d * c)
                grid[r + x] = v
    for t in range(hp * pitch):
        grid[t] *= o16


@njit(cache=True)
def conv_lut(src, img, geo, table, thr, toff, tbase, grid, m, out, out0):
    """A convolution of bits with few channels by table lookup, threshold, OR-pool and pack, one image.

    s'_o = dir_o s_o = sum over tap groups t of table[tbase[t] + grid[pos + toff[t]] + o] (the table holds
    dir_o (alpha popcount(v & w_o,t) + beta popcount(v)) for every group value v; plan.lut_table), and
    the pooled bit is max over the window of s'_o >= thr_o, thr_o = dir_o T_o - dir_o gamma_o. The conv
    output (yo, xo) sits at grid position yo * SH * pitch + xo * SW. Bits go channels-last to
    out0 + (py * OUT_W + px) * O + o, 16 outputs (one table block) at a time. geo: the layer's params row.
    """
    c, h, w, ph, pw, g = geo[COL_C], geo[COL_H], geo[COL_W], geo[COL_PH], geo[COL_PW], geo[COL_LUT_G]
    sh, sw, qh, qw = geo[COL_SH], geo[COL_SW], geo[COL_POOL_H], geo[COL_POOL_W]
    qsh, qsw = geo[COL_POOL_SH], geo[COL_POOL_SW]
    n_out, ntaps, out_h, out_w = geo[COL_N_OUT], geo[COL_LUT_TAPS], geo[COL_OUT_H], geo[COL_OUT_W]
    pitch = w + 2 * pw + g - 1
    o16 = (n_out + 15) // 16 * 16
    lut_grid(src, img, c, h, w, ph, pw, pitch, g, o16, grid)
    for blk in range(0, n_out, 16):
        nb = min(16, n_out - blk)
        valid = (np.uint64(1) << np.uint64(nb)) - np.uint64(1)
        for py in range(out_h):
            for px in range(out_w):
                first = True
                for dy in range(qh):
                    row = (py * qsh + dy) * sh * pitch
                    for dx in range(qw):
                        lut_max16(table, grid, toff, tbase, ntaps, row + (px * qsw + dx) * sw, blk, m, first)
                        first = False
                bits = ge_mask16(m, thr, blk) & valid
                pos = np.uint64(out0 + (py * out_w + px) * n_out + blk)
                q, sft = pos >> np.uint64(6), pos & np.uint64(63)
                out[q] |= bits << sft
                if sft + np.uint64(nb) > np.uint64(64):
                    out[q + np.uint64(1)] |= bits >> (np.uint64(64) - sft)


# --------------------------------------------------------------------------- the microbenchmark


@njit(cache=True)
def and_popcount_peak(a, w, repeats):
    """The machine's AND+popcount rate as LLVM's loop vectoriser reaches it: each word of ``a`` ANDed with
    4 words held in registers (w[0..3]), popcounted and accumulated -- 4 word operations per word loaded,
    nothing else. (On this project's Xeon the vectoriser stops at 256-bit vectors: and_popcount_peak512.)

    The 4 words rotate between repeats, so that no repeat can be skipped; returns the total.
    """
    w0, w1, w2, w3 = w[0], w[1], w[2], w[3]
    total = np.uint64(0)
    for _ in range(repeats):
        s0 = s1 = s2 = s3 = np.uint64(0)
        for k in range(a.shape[0]):
            x = a[k]
            s0 += popcount(x & w0)
            s1 += popcount(x & w1)
            s2 += popcount(x & w2)
            s3 += popcount(x & w3)
        total += s0 + (s1 << np.uint64(1)) + (s2 << np.uint64(2)) + (s3 << np.uint64(3))
        w0, w1, w2, w3 = w1, w2, w3, w0
    return total


@njit(cache=True)
def and_popcount_peak512(a, w, repeats):
    """and_popcount_peak (the same total) with the words in explicit 512-bit vectors, as the kernels hold
    them (simd.and_popcount_pass); the words past the last multiple of 8 by scalar popcounts."""
    total = np.uint64(0)
    tail = a.shape[0] // 8 * 8
    for r in range(repeats):
        total += and_popcount_pass(a, w, r % 4)
        for k in range(tail, a.shape[0]):
            for j in range(4):
                total += popcount(a[k] & w[(j + r) % 4]) << np.uint64(j)
    return total
