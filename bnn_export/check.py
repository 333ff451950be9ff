"""``check_exportable``: would this freshly built network export to .bnn? Asked before any training.

The check folds the untrained model (eval mode: BatchNorm statistics at their initial values) with
the exporter's own handlers and runs one zero batch through PyTorch, so a layer kind without a
handler, a pool that does not fit or a shape the two disagree on is found in a second, not after
hours of training. For a network built from ``--arch`` the error names the token it came from.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .errors import NotBinaryError
from .fold import fold


def _token_error(model: nn.Module, message: str) -> NotBinaryError:
    tokens: dict[str, str] = getattr(model, "arch_tokens", {})
    hits = [(m.start(), tokens[m[0]]) for m in re.finditer(r"[A-Za-z_]\w*", message) if m[0] in tokens]
    if not hits:
        return NotBinaryError(f"not exportable: {message}")
    token = min(hits)[1]
    where = token if token.startswith("the ") else f"--arch token {token!r}"
    return NotBinaryError(f"{where} cannot be exported: {message}")


@torch.no_grad()
def check_exportable(model: nn.Sequential, in_shape: tuple[int, ...]) -> list[dict]:
    """The .bnn layers the model would fold into; NotBinaryError (one line, naming the token) otherwise."""
    was_training = model.training
    model.eval()
    try:
        try:
            layers, _ = fold(model, tuple(in_shape))
        except NotBinaryError as e:
            raise _token_error(model, str(e)) from None
        try:
            out = model(torch.zeros((1, *in_shape)))
        except RuntimeError as e:
            raise NotBinaryError(
                f"the network does not run on input {tuple(in_shape)}: {str(e).splitlines()[0]}"
            ) from None
        if list(out.shape[1:]) != [layers[-1]["out_features"]]:
            raise NotBinaryError(
                f"PyTorch gives {list(out.shape[1:])} outputs, the folded network {layers[-1]['out_features']}"
            )
        return layers
    finally:
        model.train(was_training)
