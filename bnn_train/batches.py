"""How a pass over ``n`` samples is cut into mini-batches: ``batch_slices``, one rule for every train-mode pass.

Consecutive slices of ``batch_size`` samples; a last slice shorter than ``MIN_BATCH`` joins the
one before it. BatchNorm in train mode needs at least two values per channel to compute a
variance (torch refuses a batch of one), so a training set of 33 samples in batches of 32 is
one batch of 33, not 32 + 1. With ``batch_size`` 1 (refused with BatchNorm) every batch stays
one sample. Training (``train.train_one_epoch``, ``ensemble_fit._train_epoch``), BatchNorm
re-estimation (``train.recompute_batchnorm``) and the training-speed warm-up all cut their
batches here, so an ensemble member sees exactly the batches of its one-at-a-time run.
"""

from __future__ import annotations

MIN_BATCH = 2  # the fewest samples BatchNorm normalises in train mode


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """The mini-batches of a pass over ``n`` samples; the last has ``MIN_BATCH`` or more when n, batch_size >= 2."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < MIN_BATCH <= batch_size:
        starts.pop()  # the short remainder joins the batch before it
    return [slice(a, b) for a, b in zip(starts, [*starts[1:], n], strict=False)]  # n == 0: no batch
