"""What a warm start would cost without importing numba: a measurement prototype, not part of the runtime.

The runtime's driver for MODEL (driver.build, the kernels as they are) is compiled by numba behind a C entry
point (``bnn_entry(dims, pointers, tile, main)``: every array as a pointer and its shape) and its machine code
written as an object file, with the model's plan arrays. Then fresh processes that import only numpy, ctypes
and llvmlite load that object into LLVM's MCJIT, call it on GOLDEN's images at batch 1 and batch N, and check
the scores against GOLDEN's, exactly. Printed: the wall time from spawn to the first prediction (min / median /
max, runs over 0.5 s) and the median CPU seconds of each stage::

    .venv/bin/python scripts/warm_start_without_numba.py tests/golden/lenet5_mnist.bnn --runs 12

What the prototype leaves out (a product would need it, docs/PERFORMANCE.md): the object refers to numba's
helper functions on its exception paths (the kernels' Python error model: a division by zero, a zero range
step), here resolved to a placeholder that is never called; the plan is built in the numba process; the
cache key (CPU name and features, NUMBA_CPU_NAME) and the parallel path are not handled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

PYTHON_API = "PyBytes_FromStringAndSize PyErr_Clear PyErr_SetNone PyErr_SetString PyErr_WriteUnraisable"
PYTHON_API += " PyUnicode_FromString Py_DecRef"
PYTHON_DATA = "PyExc_RuntimeError PyExc_StopIteration PyExc_SystemError"
NUMBA_HELPERS = "numba_do_raise numba_gil_ensure numba_gil_release numba_runtime_build_excinfo_struct numba_unpickle"
ARRAYS = ("sizes", "params", "wpool", "cpool", "taps", "scale", "offset", "final")  # Plan's, in driver.forward order


def build(model_path: Path, out: Path) -> None:
    """Compile MODEL's driver behind bnn_entry (numba) and write entry.o, entry.name and plan.npz to ``out``."""
    import numpy as np
    from llvmlite import ir
    from numba import cfunc, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    import bnn_runtime
    from bnn_runtime import driver

    @intrinsic
    def from_pointer(typingctx, ptr, shape, dtype):
        """A C-contiguous array over the memory at ptr, with no owner (numba's carray needs NRT, the kernels do not)."""
        ret = types.Array(dtype.instance_type, shape.count, "C")

        def codegen(context, builder, sig, args):
            from numba.np.arrayobj import populate_array

            dst = context.make_array(ret)(context, builder)
            i64 = ir.IntType(64)
            dims = list(cgutils.unpack_tuple(builder, args[1]))
            size = context.get_abi_sizeof(context.get_data_type(ret.dtype))
            strides, step = [], ir.Constant(i64, size)
            for d in reversed(dims):
                strides.insert(0, step)
                step = builder.mul(step, d)
            data = builder.bitcast(args[0], dst.data.type)
            populate_array(dst, data=data, shape=dims, strides=strides, itemsize=ir.Constant(i64, size), meminfo=None)
            return dst._getvalue()

        return ret(ptr, shape, dtype), codegen

    model = bnn_runtime.load(model_path)
    fwd = driver.build(model.plan.uses)
    i64, u8, u64, i32, f64 = types.int64, types.uint8, types.uint64, types.int32, types.float64

    @cfunc(types.void(types.CPointer(i64), types.CPointer(types.voidptr), i64, i64), _nrt=False)
    def bnn_entry(d, p, tile, main):
        fwd(
            from_pointer(p[0], (d[0], d[1]), u8),
            tile,
            from_pointer(p[1], (d[2],), i64),
            from_pointer(p[2], (d[4], d[5]), i64),
            from_pointer(p[3], (d[6],), u64),
            from_pointer(p[4], (d[8],), i64),
            from_pointer(p[5], (d[10], d[11]), i64),
            from_pointer(p[6], (d[12],), f64),
            from_pointer(p[7], (d[14],), f64),
            from_pointer(p[8], (d[16], d[17]), i64),
            from_pointer(p[9], (d[18], d[19]), i32),
            from_pointer(p[10], (d[20],), i64),
            from_pointer(p[11], (d[22],), i64),
            from_pointer(p[12], (d[24],), i64),
            main != 0,
        )

    lib = bnn_entry._library
    (out / "entry.o").write_bytes(lib._codegen._tm.emit_object(lib._final_module))
    (out / "entry.name").write_text(bnn_entry.native_name)
    p = model.plan
    words = p.scratch(model.tile, 1).shape[1]  # (a batch's tile is at most model.tile)
    np.savez(out / "plan.npz", **dict(zip(ARRAYS, (p.sizes, *p.kernel_args), strict=True)))
    (out / "plan.json").write_text(json.dumps({"n_scores": p.n_scores, "tile": model.tile, "scratch_words": words}))


