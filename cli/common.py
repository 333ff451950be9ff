"""Helpers shared by the commands: the CLI's own user error, options derived from the settings, checks, consoles."""

from __future__ import annotations

import typer

from bnn_runtime.errors import BnnError


class CliError(BnnError):
    """A command-line mistake the library cannot see (e.g. conflicting options): one line, exit 1."""


def parse_ints(option: str, text: str) -> tuple[int, ...]:
    """``"64,32"`` -> (64, 32); anything else is a CliError naming the option."""
    try:
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise CliError(f"{option} must be comma-separated integers like 64,32, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise CliError(f"{option} must be comma-separated positive integers like 64,32, got {text!r}")
    return values


def from_setting(cls, name: str, *param_decls: str, panel: str | None = None, **kwargs):
    """A typer Option whose help text is that of setting ``name`` of the dataclass ``cls``.

    The default goes beside it, read from a default instance (``= ModelConfig().model``), so typer shows it.
    """
    from bnn_train.config import field_of

    return typer.Option(*param_decls, help=field_of(cls, name).metadata["help"], rich_help_panel=panel, **kwargs)


def positive(param: typer.CallbackParam, value):
    """Option callback: a number option must be > 0, an integer one >= 1 (None, an unset option, passes)."""
    if value is None or value > 0:
        return value
    kind = "a positive integer" if isinstance(value, int) else "positive"
    raise CliError(f"{param.opts[0]} must be {kind}, got {value}")


def command_line() -> str:
    """This process's command line as a user would type it again (``bnn ...``)."""
    import shlex
    import sys

    return "bnn " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def progress_bar(title: str, console=None, disable: bool = False):
    """The commands' rich progress bar on stderr: title, bar, done/total, a ``status`` field, elapsed, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(title),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or stderr_console(),
        transient=False,
        disable=disable,
    )


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)
