"""The runtime's scores == the NumPy reference == onnxruntime on the exported ONNX, exactly.

On random trained-architecture models (MLP widths that are not multiples of 64, LeNet-5 widths,
sign and Heaviside activations, BatchNorm with negative scales and zero variances, folded by
the exporter), on random .bnn layouts straight from the format, and on the MNIST and
Fashion-MNIST test images (with BNN_DATASETS set). Batch 1 and larger, 1 and 2 threads.
"""

import threading

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bnn_export.onnx_bnn import bnn_to_onnx
from bnn_runtime.model import BnnModel
from bnn_runtime.reference import predict_from_scores, reference_scores

from .conftest import dataset_dir
from .random_bnn import random_bnn
from .random_models import random_config, random_inputs, random_model, to_bnn

WIDTHS = [1, 2, 31, 63, 64, 65, 100, 130]


def ort_scores(bnn, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s = ort.InferenceSession(bnn_to_onnx(bnn).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in s.get_outputs()], s.run(None, {"images": x}), strict=False))
    return out["scores"], out["label"]


def assert_exact(bnn, x: np.ndarray, threads=(1, 2), onnx=True) -> None:
    ref = reference_scores(bnn, x)
    labels = predict_from_scores(bnn, ref)
    if onnx:
        ort_s, ort_l = ort_scores(bnn, x)
        assert np.array_equal(ort_s, ref) and np.array_equal(ort_l, labels)
    for t in threads:
        model = BnnModel(bnn, threads=t)
        scores, pred = model.run(x)
        assert scores.dtype == np.int32 and pred.dtype == np.int64
        assert np.array_equal(scores, ref), f"threads={t}: {np.argwhere(scores != ref)[:5]}"
        assert np.array_equal(pred, labels)
        assert np.array_equal(model.scores(x[:1]), ref[:1])  # batch 1: the serial path
        assert np.array_equal(model.predict(x[-1:]), labels[-1:])


MODELS = st.tuples(
    st.sampled_from(["mlp", "lenet5", "suc"]),
    st.sampled_from(["heaviside", "sign"]),
    st.booleans(),
    st.lists(st.sampled_from(WIDTHS), min_size=1, max_size=3),
    st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.5]),
    st.sampled_from([None, (1, 8, 8), (1, 28, 28), (3, 16, 16), (6, 12, 12)]),
    st.integers(0, 2**31 - 1),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MODELS, st.integers(1, 70))
def test_random_models_are_exact(case, n):
    kind, act, batchnorm, hidden, width, in_shape, seed = case
    rng = np.random.default_rng(seed)
    if kind != "lenet5" and in_shape is not None and rng.random() < 0.5:
        in_shape = (int(rng.integers(1, 200)),)  # vector input, a length that is rarely a multiple of 8
    if kind == "lenet5" and in_shape is None:
        in_shape = (1, 12, 12)
    cfg = random_config(rng, kind, act, batchnorm, hidden=tuple(hidden), width=width, in_shape=in_shape)
    event(f"{kind} {act} input {'x'.join(map(str, cfg.in_shape))}")
    bnn, _ = to_bnn(random_model(cfg, seed), cfg)
    assert_exact(bnn, random_inputs(rng, cfg.in_shape, n))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**31 - 1), st.integers(1, 40))
def test_random_layouts_are_exact(seed, n):
    rng = np.random.default_rng(seed)
    bnn, _ = random_bnn(rng)
    x = rng.integers(0, 256, (n, *bnn.input_shape), dtype=np.uint8)
    assert_exact(bnn, x, onnx=seed % 3 == 0)


@pytest.mark.parametrize("n", [15, 16, 17, 31, 33, 64, 257])
def test_batch_sizes_around_tiles_and_threads(n):
    rng = np.random.default_rng(n)
    cfg = random_config(rng, "lenet5", "heaviside", True, width=1.0, in_shape=(1, 28, 28))
    bnn, _ = to_bnn(random_model(cfg, n), cfg)
    x = random_inputs(rng, cfg.in_shape, n)
    ref = reference_scores(bnn, x)
    for tile in (1, 4, 16, 100):
        assert np.array_equal(BnnModel(bnn, threads=2, tile=tile).scores(x), ref)


