"""Strided convolutions and strided / overlapping OR-pooling (format version 2 fields) in the runtime, exactly.

The models are built straight from manifests (``stride`` on a conv layer, ``stride`` on its pool),
so that every kernel that convolves -- the integer first layer (conv_u8), the table convolution
of few channels (conv_lut) and the im2col popcount product (conv_bits) -- meets kernels 1..7,
strides 1..3, paddings, pooling windows and strides (overlapping ones included), channel
counts that are not multiples of 8, batch 1 and odd batches, 1 and 2 threads. The oracle is
the NumPy reference; one plain loop convolution checks the reference's strides itself.
"""

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bnn_runtime.bits import pack_signs
from bnn_runtime.format import BnnFile
from bnn_runtime.layout import COL_KIND, KIND_NAMES
from bnn_runtime.model import BnnModel
from bnn_runtime.reference import _conv_sums, _or_pool, predict_from_scores, reference_scores

from .random_bnn import manifest


def _out(n: int, k: int, p: int, s: int) -> int:
    return (n + 2 * p - k) // s + 1


@st.composite
def conv_specs(draw, c: int, h: int, w: int, enc: str):
    """A conv layer's geometry on a C x H x W input that fits: kernel, padding, stride, pool window and stride."""
    kh, kw = draw(st.integers(1, min(7, h))), draw(st.integers(1, min(7, w)))
    ph, pw = (0, 0) if enc == "pm1" else (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    oh, ow = _out(h, kh, ph, sh), _out(w, kw, pw, sw)
    pool = None
    if draw(st.booleans()):
        qh, qw = draw(st.integers(1, min(3, oh))), draw(st.integers(1, min(3, ow)))
        qsh, qsw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        pool = {"kind": "or", "size": [qh, qw], "stride": [qsh, qsw]}
        oh, ow = (oh - qh) // qsh + 1, (ow - qw) // qsw + 1
    return {"kernel": [kh, kw], "padding": [ph, pw], "stride": [sh, sw], "pool": pool}, (oh, ow)


@st.composite
def strided_models(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    c, h, w = draw(st.sampled_from([1, 3])), draw(st.integers(4, 16)), draw(st.integers(4, 16))
    layers, arrays, cur, enc = [], {}, (c, h, w), "uint8"
    n_conv = draw(st.integers(1, 3))
    for i in range(n_conv + 1):
        name, last = f"l{i}", i == n_conv
        layer = {"name": name, "in_encoding": enc, "in_shape": list(cur) if i < n_conv else [int(np.prod(cur))]}
        if i < n_conv:
            spec, (oh, ow) = draw(conv_specs(*cur, enc))
            out = draw(st.sampled_from([1, 3, 5, 8, 9, 17, 33, 64]))  # 64: the next conv copies whole words
            fan_in = cur[0] * spec["kernel"][0] * spec["kernel"][1]
            layer.update(kind="conv", out_features=out, out_shape=[out, oh, ow], **spec)
            cur = (out, oh, ow)
        else:
            out = draw(st.integers(2, 5))
            fan_in = int(np.prod(cur))
            layer.update(kind="dense", pool=None, out_features=out, out_shape=[out])
        signs = rng.choice(np.array([-1, 1], np.int8), (out, fan_in))
        arrays[f"{name}.weight"] = pack_signs(signs)
        layer["fan_in"] = fan_in
        if last:
            layer.update(output="scores", arrays={r: f"{name}.{r}" for r in ("weight", "scale", "offset")})
            arrays[f"{name}.scale"], arrays[f"{name}.offset"] = rng.normal(0, 1, out), rng.normal(0, 2, out)
        else:
            spread = np.sqrt(fan_in) * (147 if enc == "uint8" else 0.7)
            arrays[f"{name}.threshold"] = np.round(rng.normal(0, spread, out)).astype(np.int32)
            arrays[f"{name}.direction"] = rng.choice(np.array([-1, 1], np.int8), out)
            enc = draw(st.sampled_from(["01", "pm1"]))
            layer.update(
                output="threshold",
                out_encoding=enc,
                arrays={r: f"{name}.{r}" for r in ("weight", "threshold", "direction")},
            )
        layers.append(layer)
    return BnnFile(manifest((c, h, w), layers, "strided"), arrays)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(strided_models(), st.sampled_from([1, 2, 7, 33]), st.integers(0, 2**32 - 1))
def test_strided_convolutions_and_pools_are_exact(bnn, n, seed):
    x = np.random.default_rng(seed).integers(0, 256, (n, *bnn.input_shape), dtype=np.uint8)
    ref = reference_scores(bnn, x)
    labels = predict_from_scores(bnn, ref)
    for threads in (1, 2):
        model = BnnModel(bnn, threads=threads)
        event(" ".join(KIND_NAMES[k] for k in model.plan.params[:, COL_KIND]))
        scores, pred = model.run(x)
        assert np.array_equal(scores, ref), f"threads={threads}: {np.argwhere(scores != ref)[:5]}"
        assert np.array_equal(pred, labels)
        assert np.array_equal(model.scores(x[-1:]), ref[-1:])


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(0, 2),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(0, 2**32 - 1),
)
def test_reference_stride_and_pool_are_the_plain_loops(h, w, kh, kw, pad, sh, sw, qh, qsh, seed):
    """The reference's strided conv sums and overlapping OR-pool equal loops over the definition."""
    kh, kw = min(kh, h + 2 * pad), min(kw, w + 2 * pad)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (2, 2, h, w))
    wt = rng.choice([-1, 1], (3, 2, kh, kw))
    oh, ow = _out(h, kh, pad, sh), _out(w, kw, pad, sw)
    padded = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    want = np.array(
        [
            [
                [
                    [(padded[n, :, y * sh : y * sh + kh, x * sw : x * sw + kw] * wt[o]).sum() for x in range(ow)]
                    for y in range(oh)
                ]
                for o in range(3)
            ]
            for n in range(2)
        ]
    )
    assert np.array_equal(_conv_sums(a, wt, (pad, pad), (sh, sw)), want)
    bits = (want > 0).astype(np.uint8)
    if oh >= qh and ow >= qh:
        ph_, pw_ = (oh - qh) // qsh + 1, (ow - qh) // qsh + 1
        pooled = np.array(
            [
                [
                    [
                        [bits[n, o, y * qsh : y * qsh + qh, x * qsh : x * qsh + qh].max() for x in range(pw_)]
                        for y in range(ph_)
                    ]
                    for o in range(3)
                ]
                for n in range(2)
            ]
        )
        assert np.array_equal(_or_pool(bits, (qh, qh), (qsh, qsh)), pooled)
