"""The packed kernels one by one, each against a plain unpacked NumPy computation, exactly."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from bnn_runtime import first_layer as K1
from bnn_runtime import kernels as K
from bnn_runtime.bits import n_words, pack_bits, unpack_bits


@njit
def _popcount(x):
    return K.popcount(x)


@settings(deadline=None)
@given(st.integers(0, 2**64 - 1))
def test_popcount_counts_set_bits(v):
    assert _popcount(np.uint64(v)) == bin(v).count("1")


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_byte_planes_are_the_bits_of_every_byte(n, seed):
    x = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)
    nw = n_words(n) + 1  # a spare word must stay zero
    planes = np.full((8 + 3, nw), np.uint64(2**64 - 1))  # dirty scratch: the kernel must clear its rows
    total = K1.byte_planes(x, planes, 3, nw)
    assert total == int(x.sum(dtype=np.int64))
    for b in range(8):
        assert np.array_equal(unpack_bits(planes[3 + b, : n_words(n)], n), (x >> b) & 1)
        assert planes[3 + b, n_words(n) :].sum() == 0
    assert (planes[:3] == np.uint64(2**64 - 1)).all()  # rows of other images untouched


def _work(n: int) -> np.ndarray:
    """A kernel's int64 work space for n rows or images, dirty (a kernel must not read what it did not write)."""
    return np.full(n + 8, -(2**62), np.int64)


def _gemm_case(rng, nrows, n_out, fan_in, encoding):
    """A layer as plan.build_plan stores it for kernels.gemm: weights by columns of 8 outputs, consts padded to 8."""
    nw = n_words(fan_in) + int(rng.integers(0, 3))
    a_bits = rng.integers(0, 2, (nrows, fan_in))
    w_signs = rng.choice([-1, 1], (n_out, fan_in))
    pad = -(-n_out // 8) * 8
    a = np.zeros((nrows, nw), np.uint64)
    a[:, : n_words(fan_in)] = pack_bits(a_bits)
    w = np.zeros((pad, nw), np.uint64)
    w[:n_out, : n_words(fan_in)] = pack_bits(w_signs > 0)
    wt = np.ascontiguousarray(w.reshape(-1, 8, nw).transpose(0, 2, 1)).ravel()
    values = a_bits * 2 - 1 if encoding == "pm1" else a_bits
    s = values @ w_signs.T  # the plain dot products, (nrows, n_out)
    consts = np.zeros((3, pad), np.int64)
    alpha, beta = (4, -2) if encoding == "pm1" else (2, -1)
    if encoding == "pm1":
        consts[0, :n_out] = fan_in - 2 * (w_signs > 0).sum(axis=1)
    t = rng.integers(-fan_in, fan_in + 1, n_out)
    d = rng.choice([-1, 1], n_out)
    consts[1, :n_out], consts[2, :n_out] = d * t, d
    return a, nw, wt, consts, alpha, beta, s, t, d


GEMM = (
    st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9, 16, 17]),
    st.integers(1, 80),
    st.sampled_from([1, 63, 64, 65, 100, 511, 512, 600, 1000, 1152]),
    st.sampled_from(["01", "pm1"]),
    st.integers(0, 2**32 - 1),
)


@settings(max_examples=80, deadline=None)
@given(*GEMM)
def test_gemm_scores_are_the_dot_products(nrows, n_out, fan_in, encoding, seed):
    """gemm's scores (last layer) are the dot products, written from row 2 on and nowhere else."""
    rng = np.random.default_rng(seed)
    a, nw, wt, consts, alpha, beta, s, _, _ = _gemm_case(rng, nrows, n_out, fan_in, encoding)
    scores = np.zeros((nrows + 2, n_out + 1), np.int32)
    rowbit = np.zeros(nrows, np.int64)
    no_bits = np.zeros(1, np.uint64)
    K.gemm(a, nrows, nw, wt, n_out, alpha, beta, consts, rowbit, 0, no_bits, scores, 2, True, 0, K.ALL, _work(nrows))
    assert np.array_equal(scores[2:, :n_out], s)
    assert not scores[:2].any() and not scores[:, n_out].any()


