"""``bnn warmup``: compile the runtime's kernels for this CPU into the kernel cache, ahead of the first prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def warmup(
    model_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="[MODEL.bnn]", exists=True, dir_okay=False, help="Compile only what this model needs, and run it."
        ),
    ] = None,
) -> None:
    """Compile the runtime's kernels for this CPU once, so that the first prediction starts at once.

    Without MODEL it compiles the driver for every layer kind, which then serves every model; with MODEL
    only the kernels that model needs (faster), and runs it once. The cache is BNN_CACHE_DIR when set,
    else beside the installed package, else the user's cache directory (~/.cache/bnn); in a container
    build: `RUN bnn warmup` (or `RUN bnn warmup model.bnn`). It also keeps the driver's machine code there, which
    a later process runs without importing numba (not with BNN_NATIVE=0).
    """
    import numpy as np

    from bnn_runtime import cache_path, compiled, native
    from bnn_runtime.layout import USES_ALL

    uses = USES_ALL
    if model_path is None:
        compiled.forward()
    else:
        from bnn_runtime.model import SERIAL_MAX, load

        model = load(model_path).compile()  # (its kernels now, not in the background)
        x = np.zeros((2 * SERIAL_MAX + 1, *model.input_shape), np.uint8)
        model.predict(x[:1])
        model.predict(x)
        uses = model.plan.uses
    if native.enabled() and native.read(uses) is None and native.read(USES_ALL) is None:
        if compiled.keep_native(uses) is None:  # (the next start then imports numba: slower, not wrong)
            typer.echo("note: no machine code kept for a start without numba on this platform", err=True)
    typer.echo(f"kernels ready in {cache_path.cache_dir()}")
