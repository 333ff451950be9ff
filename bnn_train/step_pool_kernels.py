"""Numba kernels for a Heaviside step followed by the quadratic-mean pool on the CPU: one pass each way.

torch computes the fused layer of ``ensemble_ops.step_quad_mean_pool`` as several generic passes over the
conv output (a compare into floats, the pool, a second compare, a product; backward an upsampling and a
product), and on the CPU those passes, not memory, set its time. These kernels read the conv output once and
write the pooled values and a one-byte mask; backward they write the input gradient once. They compute the
same float32 operations in the same order as the torch form (tested bit for bit in tests/test_ensemble_ops.py).

Arrays are indexed (batch, row, column, channel): a channels-last tensor's memory order, so the inner loop
runs over contiguous channels; an NCHW tensor is passed as a permuted view (correct, slower).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

CLAMP = np.float32(1e-12)  # the quadratic-mean pool's floor under the mean of squares (QuadMeanPool2d's)


@njit(parallel=True, cache=True)
def step_pool_forward(z, half, k, s, y, mask):  # pragma: no cover - compiled
    """Per k x k window and channel: s = (number of z >= 0) / k^2, y = sqrt(max(s, CLAMP)); mask = 1 where
    0 <= z <= half (where a gradient reaches z through the step's window and the pool); half < 0: no window."""
    n, h, w, c = z.shape
    kk = np.float32(k * k)
    windowed = half >= 0
    for b in prange(n):
        count = np.empty(c, np.float32)
        for i in range(h // k):
            for j in range(w // k):
                count[:] = 0
                for a in range(k):
                    for e in range(k):
                        for ch in range(c):
                            v = z[b, i * k + a, j * k + e, ch]
                            on = v >= 0
                            count[ch] += np.float32(1) if on else np.float32(0)
                            mask[b, i * k + a, j * k + e, ch] = on and (v <= half or not windowed)
                for ch in range(c):
                    m = count[ch] / kk
                    s[b, i, j, ch] = m
                    y[b, i, j, ch] = np.sqrt(max(m, CLAMP))


@njit(parallel=True, cache=True)
def step_pool_backward(grad, s, y, mask, k, scale, out):  # pragma: no cover - compiled
    """out = the pooled gradient's share of each window element, masked: ((grad / (2 y), 0 where s is under the
    clamp) * 2 / k^2 * scale) * mask, each product rounded to float32 as torch's separate operations are."""
    n, h, w, c = out.shape
    two, kk = np.float32(2), np.float32(k * k)
    for b in prange(n):
        share = np.empty(c, np.float32)
        for i in range(h // k):
            for j in range(w // k):
                for ch in range(c):
                    g = grad[b, i, j, ch] / (two * y[b, i, j, ch])
                    if not s[b, i, j, ch] >= CLAMP:
                        g = np.float32(0)
                    share[ch] = g * two / kk * scale
                for a in range(k):
                    for e in range(k):
                        for ch in range(c):
                            out[b, i * k + a, j * k + e, ch] = share[ch] * np.float32(mask[b, i * k + a, j * k + e, ch])
