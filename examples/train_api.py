"""The Python training API end to end: configure, fit (with a callback), resume further, export the best checkpoint.

Runs offline in about a minute on two CPU cores (scikit-learn's bundled 8x8 Digits):

    python examples/train_api.py [RUN_DIR]
"""

import sys
import tempfile
from pathlib import Path

import bnn_runtime
from bnn_export.api import export_run
from bnn_train.config import ModelConfig, RunConfig, TrainConfig
from bnn_train.train import Callback, fit, resume


class Log(Callback):
    """Every method of a Callback is optional; on_notice defaults to one line on stderr."""

    def on_epoch(self, record):
        print(f"epoch {record['epoch']}: validation accuracy {record['val_accuracy']:.3f} at lr {record['lr']:.4f}")


def main(run_dir: Path) -> None:
    cfg = RunConfig(
        model=ModelConfig(model="lenet5", act="heaviside/rect", weights="binary", batchnorm=True),
        train=TrainConfig(
            dataset="digits",
            epochs=3,
            batch_size=64,
            lr=0.01,
            optimizer="adam",
            schedule="cosine",
            val_split=0.2,
            seed=0,
            device="cpu",
        ),
    )
    final = fit(cfg, run_dir, callback=Log(), plot=False)
    print(
        f"after {final['epochs']} epochs: test {final['test_accuracy']:.3f}; best.pt (epoch {final['best_epoch']}) "
        f"test {final['best_test_accuracy']:.3f}"
    )
    # a finished run continues to a new total; the cosine schedule is re-planned over it (a notice says so)
    final = resume(run_dir, epochs=5, progress=True, plot=False)
    print(f"after {final['epochs']} epochs: test {final['test_accuracy']:.3f}")
    report = export_run(run_dir, run_dir / "model.bnn", onnx_path=None, checkpoint="best")
    print(f"exported {report.bnn_path}: checks {'passed' if all(c.passed for c in report.checks) else 'FAILED'}")
    model = bnn_runtime.load(run_dir / "model.bnn")
    print("runtime accuracy on the test images:", model.manifest["provenance"]["test_accuracy"])


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bnn-api-")) / "run")
