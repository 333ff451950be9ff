"""Where the time goes: per-layer timing of a BnnModel, by timing ever longer prefixes of its network.

A prefix of k layers is the plan with only its first k rows (the k-th writes bits, not scores);
the time of layer k is time(prefix k) - time(prefix k - 1). The prefixes are timed round-robin,
in one thread, and each keeps its best time: on a machine shared with other work the fastest
of several runs is the one the others disturbed least. Used by ``bnn bench``; not needed for
inference.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from . import compiled
from .inputs import prepare_input
from .layout import COL_KIND, COL_LAST, KIND_DENSE_VNNI


def _prefix(plan, k: int):
    params = plan.params[:k].copy()
    params[-1, COL_LAST] = 0  # a prefix ends in bits
    return replace(plan, params=params)


def layer_times(model, x, repeats: int = 15) -> list[dict]:
    """[{layer, kind, seconds_per_image, word_ops_per_image}] for a batch x, one thread."""
    x = prepare_input(x, model.input_shape)
    flat = x.reshape(len(x), -1)
    tile = min(model.tile, len(x))
    scores = np.empty((len(x), model.plan.n_scores), np.int32)
    labels = np.empty(len(x), np.int64)
    layers = model.file.layers
    plans = [_prefix(model.plan, k) for k in range(1, len(layers))] + [model.plan]
    best = [np.inf] * len(plans)
    forward = compiled.forward(model.plan.uses)
    state = np.zeros(1 + -(-len(x) // tile), np.int64)
    for _ in range(repeats + 1):  # the first round warms up
        for k, p in enumerate(plans):
            state[:] = 0
            t = time.perf_counter()
            forward(flat, tile, p.sizes, *p.kernel_args, scores, labels, state, False)
            best[k] = min(best[k], time.perf_counter() - t)
    out, before = [], 0.0
    for k, layer in enumerate(layers):
        vnni = " (VNNI)" if model.plan.params[k, COL_KIND] == KIND_DENSE_VNNI else ""
        out.append(
            {
                "layer": layer["name"],
                "kind": f"{layer['kind']} {layer['in_encoding']}{vnni}",
                "seconds_per_image": max(best[k] - before, 0.0) / len(x),
                "word_ops_per_image": model.plan.word_ops[k],
            }
        )
        before = best[k]
    return out
