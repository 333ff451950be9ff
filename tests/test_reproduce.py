"""``bnn reproduce``: the transcribed paper numbers against the grids, a tiny reproduction end to end, resume,
bad input."""

import csv
import json

import pytest

from bnn_train.config import RunConfig
from bnn_train.models import build_model
from bnn_train.reproduce import runner
from bnn_train.reproduce.experiments import EXPERIMENTS, ReproduceError, get_experiment, select_cells
from bnn_train.reproduce.paper import PaperTableError, load_paper, paper_table, parse_rows
from bnn_train.reproduce.report import cell_stats, markdown, summary

from .conftest import assert_user_error, run_cli

PAPER_TABLES = (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14)


# --------------------------------------------------------------------------- paper numbers vs grids


def test_paper_numbers_parse():
    cells = load_paper()
    assert len(cells) == 411
    assert {c.table for c in cells} == set(PAPER_TABLES)
    for c in cells:
        assert 0.0 < c.mean <= 1.0 and 0.0 <= c.std < 0.5, c
        assert c.batch_size > 0 and c.lr > 0
    assert len({(c.table, c.key) for c in cells}) == len(cells), "a cell is printed twice"


def test_every_table_is_an_experiment():
    assert sorted(e.table for e in EXPERIMENTS.values()) == list(PAPER_TABLES)
    assert all(name == f"table{e.table}" for name, e in EXPERIMENTS.items())


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_grid_matches_the_paper_cell_for_cell(name):
    exp = EXPERIMENTS[name]
    paper = paper_table(exp.table)
    grid = [c.key for c in exp.cells()]
    assert len(grid) == len(set(grid))
    assert set(grid) == set(paper), set(grid) ^ set(paper)
    assert {(p.model, p.dataset) for p in paper.values()} == {(exp.model, exp.dataset)}
    # the paper's column order is the experiment's configuration order
    assert list(dict.fromkeys(p.config for p in load_paper() if p.table == exp.table)) == list(exp.configs)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_cell_builds_the_documented_run(name):
    exp = EXPERIMENTS[name]
    for config in exp.configs:
        cell = next(c for c in exp.cells() if c.config == config)
        cfg = exp.run_config(cell, epochs=3, seed=7, device="cpu")
        cfg.validate()
        cfg = cfg.with_dataset(*cfg.train.dataset_shape(), 1.0)
        build_model(cfg.model)
        m, t = cfg.model, cfg.train
        assert (m.weights, m.init, t.optimizer, t.momentum, t.schedule) == ("float", "default", "sgd", 0.0, "none")
        assert (t.epochs, t.seed, t.batch_size, t.lr, t.dataset) == (3, 7, cell.batch_size, cell.lr, exp.dataset)
        assert m.batchnorm == config.endswith("+bn")
        assert (t.grad_clip is not None) == config.endswith("+gc")
        assert m.act == config.split("+")[0]
        if exp.model == "lenet5":
            assert m.pool_kind == "qmean"  # the paper's pooling, also for the Heaviside forward
        if exp.model == "mlp":
            assert m.hidden == (cell.hidden,)
        if exp.model == "suc":
            assert t.dim == cell.dim
        assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_a_reproduction_trains_with_the_papers_plain_settings_whatever_bnn_trains_defaults(name):
    """bnn train's accuracy recipe (docs/ACCURACY.md) must not leak into the paper's runs: each cell's
    TrainConfig equals one written out field by field with the plain values, and naming every field
    makes a new TrainConfig field fail here until its plain value is decided."""
    from dataclasses import fields

    from bnn_train.config import TrainConfig

    exp = EXPERIMENTS[name]
    for cell in exp.cells():
        t = exp.run_config(cell, epochs=3, seed=7, device="cpu", data_dir="D").train
        plain = dict(
            dataset=exp.dataset,
            data_dir="D",
            dim=cell.dim if cell.dim is not None else 10,
            n_samples=10000,
            epochs=3,
            batch_size=cell.batch_size,
            lr=cell.lr,
            optimizer="sgd",
            momentum=0.0,
            schedule="none",
            grad_clip=1.0 if cell.config.endswith("+gc") else None,
            augment_shift=0,
            label_smoothing=0.0,
            soft_step=0.0,
            distill="",
            distill_alpha=0.0,
            distill_temperature=1.0,
            loss_reduction=exp.loss_reduction,
            seed=7,
            device="cpu",
            eval_batch_size=1000,
            input_size="",
            val_split=0.0,
        )
        assert set(plain) == {f.name for f in fields(TrainConfig)}
        assert t == TrainConfig(**plain), cell


