"""The compiled driver as machine code in the kernel cache, run without importing numba: a warm start in ~0.15 s.

Importing numba takes 0.25-0.35 s, more than half of a warm start's 0.5 s budget. So once numba has the driver
for a model's layer kinds (compiled.py), native_build.py writes its machine code beside numba's cache files, with
a C entry point numba compiles for it, ``bnn_entry(arguments, tile, main) -> status``, where ``arguments`` holds,
per array of driver.forward (``ARRAYS``, in its order), the address of its data and its shape (int64 each). A
later process loads that file here with ``llvmlite.binding`` (numba's own dependency, installed with it: the only
import here besides numpy and the standard library) into LLVM's MCJIT and calls the entry through ctypes, which
releases the GIL during the call (the parallel path's helper threads run at once, as with numba's ``nogil``).

The cache layout, in cache_path.cache_dir() (a directory per hash of the kernel sources)::

    native-{uses:x}-{key}.bin   key = sha256(FORMAT, uses, host.target(): numba's triple, CPU name and features
                                (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES honoured), numba's and llvmlite's versions,
                                cache_path.source_key() (native_build.py's source included), this file's source,
                                the Python ABI tag and the machine) -- 16 hex digits of it in the name

The file: MAGIC, one line of JSON (``key``: the whole key; ``entry``: the entry's symbol; ``sizes``: the bytes of
each object file; ``sha256``: of what follows), then the object files (the driver's, as numba compiled it, and
the entry's). It is written to a temporary file and renamed (native_build.py). A file is used only when its key
and checksum match and every symbol its objects need is found: numba's helper functions (the exception paths)
in numba's ``_helperlib`` extension, found with ``importlib.util.find_spec`` (which does not import numba) and
opened with ctypes, everything else (the Python C API, libc) in the process; only ELF object files (Linux) are
read. Anything else -- no file, another key, a truncated or corrupt file, a symbol not found, an error from LLVM
-- makes ``load`` return None, and compiled.py runs numba as before (and writes the file again).
``BNN_NATIVE=0`` turns the native path off (neither read nor written).
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
SLOTS = 3  # int64 per array in the entry's arguments: data address, then up to two dimensions
_DTYPES = tuple(np.dtype(dtype) for _, dtype, _ in ARRAYS)
_NDIMS = tuple(ndim for _, _, ndim in ARRAYS)


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip() != "0"


def key(uses: int) -> str | None:
    """The key of the driver for ``uses`` on this machine and installation; None where host.target() is."""
    target = host.target()
    if target is None:
        return None
    parts = [FORMAT, uses, list(target), version("numba"), version("llvmlite"), source_key(), _own_source()]
    parts += [sys.implementation.cache_tag, platform.machine(), sys.byteorder]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@functools.cache
def _own_source() -> str:
    """sha256 of this file (ARRAYS, SLOTS: how the entry reads its arguments)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def path(uses: int, full_key: str) -> Path:
    return cache_dir() / NAME.format(uses, full_key[:16])


def pack(full_key: str, entry: str, objects: list[bytes]) -> bytes:
    """The file's bytes (native_build.py writes them)."""
    payload = b"".join(objects)
    header = {"key": full_key, "entry": entry, "sizes": [len(o) for o in objects]}
    header["sha256"] = hashlib.sha256(payload).hexdigest()
    return MAGIC + json.dumps(header).encode() + b"\n" + payload


