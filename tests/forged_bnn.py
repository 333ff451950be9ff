"""Forged .bnn files with a valid checksum: hand-made manifests (any geometry, any field) over consistent arrays.

The container is documented, so anyone can forge one. These builders make the files a hostile
author would: a small model whose geometry asks for enormous scratch space, a first layer whose
sums overflow int32, any field replaced by an adversarial value -- always with a correct
checksum, so that only the manifest's validation stands between the file and the executors.
"""

from __future__ import annotations

import json
import zlib

import numpy as np

from bnn_runtime.bits import pack_signs
from bnn_runtime.format import HEADER, VERSION, assemble, to_bytes


def split(blob: bytes) -> tuple[dict, bytes]:
    """(manifest, array data) of a .bnn file's bytes."""
    _, _, _, m_len, _, _ = HEADER.unpack_from(blob)
    body = blob[HEADER.size :]
    return json.loads(zlib.decompress(body[:m_len])), body[m_len:]


def forge(manifest, data: bytes, raw_json: str | None = None) -> bytes:
    """A file with a valid checksum around any manifest (or any JSON text)."""
    text = raw_json if raw_json is not None else json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return assemble(zlib.compress(text.encode()), data)


def conv_then_dense(
    rng: np.random.Generator,
    c: int,
    h: int,
    w: int,
    kernel: tuple[int, int],
    padding: tuple[int, int],
    pool: tuple[int, int] | None,
    out: int,
    classes: int = 2,
    max_bits: int = 2**22,
    stride: tuple[int, int] | None = None,
) -> bytes:
    """input (c, h, w) -> conv (kernel, padding, optional OR pool) -> dense scores, with arrays that fit any geometry.

    Nothing is checked here: the geometry may be absurd (that is the point); the arrays are sized
    from the fan-ins so that only the manifest's numbers can be wrong -- up to ``max_bits`` weight bits per
    array (beyond that the arrays are smaller than the manifest says, which the reader must also refuse).
    """
    kh, kw = kernel
    ph, pw = padding
    sh, sw = stride or (1, 1)
    oh = (h + 2 * ph - kh) // sh + 1 if sh > 0 else 0
    ow = (w + 2 * pw - kw) // sw + 1 if sw > 0 else 0
    if pool:
        oh, ow = (oh // pool[0] if pool[0] > 0 else 0), (ow // pool[1] if pool[1] > 0 else 0)
    fan_in, dense_in = c * kh * kw, out * oh * ow
    conv = {
        "name": "c",
        "kind": "conv",
        "in_encoding": "uint8",
        "in_shape": [c, h, w],
        "kernel": [kh, kw],
        "padding": [ph, pw],
        "fan_in": fan_in,
        "out_features": out,
        "output": "threshold",
        "out_encoding": "01",
        "pool": {"kind": "or", "size": list(pool)} if pool else None,
        "out_shape": [out, oh, ow],
        "arrays": {"weight": "c.weight", "threshold": "c.threshold", "direction": "c.direction"},
    }
    if stride is not None:
        conv["stride"] = list(stride)
    dense = {
        "name": "d",
        "kind": "dense",
        "in_encoding": "01",
        "in_shape": [dense_in],
        "fan_in": dense_in,
        "out_features": classes,
        "output": "scores",
        "pool": None,
        "out_shape": [classes],
        "arrays": {"weight": "d.weight", "scale": "d.scale", "offset": "d.offset"},
    }

    def signs(rows: int, cols: int) -> np.ndarray:
        rows = min(max(rows, 1), max_bits)
        return pack_signs(rng.choice(np.array([-1, 1], np.int8), (rows, min(max(cols, 0), max_bits // rows))))

    n_out = min(max(out, 1), max_bits)
    arrays = {
        "c.weight": signs(out, fan_in),
        "c.threshold": rng.integers(-50, 50, n_out).astype(np.int32),
        "c.direction": np.ones(n_out, np.int8),
        "d.weight": signs(classes, dense_in),
        "d.scale": np.ones(classes),
        "d.offset": np.zeros(classes),
    }
    manifest = {
        "format": "bnn",
        "version": VERSION,
        "input": {"dtype": "uint8", "shape": [c, h, w]},
        "classes": [f"k{i}" for i in range(classes)],
        "layers": [conv, dense],
        "provenance": {},
    }
    return to_bytes(manifest, arrays)


def dense_u8(fan_in: int, out: int = 2) -> bytes:
    """One dense scores layer on uint8 input of ``fan_in`` values, weights all +1."""
    layer = {
        "name": "d",
        "kind": "dense",
        "in_encoding": "uint8",
        "in_shape": [fan_in],
        "fan_in": fan_in,
        "out_features": out,
        "output": "scores",
        "pool": None,
        "out_shape": [out],
        "arrays": {"weight": "d.weight", "scale": "d.scale", "offset": "d.offset"},
    }
    arrays = {
        "d.weight": pack_signs(np.ones((out, fan_in), np.int8)),
        "d.scale": np.ones(out),
        "d.offset": np.zeros(out),
    }
    manifest = {
        "format": "bnn",
        "version": VERSION,
        "input": {"dtype": "uint8", "shape": [fan_in]},
        "classes": [f"k{i}" for i in range(out)],
        "layers": [layer],
        "provenance": {},
    }
    return to_bytes(manifest, arrays)
