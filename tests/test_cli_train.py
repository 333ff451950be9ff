"""``bnn train`` end to end through the CLI, and every bad-input case: one line, exit != 0, nothing written."""

import json

import pytest
import torch

from .conftest import assert_user_error, run_cli


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.exit_code == 0
    assert "train" in result.stdout


def test_train_on_digits_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train",
        "--model",
        "lenet5",
        "--dataset",
        "digits",
        "--act",
        "heaviside/rect",
        "--epochs",
        "2",
        "--batch-size",
        "128",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert f"{out}: test accuracy" in result.stdout
    assert "epoch   2" in result.stderr  # progress lines go to stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["epochs"] == 2
    assert not list(out.glob(".*.tmp"))


def test_single_unit_classifier_on_ones(tmp_path):
    """The paper's SUC through the CLI: the model is checked against the dataset before it is loaded."""
    out = tmp_path / "suc"
    result = run_cli(
        "train",
        "--model",
        "suc",
        "--dataset",
        "ones",
        "--dim",
        "10",
        "--act",
        "heaviside/const",
        "--weights",
        "float",
        "--no-batchnorm",
        "--optimizer",
        "sgd",
        "--lr",
        "0.1",
        "--batch-size",
        "32",
        "--n-samples",
        "2000",
        "--epochs",
        "3",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["model"]["in_shape"] == [10] and cfg["config"]["model"]["num_classes"] == 2
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] > 0.9


def test_dataset_shapes_are_known_before_loading():
    from bnn_train.config import TrainConfig
    from bnn_train.data import load_dataset

    for cfg in (TrainConfig(dataset="ones", dim=13, n_samples=200), TrainConfig(dataset="digits")):
        data = load_dataset(cfg)
        assert cfg.dataset_shape() == (data.in_shape, data.num_classes)


def test_train_options_reach_the_config(tmp_path):
    result = run_cli(
        "train",
        "--model",
        "mlp",
        "--hidden",
        "40,20",
        "--act",
        "sign/ste",
        "--weights",
        "float",
        "--no-batchnorm",
        "--init",
        "diag_noise",
        "--optimizer",
        "sgd",
        "--momentum",
        "0.5",
        "--schedule",
        "cosine",
        "--grad-clip",
        "1.5",
        "--rect-width",
        "2",
        "--jam-mean",
        "0.3",
        "--epochs",
        "1",
        "--seed",
        "7",
        "--device",
        "cpu",
        "--out",
        tmp_path / "r",
        "-q",
    )
    assert result.exit_code == 0, result.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    m, t = cfg["model"], cfg["train"]
    assert (m["hidden"], m["act"], m["weights"], m["batchnorm"], m["init"]) == (
        [40, 20],
        "sign/ste",
        "float",
        False,
        "diag_noise",
    )
    assert (m["act_params"]["rect_width"], m["act_params"]["jam_mean"]) == (2.0, 0.3)
    assert (t["optimizer"], t["momentum"], t["schedule"], t["grad_clip"], t["seed"], t["device"]) == (
        "sgd",
        0.5,
        "cosine",
        1.5,
        7,
        "cpu",
    )


def test_defaults_are_the_recipe_of_the_config_dataclasses(tmp_path):
    """`bnn train` with no model/training options runs exactly ModelConfig() / TrainConfig() (docs/ACCURACY.md)."""
    from dataclasses import asdict

    from bnn_train.config import ModelConfig, TrainConfig

    result = run_cli("train", "--epochs", "1", "--out", tmp_path / "r", "-q")
    assert result.exit_code == 0, result.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    model = {k: v for k, v in asdict(ModelConfig()).items() if k not in ("in_shape", "num_classes", "input_scale")}
    assert {k: cfg["model"][k] for k in model} == {**model, "hidden": list(model["hidden"])}
    assert cfg["train"] == {**asdict(TrainConfig()), "epochs": 1}
    assert (cfg["model"]["act"], cfg["train"]["label_smoothing"], cfg["train"]["augment_shift"]) == (
        "heaviside/ste",
        0.0,
        0,
    )


def test_recipe_options_reach_the_config(tmp_path):
    result = run_cli(
        "train",
        "--model",
        "mlp",
        "--hidden",
        "8",
        "--augment-shift",
        "2",
        "--label-smoothing",
        "0",
        "--epochs",
        "1",
        "--out",
        tmp_path / "r",
        "-q",
    )
    assert result.exit_code == 0, result.output
    t = json.loads((tmp_path / "r" / "config.json").read_text())["config"]["train"]
    assert (t["augment_shift"], t["label_smoothing"]) == (2, 0.0)