def test_concurrent_calls_from_python_threads_agree():
    rng = np.random.default_rng(3)
    cfg = random_config(rng, "mlp", "sign", True, hidden=(65, 130))
    bnn, _ = to_bnn(random_model(cfg, 3), cfg)
    model = BnnModel(bnn, threads=2)
    xs = [random_inputs(rng, cfg.in_shape, int(k)) for k in rng.integers(1, 80, 8)]
    expected = [reference_scores(bnn, x) for x in xs]
    results = [None] * len(xs)

    def work(i):
        for _ in range(5):
            results[i] = model.scores(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected, strict=False):
        assert np.array_equal(got, want)


def _idx_test_images(name: str, limit: int | None):
    from bnn_train.config import TrainConfig
    from bnn_train.data import load_dataset

    data = load_dataset(TrainConfig(dataset=name, data_dir=str(dataset_dir(name))))
    x = data.x_test.numpy()
    return x if limit is None else x[:limit]


def _exact_on_dataset(name: str, limit: int | None) -> None:
    x = _idx_test_images(name, limit)
    for seed, (kind, act) in enumerate([("lenet5", "heaviside"), ("lenet5", "sign"), ("mlp", "heaviside")]):
        rng = np.random.default_rng(seed)
        cfg = random_config(rng, kind, act, True, hidden=(130, 65), width=1.0, in_shape=(1, 28, 28))
        bnn, _ = to_bnn(random_model(cfg, seed), cfg)
        assert_exact(bnn, x, threads=(2,))


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_exact_on_test_images(name):
    _exact_on_dataset(name, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_exact_on_all_test_images(name):
    _exact_on_dataset(name, None)


@pytest.mark.slow
@pytest.mark.parametrize("name, model", [("mnist", "lenet5"), ("fashion-mnist", "mlp")])
def test_trained_exported_models_are_exact_on_all_test_images(name, model, tmp_path):
    """Issue 4's contract on real data: a trained, exported model, all 10,000 test images, three executors."""
    from bnn_export.api import export_run
    from bnn_runtime.format import read_bnn
    from bnn_runtime.model import load
    from bnn_train.config import ModelConfig, RunConfig, TrainConfig
    from bnn_train.train import fit

    data_dir = dataset_dir(name)
    run = tmp_path / "run"
    fit(
        RunConfig(
            ModelConfig(model=model, hidden=(256, 100)),
            TrainConfig(dataset=name, data_dir=str(data_dir), epochs=1, batch_size=256),
        ),
        run,
        plot=False,
    )
    report = export_run(run, tmp_path / "m.bnn", None, data_dir=str(data_dir))
    x = _idx_test_images(name, None)
    assert_exact(read_bnn(tmp_path / "m.bnn"), x, threads=(2,))
    from bnn_train.data import load_dataset

    y = load_dataset(TrainConfig(dataset=name, data_dir=str(data_dir))).y_test.numpy()
    assert float((load(tmp_path / "m.bnn").predict(x) == y).mean()) == report.accuracy["bnn"]


def _conv_bits_model(rng, c_bits: int, h: int, w: int, k: tuple, pad: tuple, pool, n_out: int, enc: str):
    """uint8 conv (c_bits outputs, 3x3 pad 1) -> conv of bits (the layer under test) -> dense scores."""
    from bnn_runtime.bits import pack_signs
    from bnn_runtime.format import parse, to_bytes

    layers, arrays = [], {}

    def add(name, layer, fan_in, out, last=False):
        signs = rng.choice(np.array([-1, 1], np.int8), (out, fan_in))
        arrays[f"{name}.weight"] = pack_signs(signs)
        layer.update(name=name, fan_in=fan_in, out_features=out)
        if last:
            layer.update(
                output="scores",
                arrays={"weight": f"{name}.weight", "scale": f"{name}.scale", "offset": f"{name}.offset"},
            )
            arrays[f"{name}.scale"] = np.ones(out)
            arrays[f"{name}.offset"] = np.zeros(out)
        else:
            spread = np.sqrt(fan_in) * (147 if layer["in_encoding"] == "uint8" else 0.7)
            arrays[f"{name}.threshold"] = np.round(rng.normal(0, spread, out)).astype(np.int32)
            arrays[f"{name}.direction"] = rng.choice(np.array([-1, 1], np.int8), out)
            layer.update(
                output="threshold",
                arrays={"weight": f"{name}.weight", "threshold": f"{name}.threshold", "direction": f"{name}.direction"},
            )
        layers.append(layer)

    add(
        "c1",
        {
            "kind": "conv",
            "in_encoding": "uint8",
            "in_shape": [1, h, w],
            "kernel": [3, 3],
            "padding": [1, 1],
            "pool": None,
            "out_shape": [c_bits, h, w],
            "out_encoding": enc,
        },
        9,
        c_bits,
    )
    oh, ow = h + 2 * pad[0] - k[0] + 1, w + 2 * pad[1] - k[1] + 1
    if pool:
        oh, ow = oh // pool[0], ow // pool[1]
    add(
        "c2",
        {
            "kind": "conv",
            "in_encoding": enc,
            "in_shape": [c_bits, h, w],
            "kernel": list(k),
            "padding": list(pad),
            "pool": {"kind": "or", "size": list(pool)} if pool else None,
            "out_shape": [n_out, oh, ow],
            "out_encoding": "01",
        },
        c_bits * k[0] * k[1],
        n_out,
    )
    add(
        "d",
        {"kind": "dense", "in_encoding": "01", "in_shape": [n_out * oh * ow], "pool": None, "out_shape": [3]},
        n_out * oh * ow,
        3,
        last=True,
    )
    manifest = {
        "format": "bnn",
        "version": 1,
        "input": {"dtype": "uint8", "shape": [1, h, w]},
        "classes": ["a", "b", "c"],
        "layers": layers,
        "provenance": {"test": "lut"},
    }
    return parse(to_bytes(manifest, arrays))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 8),
    st.integers(3, 13),
    st.integers(3, 13),
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(0, 2),
    st.integers(0, 2),
    st.sampled_from([None, (2, 2), (1, 3), (3, 2)]),
    st.sampled_from([1, 5, 16, 17, 33]),
    st.sampled_from(["01", "pm1"]),
    st.integers(1, 40),
    st.integers(0, 2**31 - 1),
    st.booleans(),
)
def test_convolutions_of_few_channels_are_exact(c, h, w, kh, kw, ph, pw, pool, n_out, enc, n, seed, runs):
    """Convolutions of bits with 1..8 channels run on patches of kernel-row runs (conv_runs, kw * C <= 64 bits), or,
    with that planner off, by table lookup (kernels.conv_lut): any width, padding, pool."""
    from unittest import mock

    from bnn_runtime import plan
    from bnn_runtime.layout import KIND_CONV_BITS, KIND_CONV_LUT, KIND_CONV_RUNS
    from bnn_runtime.plan import LUT_MAX_BYTES, lut_layout

    if enc == "pm1":
        ph = pw = 0  # as random_bnn: no zero padding of +-1 bits
    kh, kw = min(kh, h + 2 * ph), min(kw, w + 2 * pw)
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    if pool and (oh // pool[0] < 1 or ow // pool[1] < 1):
        pool = None
    rng = np.random.default_rng(seed)
    bnn = _conv_bits_model(rng, c, h, w, (kh, kw), (ph, pw), pool, n_out, enc)
    g, ng = lut_layout(c, kw)
    fits = kh * ng * 2 ** (g * c) * -(-n_out // 16) * 16 * 2 <= LUT_MAX_BYTES
    x = rng.integers(0, 256, (n, 1, h, w), dtype=np.uint8)
    if runs:
        assert kw * c <= 64 and BnnModel(bnn).plan.params[1, 0] == KIND_CONV_RUNS
        assert_exact(bnn, x, onnx=False)
        return
    with mock.patch.object(plan, "plan_conv_runs", lambda li: None):
        assert BnnModel(bnn).plan.params[1, 0] == (KIND_CONV_LUT if fits else KIND_CONV_BITS)
        assert_exact(bnn, x, onnx=False)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 300),
    st.integers(1, 40),
    st.sampled_from([1, 255, 2**20, 2**40]),
    st.integers(0, 2**32 - 1),
)
def test_reference_matmul_is_exact_integer_arithmetic(n, k, m, big, seed):
    from bnn_runtime.reference import _exact_matmul

    rng = np.random.default_rng(seed)
    a = rng.integers(-big, big + 1, size=(n, k), dtype=np.int64)
    b = rng.integers(-1, 2, size=(k, m), dtype=np.int64)
    got = _exact_matmul(a, b)
    assert got.dtype == np.int64
    assert np.array_equal(got, a @ b)


