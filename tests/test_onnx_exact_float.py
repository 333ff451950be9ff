"""The exported ONNX: exact float32 Conv/Gemm where every sum fits 2**24, the integer graph where not;
onnxruntime on either == the reference (scores, logits, labels), bit for bit."""

import itertools

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnn_export.api import onnx_session
from bnn_export.onnx_bnn import bnn_to_onnx, bnn_to_onnx_integer
from bnn_export.onnx_exact_float import CONV_FORMS, bnn_to_onnx_float, conv_form, exact_float_fits
from bnn_runtime.bits import pack_signs
from bnn_runtime.format import parse, read_bnn, to_bytes
from bnn_runtime.reference import predict_from_scores, reference_logits, reference_scores

from .random_bnn import random_bnn
from .test_runtime_portable import GOLDEN, NAMES


def run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    s = onnx_session(model.SerializeToString(), threads=1)
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"images": x}), strict=False))


def ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


FORM_OPS = {"quantized": "QLinearConv", "banded": "MatMulInteger", "float": "Conv"}


def forms(bnn) -> list[str | None]:
    """Each layer's convolution form (None for a dense layer), as the exporter chooses it."""
    last = len(bnn.layers) - 1
    return [conv_form(bnn, layer, i == last) if layer["kind"] == "conv" else None for i, layer in enumerate(bnn.layers)]


def layer_ops(model: onnx.ModelProto) -> dict[str, str]:
    """{layer name: the operator of its sums}: the nodes named after a layer (``Graph.op``'s ``name_N``)."""
    found: dict[str, set[str]] = {}
    for n in model.graph.node:
        if n.op_type in ("Conv", "QLinearConv", "MatMulInteger"):
            found.setdefault(n.name.rsplit("_", 1)[0], set()).add(n.op_type)
    assert all(len(kinds) == 1 for kinds in found.values()), found
    return {name: kinds.pop() for name, kinds in found.items()}


def assert_exact(bnn, model: onnx.ModelProto, x: np.ndarray) -> None:
    out = run(model, x)
    ref = reference_scores(bnn, x)
    assert out["scores"].dtype == np.int32 and np.array_equal(out["scores"], ref)
    assert np.array_equal(out["label"], predict_from_scores(bnn, ref))
    if "logits" in out:
        assert out["logits"].dtype == np.float64 and np.array_equal(out["logits"], reference_logits(bnn, x))


@pytest.mark.parametrize("name", NAMES)
def test_golden_models_export_exact_float_graphs(name):
    bnn = read_bnn(GOLDEN / f"{name}.bnn")
    with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as f:
        x = f["x"]
    model = bnn_to_onnx(bnn)
    assert exact_float_fits(bnn)
    assert "ConvInteger" not in ops(model) and ops(model) & {"Conv", "Gemm", "MatMulInteger"}
    assert layer_ops(model) == {
        layer["name"]: "MatMulInteger" if layer["kind"] == "dense" else FORM_OPS[form]
        for layer, form in zip(bnn.layers, forms(bnn), strict=True)
    }
    assert {p.key: p.value for p in model.metadata_props}["graph"] == "exact float32"
    assert_exact(bnn, model, x)
    assert_exact(bnn, model, x[:1])
    assert_exact(bnn, bnn_to_onnx_integer(bnn), x)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**31 - 1), st.integers(1, 20))
def test_random_layouts_both_graphs(seed, n):
    rng = np.random.default_rng(seed)
    bnn, _ = random_bnn(rng)
    x = rng.integers(0, 256, (n, *bnn.input_shape), dtype=np.uint8)
    x[0] = 255  # the largest sums
    assert_exact(bnn, bnn_to_onnx(bnn), x)
    assert_exact(bnn, bnn_to_onnx_integer(bnn), x)


def test_a_first_layer_beyond_float32_exactness_exports_the_integer_graph():
    """255 * 66,000 > 2**24: float32 would round these sums, so the export keeps the integer operators."""
    fan_in, rng = 66_000, np.random.default_rng(0)
    signs = np.ones((2, fan_in), np.int8)
    signs[1, ::3] = -1
    manifest = {
        "format": "bnn",
        "version": 1,
        "input": {"dtype": "uint8", "shape": [fan_in]},
        "classes": ["a", "b"],
        "layers": [
            {
                "name": "fc",
                "kind": "dense",
                "in_encoding": "uint8",
                "in_shape": [fan_in],
                "fan_in": fan_in,
                "out_features": 2,
                "output": "scores",
                "pool": None,
                "out_shape": [2],
                "arrays": {"weight": "w", "scale": "s", "offset": "o"},
            }
        ],
    }
    arrays = {"w": pack_signs(signs), "s": np.array([1.0, 1.0]), "o": np.array([0.0, 0.5])}
    bnn = parse(to_bytes(manifest, arrays))
    assert not exact_float_fits(bnn)
    model = bnn_to_onnx(bnn)
    assert "MatMulInteger" in ops(model) and {p.key: p.value for p in model.metadata_props}["graph"] == "integer"
    x = rng.integers(200, 256, (3, fan_in), dtype=np.uint8)
    x[0] = 255
    assert_exact(bnn, model, x)