@settings(max_examples=100, deadline=None)
@given(*GEMM)
def test_gemm_threshold_and_pack_images(nrows, n_out, fan_in, encoding, seed):
    """A dense layer: row i's bits at i * image_bits (row_bit_offsets of one row per image)."""
    rng = np.random.default_rng(seed)
    a, nw, wt, consts, alpha, beta, s, t, d = _gemm_case(rng, nrows, n_out, fan_in, encoding)
    image_words = n_words(n_out) + int(rng.integers(0, 2))
    out = np.zeros(nrows * image_words, np.uint64)
    rowbit = np.zeros(nrows, np.int64)
    K.row_bit_offsets(nrows, 1, 1, 0, image_words * 64, rowbit)
    none = np.zeros((1, 1), np.int32)
    K.gemm(a, nrows, nw, wt, n_out, alpha, beta, consts, rowbit, 0, out, none, 0, False, 0, K.ALL, _work(nrows))
    bits = np.where(d > 0, s >= t, s <= t)
    got = unpack_bits(out.reshape(nrows, image_words), image_words * 64)
    assert np.array_equal(got[:, :n_out], bits)
    assert not got[:, n_out:].any()


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 13),
    st.integers(1, 70),
    st.integers(1, 700),
    st.sampled_from(["01", "pm1"]),
    st.integers(1, 4),
    st.integers(0, 2**32 - 1),
)
def test_gemm_bits_threshold_pool_and_pack(nrows, n_out, fan_in, encoding, group, seed):
    """A convolution: rows of one pooling window OR into one output bit; the bits start at bit0."""
    rng = np.random.default_rng(seed)
    nrows = nrows * group
    a, nw, wt, consts, alpha, beta, s, t, d = _gemm_case(rng, nrows, n_out, fan_in, encoding)
    rows_per_image = group * int(rng.integers(1, 3))
    nrows -= nrows % rows_per_image
    if nrows == 0:
        return
    n_img, per_img = nrows // rows_per_image, rows_per_image // group
    image_words = n_words(per_img * n_out) + 1
    rowbit = np.zeros(nrows, np.int64)
    K.row_bit_offsets(nrows, rows_per_image, group, n_out, image_words * 64, rowbit)
    out = np.zeros((n_img + 1) * image_words, np.uint64)
    bit0 = image_words * 64
    none = np.zeros((1, 1), np.int32)
    K.gemm(a, nrows, nw, wt, n_out, alpha, beta, consts, rowbit, bit0, out, none, 0, False, 0, K.ALL, _work(nrows))
    bits = np.where(d > 0, s[:nrows] >= t, s[:nrows] <= t)  # (nrows, n_out)
    pooled = bits.reshape(n_img, per_img, group, n_out).max(axis=2)  # OR over each group of rows
    assert not out[:image_words].any()
    got = unpack_bits(out[image_words:].reshape(n_img, image_words), image_words * 64)
    assert np.array_equal(got[:, : per_img * n_out].reshape(n_img, per_img, n_out), pooled)
    assert not got[:, per_img * n_out :].any()


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from([1, 2, 3, 5, 16]),
    st.integers(1, 40),
    st.sampled_from([1, 8, 63, 64, 65, 200, 784, 1100]),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_dense_u8_sums_threshold_and_pack(n_img, n_out, fan_in, last, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n_img, fan_in)).astype(np.uint8)
    x[0, : fan_in // 2] = 255  # large sums
    w_signs = rng.choice([-1, 1], (n_out, fan_in))
    nw = -(-n_words(fan_in) // 4) * 4
    planes = np.zeros((8 * n_img, nw), np.uint64)
    xsum = np.array([K1.byte_planes(x[i], planes, 8 * i, nw) for i in range(n_img)], np.int64)
    pad = -(-n_out // 8) * 8
    w = np.zeros((pad, nw), np.uint64)
    w[:n_out, : n_words(fan_in)] = pack_bits(w_signs > 0)
    wt = np.ascontiguousarray(w.reshape(-1, 8, nw).transpose(0, 2, 1)).ravel()
    s = x.astype(np.int64) @ w_signs.T
    t = rng.integers(-100 * fan_in, 100 * fan_in + 1, n_out)
    d = rng.choice([-1, 1], n_out)
    consts = np.zeros((3, pad), np.int64)
    consts[1, :n_out], consts[2, :n_out] = d * t, d
    image_words = n_words(n_out) + 1
    out = np.zeros(n_img * image_words, np.uint64)
    scores = np.zeros((n_img + 1, n_out + 1), np.int32)
    K1.dense_u8(planes, n_img, nw, wt, n_out, xsum, consts, last, out, image_words * 64, scores, 1, _work(n_img))
    if last:
        assert np.array_equal(scores[1:, :n_out], s) and not scores[0].any() and not scores[:, n_out].any()
        assert not out.any()
        return
    got = unpack_bits(out.reshape(n_img, image_words), image_words * 64)
    assert np.array_equal(got[:, :n_out], np.where(d > 0, s >= t, s <= t))
    assert not got[:, n_out:].any() and not scores.any()


def _geometry(c, h, w, kh, kw, ph, pw, stride, pool, pool_stride, n_out):
    """A conv layer's params row (plan.conv_geometry) and its conv output size, pooled size."""
    from bnn_runtime.plan import conv_geometry, params_row

    oh, ow = (h + 2 * ph - kh) // stride[0] + 1, (w + 2 * pw - kw) // stride[1] + 1
    out_h, out_w = (oh - pool[0]) // pool_stride[0] + 1, (ow - pool[1]) // pool_stride[1] + 1
    layer = {
        "name": "l",
        "in_shape": [c, h, w],
        "kernel": [kh, kw],
        "padding": [ph, pw],
        "stride": list(stride),
        "pool": {"kind": "or", "size": list(pool), "stride": list(pool_stride)},
        "out_features": n_out,
        "out_shape": [n_out, out_h, out_w],
    }
    return params_row(n_out=n_out, **conv_geometry(layer))


def _conv_map(padded, kh, kw, stride, pool, pool_stride):
    """The patches of every pooled output's window, in the kernels' row order: [(py, px, dy, dx, y, x)]."""
    oh, ow = (padded.shape[-2] - kh) // stride[0] + 1, (padded.shape[-1] - kw) // stride[1] + 1
    out_h, out_w = (oh - pool[0]) // pool_stride[0] + 1, (ow - pool[1]) // pool_stride[1] + 1
    return [
        (py, px, dy, dx, (py * pool_stride[0] + dy) * stride[0], (px * pool_stride[1] + dx) * stride[1])
        for py in range(out_h)
        for px in range(out_w)
        for dy in range(pool[0])
        for dx in range(pool[1])
    ]


PAIRS = st.tuples(st.integers(1, 3), st.integers(1, 3))
GEOMETRY = (PAIRS, PAIRS, PAIRS)  # conv stride, pooling window and stride (overlaps)


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from([1, 2, 3, 5, 64, 128]),  # multiples of 64: whole-word copies
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(0, 2),
    st.integers(0, 2),
    st.integers(0, 2**32 - 1),
    *GEOMETRY,
)
def test_im2col_bits_is_the_padded_patch(c, h, w, kh, kw, ph, pw, seed, stride, pool, pool_stride):
    kh, kw = min(kh, h + 2 * ph), min(kw, w + 2 * pw)
    oh, ow = (h + 2 * ph - kh) // stride[0] + 1, (w + 2 * pw - kw) // stride[1] + 1
    if oh < pool[0] or ow < pool[1]:
        return
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 2, (c, h, w))
    src = np.zeros((2, n_words(c * h * w) + 1), np.uint64)
    src[1, : n_words(c * h * w)] = pack_bits(img.transpose(1, 2, 0).reshape(-1))  # channels-last bit string
    k = c * kh * kw
    nw = n_words(k)
    padded = np.pad(img, ((0, 0), (ph, ph), (pw, pw)))
    windows = _conv_map(padded, kh, kw, stride, pool, pool_stride)
    dst = np.full((200 + len(windows), nw), np.uint64(2**64 - 1))
    geo = _geometry(c, h, w, kh, kw, ph, pw, stride, pool, pool_stride, 1)
    end = K.im2col_bits(src, 1, geo, dst, 200, nw, 0, K.ALL)
    expected = [padded[:, y : y + kh, x : x + kw].transpose(1, 2, 0).reshape(-1) for *_, y, x in windows]  # (i, j, c)
    assert end == 200 + len(expected)
    assert np.array_equal(unpack_bits(dst[200:end], k), np.array(expected))
    assert not unpack_bits(dst[200:end], nw * 64)[:, k:].any()  # the dirty rows cleared: popcount(a) counts every bit


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(3, 12),
    st.integers(3, 12),
    st.integers(1, 5),
    st.integers(0, 2),
    st.sampled_from([np.int16, np.int32]),
    st.integers(0, 2**32 - 1),
    *GEOMETRY,
)
def test_first_conv_sums_threshold_and_pool(c, h, w, k, pad, dtype, seed, stride, pool, pool_stride):
    from bnn_runtime.plan import _conv_taps, conv_u8_scratch, phase_grid

    rng = np.random.default_rng(seed)
    k = min(k, h + 2 * pad, w + 2 * pad)
    n_out = int(rng.integers(1, 9))
    img = rng.integers(0, 256, (c, h, w)).astype(np.uint8)
    if dtype is np.int16 and 255 * c * k * k > 2**15 - 1:
        return
    hp, pitch = h + 2 * pad, w + 2 * pad
    oh, ow = (hp - k) // stride[0] + 1, (pitch - k) // stride[1] + 1
    if oh < pool[0] or ow < pool[1]:
        return
    signs = rng.choice(np.array([-1, 1], np.int8), (n_out, c, k, k))
    grid = dict(c=c, h=h, w=w, kh=k, kw=k, ph=pad, pw=pad, sh=stride[0], sw=stride[1], oh=oh)
    grid |= phase_grid(grid)
    taps, sigma = _conv_taps(signs, grid)
    padded = np.pad(img.astype(np.int64), ((0, 0), (pad, pad), (pad, pad)))
    s = np.einsum("cyxij,ocij->oyx", np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2)), signs)
    s = s[:, :: stride[0], :: stride[1]][:, :oh, :ow]
    t = rng.integers(-2000, 2000, n_out)
    d = rng.choice([-1, 1], n_out)
    consts = np.stack([sigma, d * t, d]).astype(np.int64)
    geo = _geometry(c, h, w, k, k, pad, pad, stride, pool, pool_stride, n_out)
    from bnn_runtime.layout import COL_GRID_H, COL_GRID_W, COL_OUT_H, COL_OUT_W, COL_TAP_COPY

    geo[COL_GRID_H], geo[COL_GRID_W], geo[COL_TAP_COPY] = grid["grid_h"], grid["grid_w"], grid["tap_copy"]

    out_h, out_w = geo[COL_OUT_H], geo[COL_OUT_W]
    size = conv_u8_scratch(grid)
    ibuf = np.full(size, 77, dtype)  # dirty scratch
    words = n_words(out_h * out_w * n_out) + 1
    out = np.zeros(2 * words, np.uint64)
    K1.conv_u8(img.reshape(-1), geo, taps, consts, ibuf, out, words * 64)
    bits = np.where(d[:, None, None] > 0, s >= t[:, None, None], s <= t[:, None, None])
    pooled = np.zeros((n_out, out_h, out_w), bool)
    for py in range(out_h):
        for px in range(out_w):
            y, x = py * pool_stride[0], px * pool_stride[1]
            pooled[:, py, px] = bits[:, y : y + pool[0], x : x + pool[1]].any(axis=(1, 2))
    n_bits = out_h * out_w * n_out
    got = unpack_bits(out[words : words + n_words(n_bits)], n_bits)
    assert np.array_equal(got, pooled.transpose(1, 2, 0).reshape(-1))  # channels-last
    assert not out[:words].any() and not out[words + n_words(n_bits) :].any()
    assert unpack_bits(out[words : words + n_words(n_bits)], n_words(n_bits) * 64)[n_bits:].sum() == 0


def test_row_bit_offsets_count_images_windows_and_outputs():
    rowbit = np.zeros(24, np.int64)
    K.row_bit_offsets(24, 12, 4, 5, 1000, rowbit)
    r = np.arange(24)
    assert np.array_equal(rowbit, (r // 12) * 1000 + ((r % 12) // 4) * 5)


def test_and_popcount_peak_computes_the_sum():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, 100, dtype=np.uint64)
    w = rng.integers(0, 2**63, 4, dtype=np.uint64)
    bits = unpack_bits(a[:, None], 64).astype(np.int64)  # (100, 64)
    wb = unpack_bits(w[:, None], 64).astype(np.int64)  # (4, 64)
    pc = (bits[:, None, :] & wb[None]).sum(axis=(0, 2))  # per word of w
    expected = sum(int(pc[(j + r) % 4]) << j for r in range(3) for j in range(4)) % 2**64
    assert int(K.and_popcount_peak(a, w, 3)) == expected
    assert int(K.and_popcount_peak512(a, w, 3)) == expected  # 12 vectors of 8 words and a tail of 4
    assert int(K.and_popcount_peak512(a[:96], w, 0)) == 0
