"""Numba kernels of a first layer on uint8 input: bit planes, VNNI bytes, or integer convolution sums.

The input is real (uint8 pixels); the +-1 weights make its sums exact integers. A dense layer
runs on the 8 bit planes of its input (dense_u8) or on AVX512-VNNI (dense_vnni); a convolution
sums, per output, only the taps of its rarer sign over the zero-padded image (conv_u8). Each
thresholds, OR-pools and packs its bits like the kernels of binary layers (kernels.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import cache  # noqa: F401  (the kernel cache locator, before any kernel is decorated)
from .kernels import or_run
from .layout import (
    COL_C,
    COL_GRID_H,
    COL_GRID_W,
    COL_H,
    COL_KW,
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
    COL_TAP_COPY,
    COL_W,
)
from .simd import (
    TAP_LANES,
    WIDEN_LANES,
    misalign,
    planes_bits1,
    planes_bits2,
    planes_sums1,
    tap_bits,
    tap_box,
    view,
    vnni_bits1x1,
    vnni_bits1x3,
    vnni_bits8x1,
    vnni_bits8x3,
    vnni_sums1x1,
    widen,
)

# --------------------------------------------------------------------------- the first layer (uint8 input)


@njit(cache=True)
def byte_planes(x, planes, r0, nw):
    """Bit-plane decomposition x = sum_b 2^b x_b: planes[r0 + b] = bit b of every byte of x, packed.

    Eight pixels at a time: ((v >> b) & 0x01..01) * 0x0102040810204080 >> 56 gathers bit b of
    the 8 bytes of v into one byte (the partial products never overlap, so no carries).
    Returns sum(x).
    """
    lo, magic = np.uint64(0x0101010101010101), np.uint64(0x0102040810204080)
    for b in range(8):
        for k in range(nw):
            planes[r0 + b, k] = 0
    n = x.shape[0]
    total = np.uint64(0)
    for g in range(n // 8):
        v = np.uint64(0)
        for j in range(8):
            v |= np.uint64(x[8 * g + j]) << np.uint64(8 * j)
            total += np.uint64(x[8 * g + j])
        q, s = g >> 3, np.uint64((g & 7) * 8)
        for b in range(8):
            planes[r0 + b, q] |= ((((v >> np.uint64(b)) & lo) * magic) >> np.uint64(56)) << s
    for k in range(n // 8 * 8, n):
        total += np.uint64(x[k])
        for b in range(8):
            planes[r0 + b, k >> 6] |= np.uint64((x[k] >> b) & 1) << np.uint64(k & 63)
    return np.int64(total)


@njit(cache=True)
def dense_u8(planes, n_img, nw, wt, n_out, xsum, consts, last, out, image_bits, scores, row0):
    """First dense layer on uint8 input: s = sum_b 2^b (2 popcount(x_b & w) - popcount(x_b)) = 2 P - sum(x),
    P = sum_b 2^b popcount(x_b & w): blocks of the 8 planes of one image x 16 outputs (planes_bits2: each
    weight word is loaded once for all 8 planes, the planes are weighted once per block), weights stored
    by columns of 8 outputs (see _popcount_cols).

    ``last``: write s to scores[row0 + i]; otherwise threshold and pack into the flat output
    bits ``out`` (image_bits bits per image).
    """
    nblk = (n_out + 7) // 8
    nx = np.empty(n_img, np.int64)
    for i in range(n_img):
        nx[i] = -xsum[i]
    res = np.empty(8, np.int64)
    if last:
        for b in range(nblk):
            for i in range(n_img):
                planes_sums1(planes, 8 * i, wt, b, nw, 2, nx, i, consts, 8 * b, res)
                for j in range(min(8, n_out - 8 * b)):
                    scores[row0 + i, 8 * b + j] = res[j]
        return
    for b in range(0, nblk, 2):  # outputs outside: 16 outputs' weights are read from L1 by every image
        o = 8 * b
        nb = min(16, n_out - o)
        valid = (np.uint64(1) << np.uint64(nb)) - np.uint64(1)
        for i in range(n_img):
            if b + 1 < nblk:
                planes_bits2(planes, 8 * i, wt, b, nw, 2, nx, i, consts, o, res)
            else:
                planes_bits1(planes, 8 * i, wt, b, nw, 2, nx, i, consts, o, res)
            or_run(out, i * image_bits + o, np.uint64(res[0]) & valid, nb)


@njit(cache=True)
def dense_vnni(x, r0, n_img, k4, wv, n_out, consts, last, out, image_bits, scores, row0):
    """First dense layer on uint8 input with VNNI (see _vnni_cols): images x[r0 : r0 + n_img], register
    blocks of 8 images x 48 outputs (the 48 outputs' weights are read from L1 by every image block).

    ``last``: write s to scores[row0 + i]; otherwise threshold and pack into the flat output
    bits ``out`` (image_bits bits per image).
    """
    nblk = (n_out + 15) // 16
    res = np.empty(3 * 8 * 16, np.int64)
    if last:
        for b in range(nblk):
            for i in range(n_img):
                vnni_sums1x1(x, r0 + i, wv, b, k4, consts, 16 * b, res)
                for j in range(min(16, n_out - 16 * b)):
                    scores[row0 + i, 16 * b + j] = res[j]
        return
    n8 = n_img - n_img % 8
    b = 0
    while b < nblk:
        nv = 3 if b + 3 <= nblk else 1  # the last 1-2 vectors of 16 outputs go one at a time
        o = 16 * b
        nb = min(16 * nv, n_out - o)
        valid = (np.uint64(1) << np.uint64(nb)) - np.uint64(1)
        for r in range(0, n8, 8):
            if nv == 3:
                vnni_bits8x3(x, r0 + r, wv, b, k4, consts, o, res)
            else:
                vnni_bits8x1(x, r0 + r, wv, b, k4, consts, o, res)
            for i in range(8):
                or_run(out, (r + i) * image_bits + o, np.uint64(res[i]) & valid, nb)
        for r in range(n8, n_img):
            if nv == 3:
                vnni_bits1x3(x, r0 + r, wv, b, k4, consts, o, res)
            else:
                vnni_bits1x1(x, r0 + r, wv, b, k4, consts, o, res)
            or_run(out, r * image_bits + o, np.uint64(res[0]) & valid, nb)
        b += nv


@njit(cache=True, inline="always")
def pad_image(img, c_in, h, w, ph, pw, sh, sw, gh, gw, xp):
    """Copy a uint8 image (C, H, W) into xp, its zero-padded polyphase copy (plan.phase_grid): padded pixel
    (c, y, x) at ((c * SH + y % SH) * SW + x % SW) * GH * GW + (y // SH) * GW + x // SW. Per row and column
    phase q, the pixels x = x0, x0 + SW, ... land side by side: no division per pixel (stride 1 x 1: row by row,
    in whole vectors, simd.widen). xp must be zero, with WIDEN_LANES spare elements past the last row."""
    plane = gh * gw
    nvec = (w + WIDEN_LANES - 1) // WIDEN_LANES
    for c in range(c_in):
        for y in range(h):
            yy = y + ph
            if sh == 1:  # (no division: two per row cost more than the row's copy)
                row = c * sw * plane + yy * gw
            else:
                row = (c * sh + yy % sh) * sw * plane + (yy // sh) * gw
            src = (c * h + y) * w
            if sh == 1 and sw == 1:  # (one phase: the rows follow each other in xp, in the order written)
                dst = row + pw
                if src + nvec * WIDEN_LANES <= img.size:  # whole vectors, reading on into the next row
                    widen(img, src, xp, dst, nvec)
                else:
                    for k in range(np.uint64(w)):
                        xp[np.uint64(dst) + k] = img[np.uint64(src) + k]
                # zero again what this or an earlier row wrote past the row: up to the next row (the last: all of it)
                end = dst + (nvec * WIDEN_LANES if y == h - 1 else min(nvec * WIDEN_LANES, gw))
                for k in range(np.uint64(dst + w), np.uint64(end)):
                    xp[k] = 0
                continue
            for q in range(sw):
                x0 = (q - pw) % sw  # the first column x with (x + pw) % SW == q
                dst = np.uint64(row + q * plane + (x0 + pw) // sw)
                first = np.uint64(src + x0)
                step = np.uint64(sw)
                for k in range(np.uint64((w - x0 + sw - 1) // sw)):
                    xp[dst + k] = img[first + k * step]


@njit(cache=True, inline="always")
def pool_pack(pv, tmp, gw, n, geo, o0, nb, out, out0):
    """OR-pool the bytes of output bits pv (outputs o0 .. o0 + nb) and pack them channels-last:
    bit out0 + (py * OUT_W + px) * O + o0 + j.

    pv holds the conv output map, n positions yo * GW + xo. The window ORs are two passes of long vector
    loops (rows into tmp, then columns back into pv) that leave each window's OR at its top-left position,
    read at (py * POOL_SH) * GW + px * POOL_SW. geo: the layer's params row.
    """
    qh, qw, qsh, qsw = geo[COL_POOL_H], geo[COL_POOL_W], geo[COL_POOL_SH], geo[COL_POOL_SW]
    n_out, out_h, out_w = geo[COL_N_OUT], geo[COL_OUT_H], geo[COL_OUT_W]
    nv = np.uint64(n - (qh - 1) * gw)
    for t in range(nv):
        tmp[t] = pv[t]
    for dy in range(1, qh):
        off = np.uint64(dy * gw)
        for t in range(nv):
            tmp[t] |= pv[t + off]
    nh = nv - np.uint64(qw - 1)
    for t in range(nh):
        pv[t] = tmp[t]
    for dx in range(1, qw):
        off = np.uint64(dx)
        for t in range(nh):
            pv[t] |= tmp[t + off]
    mask = (np.uint64(1) << np.uint64(nb)) - np.uint64(1)
    step = np.uint64(qsw)
    if nb == 8 and n_out % 8 == 0 and out0 % 8 == 0:  # whole bytes: a byte store per position (little-endian words)
        outb = view(out, np.uint8, (out.size * 8,))
        stride = np.uint64(n_out // 8)
        for py in range(out_h):
            r = np.uint64(py * qsh * gw)
            dst = np.uint64((out0 + py * out_w * n_out + o0) // 8)
            for px in range(np.uint64(out_w)):
                outb[dst + px * stride] |= pv[r + px * step]
        return
    if nb == n_out:  # one block: the positions' bits follow each other, written a word at a time
        word, fill, acc = np.uint64(out0 >> 6), np.uint64(out0 & 63), np.uint64(0)
        for py in range(out_h):
            r = np.uint64(py * qsh * gw)
            for px in range(np.uint64(out_w)):
                v = np.uint64(pv[r + px * step]) & mask
                acc |= v << fill
                fill += np.uint64(nb)
                if fill >= np.uint64(64):
                    out[word] |= acc
                    word += np.uint64(1)
                    fill -= np.uint64(64)
                    acc = v >> (np.uint64(nb) - fill) if fill else np.uint64(0)
        if fill:
            out[word] |= acc
        return
    for py in range(out_h):
        r = np.uint64(py * qsh * gw)
        pos = np.uint64(out0 + py * out_w * n_out + o0)
        for px in range(np.uint64(out_w)):
            v = np.uint64(pv[r + px * step]) & mask
            q, sft = pos >> np.uint64(6), pos & np.uint64(63)
            out[q] |= v << sft
            if sft + np.uint64(nb) > np.uint64(64):
                out[q + np.uint64(1)] |= v >> (np.uint64(64) - sft)
            pos += np.uint64(n_out)


@njit(cache=True)
def conv_u8(img, geo, taps, consts, ibuf, out, out0):
    """First conv layer on one uint8 image: integer sums over +-1 weights, threshold, OR-pool, pack.

    s_o = sum_+ x - sum_- x = sigma_o (2 A_o - B): A_o sums only the taps of the rarer sign
    (at most half of them), B is the all-ones box sum shared by every output (the last row of taps);
    consts = (sigma, dir * T, dir). The image is laid out in phases of the stride (plan.phase_grid), so that
    the sums are taken only at the conv outputs a pooled output reaches (strided or not), in blocks of
    TAP_LANES positions t = yo * GW + xo (the GW - OW extra columns are computed and never read), each in
    registers from the first tap to the threshold (simd.tap_bits); the bits of up to 8 outputs are gathered
    per position into one byte of pv, which is then OR-pooled and packed (pool_pack). With geo[COL_TAP_COPY]
    the taps read column-shifted copies of the image at whole cache lines (plan.phase_grid). geo: the layer's
    params row. ibuf (int16 when 255 * fan_in fits, else int32) holds [to a cache line | polyphase image (and
    its copies) | box | pv and window ORs, bytes] (plan.conv_u8_scratch).
    """
    c_in, h, w, kw, ph, pw = geo[COL_C], geo[COL_H], geo[COL_W], geo[COL_KW], geo[COL_PH], geo[COL_PW]
    sh, sw, gh, gw, n_out = geo[COL_SH], geo[COL_SW], geo[COL_GRID_H], geo[COL_GRID_W], geo[COL_N_OUT]
    n = ((geo[COL_OUT_H] - 1) * geo[COL_POOL_SH] + geo[COL_POOL_H]) * gw  # the conv output rows used
    nv = (n + TAP_LANES - 1) // TAP_LANES * TAP_LANES
    n_xp = c_in * sh * sw * gh * gw + kw + TAP_LANES  # spare: the last rows' extra columns, the last block
    copy = geo[COL_TAP_COPY]
    span = (kw + sw - 1) // sw * copy if copy else n_xp
    a = (64 - misalign(ibuf)) % 64 // ibuf.itemsize  # the image from a cache line on
    xp, src = ibuf[a : a + n_xp], ibuf[a : a + span]
    box = ibuf[a + span : a + span + nv]
    pvs = view(ibuf[a + span + nv :], np.uint8, (2 * nv,))
    pv, tmp = pvs[:nv], pvs[nv:]
    for t in range(np.uint64(n_xp)):
        xp[t] = 0  # (cheaper than remembering which scratch was zeroed: ~1,100 elements for 28 x 28)
    pad_image(img, c_in, h, w, ph, pw, sh, sw, gh, gw, xp)
    if copy:  # copy q = the image shifted left by q (plan.phase_grid; copy 0 is xp itself)
        for q in range(1, (kw + sw - 1) // sw):
            d = np.uint64(q * copy)
            for t in range(np.uint64(n_xp - q)):
                src[d + t] = xp[t + np.uint64(q)]
    for t0 in range(0, n, TAP_LANES):
        tap_box(src, taps, n_out, t0, box)
    for o0 in range(0, n_out, 8):
        nb = min(8, n_out - o0)
        for t0 in range(0, n, TAP_LANES):
            tap_bits(src, taps, o0, nb, t0, box, consts, pv)
        pool_pack(pv, tmp, gw, n, geo, o0, nb, out, out0)
