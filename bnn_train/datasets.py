"""What each dataset is, known without loading it (and without torch): input shape, classes, pixel range.

The loaders in ``data.py`` build their tensors from these facts and check what they read against
them; the configuration asks them for a model's input shape, class count and input scale before
any data is loaded; the CLI builds its ``--dataset`` choices from ``DATASETS``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetFacts:
    name: str
    image_shape: tuple[int, ...] | None  # (C, H, W); None: a vector of ``dim`` values (the ``ones`` task)
    num_classes: int
    max_value: int  # largest raw input value; the model's InputScale divides by it
    from_files: bool  # read from files (--data-dir, or downloaded into the cache); else generated or bundled

    def in_shape(self, dim: int) -> tuple[int, ...]:
        """The model's input shape; ``dim`` is the ``ones`` task's vector length."""
        return (dim,) if self.image_shape is None else self.image_shape

    @property
    def input_scale(self) -> float:
        return 1.0 / self.max_value


DATASETS: dict[str, DatasetFacts] = {
    f.name: f
    for f in (
        DatasetFacts(name="ones", image_shape=None, num_classes=2, max_value=1, from_files=False),
        DatasetFacts(name="digits", image_shape=(1, 8, 8), num_classes=10, max_value=16, from_files=False),
        DatasetFacts(name="mnist", image_shape=(1, 28, 28), num_classes=10, max_value=255, from_files=True),
        DatasetFacts(name="fashion-mnist", image_shape=(1, 28, 28), num_classes=10, max_value=255, from_files=True),
        # CIFAR-10's batches (bnn_train/sources.py): --data-dir, or downloaded into the cache
        DatasetFacts(name="cifar10", image_shape=(3, 32, 32), num_classes=10, max_value=255, from_files=True),
    )
}
