"""The CLI option fuzzer, beyond train and infer: export, bench, bench-train, bench-ensemble, reproduce and warmup
answer every option value -- negative, zero, huge, NaN, inf, empty, markup, paths that are files, folders, missing,
below a file or a pipe -- with a result or one 'error:' line and exit != 0, never a traceback.

Each command runs on something tiny (a one-epoch MLP run on `ones`, a 6x6 forged model, table13's smallest
cell); legitimate values that would only make a command longer (more epochs, rounds, runs) are bounded, the
rest are passed as drawn. Every example runs in its own empty folder, so a drawn relative path lands there.
"""

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bnn_train.speed
from bnn_train.data import Data

from .conftest import run_cli
from .forged_bnn import conv_then_dense
from .test_cli_hostile_options import TINY_TRAIN, VALUES, _one_line_or_result

FUZZ = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)
PATH_KINDS = ["file", "folder", "missing", "below-a-file", "pipe", "empty", "model", "markup"]


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A folder holding one of each kind of path, a tiny model and a one-epoch run directory."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "file").write_text("not a model")
    (root / "folder").mkdir()
    os.mkfifo(root / "pipe")
    (root / "m.bnn").write_bytes(conv_then_dense(np.random.default_rng(0), 1, 6, 6, (3, 3), (1, 1), (2, 2), out=3))
    result = run_cli("train", *TINY_TRAIN, "--epochs", "1", "--out", root / "run")
    assert result.exit_code == 0, result.output
    return root


def _path(place, kind: str) -> str:
    return {
        "file": str(place / "file"),
        "folder": str(place / "folder"),
        "missing": str(place / "missing" / "x"),
        "below-a-file": str(place / "file" / "x"),
        "pipe": str(place / "pipe"),
        "empty": "",
        "model": str(place / "m.bnn"),
        "markup": "[red]x\x1b[31m",
    }[kind]


def _bounded(value: str, most: int, instead: str) -> str:
    """A legitimate integer above ``most`` (it would only take longer) becomes ``instead``; anything else stays."""
    try:
        return instead if most < int(value) < 10**6 else value
    except ValueError:
        return value


@contextlib.contextmanager
def _own_folder(factory):
    with contextlib.chdir(factory.mktemp("cwd")):
        yield


# ----------------------------------------------------------------- warmup


@settings(max_examples=8, **FUZZ)
@given(kind=st.sampled_from(PATH_KINDS))
def test_warmup_answers_every_path(place, tmp_path_factory, kind):
    with _own_folder(tmp_path_factory):
        _one_line_or_result(run_cli("warmup", _path(place, kind)))


# ----------------------------------------------------------------- export

EXPORT_PATH_OPTIONS = ["RUN_DIR", "-o", "--onnx", "--data-dir"]


@settings(max_examples=20, **FUZZ)
@given(
    option=st.sampled_from(EXPORT_PATH_OPTIONS + ["--check-images", "--checkpoint"]),
    kind=st.sampled_from(PATH_KINDS),
    value=VALUES,
)
def test_export_answers_every_option_value(place, tmp_path_factory, option, kind, value):
    with _own_folder(tmp_path_factory):
        run_dir, args = str(place / "run"), ["-o", "out.bnn", "--onnx", "out.onnx"]
        if option == "RUN_DIR":
            run_dir = _path(place, kind)
        elif option in EXPORT_PATH_OPTIONS:
            args += [option, _path(place, kind)]
        else:
            args += [option, value]
        _one_line_or_result(run_cli("export", run_dir, *args))


def test_export_never_replaces_a_pipe(place, tmp_path_factory):
    """An atomic write renames a file over its target: over a device or a pipe that destroys it (as root, -o
    /dev/null did). The pipe must still be a pipe afterwards."""
    import stat

    with _own_folder(tmp_path_factory):
        for option in ("-o", "--onnx"):
            result = run_cli("export", place / "run", "-o", "out.bnn", option, place / "pipe")
            _one_line_or_result(result)
            assert result.exit_code == 1 and "not a regular file" in result.stderr
            assert stat.S_ISFIFO(os.stat(place / "pipe").st_mode)


