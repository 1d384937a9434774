"""EMA teacher (BYOL/DINO practice): a frozen copy of the student, moved towards it after each step.

The momentum is a pure function of the global optimizer step, so resuming from a checkpoint
needs no EMA state beyond the teacher's weights (which the checkpoint holds anyway).

Call ``ema_update`` once per *optimizer* step, after ``optimizer.step()`` (Lightning:
``on_train_batch_end``, guarded so it runs only on batches where the optimizer stepped), and pass
that optimizer-step count (``trainer.global_step``) to ``ema_momentum``. Under gradient
accumulation the student changes only every N micro-batches; updating per micro-batch would
apply the momentum N times to the same student and shorten the teacher's horizon N-fold. Under
DDP the student is identical on every rank after the all-reduce, so the teacher stays identical
with no communication.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def ema_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """Cosine from ``base`` at step 0 to ``final`` at ``total_steps`` (held there afterwards)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    progress = min(max(step, 0), total_steps) / total_steps
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of the student with gradients disabled (its mode is left as the student's)."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher ← momentum·teacher + (1 − momentum)·student for parameters; buffers (BatchNorm
    running statistics, counters) are copied from the student, which tracks the current data."""
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        differ = sorted(t_params.keys() ^ s_params.keys())
        raise ValueError(f"teacher and student parameters differ: {differ[:5]}")
    names = list(t_params)
    t_list = [t_params[n] for n in names]
    s_list = [s_params[n].detach().to(t_params[n].dtype) for n in names]
    if t_list:
        torch._foreach_lerp_(t_list, s_list, 1.0 - momentum)  # t + (1-m)(s - t)
    s_buffers = dict(student.named_buffers())
    for name, buf in teacher.named_buffers():
        if name in s_buffers:
            buf.copy_(s_buffers[name])
