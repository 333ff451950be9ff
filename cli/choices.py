"""The commands' Enums for fixed choices, built from ``bnn_train.choices`` (importable without torch)."""

from __future__ import annotations

from enum import Enum

from bnn_train import choices


def _enum(name: str, values: tuple[str, ...]) -> type[Enum]:
    return Enum(name, [(v, v) for v in values], type=str)


Model = _enum("Model", choices.MODELS)
Dataset = _enum("Dataset", choices.DATASETS)
Weights = _enum("Weights", choices.WEIGHTS)
Pool = _enum("Pool", choices.POOLS)
Init = _enum("Init", choices.INITS)
Optimizer = _enum("Optimizer", choices.OPTIMIZERS)
Schedule = _enum("Schedule", choices.SCHEDULES)
Device = _enum("Device", choices.DEVICES)
