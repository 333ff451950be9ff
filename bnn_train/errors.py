"""User-facing errors of the training stage: each carries one readable line for the CLI."""


class TrainError(Exception):
    """Base class: the CLI prints ``str(err)`` on stderr and exits 1, without a traceback."""


class ConfigError(TrainError, ValueError):
    """An invalid option: unknown name, number out of range, inconsistent combination."""


class DatasetError(TrainError):
    """A dataset that cannot be found, downloaded or parsed."""


class CheckpointError(TrainError):
    """A run directory or checkpoint that is missing, foreign or corrupt."""
