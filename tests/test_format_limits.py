"""The reader bounds what a forged file (valid checksum) may ask for: every refusal is one BnnFormatError naming it."""

import re
import struct
import zlib

import numpy as np
import pytest

from bnn_runtime import limits
from bnn_runtime.errors import BnnFormatError
from bnn_runtime.format import assemble, parse
from bnn_runtime.model import BnnModel
from bnn_runtime.reference import reference_scores

from .forged_bnn import conv_then_dense, dense_u8, forge, split


@pytest.fixture(scope="module")
def small():
    return conv_then_dense(np.random.default_rng(0), 1, 6, 6, (3, 3), (1, 1), (2, 2), out=3)


def _refused(blob: bytes, *fragments: str) -> str:
    with pytest.raises(BnnFormatError) as e:
        parse(blob)
    msg = str(e.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_the_small_forged_model_is_valid_and_runs(small):
    model = parse(small)
    x = np.random.default_rng(1).integers(0, 256, (5, 1, 6, 6), dtype=np.uint8)
    assert np.array_equal(BnnModel(model).scores(x), reference_scores(model, x))


def test_reserved_header_field_must_be_zero(small):
    blob = bytearray(small)
    struct.pack_into("<I", blob, 12, 7)
    _refused(bytes(blob), "reserved field is 7")


@pytest.mark.parametrize("depth", [limits.MAX_JSON_DEPTH + 1, 100_000])
def test_deep_nesting_is_refused(small, depth):
    _, data = split(small)
    raw = '{"format":"bnn","provenance":' + "[" * depth + "]" * depth + "}"
    _refused(forge(None, data, raw_json=raw), "nests deeper than")


@pytest.mark.parametrize("literal", ["1" * 20, "-" + "9" * 5000, "1" * 100_000])
def test_huge_integer_literals_are_refused(small, literal):
    _, data = split(small)
    _refused(forge(None, data, raw_json='{"version":' + literal + "}"), "digits")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_refused(small, constant):
    _, data = split(small)
    _refused(forge(None, data, raw_json='{"provenance":{"x":' + constant + "}}"), constant)


def test_invalid_utf8_is_named(small):
    _, data = split(small)
    _refused(assemble(zlib.compress(b'{"a":"\xff"}'), data), "not UTF-8")


@pytest.mark.parametrize(
    "where, key",
    [("layer", "strides"), ("manifest", "extra"), ("input", "gamma"), ("pool", "window"), ("array", "order")],
)
def test_unknown_keys_are_refused_not_ignored(small, where, key):
    manifest, data = split(small)
    target = {
        "layer": manifest["layers"][0],
        "manifest": manifest,
        "input": manifest["input"],
        "pool": manifest["layers"][0]["pool"],
        "array": manifest["arrays"]["c.weight"],
    }[where]
    target[key] = 1
    _refused(forge(manifest, data), "unknown keys", repr(key))


@pytest.mark.parametrize("dtype", ["O", "V8", "<U4", "S3", "M8[ns]", "<c16", "i4,i4", "(2,)i4", "bogus", "<f4", ""])
def test_dtype_strings_outside_the_format_are_refused_without_numpy(small, dtype):
    manifest, data = split(small)
    manifest["arrays"]["c.threshold"]["dtype"] = dtype
    _refused(forge(manifest, data), "c.threshold", "not one of")


@pytest.mark.parametrize("value", [2**24 + 1, 2**63 - 1, -1, 10**18])
def test_size_fields_are_bounded(small, value):
    manifest, data = split(small)
    manifest["layers"][0]["padding"] = [value, 0]
    _refused(forge(manifest, data), "padding")


def test_a_tiny_file_cannot_ask_for_gigabytes_of_scratch():
    """A 1x1 input, a 1x1 kernel padded by 8000, pooled back to 1x1: ~400 bytes asking for 256M positions."""
    blob = conv_then_dense(np.random.default_rng(0), 1, 1, 1, (1, 1), (8000, 8000), (16001, 16001), out=1)
    assert len(blob) < 1000
    _refused(blob, "scratch memory per image", f"at most {limits.MAX_SCRATCH_BYTES}", "layer 'c'")


def test_a_tiny_file_cannot_ask_for_scratch_out_of_proportion_to_its_size():
    """The same forged network padded by 1000: ~500 bytes asking for 96 MB per image, below the absolute cap."""
    blob = conv_then_dense(np.random.default_rng(0), 1, 1, 1, (1, 1), (1000, 1000), (2001, 2001), out=1)
    assert len(blob) < 1000
    scratch = 8 * 3 * 2001 * 2001  # padded input, pre-pooling sums, one word per position: 96 MB
    assert scratch < limits.MAX_SCRATCH_BYTES
    allowed = limits.scratch_allowance(len(blob), 1)
    assert allowed == limits.SCRATCH_PER_BYTE * (len(blob) + 1) < scratch
    _refused(
        blob, "out of proportion", f"a file of {len(blob)} bytes", f"SCRATCH_PER_BYTE {limits.SCRATCH_PER_BYTE}",
        f"= {allowed};", "layer 'c'",
    )  # fmt: skip


def test_the_proportion_rule_stops_where_it_says():
    """Padding p grows the conv's scratch as 24·(2p+1)² bytes while the file stays ~500 bytes (its compressed
    manifest varies by a byte or two, the allowance by 4,096 per byte, one step of p by ~28 kB): just below the
    boundary the file is accepted and runs exactly, just above it is refused."""

    def blob(p: int) -> bytes:
        return conv_then_dense(np.random.default_rng(0), 1, 1, 1, (1, 1), (p, p), (2 * p + 1, 2 * p + 1), out=1)

    size = len(blob(100))
    p0 = next(p for p in range(1, 1000) if 24 * (2 * p + 1) ** 2 > limits.scratch_allowance(size, 1))
    model = parse(blob(p0 - 1))
    x = np.random.default_rng(1).integers(0, 256, (3, 1, 1, 1), dtype=np.uint8)
    assert np.array_equal(BnnModel(model).scores(x), reference_scores(model, x))
    _refused(blob(p0 + 1), "out of proportion")


@pytest.mark.parametrize(
    "spec, shape",
    [
        ("2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC", (3, 32, 32)),  # BinaryNet's VGG on CIFAR-10
        ("128C3-MP32-10FC", (1, 224, 224)),  # a wide first layer, a tiny classifier: ratio ~860
    ],
)
def test_legitimate_wide_networks_stay_within_the_proportion(spec, shape):
    from bnn_export.synthetic import synthetic_bnn
    from bnn_runtime.format import to_bytes

    parse(to_bytes(*synthetic_bnn(spec, shape)))  # to_bytes validates too: the exporter can write it


def test_lenet5_on_224x224_images_stays_within_the_proportion():
    from bnn_train.config import ModelConfig

    from .random_models import random_model, to_bnn

    cfg = ModelConfig(
        model="lenet5",
        act="heaviside/ste",
        weights="binary",
        in_shape=(1, 224, 224),
        num_classes=10,
        input_scale=1 / 255,
    )
    model, _ = to_bnn(random_model(cfg, 0), cfg)
    assert model.input_shape == (1, 224, 224)


def test_every_golden_file_stays_within_the_proportion():
    from pathlib import Path

    from bnn_runtime.format import read_bnn

    paths = sorted(Path(__file__).parent.joinpath("golden").glob("*.bnn"))
    assert len(paths) >= 5
    for path in paths:
        read_bnn(path)


def test_work_per_image_is_capped():
    """1024 outputs of a 7x7x64 kernel at 64x64 positions: 32 MB of scratch, 13 G multiply-accumulates."""
    blob = conv_then_dense(np.random.default_rng(0), 64, 70, 70, (7, 7), (0, 0), (64, 64), out=1024)
    msg = _refused(blob, "multiply-accumulates per image", f"at most {limits.MAX_WORK}")
    assert "layer 'c'" in msg


def test_first_layer_sums_beyond_int32_are_refused():
    """255 * fan_in > 2**31 - 1: the runtime and the reference would both wrap and answer wrongly."""
    fan_in = limits.INT32_MAX // 255 + 1
    _refused(dense_u8(fan_in), "beyond int32", f"fan_in {fan_in}")


def test_first_layer_at_the_int32_edge_is_exact():
    """The largest fan-in that is accepted gives the exact sum 255 * fan_in in both executors."""
    fan_in = limits.INT32_MAX // 255
    model = parse(dense_u8(fan_in, out=2))
    x = np.full((1, fan_in), 255, np.uint8)
    want = np.array([[255 * fan_in] * 2])
    assert np.array_equal(reference_scores(model, x), want)
    assert np.array_equal(BnnModel(model).scores(x), want)


def test_layer_and_class_counts_are_bounded(small):
    manifest, data = split(small)
    manifest["classes"] = [str(i) for i in range(limits.MAX_CLASSES + 1)]
    _refused(forge(manifest, data), "number of classes")


def test_messages_are_one_line_and_bounded(small):
    manifest, data = split(small)
    manifest["layers"][0]["name"] = "x" * 10_000
    manifest["layers"][0]["bogus"] = 1
    msg = _refused(forge(manifest, data), "unknown keys")
    assert len(msg) < 600 and re.search(r"x{100}", msg)
