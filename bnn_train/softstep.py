"""Progressive binarisation (``--soft-step``): bit-valued activations train as ramps that narrow into steps.

For the first ``soft_step`` share of the epochs, every hidden Heaviside (or sign) activation
outputs, in training mode only, the ramp ``low + (high - low) * clamp(1/2 + z / 2w, 0, 1)``
instead of the step; its half-width ``w`` shrinks linearly, step by step, from 1 (the
``ste`` backward's window) to 0, where the ramp is the step itself. The backward pass stays
the run's g'. Evaluation, BatchNorm statistics and export always see the exact step, and the
rest of the schedule trains the exact network, so nothing changes in what is deployed.
"""

from __future__ import annotations

from torch import nn

from .activations import Activation

START_WIDTH = 1.0


def soft_width(share: float, epochs: int, epoch: int, step: int, steps: int) -> float:
    """Ramp half-width at ``step`` of ``steps`` in ``epoch`` (0-based): 1 -> 0 linearly over share * epochs."""
    if share <= 0:
        return 0.0
    progress = (epoch + step / steps) / (share * epochs)
    return START_WIDTH * max(0.0, 1.0 - progress)


def set_soft_width(model: nn.Module, width: float) -> None:
    """Set the ramp half-width of every activation of ``model`` (0: the exact forward)."""
    for m in model.modules():
        if isinstance(m, Activation):
            m.soft_width = width
