"""Time the binary convolutions of a .bnn kernel by kernel: one image's im2col rows, then their product.

For docs/PERFORMANCE.md (*Binary convolutions at the AND+popcount peak*): per convolution of bits,
the best of ``ROUNDS`` runs of ``kernels.im2col_bits`` and ``kernels.gemm`` on random input bits, one
thread, and the product's share of the machine's AND+popcount peak (``bnn_export.bench.popcount_rate``,
the best of a measurement before and after the kernels: a shared machine).

    .venv/bin/python scripts/conv_kernels.py MODEL.bnn
"""

from __future__ import annotations

import sys
import time
from functools import partial

import numpy as np

from bnn_export.bench import popcount_rate
from bnn_runtime import kernels as K
from bnn_runtime.format import read_bnn
from bnn_runtime.layout import (
    COL_ALPHA,
    COL_BETA,
    COL_C_OFF,
    COL_KIND,
    COL_N_OUT,
    COL_N_OUT_PAD,
    COL_NW,
    COL_POOL_H,
    COL_POOL_W,
    COL_ROWS_PER_IMAGE,
    COL_W_OFF,
    KIND_CONV_BITS,
    SLOT_BITS,
)
from bnn_runtime.plan import build_plan

ROUNDS = 30


def _best(fn) -> float:
    fn()
    best = np.inf
    for _ in range(ROUNDS):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(path: str) -> None:
    bnn = read_bnn(path)
    plan = build_plan(bnn)
    peak = popcount_rate()
    rng = np.random.default_rng(0)
    src = rng.integers(0, 2**63, (1, plan.sizes[SLOT_BITS]), dtype=np.uint64)
    timed = []
    for k, p in enumerate(plan.params):
        if p[COL_KIND] != KIND_CONV_BITS:
            continue
        nw, n_out, per = p[COL_NW], p[COL_N_OUT], p[COL_ROWS_PER_IMAGE]
        rows = np.empty((per, nw), np.uint64)
        rowbit = np.zeros(per, np.int64)
        K.row_bit_offsets(per, per, p[COL_POOL_H] * p[COL_POOL_W], n_out, 0, rowbit)
        wts = plan.wpool[p[COL_W_OFF] : p[COL_W_OFF] + p[COL_N_OUT_PAD] * nw]
        consts = plan.cpool[p[COL_C_OFF] : p[COL_C_OFF] + 3 * p[COL_N_OUT_PAD]].reshape(3, -1)
        out = np.zeros(plan.sizes[SLOT_BITS], np.uint64)
        scores = np.zeros((1, 1), np.int32)
        alpha, beta = p[COL_ALPHA], p[COL_BETA]
        t_rows = _best(partial(K.im2col_bits, src, 0, p, rows, 0, nw, 0, K.ALL))
        t_gemm = _best(
            partial(K.gemm, rows, per, nw, wts, n_out, alpha, beta, consts, rowbit, 0, out, scores, 0, False, 0, K.ALL)
        )
        timed.append((k, per, nw, n_out, t_rows, t_gemm))
    peak = max(peak, popcount_rate())
    print(f"AND+popcount peak {peak / 1e9:.2f} G word-ops/s per thread")
    for k, per, nw, n_out, t_rows, t_gemm in timed:
        share = plan.word_ops[k] / t_gemm / peak
        print(
            f"{bnn.layers[k]['name']}: {per} rows x {nw} words -> {n_out} outputs: im2col {t_rows * 1e6:.1f} us, "
            f"product {t_gemm * 1e6:.1f} us ({share:.0%} of the peak)"
        )


if __name__ == "__main__":
    main(sys.argv[1])