# ----------------------------------------------------------------- bench

QUICK_BENCH = ["--rounds", "1", "--latency-calls", "1", "--min-seconds", "0.01", "--batch", "2", "--threads", "1"]
ARCHS = st.one_of(
    st.sampled_from(["", "x", "4C3", "0C3", "-1FC", "99999999FC", "4C0", "4C3s0", "MP2", "4C3p-1", "2x", "0x8FC"]),
    st.sampled_from(["4C3-MP2-8FC", "100000x8FC", "4C99999", "8C3-MP99999", "[red]x", "4C3-MP2"]),
    st.text(max_size=8),
)
SHAPES = st.one_of(
    st.sampled_from(["", "0", "1,6,6", "1,0,6", "-1,6,6", "3,99999999,99999999", "1,6", "1,6,6,6", "a,b,c", "nan"]),
    st.sampled_from(["1,100000,100000", "3,2,2", "36", "1e3,2,2", "1,,6"]),
    st.text(max_size=8),
)


@settings(max_examples=20, **FUZZ)
@given(
    option=st.sampled_from(["--threads", "--batch", "--rounds", "--latency-calls", "--min-seconds", "--load"]),
    value=VALUES,
)
def test_bench_answers_every_option_value(place, tmp_path_factory, option, value):
    if option in ("--rounds", "--latency-calls", "--load"):
        value = _bounded(value, 1, "1")
    if option == "--min-seconds":
        try:
            value = "0.01" if 0.05 < float(value) <= 600 else value
        except ValueError:
            pass
    with _own_folder(tmp_path_factory):
        _one_line_or_result(run_cli("bench", place / "m.bnn", *QUICK_BENCH, option, value))


@settings(max_examples=20, **FUZZ)
@given(arch=ARCHS, shape=SHAPES, save=st.sampled_from(PATH_KINDS + ["new"]), with_model=st.booleans())
def test_bench_arch_answers_every_spec_shape_and_path(place, tmp_path_factory, arch, shape, save, with_model):
    with _own_folder(tmp_path_factory):
        target = "new.bnn" if save == "new" else _path(place, save)
        args = ["--arch", arch, "--input-shape", shape, "--save", target]
        if with_model:  # a MODEL.bnn and --arch: a mistake
            args = [_path(place, "model"), *args]
        _one_line_or_result(run_cli("bench", *args, *QUICK_BENCH))


@settings(max_examples=8, **FUZZ)
@given(kind=st.sampled_from(PATH_KINDS))
def test_bench_answers_every_model_path(place, tmp_path_factory, kind):
    with _own_folder(tmp_path_factory):
        _one_line_or_result(run_cli("bench", _path(place, kind), *QUICK_BENCH))


# ----------------------------------------------------------------- bench-train


@pytest.fixture
def few_samples(monkeypatch):
    """bench-train's dataset cut to 130 training images (1 + 2 batches of 64 + a remainder of 2): the command,
    its checks and its training loop run as they are, on less data."""
    real = bnn_train.speed.load_dataset

    def load(train):
        d = real(train)
        n, m = 130, 20
        return Data(d.name, d.x_train[:n], d.y_train[:n], d.x_test[:m], d.y_test[:m], d.classes, d.max_value, d.source)

    monkeypatch.setattr(bnn_train.speed, "load_dataset", load)


BENCH_TRAIN = ["--dataset", "ones", "--model", "suc", "--device", "cpu", "--json"]


@settings(max_examples=12, **FUZZ)
@given(
    option=st.sampled_from(["--epochs", "--batch-size", "--dataset", "--model", "--data-dir", "--device"]),
    value=VALUES,
    kind=st.sampled_from(PATH_KINDS),
)
def test_bench_train_answers_every_option_value(few_samples, tmp_path_factory, place, option, value, kind):
    if option == "--data-dir":
        value = _path(place, kind)
    if option == "--epochs":
        value = _bounded(value, 1, "1")
    with _own_folder(tmp_path_factory):
        _one_line_or_result(run_cli("bench-train", *BENCH_TRAIN, "--epochs", "1", option, value))


