"""``logits`` (the per-class affine of the integer scores) and ``probabilities`` (their softmax) of the runtime
and the reference: argmax == ``predict`` exactly, the runtime's logits are the reference's, bit for bit.

No PyTorch here: these run on an edge install too (scripts/check_aarch64.sh).
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bnn_runtime.model import BnnModel
from bnn_runtime.reference import (
    logits_from_scores,
    predict_from_scores,
    reference_logits,
    reference_probabilities,
    reference_scores,
    softmax,
)

from .random_bnn import random_bnn


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([1, 7, 40]))
def test_argmax_of_the_logits_is_the_prediction(seed, n):
    rng = np.random.default_rng(seed)
    bnn, _ = random_bnn(rng)
    x = rng.integers(0, 256, (n, *bnn.input_shape), dtype=np.uint8)
    model = BnnModel(bnn, threads=1)
    logits, probs = model.logits(x), model.probabilities(x)
    assert logits.dtype == np.float64 and logits.shape == (n, len(bnn.classes))
    assert np.array_equal(logits, reference_logits(bnn, x))
    assert np.array_equal(logits.argmax(axis=1), model.predict(x))
    assert np.array_equal(logits.argmax(axis=1), predict_from_scores(bnn, reference_scores(bnn, x)))
    last = bnn.layers[-1]
    expected = model.scores(x).astype(np.float64) * bnn.array(last, "scale") + bnn.array(last, "offset")
    assert np.array_equal(logits, expected)
    assert np.array_equal(probs, reference_probabilities(bnn, x))
    assert np.allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12) and (probs >= 0).all()
    assert np.array_equal(probs.argmax(axis=1), logits.argmax(axis=1))


def test_softmax_does_not_overflow():
    p = softmax(np.array([[1e6, 0.0, -1e6], [5.0, 5.0, 5.0]]))
    assert np.allclose(p, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=0, atol=1e-15)


def test_logits_of_integer_scores_are_the_affine():
    rng = np.random.default_rng(3)
    bnn, _ = random_bnn(rng)
    s = rng.integers(-1000, 1000, (5, len(bnn.classes))).astype(np.int32)
    last = bnn.layers[-1]
    assert np.array_equal(logits_from_scores(bnn, s), s * bnn.array(last, "scale") + bnn.array(last, "offset"))
