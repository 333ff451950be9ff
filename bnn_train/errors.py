"""User-facing errors of the training stage: each carries one readable line for the CLI."""

from bnn_runtime.errors import BnnError


class TrainError(BnnError):
    """Base class: the CLI prints ``str(err)`` on stderr and exits 1, without a traceback."""


class ConfigError(TrainError, ValueError):
    """An invalid option: unknown name, number out of range, inconsistent combination."""


class DatasetError(TrainError):
    """A dataset that cannot be found, downloaded or parsed."""


class CheckpointError(TrainError):
    """A run directory or checkpoint that is missing, foreign or corrupt."""


class ReproduceError(TrainError):
    """A bad ``bnn reproduce`` request: unknown table, bad selection, an --out holding another reproduction."""
