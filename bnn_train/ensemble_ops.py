"""Fused forms of an ensemble's elementwise layers: fewer passes over its large activations, the same numbers.

An ensemble's activations are K times a run's (conv1 of LeNet-5 at batch 256, K = 8: 9.6 M floats): what
costs is every pass over such a tensor and every fresh allocation of one. Autograd's generic forms make many
(the rectangle backward alone: abs, compare, convert, divide, multiply, each into a new tensor). These fused
forms compute bit for bit what the plain layers compute (tested in tests/test_ensemble_ops.py), in fewer
passes, with torch ops on any device (on the CPU, bnn_train/activation_pool.py's kernels do the activation
and the pool after it in fewer still):

* ``step_activation`` — an untied activation whose backward is a window (``rect``, ``ste``) or 1 (``const``):
  the window is evaluated in place into one float tensor; the heaviside forward writes its 0/1 floats directly.
* ``quad_mean_pool`` — sqrt(mean(x^2)) over k x k windows with a hand-written backward: the factor 2 of
  d(x^2)/dx applied to the pooled gradient (exact, a power of 2) instead of two full products and their sum.
* ``step_quad_mean_pool`` — the two in one, for a Heaviside forward (the paper's LeNet-5 in Table 14): the pool
  sees 0/1 values, so x^2 = x and the pool's input gradient is 0 wherever the step is 0; with the window the
  backward is one masked copy of the pooled gradient, and the step's 0/1 floats are never stored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .activations import Activation
from .layers import QUAD_MEAN_FLOOR

# backward name -> (half-width h, divisor w or None) of g'(z) = 1{|z| <= h} / w; None for h: g'(z) = 1
WINDOWS = {
    "rect": lambda p: (p.rect_width / 2, p.rect_width),
    "ste": lambda p: (1.0, None),
    "const": lambda p: (None, None),
}


def fusable(act: Activation) -> bool:
    """Whether ``step_activation`` computes ``act`` (its backward is a window or 1, and no ramp is on)."""
    return act.backward_name in WINDOWS and act.soft_width == 0


class _StepActivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, act: Activation) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.window = WINDOWS[act.backward_name](act.params)
        if act.forward_fn.name == "heaviside":  # H(z) = 1{z >= 0} as floats in one pass (sign_is_positive's rule)
            return torch.ge(z, 0, out=torch.empty_like(z))
        return act.forward_fn.fn(z, act.params)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        h, w = ctx.window
        if h is None:
            return grad, None  # grad * 1
        g = z.abs().le_(h)  # 1.0 / 0.0 in the float tensor abs made: (|z| <= h).to(dtype)
        if w is not None:
            g.div_(w)
        return grad * g, None


def step_activation(z: Tensor, act: Activation) -> Tensor:
    """``act(z)`` with a fused backward; ``act`` must be ``fusable``."""
    return _StepActivation.apply(z, act)


def _pooled_square_grad(grad: Tensor, s: Tensor, y: Tensor) -> Tensor:
    """The gradient of the pooled mean of squares s from that of y = sqrt(clamp_min(s, QUAD_MEAN_FLOOR)), times the 2 of
    d(x*x)/dx (exact; the x is the caller's), in autograd's order of operations."""
    gs = grad / (2 * y)  # sqrt's backward, as autograd writes it
    gs = torch.where(s >= QUAD_MEAN_FLOOR, gs, 0.0)  # clamp_min's
    return gs * 2


class _QuadMeanPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, k: int) -> Tensor:  # type: ignore[override]
        s = F.avg_pool2d(x * x, k)
        y = s.clamp_min(QUAD_MEAN_FLOOR).sqrt()
        ctx.save_for_backward(x, s, y)
        ctx.k = k
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, s, y = ctx.saved_tensors
        gs = _pooled_square_grad(grad, s, y)
        gx = torch.ops.aten.avg_pool2d_backward(gs, x, [ctx.k] * 2, [ctx.k] * 2, [0, 0], False, True, None)
        return gx.mul_(x), None


def quad_mean_pool(x: Tensor, k: int) -> Tensor:
    """``QuadMeanPool2d(k)(x)`` with a fused backward."""
    return _QuadMeanPool.apply(x, k)


def step_pools(act: Activation) -> bool:
    """Whether ``step_quad_mean_pool`` computes ``act`` followed by the quadratic-mean pool (a Heaviside forward
    with a window or constant backward)."""
    return fusable(act) and act.forward_fn.name == "heaviside"


class _StepQuadMeanPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, act: Activation, k: int) -> Tensor:  # type: ignore[override]
        on = torch.ge(z, 0, out=torch.empty_like(z))  # H(z) as 0/1 floats (sign_is_positive's rule) ...
        s = F.avg_pool2d(on, k)  # (x^2 = x)
        y = s.clamp_min(QUAD_MEAN_FLOOR).sqrt()
        half, divisor = WINDOWS[act.backward_name](act.params)
        if half is not None:  # ... times 1{|z| <= half}: 1 where a gradient reaches z (floats: faster than bools)
            on.mul_(torch.le(z, half, out=torch.empty_like(z)))
        ctx.save_for_backward(on, s, y)
        ctx.k, ctx.divisor = k, divisor
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        on, s, y = ctx.saved_tensors
        # avg_pool2d_backward's share of each window element (its division; exact for k = 2)
        gs = _pooled_square_grad(grad, s, y).div_(ctx.k * ctx.k)
        if ctx.divisor is not None:  # the window's height 1/w, rounded to the dtype first as the plain backward does
            gs.mul_(torch.ones((), dtype=gs.dtype).div_(ctx.divisor))
        # the share spread over its window (non-overlapping windows: one each; no zero-filled accumulation), masked
        return F.interpolate(gs, scale_factor=ctx.k, mode="nearest").mul_(on), None, None


def step_quad_mean_pool(z: Tensor, act: Activation, k: int) -> Tensor:
    """``QuadMeanPool2d(k)(act(z))`` with a fused forward and backward; ``act`` must pass ``step_pools`` and the
    height and width of ``z`` must be multiples of ``k`` (else use the two layers)."""
    return _StepQuadMeanPool.apply(z, act, k)
