"""Bit packing and the .bnn container: property-based round trips, and corrupt files that must be refused."""

import json
import re
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bnn_runtime.bits import n_words, pack_bits, pack_signs, padding_is_zero, unpack_bits, unpack_signs
from bnn_runtime.errors import BnnFormatError
from bnn_runtime.format import HEADER, assemble, parse, read_bnn, to_bytes, write_bnn
from bnn_runtime.reference import reference_scores

from .fuzz_forged_bnn import manifest_paths
from .random_models import random_config, random_inputs, random_model, to_bnn

# ----------------------------------------------------------------- bits

bit_arrays = st.integers(0, 300).flatmap(
    lambda n: st.lists(st.lists(st.integers(0, 1), min_size=n, max_size=n), min_size=1, max_size=4)
)


@settings(max_examples=200)
@given(bit_arrays)
def test_pack_unpack_round_trip(rows):
    bits = np.array(rows, dtype=np.uint8).reshape(len(rows), -1)
    n = bits.shape[1]
    words = pack_bits(bits)
    assert words.dtype == np.uint64 and words.shape == (len(rows), n_words(n))
    assert np.array_equal(unpack_bits(words, n), bits)
    assert padding_is_zero(words, n)


@settings(max_examples=200)
@given(bit_arrays)
def test_bit_k_is_bit_k_mod_64_of_word_k_div_64(rows):
    bits = np.array(rows, dtype=np.uint8).reshape(len(rows), -1)
    words = pack_bits(bits)
    for r in range(bits.shape[0]):
        for k in range(bits.shape[1]):
            assert (int(words[r, k // 64]) >> (k % 64)) & 1 == bits[r, k]


@settings(max_examples=100)
@given(bit_arrays, st.data())
def test_popcount_dot_products(rows, data):
    """{0,1}.{+-1} = 2 pc(a & w) - pc(a);  {+-1}.{+-1} = n - 2 pc(a ^ w), padding included."""
    a = np.array(rows, dtype=np.uint8).reshape(len(rows), -1)
    n = a.shape[1]
    w = np.array(data.draw(st.lists(st.sampled_from([-1, 1]), min_size=n, max_size=n)), dtype=np.int64)
    aw, ww = pack_bits(a), pack_signs(w)

    def pc(x):
        return sum(bin(int(v)).count("1") for v in x)

    for r in range(len(a)):
        assert 2 * pc(aw[r] & ww) - pc(aw[r]) == int(a[r].astype(np.int64) @ w)
        pm = a[r].astype(np.int64) * 2 - 1
        assert n - 2 * pc(aw[r] ^ ww) == int(pm @ w)


def test_signs_round_trip_and_reject_other_values():
    v = np.array([[1, -1, -1, 1, 1] * 30], dtype=np.int8)
    assert np.array_equal(unpack_signs(pack_signs(v), v.shape[1]), v)
    with pytest.raises(ValueError):
        pack_signs(np.array([1, 0, -1]))
    with pytest.raises(ValueError):
        pack_bits(np.array([0, 2]))


def test_padding_check():
    w = pack_bits(np.ones((1, 70), dtype=np.uint8))
    assert padding_is_zero(w, 70)
    assert not padding_is_zero(w, 65)


# ----------------------------------------------------------------- container

MODEL_KINDS = st.tuples(
    st.sampled_from(["mlp", "lenet5", "suc"]), st.sampled_from(["heaviside", "sign"]), st.integers(0, 2**31 - 1)
)


def small_model(case):
    kind, act, seed = case
    rng = np.random.default_rng(seed)
    cfg = random_config(
        rng,
        kind,
        act,
        in_shape={"mlp": (37,), "suc": (20,), "lenet5": (1, 12, 12)}[kind],
        hidden=(5, 70) if kind == "mlp" else None,
        width=0.5 if kind == "lenet5" else None,
    )
    return cfg, random_model(cfg, seed)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MODEL_KINDS)
def test_write_read_write_is_byte_identical(tmp_path_factory, case):
    cfg, model = small_model(case)
    bnn, data = to_bnn(model, cfg)
    path = tmp_path_factory.mktemp("f") / "m.bnn"
    assert write_bnn(path, bnn.manifest, dict(bnn.arrays)) == len(data)
    again = read_bnn(path)
    assert to_bytes(again.manifest, dict(again.arrays)) == data == path.read_bytes()
    x = random_inputs(np.random.default_rng(0), cfg.in_shape, 4)
    assert np.array_equal(reference_scores(again, x), reference_scores(bnn, x))


@pytest.fixture(scope="module")
def sample():
    cfg, model = small_model(("lenet5", "heaviside", 1))
    bnn, data = to_bnn(model, cfg)
    return cfg, bnn, data


def _only_format_errors(data: bytes):
    """parse() either returns a model or raises BnnFormatError: nothing else, ever."""
    try:
        return parse(data)
    except BnnFormatError:
        return None


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_truncated_files_are_refused(sample, data):
    _, _, blob = sample
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(BnnFormatError):
        parse(blob[:cut])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_flipped_bytes_are_refused(sample, data):
    _, _, blob = sample
    pos = data.draw(st.integers(0, len(blob) - 1))
    mask = data.draw(st.integers(1, 255))
    corrupt = bytearray(blob)
    corrupt[pos] ^= mask
    assume(pos not in range(12, 16))  # the reserved field is not checked
    with pytest.raises(BnnFormatError):
        parse(bytes(corrupt))


def _split(blob: bytes) -> tuple[dict, bytes]:
    _, _, _, m_len, _, _ = HEADER.unpack_from(blob)
    body = blob[HEADER.size :]
    return json.loads(zlib.decompress(body[:m_len])), body[m_len:]


def _forge(manifest, data: bytes) -> bytes:
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return assemble(zlib.compress(text.encode()), data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_edited_manifests_never_crash_the_reader(sample, data):
    """A re-checksummed file with any manifest field replaced, deleted or added: a model or BnnFormatError."""
    cfg, _, blob = sample
    manifest, arrays_data = _split(blob)
    paths = [p for p in manifest_paths(manifest) if p]
    path = data.draw(st.sampled_from(paths))
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = data.draw(json_values)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(max_size=6))] = data.draw(json_values)
    else:
        parent.append(data.draw(json_values))
    model = _only_format_errors(_forge(manifest, arrays_data))
    if model is not None:  # still valid (e.g. a class renamed): it must also run
        reference_scores(model, random_inputs(np.random.default_rng(0), model.input_shape, 2))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(version=3), "disagrees with the header"),
        (lambda m: m["layers"][0].update(fan_in=26), "fan_in"),
        (lambda m: m["layers"][0]["arrays"].update(weight="nope"), "array 'nope' (weight) is missing"),
        (lambda m: m["arrays"]["conv1.threshold"].update(shape=[2]), "starts at"),
        (lambda m: m["arrays"]["conv1.threshold"].update(dtype="<f4"), "has dtype '<f4', not one of"),
        (lambda m: m["layers"][1].update(in_encoding="pm1"), "in_encoding"),
        (lambda m: m["layers"][-1].update(out_features=3), "expected [3, "),
        (lambda m: m.update(classes=["a"]), "at least two strings"),
        (lambda m: m["layers"][0].update(kernel=[50, 50]), "does not fit"),
        (lambda m: m["layers"][0].update(pool={"kind": "max", "size": [2, 2]}), "pool.kind must be 'or'"),
        (lambda m: m["input"].update(dtype="float32"), "input.dtype must be 'uint8'"),
        (lambda m: m["layers"].pop(), "a network ending in a threshold must have 1 unit"),
        (lambda m: m["layers"][0].update(output="scores"), "outputs scores but is not the last layer"),
    ],
)
def test_specific_manifest_problems_are_named(sample, edit, message):
    manifest, arrays_data = _split(sample[2])
    edit(manifest)
    with pytest.raises(BnnFormatError, match=re.escape(message)):
        parse(_forge(manifest, arrays_data))


