"""``bnn export``: a run directory -> model.bnn (bits + integer thresholds) and model.onnx, checked."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .common import CliError, positive, stderr_console
from .paths import check_output_file
from .terminal import markup, plain


class Checkpoint(str, Enum):
    best = "best"
    last = "last"


def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by bnn train.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The .bnn file [default: RUN_DIR/model.bnn].")
    ] = None,
    onnx: Annotated[Path | None, typer.Option("--onnx", help="The ONNX file [default: RUN_DIR/model.onnx].")] = None,
    no_onnx: Annotated[bool, typer.Option("--no-onnx", help="Write no ONNX file.")] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the run's dataset is now (mnist/fashion-mnist IDX files).")
    ] = None,
    check_images: Annotated[
        int | None, typer.Option(help="Check on the first N test images [default: all].", callback=positive)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    require_complete: Annotated[
        bool, typer.Option("--require-complete", help="Refuse a run that has not trained all its planned epochs.")
    ] = False,
    checkpoint: Annotated[
        Checkpoint,
        typer.Option(
            help="best: best.pt, the epoch of highest validation accuracy "
            "(a run without --val-split has only its last); last: the last epoch."
        ),
    ] = "best",
) -> None:
    """Fold a trained binary network into packed bits with integer thresholds (.bnn) and an integer ONNX graph.

    Before writing, the export checks that onnxruntime and the NumPy reference give identical
    integer scores, and that predictions agree with the PyTorch model on the test images. A
    model with float weights or smooth activations cannot become a .bnn; it is exported to
    ONNX alone.
    """
    from bnn_export.api import export_run
    from bnn_export.errors import NotBinaryError

    if no_onnx and onnx is not None:
        raise CliError("--onnx and --no-onnx contradict each other")
    bnn_path = output or run_dir / "model.bnn"
    onnx_path = None if no_onnx else (onnx or run_dir / "model.onnx")
    check_output_file("--output", bnn_path)
    if onnx_path is not None:
        check_output_file("--onnx", onnx_path)
    try:
        report = export_run(
            run_dir,
            bnn_path,
            onnx_path,
            data_dir=str(data_dir) if data_dir else None,
            check_images=check_images,
            require_bnn=output is not None or onnx_path is None,
            require_complete=require_complete,
            checkpoint=checkpoint.value,
        )
    except NotBinaryError as e:
        raise CliError(f"cannot write {bnn_path}: {e}; pass only --onnx to export the float network") from None
    if report.unfinished_note:  # said on stderr in every output format
        typer.echo(f"warning: {plain(report.unfinished_note)}", err=True)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    if not report.binary:  # said in every mode, on stderr (stdout stays the report)
        typer.echo(f"no .bnn written, only the ONNX file: {plain(report.not_binary_reason)}", err=True)


def _print_report(report) -> None:
    from rich.table import Table

    console = stderr_console()
    table = Table(title=f"bnn export {markup(report.run_dir)}", show_header=True)
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for c in report.checks:
        table.add_row(markup(c.name), "[green]ok[/]" if c.passed else "[red]FAILED[/]", markup(c.detail))
    for name, acc in report.accuracy.items():
        table.add_row(f"test accuracy ({name})", "", f"{acc:.4%}")
    console.print(table)
    if report.bnn_path:
        typer.echo(
            f"wrote {plain(report.bnn_path)}: {report.bnn_bytes:,} bytes, {report.compression:.1f}x smaller than the "
            f"fp32 state dict ({report.state_dict_bytes:,} bytes)"
        )
    if report.onnx_path:
        typer.echo(
            f"wrote {plain(report.onnx_path)}: {report.onnx_bytes:,} bytes" + ("" if report.binary else " (ONNX only)")
        )