def test_malformed_paper_row_names_its_line():
    row = {
        "table": "2",
        "model": "suc",
        "dataset": "ones",
        "dim": "2",
        "hidden": "",
        "batch_size": "32",
        "lr": "0.1",
        "config": "logistic/tied",
        "paper_label": "Log/d(Log)",
        "mean": "0.99",
        "std": "0.001",
    }
    assert parse_rows([row])[0].dim == 2
    with pytest.raises(PaperTableError, match="line 3"):
        parse_rows([row, {**row, "mean": "0.9x"}])


def test_select_cells():
    exp = get_experiment("table14")
    assert len(select_cells(exp)) == 24
    cells = select_cells(exp, "bs=256,bs=1024,lr=0.1")
    assert {(c.batch_size, c.lr) for c in cells} == {(256, 0.1), (1024, 0.1)} and len(cells) == 8
    assert [c.config for c in select_cells(exp, "config=heaviside/rect", max_cells=2)] == ["heaviside/rect"] * 2
    with pytest.raises(ReproduceError, match="bs 1024, 256, 512"):
        select_cells(exp, "bs=100")
    with pytest.raises(ReproduceError, match="KEY one of"):
        select_cells(exp, "epochs=3")


def test_report_numbers():
    exp = get_experiment("table13")
    cells = select_cells(exp, "dim=2,bs=32,lr=0.1")
    rows = [
        {
            "config": "heaviside/const",
            "batch_size": "32",
            "lr": "0.1",
            "dim": "2",
            "hidden": "",
            "test_accuracy": acc,
            "diverged": div,
        }
        for acc, div in (("0.9", "0"), ("1.0", "1"))
    ]
    stats = cell_stats(exp, cells, rows)
    const = next(s for s in stats if s.cell.config == "heaviside/const")
    assert (const.n, const.diverged) == (2, 1)
    assert const.mean == pytest.approx(0.95) and const.std == pytest.approx(0.05)
    assert const.diff == pytest.approx(0.95 - 0.9998)
    other = next(s for s in stats if s.cell.config != "heaviside/const")
    assert other.n == 0 and other.mean is None and other.paper_mean == 0.9997
    text = markdown(exp, stats, epochs=4, seed=0, devices=["cpu"])
    assert "| 2 | 32 | 0.1 | — | 0.9997 (0.000) | — | 0.9500 (0.050) ⚠1 | 0.9998 (0.000) | -0.0498 |" in text
    assert summary(stats)["heaviside/const"]["within_0.02"] == 0


# --------------------------------------------------------------------------- end to end through the CLI

TINY = ("reproduce", "table13", "--epochs", "1", "--only", "dim=2,bs=64,lr=0.1", "--device", "cpu")