def test_header_problems_are_named(sample):
    blob = sample[2]
    with pytest.raises(BnnFormatError, match="empty file"):
        parse(b"")
    with pytest.raises(BnnFormatError, match="bad magic"):
        parse(b"PK\x03\x04" + blob[4:])
    with pytest.raises(BnnFormatError, match="truncated"):
        parse(blob[:-1])
    with pytest.raises(BnnFormatError, match="unexpected bytes after"):
        parse(blob + b"\0")
    with pytest.raises(BnnFormatError, match="unsupported .bnn format version 7"):
        parse(blob[:8] + (7).to_bytes(4, "little") + blob[12:])
    with pytest.raises(BnnFormatError, match="checksum mismatch"):
        parse(blob[:-1] + bytes([blob[-1] ^ 1]))


def test_weight_padding_bits_must_be_zero(sample):
    manifest, arrays_data = _split(sample[2])
    layer = manifest["layers"][0]  # conv1: fan_in 25 in one word
    offset = manifest["arrays"][layer["arrays"]["weight"]]["offset"]
    data = bytearray(arrays_data)
    data[offset + 7] |= 0x80  # bit 63 of the first word
    with pytest.raises(BnnFormatError, match="padding bits"):
        parse(_forge(manifest, bytes(data)))


def test_read_bnn_file_errors(tmp_path):
    with pytest.raises(BnnFormatError, match="no such file"):
        read_bnn(tmp_path / "missing.bnn")
    with pytest.raises(BnnFormatError, match="is a directory"):
        read_bnn(tmp_path)
    (tmp_path / "x.bnn").write_bytes(b"hello")
    with pytest.raises(BnnFormatError, match="bad magic"):
        read_bnn(tmp_path / "x.bnn")


