"""The compiled driver as machine code in the kernel cache, run without importing numba: a warm start in ~0.25 s.

Importing numba takes 0.25-0.35 s, half of a warm start's 0.5 s budget. So once numba has the driver for a
model's layer kinds (compiled.py), native_build.py writes the machine code numba made for it (the object file
numba keeps in its own cache) beside numba's cache files. A later process loads that file here with
``llvmlite.binding`` (numba's own dependency, installed with it: the only import here besides numpy and the
standard library) into LLVM's MCJIT, as numba itself loads its cache, and calls the driver through the Python
wrapper numba compiled with it (``PyObject *wrapper(closure, args, kwargs)``: it unboxes the arrays, releases
the GIL -- the driver is ``nogil`` -- and raises the driver's exceptions as numba's dispatcher would), given a
numba environment object (``_dynfunc.Environment``) as numba does. What numba's dispatcher checks before it
calls the wrapper -- each array's dtype, dimensions and C order (``ARRAYS``) -- ``NativeForward`` checks.

The cache layout, in cache_path.cache_dir() (a directory per hash of the kernel sources)::

    native-{uses:x}-{key}.bin   key = sha256(FORMAT, uses, host.target(): numba's triple, CPU name and features
                                (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES honoured), numba's and llvmlite's versions,
                                cache_path.source_key(), the source of this file and native_build.py, the Python
                                ABI tag, the platform and the machine)
                                -- 16 hex digits of it in the name

The file: MAGIC, one line of JSON (``key``: the whole key; ``symbols``: the wrapper's and the environment's
names; ``sizes``: the bytes of each object file; ``sha256``: of what follows), then the object file(s). It is
written to a temporary file and renamed (native_build.py). A file is used only when its key and checksum match
and every symbol its code needs is found: numba's C helpers (the arrays' unboxing, the exception paths) from
numba's extension modules ``_helperlib`` and ``_dynfunc``, loaded from numba's folder (found with
``importlib.util.find_spec``, which does not run numba's ``__init__``), everything else (the Python C API, libc)
in the process; only ELF object files (Linux) are read. Anything else -- no file, another key, a truncated or
corrupt file, a symbol not found, an error from LLVM -- makes ``load`` return None, and compiled.py runs numba
as before (and writes the file again). ``BNN_NATIVE=0`` turns the native path off (neither read nor written).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import struct
import sys
from pathlib import Path

import numpy as np

from . import host
from .cache_path import cache_dir, source_key, version

ENV = "BNN_NATIVE"  # "0": numba only
FORMAT = 1  # of the file; part of the key
MAGIC = b"bnn-native 1\n"
NAME = "native-{:x}-{}.bin"
ARRAYS = (  # driver.forward's arrays, in its order (tile: an int64 after x; main: a bool at the end)
    ("x", np.uint8, 2),
    ("sizes", np.int64, 1),
    ("params", np.int64, 2),
    ("wpool", np.uint64, 1),
    ("cpool", np.int64, 1),
    ("taps", np.int64, 2),
    ("scale", np.float64, 1),
    ("offset", np.float64, 1),
    ("final", np.int64, 2),
    ("scores", np.int32, 2),
    ("labels", np.int64, 1),
    ("state", np.int64, 1),
    ("scratch", np.int64, 1),
)
HELPER_MODULES = ("_helperlib", "_dynfunc")  # numba's extension modules whose c_helpers numba adds as numba_*
SYMBOLS = ("wrapper", "environment")  # what a file names: numba's Python wrapper of the driver, its environment


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip() != "0"


def key(uses: int) -> str | None:
    """The key of the driver for ``uses`` on this machine and installation; None where host.target() is."""
    target = host.target()
    if target is None:
        return None
    parts = [FORMAT, uses, list(target), version("numba"), version("llvmlite"), source_key(), _own_source()]
    parts += [sys.implementation.cache_tag, sys.platform, platform.machine(), sys.byteorder]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@functools.cache
def _own_source() -> str:
    """sha256 of this file and native_build.py (what a file holds, how the driver is called)."""
    h = hashlib.sha256()
    for name in ("native.py", "native_build.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()


def path(uses: int, full_key: str) -> Path:
    return cache_dir() / NAME.format(uses, full_key[:16])


def pack(full_key: str, symbols: dict[str, str], objects: list[bytes]) -> bytes:
    """The file's bytes (native_build.py writes them); symbols: the names of SYMBOLS in the objects."""
    payload = b"".join(objects)
    header = {"key": full_key, "symbols": symbols, "sizes": [len(o) for o in objects]}
    header["sha256"] = hashlib.sha256(payload).hexdigest()
    return MAGIC + json.dumps(header).encode() + b"\n" + payload


