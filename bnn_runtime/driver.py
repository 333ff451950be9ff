"""The whole network in one compiled call: a queue of tiles, each run through every layer by one kernel per kind.

``build(uses)`` gives ``forward``, the only entry point, and the only function compiled for a model's
run, with only the kernels of the layer kinds ``uses`` (Plan.uses; compiled.py loads or compiles it
once per process): the serial path calls it in the calling thread, the parallel path calls the same
function in the calling thread and in ``threads - 1`` pool threads (model.py; it runs without the
GIL). Each caller claims the next tile (a few images) from an atomic counter, ``state[0]``, runs it through all layers
(so its activations stay in cache) into scores of its own, and commits them: a compare-and-swap
of the tile's status ``state[1 + t]`` from TILE_OPEN to TILE_COMMITTING, the copy and the labels,
then TILE_DONE. A thread the OS deschedules holds at most one tile, and not even that: the calling
thread, once no tile is left to claim, takes over the open tiles at once and commits them itself
(the late thread's commit then fails and its result is dropped); it never sleeps on another thread.
Every layer is a row of ``params`` (columns: layout.COL_*) over pooled arrays; the layer loop
dispatches on its kind.
"""

from __future__ import annotations

import numpy as np

from .cache import kernel  # (the kernel cache locator, before any kernel is decorated)
from .conv_runs import conv_runs
from .first_layer import byte_planes, conv_u8, dense_u8, dense_vnni
from .kernels import ALL, conv_lut, gemm, im2col_bits, row_bit_offsets
from .layout import (
    COL_ACC16,
    COL_ALPHA,
    COL_BETA,
    COL_C_OFF,
    COL_CHUNKS,
    COL_KIND,
    COL_LAST,
    COL_LUT_SIZE,
    COL_LUT_TAPS,
    COL_N_OUT,
    COL_N_OUT_PAD,
    COL_NW,
    COL_POOL_H,
    COL_POOL_W,
    COL_ROWS_PER_IMAGE,
    COL_SPLIT_BITS,
    COL_SPLIT_STATE,
    COL_SPLIT_WORDS,
    COL_W_OFF,
    KIND_CONV_BITS,
    KIND_CONV_LUT,
    KIND_CONV_RUNS,
    KIND_CONV_U8,
    KIND_DENSE_BITS,
    KIND_DENSE_U8,
    KIND_DENSE_VNNI,
    SLOT_BITS,
    SLOT_I16,
    SLOT_I32,
    SLOT_ROW_WORDS,
    SLOT_SPLIT,
    SPLIT_TILE,
    USES_CONV_U8_I32,
    USES_SPLIT,
    scratch_parts,
)
from .simd import atomic_add, atomic_cas, atomic_load, atomic_store, view
from .split import CHUNK_DONE, chunk_conv_bits, chunk_dense_bits, chunk_extent, next_chunk

TILE_OPEN, TILE_COMMITTING, TILE_DONE = 0, 1, 2  # state[1 + t]; state[0] counts the claimed tiles
scratch_words = kernel(inline="always")(scratch_parts)  # (the layout the caller sized the scratch with)


# --------------------------------------------------------------------------- one kernel call per layer kind
# Each reads its row p (columns layout.COL_*); x: the uint8 batch (first layers), src/out: the bit strings
# of the tile's images (image_bits bits each), scores: the tile's own scores (row 0 = image i0).


