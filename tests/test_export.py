"""The exporter: thresholds, folding, ONNX == reference exactly, agreement with PyTorch, sizes, CLI errors."""

import io
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnn_export.api import export_run
from bnn_export.errors import NotBinaryError, UnsupportedLayerError
from bnn_export.fold import fold, thresholds
from bnn_export.onnx_bnn import bnn_to_onnx
from bnn_export.onnx_float import float_to_onnx
from bnn_runtime.reference import predict_from_scores, reference_forward, reference_scores
from bnn_train.config import ModelConfig, RunConfig, TrainConfig
from bnn_train.models import build_model
from bnn_train.train import fit

from .conftest import assert_user_error, dataset_dir, run_cli
from .random_models import random_config, random_inputs, random_model, to_bnn, torch_predict


def ort_run(model_proto: onnx.ModelProto, x: np.ndarray) -> dict:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s = ort.InferenceSession(model_proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"images": x}), strict=True))


# ----------------------------------------------------------------- thresholds


@settings(max_examples=300, deadline=None)
@given(
    a=st.one_of(st.floats(-50, 50), st.just(0.0), st.floats(-1e-9, 1e-9)),
    d=st.floats(-200, 200),
    bound=st.integers(1, 60),
)
def test_threshold_rule_matches_the_affine_on_every_reachable_sum(a, d, bound):
    t, direction = thresholds(np.array([a]), np.array([d]), bound)
    s = np.arange(-bound, bound + 1)
    expected = a * s + d >= 0
    got = s >= t[0] if direction[0] > 0 else s <= t[0]
    assert np.array_equal(got, expected)
    assert -bound - 1 <= t[0] <= bound + 1


def test_threshold_constant_channels():
    t, d = thresholds(np.array([0.0, 0.0]), np.array([0.5, -0.5]), 10)
    assert (d == 1).all() and t[0] <= -10 and t[1] > 10


# ----------------------------------------------------------------- random models

MODEL_CASES = st.tuples(
    st.sampled_from(["mlp", "lenet5", "suc"]),
    st.sampled_from(["heaviside", "sign"]),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MODEL_CASES)
def test_onnx_equals_reference_and_agrees_with_pytorch(case):
    kind, act, batchnorm, seed = case
    rng = np.random.default_rng(seed)
    cfg = random_config(rng, kind, act, batchnorm)
    model = random_model(cfg, seed)
    bnn, _ = to_bnn(model, cfg)
    x = random_inputs(rng, cfg.in_shape, 48)
    scores = reference_scores(bnn, x)
    out = ort_run(bnn_to_onnx(bnn), x)
    assert out["scores"].dtype == np.int32
    assert np.array_equal(out["scores"], scores)
    assert np.array_equal(out["label"], predict_from_scores(bnn, scores))
    assert (predict_from_scores(bnn, scores) == torch_predict(model, cfg, x)).mean() >= 0.999


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(["heaviside", "sign"]), st.integers(0, 2**31 - 1))
def test_hidden_bits_equal_pytorch_activations(act, seed):
    """Layer by layer: the reference's bit maps are PyTorch's activations (after pooling)."""
    rng = np.random.default_rng(seed)
    cfg = random_config(rng, "lenet5", act, in_shape=(1, 28, 28))
    model = random_model(cfg, seed)
    bnn, _ = to_bnn(model, cfg)
    x = random_inputs(rng, cfg.in_shape, 16)
    _, hidden = reference_forward(bnn, x)
    acts = []
    with torch.no_grad():
        h = torch.from_numpy(x).float()
        for m in model:
            h = m(h)
            if type(m).__name__ == "Activation":
                acts.append(h.numpy())
    assert len(acts) == len(hidden) == 4
    for bits, a in zip(hidden, acts, strict=True):
        values = bits.astype(np.int64) * 2 - 1 if act == "sign" else bits
        assert (values.reshape(a.shape) == a).mean() >= 0.999


def test_pooling_of_bits_after_the_activation_is_or():
    cfg = ModelConfig(model="lenet5", act="heaviside/ste", in_shape=(1, 28, 28), input_scale=1 / 255)
    model = random_model(cfg, 3)
    layers, _ = fold(model, cfg.in_shape)
    assert [ly.get("pool") for ly in layers[:2]] == [{"kind": "or", "size": [2, 2]}] * 2
    assert layers[0]["out_shape"] == [6, 14, 14] and layers[1]["out_shape"] == [16, 5, 5]


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(weights="float"), "float weights"),
        (dict(act="relu/tied"), "not a bit"),
        (dict(act="heaviside/ste", pool="qmean"), "quadratic-mean"),
    ],
)
def test_non_binary_models_are_refused_with_the_reason(kw, msg):
    cfg = ModelConfig(model="lenet5", in_shape=(1, 28, 28), input_scale=1 / 255, **kw)
    with pytest.raises(NotBinaryError, match=msg):
        fold(build_model(cfg).eval(), cfg.in_shape)


