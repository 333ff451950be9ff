"""Numba kernels for an untied activation followed by the quadratic-mean pool on the CPU: one pass each way.

torch computes ``QuadMeanPool2d(k)(act(z))`` as many generic passes over the conv output (the forward, x * x,
the pool; backward the pool's spread, a product with x, the backward function's compare/convert/divide and a
product), and on the CPU those passes set much of an ensemble step's time. These kernels read z once and
write the pooled mean of squares; backward they read z once and write dL/dz once, recomputing x = f(z) and g'(z) on the
way. They do the same float32 operations in the same order as the torch layers (tested bit for bit in
tests/test_activation_pool.py), so the kinds below are only forwards and backwards whose formula is exact
arithmetic; others (a sigmoid, whose torch form is vectorised differently) hand g'(z) in as an array.

Arrays are indexed (batch, row, column, channel): a channels-last tensor's memory order, so the inner loop
runs over contiguous channels; an NCHW tensor is passed as a permuted view (correct, slower).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# forward kinds: f(z)
HEAVISIDE, RELU, LINEAR = 0, 1, 2
# backward kinds: g'(z) (a, b: the kind's two float32 parameters)
ONE = 0  # 1: no product at all, as the fused const backward returns the gradient as it is
WINDOW = 1  # b where |z| <= a, else 0 (rect: a = w/2, b = 1/w; ste: a = 1, b = 1)
POSITIVE = 2  # 1 where z > 0, else 0 (relu's own derivative)
TRIANG = 3  # max(1 - 2|z| / a, 0) * b (a = w, b = 2/w)
GIVEN = 4  # the array g computed by torch


@njit(inline="always")
def _f(v, kind):  # pragma: no cover - compiled
    if kind == HEAVISIDE:
        return np.float32(1) if v >= 0 else np.float32(0)
    if kind == RELU:
        return np.float32(0) if v < 0 else v  # clamp_min(v, 0): -0.0 and NaN pass
    return v


@njit(inline="always")
def _g(v, kind, a, b):  # pragma: no cover - compiled
    if kind == WINDOW:
        return b if abs(v) <= a else np.float32(0)
    if kind == POSITIVE:
        return np.float32(1) if v > 0 else np.float32(0)
    u = np.float32(1) - np.float32(2) * abs(v) / a  # TRIANG
    return (np.float32(0) if u < 0 else u) * b  # clamp(min=0): NaN passes


@njit(parallel=True, cache=True)
def activation_pool_forward(z, fkind, k, s):  # pragma: no cover - compiled
    """Per k x k window and channel: s = (sum of f(z)^2, row by row) / k^2, the pool's mean of squares (its
    square root is torch's to take: torch's vectorised sqrt is not IEEE's correctly rounded one).
    z: (N, H, W, C); s: (N, H/k, W/k, C), float32."""
    n, h, w, c = z.shape
    kk = np.float32(k * k)
    for b in prange(n):
        acc = np.empty(c, np.float32)
        for i in range(h // k):
            for j in range(w // k):
                acc[:] = 0
                for a in range(k):
                    for e in range(k):
                        for ch in range(c):
                            x = _f(z[b, i * k + a, j * k + e, ch], fkind)
                            acc[ch] += x * x
                for ch in range(c):
                    s[b, i, j, ch] = acc[ch] / kk


@njit(parallel=True, cache=True)
def activation_pool_backward(grad, z, s, y, floor, fkind, gkind, ga, gb, given, k, out):  # pragma: no cover
    """out = (x' + x') * g'(z), x' = (share + 0) * f(z), share = (grad / (2 y), 0 where s < floor) / k^2: each
    operation rounded to float32 as autograd's separate ones are (the + 0 is avg_pool2d_backward's accumulation,
    x' + x' the two products of x * x). grad, s, y: (N, H/k, W/k, C); z, out (and given, for GIVEN): (N, H, W, C)."""
    n, h, w, c = out.shape
    two, kk = np.float32(2), np.float32(k * k)
    for b in prange(n):
        share = np.empty(c, np.float32)
        for i in range(h // k):
            for j in range(w // k):
                for ch in range(c):
                    g = grad[b, i, j, ch] / (two * y[b, i, j, ch])
                    if not s[b, i, j, ch] >= floor:
                        g = np.float32(0)
                    share[ch] = g / kk + np.float32(0)
                for a in range(k):
                    for e in range(k):
                        r, q = i * k + a, j * k + e
                        for ch in range(c):
                            v = z[b, r, q, ch]
                            gx = share[ch] * _f(v, fkind)
                            gx = gx + gx
                            if gkind == GIVEN:
                                gx = gx * given[b, r, q, ch]
                            elif gkind != ONE:
                                gx = gx * _g(v, gkind, ga, gb)
                            out[b, r, q, ch] = gx
