"""A checkpoint's contents validated field by field before anything is built from them.

``torch.load(weights_only=True)`` already refuses code; this refuses data of the wrong shape: a
configuration field of the wrong type or out of range, an unknown name, a history or dataset
record that disagrees with itself. Every failure is one ``CheckpointError`` naming the file and
the field (``run/checkpoint.pt: config.model.width must be a number, got 'wide'``).
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

from .activations import ActParams
from .choices import DATASETS
from .config import MAX_EPOCHS, ModelConfig, RunConfig, TrainConfig
from .errors import CheckpointError, ConfigError

MAX_DIM = 2**16  # one entry of in_shape
MAX_CLASSES = 2**16


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


_CHECKS = {
    "int": ("an integer", _is_int),
    "float": ("a finite number", _is_number),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "tuple[int, ...]": ("a list of integers", lambda v: isinstance(v, (list, tuple)) and all(_is_int(x) for x in v)),
}


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_fields(cls, d, where: str, fail) -> None:
    if not isinstance(d, dict):
        fail(f"{where} must be an object, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    for key in d:
        if key not in known:
            fail(f"{where} has an unknown field {_short(key)}")
    for name, f in known.items():
        if name not in d:
            continue
        value, kind = d[name], str(f.type)
        if kind == "ActParams":
            _check_fields(ActParams, value, f"{where}.{name}", fail)
            continue
        optional = kind.endswith(" | None")
        if optional and value is None:
            continue
        what, ok = _CHECKS[kind.removesuffix(" | None")]
        if not ok(value):
            fail(f"{where}.{name} must be {what}{' or null' if optional else ''}, got {_short(value)}")


def validate_checkpoint(ckpt: dict, path: str | Path) -> RunConfig:
    """The run configuration of a loaded checkpoint, after checking every field it and its records hold."""

    def fail(msg: str):
        raise CheckpointError(f"{path}: {msg}")

    cfg_dict = ckpt["config"]
    if not isinstance(cfg_dict, dict) or set(cfg_dict) != {"model", "train"}:
        fail("config must be an object with exactly 'model' and 'train'")
    _check_fields(ModelConfig, cfg_dict["model"], "config.model", fail)
    _check_fields(TrainConfig, cfg_dict["train"], "config.train", fail)
    try:
        cfg = RunConfig.from_dict(cfg_dict)
        cfg.validate()
    except ConfigError as e:
        fail(f"config: {e}")
    m = cfg.model
    if len(m.in_shape) not in (1, 3) or not all(1 <= s <= MAX_DIM for s in m.in_shape):
        fail(f"config.model.in_shape must be [D] or [C, H, W] with sizes 1..{MAX_DIM}, got {list(m.in_shape)}")
    if not 2 <= m.num_classes <= MAX_CLASSES:
        fail(f"config.model.num_classes must be in 2..{MAX_CLASSES}, got {m.num_classes}")
    if not m.input_scale > 0:
        fail(f"config.model.input_scale must be positive, got {m.input_scale}")

    epoch, history, data = ckpt["epoch"], ckpt["history"], ckpt["data"]
    if not _is_int(epoch) or not 0 <= epoch <= MAX_EPOCHS:
        fail(f"epoch must be an integer in 0..{MAX_EPOCHS}, got {_short(epoch)}")
    if not isinstance(history, list) or len(history) != epoch:
        fail(f"history must list one record per epoch ({epoch}), got {_short(history)}")
    for i, r in enumerate(history):
        if not isinstance(r, dict) or r.get("epoch") != i + 1:
            fail(f"history[{i}] must be the record of epoch {i + 1}")
        held = "val_accuracy" if "val_accuracy" in r else "test_accuracy"  # a run with --val-split measures val
        for key in ("train_accuracy", held):
            if not (_is_number(r.get(key)) and 0 <= r[key] <= 1):
                fail(f"history[{i}].{key} must be a number in [0, 1], got {_short(r.get(key))}")
    if not isinstance(data, dict):
        fail(f"data must be an object, got {type(data).__name__}")
    own = isinstance(data.get("name"), str) and data["name"].startswith(("folder:", "npz:"))  # bnn_train/sources.py
    if data.get("name") not in DATASETS and not own:
        fail(f"data.name must be one of {', '.join(DATASETS)}, folder:PATH or npz:PATH, got {_short(data.get('name'))}")
    classes = data.get("classes")
    if not isinstance(classes, list) or len(classes) != m.num_classes or not all(isinstance(c, str) for c in classes):
        fail(f"data.classes must be {m.num_classes} strings (config.model.num_classes)")
    for key in ("model", "optimizer", "scheduler"):
        if not isinstance(ckpt.get(key), dict) and not (key != "model" and ckpt.get(key) is None):
            fail(f"{key} must be a state dict, got {type(ckpt.get(key)).__name__}")
    return cfg