@pytest.mark.parametrize(
    "act", ["relu/tied", "logistic/tied", "sigmoid_tanh/tied", "tanh/tied", "linear/tied", "sign/ste"]
)
def test_float_networks_export_to_onnx(act):
    cfg = ModelConfig(model="lenet5", act=act, weights="float", in_shape=(1, 28, 28), input_scale=1 / 255)
    model = random_model(cfg, 0)
    x = random_inputs(np.random.default_rng(0), cfg.in_shape, 32)
    out = ort_run(float_to_onnx(model, cfg.in_shape), x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x).float()).numpy()
    # float32 rounding, amplified up to 1/sqrt(eps) by the zero-variance BatchNorm channels
    np.testing.assert_allclose(out["logits"], ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
    assert (out["label"] == ref.argmax(1)).mean() >= 0.95


def test_an_unsupported_convolution_is_one_error_in_both_exporters():
    from bnn_train.layers import BinaryConv2d, InputScale

    model = torch.nn.Sequential(
        InputScale(1 / 255), BinaryConv2d(1, 4, 3, dilation=2), torch.nn.Flatten(), torch.nn.Linear(4 * 24 * 24, 10)
    ).eval()
    for export in (lambda: fold(model, (1, 28, 28)), lambda: float_to_onnx(model, (1, 28, 28))):
        with pytest.raises(UnsupportedLayerError, match="layer 1: only dilation 1"):
            export()


def test_float_onnx_takes_strided_convolutions():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, stride=2, padding=1), torch.nn.Flatten()).eval()
    x = random_inputs(np.random.default_rng(0), (1, 9, 9), 4)
    out = ort_run(float_to_onnx(model, (1, 9, 9)), x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(out["logits"], ref, rtol=1e-5, atol=1e-3)


# ----------------------------------------------------------------- sizes


def _state_dict_bytes(model) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def test_lenet5_is_at_least_20x_smaller():
    cfg = ModelConfig(model="lenet5", in_shape=(1, 28, 28), input_scale=1 / 255)
    model = random_model(cfg, 0)
    _, data = to_bnn(model, cfg)
    assert len(data) * 20 <= _state_dict_bytes(model), (len(data), _state_dict_bytes(model))


def test_mlp_1024_is_at_least_28x_smaller():
    cfg = ModelConfig(model="mlp", hidden=(1024, 1024), in_shape=(1, 28, 28), input_scale=1 / 255)
    model = random_model(cfg, 0)
    _, data = to_bnn(model, cfg)
    assert len(data) * 28 <= _state_dict_bytes(model), (len(data), _state_dict_bytes(model))


# ----------------------------------------------------------------- runs and the CLI


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "lenet"
    fit(RunConfig(ModelConfig(model="lenet5"), TrainConfig(epochs=2, batch_size=128)), out, plot=False)
    return out


def test_export_run_writes_checked_files(digits_run, tmp_path):
    report = export_run(digits_run, tmp_path / "m.bnn", tmp_path / "m.onnx")
    assert all(c.passed for c in report.checks) and len(report.checks) == 3
    assert report.accuracy["bnn"] == report.accuracy["pytorch"]
    onnx.checker.check_model(str(tmp_path / "m.onnx"))
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["classes"]) == [str(i) for i in range(10)]
    assert float(meta["test_accuracy"]) == report.accuracy["bnn"]
    from bnn_runtime import read_bnn

    manifest = read_bnn(tmp_path / "m.bnn").manifest
    assert manifest["input"] == {"dtype": "uint8", "shape": [1, 8, 8], "range": [0, 16], "layout": "CHW", "color": "L"}
    prov = manifest["provenance"]
    assert prov["dataset"] == "digits" and prov["test_accuracy"] == report.accuracy["bnn"]
    assert prov["config"]["model"]["model"] == "lenet5"
    from bnn_runtime import load
    from bnn_train.data import load_digits

    model, x = load(tmp_path / "m.bnn"), load_digits().x_test.numpy()  # every test image: argmax of logits == predict
    assert np.array_equal(model.logits(x).argmax(axis=1), model.predict(x))


