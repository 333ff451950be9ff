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

"Every core" is what this process may use (cpu_count): the CPUs of its affinity mask (a cpuset
narrows it), capped by the cgroup v2 CPU quota of its cgroup and every cgroup above it
(``cpu.max``: "200000 100000" is 2 CPUs, "150000 100000" rounds up to 2, "max 100000" no cap; at
least 1). A container limited to 2 CPUs on a 64-core host thus takes at most 2 threads. The run
queue count stays host-wide: in a container it also counts other containers' work.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque

LOADAVG = "/proc/loadavg"
CGROUP_ROOT = "/sys/fs/cgroup"  # where cgroup v2 is mounted
SELF_CGROUP = "/proc/self/cgroup"  # this process's cgroup: "0::/path" under cgroup v2
INTERVAL = 0.02  # seconds between two samples of the run queue
WINDOW = 5  # samples whose minimum is the busy count


def cpu_count(root: str = CGROUP_ROOT, self_cgroup: str = SELF_CGROUP) -> int:
    """The CPUs this process may run on: its affinity mask, capped by the cgroup v2 quota (cpu_quota)."""
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:
        cpus = os.cpu_count() or 1
    quotas = [q for q in map(cpu_quota, cpu_max_files(root, self_cgroup)) if q is not None]
    return max(1, min([cpus, *quotas]))


def cpu_quota(path: str) -> int | None:
    """The CPUs a cgroup v2 ``cpu.max`` file allows ("quota period", rounded up, at least 1), or None: no
    limit ("max"), no such file, or one this cannot read."""
    try:
        with open(path, "rb") as f:
            quota, period = f.read().split()[:2]
        if quota == b"max":
            return None
        quota, period = int(quota), int(period)
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def cpu_max_files(root: str = CGROUP_ROOT, self_cgroup: str = SELF_CGROUP) -> list[str]:
    """The ``cpu.max`` files that limit this process: of its own cgroup and of each one above it, up to
    ``root`` (a container sees its own cgroup as "/", so root/cpu.max); those that exist."""
    parts: list[str] = []
    try:
        with open(self_cgroup) as f:
            for line in f:
                if line.startswith("0::"):  # the cgroup v2 line
                    parts = [p for p in line[3:].strip().split("/") if p and p not in (".", "..")]
    except OSError:
        pass
    dirs = [os.path.join(root, *parts[:i]) for i in range(len(parts), -1, -1)]
    return [f for f in (os.path.join(d, "cpu.max") for d in dirs) if os.path.isfile(f)]


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
