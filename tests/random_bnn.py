"""Random valid .bnn files built directly from the format (no PyTorch): any layer stack docs/FORMAT.md allows.

Covers layouts ``bnn train`` never makes -- convolutions without pooling, 3x2 pools, zero-padded
convolutions of 01 bits, pm1 convolutions, thresholds on either side, constant channels, a
first dense layer on a flattened image, conv -> conv -> dense -- so that the runtime's
re-packing is tested beyond the three models of the paper. Thresholds are drawn around the
spread of the sums so that bits actually vary.
"""

from __future__ import annotations

import numpy as np

from bnn_runtime.bits import pack_signs
from bnn_runtime.format import BnnFile, parse, to_bytes


def _thresholds(rng, n_out: int, spread: float, bound: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.round(rng.normal(0, max(spread, 1.0), n_out)).astype(np.int64)
    t[rng.random(n_out) < 0.05] = -bound - 1  # constant 1
    t[rng.random(n_out) < 0.05] = bound + 1  # constant 0
    d = rng.choice(np.array([-1, 1], np.int8), n_out)
    return t.astype(np.int32), d


def manifest(shape, layers: list[dict], test: str, version: int = 2) -> dict:
    """The manifest of a test's .bnn: uint8 input of ``shape``, ``layers``, classes c0, c1, ... (one per output of
    the last layer), the test's name as provenance."""
    return {
        "format": "bnn",
        "version": version,
        "input": {"dtype": "uint8", "shape": list(shape)},
        "classes": [f"c{k}" for k in range(layers[-1]["out_features"])],
        "layers": layers,
        "provenance": {"test": test},
    }


def random_bnn(rng: np.random.Generator, max_layers: int = 4) -> tuple[BnnFile, bytes]:
    """A random model: an optional conv stage (1-2 convs), then 0-2 hidden dense layers, then scores."""
    image = rng.random() < 0.7
    if image:
        c, h, w = int(rng.integers(1, 4)), int(rng.integers(5, 15)), int(rng.integers(5, 15))
        shape: tuple[int, ...] = (c, h, w)
    else:
        shape = (int(rng.integers(1, 150)),)
    n_classes = int(rng.integers(2, 7))
    layers, arrays, enc, cur = [], {}, "uint8", shape
    n_conv = int(rng.integers(0, 3)) if image else 0
    n_dense = int(rng.integers(0, max_layers - n_conv)) if max_layers > n_conv else 0
    for i in range(n_conv + n_dense + 1):
        name = f"l{i}"
        last = i == n_conv + n_dense
        conv = i < n_conv
        out = n_classes if last else int(rng.choice([1, 3, 5, 8, 17, 64, 65, 70]))
        layer = {"name": name, "in_encoding": enc, "in_shape": list(cur), "out_features": out}
        if conv:
            c, h, w = cur
            kh, kw = int(rng.integers(1, min(h, 5) + 1)), int(rng.integers(1, min(w, 5) + 1))
            ph, pw = (0, 0) if enc == "pm1" else (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
            oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
            pool = None
            if rng.random() < 0.6:
                sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
                if oh // sh >= 1 and ow // sw >= 1:
                    pool = {"kind": "or", "size": [sh, sw]}
                    oh, ow = oh // sh, ow // sw
            fan_in = c * kh * kw
            layer.update(kind="conv", kernel=[kh, kw], padding=[ph, pw], pool=pool)
            cur = (out, oh, ow)
        else:
            fan_in = int(np.prod(cur))
            layer.update(kind="dense", pool=None, in_shape=[fan_in])
            cur = (out,)
        signs = rng.choice(np.array([-1, 1], np.int8), (out, fan_in))
        arrays[f"{name}.weight"] = pack_signs(signs)
        bound = (255 if enc == "uint8" else 1) * fan_in
        spread = np.sqrt(fan_in) * (147 if enc == "uint8" else 0.7)
        layer.update(fan_in=fan_in, out_shape=list(cur))
        if last:
            layer.update(
                output="scores",
                arrays={"weight": f"{name}.weight", "scale": f"{name}.scale", "offset": f"{name}.offset"},
            )
            scale = rng.normal(0, 1, out)
            scale[rng.random(out) < 0.2] = 1.0
            arrays[f"{name}.scale"] = scale
            arrays[f"{name}.offset"] = rng.normal(0, 2, out)
        else:
            t, d = _thresholds(rng, out, spread, bound)
            enc = str(rng.choice(["01", "pm1"]))
            if conv and i + 1 < n_conv and enc == "pm1" and rng.random() < 0.5:
                enc = "01"
            layer.update(
                output="threshold",
                out_encoding=enc,
                arrays={"weight": f"{name}.weight", "threshold": f"{name}.threshold", "direction": f"{name}.direction"},
            )
            arrays[f"{name}.threshold"] = t
            arrays[f"{name}.direction"] = d
        layers.append(layer)
    data = to_bytes(manifest(shape, layers, "random_bnn", version=1), arrays)  # (the last layer: n_classes outputs)
    return parse(data), data
