"""``bnn train`` under ``torchrun --nproc-per-node 2`` (DDP, gloo on the CPU): it trains, writes one run directory."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bnn_train import rundir


def test_two_processes_train_one_run_dir(tmp_path):
    out = tmp_path / "run"
    bnn = shutil.which("bnn", path=str(Path(sys.executable).parent))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        bnn,
        "train",
        "--model",
        "mlp",
        "--hidden",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "128",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(out),
        "-q",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [rundir.CHECKPOINT, rundir.CONFIG, rundir.METRICS_LINES, rundir.METRICS, rundir.CURVES]
    )
    assert json.loads((out / rundir.CONFIG).read_text())["processes"] == 2
    final = json.loads((out / rundir.METRICS).read_text())
    assert final["epochs"] == 2 and final["test_accuracy"] > 0.5  # it learns
    assert r.stdout.count("test accuracy") == 2  # each process finished; only rank 0 wrote the run directory
