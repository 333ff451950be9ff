"""The .bnn container: read, validate and write (schema in docs/FORMAT.md).

::

    offset  size  field
    0       8     magic b"BNNMODEL"
    8       4     format version, uint32 little-endian (this module writes 2, reads 1 and 2)
    12      4     reserved, 0
    16      8     manifest length M, uint64 LE
    24      8     data length D, uint64 LE
    32      32    SHA-256 of the M + D bytes that follow
    64      M     manifest: zlib-compressed UTF-8 JSON, sorted keys, no whitespace
    64+M    D     array data, every array 8-byte aligned at its manifest offset

Nothing in the file is executed: arrays are read with ``np.frombuffer`` from the dtype,
shape and offset the manifest declares. ``read_bnn`` checks magic, version, reserved field,
length, checksum, then the manifest's schema (unknown keys are refused) and every array's dtype
and shape against the layer list, and the resources the geometry asks for (``limits``), and
raises ``BnnFormatError`` naming the first problem.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import limits
from .bits import n_words, padding_is_zero
from .errors import BnnFormatError, dims
from .fileio import atomic_write_bytes, special_file
from .pixels import InputSpec

MAGIC = b"BNNMODEL"
VERSION = 2  # 2 adds conv "stride" and pool "stride" (docs/FORMAT.md); a version-1 file reads as stride 1
READABLE_VERSIONS = (1, 2)
HEADER = struct.Struct("<8sIIQQ32s")  # magic, version, reserved, M, D, sha256
ALIGN = 8
MAX_MANIFEST = limits.MAX_MANIFEST_BYTES  # decompressed manifest bytes a reader accepts

ENCODINGS_OUT = ("01", "pm1")
# the keys each object of the manifest may have (anything else is refused, not ignored)
MANIFEST_KEYS = frozenset({"format", "version", "input", "classes", "layers", "arrays", "provenance"})
INPUT_KEYS = frozenset({"dtype", "shape", "range", "layout", "color"})  # the last three optional (pixels.py)
LAYER_KEYS = frozenset(
    {
        "name",
        "kind",
        "in_encoding",
        "in_shape",
        "kernel",
        "padding",
        "stride",
        "fan_in",
        "out_features",
        "output",
        "out_encoding",
        "pool",
        "out_shape",
        "arrays",
    }
)
POOL_KEYS = frozenset({"kind", "size", "stride"})
ARRAY_SPEC_KEYS = frozenset({"dtype", "shape", "offset"})
# dtype of each array a layer refers to
ARRAY_DTYPES = {
    "weight": np.dtype("<u8"),
    "threshold": np.dtype("<i4"),
    "direction": np.dtype("i1"),
    "scale": np.dtype("<f8"),
    "offset": np.dtype("<f8"),
}


@dataclass
class BnnFile:
    """A validated .bnn model: the manifest and its arrays (read-only numpy views)."""

    manifest: dict
    arrays: dict[str, np.ndarray]

    @property
    def layers(self) -> list[dict]:
        return self.manifest["layers"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["input"]["shape"])

    @property
    def input_spec(self) -> InputSpec:
        """Value range, layout and colour of the input (the defaults of version 1 where the file is silent)."""
        return InputSpec.from_manifest(self.manifest["input"])

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    def array(self, layer: dict, role: str) -> np.ndarray:
        return self.arrays[layer["arrays"][role]]


# --------------------------------------------------------------------------- writing


def _canonical_json(obj: Any) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return zlib.compress(text.encode(), 9)


def to_bytes(manifest: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise a model; the array table is (re)built here in sorted-name order: same model, same bytes."""
    table, blobs, offset = {}, [], 0
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        raw = a.astype(dtype, copy=False).tobytes()
        table[name] = {"dtype": dtype.str, "shape": list(a.shape), "offset": offset}
        pad = (-len(raw)) % ALIGN
        blobs.append(raw + b"\0" * pad)
        offset += len(raw) + pad
    manifest = {**manifest, "arrays": table}
    version = manifest.get("version", VERSION)
    return assemble(_canonical_json(manifest), b"".join(blobs), version if isinstance(version, int) else VERSION)


