"""Knowledge distillation (``--distill``): the loss, the teacher's cached logits, and the CLI end to end."""

import json

import pytest
import torch
import torch.nn.functional as F

from bnn_train import rundir
from bnn_train.config import ModelConfig, RunConfig, TrainConfig
from bnn_train.data import load_digits
from bnn_train.distill import distill_loss, load_teacher
from bnn_train.errors import ConfigError

from .conftest import assert_user_error, run_cli


def test_alpha_zero_is_the_plain_cross_entropy_and_alpha_one_the_scaled_kl():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    ce = F.cross_entropy(s, y, label_smoothing=0.1)
    assert torch.allclose(distill_loss(s, t, y, alpha=0.0, temperature=3.0, smoothing=0.1), ce)
    p, log_q = F.softmax(t / 3, 1), F.log_softmax(s / 3, 1)
    kl = (p * (p.log() - log_q)).sum(1).mean() * 9
    assert torch.allclose(distill_loss(s, t, y, alpha=1.0, temperature=3.0, smoothing=0.0), kl, atol=1e-6)
    assert float(distill_loss(t, t, y, alpha=1.0, temperature=2.0, smoothing=0.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("bad", [dict(distill_alpha=1.5), dict(distill_alpha=-0.1), dict(distill_temperature=0.0)])
def test_distill_settings_are_checked(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad).validate()


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "float"
    r = run_cli(
        "train", "--model", "mlp", "--hidden", "32", "--weights", "float", "--act", "relu/tied",
        "--epochs", "2", "--batch-size", "128", "-q", "--out", out,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


def test_cached_logits_are_the_teachers_logits_on_every_training_image(teacher_run):
    data = load_digits()
    model, _, _ = rundir.load_run(teacher_run)
    teacher = load_teacher(str(teacher_run), data.in_shape, data.num_classes, data.x_train, 100, cache=True)
    with torch.no_grad():
        direct = model(data.x_train.float())
    assert teacher.logits.shape == (len(data.y_train), 10)
    assert torch.allclose(teacher.logits, direct, atol=1e-5)
    idx = torch.tensor([5, 0, 17])
    assert torch.equal(teacher(idx, data.x_train[idx]), teacher.logits[idx])
    live = load_teacher(str(teacher_run), data.in_shape, data.num_classes, data.x_train, 100, cache=False)
    assert live.logits is None and torch.allclose(live(idx, data.x_train[idx]), direct[idx], atol=1e-5)


def test_a_distilled_binary_run_trains_records_its_teacher_and_resumes(teacher_run, tmp_path):
    out = tmp_path / "student"
    args = ("--model", "lenet5", "--width", "0.5", "--epochs", "1", "--batch-size", "128", "-q", "--out", out)
    r = run_cli("train", *args, "--distill", teacher_run, "--distill-alpha", "0.5", "--distill-temperature", "2")
    assert r.exit_code == 0, r.output
    t = json.loads((out / rundir.CONFIG).read_text())["config"]["train"]
    assert (t["distill"], t["distill_alpha"], t["distill_temperature"]) == (str(teacher_run), 0.5, 2.0)
    r = run_cli("train", "--resume", "--out", out, "--epochs", "2", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads((out / rundir.METRICS).read_text())["epochs"] == 2


def test_distilling_changes_the_trained_weights(teacher_run, tmp_path):
    base = RunConfig(ModelConfig(model="mlp", hidden=(16,)), TrainConfig(epochs=1, batch_size=128))
    from dataclasses import replace

    from bnn_train.train import fit

    fit(base, tmp_path / "plain", plot=False)
    fit(replace(base, train=replace(base.train, distill=str(teacher_run))), tmp_path / "taught", plot=False)
    a = torch.load(tmp_path / "plain" / rundir.CHECKPOINT, weights_only=True)["model"]
    b = torch.load(tmp_path / "taught" / rundir.CHECKPOINT, weights_only=True)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_a_teacher_of_another_dataset_is_refused_in_one_line(teacher_run, tmp_path):
    r = run_cli("train", "--dataset", "ones", "--model", "mlp", "--epochs", "1", "-q", "--out", tmp_path / "s",
                "--distill", teacher_run)  # fmt: skip
    assert_user_error(r, "--distill", "same dataset")


def test_a_missing_teacher_is_refused_in_one_line(tmp_path):
    r = run_cli("train", "--epochs", "1", "-q", "--out", tmp_path / "s", "--distill", tmp_path / "nowhere")
    assert_user_error(r, "nowhere")
