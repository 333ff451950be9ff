"""The default thread count: the cores other processes leave idle, from the kernel's count of runnable threads."""

import os

import numpy as np

from bnn_runtime import model as model_module
from bnn_runtime.idle import WINDOW, IdleCores, cpu_count, cpu_max_files, cpu_quota, runnable

from .random_bnn import random_bnn


def _loadavg(path, running: int) -> None:
    path.write_text(f"0.52 0.58 0.59 {running}/812 43211\n")


def test_runnable_reads_the_fourth_field(tmp_path):
    f = tmp_path / "loadavg"
    _loadavg(f, 7)
    assert runnable(str(f)) == 7
    assert runnable(str(tmp_path / "missing")) is None
    f.write_text("garbage\n")
    assert runnable(str(f)) is None


def test_idle_cores_leave_the_busy_ones(tmp_path):
    f = tmp_path / "loadavg"
    idle = IdleCores(str(f), cores=4, interval=0)
    _loadavg(f, 1)  # only the caller runs
    assert idle(4) == 4 and idle(2) == 2
    for _ in range(WINDOW):
        _loadavg(f, 3)  # two other threads keep running
        idle(4)
    assert idle(4) == 2
    for _ in range(WINDOW):
        _loadavg(f, 9)
        idle(4)
    assert idle(4) == 1  # never fewer than one
    _loadavg(f, 1)
    assert idle(4) == 4  # once they stop, the next sample gives the cores back


def test_a_moment_of_load_does_not_cost_threads(tmp_path):
    f = tmp_path / "loadavg"
    idle = IdleCores(str(f), cores=2, interval=0)
    _loadavg(f, 1)
    idle(2)
    _loadavg(f, 5)
    assert idle(2) == 2  # one busy sample among idle ones
    assert idle(2) == 2


def test_no_count_means_every_core(tmp_path):
    assert IdleCores(str(tmp_path / "missing"), cores=2, interval=0)(2) == 2


def test_samples_are_rate_limited(tmp_path):
    f = tmp_path / "loadavg"
    idle = IdleCores(str(f), cores=2, interval=3600)
    _loadavg(f, 1)
    assert idle(2) == 2
    _loadavg(f, 3)
    for _ in range(2 * WINDOW):
        assert idle(2) == 2  # still the one sample of the first call


def test_a_default_model_takes_the_idle_cores_and_stays_exact(tmp_path, monkeypatch):
    """Loaded without threads: a parallel batch uses what IdleCores allows; scores equal an explicit 1 thread."""
    f = tmp_path / "loadavg"
    monkeypatch.setattr(model_module, "_IDLE", IdleCores(str(f), cores=2, interval=0))
    rng = np.random.default_rng(5)
    bnn, _ = random_bnn(rng)
    x = rng.integers(0, 256, (4 * model_module.SERIAL_MAX, *bnn.input_shape), dtype=np.uint8)
    default, single = model_module.BnnModel(bnn), model_module.BnnModel(bnn, threads=1)
    assert default.adaptive and not single.adaptive
    want = single.scores(x)
    for _ in range(WINDOW):
        _loadavg(f, 2)  # one other process keeps running
        assert np.array_equal(default.scores(x), want)
    assert default.threads_used == 1
    if model_module.max_threads() >= 2:
        _loadavg(f, 1)
        assert np.array_equal(default.scores(x), want)
        assert default.threads_used == 2


def _cgroup(tmp_path, own: str, limits: dict) -> tuple[str, str]:
    """A cgroup v2 tree under tmp_path (root, and the process's cgroup ``own``) with cpu.max files ``limits``."""
    root = tmp_path / "cgroup"
    (root / own.strip("/")).mkdir(parents=True, exist_ok=True)
    for where, text in limits.items():
        (root / where.strip("/") / "cpu.max").write_text(text + "\n")
    self_cgroup = tmp_path / "self_cgroup"
    self_cgroup.write_text(f"12:cpu,cpuacct:/elsewhere\n0::{own}\n")
    return str(root), str(self_cgroup)


def test_cpu_quota_rounds_up_and_reads_no_limit(tmp_path):
    f = tmp_path / "cpu.max"
    for text, cpus in [
        ("max 100000", None),
        ("200000 100000", 2),
        ("150000 100000", 2),
        ("50000 100000", 1),
        ("100000 100000", 1),
        ("800000 100000", 8),
        ("garbage", None),
        ("", None),
        ("0 100000", None),
    ]:
        f.write_text(text + "\n")
        assert cpu_quota(str(f)) == cpus, text
    assert cpu_quota(str(tmp_path / "missing")) is None


def test_cpu_count_is_capped_by_the_quota_of_the_cgroup_and_those_above(tmp_path):
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # a container (its own cgroup is "/"): root/cpu.max
    root, me = _cgroup(tmp_path / "a", "/", {"/": "100000 100000"})
    assert cpu_max_files(root, me) == [os.path.join(root, "cpu.max")]
    assert cpu_count(root, me) == 1
    # a nested cgroup: the smallest quota on the way up counts; "max" does not limit
    root, me = _cgroup(tmp_path / "b", "/outer/inner", {"/outer/inner": "max 100000", "/outer": "50000 100000"})
    assert cpu_count(root, me) == 1
    root, me = _cgroup(tmp_path / "c", "/outer/inner", {"/outer/inner": "max 100000", "/outer": "max 100000"})
    assert cpu_count(root, me) == affinity
    # a quota above the affinity mask does not raise it; no cgroup v2 at all: the affinity mask
    root, me = _cgroup(tmp_path / "d", "/", {"/": f"{100000 * (affinity + 3)} 100000"})
    assert cpu_count(root, me) == affinity
    assert cpu_count(str(tmp_path / "none"), str(tmp_path / "none")) == affinity
