"""Random-shift augmentation of a batch of raw images (``--augment-shift``).

Each image moves by its own (dy, dx), drawn uniformly from {-s, ..., s}, with zero fill: the
value a zero-padded first convolution sees outside the image, so the deployed network needs
nothing new. It works on the uint8 batch tensor on its device (one gather, no DataLoader).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_shift(x: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    """``x`` (N, C, H, W) with every image shifted by up to ``shift`` pixels in each direction."""
    if shift <= 0 or x.dim() != 4:
        return x
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * shift + 1, (2, n), generator=generator).to(x.device)
    padded = F.pad(x, (shift, shift, shift, shift))
    rows = offsets[0][:, None, None] + torch.arange(h, device=x.device)[None, :, None]  # (N, H, 1)
    cols = offsets[1][:, None, None] + torch.arange(w, device=x.device)[None, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # advanced indices first: (N, H, W, C)
