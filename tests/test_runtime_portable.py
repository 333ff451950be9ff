"""The runtime's exactness on any CPU, without PyTorch or onnxruntime: golden x86 scores and random layouts.

``tests/golden/`` holds small .bnn models (exported LeNet-5s, an MLP on pixels, sign networks, a
single unit, layouts straight from the format) with inputs and the integer scores the x86
reference and runtime gave them (scripts/make_golden.py). Here every machine must give the same
scores and labels bit for bit, at 1 and 2 threads, batch 1 and whole. scripts/check_aarch64.sh
runs this file on aarch64 under emulation; README "Edge targets" says what ran where.
"""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnn_runtime import compiled
from bnn_runtime.format import read_bnn
from bnn_runtime.model import BnnModel, max_threads
from bnn_runtime.reference import predict_from_scores, reference_scores

from .random_bnn import random_bnn

GOLDEN = Path(__file__).parent / "golden"
NAMES = sorted(p.stem for p in GOLDEN.glob("*.bnn"))


def test_there_are_golden_models():
    assert len(NAMES) >= 8 and all((GOLDEN / f"{n}.npz").is_file() for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_golden_scores_are_bit_identical(name, monkeypatch):
    """On the model's own kernels (the driver compiled only for its layer kinds, as a user's process runs it)."""
    monkeypatch.setattr(compiled, "forward", compiled.specialised)
    bnn = read_bnn(GOLDEN / f"{name}.bnn")
    with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as f:
        x, scores, labels = f["x"], f["scores"], f["labels"]
    assert np.array_equal(reference_scores(bnn, x), scores)
    assert np.array_equal(predict_from_scores(bnn, scores), labels)
    for threads in (1, 2):
        model = BnnModel(bnn, threads=min(threads, max_threads()))
        assert np.array_equal(model.scores(x), scores), f"{name}: scores differ at {threads} threads"
        assert np.array_equal(model.predict(x), labels)
        assert np.array_equal(model.logits(x).argmax(axis=1), labels)
        assert np.array_equal(np.concatenate([model.scores(x[i : i + 1]) for i in range(5)]), scores[:5])
    assert model.plan.uses in compiled._drivers


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([1, 3, 33]))
def test_random_layouts_equal_the_reference(seed, n):
    rng = np.random.default_rng(seed)
    bnn, _ = random_bnn(rng)
    x = rng.integers(0, 256, (n, *bnn.input_shape), dtype=np.uint8)
    ref = reference_scores(bnn, x)
    for threads in (1, 2):
        model = BnnModel(bnn, threads=min(threads, max_threads()), tile=4)
        assert np.array_equal(model.scores(x), ref)
        assert np.array_equal(model.predict(x), predict_from_scores(bnn, ref))
