"""Numba kernels of the runtime: packed popcount products with the threshold, OR-pooling and packing fused in.

Every kernel is a plain module-level ``@njit(cache=True)`` function on arrays it is given; the
only globals are constants that numba freezes at compile time, among them ``VNNI_NATIVE`` (the
CPU has AVX-512 VNNI), which picks the instruction the VNNI kernels compile to. Kernels are
small enough to read at once; ``forward_serial`` / ``forward_parallel`` at the end
run a whole network in one call, and ``model.BnnModel`` validates every input before a
kernel sees it. All compiled code lives in this one file on purpose: numba's on-disk cache
is invalidated by a change of the file that holds a function, not of the files it calls.
All arithmetic on the integer path is exact integer arithmetic (no ``fastmath``).

Bit products, for a row ``a`` of activation bits and a row ``w`` of weight bits
(``p = popcount(a & w)``, ``pa = popcount(a)``, ``pw = popcount(w)``, ``n`` = fan-in):

* ``01`` inputs:  ``s = 2 p - pa``
* ``pm1`` inputs: ``s = n - 2 popcount(a ^ w) = 4 p - 2 pa - 2 pw + n``  (since
  ``popcount(a ^ w) = pa + pw - 2 p``), so one AND kernel serves both encodings:
  ``s = alpha p + beta pa + gamma_o`` with per-layer ``alpha, beta`` and per-output ``gamma``.

Dense layers keep their weights by columns of 8 outputs (plan.py): a 512-bit vector holds word k
of 8 outputs and meets a broadcast activation word, so each lane accumulates one output's sum
and the threshold runs on whole vectors (_popcount_cols). Convolutions of bits (im2col rows)
keep weight rows and sum 8 words per lane, reduced at the end of a block (_popcount_block).

A first dense layer on bytes runs on AVX512-VNNI where the CPU has it (_vnni_cols: the pixels times
+-1 bytes, 64 products per instruction), else on the 8 bit planes of its input (dense_u8).

Hidden layers never store a sum: ``bit = dir_o * s >= dir_o * T_o`` is evaluated on the
block of sums still in registers and OR-ed straight into the next layer's bit rows (OR-pooling
is the same OR: the rows of one pooling window share an output bit).
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import get_thread_id, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

@intrinsic
def popcount(typingctx, x):
    """Number of set bits of a uint64 (``llvm.ctpop``: POPCNT, or VPOPCNTQ once the loop is vectorised)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, [args[0]])

    return types.uint64(types.uint64), codegen


V8 = ir.VectorType(ir.IntType(64), 8)


def _splat(builder, x, vec):
    """The vector type vec with x in every lane."""
    v = builder.insert_element(ir.Constant(vec, None), x, ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), vec.count), [0] * vec.count)
    return builder.shuffle_vector(v, ir.Constant(vec, None), zeros)


