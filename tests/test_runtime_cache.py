"""The kernel cache: keyed by the runtime's sources, a fallback for read-only installs, one line when it cannot
be written, a notice when the kernels compile, and ``bnn warmup``."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bnn_runtime import cache, cache_path, compiled

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_dir(monkeypatch):
    """cache_dir() recomputed for this test under the environment it sets."""
    for var in (cache_path.ENV, "NUMBA_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    cache_path.cache_dir.cache_clear()
    yield
    cache_path.cache_dir.cache_clear()


def test_the_cache_directory_is_named_by_the_source_key(fresh_dir, monkeypatch, tmp_path):
    monkeypatch.setenv(cache_path.ENV, str(tmp_path))
    assert cache_path.cache_dir() == tmp_path / f"numba-{cache_path.source_key()[:16]}"
    assert cache_path.cache_dir().is_dir()


def test_the_source_key_covers_every_kernel_module_and_the_vnni_mode(monkeypatch):
    key = cache_path.source_key()
    cache_path.source_key.cache_clear()
    monkeypatch.setenv("BNN_RUNTIME_VNNI", "emulate")
    try:
        assert cache_path.source_key() != key
    finally:
        cache_path.source_key.cache_clear()
    decorated = re.compile(r"^@(njit|kernel|intrinsic)\b", re.M)
    with_kernels = {p.name for p in cache_path.PACKAGE.glob("*.py") if decorated.search(p.read_text())}
    assert with_kernels | {"layout.py"} == set(cache_path.KERNEL_SOURCES)


def test_a_read_only_install_falls_back_to_the_user_cache(fresh_dir, monkeypatch, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    monkeypatch.setattr(cache_path, "IN_TREE", blocker / "__pycache__")  # cannot be created
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_path.cache_dir().parent == tmp_path / "xdg" / "bnn"


def test_numba_cache_dir_is_honoured(fresh_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert cache_path.cache_dir().parent == tmp_path / "bnn_runtime"


def test_an_unwritable_chosen_directory_is_a_cache_error(fresh_dir, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(cache_path.ENV, str(blocker / "sub"))
    with pytest.raises(cache_path.CacheError, match="BNN_CACHE_DIR"):
        cache_path.cache_dir()


def test_no_writable_directory_at_all_is_a_cache_error(fresh_dir, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(cache_path, "IN_TREE", blocker / "__pycache__")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(cache_path.CacheError, match="set BNN_CACHE_DIR"):
        cache_path.cache_dir()


def test_bnn_warmup_with_an_unwritable_cache_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = dict(os.environ, BNN_CACHE_DIR=str(blocker / "sub"), PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "bnn_cli.main", "warmup"], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: cannot write the kernel cache in {blocker / 'sub'} (BNN_CACHE_DIR): choose a writable directory"
    ]


def test_bnn_warmup_says_once_when_it_compiles(monkeypatch):
    """With no ready marker for this CPU the CLI prints the notice once (here the kernels then load from the
    cache); with the marker, nothing."""
    monkeypatch.setattr(compiled, "_drivers", {})
    monkeypatch.setattr(compiled, "_numba", {})
    monkeypatch.setenv("BNN_NATIVE", "0")  # (numba's path: with the native file, nothing compiles)
    monkeypatch.setattr(cache, "is_ready", lambda uses: False)
    result = run_cli("warmup")
    assert result.exit_code == 0, result.output
    assert result.stderr.count(compiled.NOTICE) == 1
    assert f"kernels ready in {cache_path.cache_dir()}" in result.stdout
    monkeypatch.undo()
    monkeypatch.setattr(compiled, "_drivers", {})
    result = run_cli("warmup")
    assert result.exit_code == 0 and compiled.NOTICE not in result.stderr


def test_bnn_warmup_runs_a_model(tmp_path):
    import numpy as np

    from .random_models import random_config, random_model, to_bnn

    cfg = random_config(np.random.default_rng(0), "lenet5", "sign", True, width=0.5, in_shape=(1, 12, 12))
    _, data = to_bnn(random_model(cfg, 0), cfg)
    (tmp_path / "m.bnn").write_bytes(data)
    result = run_cli("warmup", tmp_path / "m.bnn")
    assert result.exit_code == 0, result.output
    assert "kernels ready in" in result.stdout


@pytest.mark.slow
def test_a_fresh_cache_compiles_once_then_loads(tmp_path):
    """From an empty cache: the first process compiles (and says so), the second loads, silently."""
    env = dict(os.environ, BNN_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    runs = [
        subprocess.run(
            [sys.executable, "-m", "bnn_cli.main", "warmup"], env=env, capture_output=True, text=True, timeout=1800
        )
        for _ in range(2)
    ]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    assert runs[0].stderr.count(compiled.NOTICE) == 1 and compiled.NOTICE not in runs[1].stderr
    assert list(tmp_path.glob("numba-*/ready-*"))


def test_every_kernel_is_compiled_without_numba_s_memory_runtime(monkeypatch):
    """Every numba function of the runtime comes from cache.kernel (cached, no NRT), the driver included: its
    machine code then calls no NRT function, and a warm process need not compile numba's NRT module."""
    from numba.core.registry import CPUDispatcher

    from bnn_runtime import conv_runs, driver, first_layer, kernels, split
    from bnn_runtime.layout import USES_ALL

    modules = (conv_runs, driver, first_layer, kernels, split)
    found = [v for m in modules for v in vars(m).values() if isinstance(v, CPUDispatcher)]
    found.append(driver.build(USES_ALL))
    assert len(found) > 20
    assert all(f.targetoptions.get("_nrt") is False for f in found), [
        f.py_func.__name__ for f in found if f.targetoptions.get("_nrt") is not False
    ]
    compiled.forward()  # (in the cache)
    objects = []
    real = cache._needs_nrt
    monkeypatch.setattr(cache, "_needs_nrt", lambda payload: objects.append(payload[0][2][0]) or real(payload))
    fn = driver.build(USES_ALL)
    cache.quick_load(fn)
    fn.compile(compiled.signature())  # loads the cached machine code through QuickLoadCache
    assert len(objects) == 1 and b"forward" in objects[0]
    assert b"NRT_" not in objects[0]


def test_a_warm_process_loads_the_driver_without_numba_s_compiler_modules():
    """A process that finds its driver in the cache loads machine code only (cache.QuickLoadCache): numba's
    lowering modules (numba.np.linalg, which imports scipy where installed) stay unloaded, nor do numba's memory
    runtime start (no kernel uses it) or numpy.ma and numba.np.arrayobj load, and the scores are the golden ones.
    (The session's driver for every kind is in the cache: conftest.)"""
    golden = ROOT / "tests" / "golden" / "lenet5_mnist"
    code = (
        "import sys, numpy as np, bnn_runtime\n"
        f"f = np.load({str(golden) + '.npz'!r})\n"
        f"m = bnn_runtime.load({str(golden) + '.bnn'!r})\n"
        "assert np.array_equal(m.scores(f['x']), f['scores'])\n"
        "assert np.array_equal(m.scores(f['x'][:1]), f['scores'][:1])\n"
        "from numba.core.runtime import rtsys\n"
        "late = ('numba.np.linalg', 'numba.np.arrayobj', 'numpy.ma')\n"
        "print(sorted(k for k in late if k in sys.modules), rtsys._init)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), BNN_NATIVE="0")  # the same cache directory; numba's path
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[] False"