BAD = [
    (["--augment-shift", "-1"], ["--augment-shift must be an integer from 0 to 8"], 1),
    (["--label-smoothing", "1"], ["--label-smoothing must be in [0, 1)"], 1),
    (["--model", "cnn"], ["'cnn' is not one of", "suc", "mlp", "lenet5"], 2),
    (
        ["--dataset", "cifar"],
        ["unknown --dataset 'cifar'", "ones", "digits", "mnist", "fashion-mnist", "folder:PATH"],
        1,
    ),
    (["--optimizer", "rmsprop"], ["sgd", "adam"], 2),
    (
        ["--act", "step/rect"],
        ["unknown forward 'step'", "heaviside, sign, logistic, relu, linear, tanh, sigmoid_tanh"],
        1,
    ),
    (["--act", "heaviside/box"], ["unknown backward 'box'", "tied, const, d_logistic, rect, triang, ste, full_jam"], 1),
    (["--act", "heaviside"], ["FORWARD/BACKWARD"], 1),
    (["--lr", "0"], ["--lr must be a positive number"], 1),
    (["--lr", "-0.1"], ["--lr must be a positive number"], 1),
    (["--lr", "nan"], ["--lr must be a positive number"], 1),
    (["--lr", "3.4e37"], ["--lr must be a positive number from 1e-12 to 1,000,000, got 3.4e+37"], 1),
    (["--rect-width", "1e-320"], ["--rect-width must be a positive number from 1e-12"], 1),
    (["--batch-size", "0"], ["--batch-size must be a positive integer"], 1),
    (["--epochs", "0"], ["--epochs must be a positive integer"], 1),
    (["--hidden", "64,x", "--model", "mlp"], ["--hidden must be comma-separated"], 1),
    (["--rect-width", "0"], ["--rect-width must be a positive number"], 1),
    (["--momentum", "1.5", "--optimizer", "sgd"], ["--momentum must be in [0, 1)"], 1),
    (["--grad-clip", "-1"], ["--grad-clip must be a positive number"], 1),
    (["--model", "suc"], ["suc is a single-unit binary classifier"], 1),
    (["--epochs", "many"], ["Invalid value for '--epochs'", "valid integer"], 2),
]


@pytest.mark.parametrize("args, fragments, code", BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, fragments, code):
    out = tmp_path / "run"
    result = run_cli("train", *args, "--out", out)
    assert_user_error(result, *fragments, code=code)
    assert not out.exists()


def test_missing_dataset_offline_says_how_to_get_it(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("train", "--dataset", "mnist", "--data-dir", tmp_path / "empty", "--out", tmp_path / "run")
    assert_user_error(result, "mnist is not in --data-dir", "train-images-idx3-ubyte[.gz]", code=1)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda(tmp_path):
    result = run_cli("train", "--device", "cuda", "--out", tmp_path / "run")
    assert_user_error(result, "no CUDA device", code=1)


def test_existing_run_is_kept(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "--model", "mlp", "--epochs", "1", "--out", out, "-q").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = run_cli("train", "--model", "mlp", "--epochs", "1", "--out", out)
    assert_user_error(result, "already holds a run", "--resume", code=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_refuses_changed_options(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "--model", "mlp", "--epochs", "1", "--out", out, "-q").exit_code == 0
    result = run_cli("train", "--resume", "--out", out, "--lr", "0.5", "--model", "mlp")
    assert_user_error(result, "drop --lr, --model", code=1)


def test_resume_of_missing_or_corrupt_run(tmp_path):
    assert_user_error(run_cli("train", "--resume", "--out", tmp_path / "nope"), "does not exist", code=1)
    (tmp_path / "foreign").mkdir()
    assert_user_error(run_cli("train", "--resume", "--out", tmp_path / "foreign"), "not a bnn run directory", code=1)
    (tmp_path / "foreign" / "checkpoint.pt").write_bytes(b"garbage" * 100)
    assert_user_error(run_cli("train", "--resume", "--out", tmp_path / "foreign"), "corrupt", code=1)
    torch.save({"format": "something-else"}, tmp_path / "foreign" / "checkpoint.pt")
    assert_user_error(
        run_cli("train", "--resume", "--out", tmp_path / "foreign"), "not a bnn training checkpoint", code=1
    )


def test_bench_train_reports_the_ratio():
    result = run_cli("bench-train", "--dataset", "digits", "--epochs", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["variants"]) == {"binary", "float", "float_qmean"}
    assert report["variants"]["float"]["epoch_cost_vs_float"] == 1.0
    assert report["variants"]["binary"]["median_images_per_s"] > 0


def test_bench_train_bad_input():
    assert_user_error(run_cli("bench-train", "--epochs", "0"), "--epochs", code=1)


IGNORED = [
    (["--model", "lenet5", "--hidden", "64"], ["--hidden applies to --model mlp only, not lenet5"]),
    (["--model", "mlp", "--width", "2"], ["--width applies to --model lenet5 only, not mlp"]),
    (["--model", "mlp", "--pool", "max"], ["--pool applies to --model lenet5 only, not mlp"]),
    (["--dataset", "digits", "--dim", "3"], ["--dim applies to --dataset ones only, not digits"]),
    (
        ["--dataset", "digits", "--data-dir", "."],
        ["--data-dir applies to --dataset mnist, fashion-mnist, cifar10 only"],
    ),
    (["--optimizer", "adam", "--momentum", "0.5"], ["--momentum applies to --optimizer sgd only, not adam"]),
    (["--model", "mlp", "--width", "2", "--pool", "max"], ["--width applies", "; --pool applies", "drop them"]),
]


@pytest.mark.parametrize("args, fragments", IGNORED, ids=[" ".join(a) for a, _ in IGNORED])
def test_an_option_the_run_would_ignore_is_refused(tmp_path, args, fragments):
    out = tmp_path / "run"
    assert_user_error(run_cli("train", *args, "--out", out), *fragments, code=1)
    assert not out.exists()


def test_a_default_run_has_ignored_settings():
    """The default lenet5 run leaves --hidden's default unused: only a typed --hidden is refused (the CLI
    tests above train lenet5 with every default)."""
    from bnn_train.config import RunConfig

    assert "hidden" in RunConfig().ignored_settings()
