"""One image shared between threads (split.py): exact against the NumPy reference, whoever computes which chunk.

The models are random manifests (convolutions with strides and pools, hidden dense layers of bits,
widths not multiples of 64) planned with every layer cut into as many chunks as it allows
(``CHUNK_WORD_OPS`` = 1) and split from any size on (``SPLIT_MIN_WORD_OPS`` = 0). Besides the two
threads racing through batch 1, the calling thread is run alone against a helper that claimed
chunks and never committed them (descheduled for good), and a helper that starts after the
calling thread returned: neither may change a bit of the result, and neither may hang.
"""

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from bnn_runtime import compiled, split, split_plan
from bnn_runtime import kernels as K
from bnn_runtime.bits import n_words, pack_bits, pack_signs, unpack_bits
from bnn_runtime.format import BnnFile
from bnn_runtime.layout import COL_CHUNKS, COL_SPLIT_STATE, SLOT_SPLIT, SPLIT_TILE, USES_SPLIT
from bnn_runtime.model import BnnModel
from bnn_runtime.reference import predict_from_scores, reference_scores

from .random_bnn import manifest
from .test_runtime_kernels import _work


@pytest.fixture(autouse=True)
def every_model_splits(monkeypatch):
    monkeypatch.setattr(split_plan, "SPLIT_MIN_WORD_OPS", 0)
    monkeypatch.setattr(split_plan, "CHUNK_WORD_OPS", 1)


def _layer(rng, name, enc, cur, kind, out, spec, last):
    fan_in = int(np.prod(cur)) if kind == "dense" else cur[0] * spec["kernel"][0] * spec["kernel"][1]
    layer = {"name": name, "kind": kind, "in_encoding": enc, "out_features": out, "fan_in": fan_in}
    arrays = {f"{name}.weight": pack_signs(rng.choice(np.array([-1, 1], np.int8), (out, fan_in)))}
    if last:
        layer.update(output="scores", arrays={r: f"{name}.{r}" for r in ("weight", "scale", "offset")})
        arrays[f"{name}.scale"], arrays[f"{name}.offset"] = rng.normal(0, 1, out), rng.normal(0, 2, out)
    else:
        spread = np.sqrt(fan_in) * (147 if enc == "uint8" else 0.7)
        arrays[f"{name}.threshold"] = np.round(rng.normal(0, spread, out)).astype(np.int32)
        arrays[f"{name}.direction"] = rng.choice(np.array([-1, 1], np.int8), out)
        layer.update(output="threshold", arrays={r: f"{name}.{r}" for r in ("weight", "threshold", "direction")})
    return layer, arrays


