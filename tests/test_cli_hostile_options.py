"""Every command answers every option value with a result or one line (exit != 0): resource-hungry values,
colliding --out paths, a full disk, Ctrl-C during training -- and a fuzzer over option values."""

import errno
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bnn_runtime.fileio
import bnn_train.train
from bnn_train import rundir

from .conftest import assert_user_error, run_cli
from .forged_bnn import conv_then_dense

TINY_TRAIN = [
    "--model",
    "mlp",
    "--hidden",
    "8",
    "--dataset",
    "ones",
    "--dim",
    "8",
    "--n-samples",
    "200",
    "--batch-size",
    "64",
    "-q",
]


def _one_line_or_result(result):
    """A result (exit 0), or one 'error:' line on stderr and exit != 0; never a traceback."""
    assert "Traceback" not in result.output, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if result.exit_code != 0:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


# ----------------------------------------------------------------- Ctrl-C


def test_ctrl_c_during_training_says_where_and_how_to_resume(tmp_path, monkeypatch):
    real = bnn_train.train.train_one_epoch

    def interrupted(model, cfg, data, optimizer, epoch, callback, *rest):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(model, cfg, data, optimizer, epoch, callback, *rest)

    monkeypatch.setattr(bnn_train.train, "train_one_epoch", interrupted)
    out = tmp_path / "run"
    result = run_cli("train", *TINY_TRAIN, "--epochs", "3", "--out", out)
    assert result.exit_code == 130
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"interrupted at epoch 2 of 3 (1 saved); resume with: bnn train --resume --out {out}"
    monkeypatch.setattr(bnn_train.train, "train_one_epoch", real)
    result = run_cli("train", "--resume", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert torch.load(out / rundir.CHECKPOINT, weights_only=True)["epoch"] == 3


# ----------------------------------------------------------------- --out collisions


def test_out_collisions_are_named_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_user_error(run_cli("train", *TINY_TRAIN, "--out", tmp_path / "file"), "--out", "is a file, not a folder")
    assert_user_error(run_cli("train", *TINY_TRAIN, "--out", tmp_path / "file" / "run"), "is a file, not a folder")
    assert (tmp_path / "file").read_text() == "x"


def test_export_output_collisions(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "run").mkdir()
    (tmp_path / "folder.bnn").mkdir()
    r = run_cli("export", tmp_path / "run", "-o", tmp_path / "file" / "m.bnn")
    assert_user_error(r, "--output", "is a file, not a folder")
    assert_user_error(run_cli("export", tmp_path / "run", "-o", tmp_path / "folder.bnn"), "is a folder, not a file")


# ----------------------------------------------------------------- a full disk


def _disk_full(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(bnn_runtime.fileio.os, "fsync", fsync)


def test_a_full_disk_during_training_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert run_cli("train", *TINY_TRAIN, "--epochs", "1", "--out", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _disk_full(monkeypatch)
    result = run_cli("train", "--resume", "--out", out, "-q")
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]  # (a resume may add "note:" lines)
    assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output, result.output
    assert "cannot write" in errors[0] and str(out) in errors[0] and "No space left on device" in errors[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp file, nothing replaced


def test_a_full_disk_during_export_keeps_the_previous_model(tmp_path, monkeypatch):
    from bnn_runtime.errors import FileWriteError
    from bnn_runtime.format import write_bnn

    target = tmp_path / "m.bnn"
    target.write_bytes(b"previous")
    _disk_full(monkeypatch)
    blob = conv_then_dense(np.random.default_rng(0), 1, 6, 6, (3, 3), (1, 1), (2, 2), out=3)
    from bnn_runtime.format import parse

    model = parse(blob)
    with pytest.raises(FileWriteError, match="m.bnn.*No space left"):
        write_bnn(target, {k: v for k, v in model.manifest.items() if k != "arrays"}, model.arrays)
    assert target.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["m.bnn"]


# ----------------------------------------------------------------- resource-hungry values


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--model", "mlp", "--hidden", "100000,100000"], ["parameters", "the limit is 268,435,456"]),
        (["--model", "lenet5", "--width", "1000"], ["parameters", "the limit is"]),
        (
            ["--dataset", "ones", "--model", "mlp", "--n-samples", "10000000000", "--dim", "1000"],
            ["--n-samples", "1 GiB"],
        ),
        (["--seed", "99999999999999999999999"], ["--seed must be an integer from 0"]),
        (["--seed", "-1"], ["--seed must be an integer from 0"]),
    ],
)
def test_resource_hungry_or_out_of_range_training_options_are_refused_up_front(tmp_path, args, fragments):
    assert_user_error(run_cli("train", *args, "--out", tmp_path / "run"), *fragments)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("opts") / "m.bnn"
    path.write_bytes(conv_then_dense(np.random.default_rng(0), 1, 6, 6, (3, 3), (1, 1), (2, 2), out=3))
    return path


@pytest.mark.parametrize(
    "option, value",
    [("--min-seconds", "1e9"), ("--rounds", "1000000"), ("--batch", "100000000"), ("--latency-calls", "10000000000")],
)
def test_a_benchmark_told_to_run_forever_is_refused(small_model, option, value):
    assert_user_error(run_cli("bench", small_model, option, value), option, "limit")


# ----------------------------------------------------------------- the fuzzer

VALUES = st.one_of(
    st.sampled_from(
        [
            "0",
            "-1",
            "1",
            "2",
            "nan",
            "inf",
            "-inf",
            "1e309",
            "1e-320",
            "",
            " ",
            "abc",
            "0x10",
            "1,2",
            "99999999999999999999999",
            "-99999999999999999999",
            "3.5",
            "1e6",
            "\x1b[31m",
            "[red]x[/]",
        ]
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True).map(str),
    st.text(max_size=6),
)
TRAIN_OPTIONS = [
    "--seed",
    "--lr",
    "--momentum",
    "--grad-clip",
    "--width",
    "--rect-width",
    "--jam-mean",
    "--batch-size",
    "--dim",
    "--n-samples",
    "--hidden",
    "--act",
    "--st-k",
    "--epochs",
]
INFER_OPTIONS = ["--threads", "--limit", "--format"]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(option=st.sampled_from(TRAIN_OPTIONS), value=VALUES)
def test_train_answers_every_option_value(tmp_path_factory, option, value):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    args = list(TINY_TRAIN) + ["--epochs", "1"]
    if option == "--epochs":  # huge values are legitimate and long: bound them here, fuzz the rest
        value = value if not value.lstrip("-").isdigit() or int(value) < 3 else "2"
    result = run_cli("train", *args, option, value, "--out", out)
    _one_line_or_result(result)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(option=st.sampled_from(INFER_OPTIONS), value=VALUES)
def test_infer_answers_every_option_value(small_model, tmp_path_factory, option, value):
    npy = tmp_path_factory.mktemp("npy") / "x.npy"
    np.save(npy, np.zeros((3, 6, 6), np.uint8))
    args = ["--npy", npy] if option != "--limit" else ["--dataset", "digits"]
    _one_line_or_result(run_cli("infer", small_model, *args, option, value))


def test_reproduce_out_below_a_file_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_user_error(
        run_cli("reproduce", "table14", "--out", tmp_path / "file" / "r"), "--out", "is a file, not a folder"
    )