def child(out: Path, golden: Path) -> None:
    """numpy + llvmlite + ctypes only: load entry.o, predict batch 1 then GOLDEN's batch, check; print the times."""
    c0 = time.process_time()
    cpu = []
    import numpy as np

    cpu.append(time.process_time())
    import ctypes

    import llvmlite.binding as llb

    cpu.append(time.process_time())
    llb.initialize_native_target()
    llb.initialize_native_asmprinter()
    for sym in PYTHON_API.split():
        llb.add_symbol(sym, ctypes.cast(getattr(ctypes.pythonapi, sym), ctypes.c_void_p).value)
    for sym in PYTHON_DATA.split():
        llb.add_symbol(sym, ctypes.addressof(ctypes.c_void_p.in_dll(ctypes.pythonapi, sym)))
    never_called = ctypes.cast(ctypes.pythonapi.PyErr_Clear, ctypes.c_void_p).value  # (the exception paths only)
    for sym in NUMBA_HELPERS.split():
        llb.add_symbol(sym, never_called)
    target = llb.Target.from_default_triple()
    tm = target.create_target_machine(
        cpu=llb.get_host_cpu_name(), features=llb.get_host_cpu_features().flatten(), codemodel="jitdefault"
    )
    engine = llb.create_mcjit_compiler(llb.parse_assembly(""), tm)
    engine.add_object_file(llb.ObjectFileRef.from_data((out / "entry.o").read_bytes()))
    engine.finalize_object()
    address = engine.get_function_address((out / "entry.name").read_text())
    entry = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(address)
    cpu.append(time.process_time())
    plan = np.load(out / "plan.npz")
    plan = [plan[k] for k in ARRAYS]
    info = json.loads((out / "plan.json").read_text())
    gold = np.load(golden)

    def run(x):
        n = len(x)
        tile = min(info["tile"], n)
        scores, labels = np.empty((n, info["n_scores"]), np.int32), np.empty(n, np.int64)
        state, scratch = np.zeros(1 + -(-n // tile), np.int64), np.empty(info["scratch_words"], np.int64)
        arrays = [np.ascontiguousarray(x.reshape(n, -1), np.uint8), *plan, scores, labels, state, scratch]
        dims = np.zeros(2 * len(arrays), np.int64)
        pointers = (ctypes.c_void_p * len(arrays))(*(a.ctypes.data for a in arrays))
        for i, a in enumerate(arrays):
            dims[2 * i : 2 * i + a.ndim] = a.shape
        entry(dims.ctypes.data, ctypes.addressof(pointers), tile, 1)
        return scores

    first = run(gold["x"][:1])
    cpu.append(time.process_time())
    end = time.time()
    exact = np.array_equal(first, gold["scores"][:1]) and np.array_equal(run(gold["x"]), gold["scores"])
    print(end, int(exact), *(b - a for a, b in pairwise([c0, *cpu])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--golden", type=Path, help="images and scores (.npz; default: beside MODEL)")
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    golden = a.golden or a.model.with_suffix(".npz")
    if a.child:
        return child(a.child, golden)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp:
        build(a.model, Path(tmp))
        runs = []
        for _ in range(a.runs + 1):  # the first writes llvmlite's .pyc files where missing: not counted
            t = time.time()
            cmd = [sys.executable, __file__, str(a.model), "--golden", str(golden), "--child", tmp]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.split()
            runs.append((float(out[0]) - t, int(out[1]), [float(v) for v in out[2:]]))
            time.sleep(0.3)
    runs = runs[1:]
    first = sorted(r[0] for r in runs)
    stages = ("numpy", "llvmlite", "link", "plan_and_batch1")
    print(
        json.dumps(
            {
                "exact": all(r[1] for r in runs),
                "first_prediction_s": [round(first[0], 3), round(statistics.median(first), 3), round(first[-1], 3)],
                "over_0.5_s": f"{sum(f > 0.5 for f in first)}/{len(first)}",
                "median_cpu_s": {s: round(statistics.median(r[2][i] for r in runs), 4) for i, s in enumerate(stages)},
            }
        )
    )
    print(f"(load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
