"""The split of one image between threads, planned at load time (NumPy only): split.py runs it, compiled.

``plan_split`` cuts each layer into chunks that any thread may compute (split.py's docstring has the scheme),
and ``state_size`` sizes driver.forward's shared state for it. Kept apart from the kernels so that a warm
process plans a model without importing numba (native.py).
"""

from __future__ import annotations

import numpy as np

from .layout import (
    COL_CHUNK_LEN,
    COL_CHUNKS,
    COL_KIND,
    COL_N_OUT,
    COL_NW,
    COL_OUT_H,
    COL_OUT_W,
    COL_OUT_WORDS,
    COL_POOL_H,
    COL_POOL_W,
    COL_SPLIT_BITS,
    COL_SPLIT_STATE,
    COL_SPLIT_WORDS,
    KIND_CONV_BITS,
    KIND_DENSE_BITS,
)

SPLIT_MIN_WORD_OPS = 2_000_000  # AND+popcount word operations per image from which a model may split an image
MAX_CHUNKS = 16  # chunks per layer at most
CHUNK_WORD_OPS = 50_000  # word operations per chunk at least (~3 us at the peak; a claim and a commit: far less)
DENSE_SLOWER = 8  # a dense layer on one image runs this many times below the peak (each weight word read once)


def plan_split(params: np.ndarray, out_bits: list[int]) -> int:
    """Fill the split columns of every layer's params row (COL_OUT_WORDS, COL_CHUNKS, ...; the chunks of a
    convolution are runs of pooled positions, of a dense layer runs of outputs, each starting on a 64-bit
    word of the output); returns the entries of one image's block of shared state (SLOT_SPLIT).
    out_bits: the bits of each layer's output, per image."""
    n_state = 0
    for k, p in enumerate(params):
        kind, n_out, nw = p[COL_KIND], int(p[COL_N_OUT]), int(p[COL_NW])
        p[COL_OUT_WORDS] = -(-out_bits[k] // 64)
        p[COL_CHUNKS], p[COL_CHUNK_LEN] = 1, 0
        if k < len(params) - 1 and kind in (KIND_CONV_BITS, KIND_DENSE_BITS):
            conv = kind == KIND_CONV_BITS
            units = int(p[COL_OUT_H] * p[COL_OUT_W]) if conv else n_out
            align = 64 // np.gcd(n_out, 64) if conv else 64  # units per whole number of words
            word_ops = (units * p[COL_POOL_H] * p[COL_POOL_W] if conv else 1) * n_out * nw
            least = max(1, CHUNK_WORD_OPS if conv else CHUNK_WORD_OPS // DENSE_SLOWER)  # (dense: weights stream)
            want = max(1, min(MAX_CHUNKS, word_ops // least))
            per_chunk = -(-units // want)
            length = -(-per_chunk // align) * align
            p[COL_CHUNKS], p[COL_CHUNK_LEN] = -(-units // length), length
        p[COL_SPLIT_STATE] = n_state
        n_state += 1 + p[COL_CHUNKS]
    n_words = n_state
    for k, p in enumerate(params):  # the bits: the output and a spare word (im2col), or the next layer's row
        p[COL_SPLIT_WORDS] = max(p[COL_OUT_WORDS] + 1, params[k + 1, COL_NW] if k + 1 < len(params) else 0)
        p[COL_SPLIT_BITS] = n_words
        n_words += p[COL_SPLIT_WORDS]
    return int(n_words)


def state_size(n: int, tiles: int, per_image: int) -> int:
    """Entries of driver.forward's ``state`` for n images split between threads (tiles = n)."""
    return 1 + tiles + 1 + n * per_image
