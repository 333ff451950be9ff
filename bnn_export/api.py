"""``export_run``: run directory -> .bnn (+ ONNX), after checking both against PyTorch and each other.

Everything is built in memory and checked first; files are written (atomically) only when the
checks pass, so a failed export leaves nothing behind:

* onnxruntime on the exported graph == the NumPy reference executor, exactly (integer scores,
  logits and labels), on the test images and on random uint8 inputs;
* the reference's predictions agree with the PyTorch model in eval mode on >= 99.9 % of the
  test images (the numerics contract of docs/FORMAT.md).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from bnn_runtime.about import DISTRIBUTION, version
from bnn_runtime.fileio import atomic_write_bytes
from bnn_runtime.format import VERSION, parse, to_bytes
from bnn_runtime.pixels import InputSpec
from bnn_runtime.reference import logits_from_scores, predict_from_scores, reference_scores
from bnn_train import rundir
from bnn_train.data import load_test_arrays
from bnn_train.datasets import DATASETS
from bnn_train.errors import DatasetError
from bnn_train.models import is_single_unit

from .errors import ExportError, NotBinaryError
from .fold import fold
from .onnx_bnn import bnn_to_onnx
from .onnx_float import float_to_onnx

MIN_AGREEMENT = 0.999
RANDOM_INPUTS = 256


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class ExportReport:
    run_dir: str
    binary: bool
    not_binary_reason: str | None = None
    bnn_path: str | None = None
    onnx_path: str | None = None
    bnn_bytes: int | None = None
    onnx_bytes: int | None = None
    state_dict_bytes: int = 0
    checks: list[Check] = field(default_factory=list)
    accuracy: dict = field(default_factory=dict)
    trained_epochs: int = 0
    planned_epochs: int = 0
    finished: bool = True  # trained its planned epochs (or stopped because it diverged)

    @property
    def unfinished_note(self) -> str | None:
        if self.finished:
            return None
        return (
            f"{self.run_dir} is unfinished: it trained {self.trained_epochs} of its {self.planned_epochs} "
            f"planned epochs (continue it with: bnn train --resume --out {self.run_dir})"
        )

    @property
    def compression(self) -> float | None:
        return self.state_dict_bytes / self.bnn_bytes if self.bnn_bytes else None

    def to_dict(self) -> dict:
        return {
            "run_dir": self.run_dir,
            "binary": self.binary,
            "not_binary_reason": self.not_binary_reason,
            "bnn": self.bnn_path,
            "onnx": self.onnx_path,
            "bnn_bytes": self.bnn_bytes,
            "onnx_bytes": self.onnx_bytes,
            "state_dict_bytes": self.state_dict_bytes,
            "compression": self.compression,
            "accuracy": self.accuracy,
            "checks": [c.__dict__ for c in self.checks],
            "trained_epochs": self.trained_epochs,
            "planned_epochs": self.planned_epochs,
            "finished": self.finished,
        }


def onnx_session(model_bytes: bytes, threads: int | None = None):
    """An onnxruntime CPU session; ``threads``: that many intra-op threads, sequential execution
    (how ``bnn bench`` runs every engine), else onnxruntime's defaults."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def _ort_run(session, x: np.ndarray, batch: int = 1000) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    parts = [session.run(None, {"images": x[i : i + batch]}) for i in range(0, len(x), batch)]
    return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(names)}


