"""The compiled driver, loaded from the kernel cache or compiled once, with a notice when it compiles.

``forward(uses)`` returns the driver's machine code from the kernel cache without numba when it is there
(native.py), else driver.build(uses) compiled for the one signature every model runs with (the
layers are data: rows of params), with only the kernels of the layer kinds ``uses`` that the model
needs (Plan.uses): a model compiles or loads its own kernels, one specialisation shared by the
serial and the parallel path -- or the driver for every kind (layout.USES_ALL), when this process
or the cache has it. The first time on a machine (no cache yet) that takes seconds; ``set_notice``
lets an application say so (the CLI prints NOTICE on stderr), and ``bnn warmup`` calls ``forward()``
(every kind) ahead of time. Once numba has compiled or loaded a driver, its native file is written for the
next process (native_build.py: a few milliseconds, nothing compiles), unless a valid one is there.

The first start does not wait for the compile: ``forward_now`` starts it in a background thread and a model
(model.py) answers meanwhile with the NumPy reference (reference.py: the same integers, bit for bit, at about
1,000 LeNet-5 images/s), chunk by chunk, until the kernels are there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from .layout import USES_ALL

NOTICE = "compiling kernels for this CPU (first use only)"
_notice: Callable[[str], None] | None = None
_lock = threading.Lock()
_drivers: dict = {}  # uses -> the driver forward() gives, for this process (native.NativeForward or numba's)
_numba: dict = {}  # uses -> numba's compiled driver (specialised)
_compiling: dict = {}  # uses -> the thread compiling it in the background (forward_now)
WAIT_ENV = "BNN_WAIT_FOR_KERNELS"


def set_notice(callback: Callable[[str], None] | None) -> None:
    """Call callback(NOTICE) before the kernels compile (not when they load from the cache)."""
    global _notice
    _notice = callback


def signature():
    """The argument types of driver.forward (arrays C-contiguous, as model.BnnModel.run passes them: native.ARRAYS)."""
    from .native_build import signature

    return signature()


def forward(uses: int | None = None):
    """The driver that runs a model whose layers need ``uses`` (Plan.uses; None: every kind): one for every
    kind when this process has it or the cache holds it (``bnn warmup``), else exactly ``uses``."""
    fn = _drivers.get(USES_ALL) or _drivers.get(uses)  # (every batch comes here: the common case first)
    if fn is not None:
        return fn
    fn = _native(uses)
    return fn if fn is not None else _numba_driver(uses)


def _numba_driver(uses: int | None):
    """numba's driver for ``uses`` (compiled or loaded from numba's cache): the one for every kind when ``uses`` is
    None or only that one is cached."""
    from . import cache

    if uses is None or (not cache.is_ready(uses) and cache.is_ready(USES_ALL)):
        uses = USES_ALL
    return specialised(uses)


def _native(uses: int | None):
    """The driver from its native file (for ``uses`` or every kind), kept for this process; None if there is none."""
    from . import native

    with _lock:
        for kinds in dict.fromkeys((USES_ALL if uses is None else uses, USES_ALL)):  # (numba's order in forward)
            fn = _drivers.get(kinds) or native.load(kinds)
            if fn is not None:
                _drivers[kinds] = fn
                return fn
    return None


def forward_now(uses: int):
    """``forward(uses)`` when it needs no compiling (this process, a native file or numba's cache has the driver);
    else None, with the compile started in a background thread (once): the caller serves its batches with the
    NumPy reference meanwhile (model.py), and the process waits for the compile at exit, so that the cache is
    filled. ``BNN_WAIT_FOR_KERNELS=1``: always ``forward(uses)`` (the batch waits for the compile)."""
    if USES_ALL in _drivers or uses in _drivers:  # (every batch comes here; the driver itself from forward, always)
        return forward(uses)
    thread = _compiling.get(uses)
    if thread is not None:
        return None if thread.is_alive() else forward(uses)  # (a compile that failed raises here, in the caller)
    if os.environ.get(WAIT_ENV, "0").strip() not in ("", "0"):
        return forward(uses)
    fn = _native(uses)
    if fn is not None:
        return fn
    from . import cache  # (imports numba)

    if cache.is_ready(uses) or cache.is_ready(USES_ALL):
        return _numba_driver(uses)  # (not forward: its native file was looked for just now)
    with _lock:
        if uses not in _compiling:
            cache.cache_dir()  # (CacheError now, in the caller, when no cache directory can be written)
            _compiling[uses] = threading.Thread(target=_compile, args=(uses,), name="bnn-compile")
            _compiling[uses].start()
    return None


def _compile(uses: int) -> None:
    try:
        specialised(uses)
    except Exception:  # (forward_now calls forward in the caller's thread once this thread is over: it raises there)
        pass


def specialised(uses: int):
    """driver.build(uses), compiled by numba (or loaded from the cache: cache.py) for signature(), once per process,
    its native file written (native_build.py); CacheError if no cache directory can be written."""
    from . import cache, driver

    with _lock:
        if uses not in _numba:
            ready = cache.is_ready(uses)
            if not ready and _notice is not None:
                _notice(NOTICE)
            fn = driver.build(uses)
            cache.quick_load(fn)
            fn.compile(signature())
            if not ready:
                cache.mark_ready(uses)
            _write_native(uses, fn)
            _numba[uses] = fn
            _drivers.setdefault(uses, fn)
        return _numba[uses]


def keep_native(uses: int):
    """The native file of the driver for ``uses`` (its path), written now from numba's driver if it is missing or
    damaged; None where the native path is off or cannot write one here (``bnn warmup``)."""
    from . import native

    if not native.enabled():
        return None
    _write_native(uses, specialised(uses))
    return native.path(uses, native.key(uses)) if native.read(uses) is not None else None


def _write_native(uses: int, fn) -> None:
    """Leave the driver's native file (native.py) for the next process, unless a valid one is there or the native
    path is off. It only saves the next process numba's import: any failure here is ignored (numba runs)."""
    from . import native

    if not native.enabled() or native.read(uses) is not None:
        return
    try:
        from . import native_build

        native_build.write(uses, fn)
    except Exception:  # (an optimisation for later processes; this one has its driver)
        pass
