"""``bnn bench`` runs and reports (never asserting on speed), and the whole pipeline end to end:
``bnn train`` -> ``bnn export`` -> ``bnn infer`` -> ``bnn bench``."""

import json

import numpy as np
import pytest

from bnn_export.bench import float_baseline, paired_ratio
from bnn_runtime.format import read_bnn

from .conftest import assert_user_error, run_cli
from .random_models import random_config, random_model, to_bnn

QUICK = ("--rounds", "1", "--latency-calls", "3", "--min-seconds", "0.01", "--batch", "32")
ENGINES = {"runtime", "onnxruntime_exported", "onnxruntime_integer", "onnxruntime_fp32"}


def check_bench_json(out: dict, threads: int) -> None:
    assert set(out["results"]) == ENGINES
    for r in out["results"].values():
        assert r["images_per_second"] > 0 and 0 < r["latency_median_us"] <= r["latency_p90_us"]
    assert set(out["ratios"]) == {
        f"{kind}_{engine}_over_{base}"
        for kind in ("throughput", "latency")
        for engine, base in (
            ("runtime", "onnxruntime_fp32"),
            ("runtime", "onnxruntime_integer"),
            ("onnxruntime_exported", "onnxruntime_fp32"),
        )
    }
    rt, fp = out["results"]["runtime"], out["results"]["onnxruntime_fp32"]
    assert out["ratios"]["throughput_runtime_over_onnxruntime_fp32"] == pytest.approx(
        rt["images_per_second"] / fp["images_per_second"]
    )
    pairs = out["exported_over_fp32_pairs"]
    assert pairs["pairs"] >= out["rounds"] and 0 < pairs["q25"] <= pairs["median"] <= pairs["q75"]
    assert out["ratios"]["throughput_onnxruntime_exported_over_onnxruntime_fp32"] == pairs["median"]
    assert out["threads"] == threads and out["batch"] == 32
    assert {"cpu", "cpus", "load_average_1min"} <= set(out["machine"])
    pc = out["popcount"]
    assert pc["peak_word_ops_per_second"] > 0
    assert len(pc["layers"]) == len(out["layers"])
    assert all(r["seconds_per_image"] >= 0 for r in pc["layers"])
    assert any(r["word_ops_per_image"] > 0 for r in pc["layers"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LeNet-5 trained for one epoch on digits, exported."""
    run = tmp_path_factory.mktemp("e2e") / "run"
    result = run_cli(
        "train", "--model", "lenet5", "--dataset", "digits", "--epochs", "1", "--width", "0.5", "--out", run, "--quiet"
    )
    assert result.exit_code == 0, result.output
    result = run_cli("export", run, "--json")
    assert result.exit_code == 0, result.output
    return run, json.loads(result.stdout)


def test_train_export_infer_bench(trained):
    run, report = trained
    bnn_path = run / "model.bnn"
    assert report["bnn"] == str(bnn_path)
    result = run_cli("infer", bnn_path, "--format", "json")  # the dataset comes from the model's provenance
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["dataset"] == "digits" and out["images"] == 360
    assert out["accuracy"] == report["accuracy"]["bnn"]  # the runtime reproduces the exporter's own check
    result = run_cli("bench", bnn_path, "--json", "--threads", "2", *QUICK)
    assert result.exit_code == 0, result.output
    check_bench_json(json.loads(result.stdout), threads=2)


def test_bench_table(trained):
    run, _ = trained
    result = run_cli("bench", run / "model.bnn", "--threads", "1", *QUICK)
    assert result.exit_code == 0, result.output
    for text in (
        "bnn runtime",
        "ORT exported .onnx",
        "ORT integer",
        "ORT fp32",
        "share of peak",
        "AND+popcount peak",
        "conv1",
    ):
        assert text in result.stdout


def test_float_baseline_has_the_same_topology(trained):
    from torch import nn

    from bnn_train.layers import BinaryConv2d, BinaryLinear

    run, _ = trained
    bnn = read_bnn(run / "model.bnn")
    model, single_unit = float_baseline(bnn)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert not single_unit
    assert not any(isinstance(m, (BinaryConv2d, BinaryLinear, nn.BatchNorm1d, nn.BatchNorm2d)) for m in model)
    widths = [m.out_channels for m in convs] + [m.out_features for m in linears]
    assert widths == [layer["out_features"] for layer in bnn.layers]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model) == 2


def test_bench_without_a_training_config_mirrors_the_layers(tmp_path):
    rng = np.random.default_rng(0)
    cfg = random_config(rng, "mlp", "sign", True, hidden=(65, 3), in_shape=(1, 8, 8))
    bnn, data = to_bnn(random_model(cfg, 0), cfg)
    (tmp_path / "m.bnn").write_bytes(data)
    model, _ = float_baseline(bnn)
    from torch import nn

    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [65, 3, cfg.num_classes]
    result = run_cli("bench", tmp_path / "m.bnn", "--json", "--threads", "1", *QUICK)
    assert result.exit_code == 0, result.output
    check_bench_json(json.loads(result.stdout), threads=1)


def test_bench_errors(tmp_path):
    assert_user_error(run_cli("bench", tmp_path / "missing.bnn", *QUICK), "no such file")
    (tmp_path / "x.bnn").write_bytes(b"BNNMODEL" + b"\0" * 10)
    assert_user_error(run_cli("bench", tmp_path / "x.bnn", *QUICK), "truncated")
    for option in ("--threads", "--rounds", "--batch", "--latency-calls"):
        assert_user_error(run_cli("bench", tmp_path / "x.bnn", option, "0"), f"{option} must be a positive integer")
    assert_user_error(run_cli("bench", tmp_path / "x.bnn", "--min-seconds", "0"), "--min-seconds must be positive")
    rng = np.random.default_rng(1)
    cfg = random_config(rng, "mlp", "heaviside", False, hidden=(7,), in_shape=(9,))
    (tmp_path / "ok.bnn").write_bytes(to_bnn(random_model(cfg, 1), cfg)[1])
    assert_user_error(
        run_cli("bench", tmp_path / "ok.bnn", "--threads", "1000", *QUICK[:2]), "threads must be an integer from 1"
    )


def test_bench_an_arch_network_without_training(tmp_path):
    """bnn bench --arch: a synthetic .bnn of the spec, saved, then timed like any model file."""
    from bnn_runtime import read_bnn

    save = tmp_path / "net.bnn"
    result = run_cli(
        "bench",
        "--arch",
        "8C3-MP2-16C3-MP2-32FC",
        "--input-shape",
        "3,12,12",
        "--save",
        save,
        "--rounds",
        "1",
        "--latency-calls",
        "3",
        "--min-seconds",
        "0.01",
        "--batch",
        "8",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["layers"] == ["conv 8", "conv 16", "dense 32", "dense 10"]
    assert read_bnn(save).input_shape == (3, 12, 12)
    assert_user_error(run_cli("bench", "--arch", "8C3"), "--input-shape", code=1)
    assert_user_error(run_cli("bench"), "MODEL.bnn or --arch", code=1)
    assert_user_error(
        run_cli("bench", "--arch", "8Q", "--input-shape", "1,8,8", "--save", tmp_path / "x.bnn"), "'8Q'", code=1
    )
    assert not (tmp_path / "x.bnn").exists()


@pytest.mark.parametrize(
    "arch, shape, fragment",
    [  # sizes whose products overflow 64 bits: refused by arithmetic, before torch is asked for a shape
        ("99999999FC", "3,99999999,99999999", "one image of shape [3, 99999999, 99999999]"),
        ("4000000000FC-4000000000FC", "1,8,8", "overflow 64-bit sizes"),
    ],
)
def test_bench_arch_sizes_beyond_64_bits_are_one_line(tmp_path, arch, shape, fragment):
    result = run_cli("bench", "--arch", arch, "--input-shape", shape, "--save", tmp_path / "x.bnn")
    assert_user_error(result, fragment, code=1)
    assert not (tmp_path / "x.bnn").exists()


def test_busy_processes_run_and_are_stopped():
    from bnn_export.bench import busy_processes

    with busy_processes(2) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)


def test_bench_under_load_reports_default_one_thread_and_fp32(tmp_path):
    rng = np.random.default_rng(3)
    cfg = random_config(rng, "lenet5", "heaviside", True, width=0.5, in_shape=(1, 12, 12))
    _, data = to_bnn(random_model(cfg, 3), cfg)
    (tmp_path / "m.bnn").write_bytes(data)
    result = run_cli("bench", tmp_path / "m.bnn", "--load", "1", "--json", *QUICK)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["load"] == 1 and out["batch"] == 32
    assert set(out["results"]) == {"runtime_default_threads", "runtime_1_thread", "onnxruntime_fp32"}
    for r in out["results"].values():
        assert r["images_per_second"] > 0 and 0 < r["latency_median_us"] <= r["latency_p90_us"]
    d, one = out["results"]["runtime_default_threads"], out["results"]["runtime_1_thread"]
    assert out["default_over_1_thread_rounds"] == pytest.approx(d["images_per_second"] / one["images_per_second"])
    pairs = out["default_over_1_thread_pairs"]
    assert out["ratios"]["default_over_1_thread"] == pairs["median"] and pairs["pairs"] >= out["rounds"]
    assert 0 < pairs["q25"] <= pairs["median"] <= pairs["q75"]
    histogram = out["default_threads_histogram"]  # every full batch the default ran, by its thread count
    assert histogram and all(1 <= int(n) <= out["default_threads"] for n in histogram)
    assert sum(histogram.values()) >= out["rounds"] + pairs["pairs"]
    table = run_cli("bench", tmp_path / "m.bnn", "--load", "0", *QUICK)
    assert table.exit_code == 0 and "default / 1 thread" in table.stdout and "threads taken" in table.stdout
    assert_user_error(run_cli("bench", tmp_path / "m.bnn", "--load", "-1"), "--load")


def test_paired_ratio_times_batch_against_batch(monkeypatch):
    """On a fake clock: an engine whose batch takes 4 ticks against one whose batch takes 2 (and 3 on every
    fourth call, a busy moment) runs at half their throughput, pair after pair, in alternating order."""
    import bnn_export.bench as bench

    clock, calls = [0.0], []

    def engine(name, ticks):
        def run(x):
            calls.append(name)
            clock[0] += ticks(sum(c == name for c in calls))

        return run

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    slow = engine("slow", lambda n: 4.0)
    fast = engine("fast", lambda n: 3.0 if n % 4 == 0 else 2.0)
    r = paired_ratio(slow, fast, np.zeros((4, 3), np.uint8), min_seconds=0.0, min_pairs=8)
    assert r["pairs"] == 8 and r["median"] == 0.5 and r["q25"] == 0.5 and r["q75"] == pytest.approx(0.5625)
    assert calls[:2] == ["slow", "fast"] and calls[2:6] == ["slow", "fast", "fast", "slow"]  # warm-up, then ABBA
    r = paired_ratio(fast, slow, np.zeros((4, 3), np.uint8), min_seconds=30.0, min_pairs=1)
    assert r["median"] == 2.0 and r["pairs"] >= 30 / 6  # runs on until 30 ticks have passed
