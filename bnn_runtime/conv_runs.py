"""Numba kernel of a convolution of bits whose kernel rows are short: a run of at most 64 bits per kernel row.

A kernel row of a patch (kw pixels x C channels, channels-last) is one run of kw * C bits of the input's
bit string. When that run fits a slot of 32 (two per word) or 64 bits, a patch is ``ceil(kh / slots per
word)`` words that are a few ORs of the runs, so the runs are cut once per image, for every padded row
and conv output column (run_table), and a pooling window's patches are assembled from them. The product
is the dense layers' register block (simd._popcount_cols: weights by columns of 8 outputs, 16 outputs per
vector pair, 4 patches at a time), and the bits of a window's patches are OR-ed in registers (the OR-pool)
before one write per pooled output and block. plan.plan_conv_runs lays the weights out the same way:
fan-in (i, j, c), each kernel row padded to its slot.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import cache  # noqa: F401  (the kernel cache locator, before any kernel is decorated)
from .kernels import or_run
from .layout import (
    COL_ALPHA,
    COL_BETA,
    COL_C,
    COL_H,
    COL_KH,
    COL_KW,
    COL_N_OUT,
    COL_OUT_H,
    COL_OUT_W,
    COL_OW,
    COL_PH,
    COL_POOL_H,
    COL_POOL_SH,
    COL_POOL_SW,
    COL_POOL_W,
    COL_PW,
    COL_RUN_SLOT,
    COL_SH,
    COL_SW,
    COL_W,
)
from .simd import cols_bits1x1, cols_bits1x2, cols_bits4x1, cols_bits4x2, popcount, view


@njit(cache=True, inline="always")
def run_table(src, img, c, h, w, kw, ph, pw, sw, hp, ow, pairs, table):
    """table[yp * OW + xo] = the kw * C bits of padded row yp under conv output column xo's window (padded
    pixels xo * SW .. xo * SW + kw - 1, source pixels x = xo * SW - PW + j; zero outside the image), from
    image img's channels-last bit string (rows of src have a spare word). ``pairs`` (32-bit slots): then
    table[(HP + yp) * OW + xo] = row yp's run | row yp + 1's run << 32, for yp < HP - 1."""
    full = np.uint64(kw * c)
    fmask = (np.uint64(1) << full) - np.uint64(1) if full < 64 else ~np.uint64(0)
    for yp in range(hp):
        y = yp - ph
        dst = np.uint64(yp * ow)
        if y < 0 or y >= h:
            for xo in range(np.uint64(ow)):
                table[dst + xo] = 0
            continue
        for xo in range(ow):
            xs = xo * sw - pw
            j0, j1 = max(0, -xs), min(kw, w - xs)
            v = np.uint64(0)
            if j0 < j1:
                bit = np.uint64((y * w + xs + j0) * c)
                q, sft = bit >> np.uint64(6), bit & np.uint64(63)
                v = src[img, q] >> sft
                if sft:
                    v |= src[img, q + np.uint64(1)] << (np.uint64(64) - sft)
                if j1 - j0 == kw:
                    v &= fmask
                else:
                    n = np.uint64((j1 - j0) * c)
                    v = (v & ((np.uint64(1) << n) - np.uint64(1))) << np.uint64(j0 * c)
            table[dst + np.uint64(xo)] = v
    if pairs:
        m, n = np.uint64(hp * ow), np.uint64((hp - 1) * ow)
        step = np.uint64(ow)
        for t in range(n):
            table[m + t] = table[t] | (table[t + step] << np.uint64(32))


@njit(cache=True)
def conv_runs(src, img, geo, wt, consts, buf, out, out0):
    """Convolution of image img's bits (row img of src) with the weights wt, threshold, OR-pool, pack channels-last
    from bit out0 (bit out0 + (py * OUT_W + px) * O + o). geo: the layer's params row; consts = (gamma, dir * T,
    dir) per output; buf: uint64 scratch rows (at least nw words each): a window's patches, then the run table
    (and its pairs), the patches' beta * popcount and the blocks' bits (plan.conv_runs_scratch). Word k of the
    patch of conv output (yo, xo) is table[koff[k] + yo * SH * OW + xo]: a pair of runs, or a single run.
    """
    c, h, w, kh, kw, ph, pw = geo[COL_C], geo[COL_H], geo[COL_W], geo[COL_KH], geo[COL_KW], geo[COL_PH], geo[COL_PW]
    sh, sw, ow, qh, qw = geo[COL_SH], geo[COL_SW], geo[COL_OW], geo[COL_POOL_H], geo[COL_POOL_W]
    qsh, qsw, out_h, out_w, n_out = geo[COL_POOL_SH], geo[COL_POOL_SW], geo[COL_OUT_H], geo[COL_OUT_W], geo[COL_N_OUT]
    alpha, beta, per = geo[COL_ALPHA], geo[COL_BETA], 64 // geo[COL_RUN_SLOT]
    nw, nwin, hp = (kh + per - 1) // per, qh * qw, h + 2 * ph
    flat = view(buf, np.uint64, (buf.size,))
    t0 = nwin * buf.shape[1]  # after the window's patch rows
    table = flat[t0 : t0 + 2 * hp * ow]
    pa = view(flat[t0 + 2 * hp * ow :], np.int64, (nwin,))
    res = view(flat[t0 + 2 * hp * ow + nwin :], np.int64, (4,))
    koff = view(flat[t0 + 2 * hp * ow + nwin + 4 :], np.uint64, (nw,))
    for k in range(nw):  # a pair of runs (rows per * k, per * k + 1), or the last row alone
        koff[k] = (hp * ow if per == 2 and per * k + 1 < kh else 0) + per * k * ow
    run_table(src, img, c, h, w, kw, ph, pw, sw, hp, ow, per == 2, table)
    nblk = (n_out + 7) // 8
    for py in range(out_h):
        for px in range(out_w):
            r = 0
            for dy in range(qh):
                for dx in range(qw):
                    base = np.uint64((py * qsh + dy) * sh * ow + px * qsw + dx)
                    t = np.uint64(0)
                    for k in range(nw):
                        v = table[koff[k] + base]
                        buf[r, k] = v
                        t += popcount(v)
                    pa[r] = beta * np.int64(t)
                    r += 1
            pos = out0 + (py * out_w + px) * n_out
            b = 0
            while b < nblk:  # 16 outputs at a time, the last 8 alone
                two = b + 2 <= nblk
                mask = np.uint64(0)
                r = 0
                while r + 4 <= nwin:
                    if two:
                        cols_bits4x2(buf, r, wt, b, nw, alpha, pa, r, consts, 8 * b, res)
                    else:
                        cols_bits4x1(buf, r, wt, b, nw, alpha, pa, r, consts, 8 * b, res)
                    mask |= np.uint64(res[0] | res[1] | res[2] | res[3])
                    r += 4
                while r < nwin:
                    if two:
                        cols_bits1x2(buf, r, wt, b, nw, alpha, pa, r, consts, 8 * b, res)
                    else:
                        cols_bits1x1(buf, r, wt, b, nw, alpha, pa, r, consts, 8 * b, res)
                    mask |= np.uint64(res[0])
                    r += 1
                nb = min(16 if two else 8, n_out - 8 * b)
                or_run(out, pos + 8 * b, mask & ((np.uint64(1) << np.uint64(nb)) - np.uint64(1)), nb)
                b += 2 if two else 1
