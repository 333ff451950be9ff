"""Where the time goes: per-layer timing of a BnnModel, by timing ever longer prefixes of its network.

A prefix of k layers is the plan with only its first k rows (the k-th writes bits, not scores);
the time of layer k is time(prefix k) - time(prefix k - 1). The prefixes are timed round-robin,
in one thread, and each keeps its best time: on a machine shared with other work the fastest
of several runs is the one the others disturbed least. So each run is kept short: it takes as
many of the batch's images as the whole network runs in about ``RUN_SECONDS`` (at least one),
short enough to fall between two preemptions more often than not. Used by ``bnn bench``; not
needed for inference.
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


RUN_SECONDS = 2e-3  # about how long one timed run of the whole network is


def layer_times(model, x, repeats: int = 15) -> list[dict]:
    """[{layer, kind, seconds_per_image, word_ops_per_image, images}] for the first ``images`` of x, one thread."""
    x = prepare_input(x, model.input_shape)
    layers = model.file.layers
    plans = [_prefix(model.plan, k) for k in range(1, len(layers))] + [model.plan]
    forward = compiled.forward(model.plan.uses)

    def timed(p, flat):
        tile = min(model.tile, len(flat))
        scores = np.empty((len(flat), model.plan.n_scores), np.int32)
        labels = np.empty(len(flat), np.int64)
        state = np.zeros(1 + -(-len(flat) // tile), np.int64)
        scratch = p.scratch(tile, 1)
        t = time.perf_counter()
        forward(flat, tile, p.sizes, *p.kernel_args, scores, labels, state, scratch[0], False)
        return time.perf_counter() - t

    flat = x.reshape(len(x), -1)
    timed(model.plan, flat)  # warm up
    whole = min(timed(model.plan, flat) for _ in range(2))
    n = max(1, min(len(x), int(len(x) * RUN_SECONDS / max(whole, 1e-9))))
    flat = flat[:n]
    rounds = repeats * min(4, len(x) // n)  # shorter runs: more of them
    best = [np.inf] * len(plans)
    for _ in range(rounds + 1):  # the first round warms up
        for k, p in enumerate(plans):
            best[k] = min(best[k], timed(p, flat))
    out, before = [], 0.0
    for k, layer in enumerate(layers):
        vnni = " (VNNI)" if model.plan.params[k, COL_KIND] == KIND_DENSE_VNNI else ""
        out.append(
            {
                "layer": layer["name"],
                "kind": f"{layer['kind']} {layer['in_encoding']}{vnni}",
                "seconds_per_image": max(best[k] - before, 0.0) / n,
                "word_ops_per_image": model.plan.word_ops[k],
                "images": n,
            }
        )
        before = best[k]
    return out
