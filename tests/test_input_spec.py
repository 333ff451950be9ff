"""The manifest's optional input description (range, layout, colour): read, checked, and used to scale 8-bit images.

No PyTorch here: these run on an edge install too (scripts/check_aarch64.sh).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnn_runtime.errors import BnnFormatError, InputError
from bnn_runtime.format import parse, to_bytes
from bnn_runtime.pixels import PIXEL_MAX, InputSpec

from .random_bnn import random_bnn


def with_input(data: bytes, **fields) -> bytes:
    """The same model with extra keys in its manifest's ``input``."""
    bnn = parse(data)
    manifest = {k: v for k, v in bnn.manifest.items() if k != "arrays"}
    return to_bytes({**manifest, "input": {**manifest["input"], **fields}}, dict(bnn.arrays))


def image_model(channels: int = 1) -> bytes:
    rng = np.random.default_rng(0)
    while True:
        bnn, data = random_bnn(rng)
        if len(bnn.input_shape) == 3 and bnn.input_shape[0] == channels:
            return data


@settings(max_examples=60, deadline=None)
@given(lo=st.integers(0, 254), span=st.integers(1, 255), seed=st.integers(0, 2**32 - 1))
def test_from_pixels_scales_0_255_onto_the_range(lo, span, seed):
    hi = min(lo + span, PIXEL_MAX)
    spec = InputSpec((1, 4, 4), (lo, hi), described=True)
    x = np.random.default_rng(seed).integers(0, 256, (3, 1, 4, 4), dtype=np.uint8)
    x.flat[:2] = (0, PIXEL_MAX)
    y = spec.from_pixels(x)
    assert y.dtype == np.uint8 and y.shape == x.shape
    expected = lo + np.floor(x.astype(np.float64) * (hi - lo) / PIXEL_MAX + 0.5)  # never a tie: 255 is odd
    assert np.array_equal(y, expected.astype(np.uint8))
    assert y.flat[0] == lo and y.flat[1] == hi
    ramp = spec.from_pixels(np.arange(256, dtype=np.uint8))
    assert np.all(np.diff(ramp.astype(int)) >= 0)


def test_digits_range_and_the_version_1_default():
    digits = InputSpec.for_data((1, 8, 8), 16)
    assert digits.from_pixels(np.array([0, 8, 128, 255], np.uint8)).tolist() == [0, 1, 8, 16]
    assert digits.manifest_fields() == {"range": [0, 16], "layout": "CHW", "color": "L"}
    assert InputSpec.for_data((3, 4, 4), 255).manifest_fields()["color"] == "RGB"
    assert InputSpec.for_data((20,), 1).manifest_fields() == {"range": [0, 1], "layout": "D"}
    old = InputSpec.default((1, 28, 28))
    x = np.arange(256, dtype=np.uint8)
    assert old.range == (0, 255) and not old.described and old.manifest_fields() == {}
    assert np.array_equal(old.from_pixels(x), x)
    with pytest.raises(InputError, match="uint8"):
        digits.from_pixels(x.astype(np.float32))


def test_the_description_is_written_and_read_back():
    data = with_input(image_model(), range=[0, 16], layout="CHW", color="L")
    bnn = parse(data)
    assert bnn.input_spec.range == (0, 16) and bnn.input_spec.described and bnn.input_spec.color == "L"
    assert parse(to_bytes({k: v for k, v in bnn.manifest.items() if k != "arrays"}, dict(bnn.arrays))) is not None
    assert parse(image_model()).input_spec == InputSpec.default(parse(image_model()).input_shape)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"range": [16, 0]}, "input.range must be [lo, hi]"),
        ({"range": [0, 256]}, "input.range must be [lo, hi]"),
        ({"range": [0.0, 16]}, "input.range must be [lo, hi]"),
        ({"range": [False, True]}, "input.range must be [lo, hi]"),
        ({"range": "0..16"}, "input.range must be [lo, hi]"),
        ({"range": [0, 16, 255]}, "input.range must be [lo, hi]"),
        ({"layout": "HWC"}, "input.layout must be 'CHW'"),
        ({"color": "RGB"}, "input.color must be 'L'"),
        ({"color": "BGR"}, "input.color must be 'L'"),
    ],
)
def test_a_bad_description_is_named(fields, message):
    with pytest.raises(BnnFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(with_input(image_model(), **fields))


def test_a_vector_model_has_no_colour():
    rng = np.random.default_rng(1)
    while True:
        bnn, data = random_bnn(rng)
        if len(bnn.input_shape) == 1:
            break
    assert parse(with_input(data, range=[0, 1], layout="D")).input_spec.range == (0, 1)
    with pytest.raises(BnnFormatError, match="input.color must be absent"):
        parse(with_input(data, color="L"))
    with pytest.raises(BnnFormatError, match="input.layout must be 'D'"):
        parse(with_input(data, layout="CHW"))
