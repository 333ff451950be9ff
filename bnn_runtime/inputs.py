"""Input validation shared by every executor: a batch becomes a C-contiguous uint8 array or an InputError.

Accepted: a batch of shape (N, *input_shape), or (N, H, W) for single-channel image models.
uint8 is taken as is; other integer or float dtypes are accepted when every value is an
integer pixel value in 0..255 (floats must be finite). Anything else is refused with a
message naming the problem: no kernel ever sees a bad array.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError, dims


def prepare_input(x, input_shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(x, (list, tuple)):
        try:
            x = np.asarray(x)
        except ValueError as e:
            raise InputError(f"input is not a rectangular array ({e})") from None
    if not isinstance(x, np.ndarray):
        raise InputError(f"input must be a numpy array, got {type(x).__name__}")
    want = tuple(input_shape)
    shape = x.shape
    if len(want) == 3 and want[0] == 1 and x.ndim == 3:  # (N, H, W) for a single-channel model
        if shape[1:] != want[1:]:
            raise InputError(f"input images are {dims(*shape[1:])} (H×W), the model takes {dims(*want[1:])}")
        x = x[:, None]
    elif x.ndim != len(want) + 1:
        expected = f"(N, {', '.join(map(str, want))})" + (
            f" or (N, {want[1]}, {want[2]})" if len(want) == 3 and want[0] == 1 else ""
        )
        raise InputError(f"input has shape {shape}; the model takes a batch {expected}")
    elif x.shape[1:] != want:
        if len(want) == 3 and x.shape[1] != want[0]:
            raise InputError(f"input has {x.shape[1]} channels, the model takes {want[0]}")
        if len(want) == 3:
            raise InputError(f"input images are {dims(*x.shape[2:])} (H×W), the model takes {dims(*want[1:])}")
        raise InputError(f"input vectors have {x.shape[1]} values, the model takes {want[0]}")
    if x.shape[0] == 0:
        raise InputError("empty batch: the input has no samples")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind == "f":
        if np.isnan(x).any():
            raise InputError("input contains NaN")
        if not np.isfinite(x).all():
            raise InputError("input contains infinite values")
        if (x != np.round(x)).any():
            raise InputError("float input must hold integer pixel values 0..255 (scale [0, 1] images by 255)")
    elif x.dtype.kind not in "iub":
        raise InputError(f"input dtype {x.dtype} is not numeric; pass uint8 pixel values")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise InputError(f"input values must lie in 0..255, got {x.min()}..{x.max()}")
    return np.ascontiguousarray(x, dtype=np.uint8)
