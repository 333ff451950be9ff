"""A minimal edge application: classify images with a .bnn model using only numpy and numba (Pillow for image files).

    python edge_app.py MODEL.bnn batch.npy            # a .npy batch of uint8 pixels, (N, H, W) or (N, C, H, W)
    python edge_app.py MODEL.bnn digit.png other.png  # image files, the model's size (needs Pillow)
"""

import sys
from pathlib import Path

import numpy as np

import bnn_runtime


def read(paths: list[str], channels: int) -> tuple[list[str], np.ndarray]:
    if len(paths) == 1 and paths[0].endswith(".npy"):
        x = np.load(paths[0], allow_pickle=False)
        return [str(i) for i in range(len(x))], x
    from PIL import Image  # only image files need Pillow

    images = [np.asarray(Image.open(p).convert("L" if channels == 1 else "RGB")) for p in paths]
    return [Path(p).name for p in paths], np.stack([im[None] if im.ndim == 2 else im.transpose(2, 0, 1) for im in images])


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        model = bnn_runtime.load(argv[1])
        names, x = read(argv[2:], model.input_shape[0])
        labels = model.predict(x)  # validates x: a bad batch raises InputError, never crashes a kernel
    except (bnn_runtime.BnnError, OSError, ValueError) as e:  # BnnError: a bad file, batch or setting
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, k in zip(names, labels):
        print(f"{name}\t{model.classes[k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
