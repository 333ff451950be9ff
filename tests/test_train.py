"""The training loop and run directory: files, checkpoints, resume equality, divergence, SUC targets."""

import json

import pytest
import torch

from bnn_train import rundir
from bnn_train.config import ModelConfig, RunConfig, TrainConfig
from bnn_train.data import load_digits
from bnn_train.errors import CheckpointError
from bnn_train.train import Callback, evaluate, fit, resume

from .conftest import run_cli

TINY = RunConfig(ModelConfig(model="mlp", hidden=(32,)), TrainConfig(epochs=2, batch_size=128))


def test_fit_writes_a_complete_run_dir(tmp_path):
    final = fit(TINY, tmp_path / "run")
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [rundir.CHECKPOINT, rundir.CONFIG, rundir.METRICS_LINES, rundir.METRICS, rundir.CURVES]
    )
    lines = [json.loads(ln) for ln in (run / rundir.METRICS_LINES).read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for key in ("loss", "train_accuracy", "test_accuracy", "images_per_s", "lr"):
        assert all(isinstance(r[key], float) for r in lines)
    metrics = json.loads((run / rundir.METRICS).read_text())
    assert metrics["test_accuracy"] == lines[-1]["test_accuracy"] == final["test_accuracy"]
    cfg = json.loads((run / rundir.CONFIG).read_text())
    assert cfg["config"]["model"]["hidden"] == [32] and cfg["data"]["name"] == "digits"
    assert (run / rundir.CURVES).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_loads_weights_only_and_rebuilds_the_model_alone(tmp_path):
    fit(TINY, tmp_path)
    ckpt = torch.load(tmp_path / rundir.CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 2 and set(ckpt) >= {"model", "optimizer", "scheduler", "config", "history"}
    model, cfg, _ = rundir.load_run(tmp_path)
    data = load_digits()
    _, acc = evaluate(model, cfg, data.x_test, data.y_test)
    assert acc == ckpt["history"][-1]["test_accuracy"]


def _kill_after(epochs: int):
    class Kill(Callback):
        def on_epoch(self, record):
            if record["epoch"] == epochs:
                raise KeyboardInterrupt

    return Kill()


def _strip_timing(history):
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "train_seconds")} for r in history]


def test_resume_equals_the_uninterrupted_run(tmp_path):
    # jamming noise, shuffling, image shifts, cosine schedule and Adam state must all be restored
    cfg = RunConfig(
        ModelConfig(model="lenet5", act="heaviside/rect_jam"),
        TrainConfig(epochs=4, batch_size=100, schedule="cosine", seed=3, augment_shift=1, label_smoothing=0.1),
    )
    fit(cfg, tmp_path / "whole", plot=False)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "killed", callback=_kill_after(2), plot=False)
    assert torch.load(tmp_path / "killed" / rundir.CHECKPOINT, weights_only=True)["epoch"] == 2
    result = run_cli("train", "--resume", "--out", tmp_path / "killed", "-q")
    assert result.exit_code == 0, result.output
    a = torch.load(tmp_path / "whole" / rundir.CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "killed" / rundir.CHECKPOINT, weights_only=True)
    assert b["epoch"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert _strip_timing(a["history"]) == _strip_timing(b["history"])


def test_resume_can_extend_a_finished_run(tmp_path):
    fit(TINY, tmp_path, plot=False)
    final = resume(tmp_path, epochs=3, plot=False)
    assert final["epochs"] == 3


def test_fit_refuses_an_existing_run_and_keeps_it(tmp_path):
    fit(TINY, tmp_path, plot=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CheckpointError, match="already holds a run"):
        fit(TINY, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_diverged_run_stops_and_writes_valid_json(tmp_path):
    cfg = RunConfig(
        ModelConfig(model="mlp", hidden=(32,), weights="float", batchnorm=False, act="linear/tied"),
        TrainConfig(epochs=5, optimizer="sgd", lr=1e6),
    )
    final = fit(cfg, tmp_path, plot=False)
    assert final["diverged"] and final["epochs"] < 5
    json.loads((tmp_path / rundir.METRICS).read_text())  # NaN is written as null, still valid JSON
    for line in (tmp_path / rundir.METRICS_LINES).read_text().splitlines():
        json.loads(line)


def test_heaviside_tied_leaves_hidden_layers_untrained(tmp_path):
    cfg = RunConfig(
        ModelConfig(model="mlp", hidden=(32, 16), act="heaviside/tied", weights="float", batchnorm=False),
        TrainConfig(epochs=1),
    )
    torch.manual_seed(cfg.train.seed)
    from bnn_train.models import build_model

    cfg = cfg.with_dataset((1, 8, 8), 10, 1 / 16)
    before = build_model(cfg.model).state_dict()
    fit(cfg, tmp_path, plot=False)
    after = torch.load(tmp_path / rundir.CHECKPOINT, weights_only=True)["model"]
    assert torch.equal(before["linear1.weight"], after["linear1.weight"])
    assert torch.equal(before["linear2.weight"], after["linear2.weight"])
    assert not torch.equal(before["linear3.weight"], after["linear3.weight"])  # only the readout learns


@pytest.mark.parametrize("dim", [2, 10, 100])
def test_suc_heaviside_const_learns_ones(tmp_path, dim):
    """Paper Table 13 (Step/I, a Heaviside unit with float weights): >= 0.98 at every dimension."""
    cfg = RunConfig(
        ModelConfig(model="suc", act="heaviside/const", weights="float", batchnorm=False),
        TrainConfig(dataset="ones", dim=dim, epochs=10, batch_size=32, lr=0.1, optimizer="sgd", schedule="cosine"),
    )
    assert fit(cfg, tmp_path, plot=False)["test_accuracy"] >= 0.98
