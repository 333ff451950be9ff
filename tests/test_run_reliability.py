"""Run directories under hostile conditions: a kill after (or during) every write, forged checkpoint fields,
an unfinished run handed to export."""

import json
import os
import tempfile

import pytest
import torch

import bnn_train.plots
from bnn_train import rundir
from bnn_train.config import ModelConfig, RunConfig, TrainConfig
from bnn_train.train import Callback, fit, resume

from .conftest import assert_user_error, run_cli

TINY = RunConfig(ModelConfig(model="mlp", hidden=(16,)), TrainConfig(epochs=2, batch_size=256, seed=5))
TIMING = ("images_per_s", "train_seconds")
_REAL = rundir.atomic_write_bytes


class Killed(BaseException):
    """What a kill -9 looks like to the code under test: nothing after it runs (not even except Exception)."""


def _untimed(obj):
    if isinstance(obj, list):
        return [_untimed(r) for r in obj]
    return {k: v for k, v in obj.items() if k not in TIMING}


def _snapshot(run):
    ckpt = torch.load(run / rundir.CHECKPOINT, weights_only=True)
    lines = [json.loads(ln) for ln in (run / rundir.METRICS_LINES).read_text().splitlines()]
    return {
        "files": sorted(p.name for p in run.iterdir()),
        "epoch": ckpt["epoch"],
        "model": ckpt["model"],
        "history": _untimed(ckpt["history"]),
        "lines": _untimed(lines),
        "metrics": _untimed(json.loads((run / rundir.METRICS).read_text())),
        "config": json.loads((run / rundir.CONFIG).read_text()),
        "curves": (run / rundir.CURVES).read_bytes()[:8],
    }