def _rows(out):
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _mtimes(out):
    return {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/checkpoint.pt")}


def test_tiny_reproduction_end_to_end_and_resume(tmp_path):
    out = tmp_path / "t13"
    result = run_cli(*TINY, "--runs", "2", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert "4 of 4 runs finished" in result.stdout
    rows = _rows(out)
    assert len(rows) == 4
    assert {r["config"] for r in rows} == {"heaviside/d_logistic", "heaviside/const"}
    assert sorted(int(r["seed"]) for r in rows) == [0, 0, 1, 1]
    for r in rows:
        assert (r["table"], r["dim"], r["batch_size"], r["lr"], r["epochs"]) == ("13", "2", "64", "0.1", "1")
        assert 0.0 <= float(r["test_accuracy"]) <= 1.0 and float(r["final_loss"]) >= 0 and r["diverged"] in "01"
        run_dir = out / "runs" / r["run_key"]
        assert (run_dir / "metrics.jsonl").exists() and not (run_dir / "curves.png").exists()
    report = (out / "report.md").read_text()
    assert "Table 13" in report and "Step/d(Log) ours" in report and "1.0000 (0.000)" in report  # the paper's value
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == ["curves/dim=2_bs=64_lr=0.1.png", "heatmap-heaviside-const.png", "heatmap-heaviside-d_logistic.png"]
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "test accuracy" in result.stderr  # a line per finished run

    # resume: the finished runs are reused, only the third seed is trained
    before = _mtimes(out)
    result = run_cli(*TINY, "--runs", "3", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert "4 of 6 runs already finished" in result.stderr
    assert len(_rows(out)) == 6
    after = _mtimes(out)
    assert len(after) == 6 and all(after[p] == t for p, t in before.items())

    # a run that finished but was killed before its CSV row is recovered, not retrained
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-1]) + lines[-1][:10])  # torn last line
    result = run_cli(*TINY, "--runs", "3", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert "(recovered)" in result.stderr
    assert len(_rows(out)) == 6 and _mtimes(out) == after


def test_an_interrupted_run_continues_from_its_checkpoint(tmp_path):
    exp = get_experiment("table13")
    cells = select_cells(exp, "dim=2,bs=64,lr=0.1", max_cells=1)

    class Interrupt(runner.Listener):
        def on_epoch(self, spec, record):
            if record["epoch"] == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_reproduction(exp, cells, tmp_path, runs=1, epochs=2, device="cpu", listener=Interrupt())
    run_dir = tmp_path / "runs" / cells[0].name / "seed0"
    first = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(first) == 1 and not (tmp_path / "results.csv").exists()

    epochs_seen = []

    class Record(runner.Listener):
        def on_epoch(self, spec, record):
            epochs_seen.append(record["epoch"])

    rows = runner.run_reproduction(exp, cells, tmp_path, runs=1, epochs=2, device="cpu", listener=Record())
    assert epochs_seen == [2]  # epoch 1 was not trained again
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == first[0]
    assert len(rows) == 1 and int(rows[0]["epochs"]) == 2


def test_list_names_every_experiment():
    result = run_cli("reproduce", "--list")
    assert result.exit_code == 0, result.output
    for name, exp in EXPERIMENTS.items():
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith(name + " "))
        assert f" {len(exp.cells())} " in line and exp.dataset in line
    assert "SGD without momentum" in result.stdout


BAD = [
    (["tableX"], ["unknown experiment 'tableX'", "table2", "table14"]),
    (["table12"], ["unknown experiment", "table13"]),
    (["table13", "--runs", "0"], ["--runs must be a positive integer"]),
    (["table13", "--epochs", "0"], ["--epochs must be a positive integer"]),
    (["table13", "--only", "bs=100"], ["--only bs=100", "bs 32, 64"]),
    (["table13", "--only", "speed=3"], ["KEY one of"]),
    (["table13", "--max-cells", "0"], ["--max-cells must be a positive integer"]),
    (["table13", "--ensemble", "0"], ["--ensemble must be a positive integer"]),
    ([], ["name an experiment", "--list"]),
]


@pytest.mark.parametrize("args, fragments", BAD, ids=[" ".join(a) or "none" for a, _ in BAD])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, fragments):
    out = tmp_path / "out"
    result = run_cli("reproduce", *args, "--out", out)
    assert_user_error(result, *fragments, code=1)
    assert not out.exists()


def test_out_holding_another_reproduction_is_refused(tmp_path):
    out = tmp_path / "t13"
    assert run_cli(*TINY, "--runs", "1", "--max-cells", "1", "--out", out, "-q").exit_code == 0
    result = run_cli("reproduce", "table13", "--epochs", "2", "--runs", "1", "--out", out)
    assert_user_error(result, "epochs=1, not 2", code=1)
    result = run_cli("reproduce", "table2", "--epochs", "1", "--runs", "1", "--out", out)
    assert_user_error(result, "experiment=table13, not table2", code=1)
    assert json.loads((out / "reproduce.json").read_text())["experiment"] == "table13"


