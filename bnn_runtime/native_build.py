"""numba's side of native.py: the driver's machine code and a C entry point for it, written to the kernel cache.

``write(uses, dispatcher)`` takes the machine code numba made for the driver (the object file it just compiled,
or loaded from its cache: cache.QuickLoadCache keeps it), compiles a small C entry point beside it with
``@cfunc`` -- ``bnn_entry(arguments, tile, main) -> status`` turns native.ARRAYS' (address, shape) slots into
arrays and calls the driver by its symbol, so the driver is not compiled again: ~0.1 s after a first compile
-- and writes both as native.py's file, to a temporary name then renamed. Only when numba compiles for the
very target native.key() names (host.target() == numba's magic_tuple(): else a warm process could never
find the file, or would find one made for another target).
"""

from __future__ import annotations

from pathlib import Path

from llvmlite import ir
from numba import cfunc, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.numpy_support import from_dtype

from . import host, native
from .fileio import atomic_write_bytes


@intrinsic
def from_address(typingctx, address, shape, dtype):
    """A C-contiguous array over the memory at ``address`` (int64), with no owner (the kernels need no NRT)."""
    ret = types.Array(dtype.instance_type, shape.count, "C")

    def codegen(context, builder, sig, args):
        from numba.np.arrayobj import populate_array

        dst = context.make_array(ret)(context, builder)
        i64 = ir.IntType(64)
        dims = list(cgutils.unpack_tuple(builder, args[1]))
        size = context.get_abi_sizeof(context.get_data_type(ret.dtype))
        strides, step = [], ir.Constant(i64, size)
        for d in reversed(dims):
            strides.insert(0, step)
            step = builder.mul(step, d)
        data = builder.inttoptr(args[0], dst.data.type)
        populate_array(dst, data=data, shape=dims, strides=strides, itemsize=ir.Constant(i64, size), meminfo=None)
        return dst._getvalue()

    return ret(address, shape, dtype), codegen


def signature() -> tuple:
    """driver.forward's argument types: native.ARRAYS as numba arrays (C order), tile int64 after x, main bool."""
    arrays = [types.Array(from_dtype(dtype), ndim, "C") for _, dtype, ndim in native.ARRAYS]
    return (arrays[0], types.int64, *arrays[1:], types.boolean)


def entry(cres):
    """The C entry point of the compiled driver ``cres`` (a numba CompileResult), calling it by its symbol."""
    sig = cres.signature

    @intrinsic
    def call_driver(typingctx, x, tile, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, main):
        def codegen(context, builder, s, args):
            status, _ = context.call_internal_no_propagate(builder, cres.fndesc, sig, args)
            return builder.zext(status.is_error, ir.IntType(64))  # (an exception: status 1, no Python error)

        return types.int64(*sig.args), codegen

    i64 = types.int64
    u8, u64, i32, f64 = types.uint8, types.uint64, types.int32, types.float64

    @cfunc(types.int64(types.CPointer(i64), i64, i64), _nrt=False)
    def bnn_entry(a, tile, main):
        return call_driver(
            from_address(a[0], (a[1], a[2]), u8),
            tile,
            from_address(a[3], (a[4],), i64),
            from_address(a[6], (a[7], a[8]), i64),
            from_address(a[9], (a[10],), u64),
            from_address(a[12], (a[13],), i64),
            from_address(a[15], (a[16], a[17]), i64),
            from_address(a[18], (a[19],), f64),
            from_address(a[21], (a[22],), f64),
            from_address(a[24], (a[25], a[26]), i64),
            from_address(a[27], (a[28], a[29]), i32),
            from_address(a[30], (a[31],), i64),
            from_address(a[33], (a[34],), i64),
            from_address(a[36], (a[37],), i64),
            main != 0,
        )

    return bnn_entry


def write(uses: int, dispatcher) -> Path | None:
    """Write the native file of the driver ``dispatcher`` (compiled for ``signature()``, layer kinds ``uses``);
    its path, or None where numba's target is not host.target() or the driver's machine code is not at hand."""
    from numba.core.registry import cpu_target

    full_key = native.key(uses)
    if full_key is None or tuple(cpu_target.target_context.codegen().magic_tuple()) != host.target():
        return None
    cres = dispatcher.overloads[signature()]
    code = getattr(dispatcher._cache, "object_code", None)
    if code is None:
        code = cres.library._get_compiled_object()  # (just compiled: numba caches every library's object code)
    fn = entry(cres)
    data = native.pack(full_key, fn.native_name, [bytes(code), bytes(fn._library._get_compiled_object())])
    target = native.path(uses, full_key)
    atomic_write_bytes(target, data)
    return target
