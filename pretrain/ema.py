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


def initial_share(total_steps: int, base: float, final: float = 1.0) -> float:
    """Weight the teacher still gives its initialisation after ``total_steps`` updates of the
    cosine schedule: the product of the momenta (each update keeps that fraction of the old
    teacher, and only the old teacher carries the initial weights)."""
    steps = range(1, int(total_steps) + 1)
    return float(math.exp(sum(math.log(max(ema_momentum(s, total_steps, base, final), 1e-300)) for s in steps)))


def horizon_base(total_steps: int, init_share: float = 1e-3, base: float = 0.996, final: float = 1.0) -> float:
    """The EMA horizon rule: the largest base momentum, at most ``base``, whose schedule leaves the
    initialisation a share of at most ``init_share`` of the teacher after ``total_steps`` updates.

    Why: with DINO's 0.996 a run of a few hundred steps exports a teacher that is mostly its random
    initialisation (about 74 % after 150 steps). For the cosine schedule the share is about
    exp(−(1 − base)·S/2), so the rule gives base ≈ 1 − 2·ln(1/init_share)/S for short runs and
    leaves long runs (S ≳ 3,500 at the defaults) at ``base``. Solved exactly by bisection on the
    product of momenta."""
    if not 0 < init_share < 1:
        raise ValueError(f"init_share must be in (0, 1), got {init_share}")
    total_steps = max(1, int(total_steps))
    if initial_share(total_steps, base, final) <= init_share:
        return float(base)
    lo, hi = 0.0, float(base)  # share grows with the base momentum: find where it crosses init_share
    if initial_share(total_steps, lo, final) > init_share:
        return lo  # too few steps to forget the initialisation that far, even at momentum 0
    for _ in range(60):
        mid = (lo + hi) / 2
        if initial_share(total_steps, mid, final) > init_share:
            hi = mid
        else:
            lo = mid
    return lo