def assemble(manifest_bytes: bytes, data: bytes, version: int = VERSION) -> bytes:
    """Header + manifest + data, with the checksum computed here (also used by tests to forge edits).
    The header's version is the manifest's (so tests can still write version-1 files)."""
    digest = hashlib.sha256(manifest_bytes + data).digest()
    return HEADER.pack(MAGIC, version, 0, len(manifest_bytes), len(data), digest) + manifest_bytes + data


def write_bnn(path: str | Path, manifest: dict, arrays: dict[str, np.ndarray]) -> int:
    """Validate, then write atomically (temp file + rename); returns the file size."""
    data = to_bytes(manifest, arrays)
    parse(data, source=str(path))  # never write a file this reader would refuse
    atomic_write_bytes(path, data)
    return len(data)


# --------------------------------------------------------------------------- reading


def read_bnn(path: str | Path) -> BnnFile:
    """Read and fully validate a .bnn file."""
    path = Path(path)
    if special_file(path):
        raise BnnFormatError(f"{path}: not a regular file (a device, pipe or socket), not a .bnn file")
    try:
        if path.is_file() and path.stat().st_size > limits.MAX_FILE_BYTES:
            raise BnnFormatError(
                f"{path}: {path.stat().st_size} bytes, larger than a .bnn file may be ({limits.MAX_FILE_BYTES})"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise BnnFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BnnFormatError(f"{path}: is a directory, not a .bnn file") from None
    except OSError as e:
        raise BnnFormatError(f"{path}: cannot read ({e.strerror or e})") from None
    return parse(data, source=str(path))


def parse(data: bytes, source: str = "<bytes>") -> BnnFile:
    def fail(msg: str):
        raise BnnFormatError(f"{source}: {msg}")

    if len(data) < HEADER.size:
        if not data.startswith(MAGIC[: len(data)]) or not data:
            fail("not a .bnn file (bad magic)" if data else "empty file")
        fail(f"truncated: {len(data)} bytes, shorter than the {HEADER.size}-byte header")
    magic, version, reserved, m_len, d_len, digest = HEADER.unpack_from(data)
    if magic != MAGIC:
        fail("not a .bnn file (bad magic)")
    if version not in READABLE_VERSIONS:
        fail(
            f"unsupported .bnn format version {version}; this reader reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    if reserved != 0:
        fail(f"header reserved field is {reserved}, must be 0")
    expected = HEADER.size + m_len + d_len
    if len(data) < expected:
        fail(f"truncated: {len(data)} bytes, the header promises {expected}")
    if len(data) > expected:
        fail(f"{len(data) - expected} unexpected bytes after the end of the model")
    body = data[HEADER.size :]
    if hashlib.sha256(body).digest() != digest:
        fail("checksum mismatch: the file is corrupt")
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(body[:m_len], MAX_MANIFEST)
        if inflater.unconsumed_tail or not inflater.eof:
            fail("manifest is not a complete zlib stream (or is larger than 16 MiB)")
    except zlib.error as e:
        fail(f"manifest is not zlib-compressed JSON ({e})")
    try:
        return _validate(limits.load_manifest_json(text), body[m_len:], version, file_bytes=len(data))
    except BnnFormatError as e:
        fail(str(e))


class _Schema:
    """Small typed getters that raise BnnFormatError naming the field."""

    @staticmethod
    def get(obj: Any, key: str, kind: type | tuple, where: str):
        if not isinstance(obj, dict):
            raise BnnFormatError(f"{where} must be an object")
        if key not in obj:
            raise BnnFormatError(f"{where} has no {key!r}")
        value = obj[key]
        bad_bool = isinstance(value, bool) and kind in (int, float)
        if not isinstance(value, kind) or bad_bool:
            name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise BnnFormatError(f"{where}.{key} must be {name}, got {type(value).__name__}")
        return value

    @staticmethod
    def ints(
        obj: Any, key: str, where: str, length: int | None = None, minimum: int = 1, maximum: int = limits.MAX_SIZE
    ) -> tuple[int, ...]:
        value = _Schema.get(obj, key, list, where)
        if length is not None and len(value) != length:
            raise BnnFormatError(f"{where}.{key} must have {length} entries, got {len(value)}")
        if not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and minimum <= v <= maximum for v in value
        ):
            raise BnnFormatError(
                f"{where}.{key} must be a list of integers in [{minimum}, {maximum}], got {str(value)[:200]}"
            )
        return tuple(value)

    @staticmethod
    def size(obj: Any, key: str, where: str, minimum: int = 1) -> int:
        return limits.check_size(_Schema.get(obj, key, int, where), f"{where}.{key}", minimum)

    @staticmethod
    def keys(obj: dict, allowed: frozenset, where: str) -> None:
        unknown = set(obj) - allowed
        if unknown:
            raise BnnFormatError(
                f"{where} has unknown keys {sorted(unknown)[:5]} (allowed: {', '.join(sorted(allowed))})"
            )


def _read_arrays(table: Any, data: bytes) -> dict[str, np.ndarray]:
    if not isinstance(table, dict):
        raise BnnFormatError("manifest.arrays must be an object")
    arrays, end = {}, 0
    known = {d.str: d for d in ARRAY_DTYPES.values()}
    for name in sorted(table):
        where = f"array {name[:100]!r}"
        spec = table[name]
        dtype_str = _Schema.get(spec, "dtype", str, where)
        _Schema.keys(spec, ARRAY_SPEC_KEYS, where)
        if dtype_str not in known:  # never handed to np.dtype: only the format's own types are read
            raise BnnFormatError(f"{where} has dtype {dtype_str[:40]!r}, not one of {', '.join(sorted(known))}")
        dtype = known[dtype_str]
        shape = _Schema.ints(spec, "shape", where, minimum=0)
        if len(shape) > 2:
            raise BnnFormatError(f"{where}.shape has {len(shape)} dimensions, at most 2")
        offset = _Schema.get(spec, "offset", int, where)
        nbytes = dtype.itemsize * math.prod(shape)
        if offset != end:
            raise BnnFormatError(f"{where} starts at {offset}, expected {end} (arrays must be packed in name order)")
        if offset + nbytes > len(data):
            raise BnnFormatError(f"{where} runs past the end of the data")
        a = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
        arrays[name] = a
        end = offset + nbytes + (-nbytes) % ALIGN
    if end != len(data):
        raise BnnFormatError(f"{len(data) - end} bytes of data belong to no array")
    return arrays


def _conv_out(size: int, k: int, pad: int, stride: int = 1) -> int:
    return (size + 2 * pad - k) // stride + 1


def _check_resources(where: str, layer: dict, costs: list, out_spatial: tuple, fan_in: int, out: int) -> None:
    """Before any array of the layer is touched: its sums fit int32; its scratch and work join ``costs``."""
    limits.check_sum_bound(where, layer["in_encoding"], fan_in)
    conv = layer["kind"] == "conv"
    scratch, work = limits.layer_cost(
        tuple(layer["in_shape"]),
        layer["in_encoding"],
        out,
        fan_in,
        out_spatial if conv else None,
        tuple(layer["padding"]) if conv else (0, 0),
    )
    costs.append((where, scratch, work))


def _strides(obj: dict, where: str, version: int, default: tuple[int, int]) -> tuple[int, int]:
    """A layer's or pool's ``stride`` (format version 2); absent: ``default``, as every version-1 file."""
    if "stride" not in obj:
        return default
    if version < 2:
        raise BnnFormatError(f"{where}.stride needs format version 2, the file is version {version}")
    return _Schema.ints(obj, "stride", where, length=2)


def _conv_geometry(layer: dict, where: str, in_shape: tuple[int, ...], enc: str, version: int) -> tuple[int, int]:
    """(OH, OW) of a conv layer: kernel, padding and stride checked against its input."""
    c, h, w = in_shape
    kh, kw = _Schema.ints(layer, "kernel", where, length=2)
    ph, pw = _Schema.ints(layer, "padding", where, length=2, minimum=0)
    sh, sw = _strides(layer, where, version, (1, 1))
    if enc == "pm1" and (ph or pw):
        raise BnnFormatError(f"{where}: zero padding of a pm1 input is not supported in version {version}")
    oh, ow = _conv_out(h, kh, ph, sh), _conv_out(w, kw, pw, sw)
    if oh < 1 or ow < 1:
        raise BnnFormatError(f"{where}: kernel {dims(kh, kw)} does not fit its {dims(h, w)} input (H×W)")
    return oh, ow


def _pool_geometry(pool: dict, where: str, out_spatial: tuple[int, int], version: int) -> tuple[int, int]:
    """(OH, OW) after OR-pooling over windows of ``size`` at ``stride`` (default: size), no padding."""
    size = _Schema.ints(pool, "size", where, length=2)
    sh, sw = _strides(pool, where, version, size)
    pooled = (_conv_out(out_spatial[0], size[0], 0, sh), _conv_out(out_spatial[1], size[1], 0, sw))
    if min(pooled) < 1:
        raise BnnFormatError(f"{where}: pool {dims(*size)} does not fit the {dims(*out_spatial)} output (H×W)")
    return pooled


def _validate(manifest: Any, data: bytes, version: int, file_bytes: int) -> BnnFile:
    S = _Schema
    if not isinstance(manifest, dict):
        raise BnnFormatError("manifest must be a JSON object")
    S.keys(manifest, MANIFEST_KEYS, "manifest")
    if S.get(manifest, "format", str, "manifest") != "bnn":
        raise BnnFormatError("manifest.format is not 'bnn'")
    if S.get(manifest, "version", int, "manifest") != version:
        raise BnnFormatError(f"manifest.version {manifest['version']} disagrees with the header's {version}")
    inp = S.get(manifest, "input", dict, "manifest")
    S.keys(inp, INPUT_KEYS, "input")
    if S.get(inp, "dtype", str, "input") != "uint8":
        raise BnnFormatError(f"input.dtype must be 'uint8', got {inp['dtype'][:40]!r}")
    shape = S.ints(inp, "shape", "input")
    if len(shape) not in (1, 3):
        raise BnnFormatError(f"input.shape must be (D,) or (C, H, W), got {list(shape)}")
    InputSpec.from_manifest(inp)  # the optional range, layout and colour
    classes = S.get(manifest, "classes", list, "manifest")
    if len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise BnnFormatError("manifest.classes must be a list of at least two strings")
    limits.check_size(len(classes), "the number of classes", maximum=limits.MAX_CLASSES)
    if not isinstance(manifest.get("provenance", {}), dict):
        raise BnnFormatError("manifest.provenance must be an object")
    arrays = _read_arrays(S.get(manifest, "arrays", dict, "manifest"), data)
    layers = S.get(manifest, "layers", list, "manifest")
    if not layers:
        raise BnnFormatError("manifest.layers is empty")
    limits.check_size(len(layers), "the number of layers", maximum=limits.MAX_LAYERS)
    costs: list[tuple[str, int, int]] = []

    used: set[str] = set()
    names: set[str] = set()
    cur_shape, cur_enc = shape, "uint8"
    for i, layer in enumerate(layers):
        where = f"layers[{i}]"
        name = S.get(layer, "name", str, where)
        where = f"layer {name[:100]!r}"
        S.keys(layer, LAYER_KEYS, where)
        if name in names:
            raise BnnFormatError(f"{where} appears twice")
        names.add(name)
        kind = S.get(layer, "kind", str, where)
        enc = S.get(layer, "in_encoding", str, where)
        if enc != cur_enc:
            raise BnnFormatError(f"{where}.in_encoding is {enc[:40]!r} but its input is {cur_enc!r}")
        in_shape = S.ints(layer, "in_shape", where)
        last = i == len(layers) - 1
        if kind == "conv":
            if len(cur_shape) != 3 or in_shape != cur_shape:
                raise BnnFormatError(f"{where}.in_shape {list(in_shape)} does not match its input {list(cur_shape)}")
            oh, ow = _conv_geometry(layer, where, in_shape, enc, version)
            fan_in = in_shape[0] * math.prod(layer["kernel"])
        elif kind == "dense":
            n = math.prod(cur_shape)
            if in_shape != (n,):
                raise BnnFormatError(f"{where}.in_shape {list(in_shape)} does not match its flattened input ({n},)")
            fan_in = n
        else:
            raise BnnFormatError(f"{where}.kind {kind[:40]!r} is not 'conv' or 'dense'")
        if S.size(layer, "fan_in", where) != fan_in:
            raise BnnFormatError(f"{where}.fan_in is {layer['fan_in']}, its shapes give {fan_in}")
        out = S.size(layer, "out_features", where)
        out_spatial = (oh, ow) if kind == "conv" else ()
        _check_resources(where, layer, costs, out_spatial, fan_in, out)

        refs = S.get(layer, "arrays", dict, where)
        output = S.get(layer, "output", str, where)
        roles = {"threshold": ("weight", "threshold", "direction"), "scores": ("weight", "scale", "offset")}.get(output)
        if roles is None:
            raise BnnFormatError(f"{where}.output {output[:40]!r} is not 'threshold' or 'scores'")
        if output == "scores" and not last:
            raise BnnFormatError(f"{where} outputs scores but is not the last layer")
        if set(refs) != set(roles):
            raise BnnFormatError(f"{where}.arrays must name exactly {', '.join(roles)}")
        expect_shape = {"weight": (out, n_words(fan_in))}
        for role in roles:
            ref = refs[role]
            if not isinstance(ref, str) or ref not in arrays:
                raise BnnFormatError(f"{where}: array {str(ref)[:100]!r} ({role}) is missing")
            if ref in used:
                raise BnnFormatError(f"{where}: array {ref!r} is used twice")
            used.add(ref)
            a = arrays[ref]
            if a.dtype != ARRAY_DTYPES[role]:
                raise BnnFormatError(
                    f"{where}: {role} array {ref!r} has dtype {a.dtype.str}, expected {ARRAY_DTYPES[role].str}"
                )
            want = expect_shape.get(role, (out,))
            if a.shape != want:
                raise BnnFormatError(f"{where}: {role} array {ref!r} has shape {list(a.shape)}, expected {list(want)}")
        if not padding_is_zero(arrays[refs["weight"]], fan_in):
            raise BnnFormatError(f"{where}: weight padding bits beyond fan_in {fan_in} are not 0")

        if output == "threshold":
            cur_enc = S.get(layer, "out_encoding", str, where)
            if cur_enc not in ENCODINGS_OUT:
                raise BnnFormatError(f"{where}.out_encoding must be '01' or 'pm1', got {cur_enc[:40]!r}")
            if not np.isin(arrays[refs["direction"]], (-1, 1)).all():
                raise BnnFormatError(f"{where}: direction values must be -1 or +1")
            pool = layer.get("pool")
            if pool is not None:
                if kind != "conv":
                    raise BnnFormatError(f"{where}: only conv layers can pool")
                if S.get(pool, "kind", str, f"{where}.pool") != "or":
                    raise BnnFormatError(f"{where}.pool.kind must be 'or'")
                S.keys(pool, POOL_KEYS, f"{where}.pool")
                out_spatial = _pool_geometry(pool, f"{where}.pool", out_spatial, version)
            if last and (out != 1 or len(classes) != 2):
                raise BnnFormatError(f"{where}: a network ending in a threshold must have 1 unit and 2 classes")
        else:
            if layer.get("pool") is not None:
                raise BnnFormatError(f"{where}: a scores layer cannot pool")
            if out != len(classes):
                raise BnnFormatError(f"{where} has {out} scores but the model has {len(classes)} classes")
            for role in ("scale", "offset"):
                if not np.isfinite(arrays[refs[role]]).all():
                    raise BnnFormatError(f"{where}: {role} must be finite")
            cur_enc = None
        shape_out = S.ints(layer, "out_shape", where)
        cur_shape = (out, *out_spatial)
        if shape_out != cur_shape:
            raise BnnFormatError(f"{where}.out_shape {list(shape_out)} disagrees with its parameters {list(cur_shape)}")
    limits.check_budget(costs, file_bytes=file_bytes, input_bytes=math.prod(shape))
    unused = set(arrays) - used
    if unused:
        raise BnnFormatError(f"arrays {sorted(unused)} belong to no layer")
    for a in arrays.values():
        a.setflags(write=False)
    return BnnFile(manifest=manifest, arrays=arrays)
