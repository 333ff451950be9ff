"""``bnn export``: a run directory -> model.bnn (bits + integer thresholds) and model.onnx, checked."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import CliError, stderr_console


class Checkpoint(str, Enum):
    best = "best"
    last = "last"


def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by bnn train.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="The .bnn file [default: RUN_DIR/model.bnn].")] = None,
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="The ONNX file [default: RUN_DIR/model.onnx].")] = None,
    no_onnx: Annotated[bool, typer.Option("--no-onnx", help="Write no ONNX file.")] = False,
    data_dir: Annotated[Optional[Path], typer.Option(help="Where the run's dataset is now (mnist/fashion-mnist IDX files).")] = None,
    check_images: Annotated[Optional[int], typer.Option(help="Check on the first N test images [default: all].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    checkpoint: Annotated[Checkpoint, typer.Option(help="best: best.pt, the epoch of highest validation accuracy (a run without --val-split has only its last); last: the last epoch.")] = "best",
) -> None:
    """Fold a trained binary network into packed bits with integer thresholds (.bnn) and an integer ONNX graph.

    Before writing, the export checks that onnxruntime and the NumPy reference give identical
    integer scores, and that predictions agree with the PyTorch model on the test images. A
    model with float weights or smooth activations cannot become a .bnn; it is exported to
    ONNX alone.
    """
    from bnn_export.api import export_run
    from bnn_export.errors import NotBinaryError

    if check_images is not None and check_images < 1:
        raise CliError(f"--check-images must be a positive integer, got {check_images}")
    if no_onnx and onnx is not None:
        raise CliError("--onnx and --no-onnx contradict each other")
    bnn_path = output or run_dir / "model.bnn"
    onnx_path = None if no_onnx else (onnx or run_dir / "model.onnx")
    try:
        report = export_run(run_dir, bnn_path, onnx_path, data_dir=str(data_dir) if data_dir else None,
                            check_images=check_images, require_bnn=output is not None or onnx_path is None,
                            checkpoint=checkpoint.value)
    except NotBinaryError as e:
        raise CliError(f"cannot write {bnn_path}: {e}; pass only --onnx to export the float network") from None
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    _print_report(report)


def _print_report(report) -> None:
    from rich.table import Table

    console = stderr_console()
    if not report.binary:
        console.print(f"[yellow]no .bnn written:[/] {report.not_binary_reason}")
    table = Table(title=f"bnn export {report.run_dir}", show_header=True)
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for c in report.checks:
        table.add_row(c.name, "[green]ok[/]" if c.passed else "[red]FAILED[/]", c.detail)
    for name, acc in report.accuracy.items():
        table.add_row(f"test accuracy ({name})", "", f"{acc:.4%}")
    console.print(table)
    if report.bnn_path:
        typer.echo(f"wrote {report.bnn_path}: {report.bnn_bytes:,} bytes, {report.compression:.1f}x smaller than the "
                   f"fp32 state dict ({report.state_dict_bytes:,} bytes)")
    if report.onnx_path:
        typer.echo(f"wrote {report.onnx_path}: {report.onnx_bytes:,} bytes")
