"""The --arch grammar: parsing, shapes, the models built from it, and every stage exact on random architectures."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnn_export.check import check_exportable
from bnn_export.errors import NotBinaryError
from bnn_export.onnx_bnn import bnn_to_onnx
from bnn_runtime.model import BnnModel
from bnn_runtime.reference import predict_from_scores, reference_scores
from bnn_train.arch import GRAMMAR, ArchError, Conv, Dense, Pool, arch_shapes, parse_arch
from bnn_train.config import ModelConfig
from bnn_train.models import build_model

from .random_models import random_arch_config, random_inputs, random_model, to_bnn, torch_predict
from .test_export import ort_run


def test_tokens_parse_with_their_defaults():
    layers = parse_arch("2x128C3-MP2-256C5s2p0-MP3s2-1024FC")
    assert layers == (
        Conv("2x128C3", 128, 3, 1, 1),
        Conv("2x128C3", 128, 3, 1, 1),
        Pool("MP2", 2, 2),
        Conv("256C5s2p0", 256, 5, 2, 0),
        Pool("MP3s2", 3, 2),
        Dense("1024FC", 1024),
    )
    assert parse_arch("64C4")[0].padding == 2 and parse_arch("3x10FC") == (Dense("3x10FC", 10),) * 3


@pytest.mark.parametrize(
    "spec, token, why",
    [
        ("32C3-MPx", "MPx", "not a convolution"),
        ("32C3--64FC", None, "empty token"),
        ("", None, "empty"),
        ("0x32C3", "0x32C3", "repeat count"),
        ("32C0", "32C0", "kernel size"),
        ("32C3s0", "32C3s0", "stride"),
        ("MP2-32C3", "MP2", "must follow a convolution"),
        ("32C3-MP2-MP2", "MP2", "must follow a convolution"),
        ("64FC-32C3", "32C3", "cannot follow a dense layer"),
    ],
)
def test_bad_specs_name_the_token_and_show_the_grammar(spec, token, why):
    with pytest.raises(ArchError) as e:
        parse_arch(spec)
    msg = str(e.value)
    assert why in msg and GRAMMAR in msg and "\n" not in msg
    if token:
        assert f"'{token}'" in msg


@pytest.mark.parametrize(
    "spec, shape, token",
    [
        ("32C7p0-MP2-32C5p0", (1, 8, 8), "32C5p0"),
        ("32C3-MP5-MP", (1, 4, 4), None),
        ("16C3-MP3", (1, 2, 2), "MP3"),
        ("16C3", (20,), "16C3"),
    ],
)
def test_specs_that_do_not_fit_the_input_name_the_token(spec, shape, token):
    with pytest.raises(ArchError) as e:
        arch_shapes(parse_arch(spec), shape)
    if token:
        assert f"'{token}'" in str(e.value)


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(["heaviside", "sign"]), st.integers(0, 2**31 - 1))
def test_built_models_have_the_shapes_of_the_grammar(act, seed):
    cfg = random_arch_config(np.random.default_rng(seed), act)
    model = build_model(cfg)
    layers = parse_arch(cfg.arch)
    expected = arch_shapes(layers, cfg.in_shape)
    outs = []
    h = torch.zeros((2, *cfg.in_shape))
    for name, m in model.named_children():
        h = m(h)
        if name.startswith("act"):
            outs.append(tuple(h.shape[1:]))
    hidden = [
        s for layer, s, nxt in zip(layers, expected, (*layers[1:], None), strict=False) if not isinstance(nxt, Pool)
    ]
    assert outs == hidden and tuple(h.shape) == (2, cfg.num_classes)
    check_exportable(model, cfg.in_shape)


def test_exportability_names_the_token():
    cfg = ModelConfig(model="arch", arch="8C3-MP2-8C3-16FC", act="sign/ste", in_shape=(1, 12, 12))
    with pytest.raises(NotBinaryError, match="--arch token '8C3'.*padding 0"):
        check_exportable(build_model(cfg), cfg.in_shape)
    check_exportable(
        build_model(ModelConfig(model="arch", arch="8C3-MP2-8C3p0-16FC", act="sign/ste", in_shape=(1, 12, 12))),
        (1, 12, 12),
    )


ARCH_CASES = st.tuples(st.sampled_from(["heaviside", "sign"]), st.booleans(), st.booleans(), st.integers(0, 2**31 - 1))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ARCH_CASES, st.sampled_from([1, 3, 37]))
def test_random_architectures_are_exact_in_every_stage(case, n):
    """reference == onnxruntime == the Numba runtime at 1 and 2 threads, exactly (strided convolutions and
    strided or overlapping pools included); >= 99.9 % agreement with PyTorch."""
    act, batchnorm, runtime_geometry, seed = case
    rng = np.random.default_rng(seed)
    cfg = random_arch_config(rng, act, batchnorm, runtime_geometry)
    model = random_model(cfg, seed)
    bnn, _ = to_bnn(model, cfg)
    x = random_inputs(rng, cfg.in_shape, n)
    ref = reference_scores(bnn, x)
    labels = predict_from_scores(bnn, ref)
    out = ort_run(bnn_to_onnx(bnn), x)
    assert np.array_equal(out["scores"], ref) and np.array_equal(out["label"], labels), cfg.arch
    assert (labels == torch_predict(model, cfg, x)).mean() >= 0.999, cfg.arch
    for threads in (1, 2):
        scores, pred = BnnModel(bnn, threads=threads).run(x)
        assert np.array_equal(scores, ref) and np.array_equal(pred, labels), (cfg.arch, threads)


def test_export_model_of_a_hand_built_sequential(tmp_path):
    """The Python path (examples/own_network.py): bnn_train's layers, export_model's checks, files only if they pass."""
    from torch import nn

    from bnn_export.api import export_model
    from bnn_runtime import read_bnn
    from bnn_train.activations import Activation
    from bnn_train.layers import BinaryConv2d, BinaryLinear, InputScale

    torch.manual_seed(0)
    model = nn.Sequential(
        InputScale(1 / 255),
        BinaryConv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.MaxPool2d(3, stride=1),
        Activation("heaviside/rect"),
        nn.Flatten(),
        BinaryLinear(8 * 3 * 3, 5),
        nn.BatchNorm1d(5),
    )
    x = random_inputs(np.random.default_rng(0), (3, 10, 10), 64)
    y = np.arange(64) % 5
    report = export_model(model, (3, 10, 10), list("abcde"), x, y, tmp_path / "m.bnn", tmp_path / "m.onnx")
    assert all(c.passed for c in report.checks) and len(report.checks) == 3
    bnn = read_bnn(tmp_path / "m.bnn")
    assert bnn.layers[0]["stride"] == [2, 2] and bnn.layers[0]["pool"] == {
        "kind": "or",
        "size": [3, 3],
        "stride": [1, 1],
    }
    assert (reference_scores(bnn, x) == ort_run(bnn_to_onnx(bnn), x)["scores"]).all()
    bad = nn.Sequential(InputScale(1 / 255), nn.Flatten(), nn.Linear(300, 5))
    with pytest.raises(NotBinaryError, match="float weights"):
        export_model(bad, (3, 10, 10), list("abcde"), x, y, tmp_path / "bad.bnn")
    assert not (tmp_path / "bad.bnn").exists()
