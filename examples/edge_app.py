"""A minimal edge application: classify images with a .bnn model using only numpy and numba (Pillow for image files).

    python edge_app.py MODEL.bnn batch.npy            # the model's input values, (N, H, W) or (N, C, H, W)
    python edge_app.py MODEL.bnn digit.png other.png  # 8-bit image files of the model's size (needs Pillow)

Image files are read in the model's colour and scaled from 0..255 to the value range its
manifest records (``model.input_spec``; e.g. 0..16 for a Digits model). Each line names the
input, the predicted class and its probability.
"""

import sys
from pathlib import Path

import numpy as np

import bnn_runtime


def read(paths: list[str], spec) -> tuple[list[str], np.ndarray]:
    if len(paths) == 1 and paths[0].endswith(".npy"):
        x = np.load(paths[0], allow_pickle=False)
        return [str(i) for i in range(len(x))], x
    from PIL import Image  # only image files need Pillow

    if not spec.is_image:
        raise ValueError(f"the model takes {spec.describe()}, not images: pass a .npy batch")
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(np.asarray(im.convert(spec.color)))
    pixels = np.stack([im[None] if im.ndim == 2 else im.transpose(2, 0, 1) for im in images])
    return [Path(p).name for p in paths], spec.from_pixels(pixels)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        model = bnn_runtime.load(argv[1])
        names, x = read(argv[2:], model.input_spec)
        probs = model.probabilities(x)  # validates x: a bad batch raises InputError, never crashes a kernel
    except (bnn_runtime.BnnError, OSError, ValueError) as e:  # BnnError: a bad file, batch or setting
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, p in zip(names, probs, strict=True):
        k = int(p.argmax())
        print(f"{name}\t{model.classes[k]}\t{p[k]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
