"""The ``bnn`` typer app: registers the commands and turns user errors into one line on stderr.

Usage errors (unknown option or choice) exit 2, user errors (bad data, corrupt files, invalid
numbers) exit 1, both as a single ``error: ...`` line without a traceback. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import warnings
from typing import Annotated

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
        # a hostile or damaged image makes Pillow warn (e.g. corrupt EXIF) before it fails or decodes; the
        # commands report every image they cannot use in their own one line
        warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")
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


def _print_version(value: bool) -> None:
    """``bnn --version``: this package's version and the versions of what the runtime runs on, then exit."""
    if not value:
        return
    import platform

    from bnn_runtime.about import DISTRIBUTION, version

    typer.echo(
        f"bnn ({DISTRIBUTION}) {version()}; numpy {version('numpy')}, numba {version('numba')}, "
        f"Python {platform.python_version()} on {platform.machine()}"
    )
    raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train binary neural networks with untied backward functions, export them to bits and ONNX, run them."""
    from bnn_runtime import compiled

    compiled.set_notice(lambda message: typer.echo(message, err=True))  # once, when the kernels compile


def _register() -> None:
    from . import bench, bench_ensemble, bench_train, export, infer, reproduce, train, warmup

    app.command("train")(train.train)
    app.command("export")(export.export)
    app.command("infer")(infer.infer)
    app.command("bench")(bench.bench)
    app.command("bench-train")(bench_train.bench_train)
    app.command("bench-ensemble")(bench_ensemble.bench_ensemble)
    app.command("reproduce")(reproduce.reproduce)
    app.command("warmup")(warmup.warmup)


_register()

if __name__ == "__main__":  # pragma: no cover
    app()
