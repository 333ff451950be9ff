"""Random-shift augmentation: each image is its own zero-filled shift by at most s pixels, reproducibly."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnn_train.augment import random_shift


def _shifted(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """img (C, H, W) moved by (dy, dx) with zero fill, written the slow way."""
    out = np.zeros_like(img)
    _, h, w = img.shape
    for r in range(h):
        for c in range(w):
            if 0 <= r - dy < h and 0 <= c - dx < w:
                out[:, r, c] = img[:, r - dy, c - dx]
    return out


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 5),
    c=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    shift=st.integers(1, 3),
    seed=st.integers(0, 2**31),
)
def test_every_image_is_a_zero_filled_shift_within_range(n, c, h, w, shift, seed):
    x = torch.randint(1, 256, (n, c, h, w), dtype=torch.uint8)  # no zeros: a shift is recognisable
    y = random_shift(x, shift, torch.Generator().manual_seed(seed))
    assert y.dtype == torch.uint8 and y.shape == x.shape
    for xi, yi in zip(x.numpy(), y.numpy(), strict=False):
        matches = [
            (dy, dx)
            for dy in range(-shift, shift + 1)
            for dx in range(-shift, shift + 1)
            if np.array_equal(_shifted(xi, dy, dx), yi)
        ]
        assert matches, "not a shift within range"


def test_shifts_cover_the_whole_range_and_are_reproducible():
    x = torch.zeros((400, 1, 5, 5), dtype=torch.uint8)
    x[:, :, 2, 2] = 255  # one bright pixel: its new position is the shift
    a = random_shift(x, 2, torch.Generator().manual_seed(7))
    b = random_shift(x, 2, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    positions = {tuple(np.argwhere(img[0].numpy())[0]) for img in a}
    assert positions == {(r, c) for r in range(5) for c in range(5)}  # every (dy, dx) in [-2, 2]^2 occurs


def test_zero_shift_and_vectors_pass_through():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 1, 6, 6), dtype=torch.uint8)
    assert random_shift(x, 0, g) is x
    v = torch.randint(0, 2, (3, 10), dtype=torch.uint8)
    assert random_shift(v, 2, g) is v  # the `ones` task has no pixels to move
