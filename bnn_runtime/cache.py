"""numba's side of the kernel cache: every kernel of the runtime cached in cache_path.cache_dir(), loaded quickly.

numba's on-disk cache checks only the file that holds a function, not the modules it calls or the constants it
reads: so every ``@njit(cache=True)`` function of ``bnn_runtime`` is cached through ``KernelCacheLocator``, in
cache_path.cache_dir() (named by, and stamped with, cache_path.source_key(): a hash of every kernel source).
(numba's own index keeps the CPU apart: one directory serves several machines.) A ready marker per CPU and
driver says that a driver is there (``is_ready``: no compile notice).

numba writes each cache file to a temporary name and renames it, so an interrupted warm-up
leaves only whole files (the rest compiles next time).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
from numba import njit
from numba.core import caching

from .cache_path import PACKAGE, CacheError, cache_dir, source_key  # noqa: F401 (CacheError: re-exported)

READY = "ready-{}-{:x}"  # a marker file per CPU (a hash of numba's target triple, CPU name and features) and driver


@functools.cache
def _cpu() -> str:
    from numba.core.registry import cpu_target

    return hashlib.sha256(repr(cpu_target.target_context.codegen().magic_tuple()).encode()).hexdigest()[:16]


def _ready_file(uses: int) -> Path:
    return cache_dir() / READY.format(_cpu(), uses)


def is_ready(uses: int) -> bool:
    """Whether the driver for the layer kinds ``uses`` (driver.uses_of) was compiled for this CPU into cache_dir()
    (by ``bnn warmup`` or a first prediction)."""
    return _ready_file(uses).exists()


def mark_ready(uses: int) -> None:
    """Record that the driver for ``uses`` is compiled and cached for this CPU (an empty file, written by rename)."""
    target = _ready_file(uses)
    fd, tmp = tempfile.mkstemp(dir=target.parent)
    os.close(fd)
    os.replace(tmp, target)


class KernelCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """numba's cache locator for the functions of bnn_runtime: cache_dir(), stamped with source_key()."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno

    def get_cache_path(self):
        return str(cache_dir())

    def get_source_stamp(self):
        return source_key()

    def ensure_cache_path(self):
        cache_dir()  # CacheError (not numba's silent fall-through) when nothing can be written

    @classmethod
    def from_function(cls, py_func, py_file):
        if Path(py_file).resolve().parent != PACKAGE:
            return None
        return cls(py_func, py_file)


def kernel(**options):
    """numba's ``njit`` as every kernel of the runtime is compiled: cached (KernelCacheLocator) and without numba's
    memory runtime (NRT, ``_nrt=False``): a kernel allocates nothing (its callers pass scratch) and counts no
    references to arrays, so the cached machine code needs no NRT, which numba would otherwise compile in every
    process that loads it (QuickLoadCache)."""
    return njit(cache=True, _nrt=False, **options)


def _needs_nrt(payload) -> bool:
    """Whether a cached compile result's machine code calls numba's memory runtime (a function compiled with NRT:
    not ``kernel``'s) -- or the payload is not the (library (name, kind, (object code, bitcode)), ...) expected."""
    try:
        return b"NRT_" in payload[0][2][0]
    except (IndexError, TypeError):
        return True


class QuickLoadCache(caching.FunctionCache):
    """numba's cache of one function, but loading a compiled driver without ``target_context.refresh()``.

    numba refreshes the target context before every cache load: it starts its memory runtime (NRT), then
    imports and registers every typing and lowering module it has (numba.np.*, and scipy's BLAS where scipy
    is installed), about 0.3 s of a warm start that needs only the runtime -- the cached library is machine
    code. NRT starts only when the machine code calls it (a kernel not compiled by ``kernel``). A miss compiles
    as usual, and numba's compiler refreshes the context itself first. ``object_code``: the machine code of the
    function last loaded (native_build.py writes it out with a C entry point), else None.
    """

    object_code: bytes | None = None

    def __init__(self, py_func):
        super().__init__(py_func)
        rebuild = self._impl.rebuild

        def rebuild_with_nrt(target_context, payload):
            if _needs_nrt(payload):
                from numba.core.runtime import rtsys

                rtsys.initialize(target_context)
            else:
                self.object_code = payload[0][2][0]  # (numba hands it to LLVM and forgets it: native_build's)
            return rebuild(target_context, payload)

        self._impl.rebuild = rebuild_with_nrt

    def load_overload(self, sig, target_context):
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


def _typeof_arrays_directly(dispatcher) -> None:
    """Type a plain ndarray argument without numba's ``typeof``, whose first call imports numpy.ma (to refuse a
    MaskedArray, which is not a plain ndarray): ~0.03 s of a warm start. numba's dispatcher calls ``typeof_pyval``
    for each argument type it has not seen in this process; anything else goes to numba's own."""
    from numba.core import types
    from numba.np.numpy_support import from_dtype, map_layout

    general = dispatcher.typeof_pyval

    def typeof_pyval(val):
        if type(val) is np.ndarray:
            try:
                tp = types.Array(from_dtype(val.dtype), val.ndim, map_layout(val), readonly=not val.flags.writeable)
            except Exception:  # (a dtype numba has no type for: its own message)
                return general(val)
            dispatcher._types_active_call.add(tp)
            return tp
        return general(val)

    dispatcher.typeof_pyval = typeof_pyval


def quick_load(dispatcher) -> None:
    """Let ``dispatcher`` (a driver, cache=True) load from the cache without the refresh, and type its array
    arguments without importing numpy.ma, where this numba has the methods relied on (else numba's own stay)."""
    if hasattr(caching.FunctionCache, "_load_overload") and hasattr(
        caching.FunctionCache, "_guard_against_spurious_io_errors"
    ):
        dispatcher._cache = QuickLoadCache(dispatcher.py_func)
    if hasattr(dispatcher, "typeof_pyval") and hasattr(dispatcher, "_types_active_call"):
        _typeof_arrays_directly(dispatcher)


def install() -> None:
    """Put KernelCacheLocator first in numba's list of locators (once; before any kernel is decorated)."""
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # (renamed in numba 0.61)
    if KernelCacheLocator not in impl._locator_classes:
        impl._locator_classes.insert(0, KernelCacheLocator)


install()
