"""The run directory: config, checkpoint and metrics files, each written atomically (temp file + rename).

::

    RUN_DIR/config.json     the RunConfig and dataset facts, human-readable
    RUN_DIR/checkpoint.pt   the last epoch: model, optimiser, scheduler, epoch, config, history
                            (plain tensors and containers: loads with weights_only=True)
    RUN_DIR/best.pt         with a validation split: the epoch of highest validation accuracy (same format)
    RUN_DIR/metrics.jsonl   one JSON line per completed epoch
    RUN_DIR/metrics.json    final numbers, test_accuracy among them
    RUN_DIR/curves.png      training curves
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import torch

from bnn_runtime.fileio import atomic_write_bytes

from .config import RunConfig
from .errors import CheckpointError

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
CHECKPOINTS = {"last": CHECKPOINT, "best": BEST}  # what --checkpoint names
CONFIG = "config.json"
METRICS_LINES = "metrics.jsonl"
METRICS = "metrics.json"
CURVES = "curves.png"
OWNED = (CHECKPOINT, BEST, CONFIG, METRICS_LINES, METRICS, CURVES)  # the files this module writes
FORMAT = "bnn-train-checkpoint"
VERSION = 1


def _clean(value):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dumps(obj, indent: int | None = 2) -> str:
    return json.dumps(_clean(obj), indent=indent, allow_nan=False)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (dumps(obj) + "\n").encode())


def write_metrics_lines(run_dir: Path, history: list[dict]) -> None:
    text = "".join(dumps(r, indent=None) + "\n" for r in history)
    atomic_write_bytes(Path(run_dir) / METRICS_LINES, text.encode())


def read_metrics_lines(run_dir: Path) -> list[dict]:
    """The per-epoch records of a run directory (empty if it has none yet)."""
    path = Path(run_dir) / METRICS_LINES
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_checkpoint(run_dir: Path, state: dict, name: str = CHECKPOINT) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buf)
    atomic_write_bytes(Path(run_dir) / name, buf.getvalue())


def select_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """What ``load_checkpoint`` / ``load_run`` should read for checkpoint ``which`` ("best" or "last").

    "best" is ``RUN_DIR/best.pt`` where the run kept one (it was trained with a validation split),
    the last checkpoint otherwise: without validation data there is nothing to pick by.
    """
    if which not in CHECKPOINTS:
        raise CheckpointError(f"unknown checkpoint {which!r}; choose one of: {', '.join(CHECKPOINTS)}")
    p = Path(run_dir)
    return p / BEST if which == "best" and (p / BEST).is_file() else p


def checkpoint_path(run_dir: str | Path) -> Path:
    p = Path(run_dir)
    return p / CHECKPOINT if p.is_dir() else p


def load_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and validate a checkpoint (a run directory or the .pt file itself)."""
    path = checkpoint_path(run_dir)
    if not Path(run_dir).exists():
        raise CheckpointError(f"{run_dir} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a bnn run directory: it has no {CHECKPOINT}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle/zip errors come in many types
        raise CheckpointError(f"cannot read {path}: corrupt or not a torch checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a bnn training checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')}; this bnn reads version {VERSION}")
    for key in ("config", "model", "epoch", "history", "data"):
        if key not in ckpt:
            raise CheckpointError(f"{path} is incomplete: it has no {key!r}")
    from .runcheck import validate_checkpoint

    validate_checkpoint(ckpt, path)
    return ckpt


def progress(ckpt: dict) -> tuple[int, int, bool]:
    """(epochs trained, epochs planned, finished): a run is finished when it has trained its planned
    epochs, or stopped early because it diverged."""
    trained, planned = int(ckpt["epoch"]), int(ckpt["config"]["train"]["epochs"])
    diverged = any(r.get("diverged") for r in ckpt["history"])
    return trained, planned, trained >= planned or diverged


def stale_temp_files(run_dir: Path) -> list[Path]:
    """Temporary files of this directory's own writes (``.NAME.XXXX.tmp``) that a killed write left behind."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for name in OWNED for p in run_dir.glob(f".{name}.*.tmp") if p.is_file())


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete them (only this directory's own names, never anything else); returns what was removed."""
    found = stale_temp_files(run_dir)
    for p in found:
        p.unlink(missing_ok=True)
    return found


def reconcile_metrics_lines(run_dir: Path, history: list[dict]) -> bool:
    """Rewrite metrics.jsonl from the checkpoint's history when the file disagrees with it (a kill
    between the checkpoint and the metrics write leaves it an epoch short); True if it was rewritten."""
    want = [json.loads(dumps(r, indent=None)) for r in history]
    try:
        have = read_metrics_lines(run_dir)
    except (ValueError, OSError):  # a torn or unreadable file: rewrite it
        have = None
    if have == want:
        return False
    write_metrics_lines(run_dir, history)
    return True


def load_run(run_dir: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the trained model from a run directory alone: returns (model in eval mode, RunConfig, checkpoint)."""
    from .models import build_model

    ckpt = load_checkpoint(run_dir, map_location)
    cfg = RunConfig.from_dict(ckpt["config"])
    try:
        model = build_model(cfg.model)
    except (ValueError, TypeError, RuntimeError) as e:  # e.g. a configuration torch cannot build
        raise CheckpointError(f"{checkpoint_path(run_dir)}: its model configuration cannot be built ({e})") from None
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"{checkpoint_path(run_dir)} does not match its own model configuration ({first})"
        ) from None
    model.to(map_location).eval()
    return model, cfg, ckpt
