"""A training stage a user can trust: re-planned schedules on resume, validation split and best.pt, threads."""

import json

import pytest
import torch

from bnn_train import rundir
from bnn_train.config import ModelConfig, RunConfig, TrainConfig
from bnn_train.train import Callback, fit, learning_rate, resume

from .conftest import assert_user_error, run_cli

TINY = RunConfig(ModelConfig(model="mlp", hidden=(32,)), TrainConfig(epochs=2, batch_size=128, lr=0.02))


class Notes(Callback):
    def __init__(self):
        self.notes, self.records = [], []

    def on_notice(self, text):
        self.notes.append(text)

    def on_epoch(self, record):
        self.records.append(record)


def test_cosine_is_a_closed_form_over_the_planned_total():
    cfg = TINY
    assert [learning_rate(cfg, e) for e in range(3)] == pytest.approx([0.02, 0.01, 0.0])
    assert learning_rate(RunConfig(cfg.model, TrainConfig(lr=0.5, schedule="none")), 7) == 0.5


def test_resume_beyond_the_end_replans_the_cosine_and_says_so(tmp_path):
    fit(TINY, tmp_path, plot=False)
    before = torch.load(tmp_path / rundir.CHECKPOINT, weights_only=True)["model"]
    notes = Notes()
    final = resume(tmp_path, epochs=4, plot=False, callback=notes)
    assert final["epochs"] == 4
    assert len(notes.notes) == 1 and "re-planned over 4" in notes.notes[0] and "lr 0.01" in notes.notes[0]
    lrs = [r["lr"] for r in notes.records]
    import math

    assert lrs == pytest.approx(
        [0.02 * (1 + math.cos(math.pi * 2 / 4)) / 2, 0.02 * (1 + math.cos(math.pi * 3 / 4)) / 2]
    )
    assert all(lr > 0 for lr in lrs)  # never at lr 0 after the old plan's end
    after = torch.load(tmp_path / rundir.CHECKPOINT, weights_only=True)["model"]
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it did learn


def test_resume_cli_prints_one_notice(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "--model", "mlp", "--epochs", "1", "--out", out, "-q").exit_code == 0
    result = run_cli("train", "--resume", "--out", out, "--epochs", "2", "-q")
    assert result.exit_code == 0, result.output
    notes = [ln for ln in result.stderr.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "re-planned over 2" in notes[0]


def test_val_split_keeps_best_and_tests_at_the_end(tmp_path):
    cfg = RunConfig(TINY.model, TrainConfig(epochs=3, batch_size=128, val_split=0.2, lr=0.05))
    notes = Notes()
    final = fit(cfg, tmp_path, plot=True, callback=notes)
    assert all("val_accuracy" in r and "test_accuracy" not in r for r in notes.records)
    vals = [r["val_accuracy"] for r in notes.records]
    assert final["best_val_accuracy"] == max(vals) and final["best_epoch"] == vals.index(max(vals)) + 1
    best = rundir.load_checkpoint(tmp_path / rundir.BEST)
    assert best["epoch"] == final["best_epoch"]
    info = json.loads((tmp_path / rundir.CONFIG).read_text())["data"]
    assert info["n_val"] == round(0.2 * 1437) and info["n_train"] == 1437 - info["n_val"]
    assert 0 < final["test_accuracy"] <= 1 and 0 < final["best_test_accuracy"] <= 1
    model, cfg2, _ = rundir.load_run(rundir.select_checkpoint(tmp_path, "best"))
    from bnn_train.data import load_digits
    from bnn_train.train import evaluate

    data = load_digits()
    assert evaluate(model, cfg2, data.x_test, data.y_test)[1] == final["best_test_accuracy"]


def test_validation_images_are_the_same_for_every_seed():
    from bnn_train.data import load_digits, split_validation

    a, b = split_validation(load_digits(), 0.25), split_validation(load_digits(), 0.25)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    assert len(a.y_val) + len(a.y_train) == 1437


def test_export_takes_the_best_checkpoint_by_default(tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "--model", "mlp", "--hidden", "32", "--epochs", "3", "--val-split", "0.2", "--out", out, "-q")
    assert r.exit_code == 0, r.output
    best_epoch = rundir.load_checkpoint(out / rundir.BEST)["epoch"]
    for which, epoch in (("best", best_epoch), ("last", 3)):
        r = run_cli("export", out, "-o", tmp_path / f"{which}.bnn", "--no-onnx", "--checkpoint", which, "--json")
        assert r.exit_code == 0, r.output
        import bnn_runtime

        assert bnn_runtime.load(tmp_path / f"{which}.bnn").manifest["provenance"]["trained_epochs"] == epoch


@pytest.mark.parametrize("value", ["1", "-0.1", "1.5", "nan"])
def test_val_split_outside_the_range_is_one_line(tmp_path, value):
    out = tmp_path / "run"
    assert_user_error(run_cli("train", "--val-split", value, "--out", out), "--val-split must be in [0, 1)", code=1)
    assert not out.exists()


def test_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        r = run_cli("train", "--model", "mlp", "--epochs", "1", "--threads", "1", "--out", tmp_path / "run", "-q")
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    r = run_cli("train", "--threads", "0", "--out", tmp_path / "x")
    assert_user_error(r, "--threads must be an integer from 1 to", code=1)
    # 10**8 threads made OpenMP try to allocate 266 GB and exit the process (and pytest) with status 1
    r = run_cli("reproduce", "table2", "--threads", str(10**8), "--out", tmp_path / "z")
    assert_user_error(r, "--threads must be an integer from 1 to", "this machine's CPUs", code=1)
    assert torch.get_num_threads() == before
    assert_user_error(run_cli("reproduce", "table2", "--threads", "0", "--out", tmp_path / "y"), "--threads", code=1)


def test_fit_progress_prints_a_line_per_epoch(tmp_path, capsys):
    fit(TINY, tmp_path, plot=False, progress=True)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("epoch")]
    assert len(lines) == 2 and "test" in lines[0]


@pytest.mark.slow
def test_the_api_example_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, str(root / "examples" / "train_api.py"), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=root,
    )
    assert r.returncode == 0, r.stderr
    assert "checks passed" in r.stdout and "re-planned over 5" in r.stderr