def optimized_ops(model: onnx.ModelProto, tmp_path, level: str = "ORT_ENABLE_ALL") -> list[tuple[str, str]]:
    """(op type, fused activation) of each node of the graph onnxruntime runs after its optimisations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    nodes = onnx.load(opts.optimized_model_filepath).graph.node
    return [(n.op_type, next((a.s.decode() for a in n.attribute if a.name == "activation"), "")) for n in nodes]


def test_lenet5_convolutions_are_banded_integer_products(tmp_path):
    """LeNet-5's convolutions (1 and 6 input channels) are one MatMulInteger each: the uint8 rows behind each pooled
    output row, Gathered from the row layout, times the banded int8 matrices of the 2x2 pool's four positions side
    by side; the pool is the element-wise Max of the four Split parts of the int32 sums, the step GreaterOrEqual; no
    float operator before the logits, and onnxruntime runs the graph as it is."""
    bnn = read_bnn(GOLDEN / "lenet5_mnist.bnn")
    model = bnn_to_onnx(bnn)
    assert forms(bnn) == ["banded", "banded", None, None, None]
    producer = {o: n for n in model.graph.node for o in n.output}
    pools = [n for n in model.graph.node if n.op_type == "Max"]
    assert len(pools) == 2 and all(len(n.input) == 4 for n in pools)
    splits = [producer[n.input[0]] for n in pools]
    assert all(
        split.op_type == "Split" and list(split.output) == list(n.input) for split, n in zip(splits, pools, strict=True)
    )
    products = [producer[split.input[0]] for split in splits]
    assert all(n.op_type == "MatMulInteger" and producer[n.input[0]].op_type == "Reshape" for n in products)
    assert all(producer[producer[n.input[0]].input[0]].op_type == "Gather" for n in products)
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    bands = [arrays[n.input[1]] for n in products]
    assert all(w.dtype == np.int8 and set(np.unique(w)) <= {-1, 0, 1} for w in bands)
    assert [w.shape for w in bands] == [(6 * 1 * 28, 4 * 6 * 14), (6 * 6 * 14, 4 * 16 * 5)]  # 6 = 5 taps + 1 row
    compares = [n for n in model.graph.node if n.op_type == "GreaterOrEqual"]
    assert [producer[n.input[0]].op_type for n in compares] == ["Max", "Max", "MatMulInteger", "MatMulInteger"]
    assert not ops(model) & {"Conv", "HardSigmoid", "Gemm", "QLinearConv"}
    floats = [n for n in model.graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT]
    assert floats == []
    assert [op for op, _ in optimized_ops(model, tmp_path)] == [n.op_type for n in model.graph.node]


def test_wide_convolutions_are_qlinearconv_of_saturated_bits(tmp_path):
    """A convolution with >= 16 input channels is QLinearConv: uint8 input (scale 1), int8 +-1 weights (scale 1), an
    int32 bias, the output scale k/255 that saturates every sum >= 1 to 255 and every sum <= 0 to 0; its pool a
    MaxPool of those uint8 bits; onnxruntime runs it in NHWC. Exact on 255s, 0s and random pixels."""
    from bnn_export.synthetic import synthetic_bnn

    bnn = parse(to_bytes(*synthetic_bnn("16C3-16C3-MP2-32C3-MP2-32FC", (3, 12, 12))))
    model = bnn_to_onnx(bnn)
    assert forms(bnn) == ["banded", "quantized", "quantized", None, None]
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    qconvs = [n for n in model.graph.node if n.op_type == "QLinearConv"]
    for node, k in zip(qconvs, (1, 255), strict=True):  # the first takes 0/1 bits, the second 0/255
        x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero, bias = (arrays[i] for i in node.input[1:])
        assert (x_scale, w_scale, x_zero, w_zero, y_zero) == (1.0, 1.0, 0, 0, 0)
        assert w.dtype == np.int8 and set(np.unique(w)) <= {-1, 1} and bias.dtype == np.int32
        assert y_scale == np.float32(k / 255)
    producer = {n.output[0]: n.op_type for n in model.graph.node}
    pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    assert [producer[n.input[0]] for n in pools] == ["QLinearConv", "QLinearConv"]
    optimized = [op for op, _ in optimized_ops(model, tmp_path)]
    assert optimized.count("QLinearConv") == 2 and optimized.count("NhwcMaxPool") == 2
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (32, *bnn.input_shape), dtype=np.uint8)
    x[0], x[1] = 255, 0
    assert_exact(bnn, model, x)


@pytest.mark.parametrize("prefer", CONV_FORMS)
@pytest.mark.parametrize("name", NAMES)
def test_every_convolution_form_is_exact_on_the_golden_models(name, prefer):
    """Each form forced on every convolution where it is exact: the same scores, logits and labels."""
    bnn = read_bnn(GOLDEN / f"{name}.bnn")
    with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as f:
        x = f["x"]
    model = bnn_to_onnx_float(bnn, prefer=prefer)
    hidden = [layer for layer, form in zip(bnn.layers, forms(bnn), strict=True) if form not in (None, "float")]
    assert all(layer_ops(model)[layer["name"]] == FORM_OPS[prefer] for layer in hidden)
    assert_exact(bnn, model, x)


def test_every_pair_of_convolution_forms_is_exact():
    """Three convolutions (1 -> 1 -> 3 -> 4 channels, then strided and zero-padded) in each of the 27 sequences of
    forms: every change between forms, on one channel and on several, keeps the runtime's numbers."""
    from bnn_export.synthetic import synthetic_bnn

    bnn = parse(to_bytes(*synthetic_bnn("1C3-3C3-MP2-4C3s2-8FC", (1, 13, 11))))
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (16, *bnn.input_shape), dtype=np.uint8)
    x[0], x[1] = 255, 0
    names = [layer["name"] for layer in bnn.layers if layer["kind"] == "conv"]
    for wishes in itertools.product(CONV_FORMS, repeat=len(names)):
        model = bnn_to_onnx_float(bnn, prefer=dict(zip(names, wishes, strict=True)))
        assert [layer_ops(model)[n] for n in names] == [FORM_OPS[w] for w in wishes]
        assert_exact(bnn, model, x)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**31 - 1), st.integers(1, 12), st.lists(st.sampled_from(CONV_FORMS), min_size=2, max_size=2))
