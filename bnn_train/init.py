"""Weight initialisations selectable with ``--init``.

``diag_noise`` follows the signal-preserving initialisation for odd-sigmoid activations
(Lee, Choi, Kim; arXiv 2509.23085) in the authors' published tanh form, the closed form of the
newer paper being unavailable: ``W = D + Z``, ``Z ~ N(0, sigma_z^2)``,
``sigma_z = alpha / sqrt(fan_in)``, ``alpha = 0.085``; ``D`` (out x in) is the truncated
identity when out <= in and ``D_ij = 1 iff j = i mod in`` when out > in; biases 0.
Convolutions use the same rule on channels with a centred identity (Dirac) kernel and noise
scaled by ``1/sqrt(C_in * k_h * k_w)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import clip_latent_weights

DIAG_NOISE_ALPHA = 0.085


@torch.no_grad()
def diag_noise_(weight: torch.Tensor, alpha: float = DIAG_NOISE_ALPHA) -> torch.Tensor:
    """In place: weight = D + N(0, (alpha/sqrt(fan_in))^2) for a linear (out, in) or conv (out, in, kh, kw) weight."""
    out_f, in_f = weight.shape[:2]
    fan_in = weight[0].numel()
    weight.normal_(0.0, alpha / math.sqrt(fan_in))
    rows = torch.arange(out_f)
    cols = rows % in_f
    if weight.dim() == 2:
        weight[rows, cols] += 1.0
    else:
        kh, kw = weight.shape[2:]
        weight[rows, cols, kh // 2, kw // 2] += 1.0
    return weight


def _init_layer(m: nn.Module, kind: str) -> None:
    w = m.weight
    if kind == "xavier":
        nn.init.xavier_uniform_(w)
    elif kind == "he":
        nn.init.kaiming_normal_(w, nonlinearity="relu")
    elif kind == "orthogonal":
        nn.init.orthogonal_(w)
    elif kind == "diag_noise":
        diag_noise_(w)
    else:  # pragma: no cover - validated by ModelConfig
        raise ValueError(kind)
    if m.bias is not None:
        nn.init.zeros_(m.bias)


def apply_init(model: nn.Module, kind: str) -> None:
    """Initialise every linear and conv layer of ``model``; ``default`` keeps torch's own."""
    if kind != "default":
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                _init_layer(m, kind)
    clip_latent_weights(model)