@pytest.mark.parametrize("fan_in,width", [(4, 1), (64, 16), (100, 47), (784, 48), (784, 49), (196, 130), (30, 100)])
def test_first_dense_layer_both_kernels_are_exact(monkeypatch, fan_in, width):
    """A first dense layer on bytes runs on VNNI where the CPU has it and the fan-in is a multiple of 4,
    else on 8 bit planes; both are exact, around their register blocks (8 images x 48 outputs)."""
    from bnn_runtime import host
    from bnn_runtime.layout import KIND_DENSE_U8, KIND_DENSE_VNNI

    rng = np.random.default_rng(fan_in * 1000 + width)
    for kind in ("mlp", "suc"):  # a hidden layer writing bits; a single layer writing scores
        cfg = random_config(rng, kind, "heaviside", True, hidden=(width,), in_shape=(fan_in,))
        bnn, _ = to_bnn(random_model(cfg, width), cfg)
        for use_vnni in (host.USE_VNNI, False):
            monkeypatch.setattr(host, "USE_VNNI", use_vnni)
            model = BnnModel(bnn, threads=2)
            vnni = use_vnni and fan_in % 4 == 0
            assert model.plan.params[0, 0] == (KIND_DENSE_VNNI if vnni else KIND_DENSE_U8)
            for n in (1, 9, 70):
                x = random_inputs(rng, cfg.in_shape, n)
                x[0] = 255  # the largest sums
                assert np.array_equal(model.scores(x), reference_scores(bnn, x)), (kind, use_vnni, n)


def test_vnni_emulation_is_exact(tmp_path):
    """BNN_RUNTIME_VNNI=emulate compiles the VNNI kernel as a CPU without VNNI does (portable vector
    code) and runs it: the same scores. In a fresh process with its own numba cache."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(5)
    cfg = random_config(rng, "mlp", "sign", True, hidden=(50, 20), in_shape=(1, 8, 8))
    _, data = to_bnn(random_model(cfg, 5), cfg)
    (tmp_path / "m.bnn").write_bytes(data)
    code = (
        "import numpy as np, bnn_runtime\n"
        "from bnn_runtime import simd as kernels\n"
        "from bnn_runtime.reference import reference_scores\n"
        "assert kernels.USE_VNNI and not kernels.VNNI_NATIVE\n"
        f"m = bnn_runtime.load({str(tmp_path / 'm.bnn')!r}, threads=1)\n"
        "assert m.plan.params[0, 0] == 5\n"
        "x = np.random.default_rng(0).integers(0, 256, (37, 1, 8, 8), dtype=np.uint8)\n"
        "print(np.array_equal(m.scores(x), reference_scores(m.file, x)))\n"
    )
    env = dict(os.environ, BNN_RUNTIME_VNNI="emulate", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"