def _assert_same(a, b):
    assert a["files"] == b["files"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for key in ("epoch", "history", "lines", "metrics", "config", "curves"):
        assert a[key] == b[key], key


def _dying_writer(kill_at: int, during: bool, real=rundir.atomic_write_bytes):
    """atomic_write_bytes that dies after its ``kill_at``-th write (or in the middle of it, leaving a temp file)."""
    count = [0]

    def write(path, data):
        count[0] += 1
        if count[0] == kill_at:
            if during:  # the temp file is half written, the rename never happens
                fd, _ = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                os.write(fd, data[: len(data) // 2])
                os.close(fd)
                raise Killed
            real(path, data)
            raise Killed
        real(path, data)

    return write, count


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    fit(TINY, out)
    return out


def test_a_kill_after_or_during_every_write_resumes_to_the_uninterrupted_run(whole, tmp_path, monkeypatch):
    want = _snapshot(whole)
    counter, n = _dying_writer(0, False)
    monkeypatch.setattr(rundir, "atomic_write_bytes", counter)
    monkeypatch.setattr(bnn_train.plots, "atomic_write_bytes", counter)
    fit(TINY, tmp_path / "count")
    writes = n[0]
    assert writes == 1 + 2 * TINY.train.epochs + 2  # config, (checkpoint, metrics lines) per epoch, metrics, curves
    # dies after each write in turn; and in the middle of the first checkpoint and of metrics.json (a stale temp file)
    for during, ks in ((False, range(1, writes + 1)), (True, (2, writes - 1))):
        for k in ks:
            out = tmp_path / f"k{k}-{during}"
            writer, _ = _dying_writer(k, during)
            monkeypatch.setattr(rundir, "atomic_write_bytes", writer)
            monkeypatch.setattr(bnn_train.plots, "atomic_write_bytes", writer)
            with pytest.raises(Killed):
                fit(TINY, out)
            monkeypatch.setattr(rundir, "atomic_write_bytes", _REAL)
            monkeypatch.setattr(bnn_train.plots, "atomic_write_bytes", _REAL)
            if (out / rundir.CHECKPOINT).exists():
                resume(out)
            else:  # killed before the first checkpoint: the user starts again
                fit(TINY, out)
            assert rundir.stale_temp_files(out) == [], (k, during)
            _assert_same(_snapshot(out), want)


def test_resume_of_a_finished_run_rewrites_a_short_metrics_file(whole, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(whole, run)
    lines = (run / rundir.METRICS_LINES).read_text().splitlines()
    (run / rundir.METRICS_LINES).write_text(lines[0] + "\n" + lines[1][:10])  # one epoch short and torn
    (run / rundir.METRICS).unlink()
    (run / f".{rundir.CHECKPOINT}.abc123.tmp").write_bytes(b"half")
    (run / ".someone-elses.tmp").write_bytes(b"not ours")
    resume(run)
    _assert_same(_snapshot(run), _snapshot(whole) | {"files": _snapshot(run)["files"]})
    assert (run / ".someone-elses.tmp").exists() and not list(run.glob(f".{rundir.CHECKPOINT}.*"))


# ----------------------------------------------------------------- forged checkpoint fields


def _forge(whole, tmp_path, edit):
    ckpt = torch.load(whole / rundir.CHECKPOINT, weights_only=True)
    edit(ckpt)
    run = tmp_path / "forged"
    run.mkdir()
    torch.save(ckpt, run / rundir.CHECKPOINT)
    return run


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda c: c["config"]["model"].update(width="wide"), ["config.model.width must be a finite number", "'wide'"]),
        (lambda c: c["config"]["model"].update(hidden=["a"]), ["config.model.hidden must be a list of integers"]),
        (lambda c: c["config"]["model"].update(hidden=[0]), ["--hidden widths must be a positive integer"]),
        (lambda c: c["config"]["model"].update(model="resnet"), ["unknown --model 'resnet'"]),
        (lambda c: c["config"]["model"].update(in_shape=[1, 10**9]), ["config.model.in_shape"]),
        (lambda c: c["config"]["model"].update(num_classes=1), ["config.model.num_classes"]),
        (lambda c: c["config"]["model"]["act_params"].update(rect_width="x"), ["config.model.act_params.rect_width"]),
        (lambda c: c["config"]["train"].update(epochs=True), ["config.train.epochs must be an integer"]),
        (lambda c: c["config"]["train"].update(lr=-1.0), ["--lr must be a positive number"]),
        (lambda c: c["config"]["train"].update(data_dir=3), ["config.train.data_dir must be a string or null"]),
        (lambda c: c["config"]["train"].update(surprise=1), ["config.train has an unknown field 'surprise'"]),
        (lambda c: c["config"].update(extra={}), ["config must be an object with exactly"]),
        (lambda c: c.update(epoch="2"), ["epoch must be an integer"]),
        (lambda c: c.update(epoch=3), ["history must list one record per epoch (3)"]),
        (lambda c: c["history"][0].update(test_accuracy=7), ["history[0].test_accuracy"]),
        (lambda c: c["data"].update(classes=["a"]), ["data.classes must be 10 strings"]),
        (lambda c: c["data"].update(name="imagenet"), ["data.name must be one of"]),
        (lambda c: c.update(optimizer=[1, 2]), ["optimizer must be a state dict"]),
    ],
)
def test_forged_checkpoint_fields_are_named_in_one_line(whole, tmp_path, edit, fragments):
    run = _forge(whole, tmp_path, edit)
    result = run_cli("export", run, "-o", tmp_path / "x.bnn", "--no-onnx")
    assert_user_error(result, "checkpoint.pt", *fragments, code=1)
    assert not (tmp_path / "x.bnn").exists()
    result = run_cli("train", "--resume", "--out", run, "-q")
    assert_user_error(result, "checkpoint.pt", *fragments, code=1)


# ----------------------------------------------------------------- unfinished runs


def test_export_of_an_unfinished_run_says_so_and_require_complete_refuses(tmp_path):
    class Stop(Callback):
        def on_epoch(self, record):
            raise KeyboardInterrupt

    cfg = RunConfig(ModelConfig(model="mlp", hidden=(16,)), TrainConfig(epochs=3, batch_size=256))
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "run", callback=Stop(), plot=False)
    result = run_cli("export", tmp_path / "run", "-o", tmp_path / "m.bnn", "--no-onnx", "--check-images", "50")
    assert result.exit_code == 0, result.output
    assert "unfinished: it trained 1 of its 3 planned epochs" in result.stderr and "--resume" in result.stderr
    result = run_cli("export", tmp_path / "run", "-o", tmp_path / "n.bnn", "--no-onnx", "--require-complete")
    assert_user_error(result, "unfinished", "1 of its 3", "--require-complete", code=1)
    assert not (tmp_path / "n.bnn").exists()
    result = run_cli(
        "export", tmp_path / "run", "-o", tmp_path / "j.bnn", "--no-onnx", "--json", "--check-images", "50"
    )
    report = json.loads(result.stdout)
    assert (report["trained_epochs"], report["planned_epochs"], report["finished"]) == (1, 3, False)
