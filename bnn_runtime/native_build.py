"""numba's side of native.py: the driver's machine code, as numba compiled it, written to the kernel cache.

``write(uses, dispatcher)`` takes the object file numba made for the driver (just compiled: numba keeps every
library's object code for its cache; or loaded from numba's cache: cache.QuickLoadCache keeps it) with the names
of its Python wrapper and of its environment, and writes native.py's file, to a temporary name then renamed:
nothing compiles, a few milliseconds. Only when numba compiles for the very target native.key() names
(host.target() == numba's magic_tuple(): else a warm process could never find the file, or would find one made
for another target).
"""

from __future__ import annotations

from pathlib import Path

from numba import types
from numba.np.numpy_support import from_dtype

from . import host, native
from .fileio import atomic_write_bytes


def signature() -> tuple:
    """driver.forward's argument types: native.ARRAYS as numba arrays (C order), tile int64 after x, main bool."""
    arrays = [types.Array(from_dtype(dtype), ndim, "C") for _, dtype, ndim in native.ARRAYS]
    return (arrays[0], types.int64, *arrays[1:], types.boolean)


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
    symbols = {
        "wrapper": cres.fndesc.llvm_cpython_wrapper_name,
        "environment": cres.target_context.get_env_name(cres.fndesc),
    }
    target = native.path(uses, full_key)
    atomic_write_bytes(target, native.pack(full_key, symbols, [bytes(code)]))
    return target