def _conv_spec(rng, c, h, w, enc):
    """A conv layer's geometry that fits C x H x W: kernel 1-5, padding, mostly stride 1, sometimes a pool."""
    kh, kw = (int(rng.integers(1, min(5, d) + 1)) for d in (h, w))
    ph, pw = (0, 0) if enc == "pm1" else (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    sh, sw = (int(rng.choice([1, 1, 1, 2, 3])) for _ in range(2))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    pool = None
    if rng.random() < 0.5 and min(oh, ow) >= 2:
        q, qs = int(rng.integers(2, 4)), int(rng.integers(1, 3))
        q = min(q, oh, ow)
        pool = {"kind": "or", "size": [q, q], "stride": [qs, qs]}
        oh, ow = (oh - q) // qs + 1, (ow - q) // qs + 1
    return {"kernel": [kh, kw], "padding": [ph, pw], "stride": [sh, sw], "pool": pool}, (oh, ow)


@st.composite
def split_models(draw):
    """0-3 convolutions (mostly the im2col product, some table ones), 0-2 hidden dense layers; the structure
    from a seeded generator (uniform, not shrunk towards the smallest networks, which have one chunk a layer)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    c, h, w = int(rng.choice([1, 3])), int(rng.integers(6, 17)), int(rng.integers(6, 17))
    kinds = ["conv"] * int(rng.choice([0, 1, 2, 2, 3, 3])) + ["dense"] * int(rng.integers(0, 3)) + ["dense"]
    layers, arrays, cur, enc = [], {}, (c, h, w), "uint8"
    for i, kind in enumerate(kinds):
        last = i == len(kinds) - 1
        out = int(rng.integers(2, 10)) if last else int(rng.choice([5, 17, 32, 64, 65, 96, 128, 130, 300]))
        spec = {}
        if kind == "conv":
            spec, (oh, ow) = _conv_spec(rng, *cur, enc)
        layer, arr = _layer(rng, f"l{i}", enc, cur, kind, out, spec, last)
        layer["in_shape"] = list(cur) if kind == "conv" else [int(np.prod(cur))]
        if kind == "conv":
            layer.update(out_shape=[out, oh, ow], **spec)
            cur = (out, oh, ow)
        else:
            layer.update(pool=None, out_shape=[out])
            cur = (out,)
        if not last:
            enc = str(rng.choice(["01", "pm1"]))
            layer["out_encoding"] = enc
        layers.append(layer)
        arrays |= arr
    return BnnFile(manifest((c, h, w), layers, "split"), arrays)


@settings(max_examples=60, deadline=None)
@given(split_models(), st.sampled_from([1, 1, 2, 3]), st.integers(0, 2**32 - 1))
def test_images_shared_between_threads_are_exact(bnn, n, seed):
    x = np.random.default_rng(seed).integers(0, 256, (n, *bnn.input_shape), dtype=np.uint8)
    ref = reference_scores(bnn, x)
    model = BnnModel(bnn, threads=2)
    assert model.plan.uses & 1 << USES_SPLIT
    event(f"chunks per layer {model.plan.params[:, COL_CHUNKS].tolist()}")
    for _ in range(3):  # the helper arrives at a different layer each time
        scores, labels = model.run(x)
        assert np.array_equal(scores, ref), np.argwhere(scores != ref)[:5]
        assert np.array_equal(labels, predict_from_scores(bnn, ref))
        assert model.threads_used == 2


def _call(model, x, state=None, main=True):
    """driver.forward in split mode, one thread: (scores, labels, state)."""
    p = model.plan
    n = len(x)
    scores, labels = np.empty((n, p.n_scores), np.int32), np.empty(n, np.int64)
    if state is None:
        state = np.zeros(split_plan.state_size(n, n, int(p.sizes[SLOT_SPLIT])), np.int64)
    flat = x.reshape(n, -1)
    scratch = p.scratch(1, 1)[0]  # a split tile is one image
    compiled.forward(p.uses)(flat, SPLIT_TILE, p.sizes, *p.kernel_args, scores, labels, state, scratch, main)
    return scores, labels, state


@settings(max_examples=40, deadline=None)
@given(split_models(), st.integers(1, 3), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_the_calling_thread_takes_over_chunks_a_helper_never_finished(bnn, n, claimed, seed):
    """A helper claimed a share of every layer's chunks of every image and was never scheduled again."""
    x = np.random.default_rng(seed).integers(0, 256, (n, *bnn.input_shape), dtype=np.uint8)
    model = BnnModel(bnn, threads=2)
    p = model.plan
    per_image = int(p.sizes[SLOT_SPLIT])
    state = np.zeros(split_plan.state_size(n, n, per_image), np.int64)
    for i in range(n):
        for row in p.params[:-1]:
            state[1 + n + 1 + i * per_image + row[COL_SPLIT_STATE]] = round(claimed * row[COL_CHUNKS])
    scores, labels, state = _call(model, x, state)
    assert np.array_equal(scores, reference_scores(bnn, x))
    late = scores.copy()
    _call(model, x, state, main=False)  # the helper, scheduled at last: leaves, and changes nothing
    assert np.array_equal(scores, late)


@settings(max_examples=20, deadline=None)
@given(split_models(), st.integers(0, 2**32 - 1))
def test_a_helper_that_starts_after_the_call_changes_nothing(bnn, seed):
    x = np.random.default_rng(seed).integers(0, 256, (2, *bnn.input_shape), dtype=np.uint8)
    model = BnnModel(bnn, threads=2)
    scores, labels, state = _call(model, x)
    before = (scores.copy(), labels.copy(), state.copy())
    _call(model, x, state, main=False)
    assert np.array_equal(scores, before[0]) and np.array_equal(labels, before[1])
    assert np.array_equal(state, before[2])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 700), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_chunks_cover_each_output_word_once(n_out, units, group, seed):
    """plan_split's chunks of a convolution (pooled positions) and of a dense layer (outputs) start on a
    word of the output and together write every word of it once."""
    from bnn_runtime.layout import COL_OUT_WORDS, KIND_CONV_BITS, KIND_DENSE_BITS
    from bnn_runtime.plan import params_row

    for kind in (KIND_CONV_BITS, KIND_DENSE_BITS):
        conv = kind == KIND_CONV_BITS
        out_h = int(np.random.default_rng(seed).integers(1, units + 1)) if conv else 0
        out_w = -(-units // max(out_h, 1)) if conv else 0
        units_k = out_h * out_w if conv else n_out * 8
        width = n_out if conv else n_out * 8
        row = params_row(kind=kind, n_out=width, nw=3, out_h=out_h, out_w=out_w, pool_h=group, pool_w=1)
        last = params_row(kind=kind, n_out=2, nw=1)
        params = np.array([row, last])
        out_bits = units_k * n_out if conv else n_out * 8
        split_plan.plan_split(params, [out_bits, 2])
        p = params[0]
        assert p[COL_CHUNKS] <= split_plan.MAX_CHUNKS and p[COL_OUT_WORDS] == n_words(out_bits)
        words = []
        for c in range(p[COL_CHUNKS]):
            w0, w1, v0, v1 = split.chunk_extent(p, c)
            words += range(w0, w1)
            assert v0 < v1
        assert words == list(range(n_words(out_bits)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(1, 70), st.integers(1, 300), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_gemm_output_ranges_add_up_to_the_whole(nrows, n_out, fan_in, step, seed):
    """gemm over vectors [b, b + step) of 8 outputs, one range after the other, writes the bits of one call."""
    rng = np.random.default_rng(seed)
    nw = n_words(fan_in)
    a = pack_bits(rng.integers(0, 2, (nrows, fan_in)))
    pad = -(-n_out // 8) * 8
    w = np.zeros((pad, nw), np.uint64)
    w[:n_out] = pack_bits(rng.integers(0, 2, (n_out, fan_in)))
    wt = np.ascontiguousarray(w.reshape(-1, 8, nw).transpose(0, 2, 1)).ravel()
    consts = np.zeros((3, pad), np.int64)
    consts[1, :n_out] = rng.integers(-fan_in, fan_in, n_out)
    consts[2, :n_out] = rng.choice([-1, 1], n_out)
    rowbit = np.arange(nrows, dtype=np.int64) * (n_words(n_out) * 64)
    whole, parts = (np.zeros(nrows * n_words(n_out), np.uint64) for _ in range(2))
    none = np.zeros((1, 1), np.int32)
    K.gemm(a, nrows, nw, wt, n_out, 2, -1, consts, rowbit, 0, whole, none, 0, False, 0, K.ALL, _work(nrows))
    for b in range(0, pad // 8, step):
        K.gemm(a, nrows, nw, wt, n_out, 2, -1, consts, rowbit, 0, parts, none, 0, False, b, b + step, _work(nrows))
    assert np.array_equal(whole, parts)
    assert unpack_bits(whole.reshape(nrows, -1), n_words(n_out) * 64)[:, n_out:].sum() == 0
