"""The ``bnn`` typer app: registers the commands and turns user errors into one line on stderr.

Usage errors (unknown option or choice) exit 2, user errors (bad data, corrupt files, invalid
numbers) exit 1, both as a single ``error: ...`` line without a traceback. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup


def is_user_error(e: BaseException) -> bool:
    """Every user-facing error of every package derives from bnn_runtime.errors.BnnError."""
    from bnn_runtime.errors import BnnError

    return isinstance(e, BnnError)


def fail(message: str, code: int) -> None:
    from .terminal import plain

    typer.echo(f"error: {plain(message)}", err=True)
    sys.exit(code)


class BnnGroup(TyperGroup):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        except typer.TyperException as e:  # usage errors: unknown option, invalid choice, missing argument
            if type(e).__name__ == "NoArgsIsHelpError":
                typer.echo(e.format_message())
                sys.exit(0)
            fail(e.format_message(), e.exit_code)
        except typer.Abort:
            fail("aborted", 130)
        except Exception as e:
            if is_user_error(e):
                fail(str(e), 1)
            raise
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=BnnGroup,
    name="bnn",
    help="Train binary neural networks with untied backward functions, export them to bits and ONNX, run them.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings reflow; "[default: X]" in help stays literal
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Train binary neural networks with untied backward functions, export them to bits and ONNX, run them."""


def _register() -> None:
    from . import bench, bench_ensemble, bench_train, export, infer, reproduce, train

    app.command("train")(train.train)
    app.command("export")(export.export)
    app.command("infer")(infer.infer)
    app.command("bench")(bench.bench)
    app.command("bench-train")(bench_train.bench_train)
    app.command("bench-ensemble")(bench_ensemble.bench_ensemble)
    app.command("reproduce")(reproduce.reproduce)


_register()

if __name__ == "__main__":  # pragma: no cover
    app()
