"""The machine numba compiles for, and the threads it allows, computed as numba 0.68 does -- without importing numba.

A warm process runs the driver's machine code from the kernel cache (native.py) and imports no numba, yet must
plan the model as numba would (the VNNI first layer where the CPU has it), size its thread pool as numba would
(NUMBA_NUM_THREADS), and find the machine code compiled for the CPU numba would compile for. numba's rules
(numba/core/config.py, numba/core/codegen.py: ``JITCPUCodegen.magic_tuple``), reproduced here:

* CPU name: ``$NUMBA_CPU_NAME`` when set (any value, the empty string included), else LLVM's host CPU name;
* CPU features: ``$NUMBA_CPU_FEATURES`` when set; else "" when the CPU name is "generic" (any case); else LLVM's
  host features, with every ``avx*`` feature off unless AVX is enabled (``$NUMBA_ENABLE_AVX``, an integer; by
  default on where the OS supports AVX -- /proc/cpuinfo's flags on x86 Linux -- and the CPU is not one of
  numba's list below), sorted and flattened (``+avx2,-avx512f,...``); "" where LLVM cannot tell;
* target triple: LLVM's process triple;
* threads: ``$NUMBA_NUM_THREADS`` (an integer), else the CPUs of the process's affinity mask, else the CPU count.

numba also reads a ``.numba_config.yaml`` in the working directory; where one exists, ``target()`` is None (the
native path is not used: numba decides). Importing this module imports ``llvmlite.binding`` (numba's own
dependency, installed with it), not numba; once numba is imported, ``max_threads`` takes numba's own value.
A test compares ``target()`` with numba's ``magic_tuple()`` under several settings.
"""

from __future__ import annotations

import functools
import os
import platform
import sys

import llvmlite.binding as llb

NUMBA_CONFIG_FILE = ".numba_config.yaml"  # numba reads its settings from this file in the working directory too
AVX_SLOW_CPUS = frozenset({"corei7-avx", "core-avx-i", "sandybridge", "ivybridge", "nocona"})  # numba's list
VNNI_ENV = "BNN_RUNTIME_VNNI"  # auto (default) | off | emulate: see simd.py


def vnni_mode() -> str:
    """BNN_RUNTIME_VNNI as read now (auto, off, emulate)."""
    return os.environ.get(VNNI_ENV, "auto").strip().lower()


VNNI_MODE = vnni_mode()  # (as this process's kernels are compiled)


def cpu_name() -> str:
    """The CPU numba compiles for."""
    name = os.environ.get("NUMBA_CPU_NAME")
    return llb.get_host_cpu_name() if name is None else name


def _os_supports_avx() -> bool:
    if not sys.platform.startswith("linux") or platform.machine() not in ("i386", "i586", "i686", "x86_64"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                head, _, body = line.partition(":")
                if head.strip() == "flags" and "avx" in body.split():
                    return True
    except OSError:
        return True
    return False


def _avx_enabled() -> bool:
    value = os.environ.get("NUMBA_ENABLE_AVX")
    if value is not None:
        try:
            return bool(int(value))
        except ValueError:
            return True  # (numba's reader then keeps its default, a function: truthy)
    return _os_supports_avx() and cpu_name() not in AVX_SLOW_CPUS


def cpu_features() -> str:
    """The CPU features numba compiles for (LLVM's "+a,-b" form)."""
    features = os.environ.get("NUMBA_CPU_FEATURES")
    if features is not None:
        return features
    if str(os.environ.get("NUMBA_CPU_NAME")).lower() == "generic":
        return ""
    try:
        found = llb.get_host_cpu_features()
    except RuntimeError:
        return ""
    if not _avx_enabled():
        for k in found:
            if k.startswith("avx"):
                found[k] = False
    return found.flatten()


@functools.cache
def target() -> tuple[str, str, str] | None:
    """(triple, CPU name, features) as numba's magic_tuple(); None where a numba config file may change them."""
    if os.path.isfile(NUMBA_CONFIG_FILE):
        return None
    return llb.get_process_triple(), cpu_name(), cpu_features()


def has_vnni() -> bool:
    """Whether numba compiles for a CPU with AVX-512 VNNI (the planner's view; simd.VNNI_NATIVE asks numba)."""
    t = target()
    return "+avx512vnni" in (t[2] if t else cpu_features())


USE_VNNI = VNNI_MODE != "off" and ((has_vnni() and VNNI_MODE != "emulate") or VNNI_MODE == "emulate")
# a first dense layer on bytes runs on the VNNI kernel (plan.py; =emulate: in portable code, for tests)


def max_threads() -> int:
    """Threads the runtime may use in this process: numba's NUMBA_NUM_THREADS (its own value once numba is
    imported), else the CPUs of the affinity mask, else the CPU count."""
    numba = sys.modules.get("numba")
    if numba is not None and hasattr(numba, "config"):
        return numba.config.NUMBA_NUM_THREADS
    if hasattr(os, "sched_getaffinity"):
        default = max(1, len(os.sched_getaffinity(0)))
    else:
        default = max(1, os.cpu_count() or 1)
    value = os.environ.get("NUMBA_NUM_THREADS")
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return default