def test_write_refuses_an_invalid_model(tmp_path, sample):
    _, bnn, _ = sample
    arrays = dict(bnn.arrays)
    arrays.pop(next(iter(arrays)))
    with pytest.raises(BnnFormatError):
        write_bnn(tmp_path / "bad.bnn", bnn.manifest, arrays)
    assert list(tmp_path.iterdir()) == []


def test_version_1_files_still_read_and_version_2_adds_strides(sample):
    """Version 1 (no stride fields) reads as stride 1; a stride needs version 2; a pool's stride moves its size."""
    _, bnn, blob = sample
    manifest, data = _split(blob)
    v1 = dict(manifest, version=1)
    text = json.dumps(v1, sort_keys=True, separators=(",", ":"))
    old = parse(assemble(zlib.compress(text.encode()), data, version=1))
    assert np.array_equal(
        reference_scores(old, np.zeros((1, *old.input_shape), np.uint8)),
        reference_scores(bnn, np.zeros((1, *bnn.input_shape), np.uint8)),
    )
    v1["layers"][0]["stride"] = [1, 1]
    text = json.dumps(v1, sort_keys=True, separators=(",", ":"))
    with pytest.raises(BnnFormatError, match="stride needs format version 2"):
        parse(assemble(zlib.compress(text.encode()), data, version=1))
    layer = manifest["layers"][0]  # lenet5 conv1 on 8x8 digits: 20x20 -> pool 2 -> 10x10
    oh, ow = layer["out_shape"][1:]
    layer["pool"]["stride"] = [1, 1]
    with pytest.raises(BnnFormatError, match="out_shape"):
        parse(_forge(manifest, data))
    layer["out_shape"] = [layer["out_shape"][0], 2 * oh - 1, 2 * ow - 1]
    with pytest.raises(BnnFormatError, match="in_shape"):  # the next layer's input grew too
        parse(_forge(manifest, data))
    layer["pool"]["stride"] = [0, 1]
    with pytest.raises(BnnFormatError, match="pool.stride must be a list of integers"):
        parse(_forge(manifest, data))
