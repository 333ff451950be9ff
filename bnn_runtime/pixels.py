"""What a model's input is -- value range, layout, colour -- as its manifest says, and 8-bit images converted to it.

The manifest's ``input`` may describe the values the model was trained on (optional keys, in
every format version; docs/FORMAT.md):

* ``range``: ``[lo, hi]``, the integer input values of the training data (Digits ``[0, 16]``,
  MNIST ``[0, 255]``, the synthetic ``ones`` task ``[0, 1]``);
* ``layout``: ``"CHW"`` for images (channel, row, column; a batch puts N in front) or ``"D"``
  for vectors;
* ``color``: ``"L"`` (one grey channel) or ``"RGB"`` (three channels in that order), images only.

A file without them keeps the behaviour of version-1 files: values are taken as they come
(0..255), a one-channel model reads grey images and a three-channel one RGB images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BnnFormatError, InputError

PIXEL_MAX = 255  # an 8-bit image file's largest value
LAYOUTS = {3: "CHW", 1: "D"}  # the layout of an input shape, by its number of axes
COLORS = {1: "L", 3: "RGB"}  # the colour of an image, by its channel count


@dataclass(frozen=True)
class InputSpec:
    """The input a model takes: ``shape`` (C, H, W) or (D,), the value ``range``, ``layout`` and ``color``."""

    shape: tuple[int, ...]
    range: tuple[int, int] = (0, PIXEL_MAX)
    layout: str = "CHW"
    color: str | None = None
    described: bool = False  # whether the manifest states the range (else: 0..255, as version-1 files)

    @classmethod
    def default(cls, shape: tuple[int, ...]) -> InputSpec:
        """What a file that says nothing about its input is taken to expect (version-1 behaviour)."""
        shape = tuple(shape)
        return cls(shape, (0, PIXEL_MAX), LAYOUTS[len(shape)], COLORS.get(shape[0]) if len(shape) == 3 else None)

    @classmethod
    def for_data(cls, shape: tuple[int, ...], max_value: int) -> InputSpec:
        """The description the exporter writes for a dataset whose values run from 0 to ``max_value``."""
        base = cls.default(shape)
        return cls(base.shape, (0, int(max_value)), base.layout, base.color, described=True)

    @classmethod
    def from_manifest(cls, inp: dict) -> InputSpec:
        """Read and check the optional keys of a manifest's ``input``, each on its own (BnnFormatError naming it).

        ``layout`` and ``color`` follow from the shape; a file may state them, and if it does they must agree."""
        base = cls.default(tuple(inp["shape"]))
        if "layout" in inp and inp["layout"] != base.layout:
            raise BnnFormatError(
                f"input.layout must be {base.layout!r} for shape {list(base.shape)}, got {inp['layout']!r}"
            )
        if "color" in inp and inp["color"] != base.color:
            want = repr(base.color) if base.color else "absent (the input is not an image)"
            raise BnnFormatError(f"input.color must be {want} for shape {list(base.shape)}, got {inp['color']!r}")
        if "range" not in inp:
            return base
        lo_hi = inp["range"]
        if (
            not isinstance(lo_hi, list)
            or len(lo_hi) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in lo_hi)
            or not 0 <= lo_hi[0] < lo_hi[1] <= PIXEL_MAX
        ):
            raise BnnFormatError(f"input.range must be [lo, hi] with 0 <= lo < hi <= {PIXEL_MAX}, got {lo_hi!r}")
        return cls(base.shape, (lo_hi[0], lo_hi[1]), base.layout, base.color, described=True)

    def manifest_fields(self) -> dict:
        """The optional ``input`` keys that describe this spec (none for the default of an undescribed file)."""
        if not self.described:
            return {}
        fields = {"range": list(self.range), "layout": self.layout}
        return {**fields, "color": self.color} if self.color else fields

    @property
    def is_image(self) -> bool:
        return self.color is not None

    def from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """8-bit image values (0..255, uint8) -> the model's range, ``lo + round(x * (hi - lo) / 255)`` in integers.

        A model trained on 0..255 gets the images unchanged; a Digits model (0..16) gets
        ``round(x * 16 / 255)``: 255 -> 16, 128 -> 8, 0 -> 0.
        """
        x = np.asarray(pixels)
        if x.dtype != np.uint8:
            raise InputError(f"image pixels must be uint8 (0..{PIXEL_MAX}), got {x.dtype}")
        lo, hi = self.range
        if (lo, hi) == (0, PIXEL_MAX):
            return x
        span = hi - lo
        return (lo + (x.astype(np.int32) * span + PIXEL_MAX // 2) // PIXEL_MAX).astype(np.uint8)

    def describe(self) -> str:
        """One phrase for messages: ``1×28×28 grey images, values 0..255``."""
        dims = "×".join(map(str, self.shape))
        kind = {"L": "grey images", "RGB": "RGB images"}.get(self.color or "")
        kind = kind or ("vectors" if self.layout == "D" else "arrays")
        return f"{dims} {kind}, values {self.range[0]}..{self.range[1]}"


__all__ = ["InputSpec", "PIXEL_MAX"]