def _popcount_block(nr, no):
    """An intrinsic: the nr x no popcount sums of one register block, in 512-bit vectors.

    ``f(a, r, w, o, n8, half, acc)``:
    acc[i * no + j] = sum over k < 8 n8 + 4 half of popcount(a[r + i, k] & w[o + j, k])
    (a, w: C-contiguous 2-D uint64; acc: int64, at least 8 ceil(nr no / 8) long). The words go 8 at a
    time through <8 x i64> AND, ctpop (VPOPCNTQ) and add: LLVM's loop vectoriser stops at 256 bits on
    this CPU (its "prefer 256-bit" tuning), an explicit 512-bit vector does not. The nr * no lane sums
    end in one transposing tree of shuffles and adds (3 per pair of vectors), 8 sums per store.
    ``half`` (0 or 1): 4 more words in 256-bit vectors (rows are padded to 4 words: plan.WORD_ALIGN);
    the words from 8 n8 + 4 half on are the caller's (a scalar tail).
    """
    n = nr * no
    npad = -(-n // 8) * 8

    @intrinsic
    def block(typingctx, a, r, w, o, n8, half, acc):
        if not (isinstance(a, types.Array) and a.ndim == 2 and a.dtype == types.uint64 and a.layout == "C"
                and isinstance(w, types.Array) and w.ndim == 2 and w.dtype == types.uint64 and w.layout == "C"
                and isinstance(acc, types.Array) and acc.dtype == types.int64):
            return None

        def codegen(context, builder, sig, args):
            a_v, r_v, w_v, o_v, n8_v, half_v, acc_v = args
            i64 = ir.IntType(64)
            aa = context.make_array(sig.args[0])(context, builder, a_v)
            ww = context.make_array(sig.args[2])(context, builder, w_v)
            astride = cgutils.unpack_tuple(builder, aa.shape, 2)[1]
            wstride = cgutils.unpack_tuple(builder, ww.shape, 2)[1]
            arow = [builder.gep(aa.data, [builder.mul(builder.add(r_v, ir.Constant(i64, i)), astride)])
                    for i in range(nr)]
            wrow = [builder.gep(ww.data, [builder.mul(builder.add(o_v, ir.Constant(i64, j)), wstride)])
                    for j in range(no)]
            ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V8, [V8]), "llvm.ctpop.v8i64")
            sums = [cgutils.alloca_once(builder, V8) for _ in range(n)]
            for s in sums:
                builder.store(ir.Constant(V8, None), s)
            with cgutils.for_range(builder, n8_v) as loop:
                k8 = builder.mul(loop.index, ir.Constant(i64, 8))
                av = [builder.load(builder.bitcast(builder.gep(p, [k8]), V8.as_pointer()), align=8) for p in arow]
                wv = [builder.load(builder.bitcast(builder.gep(p, [k8]), V8.as_pointer()), align=8) for p in wrow]
                for i in range(nr):
                    for j in range(no):
                        s = sums[i * no + j]
                        builder.store(builder.add(builder.load(s), builder.call(ctpop, [builder.and_(av[i], wv[j])])), s)
            with builder.if_then(builder.icmp_signed("!=", half_v, ir.Constant(i64, 0))):  # 4 words more
                k8 = builder.mul(n8_v, ir.Constant(i64, 8))
                v4 = ir.VectorType(i64, 4)
                widen = ir.Constant(ir.VectorType(ir.IntType(32), 8), [ir.Constant(ir.IntType(32), t) for t in range(8)])
                av = [builder.load(builder.bitcast(builder.gep(p, [k8]), v4.as_pointer()), align=8) for p in arow]
                wv = [builder.load(builder.bitcast(builder.gep(p, [k8]), v4.as_pointer()), align=8) for p in wrow]
                for i in range(nr):
                    for j in range(no):
                        x = builder.shuffle_vector(builder.and_(av[i], wv[j]), ir.Constant(v4, None), widen)
                        s = sums[i * no + j]
                        builder.store(builder.add(builder.load(s), builder.call(ctpop, [x])), s)
            vs = [builder.load(s) for s in sums] + [ir.Constant(V8, None)] * (npad - n)
            out = builder.bitcast(context.make_array(sig.args[6])(context, builder, acc_v).data, V8.as_pointer())
            for blk in range(npad // 8):
                level = vs[8 * blk : 8 * blk + 8]
                for lo, hi in (((0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)),
                               ((0, 1, 4, 5, 8, 9, 12, 13), (2, 3, 6, 7, 10, 11, 14, 15)),
                               ((0, 2, 4, 6, 8, 10, 12, 14), (1, 3, 5, 7, 9, 11, 13, 15))):
                    mlo, mhi = (ir.Constant(ir.VectorType(ir.IntType(32), 8), [ir.Constant(ir.IntType(32), t) for t in m])
                                for m in (lo, hi))
                    level = [builder.add(builder.shuffle_vector(x, y, mlo), builder.shuffle_vector(x, y, mhi))
                             for x, y in zip(level[::2], level[1::2], strict=True)]
                builder.store(level[0], builder.gep(out, [ir.Constant(i64, blk)]), align=8)
            return context.get_dummy_value()

        return types.none(a, types.int64, w, types.int64, types.int64, types.int64, acc), codegen

    return block


popcount_block4x4 = _popcount_block(4, 4)
popcount_block1x4 = _popcount_block(1, 4)


def _outer_sums(builder, rows, cols, n, vec, step, align):
    """The register block of a dense layer: sums[i][v] = step(... step(0, splat(rows[i][0]), cols[v][0]) ...)
    over k < n, rows[i] pointing at scalars (one per k), cols[v] at vectors of type vec (one per k)."""
    acc = [cgutils.alloca_once(builder, vec) for _ in range(len(rows) * len(cols))]
    for a in acc:
        builder.store(ir.Constant(vec, None), a)
    with cgutils.for_range(builder, n) as loop:
        k = loop.index
        wv = [builder.load(builder.gep(c, [k]), align=align) for c in cols]
        for i, row in enumerate(rows):
            av = _splat(builder, builder.load(builder.gep(row, [k]), align=align), vec)
            for v, w in enumerate(wv):
                a = acc[i * len(cols) + v]
                builder.store(step(builder.load(a), av, w), a)
    return [[builder.load(acc[i * len(cols) + v]) for v in range(len(cols))] for i in range(len(rows))]


def _consts_loader(context, builder, arrty, arr, o, lanes):
    """crow(q, v): lanes int64 of row q of a (3, n_out_pad) consts array from output o + lanes * v."""
    i64 = ir.IntType(64)
    cc = context.make_array(arrty)(context, builder, arr)
    cstride = cgutils.unpack_tuple(builder, cc.shape, 2)[1]
    vec = ir.VectorType(i64, lanes).as_pointer()

    def crow(q, v):
        off = builder.add(builder.add(builder.mul(ir.Constant(i64, q), cstride), o), ir.Constant(i64, lanes * v))
        return builder.load(builder.bitcast(builder.gep(cc.data, [off]), vec), align=8)

    return crow


def _epilogue(builder, sums, crow, rp, lanes, bits):
    """The end of a register block, sums[i][v] = the int64 sums s (gamma included) of row i, vector v:
    ``bits``: rp[i] = the bits dir * s >= dir * T of row i (bit lanes * v + j); else
    rp[(i * nv + v) * lanes + j] = s."""
    i64 = ir.IntType(64)
    for i, row in enumerate(sums):
        mask = ir.Constant(i64, 0)
        for v, s in enumerate(row):
            if bits:
                ge = builder.icmp_signed(">=", builder.mul(crow(2, v), s), crow(1, v))
                m = builder.zext(builder.bitcast(ge, ir.IntType(lanes)), i64)
                mask = builder.or_(mask, builder.shl(m, ir.Constant(i64, lanes * v)))
            else:
                dst = builder.gep(rp, [ir.Constant(i64, (i * len(row) + v) * lanes)])
                builder.store(s, builder.bitcast(dst, ir.VectorType(i64, lanes).as_pointer()), align=8)
        if bits:
            builder.store(mask, builder.gep(rp, [ir.Constant(i64, i)]))


def _popcount_cols(nr, nv, planes, bits):
    """An intrinsic: one register block of a dense layer whose weights are stored by columns of 8 outputs.

    ``f(a, r, wt, blk, nw, alpha, pa, pr, consts, o, res)``: wt holds vector b (outputs 8 b .. 8 b + 7)
    as ``wt[(b * nw + k) * 8 + j] = w[8 b + j, k]``; for rows i < nr of ``a`` (from r) and vectors
    v < nv (from blk), ``p[i][v] += popcount(broadcast(a[r + i, k]) & wt[blk + v, k])`` over k < nw:
    one <8 x i64> AND (of a broadcast word), ctpop (VPOPCNTQ) and add per word and vector, and each lane
    already is one output's sum (no reduction). Then, in vectors:

    * ``planes`` (nr = 8 bit planes of one image): P = sum_i 2^i p[i], one row;
    * s = alpha p + pa[pr + i] + gamma (consts = (gamma, dir * T, dir) per output, from o = 8 blk);
    * ``bits``: res[i] = the nv * 8 bits dir * s >= dir * T of row i (bit 8 v + j: output o + 8 v + j);
      else res[(i * nv + v) * 8 + j] = s.
    """
    rows = 1 if planes else nr

    @intrinsic
    def block(typingctx, a, r, wt, blk, nw, alpha, pa, pr, consts, o, res):
        if not (isinstance(a, types.Array) and a.ndim == 2 and a.dtype == types.uint64 and a.layout == "C"
                and isinstance(wt, types.Array) and wt.dtype == types.uint64 and wt.layout == "C"
                and isinstance(pa, types.Array) and pa.dtype == types.int64 and isinstance(consts, types.Array)
                and consts.ndim == 2 and consts.dtype == types.int64 and consts.layout == "C"
                and isinstance(res, types.Array) and res.dtype == types.int64):
            return None

        def codegen(context, builder, sig, args):
            a_v, r_v, wt_v, blk_v, nw_v, alpha_v, pa_v, pr_v, c_v, o_v, res_v = args
            i64 = ir.IntType(64)

            def data(k):
                return context.make_array(sig.args[k])(context, builder, args[k])

            def splat(x):
                return _splat(builder, x, V8)

            aa = data(0)
            astride = cgutils.unpack_tuple(builder, aa.shape, 2)[1]
            arow = [builder.gep(aa.data, [builder.mul(builder.add(r_v, ir.Constant(i64, i)), astride)]) for i in range(nr)]
            wp = builder.bitcast(data(2).data, V8.as_pointer())
            wcol = [builder.gep(wp, [builder.mul(builder.add(blk_v, ir.Constant(i64, v)), nw_v)]) for v in range(nv)]
            ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V8, [V8]), "llvm.ctpop.v8i64")
            p = _outer_sums(builder, arow, wcol, nw_v, V8,
                            lambda s, av, wv: builder.add(s, builder.call(ctpop, [builder.and_(av, wv)])), align=8)
            if planes:
                comb = p[0]
                for i in range(1, nr):
                    comb = [builder.add(x, builder.shl(y, splat(ir.Constant(i64, i)))) for x, y in zip(comb, p[i], strict=True)]
                p = [comb]
            crow = _consts_loader(context, builder, sig.args[8], args[8], o_v, 8)
            pa_d = data(6).data
            al = splat(alpha_v)
            sums = []
            for i in range(rows):
                pav = splat(builder.load(builder.gep(pa_d, [builder.add(pr_v, ir.Constant(i64, i))])))
                sums.append([builder.add(builder.add(builder.mul(al, p[i][v]), pav), crow(0, v)) for v in range(nv)])
            _epilogue(builder, sums, crow, data(10).data, 8, bits)
            return context.get_dummy_value()

        return types.none(a, types.int64, wt, types.int64, types.int64, types.int64, pa, types.int64, consts,
                          types.int64, res), codegen

    return block


cols_bits4x4 = _popcount_cols(4, 4, False, True)
cols_bits1x4 = _popcount_cols(1, 4, False, True)
cols_bits4x1 = _popcount_cols(4, 1, False, True)
cols_bits1x1 = _popcount_cols(1, 1, False, True)
cols_sums1x1 = _popcount_cols(1, 1, False, False)
planes_bits2 = _popcount_cols(8, 2, True, True)
planes_bits1 = _popcount_cols(8, 1, True, True)
planes_sums1 = _popcount_cols(8, 1, True, False)