def test_export_cli_prints_checks_and_sizes(digits_run, tmp_path):
    result = run_cli("export", digits_run, "-o", tmp_path / "m.bnn", "--onnx", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    assert "smaller than the fp32 state dict" in result.stdout
    assert "onnxruntime == reference" in result.stderr and "agreement with PyTorch" in result.stderr
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_cli_json(digits_run, tmp_path):
    result = run_cli("export", digits_run, "-o", tmp_path / "m.bnn", "--no-onnx", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["binary"] and report["onnx"] is None and report["compression"] > 5


def test_float_run_exports_onnx_alone(tmp_path):
    run = tmp_path / "float"
    fit(
        RunConfig(ModelConfig(model="mlp", hidden=(16,), weights="float", act="relu/tied"), TrainConfig(epochs=1)),
        run,
        plot=False,
    )
    result = run_cli("export", run)
    assert result.exit_code == 0, result.output
    assert "no .bnn written" in result.stderr and "float weights" in result.stderr
    assert (run / "model.onnx").exists() and not (run / "model.bnn").exists()
    result = run_cli("export", run, "-o", tmp_path / "x.bnn")
    assert_user_error(result, "cannot write", "float weights", "--onnx", code=1)
    assert not (tmp_path / "x.bnn").exists()


def test_export_bad_run_dirs(tmp_path, digits_run):
    assert_user_error(run_cli("export", tmp_path / "nope"), "does not exist", code=1)
    (tmp_path / "empty").mkdir()
    assert_user_error(run_cli("export", tmp_path / "empty"), "not a bnn run directory", code=1)
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes((digits_run / "checkpoint.pt").read_bytes()[:5000])
    assert_user_error(run_cli("export", bad, "-o", tmp_path / "x.bnn"), "corrupt", code=1)
    assert not (tmp_path / "x.bnn").exists()


def test_export_checkpoint_of_another_model(tmp_path, digits_run):
    """A checkpoint whose weights belong to a different model than its configuration names."""
    ckpt = torch.load(digits_run / "checkpoint.pt", weights_only=True)
    ckpt["config"]["model"]["model"] = "mlp"
    (tmp_path / "mixed").mkdir()
    torch.save(ckpt, tmp_path / "mixed" / "checkpoint.pt")
    result = run_cli("export", tmp_path / "mixed", "-o", tmp_path / "x.bnn")
    assert_user_error(result, "does not match its own model configuration", code=1)
    assert list(tmp_path.glob("*.bnn")) == []


def test_export_rejects_bad_options(digits_run, tmp_path):
    assert_user_error(run_cli("export", digits_run, "--check-images", "0"), "--check-images", code=1)
    assert_user_error(run_cli("export", digits_run, "--onnx", tmp_path / "a.onnx", "--no-onnx"), "contradict", code=1)


def test_export_mnist_lenet_on_all_test_images(tmp_path):
    """Issue 3's contract on real data: ORT == reference on all 10,000 MNIST test images, >= 99.9 % agreement."""
    data_dir = dataset_dir("mnist")
    run = tmp_path / "mnist"
    fit(
        RunConfig(
            ModelConfig(model="lenet5"),
            TrainConfig(dataset="mnist", data_dir=str(data_dir), epochs=1, batch_size=256, schedule="cosine"),
        ),
        run,
        plot=False,
    )
    report = export_run(run, tmp_path / "m.bnn", tmp_path / "m.onnx")
    checks = {c.name: c for c in report.checks}
    assert checks["onnxruntime == reference (test images)"].passed
    assert "10000 inputs" in checks["onnxruntime == reference (test images)"].detail
    assert checks["agreement with PyTorch"].passed
    assert abs(report.accuracy["bnn"] - report.accuracy["pytorch"]) <= 0.0005
    assert report.bnn_bytes * 20 <= report.state_dict_bytes
    from bnn_runtime import load, read_bnn
    from bnn_runtime.reference import reference_logits
    from bnn_train.data import load_idx_dataset

    assert read_bnn(tmp_path / "m.bnn").input_spec.range == (0, 255)
    model, x = load(tmp_path / "m.bnn"), load_idx_dataset("mnist", str(data_dir)).x_test.numpy()
    logits = model.logits(x)  # argmax == predict on every test image; the runtime's logits are the reference's
    assert np.array_equal(logits.argmax(axis=1), model.predict(x))
    assert np.array_equal(logits, reference_logits(model.file, x))
