"""Write the golden models of tests/golden/: small .bnn files with inputs and the integer scores x86 gives them.

    .venv/bin/python scripts/make_golden.py        # rewrites tests/golden/*.bnn and *.npz

Exported (folded by bnn_export from random PyTorch networks: LeNet-5 on 8×8 and 28×28, an MLP on
pixels, sign activations, a single unit) and straight from the format (tests/random_bnn.py:
pm1 convolutions, odd pools, padding). Each ``NAME.npz`` holds ``x`` (uint8 inputs), ``scores``
(int32) and ``labels`` (int64) computed here by the NumPy reference and checked against the
runtime. tests/test_runtime_portable.py compares every other machine with them bit for bit
(scripts/check_aarch64.sh runs it on aarch64). Run this only when the format changes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnn_runtime.format import parse, to_bytes  # noqa: E402
from bnn_runtime.model import BnnModel  # noqa: E402
from bnn_runtime.reference import predict_from_scores, reference_scores  # noqa: E402
from tests.random_bnn import random_bnn  # noqa: E402
from tests.random_models import random_config, random_inputs, random_model, to_bnn  # noqa: E402

OUT = ROOT / "tests" / "golden"
N_INPUTS = 40


def exported() -> dict[str, bytes]:
    rng = np.random.default_rng(2024)
    configs = {
        "lenet5_digits": random_config(rng, "lenet5", "heaviside", True, width=0.5, in_shape=(1, 8, 8), num_classes=10),
        "lenet5_mnist": random_config(
            rng, "lenet5", "heaviside", True, width=1.0, in_shape=(1, 28, 28), num_classes=10
        ),
        "mlp_sign_pixels": random_config(rng, "mlp", "sign", True, hidden=(130, 65), in_shape=(784,), num_classes=10),
        "lenet5_rgb_sign": random_config(rng, "lenet5", "sign", True, width=0.5, in_shape=(3, 16, 16), num_classes=4),
        "suc": random_config(rng, "suc", "heaviside", True, in_shape=(37,)),
    }
    return {name: to_bnn(random_model(cfg, seed), cfg)[1] for seed, (name, cfg) in enumerate(configs.items())}


def from_format() -> dict[str, bytes]:
    out, rng = {}, np.random.default_rng(7)
    while len(out) < 4:
        bnn, data = random_bnn(rng)
        encodings = {layer["in_encoding"] for layer in bnn.layers}
        kinds = "".join(layer["kind"][0] for layer in bnn.layers)
        name = f"random_{kinds}_{'_'.join(sorted(encodings))}"
        if name not in out:
            out[name] = data
    return out


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for old in [*OUT.glob("*.bnn"), *OUT.glob("*.npz")]:
        old.unlink()
    rng = np.random.default_rng(11)
    for name, data in {**exported(), **from_format()}.items():
        bnn = parse(data)
        x = random_inputs(rng, bnn.input_shape, N_INPUTS)
        scores = reference_scores(bnn, x)
        labels = predict_from_scores(bnn, scores)
        for threads in (1, 2):
            model = BnnModel(bnn, threads=threads)
            assert np.array_equal(model.scores(x), scores) and np.array_equal(model.predict(x), labels), name
        (OUT / f"{name}.bnn").write_bytes(
            to_bytes({k: v for k, v in bnn.manifest.items() if k != "arrays"}, dict(bnn.arrays))
        )
        np.savez_compressed(OUT / f"{name}.npz", x=x, scores=scores, labels=labels)
        print(f"{name}: input {list(bnn.input_shape)}, {len(bnn.layers)} layers, classes {len(bnn.classes)}")


if __name__ == "__main__":
    main()