# First dense layer on uint8 input with VNNI. vpdpbusd multiplies 64 unsigned bytes by 64 signed
# bytes and adds each group of 4 products to one of 16 int32 lanes: with the pixels as the unsigned
# bytes and the +-1 weights as signed bytes it computes x . w for 16 outputs, 4 inputs at a time,
# exactly (|x . w| <= 255 * fan_in < 2^31, and the instruction does not saturate). One instruction
# does the work of the 8 bit-plane popcounts of dense_u8 for 64 products (docs/PERFORMANCE.md has
# the timing). The weights take a byte each (8x the bits), which is why only the first
# layer (fed bytes anyway) uses it. BNN_RUNTIME_VNNI=off keeps the bit-plane kernel; =emulate runs
# this kernel in portable vector code (what a CPU without VNNI compiles; it is never chosen there)
# and is for tests: numba's cache does not tell the two builds apart, so give it its own
# NUMBA_CACHE_DIR.
def _cpu_has_vnni() -> bool:
    from numba.core.registry import cpu_target

    return "+avx512vnni" in cpu_target.target_context.codegen().magic_tuple()[2]


_VNNI_MODE = os.environ.get("BNN_RUNTIME_VNNI", "auto").strip().lower()
VNNI_NATIVE = _cpu_has_vnni() and _VNNI_MODE != "emulate"
USE_VNNI = _VNNI_MODE != "off" and (VNNI_NATIVE or _VNNI_MODE == "emulate")
I32X16 = ir.VectorType(ir.IntType(32), 16)
I64X16 = ir.VectorType(ir.IntType(64), 16)


def _dpbusd(builder, acc, a, b):
    """acc + the sums of 4 products of the unsigned bytes of a and the signed bytes of b, per int32 lane."""
    if VNNI_NATIVE:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(I32X16, [I32X16, I32X16, I32X16]),
                                            "llvm.x86.avx512.vpdpbusd.512")
        return builder.call(fn, [acc, a, b])
    bytes64, ints64 = ir.VectorType(ir.IntType(8), 64), ir.VectorType(ir.IntType(32), 64)
    prod = builder.mul(builder.zext(builder.bitcast(a, bytes64), ints64), builder.sext(builder.bitcast(b, bytes64), ints64))
    for q in range(4):
        pick = ir.Constant(ir.VectorType(ir.IntType(32), 16), [4 * j + q for j in range(16)])
        acc = builder.add(acc, builder.shuffle_vector(prod, ir.Constant(ints64, None), pick))
    return acc


def _vnni_cols(nr, nv, bits):
    """An intrinsic: one register block of the VNNI first layer.

    ``f(x, r, wv, blk, k4, consts, o, res)``: x is the uint8 batch (rows of 4 k4 bytes), wv the
    weights as bytes by blocks of 16 outputs, ``wv[((b * k4 + k) * 16 + j) * 4 + q] = w[16 b + j, 4 k + q]``
    (+-1, 0 for padding outputs). For rows i < nr (from r) and vectors v < nv (outputs 16 (blk + v) ..):
    s = x . w + gamma (consts = (gamma, dir * T, dir) per output, from o = 16 blk), in int64;
    ``bits``: res[i] = the 16 nv bits dir * s >= dir * T of row i; else res[(i * nv + v) * 16 + j] = s.
    """

    @intrinsic
    def block(typingctx, x, r, wv, blk, k4, consts, o, res):
        if not (isinstance(x, types.Array) and x.ndim == 2 and x.dtype == types.uint8 and x.layout == "C"
                and isinstance(wv, types.Array) and wv.dtype == types.uint64 and wv.layout == "C"
                and isinstance(consts, types.Array) and consts.ndim == 2 and consts.dtype == types.int64
                and consts.layout == "C" and isinstance(res, types.Array) and res.dtype == types.int64):
            return None

        def codegen(context, builder, sig, args):
            x_v, r_v, w_v, blk_v, k4_v, c_v, o_v, res_v = args
            i64, i32 = ir.IntType(64), ir.IntType(32)

            def data(k):
                return context.make_array(sig.args[k])(context, builder, args[k])

            xa = data(0)
            xstride = cgutils.unpack_tuple(builder, xa.strides, 2)[0]
            xp = builder.bitcast(xa.data, ir.IntType(8).as_pointer())
            xrow = [builder.bitcast(builder.gep(xp, [builder.mul(builder.add(r_v, ir.Constant(i64, i)), xstride)]),
                                    i32.as_pointer()) for i in range(nr)]
            wp = builder.bitcast(data(2).data, I32X16.as_pointer())
            wcol = [builder.gep(wp, [builder.mul(builder.add(blk_v, ir.Constant(i64, v)), k4_v)]) for v in range(nv)]
            acc = _outer_sums(builder, xrow, wcol, k4_v, I32X16, lambda s, xv, wv: _dpbusd(builder, s, xv, wv), align=1)
            crow = _consts_loader(context, builder, sig.args[5], args[5], o_v, 16)
            sums = [[builder.add(builder.sext(acc[i][v], I64X16), crow(0, v)) for v in range(nv)] for i in range(nr)]
            _epilogue(builder, sums, crow, data(7).data, 16, bits)
            return context.get_dummy_value()

        return types.none(x, types.int64, wv, types.int64, types.int64, consts, types.int64, res), codegen

    return block


vnni_bits8x3 = _vnni_cols(8, 3, True)
vnni_bits1x3 = _vnni_cols(1, 3, True)
vnni_bits8x1 = _vnni_cols(8, 1, True)
vnni_bits1x1 = _vnni_cols(1, 1, True)
vnni_sums1x1 = _vnni_cols(1, 1, False)


# Two rules keep these loops fast (both measured: docs/PERFORMANCE.md):
# * no call to a small array-taking kernel inside a hot loop: numba increments and decrements the
#   reference count of every array argument (atomic operations) on each such call, so register
#   blocks, bit copies and epilogues are written inline, and kernels are called per layer or image;
# * offsets read from data index arrays as uint64: a signed index gets a negative-index check
#   that keeps LLVM from vectorising the loop.


@njit(cache=True, inline="always")
def or_bits(out, bit, nib):
    """OR the bits of nib (up to 4) into the flat bit string out from bit ``bit`` on (it may span 2 words).

    Inlined into its callers by numba (inline="always"): no call, no reference counting.
    """
    q, sft = np.uint64(bit) >> np.uint64(6), np.uint64(bit) & np.uint64(63)
    out[q] |= nib << sft
    if sft > np.uint64(60):
        out[q + np.uint64(1)] |= nib >> (np.uint64(64) - sft)


@njit(cache=True, inline="always")
def nibble(p0, p1, p2, p3, pa, alpha, c):
    """The 4 output bits of one row of a register block, branch-free (a threshold's outcome is a coin
    flip to a branch predictor): bit j = dir_j * (alpha p_j + pa + gamma_j) >= dir_j * T_j, with
    c = (gamma_0..3, dir * T_0..3, dir_0..3)."""
    b0 = c[8] * (alpha * np.int64(p0) + pa + c[0]) >= c[4]
    b1 = c[9] * (alpha * np.int64(p1) + pa + c[1]) >= c[5]
    b2 = c[10] * (alpha * np.int64(p2) + pa + c[2]) >= c[6]
    b3 = c[11] * (alpha * np.int64(p3) + pa + c[3]) >= c[7]
    return (np.uint64(b0) | (np.uint64(b1) << np.uint64(1)) | (np.uint64(b2) << np.uint64(2))
            | (np.uint64(b3) << np.uint64(3)))


