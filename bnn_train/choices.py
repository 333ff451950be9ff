"""The fixed option choices of a run, importable without torch (the settings and the CLI's Enums use them)."""

from .datasets import DATASETS as _DATASETS

MODELS = ("suc", "mlp", "lenet5", "arch")  # arch: the network of --arch (bnn_train/arch.py)
DATASETS = tuple(_DATASETS)
WEIGHTS = ("float", "binary")
POOLS = ("auto", "max", "qmean")
INITS = ("default", "xavier", "he", "orthogonal", "diag_noise")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("none", "cosine")
LOSS_REDUCTIONS = ("mean", "sum")
DEVICES = ("auto", "cpu", "cuda")