def unpack(data: bytes, full_key: str) -> tuple[str, list[bytes]] | None:
    """(entry symbol, object files) of a file written by ``pack`` for ``full_key``; None for anything else."""
    if not data.startswith(MAGIC):
        return None
    end = data.find(b"\n", len(MAGIC))
    try:
        header = json.loads(data[len(MAGIC) : end])
        entry, sizes, digest = header["entry"], header["sizes"], header["sha256"]
        if header["key"] != full_key or not isinstance(entry, str) or not all(isinstance(s, int) for s in sizes):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    payload = data[end + 1 :]
    if end < 0 or sum(sizes) != len(payload) or hashlib.sha256(payload).hexdigest() != digest:
        return None
    cuts = np.cumsum([0, *sizes]).tolist()
    return entry, [payload[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]


def read(uses: int) -> tuple[str, list[bytes]] | None:
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


def _numba_helpers(needed: set[str]) -> dict[str, int]:
    """Addresses of numba's C helpers (``numba_do_raise``, ... and the C math functions numba binds to them), as
    numba's base context adds them to LLVM's symbols: from its extension modules ``_helperlib`` (and ``_dynfunc``
    where a symbol needs it), loaded from numba's folder without running ``numba/__init__.py``."""
    import importlib.machinery
    import importlib.util

    spec = importlib.util.find_spec("numba")
    folders = (spec.submodule_search_locations or []) if spec else []
    wanted = {n[len("numba_") :] for n in needed if n.startswith("numba_")}
    found: dict[str, int] = {}
    for module in HELPER_MODULES:
        files = [Path(f) / f"{module}{s}" for f in folders for s in importlib.machinery.EXTENSION_SUFFIXES]
        for candidate in filter(Path.is_file, files):
            loaded = importlib.util.spec_from_file_location(f"numba.{module}", candidate)
            found = importlib.util.module_from_spec(loaded).c_helpers | found  # (the first module's first)
            break
        if wanted <= found.keys():
            break
    return found


def resolve(needed: set[str]) -> dict[str, int] | None:
    """An address for each symbol: numba's helpers as numba names them, else the process's (the Python C API,
    libc); None if one is not found."""
    helpers = _numba_helpers(needed) if any(n.startswith("numba_") for n in needed) else {}
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


class NativeForward:
    """driver.forward's machine code, called like it: ``f(x, tile, sizes, params, ..., scratch, main)``."""

    def __init__(self, engine, address: int, owners: tuple):
        self._engine, self._owners = engine, owners  # (kept alive: the code lives in the engine)
        self._entry = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(address)

    def __call__(self, x, tile, *rest):
        *arrays, main = rest
        arrays.insert(0, x)
        if len(arrays) != len(ARRAYS):
            raise TypeError(f"the driver takes {len(ARRAYS) + 2} arguments")
        args = []
        for a, dtype, ndim in zip(arrays, _DTYPES, _NDIMS, strict=True):
            if type(a) is not np.ndarray or a.dtype != dtype or a.ndim != ndim or not a.flags.c_contiguous:
                raise TypeError(f"the driver takes C-contiguous {dtype} arrays of {ndim} dimensions")
            shape = a.shape
            args += (a.ctypes.data, shape[0], shape[1] if ndim == 2 else 0)
        packed = np.array(args, np.int64)
        if self._entry(packed.ctypes.data, int(tile), 1 if main else 0):
            raise RuntimeError("the runtime's driver failed (native code): rerun with BNN_NATIVE=0 for numba's error")


def link(entry: str, objects: list[bytes]) -> NativeForward | None:
    """The objects loaded into an MCJIT engine, every symbol they need found; None if one is not."""
    import llvmlite.binding as llb

    symbols = [elf_symbols(o) for o in objects]
    if any(s is None for s in symbols):
        return None
    defined = set().union(*(d for d, _ in symbols))
    addresses = resolve(set().union(*(u for _, u in symbols)) - defined)
    if addresses is None:
        return None  # (MCJIT would abort the process on a symbol it cannot resolve)
    for name, address in sorted(addresses.items()):
        llb.add_symbol(name, address)
    llb.initialize_native_target()
    llb.initialize_native_asmprinter()
    triple, cpu, features = host.target()
    arch = llb.Target.from_triple(triple).name
    reloc = "static" if arch.startswith("x86") else "pic" if arch.startswith("ppc") else "default"  # (numba's)
    tm = llb.Target.from_triple(triple).create_target_machine(
        cpu=cpu, features=features, reloc=reloc, codemodel="jitdefault", jit=True
    )
    module = llb.parse_assembly("")
    module.triple = triple
    engine = llb.create_mcjit_compiler(module, tm)
    refs = [llb.ObjectFileRef.from_data(o) for o in objects]
    for ref in refs:
        engine.add_object_file(ref)
    engine.finalize_object()
    address = engine.get_function_address(entry)
    if not address:
        return None
    return NativeForward(engine, address, (module, tm, refs))


def load(uses: int) -> NativeForward | None:
    """The driver for ``uses`` from its native file, or None (off, no valid file, not loadable here)."""
    if not enabled():
        return None
    try:
        found = read(uses)
        return None if found is None else link(*found)
    except Exception:  # (any failure of a file or of LLVM here: numba's path, which is always right, runs instead)
        return None
