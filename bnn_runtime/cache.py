"""Where the compiled kernels are kept: one numba cache directory, keyed by a hash of the runtime's sources.

numba's on-disk cache checks only the file that holds a function, not the modules it calls or
the constants it reads (layout.py): a kernel compiled against old constants would be loaded.
So every ``@njit(cache=True)`` function of ``bnn_runtime`` is cached through ``KernelCacheLocator``,
whose directory name and source stamp are a hash of the files of compiled code and the constants
it reads (KERNEL_SOURCES: a test checks that every file with a kernel is listed), numba's version
and the VNNI mode (BNN_RUNTIME_VNNI): any edit of them compiles afresh into a new directory.
(numba's own index keeps the CPU apart: one directory serves several machines.)

The directory, first that can be written:

1. ``$BNN_CACHE_DIR`` when set (CacheError if it cannot be written: the user chose it);
2. ``$NUMBA_CACHE_DIR`` when set;
3. ``bnn_runtime/__pycache__`` beside the sources (a normal, writable install);
4. the user's cache directory, ``$XDG_CACHE_HOME/bnn`` or ``~/.cache/bnn`` (a read-only install).

numba writes each cache file to a temporary name and renames it, so an interrupted warm-up
leaves only whole files (the rest compiles next time).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

from numba.core import caching

from .errors import BnnError

PACKAGE = Path(__file__).resolve().parent
ENV = "BNN_CACHE_DIR"
IN_TREE = PACKAGE / "__pycache__"  # the cache of a writable install
KERNEL_SOURCES = ("layout.py", "simd.py", "kernels.py", "first_layer.py", "conv_runs.py", "split.py", "driver.py")
READY = "ready-{}-{:x}"  # a marker file per CPU (a hash of numba's target triple, CPU name and features) and driver


class CacheError(BnnError, OSError):
    """No directory for the compiled kernels can be written."""


@functools.cache
def source_key() -> str:
    """sha256 of the kernel source files, numba's version and the VNNI mode."""
    import numba

    h = hashlib.sha256(numba.__version__.encode())
    h.update(os.environ.get("BNN_RUNTIME_VNNI", "auto").strip().lower().encode())
    for name in KERNEL_SOURCES:
        h.update(name.encode() + b"\0" + (PACKAGE / name).read_bytes())
    return h.hexdigest()


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def _user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bnn"


@functools.cache
def cache_dir() -> Path:
    """The directory of this build's compiled kernels (created); CacheError when none can be written."""
    sub = f"numba-{source_key()[:16]}"
    chosen = os.environ.get(ENV)
    if chosen:
        path = Path(chosen).expanduser() / sub
        if not _writable(path):
            raise CacheError(f"cannot write the kernel cache in {chosen} ({ENV}): choose a writable directory")
        return path
    candidates = [Path(d) / "bnn_runtime" for d in [os.environ.get("NUMBA_CACHE_DIR")] if d]
    candidates += [IN_TREE, _user_cache()]
    for base in candidates:
        if _writable(base / sub):
            return base / sub
    raise CacheError(
        f"cannot write the kernel cache in {' or '.join(map(str, candidates))}: set {ENV} to a writable directory"
    )


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


class QuickLoadCache(caching.FunctionCache):
    """numba's cache of one function, but loading a compiled driver without ``target_context.refresh()``.

    numba refreshes the target context before every cache load: it starts its memory runtime (NRT), then
    imports and registers every typing and lowering module it has (numba.np.*, and scipy's BLAS where scipy
    is installed), about 0.3 s of a warm start that needs only the runtime -- the cached library is machine
    code. A miss compiles as usual, and numba's compiler refreshes the context itself first.
    """

    def load_overload(self, sig, target_context):
        from numba.core.runtime import rtsys

        rtsys.initialize(target_context)  # (what the machine code calls: numba's memory runtime, NRT)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


def quick_load(dispatcher) -> None:
    """Let ``dispatcher`` (a driver, cache=True) load from the cache without the refresh, where this numba
    has the methods QuickLoadCache relies on (else numba's own cache stays)."""
    if hasattr(caching.FunctionCache, "_load_overload") and hasattr(
        caching.FunctionCache, "_guard_against_spurious_io_errors"
    ):
        dispatcher._cache = QuickLoadCache(dispatcher.py_func)


def install() -> None:
    """Put KernelCacheLocator first in numba's list of locators (once; before any kernel is decorated)."""
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # (renamed in numba 0.61)
    if KernelCacheLocator not in impl._locator_classes:
        impl._locator_classes.insert(0, KernelCacheLocator)


install()
