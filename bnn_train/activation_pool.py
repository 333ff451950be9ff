"""An untied activation and the quadratic-mean pool after it as one layer on the CPU: the same numbers, two passes.

``activation_quad_mean_pool(z, act, k)`` is ``QuadMeanPool2d(k)(act(z))`` computed by the numba kernels of
bnn_train/activation_pool_kernels.py: forward one pass over z to the pooled values, backward one pass from z to
dL/dz, nothing of z's size stored but z itself (which the conv made anyway). It serves the forwards and
backwards whose arithmetic the kernels repeat exactly (``pools_in_one``); a backward they do not write (the
logistic's derivative) is computed by torch's own function and handed in. Ensembles use it for float32 on the
CPU, where the elementwise passes between the convolutions cost as much as the convolutions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .activations import RANDOM_BACKWARDS, Activation
from .ensemble_ops import WINDOWS
from .layers import QUAD_MEAN_FLOOR

KERNEL_FORWARDS = ("heaviside", "relu", "linear")  # the kernels' kinds are these names in capitals


def pools_in_one(act: Activation) -> bool:
    """Whether ``activation_quad_mean_pool`` computes ``act`` followed by the pool: a forward the kernels write,
    a backward that is not random noise, no ramp."""
    return act.forward_fn.name in KERNEL_FORWARDS and act.backward_name not in RANDOM_BACKWARDS and act.soft_width == 0


def pools_evenly(z: Tensor, k: int) -> bool:
    """Whether ``z`` is (N, C, H, W) with H and W multiples of ``k``: every element in one window."""
    return z.dim() == 4 and z.shape[2] % k == 0 and z.shape[3] % k == 0


def runs_here(z: Tensor, k: int) -> bool:
    """Whether the kernels take ``z``: float32 on the CPU, pooled evenly."""
    return z.device.type == "cpu" and z.dtype == torch.float32 and pools_evenly(z, k)


def activation_quad_mean_pool(z: Tensor, act: Activation, k: int) -> Tensor:
    """``QuadMeanPool2d(k)(act(z))`` bit for bit; ``act`` must pass ``pools_in_one`` and ``z`` ``runs_here``."""
    return _ActivationQuadMeanPool.apply(z, act, k)


def _backward_kind(act: Activation) -> tuple[int, float, float]:
    """The kernels' g'(z) kind and its two float32 parameters, each rounded as the torch formula rounds it."""
    from . import activation_pool_kernels as kn

    name, forward, p = act.backward_name, act.forward_fn.name, act.params
    if name == "const" or (name == "tied" and forward == "linear"):
        return kn.ONE, 0.0, 0.0
    if name in WINDOWS:  # (|z| <= half) / divisor: the height as torch divides 1 by the divisor
        half, divisor = WINDOWS[name](p)
        return kn.WINDOW, half, 1.0 if divisor is None else (torch.ones((), dtype=torch.float32) / divisor).item()
    if name == "tied" and forward == "relu":
        return kn.POSITIVE, 0.0, 0.0
    if name == "triang":  # clamp(1 - 2|z| / w, min=0) * (2 / w), 2 / w rounded from a double
        return kn.TRIANG, p.triang_width, 2 / p.triang_width
    return kn.GIVEN, 0.0, 0.0


def _nhwc(t: Tensor) -> np.ndarray:
    """``t`` (N, C, H, W) as a NumPy view indexed (N, H, W, C): contiguous for a channels-last tensor."""
    return t.detach().permute(0, 2, 3, 1).numpy()


def _empty_like(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """An empty float32 tensor of ``shape`` in ``t``'s memory format (as torch's own layers return)."""
    cl = t.is_contiguous(memory_format=torch.channels_last)
    return torch.empty(shape, dtype=torch.float32, memory_format=torch.channels_last if cl else torch.contiguous_format)


def _same_threads_as_torch() -> None:
    """numba's parallel loops use as many threads as torch's (``--threads``, a Ray worker's CPUs), not all cores."""
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _forward_kind(act: Activation) -> int:
    from . import activation_pool_kernels as kn

    return getattr(kn, act.forward_fn.name.upper())


class _ActivationQuadMeanPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, act: Activation, k: int) -> Tensor:  # type: ignore[override]
        from . import activation_pool_kernels as kn  # numba compiles (or loads) on the first CPU ensemble only

        _same_threads_as_torch()
        n, c, h, w = z.shape
        s = _empty_like(z, (n, c, h // k, w // k))
        kn.activation_pool_forward(_nhwc(z), _forward_kind(act), k, _nhwc(s))
        y = s.clamp_min(QUAD_MEAN_FLOOR).sqrt()  # QuadMeanPool2d's floor and torch's sqrt, on a quarter of z's size
        ctx.save_for_backward(z, s, y)
        ctx.act, ctx.k = act, k
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        from . import activation_pool_kernels as kn

        _same_threads_as_torch()
        z, s, y = ctx.saved_tensors
        act = ctx.act
        kind, a, b = _backward_kind(act)
        if grad.shape != y.shape or grad.dtype != torch.float32:
            raise RuntimeError(
                f"activation_quad_mean_pool: gradient {tuple(grad.shape)} {grad.dtype} for {tuple(y.shape)}"
            )
        # g'(z) as torch computes it, for a backward the kernels do not write (else an unused placeholder)
        given = act.backward_fn(z, act.params, act.forward_fn) if kind == kn.GIVEN else z[:1, :1, :1, :1]
        out = _empty_like(z, tuple(z.shape))
        floor = np.float32(QUAD_MEAN_FLOOR)
        kn.activation_pool_backward(
            _nhwc(grad), _nhwc(z), _nhwc(s), _nhwc(y), floor, _forward_kind(act), kind, np.float32(a), np.float32(b),
            _nhwc(given), ctx.k, _nhwc(out),
        )  # fmt: skip
        return out, None, None
