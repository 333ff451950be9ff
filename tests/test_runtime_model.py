"""``bnn_runtime.load`` and ``BnnModel``: what it reports, and every bad input refused with a typed one-line error."""

import numpy as np
import pytest

import bnn_runtime
from bnn_runtime import BnnFormatError, BnnModel, InputError, SettingError, load
from bnn_runtime.format import parse, to_bytes
from bnn_runtime.reference import predict_from_scores, reference_scores

from .random_bnn import random_bnn
from .random_models import random_config, random_inputs, random_model, to_bnn


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    rng = np.random.default_rng(0)
    cfg = random_config(rng, "lenet5", "heaviside", True, width=0.5, in_shape=(1, 12, 12), num_classes=4)
    bnn, data = to_bnn(random_model(cfg, 0), cfg, classes=["a", "b", "c", "d"])
    path = tmp_path_factory.mktemp("m") / "lenet.bnn"
    path.write_bytes(data)
    return path, bnn


def test_load_reports_the_manifest(lenet):
    path, bnn = lenet
    model = load(path, threads=1)
    assert isinstance(model, BnnModel) and bnn_runtime.load is load
    assert model.classes == ["a", "b", "c", "d"]
    assert model.input_shape == (1, 12, 12)
    assert model.manifest == bnn.manifest
    assert model.threads == 1
    assert len(model.word_ops) == len(bnn.layers) and model.word_ops[0] == 0  # integer first conv
    assert "classes=4" in repr(model)
    model.threads = None
    assert model.threads == bnn_runtime.model.max_threads()


def test_image_batches_with_or_without_the_channel_axis(lenet):
    path, bnn = lenet
    model = load(path)
    x = random_inputs(np.random.default_rng(1), (1, 12, 12), 9)
    ref = reference_scores(bnn, x)
    assert np.array_equal(model.scores(x), ref)
    assert np.array_equal(model.scores(x[:, 0]), ref)  # (N, H, W) for a single-channel model
    assert np.array_equal(model.scores(x.astype(np.float32)), ref)  # integer-valued floats
    assert np.array_equal(model.scores(x.astype(np.int64).tolist()), ref)  # nested lists
    assert np.array_equal(model.predict(x), predict_from_scores(bnn, ref))
    assert np.array_equal(model.scores(np.asfortranarray(x)), ref)  # any memory layout


def test_single_unit_network_predicts_its_bit():
    rng = np.random.default_rng(5)
    cfg = random_config(rng, "suc", "heaviside", True, in_shape=(37,))
    bnn, _ = to_bnn(random_model(cfg, 5), cfg)
    x = random_inputs(rng, (37,), 50)
    model = BnnModel(bnn)
    ref = reference_scores(bnn, x)
    assert model.scores(x).shape == (50, 1)
    assert np.array_equal(model.scores(x), ref)
    logits = model.logits(x)  # (0, margin over the threshold): class 1 exactly when the bit is 1
    assert logits.shape == (50, 2) and np.array_equal(logits.argmax(axis=1), model.predict(x))
    assert len(set(model.predict(x).tolist())) == 2, "the test needs both classes"
    assert np.allclose(model.probabilities(x).sum(axis=1), 1.0)
    assert np.array_equal(model.predict(x), predict_from_scores(bnn, ref))
    assert set(np.unique(model.predict(x))) <= {0, 1}


BAD_INPUTS = [
    (lambda x: x.astype(np.complex64), "not numeric"),
    (lambda x: x.astype(str), "not numeric"),
    (lambda x: x.astype(object), "not numeric"),
    (lambda x: x[:, :, :-1], "images are 11×12 (H×W), the model takes 12×12"),
    (lambda x: x[:, :, :, :-2], "images are 12×10 (H×W), the model takes 12×12"),
    (lambda x: np.concatenate([x, x], axis=1), "2 channels, the model takes 1"),
    (lambda x: x[0, 0, 0], "shape (12,)"),
    (lambda x: x[None], "shape (1, 3, 1, 12, 12)"),
    (lambda x: x[:0], "empty batch"),
    (lambda x: np.where(x == x.max(), np.nan, x.astype(np.float64)), "NaN"),
    (lambda x: np.where(x == x.max(), np.inf, x.astype(np.float64)), "infinite"),
    (lambda x: x.astype(np.float64) / 255, "integer pixel values"),
    (lambda x: x.astype(np.int64) - 256, "0..255"),
    (lambda x: x.astype(np.int64) * 300, "0..255"),
    (lambda x: [[1, 2], [3]], "not a rectangular array"),
    (lambda x: "images", "numpy array"),
    (lambda x: None, "numpy array"),
]


@pytest.mark.parametrize("make, message", BAD_INPUTS)
def test_bad_inputs_are_refused_before_any_kernel(lenet, make, message):
    model = load(lenet[0])
    x = random_inputs(np.random.default_rng(2), (1, 12, 12), 3)
    for method in (model.predict, model.scores):
        with pytest.raises(InputError) as err:
            method(make(x))
        assert message in str(err.value)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("threads", [0, -1, 10**6, 1.5, "2", True])
def test_bad_thread_counts_are_refused(lenet, threads):
    with pytest.raises(SettingError, match="threads must be an integer from 1 to"):
        load(lenet[0], threads=threads)
    model = load(lenet[0])
    with pytest.raises(SettingError):
        model.threads = threads


def test_bad_tile_is_refused(lenet):
    with pytest.raises(SettingError, match="tile"):
        BnnModel(lenet[1], tile=0)


def test_corrupt_missing_and_foreign_files_are_refused(lenet, tmp_path):
    path, _ = lenet
    data = path.read_bytes()
    cases = {
        "missing.bnn": None,
        "truncated.bnn": data[: len(data) // 2],
        "flipped.bnn": data[:-5] + bytes([data[-5] ^ 1]) + data[-4:],
        "foreign.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
        "empty.bnn": b"",
    }
    for name, content in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_bytes(content)
        with pytest.raises(BnnFormatError) as err:
            load(p)
        assert str(p) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(BnnFormatError, match="is a directory"):
        load(tmp_path)


def test_a_convolution_as_last_layer_is_refused():
    """The format lets a conv layer output scores; its scores would be maps, which predict cannot rank."""
    rng = np.random.default_rng(0)
    while True:
        bnn, _ = random_bnn(rng)
        if bnn.layers[0]["kind"] == "conv" and bnn.layers[0]["out_features"] >= 2:
            break
    manifest = dict(bnn.manifest)
    first = dict(manifest["layers"][0])
    layers = [first]
    names = first["arrays"]
    arrays = {names["weight"]: bnn.arrays[names["weight"]]}
    first.update(output="scores", pool=None)
    oh = first["in_shape"][1] + 2 * first["padding"][0] - first["kernel"][0] + 1
    ow = first["in_shape"][2] + 2 * first["padding"][1] - first["kernel"][1] + 1
    first["out_shape"] = [first["out_features"], oh, ow]
    first.pop("out_encoding", None)
    first["arrays"] = {"weight": names["weight"], "scale": "s", "offset": "o"}
    arrays.update(s=np.ones(first["out_features"]), o=np.zeros(first["out_features"]))
    manifest.update(layers=layers, classes=[f"c{i}" for i in range(first["out_features"])])
    conv_last = parse(to_bytes({k: v for k, v in manifest.items() if k != "arrays"}, arrays))
    with pytest.raises(BnnFormatError, match="dense last layer"):
        BnnModel(conv_last)
