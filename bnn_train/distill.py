"""Knowledge distillation (``--distill RUN_DIR``): a trained teacher's soft labels in the training loss.

The teacher is any finished run on the same dataset (typically the float twin of the binary
network: ``--weights float --act relu/tied``). Its logits on the training images do not depend
on the student, so without augmentation they are computed once, before the first epoch
(one forward pass over the training set), and a step costs no more than without a teacher;
with ``--augment-shift`` the teacher sees each shifted batch (one extra forward pass per step).

The loss is Hinton et al.'s (2015)::

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, label)

(T^2 keeps the soft term's gradient on the scale of the hard one). Distillation changes only how
the network is trained, never the network: the exported model is the student alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError


class Teacher:
    """A trained run's model in eval mode, with its logits on the training set when they can be kept."""

    def __init__(self, model: nn.Module, x_train: Tensor, batch_size: int, cache: bool):
        self.model = model
        self.logits = self._all(x_train, batch_size) if cache else None

    @torch.no_grad()
    def _all(self, x: Tensor, batch_size: int) -> Tensor:
        return torch.cat([self.model(x[i : i + batch_size].float()) for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def __call__(self, idx: Tensor, x: Tensor) -> Tensor:
        """The teacher's logits for the batch ``x`` = the training images ``idx`` (shifted or not)."""
        if self.logits is not None:
            return self.logits[idx]
        return self.model(x.float())


def load_teacher(run_dir: str, in_shape, num_classes: int, x_train: Tensor, batch_size: int, cache: bool) -> Teacher:
    """The teacher of ``--distill run_dir``, checked against the student's dataset."""
    from .rundir import load_run

    model, cfg, _ = load_run(Path(run_dir), map_location=x_train.device)
    if tuple(cfg.model.in_shape) != tuple(in_shape) or cfg.model.num_classes != num_classes:
        raise ConfigError(
            f"--distill {run_dir}: the teacher takes {tuple(cfg.model.in_shape)} inputs into {cfg.model.num_classes} "
            f"classes, this run's dataset {tuple(in_shape)} into {num_classes}; train the teacher on the same dataset"
        )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Teacher(model, x_train, batch_size, cache)


def distill_loss(student: Tensor, teacher: Tensor, y: Tensor, alpha: float, temperature: float, smoothing: float):
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y; label smoothing)."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean", log_target=True
    )
    hard = F.cross_entropy(student, y, label_smoothing=smoothing)
    return alpha * t * t * soft + (1 - alpha) * hard
