"""One image shared between threads: each layer cut into chunks that any thread may compute, a barrier per layer.

A batch smaller than the thread count (batch 1 above all) leaves threads idle in the tile queue of
driver.py, which gives each thread whole images. For a network with enough work per image
(split_plan.SPLIT_MIN_WORD_OPS, Plan.uses gets layout.USES_SPLIT) driver.forward can instead run the images
one after the other, every thread on every layer of each (model.BnnModel.run passes
layout.SPLIT_TILE as the tile):

* a convolution of bits is cut into runs of pooled output positions, a dense layer of bits into
  runs of outputs (split_plan.plan_split, at load time: at most MAX_CHUNKS, each of at least
  CHUNK_WORD_OPS -- a dense layer's a DENSE_SLOWER-th of that -- and each starting on a word of the
  layer's output bits);
  every other layer is one chunk, and the last
  layer (the scores) is the calling thread's alone;
* a thread claims the next chunk of the layer from an atomic counter, computes it into bits of
  its own (its im2col rows too), then copies the chunk's words into the layer's own buffer,
  shared, and marks the chunk done; once no chunk is left to claim it moves to the next layer as
  soon as every chunk is done: a barrier per layer;
* the calling thread never waits for another one: a chunk still in flight when it runs out of
  chunks to claim it computes again itself, 32 outputs at a time (STEP_VECTORS), checking between
  two steps whether the other thread committed it after all (then it drops its own part); a helper
  does the same in a layer of several chunks, and waits (spins) for a layer of one piece. Two
  threads that both commit a chunk write the same words, the final ones (each layer has its own
  buffer, read only after the barrier), so a late thread can only rewrite bits with their own
  value. A helper leaves once the calling thread has finished the batch (``state[base]``).

The shared state of a call, in driver.forward's ``state`` after the tile statuses (``1 + tiles``
entries; the tile is 1 image here): ``base``: 1 once the calling thread is done; then, per image,
``Plan.sizes[SLOT_SPLIT]`` entries: per layer (params columns) at COL_SPLIT_STATE its claim counter
and the status of each chunk (CHUNK_DONE once committed), and at COL_SPLIT_BITS the layer's
output bits (COL_SPLIT_WORDS words, zero-padded).
"""

from __future__ import annotations

from .cache import kernel  # (the kernel cache locator, before any kernel is decorated)
from .kernels import ALL, gemm, im2col_bits, row_bit_offsets
from .layout import (
    COL_ALPHA,
    COL_BETA,
    COL_CHUNK_LEN,
    COL_CHUNKS,
    COL_KIND,
    COL_N_OUT,
    COL_N_OUT_PAD,
    COL_NW,
    COL_OUT_H,
    COL_OUT_W,
    COL_OUT_WORDS,
    COL_POOL_H,
    COL_POOL_W,
    COL_SPLIT_STATE,
    COL_W_OFF,
    KIND_CONV_BITS,
)
from .simd import atomic_add, atomic_load

STEP_VECTORS = 4  # vectors of 8 outputs per step of a chunk a thread takes over
CHUNK_DONE = 1


# --------------------------------------------------------------------------- the chunks (compiled)


@kernel(inline="always")
def chunk_extent(p, c):
    """(first word, end word, first vector of 8 outputs, end vector) of chunk c of the layer with params row p."""
    if p[COL_CHUNKS] == 1:
        return 0, p[COL_OUT_WORDS], 0, 1
    n_out, length = p[COL_N_OUT], p[COL_CHUNK_LEN]
    if p[COL_KIND] == KIND_CONV_BITS:
        lo, hi = c * length, min((c + 1) * length, p[COL_OUT_H] * p[COL_OUT_W])
        return lo * n_out // 64, (hi * n_out + 63) // 64, 0, (n_out + 7) // 8
    lo, hi = c * length, min((c + 1) * length, n_out)
    return lo // 64, (hi + 63) // 64, lo // 8, (hi + 7) // 8


