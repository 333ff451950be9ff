"""Keep freed memory in the process (glibc): large activations reuse it instead of being mapped fresh each time.

glibc's malloc serves blocks above a threshold (at most 32 MiB, raised as such blocks are freed) with mmap and
returns them with munmap, so every allocation of one costs page faults and the kernel's zeroing of every page.
An ensemble's activations are K times a run's and pass that ceiling (LeNet-5's conv1 at batch 256, K = 8: 38 MB),
so each step allocated and faulted in hundreds of megabytes afresh; with mmap off and trimming raised they come
from the heap and are reused. The cost: the process keeps its peak heap until it ends (what a training process
does anyway). Elsewhere than glibc nothing changes.

It changes the whole process, so the library never calls it on its own: the commands that train ensembles on
the CPU do (`bnn reproduce`, `bnn bench-ensemble`, a Ray worker); a Python caller of ``fit_ensemble`` may.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_result: bool | None = None  # asked once per process, success or not


def keep_freed_memory() -> bool:
    """Ask glibc to serve every block from the heap and keep up to 1 GiB freed at its top; True if it took."""
    global _result
    if _result is None:
        _result = _ask_glibc()
    return _result


def _ask_glibc() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
