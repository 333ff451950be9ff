"""Binary-weight layers (BinaryConnect) and the small fixed modules the models are built from.

``BinaryLinear`` and ``BinaryConv2d`` are the torch layers with one override: the forward
pass uses sign(w) in {-1, +1} (sign(0) = +1) in place of the latent float weight w, and the
backward pass is the clipped straight-through estimator dL/dw = dL/dsign(w) * 1{|w| <= 1}
(Courbariaux et al. 2015, BinaryConnect). The latent weights are kept in [-1, 1] by
``clip_latent_weights`` after every optimiser step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnn_runtime.bits import sign_is_positive


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(w)
        return torch.where(sign_is_positive(w), 1.0, -1.0).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype)


def binarize(w: Tensor) -> Tensor:
    """sign(w) in {-1, +1} with sign(0) = +1; straight-through gradient clipped at |w| > 1."""
    return _SignSTE.apply(w)


class BinaryLinear(nn.Linear):
    """``nn.Linear`` whose forward uses binarize(weight)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, binarize(self.weight), self.bias)


class BinaryConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose forward uses binarize(weight)."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, binarize(self.weight), self.bias)


BINARY_LAYERS = (BinaryLinear, BinaryConv2d)


@torch.no_grad()
def clip_latent_weights(model: nn.Module) -> None:
    """Keep the latent weights of every binary layer in [-1, 1] (BinaryConnect)."""
    for m in model.modules():
        if isinstance(m, BINARY_LAYERS):
            m.weight.clamp_(-1.0, 1.0)


class Scale(nn.Module):
    """y = c * x for a fixed positive constant c (a buffer, saved in the checkpoint).

    Used after binary layers without BatchNorm so that sums of +-1 terms keep the scale of a
    standard initialisation (c = 1/sqrt(fan_in)); being positive, it folds into thresholds.
    """

    def __init__(self, c: float):
        super().__init__()
        if not c > 0:
            raise ValueError(f"Scale needs a positive constant, got {c}")
        self.register_buffer("c", torch.tensor(float(c)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.c

    def extra_repr(self) -> str:
        return f"c={float(self.c):.6g}"


class InputScale(Scale):
    """The first module of every model: raw input values (uint8 pixels as float) times 1/max_value.

    Only a positive scale, no mean shift: a zero-padded first convolution then pads with
    pixel value 0, so the exported first layer stays exact in integers.
    """


QUAD_MEAN_FLOOR = 1e-12  # the pool's floor under the mean of squares: a finite gradient where a window is all 0


class QuadMeanPool2d(nn.Module):
    """Quadratic-mean pooling, sqrt(mean(x^2)) over k x k windows (the paper's LeNet-5, §4.1)."""

    def __init__(self, kernel_size: int = 2):
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x * x, self.kernel_size).clamp_min(QUAD_MEAN_FLOOR).sqrt()  # sqrt'(0) = inf

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"