@njit(cache=True)
def gemm_rows4(a, r0, r1, nw, w, n_out, alpha, beta, consts, rowbit, out, scores, row0, last):
    """Rows r0..r1-1 (a multiple of 4) of ``a`` times the weight rows ``w``, 4 rows x 4 outputs per block.

    The words of a block go 8 (then 4) at a time through popcount_block4x4 (512-bit vectors), the
    last nw % 4 through scalar popcounts. Sums ``s = alpha p + beta pa + gamma`` (consts = (gamma,
    dir * T, dir) per output) go, while the block is in registers, to scores[row0 + r] (``last``)
    or become the bit dir * s >= dir * T, OR-ed into the flat output bits ``out`` at rowbit[r] + o.
    """
    acc = np.empty(16, np.int64)
    pa = np.empty(r1, np.int64)
    n8, h4 = nw // 8, (nw // 4) % 2
    for r in range(r0, r1):
        t = np.uint64(0)
        for k in range(nw):
            t += popcount(a[r, k])
        pa[r] = beta * np.int64(t)
    for o in range(0, n_out, 4):  # outputs outside: a block of weight rows is read from L1 by every row
        c = (consts[0, o], consts[0, o + 1], consts[0, o + 2], consts[0, o + 3], consts[1, o], consts[1, o + 1],
             consts[1, o + 2], consts[1, o + 3], consts[2, o], consts[2, o + 1], consts[2, o + 2], consts[2, o + 3])
        valid = (np.uint64(1) << np.uint64(min(4, n_out - o))) - np.uint64(1)  # padded outputs (dir 0) never set a bit
        for r in range(r0, r1, 4):
            popcount_block4x4(a, r, w, o, n8, h4, acc)
            for k in range(8 * n8 + 4 * h4, nw):
                for i in range(4):
                    for j in range(4):
                        acc[4 * i + j] += np.int64(popcount(a[r + i, k] & w[o + j, k]))
            if last:
                for i in range(4):
                    for j in range(min(4, n_out - o)):
                        scores[row0 + r + i, o + j] = alpha * acc[4 * i + j] + pa[r + i] + consts[0, o + j]
                continue
            or_bits(out, rowbit[r] + o, nibble(acc[0], acc[1], acc[2], acc[3], pa[r], alpha, c) & valid)
            or_bits(out, rowbit[r + 1] + o, nibble(acc[4], acc[5], acc[6], acc[7], pa[r + 1], alpha, c) & valid)
            or_bits(out, rowbit[r + 2] + o, nibble(acc[8], acc[9], acc[10], acc[11], pa[r + 2], alpha, c) & valid)
            or_bits(out, rowbit[r + 3] + o, nibble(acc[12], acc[13], acc[14], acc[15], pa[r + 3], alpha, c) & valid)


@njit(cache=True)
def gemm_rows1(a, r0, r1, nw, w, n_out, alpha, beta, consts, rowbit, out, scores, row0, last):
    """gemm_rows4 one row at a time (1 row x 4 outputs per block): the rows a batch leaves over, batch 1."""
    acc = np.empty(8, np.int64)
    n8, h4 = nw // 8, (nw // 4) % 2
    for r in range(r0, r1):
        t = np.uint64(0)
        for k in range(nw):
            t += popcount(a[r, k])
        pa = beta * np.int64(t)
        for o in range(0, n_out, 4):
            popcount_block1x4(a, r, w, o, n8, h4, acc)
            for k in range(8 * n8 + 4 * h4, nw):
                for j in range(4):
                    acc[j] += np.int64(popcount(a[r, k] & w[o + j, k]))
            if last:
                for j in range(min(4, n_out - o)):
                    scores[row0 + r, o + j] = alpha * acc[j] + pa + consts[0, o + j]
                continue
            c = (consts[0, o], consts[0, o + 1], consts[0, o + 2], consts[0, o + 3], consts[1, o], consts[1, o + 1],
                 consts[1, o + 2], consts[1, o + 3], consts[2, o], consts[2, o + 1], consts[2, o + 2], consts[2, o + 3])
            valid = (np.uint64(1) << np.uint64(min(4, n_out - o))) - np.uint64(1)
            or_bits(out, rowbit[r] + o, nibble(acc[0], acc[1], acc[2], acc[3], pa, alpha, c) & valid)


@njit(cache=True, inline="always")
def or_run(out, bit, v, nb):
    """OR the nb (<= 64) bits v into the flat bit string out from bit ``bit`` on (it may span 2 words)."""
    q, sft = np.uint64(bit) >> np.uint64(6), np.uint64(bit) & np.uint64(63)
    out[q] |= v << sft
    if sft + np.uint64(nb) > np.uint64(64):
        out[q + np.uint64(1)] |= v >> (np.uint64(64) - sft)


@njit(cache=True)
def dense_bits(a, nrows, nw, wt, n_out, alpha, beta, consts, out, image_bits, scores, row0, last):
    """A dense layer on bits: rows 0..nrows-1 of ``a`` times the weights wt, stored by columns of 8
    outputs (see _popcount_cols), 4 rows x 32 outputs per block; the rows and outputs left over
    go in blocks of 1 row and of 8 outputs (batch 1: 1 x 32).

    Sums ``s = alpha p + beta pa + gamma`` (consts = (gamma, dir * T, dir) per output) go to
    scores[row0 + r] (``last``) or become the bits dir * s >= dir * T of row r's image, at
    bit r * image_bits + o of ``out``, 32 (or 8) at a time, while the block is in registers.
    """
    nblk = (n_out + 7) // 8
    pa = np.empty(nrows, np.int64)
    for r in range(nrows):
        t = np.uint64(0)
        for k in range(nw):
            t += popcount(a[r, k])
        pa[r] = beta * np.int64(t)
    res = np.empty(8, np.int64)
    if last:
        for b in range(nblk):
            for r in range(nrows):
                cols_sums1x1(a, r, wt, b, nw, alpha, pa, r, consts, 8 * b, res)
                for j in range(min(8, n_out - 8 * b)):
                    scores[row0 + r, 8 * b + j] = res[j]
        return
    n4 = nrows - nrows % 4
    b = 0
    while b < nblk:  # outputs outside: 32 outputs' weights are read from L1 by every row
        nv = 4 if b + 4 <= nblk else 1  # the last 1-3 vectors of 8 outputs go one at a time
        o = 8 * b
        nb = min(8 * nv, n_out - o)
        valid = (np.uint64(1) << np.uint64(nb)) - np.uint64(1)
        for r in range(0, n4, 4):
            if nv == 4:
                cols_bits4x4(a, r, wt, b, nw, alpha, pa, r, consts, o, res)
            else:
                cols_bits4x1(a, r, wt, b, nw, alpha, pa, r, consts, o, res)
            for i in range(4):
                or_run(out, (r + i) * image_bits + o, np.uint64(res[i]) & valid, nb)
        for r in range(n4, nrows):
            if nv == 4:
                cols_bits1x4(a, r, wt, b, nw, alpha, pa, r, consts, o, res)
            else:
                cols_bits1x1(a, r, wt, b, nw, alpha, pa, r, consts, o, res)
            or_run(out, r * image_bits + o, np.uint64(res[0]) & valid, nb)
        b += nv

@njit(cache=True)
def gemm(a, nrows, nw, w, n_out, alpha, beta, consts, rowbit, out, scores, row0, last):
    """The popcount product of a binary layer with its fused epilogue (see gemm_rows4)."""
    n4 = nrows - nrows % 4
    gemm_rows4(a, 0, n4, nw, w, n_out, alpha, beta, consts, rowbit, out, scores, row0, last)
    gemm_rows1(a, n4, nrows, nw, w, n_out, alpha, beta, consts, rowbit, out, scores, row0, last)


