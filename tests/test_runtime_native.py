"""The driver's machine code run without numba (native.py): the same scores as numba's driver and the reference,
found only under its own key, never used when damaged, and a warm process that predicts without importing numba."""

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnn_runtime import cache_path, compiled, host, native, native_build, split_plan
from bnn_runtime.format import read_bnn
from bnn_runtime.layout import USES_ALL, USES_SPLIT
from bnn_runtime.model import SERIAL_MAX, BnnModel, max_threads
from bnn_runtime.reference import reference_scores

from .random_bnn import random_bnn

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
NAMES = sorted(p.stem for p in GOLDEN.glob("*.bnn"))
THREADS = sorted({1, min(2, max_threads())})


def _drivers(uses: int):
    """(numba's driver, the native one loaded from the file just written) for ``uses``."""
    numba_fn = compiled.specialised(uses)
    assert native_build.write(uses, numba_fn) is not None
    loaded = native.load(uses)
    assert isinstance(loaded, native.NativeForward)
    return numba_fn, loaded


def _scores(bnn, driver, x, threads, monkeypatch) -> np.ndarray:
    monkeypatch.setattr(compiled, "forward", lambda uses=None: driver)
    try:
        return BnnModel(bnn, threads=threads).scores(x)
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("name", NAMES)
def test_golden_models_native_equals_numba_equals_reference(name, monkeypatch):
    """Batch 1, the golden batch, and a batch large enough for the parallel path (helper threads calling the
    native entry at once: ctypes releases the GIL), at 1 and 2 threads."""
    bnn = read_bnn(GOLDEN / f"{name}.bnn")
    with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as f:
        x, scores = f["x"], f["scores"]
    big = np.concatenate([x] * (1 + 4 * SERIAL_MAX // len(x)))
    big_scores = np.concatenate([scores] * (1 + 4 * SERIAL_MAX // len(x)))
    drivers = _drivers(BnnModel(bnn).plan.uses)
    for driver in drivers:
        for threads in THREADS:
            assert np.array_equal(_scores(bnn, driver, x[:1], threads, monkeypatch), scores[:1])
            assert np.array_equal(_scores(bnn, driver, x, threads, monkeypatch), scores)
            assert np.array_equal(_scores(bnn, driver, big, threads, monkeypatch), big_scores), (name, driver, threads)


@pytest.fixture(scope="module")
def every_kind():
    return _drivers(USES_ALL)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 40), st.booleans())
def test_random_layouts_native_equals_numba(every_kind, seed, n, split):
    """Random layouts on the driver for every kind, numba's and native; ``split``: every image shared between the
    threads (split.py, tile SPLIT_TILE), the chunks as small as they go."""
    rng = np.random.default_rng(seed)
    bnn, _ = random_bnn(rng)
    x = rng.integers(0, 256, (n, *bnn.input_shape), dtype=np.uint8)
    ref = reference_scores(bnn, x)
    with pytest.MonkeyPatch.context() as mp:
        if split:
            mp.setattr(split_plan, "SPLIT_MIN_WORD_OPS", 0)
            mp.setattr(split_plan, "CHUNK_WORD_OPS", 1)
        for driver in every_kind:
            for threads in THREADS:
                mp.setattr(compiled, "forward", lambda uses=None, d=driver: d)
                assert np.array_equal(BnnModel(bnn, threads=threads).scores(x), ref), (seed, n, split, driver)


def test_the_native_driver_checks_its_arguments():
    """A wrong dtype, dimension count or a non-contiguous array is a TypeError (numba's dispatcher would compile
    another specialisation), never a read of the wrong memory; an exception in the driver is raised as numba's."""
    model = BnnModel(read_bnn(GOLDEN / "lenet5_mnist.bnn"))
    p = model.plan
    drivers = _drivers(p.uses)
    x = np.zeros((2, int(np.prod(model.input_shape))), np.uint8)
    scores, labels, state = np.empty((2, p.n_scores), np.int32), np.empty(2, np.int64), np.zeros(3, np.int64)
    good = [x, 2, p.sizes, *p.kernel_args, scores, labels, state, p.scratch(2, 1)[0], True]
    for driver in drivers:
        driver(*good)
        assert np.array_equal(scores, reference_scores(model.file, x.reshape(2, *model.input_shape)))
    bad = [(0, x.astype(np.int16)), (0, np.zeros((2, x.shape[1] * 2), np.uint8)[:, ::2]), (10, scores.T)]
    bad += [(2, p.sizes[None]), (11, labels.astype(np.int32)), (11, list(labels))]
    for k, value in bad:
        with pytest.raises(TypeError):
            drivers[1](*good[:k], value, *good[k + 1 :])
    with pytest.raises(TypeError):
        drivers[1](*good[:-1])
    assert not p.uses & 1 << USES_SPLIT  # (tile 0 would be the split tile)
    for driver in drivers:  # tile 0: the driver's integer division by zero, raised by numba's code
        with pytest.raises(ZeroDivisionError):
            driver(x, 0, *good[2:])


def _golden_native(name: str) -> tuple[Path, int]:
    uses = BnnModel(read_bnn(GOLDEN / f"{name}.bnn")).plan.uses
    _drivers(uses)
    return native.path(uses, native.key(uses)), uses


def _child(cache: Path, name: str) -> dict:
    """A fresh process, its kernel cache in ``cache``: golden NAME's scores at batch 1 and at 2 threads."""
    golden = GOLDEN / name
    code = (
        "import json, sys, numpy as np, bnn_runtime\n"
        f"f = np.load({str(golden) + '.npz'!r})\n"
        f"m = bnn_runtime.load({str(golden) + '.bnn'!r}, threads=2)\n"
        "one = np.array_equal(m.scores(f['x'][:1]), f['scores'][:1])\n"
        "many = np.array_equal(m.scores(np.concatenate([f['x']] * 3)), np.concatenate([f['scores']] * 3))\n"
        "print(json.dumps({'exact': one and many, 'numba': 'numba' in sys.modules}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", native.ENV)}
    env.update(PYTHONPATH=str(ROOT), BNN_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_a_warm_process_predicts_without_importing_numba(tmp_path):
    """Only the native file in the cache directory: the fresh process loads it, imports no numba, and its scores
    are the golden ones (batch 1, and a parallel batch)."""
    source, _ = _golden_native("lenet5_mnist")
    target = tmp_path / cache_path.cache_dir().name / source.name
    target.parent.mkdir()
    shutil.copy(source, target)
    assert _child(tmp_path, "lenet5_mnist") == {"exact": True, "numba": False}


def test_numba_imported_after_the_native_driver_agrees_with_it():
    """A process that ran the native driver, then imports numba (numba's helper modules already loaded by
    native.py) and runs numba's driver too: both exact, in either order."""
    _, uses = _golden_native("lenet5_mnist")
    golden = GOLDEN / "lenet5_mnist"
    code = (
        "import sys, numpy as np, bnn_runtime\n"
        "from bnn_runtime import compiled, native\n"
        f"f = np.load({str(golden) + '.npz'!r})\n"
        f"m = bnn_runtime.load({str(golden) + '.bnn'!r}, threads=2)\n"
        "x, ref = np.concatenate([f['x']] * 3), np.concatenate([f['scores']] * 3)\n"
        "ok = [np.array_equal(m.scores(x), ref), 'numba' not in sys.modules]\n"
        "ok.append(isinstance(compiled.forward(m.plan.uses), native.NativeForward))\n"
        f"numba_driver = compiled.specialised({uses})\n"
        f"compiled._drivers[{uses}] = numba_driver\n"
        "ok += [np.array_equal(m.scores(x), ref), np.array_equal(m.scores(x[:1]), ref[:1])]\n"
        f"compiled._drivers[{uses}] = native.load({uses})\n"
        "ok += [np.array_equal(m.scores(x), ref), 'numba' in sys.modules]\n"
        "print(ok)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != native.ENV}
    env.update(PYTHONPATH=str(ROOT))  # (this process's cache directory: numba loads its driver from there)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str([True] * 7)


DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "a flipped byte": lambda data: data[:-100] + bytes([data[-100] ^ 1]) + data[-99:],
    "another key": lambda data: data.replace(data[len(native.MAGIC) :].split(b'"')[3], b"0" * 64, 1),
    "not ours": lambda data: b"\x7fELF" + data[4:],
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_native_file_falls_back_to_numba_and_is_written_again(tmp_path, damage):
    """The damaged file is not used (numba's driver, from its cache, gives the same scores) and numba's path
    writes a good one over it."""
    source, uses = _golden_native("lenet5_mnist")
    folder = tmp_path / cache_path.cache_dir().name
    folder.mkdir()
    for f in cache_path.cache_dir().glob("driver.*"):  # numba's cache of the drivers (not compiled again)
        shutil.copy(f, folder / f.name)
    data = DAMAGE[damage](source.read_bytes())
    assert native.unpack(data, native.key(uses)) is None
    (folder / source.name).write_bytes(data)
    assert _child(tmp_path, "lenet5_mnist") == {"exact": True, "numba": True}
    assert native.unpack((folder / source.name).read_bytes(), native.key(uses)) is not None


def test_bnn_warmup_leaves_the_native_file():
    pytest.importorskip("typer")  # (the CLI: not in check_aarch64.sh's torch-free root)
    from .conftest import run_cli

    _golden_native("lenet5_mnist")  # (numba's drivers in the cache)
    every = native.path(USES_ALL, native.key(USES_ALL))
    every.unlink(missing_ok=True)
    result = run_cli("warmup")
    assert result.exit_code == 0 and "note:" not in result.stderr, result.output
    assert native.read(USES_ALL) is not None


def test_pack_and_unpack():
    objects = [b"\x7fELF object", b"", b"more"]
    symbols = {"wrapper": "w", "environment": "e"}
    data = native.pack("k" * 64, symbols, objects)
    assert native.unpack(data, "k" * 64) == (symbols, objects)
    assert native.unpack(data, "j" * 64) is None
    for cut in (0, 5, len(native.MAGIC) + 3, len(data) - 1):
        assert native.unpack(data[:cut], "k" * 64) is None
    assert native.unpack(data + b"x", "k" * 64) is None


def test_what_cannot_be_linked_is_not_used():
    assert native.elf_symbols(b"MZ not an ELF file") is None
    assert native.link({"wrapper": "w", "environment": "e"}, [b"MZ not an ELF file"]) is None
    assert native.resolve({"numba_do_raise", "PyErr_Clear", "memset"}) is not None
    assert native.resolve({"PyErr_Clear", "no_such_symbol_in_this_process"}) is None


def test_bnn_native_0_turns_it_off(monkeypatch):
    _golden_native("lenet5_mnist")
    monkeypatch.setenv(native.ENV, "0")
    assert native.load(USES_ALL) is None and not native.enabled()


def test_the_key_follows_numba_s_cpu_settings(monkeypatch):
    """NUMBA_CPU_NAME and NUMBA_CPU_FEATURES (scripts/check_avx2.sh) give other machine code: another key."""
    keys = []
    try:
        for env in ({}, {"NUMBA_CPU_NAME": "haswell"}, {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx2"}):
            for k in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES"):
                monkeypatch.delenv(k, raising=False)
            for k, v in env.items():
                monkeypatch.setenv(k, v)
            host.target.cache_clear()
            keys.append(native.key(USES_ALL))
            assert native.key(USES_ALL + 1) != native.key(USES_ALL)
    finally:
        monkeypatch.undo()
        host.target.cache_clear()
    assert len(set(keys)) == 3


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx2,+popcnt,+fma"},
        {"NUMBA_CPU_NAME": "generic"},
        {"NUMBA_CPU_NAME": "skylake-avx512"},
        {"NUMBA_ENABLE_AVX": "0"},
        {"NUMBA_NUM_THREADS": "1"},
    ],
)
def test_host_computes_numba_s_target_and_threads(env, tmp_path):
    """host.py's target and thread count, before numba is imported, equal numba's own (numba's version too)."""
    if "NUMBA_CPU_NAME" in env and env["NUMBA_CPU_NAME"] != "generic" and platform.machine() != "x86_64":
        pytest.skip("an x86 CPU name")
    code = (
        "import json\n"
        "from bnn_runtime import cache_path, host\n"
        "mine = [list(host.target()), host.max_threads()]\n"
        "mine += [cache_path.version('numba'), cache_path.version('llvmlite')]\n"
        "import numba, llvmlite\n"
        "from numba.core.registry import cpu_target\n"
        "theirs = [list(cpu_target.target_context.codegen().magic_tuple()), numba.config.NUMBA_NUM_THREADS]\n"
        "print(json.dumps([mine, theirs + [numba.__version__, llvmlite.__version__], host.max_threads()]))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    run_env = dict(clean, PYTHONPATH=str(ROOT), **env)
    out = subprocess.run([sys.executable, "-c", code], env=run_env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    mine, theirs, after = json.loads(out.stdout)
    assert mine == theirs and after == theirs[1]