def unpack(data: bytes, full_key: str) -> tuple[dict[str, str], list[bytes]] | None:
    """(symbols, object files) of a file written by ``pack`` for ``full_key``; None for anything else."""
    if not data.startswith(MAGIC):
        return None
    end = data.find(b"\n", len(MAGIC))
    try:
        header = json.loads(data[len(MAGIC) : end])
        symbols, sizes, digest = header["symbols"], header["sizes"], header["sha256"]
        if header["key"] != full_key or not all(isinstance(symbols[k], str) for k in SYMBOLS):
            return None
        if not all(isinstance(s, int) and s >= 0 for s in sizes):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    payload = data[end + 1 :]
    if end < 0 or sum(sizes) != len(payload) or hashlib.sha256(payload).hexdigest() != digest:
        return None
    cuts = np.cumsum([0, *sizes]).tolist()
    return symbols, [payload[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]


def read(uses: int) -> tuple[dict[str, str], list[bytes]] | None:
    """The verified contents of the native file for ``uses``, or None (none, another key, damaged)."""
    full_key = key(uses)
    if full_key is None:
        return None
    try:
        data = path(uses, full_key).read_bytes()
    except OSError:  # (no file; or no cache directory: numba's path says so)
        return None
    return unpack(data, full_key)


def elf_symbols(obj: bytes) -> tuple[set[str], set[str]] | None:
    """(defined, undefined) global symbols of a 64-bit little-endian ELF object file; None for anything else."""
    if obj[:6] != b"\x7fELF\x02\x01":
        return None
    shoff = struct.unpack_from("<Q", obj, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize) for i in range(shnum)]
    defined, undefined = set(), set()
    for sec in sections:
        if sec[1] != 2:  # SHT_SYMTAB
            continue
        strings = sections[sec[6]][4]
        for k in range(1, sec[5] // sec[9]):
            name, info, _, shndx, _, _ = struct.unpack_from("<IBBHQQ", obj, sec[4] + k * sec[9])
            if info >> 4 == 0 or not name:  # (local)
                continue
            text = obj[strings + name : obj.index(b"\0", strings + name)].decode()
            (undefined if shndx == 0 else defined).add(text)
    return defined, undefined


@functools.cache
def helper_modules() -> tuple:
    """numba's extension modules ``_helperlib`` and ``_dynfunc``, loaded from numba's folder without running
    ``numba/__init__.py`` (a later ``import numba`` finds them loaded)."""
    import importlib.machinery
    import importlib.util

    spec = importlib.util.find_spec("numba")
    folders = (spec.submodule_search_locations or []) if spec else []
    modules = []
    for name in HELPER_MODULES:
        files = [Path(f) / f"{name}{s}" for f in folders for s in importlib.machinery.EXTENSION_SUFFIXES]
        found = next(filter(Path.is_file, files))  # (StopIteration: not there; load() returns None)
        modules.append(importlib.util.module_from_spec(importlib.util.spec_from_file_location(f"numba.{name}", found)))
    return tuple(modules)


def resolve(needed: set[str]) -> dict[str, int] | None:
    """An address for each symbol, as numba's base context adds them to LLVM: ``numba_X`` is X of the modules'
    ``c_helpers`` (the C math functions numba binds: X itself), anything else the process's (the Python C API,
    libc); None if one is not found."""
    helpers: dict[str, int] = {}
    for module in helper_modules():
        helpers |= module.c_helpers  # (numba adds _dynfunc's after _helperlib's)
    out = {}
    for name in needed:
        address = helpers.get(name[len("numba_") :]) if name.startswith("numba_") else helpers.get(name)
        if address is None:
            try:
                address = ctypes.cast(getattr(ctypes.pythonapi, name), ctypes.c_void_p).value
            except AttributeError:
                return None
        if not address:
            return None
        out[name] = address
    return out


_WRAPPER = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object, ctypes.py_object, ctypes.py_object)
_CHECKS = tuple((i + (i > 0), np.dtype(dtype), ndim) for i, (_, dtype, ndim) in enumerate(ARRAYS))  # (tile: 1)
_PLAN = slice(2, 10)  # the model's arrays (Plan.sizes, Plan.kernel_args): the same objects call after call
_EACH_CALL = tuple(c for c in _CHECKS if not _PLAN.start <= c[0] < _PLAN.stop)


