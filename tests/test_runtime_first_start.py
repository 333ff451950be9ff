"""The first start does not wait for the compile: batches that come while the kernels compile in the background
are answered by the NumPy reference, exactly, and the kernels take over as soon as they are there
(compiled.forward_now, model.BnnModel.run). The other tests wait for the kernels (BNN_WAIT_FOR_KERNELS=1, set
in conftest.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bnn_runtime import compiled, load, model, reference_scores
from bnn_runtime.layout import USES_ALL

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "lenet5_mnist"


def test_a_batch_switches_from_the_reference_to_the_kernels_when_they_are_ready(monkeypatch):
    """The kernels become ready after two chunks of a 100-image batch: the first 64 images come from the
    reference, the other 36 from the kernels, and every score and label is the kernels' own."""
    m = load(GOLDEN.with_suffix(".bnn"), threads=1)
    x = np.tile(np.load(GOLDEN.with_suffix(".npz"))["x"], (3, 1, 1, 1))[:100]  # (the golden batch: 40 images)
    expected_scores, expected_labels = m.run(x)
    real, calls, ran = compiled.forward_now, [], []

    def later(uses):
        calls.append(uses)
        return None if len(calls) <= 2 else real(uses)

    def kernels(forward, xs, scores, labels):
        ran.append(len(xs))
        return run_kernels(forward, xs, scores, labels)

    run_kernels = m._run
    monkeypatch.setattr(compiled, "forward_now", later)
    monkeypatch.setattr(m, "_run", kernels)
    scores, labels = m.run(x)
    assert ran == [100 - 2 * model.REFERENCE_CHUNK]
    np.testing.assert_array_equal(scores, expected_scores)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_array_equal(scores, reference_scores(m.file, x))


def test_a_batch_larger_than_the_reference_takes_waits_for_the_kernels(monkeypatch):
    m = load(GOLDEN.with_suffix(".bnn"), threads=1)
    x = np.zeros((model.REFERENCE_MAX + 1, *m.input_shape), np.uint8)
    waited = []
    monkeypatch.setattr(compiled, "forward_now", lambda uses: None)  # (compiling, as far as run can tell)
    monkeypatch.setattr(compiled, "forward", lambda uses: waited.append(uses) or compiled._drivers[USES_ALL])
    monkeypatch.setattr(model, "reference_scores", None)  # (never called: a TypeError if it were)
    scores, _ = m.run(x)
    assert waited == [m.plan.uses]
    np.testing.assert_array_equal(scores[1:], np.broadcast_to(scores[0], scores[1:].shape))


CHILD = """
import json, sys, numpy as np
from bnn_runtime import compiled, load
m = load(sys.argv[1])
gold = np.load(sys.argv[2])
first = m.run(gold["x"][:1])
served_by_reference = compiled.forward_now(m.plan.uses) is None  # (the compile still running)
batch = m.run(gold["x"])
m.compile()
after = m.run(gold["x"])
ok = [bool(np.array_equal(s, gold["scores"][: len(s)])) for s in (first[0], batch[0], after[0])]
print(json.dumps({"exact": ok, "served_by_reference": served_by_reference}))
"""


def test_a_fresh_process_answers_while_it_compiles_and_leaves_the_cache_filled(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "BNN_WAIT_FOR_KERNELS"}
    env.update(PYTHONPATH=str(ROOT), BNN_CACHE_DIR=str(tmp_path))
    args = [sys.executable, "-c", CHILD, str(GOLDEN.with_suffix(".bnn")), str(GOLDEN.with_suffix(".npz"))]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["exact"] == [True, True, True]
    assert result["served_by_reference"]  # (a LeNet-5 compile takes seconds; two reference batches, milliseconds)
    assert list(tmp_path.glob("numba-*/ready-*")) and list(tmp_path.glob("numba-*/native-*.bin"))
    warm = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)  # (the cache it left)
    assert warm.returncode == 0
    assert json.loads(warm.stdout) == {"exact": [True, True, True], "served_by_reference": False}
