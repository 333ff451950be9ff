"""Image files -> uint8 pixel arrays for a model: every mode converted to the model's channels, or one clear error.

Pillow's own conversion to 8 bits clips a 16-bit image to 0/255 (``convert("L")`` of mode
``I;16``); here 16-bit values are scaled (``round(v / 257)``, exact for 8-bit values stored in
16 bits). Palette, bilevel, alpha, CMYK and other modes go through Pillow's conversion, which
maps them correctly. The size is checked from the header before any pixel is decoded, so a
decompression bomb is refused without decoding it (and Pillow's own bomb limit becomes one line).
"""

from __future__ import annotations

from pathlib import Path

from bnn_runtime.errors import dims

from .common import CliError

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def pillow():
    try:
        from PIL import Image
    except ImportError:
        raise CliError(
            "reading image files needs Pillow: pip install 'untied-bnn[images]' (or pass a .npy batch with --npy)"
        ) from None
    return Image


def _to_8bit(im, channels: int):
    import numpy as np

    if im.mode in SIXTEEN_BIT_MODES:
        v = np.asarray(im).astype(np.int64)
        if v.size and (v.min() < 0 or v.max() > 65535):
            raise CliError(f"32-bit integer pixels ({v.min()}..{v.max()}) have no 8-bit meaning")
        gray = np.round(v / 257).astype(np.uint8)
        return gray if channels == 1 else np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        raise CliError("floating-point pixels have no 8-bit meaning; save the image with 8 or 16 bits per channel")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return np.asarray(im.convert("L" if channels == 1 else "RGB"))


def read_image(path: Path, input_shape: tuple[int, ...]):
    """(C, H, W) uint8 pixels of one image file for a model taking ``input_shape``; CliError naming the path."""
    from bnn_runtime.fileio import special_file

    Image = pillow()
    c, h, w = input_shape
    if special_file(path):  # a pipe would block the read forever
        raise CliError(f"{path}: not a regular file (a device, pipe or socket), not an image")
    try:
        with Image.open(path) as im:
            if im.size != (w, h):  # from the header: nothing decoded yet
                raise CliError(f"the image is {dims(im.size[1], im.size[0])} (H×W), the model takes {dims(h, w)}")
            im.load()
            arr = _to_8bit(im, c)
    except CliError as e:
        raise CliError(f"{path}: {e}") from None
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, not an image") from None
    except Image.DecompressionBombError as e:
        raise CliError(f"{path}: refused as a possible decompression bomb ({e})") from None
    except Exception as e:  # a hostile file can make any decoder raise anything: it is this file's problem
        raise CliError(f"{path}: cannot decode the image ({type(e).__name__}: {e})") from None
    return arr[None] if c == 1 else arr.transpose(2, 0, 1)
