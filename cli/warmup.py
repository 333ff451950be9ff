"""``bnn warmup``: compile the runtime's kernels for this CPU into the kernel cache, ahead of the first prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def warmup(
    model_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="[MODEL.bnn]", exists=True, dir_okay=False, help="Also load this model and run it once."
        ),
    ] = None,
) -> None:
    """Compile the runtime's kernels for this CPU once, so that the first prediction starts at once.

    One compiled driver serves every model, so MODEL is optional (it only checks that the model
    loads and runs). The cache is BNN_CACHE_DIR when set, else beside the installed package, else
    the user's cache directory (~/.cache/bnn); in a container build: `RUN bnn warmup`.
    """
    import numpy as np

    from bnn_runtime import cache, compiled

    compiled.forward()
    if model_path is not None:
        from bnn_runtime.model import SERIAL_MAX, load

        model = load(model_path)
        x = np.zeros((2 * SERIAL_MAX + 1, *model.input_shape), np.uint8)
        model.predict(x[:1])
        model.predict(x)
    typer.echo(f"kernels ready in {cache.cache_dir()}")