@kernel()
def chunk_conv_bits(p, src, c, blk0, blk1, first, wpool, consts, rows, rowbit, out, scores, work):
    """Vectors blk0..blk1 of chunk c (pooled positions) of a convolution of bits on image 0 of src, into out
    (bits at their place in the image's output); ``first``: im2col of the chunk's rows first. (scores: unused;
    work: gemm's.)"""
    nw, w0, length = p[COL_NW], p[COL_W_OFF], p[COL_CHUNK_LEN]
    q0 = c * length
    group = p[COL_POOL_H] * p[COL_POOL_W]
    nrows = (min(q0 + length, p[COL_OUT_H] * p[COL_OUT_W]) - q0) * group
    if first:
        im2col_bits(src, 0, p, rows, 0, nw, q0, q0 + length)
        row_bit_offsets(nrows, nrows, group, p[COL_N_OUT], 0, rowbit)
    wts = wpool[w0 : w0 + p[COL_N_OUT_PAD] * nw]
    bit0 = q0 * p[COL_N_OUT]
    n_out, alpha, beta = p[COL_N_OUT], p[COL_ALPHA], p[COL_BETA]
    gemm(rows, nrows, nw, wts, n_out, alpha, beta, consts, rowbit, bit0, out, scores, 0, False, blk0, blk1, work)


@kernel()
def chunk_dense_bits(p, src, blk0, blk1, wpool, consts, rowbit, out, scores, work):
    """Vectors blk0..blk1 of a dense layer of bits on image 0 of src (a chunk, or a step of one), into out."""
    nw, w0 = p[COL_NW], p[COL_W_OFF]
    rowbit[0] = 0
    wts = wpool[w0 : w0 + p[COL_N_OUT_PAD] * nw]
    n_out, alpha, beta = p[COL_N_OUT], p[COL_ALPHA], p[COL_BETA]
    gemm(src, 1, nw, wts, n_out, alpha, beta, consts, rowbit, 0, out, scores, 0, False, blk0, blk1, work)


# --------------------------------------------------------------------------- who computes what


CUR_IMAGE, CUR_LAYER, CUR_CLAIMING, CUR_CHUNK, CUR_STEP = 0, 1, 2, 3, 4  # a thread's cursor (5 int64)


@kernel()
def next_chunk(state, params, base, per_image, n, cur, main):
    """The next piece of work of this thread, (image, layer, chunk, first vector, end vector); image -1: none left.

    cur: the thread's cursor (CUR_*), advanced here. Per layer: claim chunks while any is left, then go
    through the chunks in order: done ones are skipped; one in flight (another thread's) is returned a step
    of STEP_VECTORS at a time (the caller commits the chunk after its last step) -- to a helper only in a
    layer of several chunks: a layer of one piece it waits for (giving up once state[base] says the calling
    thread has finished), where a step would be the whole layer. So whichever thread runs moves the image
    on, and a thread that is not scheduled delays nobody. The last layer goes to the calling thread, whole;
    a helper goes on with the next image.
    """
    nl = params.shape[0]
    while True:
        i, layer = cur[CUR_IMAGE], cur[CUR_LAYER]
        if i >= n or (not main and atomic_load(state, base) != 0):
            return -1, 0, 0, 0, ALL
        if layer == nl - 1:
            cur[CUR_IMAGE], cur[CUR_LAYER], cur[CUR_CLAIMING] = i + 1, 0, 1
            if main:
                return i, layer, 0, 0, ALL
            continue
        p = params[layer]
        st = base + 1 + i * per_image + p[COL_SPLIT_STATE]
        chunks = p[COL_CHUNKS]
        if cur[CUR_CLAIMING]:
            c = atomic_add(state, st, 1)
            if c < chunks:
                _, _, v0, v1 = chunk_extent(p, c)
                return i, layer, c, v0, v1
            cur[CUR_CLAIMING], cur[CUR_CHUNK], cur[CUR_STEP] = 0, 0, 0
        c = cur[CUR_CHUNK]
        while c < chunks and atomic_load(state, st + 1 + c) == CHUNK_DONE:
            c += 1
            cur[CUR_STEP] = 0
        cur[CUR_CHUNK] = c
        if c == chunks:  # the layer is complete
            cur[CUR_LAYER], cur[CUR_CLAIMING] = layer + 1, 1
            continue
        if not main and chunks == 1:
            continue  # (spin: the layer is in flight in the calling thread)
        _, _, v0, v1 = chunk_extent(p, c)
        s0 = v0 + cur[CUR_STEP] * STEP_VECTORS
        if s0 >= v1:  # every step done, the chunk committed: (its status says so at the next look)
            continue
        cur[CUR_STEP] += 1
        return i, layer, c, s0, min(s0 + STEP_VECTORS, v1)