@kernel(inline="always")
def layer_conv_lut(p, src, n, wpool, cpool, grid, m, out, image_bits):
    ntaps, size, o16 = p[COL_LUT_TAPS], p[COL_LUT_SIZE], (p[COL_N_OUT] + 15) // 16 * 16
    lut = view(wpool[p[COL_W_OFF] :], np.int16, ((size + o16 + 3) // 4 * 4,))
    toff, tbase = cpool[p[COL_C_OFF] : p[COL_C_OFF] + ntaps], cpool[p[COL_C_OFF] + ntaps : p[COL_C_OFF] + 2 * ntaps]
    for i in range(n):
        conv_lut(src, i, p, lut[:size], lut[size : size + o16], toff, tbase, grid, m, out, i * image_bits)


@kernel(inline="always")
def layer_conv_bits(p, src, n, wpool, consts, rows, rowbit, out, image_bits, scores, work):
    """One image at a time: its im2col rows stay in L2 while the product reads them once per 32 outputs."""
    nw, w0, per_image = p[COL_NW], p[COL_W_OFF], p[COL_ROWS_PER_IMAGE]
    wts = wpool[w0 : w0 + p[COL_N_OUT_PAD] * nw]
    row_bit_offsets(per_image, per_image, p[COL_POOL_H] * p[COL_POOL_W], p[COL_N_OUT], 0, rowbit)
    for i in range(n):
        r = im2col_bits(src, i, p, rows, 0, nw, 0, ALL)
        gemm(
            rows,
            r,
            nw,
            wts,
            p[COL_N_OUT],
            p[COL_ALPHA],
            p[COL_BETA],
            consts,
            rowbit,
            i * image_bits,
            out,
            scores,
            0,
            False,
            0,
            ALL,
            work,
        )


@kernel(inline="always")
def layer_dense_u8(p, x, i0, n, wpool, consts, rows, xsum, out, image_bits, scores, work):
    nw = p[COL_NW]
    for i in range(n):
        xsum[i] = byte_planes(x[i0 + i], rows, 8 * i, nw)
    dense_u8(
        rows,
        n,
        nw,
        wpool[p[COL_W_OFF] : p[COL_W_OFF] + p[COL_N_OUT_PAD] * nw],
        p[COL_N_OUT],
        xsum,
        consts,
        p[COL_LAST],
        out,
        image_bits,
        scores,
        0,
        work,
    )


@kernel(inline="always")
def layer_dense_vnni(p, x, i0, n, wpool, consts, out, image_bits, scores, work):
    nw, w0 = p[COL_NW], p[COL_W_OFF]
    dense_vnni(
        x,
        i0,
        n,
        nw,
        wpool[w0 : w0 + p[COL_N_OUT_PAD] * nw // 2],
        p[COL_N_OUT],
        consts,
        p[COL_LAST],
        out,
        image_bits,
        scores,
        0,
        work,
    )


@kernel(inline="always")
def layer_dense_bits(p, src, n, wpool, consts, rowbit, out, image_bits, scores, work):
    nw, w0 = p[COL_NW], p[COL_W_OFF]
    row_bit_offsets(n, 1, 1, 0, image_bits, rowbit)  # image i's bits from i * image_bits on
    wts = wpool[w0 : w0 + p[COL_N_OUT_PAD] * nw]
    n_out, alpha, beta = p[COL_N_OUT], p[COL_ALPHA], p[COL_BETA]
    gemm(src, n, nw, wts, n_out, alpha, beta, consts, rowbit, 0, out, scores, 0, p[COL_LAST], 0, ALL, work)


# --------------------------------------------------------------------------- labels


@kernel(inline="always")
def labels_from_scores(scores, scale, offset, threshold_consts, labels):
    """argmax(scale * s + offset) in float64, first maximum; or, for a single-unit threshold network, its bit."""
    n, k = scores.shape
    for i in range(n):
        if threshold_consts.shape[1]:
            s = np.int64(scores[i, 0])
            labels[i] = 1 if threshold_consts[2, 0] * s >= threshold_consts[1, 0] else 0
            continue
        best, arg = scores[i, 0] * scale[0] + offset[0], 0
        for j in range(1, k):
            v = scores[i, j] * scale[j] + offset[j]
            if v > best:
                best, arg = v, j
        labels[i] = arg


# --------------------------------------------------------------------------- the tile queue


@kernel(inline="always")
def commit(t, tile, n, mine, scores, labels, scale, offset, final, state):
    """Tile t's scores and labels into the batch's, unless another thread committed it first; returns whether."""
    if not atomic_cas(state, 1 + t, TILE_OPEN, TILE_COMMITTING):
        return False
    i0, i1 = t * tile, min(n, (t + 1) * tile)
    for i in range(i1 - i0):  # (element by element: an array assignment compiles numba's shape-error message)
        for j in range(scores.shape[1]):
            scores[i0 + i, j] = mine[i, j]
    labels_from_scores(scores[i0:i1], scale, offset, final, labels[i0:i1])
    atomic_store(state, 1 + t, TILE_DONE)
    return True


def build(uses: int):
    """``forward`` compiled only for the layers in ``uses`` (Plan.uses; layout.USES_ALL: every model), cached apart.

    The flags are constants of the closure: numba prunes the branches of the other kinds before it types
    them, so their kernels are never compiled (numba's cache keys a closure by the values of its cells).
    """
    conv_u8_16, conv_u8_32 = bool(uses & 1 << KIND_CONV_U8), bool(uses & 1 << USES_CONV_U8_I32)
    conv_lut, conv_bits = bool(uses & 1 << KIND_CONV_LUT), bool(uses & 1 << KIND_CONV_BITS)
    dense_u8, dense_vnni = bool(uses & 1 << KIND_DENSE_U8), bool(uses & 1 << KIND_DENSE_VNNI)
    dense_bits, conv_runs_ = bool(uses & 1 << KIND_DENSE_BITS), bool(uses & 1 << KIND_CONV_RUNS)
    split_ok = bool(uses & 1 << USES_SPLIT)

    @kernel(nogil=True)
    def forward(x, tile, sizes, params, wpool, cpool, taps, scale, offset, final, scores, labels, state, scratch, main):
        """Claim, run and commit tiles of the batch x (N, D) uint8 until none is left to claim.

        state: int64 (1 + tiles,), zero for a new batch, shared by every thread of one call; scratch: int64, the
        caller's own, layout.scratch_parts words (no kernel allocates: cache.QuickLoadCache). The ``main``
        thread (the caller's) then takes over every tile still open -- claimed by a thread that has not
        committed it, perhaps descheduled -- checking after each layer whether that thread committed after
        all, and waits for the commits in progress (a copy each), so that the batch is complete when it returns.
        A tile's images go through every layer (one kernel call per kind) into ``mine``, its own scores.

        tile == SPLIT_TILE (a model compiled with USES_SPLIT): tiles of one image, each shared between the
        threads layer by layer (split.py; state: split_plan.state_size entries, zero): a piece of work is then one
        chunk of one layer, from split.next_chunk, computed into this thread's bits and committed to the
        layer's shared bits.
        """
        n = x.shape[0]
        split = split_ok and tile == SPLIT_TILE
        if split:
            tile = 1
        ntiles = (n + tile - 1) // tile
        k = scores.shape[1]
        nbits, nxsum, nrw_all, nrows, n16, n32, nmine, nwork, _ = scratch_words(tile, sizes, k)
        zeroed = nbits + nxsum  # the bit strings (read a spare word past their bits) and xsum; the rest is written
        for i in range(zeroed):
            scratch[i] = 0
        o_rows = zeroed
        o_rowbit = o_rows + nrw_all
        o16 = o_rowbit + nrows
        o32 = o16 + n16
        o_mine = o32 + n32
        bits = view(scratch, np.uint64, (2, tile, sizes[SLOT_BITS]))
        xsum = view(scratch[nbits:], np.int64, (tile,))
        rows = view(scratch[o_rows:], np.uint64, (nrows, sizes[SLOT_ROW_WORDS]))
        rowbit = view(scratch[o_rowbit:], np.int64, (nrows,))
        ibuf16 = view(scratch[o16:], np.int16, (sizes[SLOT_I16],))
        ibuf32 = view(scratch[o32:], np.int32, (sizes[SLOT_I32],))
        mine = view(scratch[o_mine:], np.int32, (tile, k))
        work = scratch[o_mine + nmine : o_mine + nmine + nwork]
        cursor = scratch[o_mine + nmine + nwork :]  # split.next_chunk's (image, layer, ...) of this thread
        cursor[0], cursor[1], cursor[2] = 0, 0, 1
        sbase, per_image = 1 + ntiles, sizes[SLOT_SPLIT]  # split: "main is done", then a block per image
        image_bits = bits.shape[2] * 64
        t, taking_over = -1, False
        l0, l1, c, blk0, blk1 = 0, params.shape[0], 0, 0, 0
        while True:  # one copy of the layer loop (a second would double the compiled code)
            if split:
                t, l0, c, blk0, blk1 = next_chunk(state, params, sbase, per_image, n, cursor, main)
                if t < 0:
                    break
                l1 = l0 + 1
            else:
                if not taking_over:
                    t = atomic_add(state, 0, 1)
                    if t >= ntiles:
                        if not main:
                            break
                        t, taking_over = -1, True
                if taking_over:  # the next tile still open, if any
                    t += 1
                    while t < ntiles and atomic_load(state, 1 + t) != TILE_OPEN:
                        t += 1
                    if t >= ntiles:
                        break
            i0 = t * tile
            m = min(n, i0 + tile) - i0
            cur, complete = 0, True
            for layer in range(l0, l1):
                p = params[layer]
                kind, n_out_pad, c0 = p[COL_KIND], p[COL_N_OUT_PAD], p[COL_C_OFF]
                src, dst = bits[cur], bits[1 - cur]
                w0, w1, v0, v1 = 0, 0, 0, 0
                if split:  # the input: the previous layer's shared bits; the output: this thread's, then shared
                    if layer > 0:
                        q = params[layer - 1]
                        at = sbase + 1 + t * per_image + q[COL_SPLIT_BITS]
                        src = view(state[at:], np.uint64, (1, q[COL_SPLIT_WORDS]))
                    w0, w1, v0, v1 = chunk_extent(p, c)
                    if blk0 == v0:
                        for w in range(w0, w1):
                            dst[0, w] = 0
                else:
                    dst[:m, :] = 0
                out = view(dst, np.uint64, (dst.size,))
                # (gamma, dir * T, dir) per output; a table convolution keeps its tap offsets there instead
                width = n_out_pad if kind != KIND_CONV_LUT else 0
                consts = view(cpool[c0:], np.int64, (3, width))
                chunked = split and p[COL_CHUNKS] > 1 and layer < params.shape[0] - 1  # (the last: whole)
                if conv_u8_16 and kind == KIND_CONV_U8 and p[COL_ACC16]:
                    for i in range(m):
                        conv_u8(x[i0 + i], p, taps, consts, ibuf16, out, i * image_bits)
                if conv_u8_32 and kind == KIND_CONV_U8 and not p[COL_ACC16]:
                    for i in range(m):
                        conv_u8(x[i0 + i], p, taps, consts, ibuf32, out, i * image_bits)
                if conv_lut and kind == KIND_CONV_LUT:
                    layer_conv_lut(p, src, m, wpool, cpool, ibuf32, ibuf16, out, image_bits)
                if conv_runs_ and kind == KIND_CONV_RUNS:
                    wts = wpool[p[COL_W_OFF] : p[COL_W_OFF] + n_out_pad * p[COL_NW]]
                    for i in range(m):
                        conv_runs(src, i, p, wts, consts, rows, out, i * image_bits)
                if conv_bits and kind == KIND_CONV_BITS and not chunked:
                    layer_conv_bits(p, src, m, wpool, consts, rows, rowbit, out, image_bits, mine, work)
                if conv_bits and kind == KIND_CONV_BITS and chunked:
                    chunk_conv_bits(p, src, c, blk0, blk1, blk0 == v0, wpool, consts, rows, rowbit, out, mine, work)
                if dense_u8 and kind == KIND_DENSE_U8:
                    layer_dense_u8(p, x, i0, m, wpool, consts, rows, xsum, out, image_bits, mine, work)
                if dense_vnni and kind == KIND_DENSE_VNNI:
                    layer_dense_vnni(p, x, i0, m, wpool, consts, out, image_bits, mine, work)
                if dense_bits and kind == KIND_DENSE_BITS and not chunked:
                    layer_dense_bits(p, src, m, wpool, consts, rowbit, out, image_bits, mine, work)
                if dense_bits and kind == KIND_DENSE_BITS and chunked:
                    chunk_dense_bits(p, src, blk0, blk1, wpool, consts, rowbit, out, mine, work)
                cur = 1 - cur
                if split and layer < params.shape[0] - 1 and blk1 >= v1:  # the chunk's words, final: from any thread
                    shared = view(state[sbase + 1 + t * per_image + p[COL_SPLIT_BITS] :], np.uint64, (w1,))
                    for w in range(w0, w1):
                        shared[w] = dst[0, w]
                    atomic_store(state, sbase + 1 + t * per_image + p[COL_SPLIT_STATE] + 1 + c, CHUNK_DONE)
                if taking_over and atomic_load(state, 1 + t) != TILE_OPEN:
                    complete = False  # the late thread committed it after all
                    break
            if complete and (not split or l0 == params.shape[0] - 1):
                commit(t, tile, n, mine, scores, labels, scale, offset, final, state)
        if split and main:
            atomic_store(state, sbase, 1)  # helpers still at a barrier may leave
        if main:
            for t in range(ntiles):  # commits in progress: a copy of a tile's scores each
                while atomic_load(state, 1 + t) != TILE_DONE:
                    pass

    return forward