def _check(args, checks) -> None:
    for i, dtype, ndim in checks:
        a = args[i]
        if type(a) is not np.ndarray or a.ndim != ndim or (a.dtype is not dtype and a.dtype != dtype):
            raise TypeError(f"argument {i} of the driver: a {ndim}-d {dtype} array, got {a!r:.80}")
        if not a.flags.c_contiguous:
            raise TypeError(f"argument {i} of the driver: a C-contiguous array")


class NativeForward:
    """driver.forward's machine code, called like it: ``f(x, tile, sizes, params, ..., scratch, main)``.

    The arrays are checked as numba's dispatcher would type them (a batch costs ~4 us more than numba's call:
    the model's own arrays are checked once, while the same objects come again)."""

    def __init__(self, engine, wrapper: int, environment, owners: tuple):
        self._engine, self._environment, self._owners = engine, environment, owners  # (alive while this is)
        self._wrapper = _WRAPPER(wrapper)
        self._plan: tuple = (None,) * (_PLAN.stop - _PLAN.start)  # the model's arrays last checked

    def __call__(self, *args):
        if len(args) != len(ARRAYS) + 2:
            raise TypeError(f"the driver takes {len(ARRAYS) + 2} arguments, got {len(args)}")
        c = self._plan  # (unrolled: a generator over the 8 costs a microsecond, a batch of one image ~10)
        same = args[2] is c[0] and args[3] is c[1] and args[4] is c[2] and args[5] is c[3] and args[6] is c[4]
        if not (same and args[7] is c[5] and args[8] is c[6] and args[9] is c[7]):
            _check(args, _CHECKS)
            self._plan = args[_PLAN]
        else:
            for i, dtype, ndim in _EACH_CALL:
                a = args[i]
                if type(a) is not np.ndarray or a.dtype is not dtype or a.ndim != ndim or not a.flags.c_contiguous:
                    _check(args, _EACH_CALL)  # (the message; or an equal dtype that is another object)
        self._wrapper(None, args, None)


def link(symbols: dict[str, str], objects: list[bytes]) -> NativeForward | None:
    """The objects loaded into an MCJIT engine, every symbol they need found; None if one is not."""
    import llvmlite.binding as llb

    found = [elf_symbols(o) for o in objects]
    if any(f is None for f in found):
        return None
    defined = set().union(*(d for d, _ in found))
    addresses = resolve(set().union(*(u for _, u in found)) - defined)
    if addresses is None or not {symbols[k] for k in SYMBOLS} <= defined:
        return None  # (MCJIT would abort the process on a symbol it cannot resolve)
    for name, address in sorted(addresses.items()):
        llb.add_symbol(name, address)
    llb.initialize_native_target()
    llb.initialize_native_asmprinter()
    triple, cpu, features = host.target()
    target = llb.Target.from_triple(triple)
    reloc = "static" if target.name.startswith("x86") else "pic" if target.name.startswith("ppc") else "default"
    tm = target.create_target_machine(cpu=cpu, features=features, reloc=reloc, codemodel="jitdefault", jit=True)
    module = llb.parse_assembly("")  # (numba's JIT options: the engine only links the objects)
    module.triple = triple
    lmm = os.environ.get("NUMBA_USE_LLVMLITE_MEMORY_MANAGER")  # (as numba: else llvmlite's default, on for ARM64)
    engine = llb.create_mcjit_compiler(module, tm, use_lmm=bool(int(lmm)) if lmm else None)
    refs = [llb.ObjectFileRef.from_data(o) for o in objects]
    for ref in refs:
        engine.add_object_file(ref)
    engine.finalize_object()
    wrapper = engine.get_function_address(symbols["wrapper"])
    slot = engine.get_global_value_address(symbols["environment"])
    if not wrapper or not slot:
        return None
    environment = helper_modules()[1].Environment({})  # (numba's Environment: no globals, no constants)
    ctypes.c_void_p.from_address(slot).value = id(environment)  # (numba's set_env)
    return NativeForward(engine, wrapper, environment, (module, tm, refs))


def load(uses: int) -> NativeForward | None:
    """The driver for ``uses`` from its native file, or None (off, no valid file, not loadable here)."""
    if not enabled():
        return None
    try:
        found = read(uses)
        return None if found is None else link(*found)
    except Exception:  # (any failure of a file or of LLVM here: numba's path, which is always right, runs instead)
        return None
