"""The cores other processes leave idle: how many threads a parallel batch takes when the user chose none.

A thread that shares its core with a busy process runs at half speed or less, and the batch waits
for its tiles (or the calling thread takes them over): with one busy process on a 2-core machine,
2 threads are slower than 1. So a model loaded without ``threads`` counts, before a parallel
batch, the threads the kernel reports runnable (``/proc/loadavg``, Linux: "running/total"; the
calling thread is one of them) and takes the cores that are left, at least 1. The count is
sampled at most every INTERVAL seconds, and the busy count is the minimum of the last WINDOW
samples: a process that runs for a moment does not cost a batch its threads, one that keeps
running does within WINDOW samples, and once it stops the next sample gives the cores back.
Where there is no such count (not Linux), every core counts as idle.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

LOADAVG = "/proc/loadavg"
INTERVAL = 0.02  # seconds between two samples of the run queue
WINDOW = 5  # samples whose minimum is the busy count


def cpu_count() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def runnable(path: str = LOADAVG) -> int | None:
    """Threads the kernel counts as runnable now (the caller included), or None where it does not say."""
    try:
        with open(path, "rb") as f:
            return int(f.read().split()[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        return None


class IdleCores:
    """``idle(limit)``: the threads a batch may take now, 1 .. limit (the cores not busy with other work)."""

    def __init__(self, path: str = LOADAVG, cores: int | None = None, interval: float = INTERVAL):
        self.path, self.cores, self.interval = path, cores or cpu_count(), interval
        self._samples: deque[int] = deque(maxlen=WINDOW)
        self._last = -float("inf")
        self._lock = threading.Lock()

    def __call__(self, limit: int) -> int:
        now = time.monotonic()
        if now - self._last >= self.interval:
            with self._lock:
                self._last = now
                count = runnable(self.path)
                if count is not None:
                    self._samples.append(count)
        if not self._samples:
            return limit
        others = min(self._samples) - 1  # the calling thread is running
        return max(1, min(limit, self.cores - others))