def test_bench_train_told_to_run_forever_is_refused():
    from bnn_cli.bench_train import MAX_EPOCHS

    result = run_cli("bench-train", *BENCH_TRAIN, "--epochs", str(10**9))
    _one_line_or_result(result)
    assert result.exit_code == 1 and f"limit of {MAX_EPOCHS}" in result.stderr


def test_train_and_reproduce_told_to_run_for_longer_than_a_run_can_record_are_refused(tmp_path_factory):
    """A run's metrics and checkpoint hold at most MAX_EPOCHS epochs (runcheck.py): more is refused before any
    training (the fuzzer found `reproduce --epochs 10388592782` training table13 until the machine ran out of
    memory)."""
    from bnn_train.config import MAX_EPOCHS

    with _own_folder(tmp_path_factory):
        for args in (["train", "--out", "r"], ["reproduce", *REPRODUCE, "--runs", "1", "--out", "repro"]):
            result = run_cli(*args, "--epochs", str(MAX_EPOCHS + 1))
            _one_line_or_result(result)
            assert result.exit_code == 1 and f"above the limit of {MAX_EPOCHS}" in result.stderr
            assert not Path(args[args.index("--out") + 1]).exists()


@pytest.mark.slow
@settings(max_examples=10, **FUZZ)
@given(option=st.sampled_from(["--epochs", "--batch-size"]), value=VALUES)
def test_bench_train_on_its_full_dataset_answers_every_option_value(tmp_path_factory, option, value):
    value = _bounded(value, 2, "2") if option == "--epochs" else value
    with _own_folder(tmp_path_factory):
        _one_line_or_result(run_cli("bench-train", *BENCH_TRAIN, "--epochs", "1", option, value))


# ----------------------------------------------------------------- reproduce

REPRODUCE = ["table13", "--only", "dim=2,bs=64,lr=0.1", "--device", "cpu", "--max-cells", "1", "-q", "--no-plots"]
REPRODUCE_OPTIONS = ["--runs", "--epochs", "--seed", "--max-cells", "--threads", "--ensemble", "--only"]


@settings(max_examples=20, **FUZZ)
@given(
    option=st.sampled_from(REPRODUCE_OPTIONS + ["TABLE", "--out", "--data-dir"]),
    value=VALUES,
    kind=st.sampled_from(PATH_KINDS),
)
def test_reproduce_answers_every_option_value(place, tmp_path_factory, option, value, kind):
    if option in ("--runs", "--epochs", "--ensemble"):
        value = _bounded(value, 2, "2")
    with _own_folder(tmp_path_factory):
        args = [*REPRODUCE, "--runs", "1", "--epochs", "1", "--out", "repro"]
        if option == "TABLE":
            args = [value, *args[1:]]
        elif option in ("--out", "--data-dir"):
            args += [option, _path(place, kind)]
        else:
            args += [option, value]
        _one_line_or_result(run_cli("reproduce", *args))


# ----------------------------------------------------------------- bench-ensemble

BENCH_ENSEMBLE = ["table13", "--only", "dim=2,bs=64,lr=0.1,config=heaviside/const", "--device", "cpu"]
BENCH_ENSEMBLE_OPTIONS = ["--runs", "--epochs", "--ensemble", "--rounds", "--threads", "--only"]


@settings(max_examples=20, **FUZZ)
@given(
    option=st.sampled_from(BENCH_ENSEMBLE_OPTIONS + ["TABLE", "--data-dir"]),
    value=VALUES,
    kind=st.sampled_from(PATH_KINDS),
)
def test_bench_ensemble_answers_every_option_value(place, tmp_path_factory, option, value, kind):
    if option in ("--runs", "--epochs", "--ensemble", "--rounds"):
        value = _bounded(value, 2, "2")
    with _own_folder(tmp_path_factory):
        args = [*BENCH_ENSEMBLE, "--runs", "2", "--ensemble", "2"]
        if option == "TABLE":
            args = [value, *args[1:]]
        elif option == "--data-dir":
            args += [option, _path(place, kind)]
        else:
            args += [option, value]
        _one_line_or_result(run_cli("bench-ensemble", *args))