@torch.no_grad()
def _torch_predict(model, single_unit: bool, x: np.ndarray, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    outs = [model(torch.from_numpy(x[i : i + batch]).float()) for i in range(0, len(x), batch)]
    out = torch.cat(outs)
    if single_unit:
        act = model[-1].forward_fn
        return out.numpy(), (out[:, 0] >= act.decision_threshold).long().numpy()
    return out.numpy(), out.argmax(1).numpy()


def _test_data(cfg, data_dir: str | None, limit: int | None):
    return load_test_arrays(replace(cfg.train, data_dir=data_dir) if data_dir else cfg.train, limit)


def _state_dict_bytes(model) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def _input_fields(shape, max_value: int | None) -> dict:
    """The manifest's input range, layout and colour for values 0..``max_value`` (what the dataset loader knows);
    nothing when it is unknown (the file then reads as version-1 files do: 0..255)."""
    if not isinstance(max_value, int) or isinstance(max_value, bool) or not 0 < max_value <= 255:
        return {}
    return InputSpec.for_data(tuple(shape), max_value).manifest_fields()


def _run_max_value(data_info: dict) -> int | None:
    """The largest input value of a run's dataset: as its checkpoint recorded it, else as the dataset facts say."""
    facts = DATASETS.get(data_info.get("name"))
    return data_info.get("max_value", facts.max_value if facts else None)


def _binary_export(
    report: ExportReport,
    model,
    layers: list,
    arrays: dict,
    in_shape,
    classes: list[str],
    x,
    y,
    torch_pred,
    data_note: str,
    provenance: dict,
    metadata: dict,
    max_value: int | None = None,
) -> tuple[bytes, bytes]:
    """(.bnn bytes, ONNX bytes) of a folded model; appends the checks of ``bnn export`` to the report."""
    manifest = {
        "format": "bnn",
        "version": VERSION,
        "classes": list(classes),
        "layers": layers,
        "input": {"dtype": "uint8", "shape": list(in_shape), **_input_fields(in_shape, max_value)},
        "provenance": provenance,
    }
    if x is not None:  # provenance records the deployed model's own test accuracy
        draft = parse(to_bytes(manifest, arrays))
        ref_scores = reference_scores(draft, x)
        report.accuracy["bnn"] = float((predict_from_scores(draft, ref_scores) == y).mean())
        manifest["provenance"]["test_accuracy"] = report.accuracy["bnn"]
    bnn_bytes = to_bytes(manifest, arrays)
    bnn_model = parse(bnn_bytes)
    if x is not None and bnn_model.layers != draft.layers:  # the draft differs in provenance alone: same scores
        raise ExportError("internal: the written layers differ from the checked draft")
    onnx_model = bnn_to_onnx(
        bnn_model,
        {
            **metadata,
            "test_accuracy": report.accuracy.get("bnn"),
            "format": "bnn graph: scores are the .bnn integer scores",
        },
    )
    onnx_bytes = onnx_model.SerializeToString()
    session = onnx_session(onnx_bytes)
    rng = np.random.default_rng(0)
    x_random = rng.integers(0, 256, size=(RANDOM_INPUTS, *in_shape), dtype=np.uint8)
    for label, xs in (("test images", x), ("random uint8 inputs", x_random)):
        if xs is None:
            continue
        ref = ref_scores if xs is x else reference_scores(bnn_model, xs)
        ort_out = _ort_run(session, xs)
        same = np.array_equal(ort_out["scores"], ref) and np.array_equal(
            ort_out["label"], predict_from_scores(bnn_model, ref)
        )
        if "logits" in ort_out:  # the exact float graph also gives the logits
            same = same and np.array_equal(ort_out["logits"], logits_from_scores(bnn_model, ref))
        report.checks.append(
            Check(
                name=f"onnxruntime == reference ({label})",
                passed=same,
                detail=f"{len(xs)} inputs, {', '.join(ort_out)} {'identical' if same else 'DIFFER'}",
            )
        )
    if x is not None:
        agree = float((predict_from_scores(bnn_model, ref_scores) == torch_pred).mean())
        report.checks.append(
            Check(
                name="agreement with PyTorch",
                passed=agree >= MIN_AGREEMENT,
                detail=f"{agree:.4%} of {data_note} (need >= {MIN_AGREEMENT:.1%})",
            )
        )
    else:
        report.checks.append(Check(name="agreement with PyTorch", passed=True, detail=f"skipped: {data_note}"))
    return bnn_bytes, onnx_bytes


def _write(report: ExportReport, bnn_bytes: bytes | None, onnx_bytes: bytes, bnn_path, onnx_path) -> ExportReport:
    """Write the files (atomically) only when every check passed; ExportError naming the first failure otherwise."""
    failed = [c for c in report.checks if not c.passed]
    if failed:
        raise ExportError(f"check failed, nothing written: {failed[0].name}: {failed[0].detail}")
    if report.binary and bnn_path is not None:
        atomic_write_bytes(bnn_path, bnn_bytes)
        report.bnn_path, report.bnn_bytes = str(bnn_path), len(bnn_bytes)
    elif report.binary:
        report.bnn_bytes = len(bnn_bytes)
    if onnx_path is not None:
        atomic_write_bytes(onnx_path, onnx_bytes)
        report.onnx_path, report.onnx_bytes = str(onnx_path), len(onnx_bytes)
    return report


def export_model(
    model: torch.nn.Sequential,
    in_shape: tuple[int, ...],
    classes: list[str],
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    bnn_path: str | Path | None = None,
    onnx_path: str | Path | None = None,
    provenance: dict | None = None,
    max_value: int | None = None,
) -> ExportReport:
    """Export your own binary ``nn.Sequential`` (bnn_train's layers, raw uint8 values in) with the checks
    of ``bnn export``: onnxruntime == the NumPy reference exactly, >= 99.9 % agreement with PyTorch on
    ``x_test``. Files are written only when every check passes; NotBinaryError / ExportError otherwise.
    ``max_value``: the largest input value of the training data, recorded as the input range 0..max_value."""
    model = model.eval()
    report = ExportReport(run_dir="<model>", binary=True, state_dict_bytes=_state_dict_bytes(model))
    layers, arrays = fold(model, tuple(in_shape))
    torch_pred = None
    if x_test is not None:
        _, torch_pred = _torch_predict(model, False, x_test)
        report.accuracy["pytorch"] = float((torch_pred == y_test).mean())
    note = f"{len(x_test)} test images" if x_test is not None else "no test images given"
    prov = {
        "exporter": f"{DISTRIBUTION} {version()}",
        "test_accuracy_pytorch": report.accuracy.get("pytorch"),
        **(provenance or {}),
    }
    bnn_bytes, onnx_bytes = _binary_export(
        report,
        model,
        layers,
        arrays,
        in_shape,
        classes,
        x_test,
        y_test,
        torch_pred,
        note,
        prov,
        {"classes": list(classes)},
        max_value,
    )
    return _write(report, bnn_bytes, onnx_bytes, bnn_path, onnx_path)


def export_run(
    run_dir: str | Path,
    bnn_path: str | Path | None = None,
    onnx_path: str | Path | None = None,
    data_dir: str | None = None,
    check_images: int | None = None,
    require_bnn: bool = True,
    require_complete: bool = False,
    checkpoint: str = "best",
) -> ExportReport:
    """Export the run in ``run_dir``; ``require_bnn=False`` lets a float model export ONNX alone;
    ``require_complete`` refuses a run that has not trained its planned epochs (the report says so anyway);
    ``checkpoint`` "best" exports ``best.pt`` where the run kept one (it was validated), "last" the last epoch."""
    model, cfg, ckpt = rundir.load_run(rundir.select_checkpoint(run_dir, checkpoint))
    trained, planned, finished = rundir.progress(ckpt)
    report = ExportReport(
        run_dir=str(run_dir),
        binary=True,
        state_dict_bytes=_state_dict_bytes(model),
        trained_epochs=trained,
        planned_epochs=planned,
        finished=finished,
    )
    if require_complete and not finished:
        raise ExportError(f"{report.unfinished_note}; nothing written (--require-complete)")
    try:
        layers, arrays = fold(model, cfg.model.in_shape)
    except NotBinaryError as e:
        if require_bnn:
            raise
        report.binary, report.not_binary_reason = False, str(e)

    try:
        data, x, y = _test_data(cfg, data_dir, check_images)
        data_note = f"{len(y)} {data.name} test images"
    except DatasetError as e:
        data, x, y = None, None, None
        data_note = f"no test images ({e})"
    single_unit = is_single_unit(cfg.model)
    logits, torch_pred = _torch_predict(model, single_unit, x) if x is not None else (None, None)
    if x is not None:
        report.accuracy["pytorch"] = float((torch_pred == y).mean())
    metadata = {
        "classes": ckpt["data"]["classes"],
        "dataset": ckpt["data"]["name"],
        "test_accuracy_pytorch": report.accuracy.get("pytorch"),
        "trained_epochs": int(ckpt["epoch"]),
    }

    if report.binary:
        provenance = {
            "exporter": f"{DISTRIBUTION} {version()}",
            "run": Path(run_dir).name,
            "dataset": ckpt["data"]["name"],
            "trained_epochs": int(ckpt["epoch"]),
            "test_accuracy_pytorch": report.accuracy.get("pytorch"),
            "config": cfg.to_dict(),
        }
        bnn_bytes, onnx_bytes = _binary_export(
            report,
            model,
            layers,
            arrays,
            cfg.model.in_shape,
            ckpt["data"]["classes"],
            x,
            y,
            torch_pred,
            data_note,
            provenance,
            metadata,
            _run_max_value(ckpt["data"]),
        )
    else:
        onnx_model = float_to_onnx(
            model,
            cfg.model.in_shape,
            single_unit=is_single_unit(cfg.model),
            metadata={**metadata, "format": "float network"},
        )
        onnx_bytes = onnx_model.SerializeToString()
        session = onnx_session(onnx_bytes)
        xs = (
            x
            if x is not None
            else np.random.default_rng(0).integers(0, 256, size=(RANDOM_INPUTS, *cfg.model.in_shape), dtype=np.uint8)
        )
        ort_out = _ort_run(session, xs)
        ref_logits, ref_pred = _torch_predict(model, single_unit, xs)
        close = np.allclose(ort_out["logits"], ref_logits, rtol=1e-4, atol=1e-4)
        agree = float((ort_out["label"] == ref_pred).mean())
        report.checks.append(
            Check(
                name="onnxruntime vs PyTorch (float)",
                passed=close and agree >= MIN_AGREEMENT,
                detail=f"logits {'within 1e-4' if close else 'DIFFER'}, "
                f"labels agree on {agree:.4%} of {len(xs)} inputs",
            )
        )
        if x is not None:
            report.accuracy["onnx"] = float((ort_out["label"] == y).mean())
        bnn_bytes = None
    return _write(report, bnn_bytes, onnx_bytes, bnn_path, onnx_path)


__all__ = ["export_run", "export_model", "ExportReport", "Check"]
