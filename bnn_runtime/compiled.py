"""The compiled driver, loaded from the kernel cache or compiled once, with a notice when it compiles.

``forward()`` returns driver.forward compiled for the one signature every model runs with (the
layers are data: rows of params), so a process compiles or loads exactly one specialisation,
shared by the serial and the parallel path. The first time on a machine (no cache yet) that takes
seconds; ``set_notice`` lets an application say so (the CLI prints NOTICE on stderr), and
``bnn warmup`` calls ``forward()`` ahead of time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

NOTICE = "compiling kernels for this CPU (first use only)"
_notice: Callable[[str], None] | None = None
_lock = threading.Lock()
_forward = None


def set_notice(callback: Callable[[str], None] | None) -> None:
    """Call callback(NOTICE) before the kernels compile (not when they load from the cache)."""
    global _notice
    _notice = callback


def signature():
    """The argument types of driver.forward (arrays C-contiguous, as model.BnnModel.run passes them)."""
    from numba import types

    def arr(dtype, ndim):
        return types.Array(dtype, ndim, "C")

    i64 = types.int64
    return (
        arr(types.uint8, 2),
        i64,
        arr(i64, 1),
        arr(i64, 2),
        arr(types.uint64, 1),
        arr(i64, 1),
        arr(i64, 2),
        arr(types.float64, 1),
        arr(types.float64, 1),
        arr(i64, 2),
        arr(types.int32, 2),
        arr(i64, 1),
        arr(i64, 1),
        types.boolean,
    )


def forward():
    """driver.forward, compiled (or loaded from the cache: cache.py) for signature(); CacheError if no cache
    directory can be written."""
    global _forward
    with _lock:
        if _forward is None:
            from . import cache, driver

            ready = cache.is_ready()
            if not ready and _notice is not None:
                _notice(NOTICE)
            driver.forward.compile(signature())
            if not ready:
                cache.mark_ready()
            _forward = driver.forward
    return _forward