def test_any_sequence_of_convolution_forms_is_exact(seed, n, wishes):
    """Random layouts, each convolution in a drawn form: every change of layout and value encoding between two
    forms (float 0/1, uint8 0/1 or 0/255, NCHW or row layout) keeps the runtime's numbers."""
    rng = np.random.default_rng(seed)
    bnn, _ = random_bnn(rng)
    x = rng.integers(0, 256, (n, *bnn.input_shape), dtype=np.uint8)
    x[0] = 255
    prefer = {layer["name"]: wish for layer, wish in zip(bnn.layers, wishes, strict=False)}
    assert_exact(bnn, bnn_to_onnx_float(bnn, prefer=prefer), x)


@pytest.mark.parametrize("level", ["ORT_DISABLE_ALL", "ORT_ENABLE_ALL"])
def test_unfused_and_fused_steps_are_exact(level, tmp_path):
    """Another ONNX runtime may run HardSigmoid as its own operator: onnxruntime without graph optimisations
    does, and computes the same bits as with them (all golden models, every test image)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    for name in NAMES:
        bnn = read_bnn(GOLDEN / f"{name}.bnn")
        with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as f:
            x = f["x"]
        s = ort.InferenceSession(bnn_to_onnx(bnn).SerializeToString(), opts, providers=["CPUExecutionProvider"])
        out = dict(zip([o.name for o in s.get_outputs()], s.run(None, {"images": x}), strict=True))
        ref = reference_scores(bnn, x)
        assert np.array_equal(out["scores"], ref) and np.array_equal(out["label"], predict_from_scores(bnn, ref))
        if "logits" in out:
            assert np.array_equal(out["logits"], reference_logits(bnn, x))


@pytest.mark.parametrize("name", NAMES)
def test_outputs_come_straight_from_their_nodes(name):
    """No Identity copies the outputs (the logits also feed the ArgMax: onnxruntime would keep a copy), and a
    network on (N, features) inputs has no Flatten (a node that does nothing still costs its dispatch)."""
    bnn = read_bnn(GOLDEN / f"{name}.bnn")
    model = bnn_to_onnx(bnn)
    assert "Identity" not in ops(model)
    produced = {o for n in model.graph.node for o in n.output}
    assert {o.name for o in model.graph.output} <= produced
    flattens = sum(n.op_type == "Flatten" for n in model.graph.node)
    assert flattens == (len(bnn.input_shape) > 1 and any(layer["kind"] == "dense" for layer in bnn.layers))


def test_a_dense_network_multiplies_uint8_pixels_and_bits_as_integers():
    """MLP: every layer is MatMulInteger of uint8 values (the pixels uncast, then bits) and int8 weights (+-1 on
    the pixels, +-2 on the pm1 bits); exact on 255s, 0s and random pixels (the largest sums, both signs)."""
    bnn = read_bnn(GOLDEN / "mlp_sign_pixels.bnn")
    model = bnn_to_onnx(bnn)
    first = model.graph.node[0]
    assert first.op_type == "MatMulInteger" and first.input[0] == "images"
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = [arrays[n.input[1]] for n in model.graph.node if n.op_type == "MatMulInteger"]
    assert [w.shape for w in weights] == [(layer["fan_in"], layer["out_features"]) for layer in bnn.layers]
    assert all(w.dtype == np.int8 for w in weights) and set(np.unique(weights[0])) <= {-1, 1}
    assert all(set(np.unique(w)) <= {-2, 2} for w in weights[1:])  # pm1 inputs as 0/1 bits: 2 w
    assert "Gemm" not in ops(model) and "HardSigmoid" not in ops(model)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (64, *bnn.input_shape), dtype=np.uint8)
    x[0], x[1] = 255, 0
    assert_exact(bnn, model, x)
