"""Where the compiled kernels are kept: one directory, named by a hash of the runtime's kernel sources (numba-free).

numba's on-disk cache checks only the file that holds a function, not the modules it calls or
the constants it reads (layout.py): a kernel compiled against old constants would be loaded.
So the directory name and numba's source stamp (cache.py) are ``source_key()``: a hash of the files
of compiled code and the constants they read (KERNEL_SOURCES: a test checks that every file with a
kernel is listed), numba's version (its installed distribution's, which a test compares with
``numba.__version__``) and the VNNI mode (BNN_RUNTIME_VNNI): any edit of them compiles afresh into
a new directory. The directory holds numba's cache files (cache.py) and the drivers' native objects
(native.py), and nothing here imports numba, so a warm process finds both without it.

The directory, first that can be written:

1. ``$BNN_CACHE_DIR`` when set (CacheError if it cannot be written: the user chose it);
2. ``$NUMBA_CACHE_DIR`` when set;
3. ``bnn_runtime/__pycache__`` beside the sources (a normal, writable install);
4. the user's cache directory, ``$XDG_CACHE_HOME/bnn`` or ``~/.cache/bnn`` (a read-only install).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

from .errors import BnnError
from .host import vnni_mode

PACKAGE = Path(__file__).resolve().parent
ENV = "BNN_CACHE_DIR"
IN_TREE = PACKAGE / "__pycache__"  # the cache of a writable install
KERNEL_SOURCES = ("layout.py", "simd.py", "kernels.py", "first_layer.py", "conv_runs.py", "split.py", "driver.py")


class CacheError(BnnError, OSError):
    """No directory for the compiled kernels can be written."""


@functools.cache
def version(distribution: str) -> str:
    """The installed version of a distribution (numba, llvmlite), read without importing it: from the one
    ``NAME-VERSION.dist-info`` folder beside the package (a wheel's install), else importlib.metadata (~20 ms)."""
    import importlib.util

    spec = importlib.util.find_spec(distribution)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = list(Path(folder).parent.glob(f"{distribution}-*.dist-info"))
        if len(found) == 1:
            return found[0].name[len(distribution) + 1 : -len(".dist-info")]
    from importlib.metadata import version as installed

    return installed(distribution)


@functools.cache
def source_key() -> str:
    """sha256 of the kernel source files, numba's version and the VNNI mode."""
    h = hashlib.sha256(version("numba").encode())
    h.update(vnni_mode().encode())
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
