"""Your own binary network in Python: build an ``nn.Sequential`` from bnn_train's layers, train it with
the library, export it to .bnn + ONNX with the checks of ``bnn export``, and run the .bnn file.

    python examples/own_network.py [--epochs 10] [--out own_network]

Runs offline on scikit-learn's 8x8 digits (about a minute on one core). The network uses a stride-2
convolution and an overlapping max pool; the Numba runtime (``bnn_runtime.load``) runs the .bnn file.
Rules of a network that exports:

* it starts with ``InputScale(1 / max_value)`` and takes raw uint8 values;
* every hidden layer is BinaryConv2d / BinaryLinear -> BatchNorm -> [MaxPool2d] -> Activation with a
  bit-valued forward (heaviside or sign); a max pool may also follow the activation;
* the classifier is a BinaryLinear (+ BatchNorm) without activation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import bnn_runtime
from bnn_export.api import export_model
from bnn_export.check import check_exportable
from bnn_train.activations import Activation
from bnn_train.config import TrainConfig
from bnn_train.data import load_dataset
from bnn_train.layers import BinaryConv2d, BinaryLinear, InputScale, clip_latent_weights
from bnn_train.train import recompute_batchnorm


def build(max_value: int, channels: int, classes: int) -> nn.Sequential:
    return nn.Sequential(
        InputScale(1.0 / max_value),
        BinaryConv2d(channels, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        Activation("heaviside/rect"),  # 8x8
        BinaryConv2d(32, 64, 3, stride=2, padding=1),
        nn.BatchNorm2d(64),  # 4x4
        nn.MaxPool2d(3, stride=1),
        Activation("heaviside/rect"),  # overlapping pool: 2x2
        nn.Flatten(),
        BinaryLinear(64 * 2 * 2, 128),
        nn.BatchNorm1d(128),
        Activation("heaviside/rect"),
        BinaryLinear(128, classes),
        nn.BatchNorm1d(classes),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("own_network"))
    args = ap.parse_args()
    torch.manual_seed(0)
    data = load_dataset(TrainConfig(dataset="digits"))
    model = build(data.max_value, data.in_shape[0], data.num_classes)
    check_exportable(model, data.in_shape)  # before training: fold the untrained network once

    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    for epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(data.y_train)).split(64):
            loss = F.cross_entropy(model(data.x_train[idx].float()), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            clip_latent_weights(model)  # BinaryConnect: latent weights stay in [-1, 1]
        sched.step()
        recompute_batchnorm(model, data.x_train, 1000)  # exact BatchNorm statistics for eval and export
        model.eval()
        with torch.no_grad():
            acc = (model(data.x_test.float()).argmax(1) == data.y_test).float().mean()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {acc:.4f}")

    args.out.mkdir(parents=True, exist_ok=True)
    report = export_model(
        model,
        data.in_shape,
        data.classes,
        data.x_test.numpy(),
        data.y_test.numpy(),
        bnn_path=args.out / "model.bnn",
        onnx_path=args.out / "model.onnx",
        provenance={"dataset": data.name, "example": "examples/own_network.py"},
    )
    for check in report.checks:
        print(f"{check.name}: {'ok' if check.passed else 'FAILED'} ({check.detail})")
    runtime = bnn_runtime.load(args.out / "model.bnn")
    acc = (runtime.predict(data.x_test.numpy()) == data.y_test.numpy()).mean()
    print(f"wrote {report.bnn_path} ({report.bnn_bytes:,} bytes) and {report.onnx_path}; .bnn test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
