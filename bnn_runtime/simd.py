"""LLVM intrinsics of the runtime: the register blocks numba would not vectorise by itself.

Each builder below returns an ``@intrinsic`` that emits one register block of a kernel in explicit
vector IR: 512-bit AND + popcount blocks of weights stored by columns of 8 outputs (_popcount_cols:
dense layers, im2col rows of convolutions, bit planes), the VNNI
first layer (_vnni_cols), and the 16-lane int16 table sums of conv_lut (lut_max16, ge_mask16).
They are called from the njit kernels (kernels.py, first_layer.py); none reads a global array. Code
generation reads one global flag, ``VNNI_NATIVE`` (the CPU has AVX-512 VNNI), to pick the instruction.

Bit products, for a row ``a`` of activation bits and a row ``w`` of weight bits
(``p = popcount(a & w)``, ``pa = popcount(a)``, ``pw = popcount(w)``, ``n`` = fan-in):

* ``01`` inputs:  ``s = 2 p - pa``
* ``pm1`` inputs: ``s = n - 2 popcount(a ^ w) = 4 p - 2 pa - 2 pw + n``  (since
  ``popcount(a ^ w) = pa + pw - 2 p``), so one AND kernel serves both encodings:
  ``s = alpha p + beta pa + gamma_o`` with per-layer ``alpha, beta`` and per-output ``gamma``.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .host import USE_VNNI, VNNI_MODE  # noqa: F401 (USE_VNNI: the planner's, read here by tests)
from .layout import TAP_LANES


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


@intrinsic
def and_popcount_pass(typingctx, a, w, rot):
    """One pass of the AND+popcount microbenchmark in explicit 512-bit vectors (<8 x i64>, VPOPCNTQ on
    AVX-512; LLVM splits them on narrower CPUs): sum over j < 4 of popcount(a[k] & w[(j + rot) % 4]) << j
    over the first 8 (len(a) // 8) words of ``a``, with the 4 words of w broadcast into registers --
    4 word-vector AND, popcount and add per vector loaded, nothing else (kernels.and_popcount_peak)."""
    if not (
        isinstance(a, types.Array)
        and a.ndim == 1
        and a.dtype == types.uint64
        and a.layout == "C"
        and isinstance(w, types.Array)
        and w.dtype == types.uint64
    ):
        return None

    def codegen(context, builder, sig, args):
        a_v, w_v, rot_v = args
        i64 = ir.IntType(64)
        aa = context.make_array(sig.args[0])(context, builder, a_v)
        n8 = builder.udiv(cgutils.unpack_tuple(builder, aa.shape, 1)[0], ir.Constant(i64, 8))
        ap = builder.bitcast(aa.data, V8.as_pointer())
        wp = context.make_array(sig.args[1])(context, builder, w_v).data
        wv = []
        for j in range(4):
            idx = builder.urem(builder.add(rot_v, ir.Constant(i64, j)), ir.Constant(i64, 4))
            wv.append(_splat(builder, builder.load(builder.gep(wp, [idx])), V8))
        ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V8, [V8]), "llvm.ctpop.v8i64")
        sums = [cgutils.alloca_once(builder, V8) for _ in range(4)]
        for s in sums:
            builder.store(ir.Constant(V8, None), s)
        with cgutils.for_range(builder, n8) as loop:
            x = builder.load(builder.gep(ap, [loop.index]), align=8)
            for j in range(4):
                builder.store(
                    builder.add(builder.load(sums[j]), builder.call(ctpop, [builder.and_(x, wv[j])])), sums[j]
                )
        total = ir.Constant(V8, None)
        for j in range(4):
            total = builder.add(total, builder.shl(builder.load(sums[j]), _splat(builder, ir.Constant(i64, j), V8)))
        out = ir.Constant(i64, 0)
        for lane in range(8):
            out = builder.add(out, builder.extract_element(total, ir.Constant(ir.IntType(32), lane)))
        return out

    return types.uint64(a, w, types.int64), codegen


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


def _threshold_bits(builder, u, crow, rp):
    """The bits of a block of 8-lane vectors without a multiplication: u[i][v] = alpha p + beta pa of row i,
    vector v; consts = (gamma, dir * T, dir) per output. dir * s >= dir * T with s = u + gamma is, with
    m = dir >> 63 (0 for dir = +1, all ones for -1), (u ^ m) >= ((T - gamma) ^ m): T = ((dir T) ^ m) - m,
    and XOR with all ones reverses the order of signed integers. (A padded output, dir 0, gets a bit that its
    caller masks off.) rp[i] = the bits of row i, bit 8 v + j for output 8 v + j."""
    i64 = ir.IntType(64)
    m, key = [], []
    for v in range(len(u[0])):
        mv = builder.ashr(crow(2, v), _splat(builder, ir.Constant(i64, 63), V8))
        t = builder.sub(builder.xor(crow(1, v), mv), mv)
        m.append(mv)
        key.append(builder.xor(builder.sub(t, crow(0, v)), mv))
    for i, row in enumerate(u):
        mask = ir.Constant(i64, 0)
        for v, x in enumerate(row):
            ge = builder.icmp_signed(">=", builder.xor(x, m[v]), key[v])
            bv = builder.zext(builder.bitcast(ge, ir.IntType(8)), i64)
            mask = builder.or_(mask, builder.shl(bv, ir.Constant(i64, 8 * v)))
        builder.store(mask, builder.gep(rp, [ir.Constant(i64, i)]))


def _popcount_cols(nr, nv, planes, bits):
    """An intrinsic: one register block of a dense layer whose weights are stored by columns of 8 outputs.

    ``f(a, r, wt, blk, nw, alpha, pa, pr, consts, o, res)``: wt holds vector b (outputs 8 b .. 8 b + 7)
    as ``wt[(b * nw + k) * 8 + j] = w[8 b + j, k]``; for rows i < nr of ``a`` (from r) and vectors
    v < nv (from blk), ``p[i][v] += popcount(broadcast(a[r + i, k]) & wt[blk + v, k])`` over k < nw:
    one <8 x i64> AND (of a broadcast word), ctpop (VPOPCNTQ) and add per word and vector, and each lane
    already is one output's sum (no reduction). Then, in vectors:

    * ``planes`` (nr = 8 bit planes of one image): P = sum_i 2^i p[i], one row;
    * s = alpha p + pa[pr + i] + gamma (consts = (gamma, dir * T, dir) per output, from o = 8 blk; alpha
      a power of two, 2 or 4);
    * ``bits``: res[i] = the nv * 8 bits dir * s >= dir * T of row i (bit 8 v + j: output o + 8 v + j;
      _threshold_bits);
      else res[(i * nv + v) * 8 + j] = s.
    """
    rows = 1 if planes else nr

    @intrinsic
    def block(typingctx, a, r, wt, blk, nw, alpha, pa, pr, consts, o, res):
        if not (
            isinstance(a, types.Array)
            and a.ndim == 2
            and a.dtype == types.uint64
            and a.layout == "C"
            and isinstance(wt, types.Array)
            and wt.dtype == types.uint64
            and wt.layout == "C"
            and isinstance(pa, types.Array)
            and pa.dtype == types.int64
            and isinstance(consts, types.Array)
            and consts.ndim == 2
            and consts.dtype == types.int64
            and consts.layout == "C"
            and isinstance(res, types.Array)
            and res.dtype == types.int64
        ):
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
            arow = [
                builder.gep(aa.data, [builder.mul(builder.add(r_v, ir.Constant(i64, i)), astride)]) for i in range(nr)
            ]
            wp = builder.bitcast(data(2).data, V8.as_pointer())
            wcol = [builder.gep(wp, [builder.mul(builder.add(blk_v, ir.Constant(i64, v)), nw_v)]) for v in range(nv)]
            ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V8, [V8]), "llvm.ctpop.v8i64")
            p = _outer_sums(
                builder,
                arow,
                wcol,
                nw_v,
                V8,
                lambda s, av, wv: builder.add(s, builder.call(ctpop, [builder.and_(av, wv)])),
                align=8,
            )
            if planes:
                comb = p[0]
                for i in range(1, nr):
                    comb = [
                        builder.add(x, builder.shl(y, splat(ir.Constant(i64, i))))
                        for x, y in zip(comb, p[i], strict=True)
                    ]
                p = [comb]
            crow = _consts_loader(context, builder, sig.args[8], args[8], o_v, 8)
            pa_d = data(6).data
            # alpha is 2 or 4 (plan.LayerInput.alpha_beta): alpha p is a shift, not a 3-uop vpmullq
            ctpop64 = builder.module.declare_intrinsic("llvm.ctpop", [i64])
            sh = splat(builder.call(ctpop64, [builder.sub(alpha_v, ir.Constant(i64, 1))]))  # log2(alpha)
            u = []  # alpha p + beta pa, per row and vector
            for i in range(rows):
                pav = splat(builder.load(builder.gep(pa_d, [builder.add(pr_v, ir.Constant(i64, i))])))
                u.append([builder.add(builder.shl(p[i][v], sh), pav) for v in range(nv)])
            if bits:
                _threshold_bits(builder, u, crow, data(10).data)
            else:
                _epilogue(
                    builder,
                    [[builder.add(x, crow(0, v)) for v, x in enumerate(row)] for row in u],
                    crow,
                    data(10).data,
                    8,
                    False,
                )
            return context.get_dummy_value()

        return types.none(
            a, types.int64, wt, types.int64, types.int64, types.int64, pa, types.int64, consts, types.int64, res
        ), codegen

    return block


cols_bits4x4 = _popcount_cols(4, 4, False, True)
cols_bits1x4 = _popcount_cols(1, 4, False, True)
cols_bits4x2 = _popcount_cols(4, 2, False, True)
cols_bits1x2 = _popcount_cols(1, 2, False, True)
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


VNNI_NATIVE = _cpu_has_vnni() and VNNI_MODE != "emulate"  # (numba's own target: what the code is generated for)
# USE_VNNI (host.py, numba's rule without numba: the planner's choice) may only differ from it where numba's
# config file changes the target; either kernel is exact on any CPU.
I32X16 = ir.VectorType(ir.IntType(32), 16)
I64X16 = ir.VectorType(ir.IntType(64), 16)


def _dpbusd(builder, acc, a, b):
    """acc + the sums of 4 products of the unsigned bytes of a and the signed bytes of b, per int32 lane."""
    if VNNI_NATIVE:
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(I32X16, [I32X16, I32X16, I32X16]), "llvm.x86.avx512.vpdpbusd.512"
        )
        return builder.call(fn, [acc, a, b])
    bytes64, ints64 = ir.VectorType(ir.IntType(8), 64), ir.VectorType(ir.IntType(32), 64)
    prod = builder.mul(
        builder.zext(builder.bitcast(a, bytes64), ints64), builder.sext(builder.bitcast(b, bytes64), ints64)
    )
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
        if not (
            isinstance(x, types.Array)
            and x.ndim == 2
            and x.dtype == types.uint8
            and x.layout == "C"
            and isinstance(wv, types.Array)
            and wv.dtype == types.uint64
            and wv.layout == "C"
            and isinstance(consts, types.Array)
            and consts.ndim == 2
            and consts.dtype == types.int64
            and consts.layout == "C"
            and isinstance(res, types.Array)
            and res.dtype == types.int64
        ):
            return None

        def codegen(context, builder, sig, args):
            x_v, r_v, w_v, blk_v, k4_v, c_v, o_v, res_v = args
            i64, i32 = ir.IntType(64), ir.IntType(32)

            def data(k):
                return context.make_array(sig.args[k])(context, builder, args[k])

            xa = data(0)
            xstride = cgutils.unpack_tuple(builder, xa.strides, 2)[0]
            xp = builder.bitcast(xa.data, ir.IntType(8).as_pointer())
            xrow = [
                builder.bitcast(
                    builder.gep(xp, [builder.mul(builder.add(r_v, ir.Constant(i64, i)), xstride)]), i32.as_pointer()
                )
                for i in range(nr)
            ]
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
    if not (
        isinstance(table, types.Array)
        and table.dtype == types.int16
        and isinstance(m, types.Array)
        and m.dtype == types.int16
        and isinstance(grid, types.Array)
        and grid.dtype == types.int32
    ):
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
    if not (
        isinstance(m, types.Array)
        and m.dtype == types.int16
        and isinstance(thr, types.Array)
        and thr.dtype == types.int16
    ):
        return None

    def codegen(context, builder, sig, args):
        mp = builder.bitcast(_data(context, builder, sig.args[0], args[0]), V16.as_pointer())
        tp = _data(context, builder, sig.args[1], args[1])
        tv = builder.load(builder.bitcast(builder.gep(tp, [args[2]]), V16.as_pointer()), align=2)
        bits = builder.icmp_signed(">=", builder.load(mp, align=2), tv)
        return builder.zext(builder.bitcast(bits, ir.IntType(16)), ir.IntType(64))

    return types.uint64(m, thr, types.int64), codegen


# --------------------------------------------------------------------------- first convolution on uint8: tap sums
# first_layer.conv_u8 sums, per output, the pixels under the taps of its rarer sign, for TAP_LANES positions at
# once: each tap is one unaligned vector load at a fixed offset from the block's first position (the image is
# laid out so that this holds, plan.phase_grid). The sum stays in registers over all the taps of an output,
# and the threshold, too, runs on the whole vector: no sum is stored. Generic LLVM vector operations only
# (<64 x i16> is two 512-bit vectors here, four AVX2 or eight NEON registers elsewhere).


def _tap_sum(builder, xp, taps, tstride, row, t0, vec):
    """The sum over the taps of row ``row`` of taps (its count, then its offsets) of the vectors xp[t0 + off:]."""
    i64 = ir.IntType(64)
    base = builder.mul(row, tstride)
    acc = cgutils.alloca_once(builder, vec)
    builder.store(ir.Constant(vec, None), acc)
    with cgutils.for_range(builder, builder.load(builder.gep(taps, [base]))) as loop:
        off = builder.load(builder.gep(taps, [builder.add(base, builder.add(loop.index, ir.Constant(i64, 1)))]))
        p = builder.bitcast(builder.gep(xp, [builder.add(t0, off)]), vec.as_pointer())
        builder.store(builder.add(builder.load(acc), builder.load(p, align=vec.element.width // 8)), acc)
    return builder.load(acc)


def _sums_array(a) -> bool:
    return isinstance(a, types.Array) and a.ndim == 1 and a.dtype in (types.int16, types.int32) and a.layout == "C"


def _taps_array(a) -> bool:
    return isinstance(a, types.Array) and a.ndim == 2 and a.dtype == types.int64 and a.layout == "C"


@intrinsic
def tap_box(typingctx, xp, taps, row, t0, box):
    """box[t0 : t0 + TAP_LANES] = the sums of xp over the taps of row ``row`` of taps (all of a kernel's: the box)."""
    if not (_sums_array(xp) and _taps_array(taps) and _sums_array(box) and box.dtype == xp.dtype):
        return None

    def codegen(context, builder, sig, args):
        xp_a, taps_a, row_v, t0_v, box_a = args
        vec = ir.VectorType(context.get_data_type(sig.args[0].dtype), TAP_LANES)
        tt = context.make_array(sig.args[1])(context, builder, taps_a)
        tstride = cgutils.unpack_tuple(builder, tt.shape, 2)[1]
        s = _tap_sum(builder, _data(context, builder, sig.args[0], xp_a), tt.data, tstride, row_v, t0_v, vec)
        dst = builder.gep(_data(context, builder, sig.args[4], box_a), [t0_v])
        builder.store(s, builder.bitcast(dst, vec.as_pointer()), align=vec.element.width // 8)
        return context.get_dummy_value()

    return types.none(xp, taps, types.int64, types.int64, box), codegen


@intrinsic
def tap_bits(typingctx, xp, taps, o0, nb, t0, box, consts, pv):
    """pv[t0 : t0 + TAP_LANES] = bytes whose bit j (j < nb) is output o0 + j's bit at those positions.

    Output o: s = e (2 A - B), A its sum over its taps (row o of taps), B = box[t0:], e = consts[0, o] *
    consts[2, o] = sigma_o dir_o; the bit is s >= consts[1, o] = dir_o T_o clipped to the lanes' range (the sums
    never reach it: plan.INT16_MAX). consts: (3, n) int64; pv: uint8.
    """
    if not (
        _sums_array(xp)
        and _taps_array(taps)
        and _sums_array(box)
        and box.dtype == xp.dtype
        and _taps_array(consts)
        and isinstance(pv, types.Array)
        and pv.ndim == 1
        and pv.dtype == types.uint8
        and pv.layout == "C"
    ):
        return None

    def codegen(context, builder, sig, args):
        xp_a, taps_a, o0_v, nb_v, t0_v, box_a, c_a, pv_a = args
        i64, i8 = ir.IntType(64), ir.IntType(8)
        elem = context.get_data_type(sig.args[0].dtype)
        vec, bytes_vec = ir.VectorType(elem, TAP_LANES), ir.VectorType(i8, TAP_LANES)
        align = elem.width // 8
        xp_p = _data(context, builder, sig.args[0], xp_a)
        tt = context.make_array(sig.args[1])(context, builder, taps_a)
        tstride = cgutils.unpack_tuple(builder, tt.shape, 2)[1]
        box_p = builder.gep(_data(context, builder, sig.args[5], box_a), [t0_v])
        b = builder.load(builder.bitcast(box_p, vec.as_pointer()), align=align)
        cc = context.make_array(sig.args[6])(context, builder, c_a)
        cstride = cgutils.unpack_tuple(builder, cc.shape, 2)[1]
        top = (1 << (elem.width - 1)) - 1
        bits = cgutils.alloca_once(builder, bytes_vec)
        builder.store(ir.Constant(bytes_vec, None), bits)
        with cgutils.for_range(builder, nb_v) as loop:
            o = builder.add(o0_v, loop.index)

            def const(q):
                return builder.load(builder.gep(cc.data, [builder.add(builder.mul(ir.Constant(i64, q), cstride), o)]))

            a = _tap_sum(builder, xp_p, tt.data, tstride, o, t0_v, vec)
            d = builder.sub(builder.shl(a, _splat(builder, ir.Constant(elem, 1), vec)), b)
            e = builder.trunc(builder.mul(const(0), const(2)), elem)
            lim = const(1)
            lim = builder.select(builder.icmp_signed(">", lim, ir.Constant(i64, top)), ir.Constant(i64, top), lim)
            lim = builder.select(builder.icmp_signed("<", lim, ir.Constant(i64, -top)), ir.Constant(i64, -top), lim)
            ge = builder.icmp_signed(
                ">=", builder.mul(d, _splat(builder, e, vec)), _splat(builder, builder.trunc(lim, elem), vec)
            )
            bit = _splat(builder, builder.trunc(builder.shl(ir.Constant(i64, 1), loop.index), i8), bytes_vec)
            on = builder.select(ge, bit, ir.Constant(bytes_vec, None))
            builder.store(builder.or_(builder.load(bits), on), bits)
        dst = builder.gep(_data(context, builder, sig.args[7], pv_a), [t0_v])
        builder.store(builder.load(bits), builder.bitcast(dst, bytes_vec.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.none(xp, taps, types.int64, types.int64, types.int64, box, consts, pv), codegen


WIDEN_LANES = 32  # pixels per vector of widen


@intrinsic
def widen(typingctx, img, src, xp, dst, nvec):
    """xp[dst : dst + 32 nvec] = img[src : src + 32 nvec], uint8 pixels widened to xp's lanes (int16 or int32), in
    vectors of WIDEN_LANES (a row of the padded image in whole vectors: the caller keeps both ranges in bounds)."""
    if not (isinstance(img, types.Array) and img.ndim == 1 and img.dtype == types.uint8 and _sums_array(xp)):
        return None

    def codegen(context, builder, sig, args):
        img_a, src_v, xp_a, dst_v, n_v = args
        i64 = ir.IntType(64)
        elem = context.get_data_type(sig.args[2].dtype)
        bvec, wvec = ir.VectorType(ir.IntType(8), WIDEN_LANES), ir.VectorType(elem, WIDEN_LANES)
        ip = builder.gep(_data(context, builder, sig.args[0], img_a), [src_v])
        xp_p = builder.gep(_data(context, builder, sig.args[2], xp_a), [dst_v])
        with cgutils.for_range(builder, n_v) as loop:
            k = builder.mul(loop.index, ir.Constant(i64, WIDEN_LANES))
            v = builder.load(builder.bitcast(builder.gep(ip, [k]), bvec.as_pointer()), align=1)
            dst = builder.bitcast(builder.gep(xp_p, [k]), wvec.as_pointer())
            builder.store(builder.zext(v, wvec), dst, align=elem.width // 8)
        return context.get_dummy_value()

    return types.none(img, types.int64, xp, types.int64, types.int64), codegen


# --------------------------------------------------------------------------- atomics of the tile queue (driver.py)


def _slot(context, builder, sig, args):
    arr = context.make_array(sig.args[0])(context, builder, args[0])
    return builder.gep(arr.data, [args[1]])


def _int64_array(a) -> bool:
    return isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.int64 and a.layout == "C"


@intrinsic
def atomic_add(typingctx, arr, i, v):
    """arr[i] += v atomically; returns the old value (a fetch-and-add)."""
    if not _int64_array(arr):
        return None

    def codegen(context, builder, sig, args):
        return builder.atomic_rmw("add", _slot(context, builder, sig, args), args[2], "seq_cst")

    return types.int64(arr, types.int64, types.int64), codegen


@intrinsic
def atomic_cas(typingctx, arr, i, old, new):
    """If arr[i] == old, set it to new, atomically; returns whether it did."""
    if not _int64_array(arr):
        return None

    def codegen(context, builder, sig, args):
        res = builder.cmpxchg(_slot(context, builder, sig, args), args[2], args[3], "seq_cst", "seq_cst")
        return builder.extract_value(res, 1)

    return types.boolean(arr, types.int64, types.int64, types.int64), codegen


@intrinsic
def atomic_load(typingctx, arr, i):
    """arr[i], read atomically (not kept in a register across a spin loop)."""
    if not _int64_array(arr):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_slot(context, builder, sig, args), "seq_cst", align=8)

    return types.int64(arr, types.int64), codegen


@intrinsic
def atomic_store(typingctx, arr, i, v):
    """arr[i] = v, written atomically (after every write before it)."""
    if not _int64_array(arr):
        return None

    def codegen(context, builder, sig, args):
        builder.store_atomic(args[2], _slot(context, builder, sig, args), "seq_cst", align=8)
        return context.get_dummy_value()

    return types.none(arr, types.int64, types.int64), codegen


# --------------------------------------------------------------------------- views without numba's checks


@intrinsic
def misalign(typingctx, a):
    """The address of a's first element modulo 64 (a cache line), in bytes."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, sig, args):
        ptr = builder.ptrtoint(_data(context, builder, sig.args[0], args[0]), ir.IntType(64))
        return builder.and_(ptr, ir.Constant(ir.IntType(64), 63))

    return types.int64(a), codegen


@intrinsic
def view(typingctx, a, dtype, shape):
    """A C-contiguous array a seen as ``dtype`` with ``shape`` (a tuple of int64), unchecked: the caller
    guarantees prod(shape) * itemsize <= a.nbytes. (numba's reshape and view check the sizes, and compiling
    their error messages costs seconds of every first start.)"""
    if not (
        isinstance(a, types.Array)
        and a.layout == "C"
        and isinstance(dtype, types.NumberClass)
        and isinstance(shape, types.UniTuple)
        and isinstance(shape.dtype, types.Integer)
    ):
        return None
    ret = types.Array(dtype.instance_type, shape.count, "C")

    def codegen(context, builder, sig, args):
        from numba.core.imputils import impl_ret_borrowed
        from numba.np.arrayobj import populate_array

        src = context.make_array(sig.args[0])(context, builder, args[0])
        dst = context.make_array(ret)(context, builder)
        i64 = ir.IntType(64)
        dims = [builder.sext(d, i64) if d.type.width < 64 else d for d in cgutils.unpack_tuple(builder, args[2])]
        size = context.get_abi_sizeof(context.get_data_type(ret.dtype))
        strides, step = [], ir.Constant(i64, size)
        for d in reversed(dims):
            strides.insert(0, step)
            step = builder.mul(step, d)
        populate_array(
            dst,
            data=builder.bitcast(src.data, dst.data.type),
            shape=dims,
            strides=strides,
            itemsize=ir.Constant(i64, size),
            meminfo=src.meminfo,
            parent=src.parent,
        )
        return impl_ret_borrowed(context, builder, ret, dst._getvalue())

    return ret(a, dtype, shape), codegen