@njit(cache=True)
def row_bit_offsets(nrows, rows_per_image, group, n_out, image_bits, rowbit):
    """rowbit[r] = bit (in the flattened output rows) of row r's output 0, counting without a division.

    Row r belongs to image r // rows_per_image and, within it, to output position
    (r % rows_per_image) // group (``group`` consecutive rows form one pooling window).
    """
    img = q = g = 0
    for r in range(nrows):
        rowbit[r] = img * image_bits + q * n_out
        g += 1
        if g == group:
            g, q = 0, q + 1
            if q * group == rows_per_image:
                q, img = 0, img + 1


@njit(cache=True)
def im2col_bits(src, img, c, h, w, kh, kw, ph, pw, oh, ow, sh, sw, dst, row0, nw):
    """Patches of image img's bits (row img of src: an (H, W, C) channels-last bit string) into rows of dst.

    Row order follows the pooling windows, ``((py * PW + px) * sh + dy) * sw + dx``, so that the
    rows of one window are consecutive; a patch holds its bits in (i, j, c) order: kernel row i
    is the run of (j1 - j0) * c bits at ((yy * W + x - pw + j0) * c) of the source, 0 outside the
    image (zero padding of 01 bits). Source rows have a spare word. Returns the next free row.
    """
    r = row0
    for py in range(oh // sh):
        for px in range(ow // sw):
            for dy in range(sh):
                for dx in range(sw):
                    y, x = py * sh + dy, px * sw + dx
                    for k in range(nw):
                        dst[r, k] = 0
                    j0, j1 = max(0, pw - x), min(kw, w + pw - x)
                    for i in range(kh):
                        yy = y + i - ph
                        if yy < 0 or yy >= h or j0 >= j1:
                            continue
                        so, do, n = (yy * w + x - pw + j0) * c, (i * kw + j0) * c, (j1 - j0) * c
                        while n > 0:  # copy n bits, at most a word at a time
                            take = min(n, 64)
                            q, sft = so >> 6, np.uint64(so & 63)
                            v = src[img, q] >> sft
                            if sft:
                                v |= src[img, q + 1] << (np.uint64(64) - sft)
                            if take < 64:
                                v &= (np.uint64(1) << np.uint64(take)) - np.uint64(1)
                            q, sft = do >> 6, np.uint64(do & 63)
                            dst[r, q] |= v << sft
                            if sft and sft + np.uint64(take) > np.uint64(64):
                                dst[r, q + 1] |= v >> (np.uint64(64) - sft)
                            so, do, n = so + take, do + take, n - take
                    r += 1
    return r


# --------------------------------------------------------------------------- convolution of few channels: tables
# A convolution of bits with C <= 8 input channels reads, per kernel tap, a small integer (the
# C bits of one pixel, or of g pixels side by side: a "group" of g * C <= 8 bits). Its share of
# every output's sum depends on nothing else, so it is looked up: T[tap][v] holds the partial
# sums of all outputs at once (int16 lanes, 16 outputs per block), and one output position costs
# one 16-lane vector add per tap instead of a patch copy and O x words popcounts. The two
# intrinsics below emit those vector operations directly (numba itself would not vectorise them).

V16 = ir.VectorType(ir.IntType(16), 16)


def _data(context, builder, arrty, arr):
    return context.make_array(arrty)(context, builder, arr).data


@intrinsic
def lut_max16(typingctx, table, grid, toff, tbase, ntaps, pos, off, m, first):
    """m[0:16] = max(m[0:16], acc) (acc itself when ``first``),
    acc = sum_t table[tbase[t] + grid[pos + toff[t]] + off : +16]
    in int16 lanes: the sums of one block of 16 outputs at one output position, one vector add per tap."""
    if not (isinstance(table, types.Array) and table.dtype == types.int16 and isinstance(m, types.Array)
            and m.dtype == types.int16 and isinstance(grid, types.Array) and grid.dtype == types.int32):
        return None

    def codegen(context, builder, sig, args):
        table_a, grid_a, toff_a, tbase_a, ntaps_v, pos_v, off_v, m_a, first_v = args
        i64 = ir.IntType(64)
        tp = _data(context, builder, sig.args[0], table_a)
        gp = _data(context, builder, sig.args[1], grid_a)
        op = _data(context, builder, sig.args[2], toff_a)
        bp = _data(context, builder, sig.args[3], tbase_a)
        mp = builder.bitcast(_data(context, builder, sig.args[7], m_a), V16.as_pointer())
        acc = cgutils.alloca_once(builder, V16)
        builder.store(ir.Constant(V16, None), acc)
        with cgutils.for_range(builder, ntaps_v) as loop:
            t = loop.index
            g = builder.load(builder.gep(gp, [builder.add(pos_v, builder.load(builder.gep(op, [t])))]))
            idx = builder.add(builder.add(builder.load(builder.gep(bp, [t])), builder.sext(g, i64)), off_v)
            row = builder.load(builder.bitcast(builder.gep(tp, [idx]), V16.as_pointer()), align=2)
            builder.store(builder.add(builder.load(acc), row), acc)
        a = builder.load(acc)
        old = builder.load(mp, align=2)
        big = builder.select(builder.icmp_signed(">", a, old), a, old)
        if first_v.type.width != 1:
            first_v = builder.icmp_unsigned("!=", first_v, ir.Constant(first_v.type, 0))
        builder.store(builder.select(first_v, a, big), mp, align=2)
        return context.get_dummy_value()

    return types.none(table, grid, toff, tbase, types.int64, types.int64, types.int64, m, types.boolean), codegen


@intrinsic
def ge_mask16(typingctx, m, thr, off):
    """The 16-bit mask of m[k] >= thr[off + k], k < 16 (int16 lanes): a block's threshold bits at once."""
    if not (isinstance(m, types.Array) and m.dtype == types.int16 and isinstance(thr, types.Array)
            and thr.dtype == types.int16):
        return None

    def codegen(context, builder, sig, args):
        mp = builder.bitcast(_data(context, builder, sig.args[0], args[0]), V16.as_pointer())
        tp = _data(context, builder, sig.args[1], args[1])
        tv = builder.load(builder.bitcast(builder.gep(tp, [args[2]]), V16.as_pointer()), align=2)
        bits = builder.icmp_signed(">=", builder.load(mp, align=2), tv)
        return builder.zext(builder.bitcast(bits, ir.IntType(16)), ir.IntType(64))

    return types.uint64(m, thr, types.int64), codegen


@njit(cache=True)
def lut_grid(src, img, c, h, w, ph, pw, pitch, g, o16, grid):
    """grid[y * pitch + x] = o16 * (the g * C bits of the g padded pixels from (y, x) on), the table row of a tap
    group there: pixel (y, x) of the zero-padded image is source pixel (y - ph, x - pw), bits c .. c + C of
    image img's channels-last bit string; 0 outside the image. Rows are ``pitch >= W + 2 pw + g - 1`` wide."""
    hp = h + 2 * ph
    mask = (np.uint64(1) << np.uint64(c)) - np.uint64(1)
    for t in range(hp * pitch):
        grid[t] = 0
    for y in range(h):
        r = (y + ph) * pitch + pw
        for x in range(w):
            bit = (y * w + x) * c
            q, sft = bit >> 6, np.uint64(bit & 63)
            v = src[img, q] >> sft
            if sft + np.uint64(c) > np.uint64(64):
                v |= src[img, q + 1] << (np.uint64(64) - sft)
            grid[r + x] = np.int32(v & mask)
    if g > 1:  # group values: pixel x's bits, then x + 1's above them, ... (reads stay in the row: pitch is wide enough)
        for y in range(hp):
            r = y * pitch
            for x in range(pitch - g + 1):
                v = grid[r + x]
                for d in range(1, g):
                    v |= grid[r + x + d] << (d * c)
                grid[r + x] = v
    for t in range(hp * pitch):
        grid[t] *= o16


@njit(cache=True)
def conv_lut(src, img, c, h, w, ph, pw, oh, ow, sh, sw, g, ntaps, n_out, table, thr, toff, tbase, grid, m, out, out0):
    """A convolution of bits with few channels by table lookup, threshold, OR-pool and pack, one image.

    s'_o = dir_o s_o = sum over tap groups t of table[tbase[t] + grid[pos + toff[t]] + o] (the table holds
    dir_o (alpha popcount(v & w_o,t) + beta popcount(v)) for every group value v; plan._lut_table), and
    the pooled bit is max over the window of s'_o >= thr_o, thr_o = dir_o T_o - dir_o gamma_o. Bits go
    channels-last to out0 + (py * PW + px) * O + o, 16 outputs (one table block) at a time.
    """
    pitch = w + 2 * pw + g - 1
    o16 = (n_out + 15) // 16 * 16
    lut_grid(src, img, c, h, w, ph, pw, pitch, g, o16, grid)
    pw_ = ow // sw
    for blk in range(0, n_out, 16):
        nb = min(16, n_out - blk)
        valid = (np.uint64(1) << np.uint64(nb)) - np.uint64(1)
        for py in range(oh // sh):
            for px in range(pw_):
                first = True
                for dy in range(sh):
                    pos = (py * sh + dy) * pitch + px * sw
                    for dx in range(sw):
                        lut_max16(table, grid, toff, tbase, ntaps, pos + dx, blk, m, first)
                        first = False
                bits = ge_mask16(m, thr, blk) & valid
                q, sft = np.uint64(out0 + (py * pw_ + px) * n_out + blk) >> np.uint64(6), np.uint64(out0 + (py * pw_ + px) * n_out + blk) & np.uint64(63)
                out[q] |= bits << sft
                if sft + np.uint64(nb) > np.uint64(64):
                    out[q + np.uint64(1)] |= bits >> (np.uint64(64) - sft)


# --------------------------------------------------------------------------- the first layer (uint8 input)


@njit(cache=True)
def byte_planes(x, planes, r0, nw):
    """Bit-plane decomposition x = sum_b 2^b x_b: planes[r0 + b] = bit b of every byte of x, packed.

    Eight pixels at a time: ((v >> b) & 0x01..01) * 0x0102040810204080 >> 56 gathers bit b of
    the 8 bytes of v into one byte (the partial products never overlap, so no carries).
    Returns sum(x).
    """
    lo, magic = np.uint64(0x0101010101010101), np.uint64(0x0102040810204080)
    for b in range(8):
        for k in range(nw):
            planes[r0 + b, k] = 0
    n = x.shape[0]
    total = np.uint64(0)
    for g in range(n // 8):
        v = np.uint64(0)
        for j in range(8):
            v |= np.uint64(x[8 * g + j]) << np.uint64(8 * j)
            total += np.uint64(x[8 * g + j])
        q, s = g >> 3, np.uint64((g & 7) * 8)
        for b in range(8):
            planes[r0 + b, q] |= ((((v >> np.uint64(b)) & lo) * magic) >> np.uint64(56)) << s
    for k in range(n // 8 * 8, n):
        total += np.uint64(x[k])
        for b in range(8):
            planes[r0 + b, k >> 6] |= np.uint64((x[k] >> b) & 1) << np.uint64(k & 63)
    return np.int64(total)


@njit(cache=True)
def dense_u8(planes, n_img, nw, wt, n_out, xsum, consts, last, out, image_bits, scores, row0):
    """First dense layer on uint8 input: s = sum_b 2^b (2 popcount(x_b & w) - popcount(x_b)) = 2 P - sum(x),
    P = sum_b 2^b popcount(x_b & w): blocks of the 8 planes of one image x 16 outputs (planes_bits2: each
    weight word is loaded once for all 8 planes, the planes are weighted once per block), weights stored
    by columns of 8 outputs (see _popcount_cols).

    ``last``: write s to scores[row0 + i]; otherwise threshold and pack into the flat output
    bits ``out`` (image_bits bits per image).
    """
    nblk = (n_out + 7) // 8
    nx = np.empty(n_img, np.int64)
    for i in range(n_img):
        nx[i] = -xsum[i]
    res = np.empty(8, np.int64)
    if last:
        for b in range(nblk):
            for i in range(n_img):
                planes_sums1(planes, 8 * i, wt, b, nw, 2, nx, i, consts, 8 * b, res)
                for j in range(min(8, n_out - 8 * b)):
                    scores[row0 + i, 8 * b + j] = res[j]
        return
    for b in range(0, nblk, 2):  # outputs outside: 16 outputs' weights are read from L1 by every image
        o = 8 * b
        nb = min(16, n_out - o)
        valid = (np.uint64(1) << np.uint64(nb)) - np.uint64(1)
        for i in range(n_img):
            if b + 1 < nblk:
                planes_bits2(planes, 8 * i, wt, b, nw, 2, nx, i, consts, o, res)
            else:
                planes_bits1(planes, 8 * i, wt, b, nw, 2, nx, i, consts, o, res)
            or_run(out, i * image_bits + o, np.uint64(res[0]) & valid, nb)


@njit(cache=True)
def dense_vnni(x, r0, n_img, k4, wv, n_out, consts, last, out, image_bits, scores, row0):
    """First dense layer on uint8 input with VNNI (see _vnni_cols): images x[r0 : r0 + n_img], register
    blocks of 8 images x 48 outputs (the 48 outputs' weights are read from L1 by every image block).

    ``last``: write s to scores[row0 + i]; otherwise threshold and pack into the flat output
    bits ``out`` (image_bits bits per image).
    """
    nblk = (n_out + 15) // 16
    res = np.empty(3 * 8 * 16, np.int64)
    if last:
        for b in range(nblk):
            for i in range(n_img):
                vnni_sums1x1(x, r0 + i, wv, b, k4, consts, 16 * b, res)
                for j in range(min(16, n_out - 16 * b)):
                    scores[row0 + i, 16 * b + j] = res[j]
        return
    n8 = n_img - n_img % 8
    b = 0
    while b < nblk:
        nv = 3 if b + 3 <= nblk else 1  # the last 1-2 vectors of 16 outputs go one at a time
        o = 16 * b
        nb = min(16 * nv, n_out - o)
        valid = (np.uint64(1) << np.uint64(nb)) - np.uint64(1)
        for r in range(0, n8, 8):
            if nv == 3:
                vnni_bits8x3(x, r0 + r, wv, b, k4, consts, o, res)
            else:
                vnni_bits8x1(x, r0 + r, wv, b, k4, consts, o, res)
            for i in range(8):
                or_run(out, (r + i) * image_bits + o, np.uint64(res[i]) & valid, nb)
        for r in range(n8, n_img):
            if nv == 3:
                vnni_bits1x3(x, r0 + r, wv, b, k4, consts, o, res)
            else:
                vnni_bits1x1(x, r0 + r, wv, b, k4, consts, o, res)
            or_run(out, r * image_bits + o, np.uint64(res[0]) & valid, nb)
        b += nv

@njit(cache=True)
def pad_image(img, c_in, h, w, ph, pw, pitch, xp):
    """Copy a uint8 image (C, H, W) into the interior of xp, its zero-padded copy (C, H + 2ph, pitch), flat."""
    hp = h + 2 * ph
    for c in range(c_in):
        for y in range(h):
            dst, src = np.uint64((c * hp + ph + y) * pitch + pw), np.uint64((c * h + y) * w)
            for x in range(np.uint64(w)):
                xp[dst + x] = img[src + x]


@njit(cache=True)
def box_sums(xp, c_in, hp, pitch, kh, kw, n, rowsum, box):
    """box[t] = sum of the C x kh x kw window at flat output position t = y * pitch + x (separable sums)."""
    m = np.uint64(hp * pitch)
    for t in range(np.uint64(n)):
        box[t] = 0
    for c in range(c_in):
        for t in range(m):
            rowsum[t] = 0
        for j in range(kw):
            off = np.uint64(c * hp * pitch + j)
            for t in range(m):
                rowsum[t] += xp[off + t]
        for i in range(kh):
            off = np.uint64(i * pitch)
            for t in range(np.uint64(n)):
                box[t] += rowsum[off + t]


@njit(cache=True)
def tap_sums(xp, taps, o, e, box, n, acc):
    """acc[t] = e (2 A_o - B) at flat output position t, e = sigma_o dir_o = +-1: A_o sums xp[off + t] over
    the taps of output o (taps[o, 0] offsets in taps[o, 1:]), four taps per pass over the map (one long
    vector loop each, all rows of the padded image: the ``pitch - OW`` extra columns are never read),
    B = box[t]. |2 A_o - B| <= 255 * fan_in: the int16 variant cannot overflow; sums, products and
    shifts of elements stored back into int16 are done by LLVM in int16 lanes.
    """
    nn = np.uint64(n)
    for t in range(nn):
        acc[t] = -e * box[t]
    k, count, e2 = 1, taps[o, 0], 2 * e
    while k + 3 <= count:
        o1, o2 = np.uint64(taps[o, k]), np.uint64(taps[o, k + 1])
        o3, o4 = np.uint64(taps[o, k + 2]), np.uint64(taps[o, k + 3])
        for t in range(nn):
            acc[t] += e2 * (xp[o1 + t] + xp[o2 + t] + xp[o3 + t] + xp[o4 + t])
        k += 4
    while k <= count:
        o1 = np.uint64(taps[o, k])
        for t in range(nn):
            acc[t] += e2 * xp[o1 + t]
        k += 1


@njit(cache=True)
def threshold_bits(acc, th, sft, n, first, pv):
    """pv[t] |= (acc[t] >= th[0]) << sft over the map (pv[t] = that bit when ``first``): bit sft of every
    position's byte of output bits. th[0] = dir_o T_o clipped to acc's dtype (the sums never reach its
    limits), so that the comparison, too, runs in the lanes of that dtype."""
    nn = np.uint64(n)
    lim = th[0]
    if first:
        for t in range(nn):
            pv[t] = 0
    bit = 1 << sft
    for t in range(nn):  # a select, not a shift of the comparison: compare and OR stay in 16 lanes
        pv[t] |= bit if acc[t] >= lim else 0


@njit(cache=True)
def pool_pack(pv, tmp, pitch, oh, ow, sh, sw, n_out, o0, nb, out, out0):
    """OR-pool the bytes of output bits pv (outputs o0 .. o0 + nb) over each sh x sw window and pack them
    channels-last: bit out0 + (py * PW + px) * O + o0 + j. The window ORs are two passes of long vector
    loops (rows into tmp, then columns back into pv) that leave each window's OR at its top-left position.
    """
    nv = np.uint64((oh - sh + 1) * pitch)
    for t in range(nv):
        tmp[t] = pv[t]
    for dy in range(1, sh):
        off = np.uint64(dy * pitch)
        for t in range(nv):
            tmp[t] |= pv[t + off]
    nh = nv - np.uint64(sw - 1)
    for t in range(nh):
        pv[t] = tmp[t]
    for dx in range(1, sw):
        for t in range(nh):
            pv[t] |= tmp[t + np.uint64(dx)]
    pw_ = ow // sw
    mask = (np.uint64(1) << np.uint64(nb)) - np.uint64(1)
    for py in range(oh // sh):
        r = np.uint64(py * sh * pitch)
        pos = np.uint64(out0 + py * pw_ * n_out + o0)
        for px in range(np.uint64(pw_)):
            v = np.uint64(pv[r + px * np.uint64(sw)]) & mask
            q, sft = pos >> np.uint64(6), pos & np.uint64(63)
            out[q] |= v << sft
            if sft + np.uint64(nb) > np.uint64(64):
                out[q + np.uint64(1)] |= v >> (np.uint64(64) - sft)
            pos += np.uint64(n_out)


@njit(cache=True)
def conv_u8(img, c_in, h, w, kh, kw, ph, pw, oh, ow, sh, sw, taps, consts, ibuf, out, out0):
    """First conv layer on one uint8 image: integer sums over +-1 weights, threshold, OR-pool, pack.

    s_o = sum_+ x - sum_- x = sigma_o (2 A_o - B): A_o sums only the taps of the rarer sign
    (at most half of them), B is the all-ones box sum shared by every output; consts =
    (sigma, dir * T, dir). The bits of up to 8 outputs are gathered per position into one
    element of pv, which is then OR-pooled and packed (pool_pack).
    ibuf (int16 when 255 * fan_in fits, else int32) holds
    [padded image | sums of one output | box | row sums, later pv | window ORs].
    """
    hp, pitch, n_out = h + 2 * ph, w + 2 * pw, taps.shape[0]
    n = oh * pitch
    n_xp = c_in * hp * pitch + kw  # kw spare elements: the last rows' extra columns read past the image
    xp = ibuf[:n_xp]
    acc = ibuf[n_xp : n_xp + n]
    box = ibuf[n_xp + n : n_xp + 2 * n]
    rowsum = ibuf[n_xp + 2 * n : n_xp + 2 * n + hp * pitch]
    tmp = ibuf[n_xp + 2 * n + hp * pitch : n_xp + 3 * n + hp * pitch]
    for t in range(np.uint64(n_xp)):
        xp[t] = 0  # (cheaper than remembering which scratch was zeroed: ~1,000 elements for 28 x 28)
    pad_image(img, c_in, h, w, ph, pw, pitch, xp)
    box_sums(xp, c_in, hp, pitch, kh, kw, n, rowsum, box)
    pv = rowsum  # free once the box sums are done (hp * pitch >= n)
    lim = 2**15 - 1 if ibuf.itemsize == 2 else 2**31 - 1
    for o0 in range(0, n_out, 8):
        nb = min(8, n_out - o0)
        for j in range(nb):
            o = o0 + j
            tap_sums(xp, taps, o, consts[0, o] * consts[2, o], box, n, acc)
            tmp[0] = min(max(consts[1, o], -lim), lim)  # the threshold in acc's dtype (tmp is free until pool_pack)
            threshold_bits(acc, tmp[:1], j, n, j == 0, pv)
        pool_pack(pv, tmp, pitch, oh, ow, sh, sw, n_out, o0, nb, out, out0)


# --------------------------------------------------------------------------- the microbenchmark


@njit(cache=True)
def and_popcount_peak(a, w, repeats):
    """The machine's AND+popcount rate: each word of ``a`` ANDed with 4 words held in registers
    (w[0..3]), popcounted and accumulated -- 4 word operations per word loaded, nothing else.

    The 4 words rotate between repeats, so that no repeat can be skipped; returns the total.
    """
    w0, w1, w2, w3 = w[0], w[1], w[2], w[3]
    total = np.uint64(0)
    for _ in range(repeats):
        s0 = s1 = s2 = s3 = np.uint64(0)
        for k in range(a.shape[0]):
            x = a[k]
            s0 += popcount(x & w0)
            s1 += popcount(x & w1)
            s2 += popcount(x & w2)
            s3 += popcount(x & w3)
        total += s0 + (s1 << np.uint64(1)) + (s2 << np.uint64(2)) + (s3 << np.uint64(3))
        w0, w1, w2, w3 = w1, w2, w3, w0
    return total


# --------------------------------------------------------------------------- labels


@njit(cache=True)
def labels_from_scores(scores, scale, offset, threshold_consts, labels):
    """argmax(scale * s + offset) in float64, first maximum; or, for a single-unit threshold network, its bit."""
    n, k = scores.shape
    for i in range(n):
        if threshold_consts.shape[1]:
            s = np.int64(scores[i, 0])
            labels[i] = 1 if threshold_consts[2, 0] * s >= threshold_consts[1, 0] else 0
            continue
        best, arg = scores[i, 0] * scale[0] + offset[0], 0
        for j in range(1, k):
            v = scores[i, j] * scale[j] + offset[j]
            if v > best:
                best, arg = v, j
        labels[i] = arg


# --------------------------------------------------------------------------- the whole network
# One compiled call runs every layer: ``forward_serial`` in the calling thread (batch 1, small
# batches: no thread start-up), ``forward_parallel`` with ``prange`` over the tiles, each thread
# using its own preallocated scratch slot. A tile (a few images) goes through all layers before
# the next one starts, so its activations stay in cache. The layers are rows of ``params``
# (columns: plan.COLUMNS) over pooled arrays.


@njit(cache=True)
def run_tile(x, i0, i1, params, wpool, cpool, taps, scores, bits, rows, rowbit, ibuf16, ibuf32, xsum):
    """Images x[i0:i1] through every layer; the last layer writes scores[i0:i1]. Columns: plan.COLUMNS."""
    n = i1 - i0
    image_bits = bits.shape[2] * 64
    cur = 0
    for layer in range(params.shape[0]):
        p = params[layer]
        kind, last, n_out, n_out_pad, nw, alpha, beta = p[0], p[1], p[2], p[3], p[4], p[7], p[8]
        c, h, w, kh, kw, ph, pw, oh, ow, sh, sw = p[9], p[10], p[11], p[12], p[13], p[14], p[15], p[16], p[17], p[18], p[19]
        src, dst = bits[cur], bits[1 - cur]
        dst[:n, :] = 0
        out = dst.reshape(dst.size)
        if kind == 4:  # convolution of bits with few channels: table lookups (conv_lut)
            g, ntaps, size, o16 = p[22], p[23], p[24], (n_out + 15) // 16 * 16
            lut = wpool[p[5] : p[5] + (size + o16 + 3) // 4].view(np.int16)
            toff, tbase = cpool[p[6] : p[6] + ntaps], cpool[p[6] + ntaps : p[6] + 2 * ntaps]
            for i in range(n):
                conv_lut(src, i, c, h, w, ph, pw, oh, ow, sh, sw, g, ntaps, n_out, lut[:size], lut[size : size + o16],
                         toff, tbase, ibuf32, ibuf16, out, i * image_bits)
            cur = 1 - cur
            continue
        if kind == 5:  # first layer: dense on uint8 values with VNNI (nw: 4-byte groups per image)
            consts = cpool[p[6] : p[6] + 3 * n_out_pad].reshape((3, n_out_pad))
            dense_vnni(x, i0, n, nw, wpool[p[5] : p[5] + n_out_pad * nw // 2], n_out, consts, last, out, image_bits,
                       scores, i0)
            cur = 1 - cur
            continue
        wts = wpool[p[5] : p[5] + n_out_pad * nw].reshape((n_out_pad, nw))
        consts = cpool[p[6] : p[6] + 3 * n_out_pad].reshape((3, n_out_pad))
        if kind == 0:  # first layer: convolution of uint8 pixels, integer sums
            for i in range(n):
                if p[20]:
                    conv_u8(x[i0 + i], c, h, w, kh, kw, ph, pw, oh, ow, sh, sw, taps, consts, ibuf16, out, i * image_bits)
                else:
                    conv_u8(x[i0 + i], c, h, w, kh, kw, ph, pw, oh, ow, sh, sw, taps, consts, ibuf32, out, i * image_bits)
        elif kind == 1:  # first layer: dense on uint8 values, as 8 bit planes
            for i in range(n):
                xsum[i] = byte_planes(x[i0 + i], rows, 8 * i, nw)
            dense_u8(rows, n, nw, wpool[p[5] : p[5] + n_out_pad * nw], n_out, xsum, consts, last, out, image_bits,
                     scores, i0)
        elif kind == 2:  # convolution of bits: im2col, then the popcount product
            r = 0
            for i in range(n):
                r = im2col_bits(src, i, c, h, w, kh, kw, ph, pw, oh, ow, sh, sw, rows, r, nw)
            row_bit_offsets(r, p[21], sh * sw, n_out, image_bits, rowbit)
            gemm(rows, r, nw, wts, n_out, alpha, beta, consts, rowbit, out, scores, i0, False)
        else:  # dense layer on bits (weights by columns of 8 outputs)
            dense_bits(src, n, nw, wpool[p[5] : p[5] + n_out_pad * nw], n_out, alpha, beta, consts, out, image_bits,
                       scores, i0, last)
        cur = 1 - cur


@njit(cache=True)
def forward_serial(x, tile, sizes, params, wpool, cpool, taps, scale, offset, final, scores, labels):
    """Scores and labels of the batch x (N, D) uint8 in the calling thread."""
    bits = np.zeros((2, tile, sizes[0]), np.uint64)
    rows = np.zeros((sizes[1] * tile, sizes[2]), np.uint64)
    rowbit = np.zeros(sizes[1] * tile, np.int64)
    ibuf16 = np.empty(sizes[3], np.int16)
    ibuf32 = np.empty(sizes[4], np.int32)
    xsum = np.zeros(tile, np.int64)
    n = x.shape[0]
    for t in range((n + tile - 1) // tile):
        run_tile(x, t * tile, min(n, (t + 1) * tile), params, wpool, cpool, taps, scores, bits, rows, rowbit,
                 ibuf16, ibuf32, xsum)
    labels_from_scores(scores, scale, offset, final, labels)


@njit(cache=True, parallel=True)
def forward_parallel(x, tile, nthreads, sizes, params, wpool, cpool, taps, scale, offset, final, scores, labels):
    """Scores and labels of the batch x, its tiles shared out among nthreads threads by prange.

    Each tile runs in the scratch slot of the thread that takes it (get_thread_id). numba's
    default static split is kept: handing tiles out one at a time (parallel_chunksize(1)) is
    slower (docs/PERFORMANCE.md).
    """
    bits = np.zeros((nthreads, 2, tile, sizes[0]), np.uint64)
    rows = np.zeros((nthreads, sizes[1] * tile, sizes[2]), np.uint64)
    rowbit = np.zeros((nthreads, sizes[1] * tile), np.int64)
    ibuf16 = np.empty((nthreads, sizes[3]), np.int16)
    ibuf32 = np.empty((nthreads, sizes[4]), np.int32)
    xsum = np.zeros((nthreads, tile), np.int64)
    n = x.shape[0]
    for t in prange((n + tile - 1) // tile):
        k = get_thread_id()
        run_tile(x, t * tile, min(n, (t + 1) * tile), params, wpool, cpool, taps, scores, bits[k], rows[k], rowbit[k],
                 ibuf16[k], ibuf32[k], xsum[k])
    labels_from_scores(scores, scale, offset, final, labels)
