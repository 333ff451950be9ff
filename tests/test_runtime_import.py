"""The runtime is what ships: importing and running it (and the example app) loads no torch, onnx or onnxruntime."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from bnn_runtime.reference import predict_from_scores, reference_probabilities, reference_scores

from .random_models import random_config, random_inputs, random_model, to_bnn

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "torchvision", "onnx", "onnxruntime", "bnn_train", "bnn_export", "sklearn", "PIL")
LOADED = f"sorted(k for k in {FORBIDDEN!r} if k in sys.modules)"  # an expression for the child process


def _run(*args: str) -> subprocess.CompletedProcess:
    """python ARGS in a fresh process, with this checkout on PYTHONPATH and a minimal PATH."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _model(tmp_path):
    rng = np.random.default_rng(0)
    cfg = random_config(rng, "lenet5", "sign", True, width=0.5, in_shape=(1, 12, 12), num_classes=3)
    bnn, data = to_bnn(random_model(cfg, 0), cfg, classes=["zero", "one", "two"])
    path = tmp_path / "m.bnn"
    path.write_bytes(data)
    x = random_inputs(rng, (1, 12, 12), 20)[:, 0]  # (N, H, W)
    np.save(tmp_path / "batch.npy", x)
    return path, bnn, x


def test_runtime_imports_and_runs_without_torch_or_onnx(tmp_path):
    path, bnn, x = _model(tmp_path)
    code = (
        "import sys, json, numpy as np, bnn_runtime\n"
        "m = bnn_runtime.load(sys.argv[1], threads=2)\n"
        "x = np.load(sys.argv[2])\n"
        "print(json.dumps({'labels': m.predict(x).tolist(), 'big': m.scores(np.concatenate([x] * 8)).tolist(),\n"
        f"                  'loaded': {LOADED}}}))\n"
    )
    proc = _run("-c", code, str(path), str(tmp_path / "batch.npy"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["loaded"] == []
    ref = reference_scores(bnn, x)
    assert out["labels"] == predict_from_scores(bnn, ref).tolist()
    assert out["big"] == np.concatenate([ref] * 8).tolist()  # the parallel path, too


def test_edge_app_classifies_without_torch_or_onnx(tmp_path):
    path, bnn, x = _model(tmp_path)
    code = (
        "import runpy, sys\n"
        "sys.argv = ['edge_app.py'] + sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_path('examples/edge_app.py', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        f"print('LOADED', {LOADED}, 'EXIT', code)\n"
    )
    proc = _run("-c", code, str(path), str(tmp_path / "batch.npy"))
    assert proc.returncode == 0, proc.stderr
    *lines, last = proc.stdout.strip().splitlines()
    assert last == "LOADED [] EXIT 0"
    names = ["zero", "one", "two"]
    probs = reference_probabilities(bnn, x)
    labels = predict_from_scores(bnn, reference_scores(bnn, x))
    assert lines == [f"{i}\t{names[k]}\t{probs[i, k]:.3f}" for i, k in enumerate(labels)]


def test_edge_app_reports_bad_input_in_one_line(tmp_path):
    path, _, x = _model(tmp_path)
    np.save(tmp_path / "wrong.npy", x[:, :5])
    for args in ([str(path), str(tmp_path / "wrong.npy")], [str(tmp_path / "batch.npy"), str(tmp_path / "wrong.npy")]):
        proc = _run("examples/edge_app.py", *args)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def test_bnn_infer_runs_on_an_edge_install(tmp_path):
    """`bnn infer --npy` needs only the base install: torch, onnx and scikit-learn are made unimportable."""
    path, bnn, x = _model(tmp_path)
    code = (
        "import sys\n"
        "for m in ('torch', 'torchvision', 'onnx', 'onnxruntime', 'sklearn', 'matplotlib'):\n"
        "    sys.modules[m] = None\n"
        "from bnn_cli.main import app\n"
        "sys.argv = ['bnn', 'infer', *sys.argv[1:]]\n"
        "app()\n"
    )
    proc = _run("-c", code, str(path), "--npy", str(tmp_path / "batch.npy"), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    got = [p["index"] for p in json.loads(proc.stdout)["predictions"]]
    assert got == predict_from_scores(bnn, reference_scores(bnn, x)).tolist()
    proc = _run("-c", code, str(path))  # a test-set evaluation needs the training extras: one line, not a traceback
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "untied-bnn[train]" in proc.stderr
