"""The mini-batch rule (bnn_train/batches.py): a last batch of one sample joins the one before it, so BatchNorm
models train on any training-set size, one at a time (``bnn train``) and as an ensemble alike."""

from dataclasses import replace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bnn_train import rundir
from bnn_train.batches import MIN_BATCH, batch_slices
from bnn_train.config import ModelConfig, RunConfig, TrainConfig
from bnn_train.ensemble_fit import fit_ensemble
from bnn_train.train import fit, recompute_batchnorm
from tests.conftest import assert_user_error, run_cli


@given(n=st.integers(0, 2_000), batch_size=st.integers(1, 300))
def test_batches_cover_every_sample_once_and_none_is_a_lone_sample(n, batch_size):
    slices = batch_slices(n, batch_size)
    covered = [i for s in slices for i in range(n)[s]]
    assert covered == list(range(n))  # every sample once, in order
    sizes = [s.stop - s.start for s in slices]
    assert all(size == batch_size for size in sizes[:-1])
    if sizes:
        if batch_size >= MIN_BATCH and n >= MIN_BATCH:
            assert sizes[-1] >= MIN_BATCH
        assert sizes[-1] < batch_size + MIN_BATCH


def test_a_remainder_of_one_joins_the_batch_before():
    assert [(s.start, s.stop) for s in batch_slices(33, 32)] == [(0, 33)]
    assert [(s.start, s.stop) for s in batch_slices(65, 32)] == [(0, 32), (32, 65)]
    assert [(s.start, s.stop) for s in batch_slices(34, 32)] == [(0, 32), (32, 34)]
    assert [(s.start, s.stop) for s in batch_slices(3, 1)] == [(0, 1), (1, 2), (2, 3)]  # size 1 (no BatchNorm)
    assert batch_slices(0, 32) == []


def test_batchnorm_statistics_are_re_estimated_over_a_remainder_of_one():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    x = torch.randint(0, 2, (11, 4), dtype=torch.uint8)
    recompute_batchnorm(model, x, batch_size=10)  # 10 + 1: one batch of 11
    bn = model[1]
    expected = model[0](x.float()).mean(0)
    assert torch.allclose(bn.running_mean, expected.detach(), atol=1e-6)


# ones: round(0.8 * n) training samples. 41 -> 33 = 32 + 1; with --val-split 0.1, 46 -> 37 - 4 = 33 = 32 + 1;
# 1251 -> 1001 = 10 * 100 + 1, and 1000 + 1 in the BatchNorm re-estimation (eval batch size 1000).
@pytest.mark.parametrize(
    "extra",
    [
        ["--n-samples", "41", "--batch-size", "32"],
        ["--n-samples", "46", "--batch-size", "32", "--val-split", "0.1"],
        ["--n-samples", "1251", "--batch-size", "100"],
    ],
    ids=["33=32+1", "val-split-33=32+1", "1001=10x100+1"],
)
def test_bnn_train_batchnorm_mlp_on_a_training_set_with_a_remainder_of_one(tmp_path, extra):
    out = tmp_path / "run"
    result = run_cli(
        "train", "--dataset", "ones", "--dim", "12", "--model", "mlp", "--hidden", "8", "--batchnorm",
        "--epochs", "2", "--device", "cpu", "--out", out, "-q", *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ckpt = rundir.load_checkpoint(out)
    assert ckpt["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    n_train = ckpt["data"]["n_train"]
    assert n_train % int(extra[3]) == 1  # the case this test is about


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--n-samples", "2"], "2 training and 0 test samples"),
        (["--n-samples", "4", "--val-split", "0.5", "--batchnorm"], "1 training sample cannot train BatchNorm"),
    ],
)
def test_too_few_samples_is_one_line(tmp_path, args, fragment):
    out = tmp_path / "run"
    tiny = ["--dataset", "ones", "--dim", "12", "--model", "mlp", "--hidden", "8"]
    result = run_cli("train", *tiny, *args, "--out", out)
    assert_user_error(result, fragment)
    assert not out.exists()


def test_an_ensemble_member_with_a_remainder_of_one_trains_as_its_one_at_a_time_run(tmp_path):
    base = RunConfig(
        ModelConfig(model="mlp", hidden=(8,), act="relu/tied", weights="float", batchnorm=True),
        TrainConfig(
            dataset="ones", dim=12, n_samples=41, batch_size=32, epochs=2, device="cpu", optimizer="sgd", lr=0.1
        ),
    )
    cfgs = [replace(base, train=replace(base.train, seed=s)) for s in (0, 1)]
    fit_ensemble(cfgs, [tmp_path / f"ens{c.train.seed}" for c in cfgs])
    for c in cfgs:
        fit(c, tmp_path / f"one{c.train.seed}", plot=False)
        a = rundir.load_checkpoint(tmp_path / f"ens{c.train.seed}")
        b = rundir.load_checkpoint(tmp_path / f"one{c.train.seed}")
        assert a["data"]["n_train"] == 33 and a["epoch"] == b["epoch"] == 2
        for key, t in b["model"].items():  # the same batches: the same weights, to rounding
            assert torch.allclose(a["model"][key].float(), t.float(), atol=1e-4, rtol=1e-4), key
