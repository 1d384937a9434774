"""BatchNorm statistics re-estimated from data, shared by the probe, fine-tuning's recalibration
and the study's diagnostics: with batches of 2 a running average (momentum 0.1) mostly remembers
the last few batches, so these places instead clear the statistics and keep the plain mean over
every batch they run."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


def batchnorms(module: nn.Module | None) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer in ``module`` (none for None)."""
    if module is None:
        return []
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def cumulative_batchnorm(module: nn.Module | None) -> Iterator[list[nn.modules.batchnorm._BatchNorm]]:
    """Inside the block, each BatchNorm of ``module`` starts from cleared statistics and averages
    every batch it sees in training mode with equal weight (momentum None); on leaving, each layer
    gets its own momentum back and keeps the new statistics. Yields the layers (empty: nothing to
    do). Train or eval mode is the caller's to set."""
    norms = batchnorms(module)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    try:
        yield norms
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