# --------------------------------------------------------------------------- --pool: the Step/I reading


def _module_kinds(model) -> list[str]:
    return [type(m).__name__ for m in model]


def test_pool_max_changes_only_the_lenet5_pooling():
    """``--pool max`` (docs/REPRODUCTION.md, "Step/I: the gap, settled") max-pools the pre-activations and then
    applies the step; every other setting of every cell stays the paper's."""
    from dataclasses import replace

    paper, other = get_experiment("table14"), get_experiment("table14", pool="max")
    assert (paper.pool, other.pool) == ("qmean", "max") and get_experiment("table14", pool="qmean") is paper
    for cell in paper.cells():
        a = paper.run_config(cell, epochs=3, seed=7, device="cpu")
        b = other.run_config(cell, epochs=3, seed=7, device="cpu")
        assert b == replace(a, model=replace(a.model, pool="max"))
    cell = next(c for c in paper.cells() if c.config == "heaviside/const")
    kinds = {}
    for exp in (paper, other):
        cfg = exp.run_config(cell, epochs=1, seed=0, device="cpu")
        kinds[exp.pool] = _module_kinds(build_model(cfg.with_dataset(*cfg.train.dataset_shape(), 1.0).model))
    assert kinds["qmean"][1:5] == ["Conv2d", "Activation", "QuadMeanPool2d", "Conv2d"]
    assert kinds["max"][1:5] == ["Conv2d", "MaxPool2d", "Activation", "Conv2d"]
    assert kinds["qmean"].count("QuadMeanPool2d") == 2 and "QuadMeanPool2d" not in kinds["max"]


def test_pool_is_part_of_the_reproduction_it_resumes(tmp_path):
    paper, other = get_experiment("table14"), get_experiment("table14", pool="max")
    runner.check_manifest(tmp_path, paper, 1, 0, ensemble=1)
    assert json.loads((tmp_path / "reproduce.json").read_text())["pool"] == "qmean"
    with pytest.raises(ReproduceError, match="pool=qmean, not max"):
        runner.check_manifest(tmp_path, other, 1, 0, ensemble=1)
    # a manifest written before --pool existed describes the paper's pooling
    (tmp_path / "reproduce.json").write_text(json.dumps({"experiment": "table14", "epochs": 1, "seed": 0}))
    runner.check_manifest(tmp_path, paper, 1, 0, ensemble=1)
    with pytest.raises(ReproduceError, match="pool=qmean, not max"):
        runner.check_manifest(tmp_path, other, 1, 0, ensemble=1)
    assert "Pooling: max" in markdown(other, [], 1, 0, ["cpu"]) and "Pooling" not in markdown(paper, [], 1, 0, ["cpu"])


def test_ensemble_size_is_part_of_the_reproduction_it_resumes(tmp_path):
    """Members match their one-at-a-time runs only within a tolerance: one table does not mix the two."""
    paper = get_experiment("table14")
    runner.check_manifest(tmp_path, paper, 1, 0, ensemble=8)
    with pytest.raises(ReproduceError, match="ensemble=8, not 1; pass --ensemble 8 or choose another --out"):
        runner.check_manifest(tmp_path, paper, 1, 0, ensemble=1)
    # a manifest written before the CPU default became 8 was trained one run at a time
    (tmp_path / "reproduce.json").write_text(json.dumps({"experiment": "table14", "epochs": 1, "seed": 0}))
    runner.check_manifest(tmp_path, paper, 1, 0, ensemble=1)
    with pytest.raises(ReproduceError, match="ensemble=1, not 8"):
        runner.check_manifest(tmp_path, paper, 1, 0, ensemble=8)


def test_pool_max_is_refused_for_a_table_without_lenet5(tmp_path):
    out = tmp_path / "out"
    assert_user_error(run_cli("reproduce", "table13", "--pool", "max", "--out", out), "LeNet-5 tables only", code=1)
    assert not out.exists()
