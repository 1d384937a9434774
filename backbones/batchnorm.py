"""BatchNorm statistics re-estimated from data, shared by the probe, fine-tuning's recalibration
and evcmae-evaluate's ``precise_bn``: with batches of 2 a running average (momentum 0.1) mostly
remembers the last few batches, so these places instead clear the statistics and keep the plain
mean over every batch they run. Also the check evcmae-evaluate runs on a checkpoint's statistics
(``near_constant_channels``), and the detector's choice of eps (``set_batchnorm_eps``)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


def batchnorms(module: nn.Module | None) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer in ``module`` (none for None)."""
    if module is None:
        return []
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def set_batchnorm_eps(module: nn.Module, eps: float) -> int:
    """Set ``eps`` on every BatchNorm in ``module``; returns how many. PyTorch's 1e-5 is what RVT
    runs; YOLOX trains with 1e-3, which keeps a nearly constant channel (running variance far
    below eps) from being scaled up by 1/sqrt(var + eps) at evaluation."""
    if not eps > 0:
        raise ValueError(f"BatchNorm eps must be > 0, got {eps!r}")
    layers = batchnorms(module)
    for m in layers:
        m.eps = float(eps)
    return len(layers)


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


# The eps the near-constant check is calibrated at: PyTorch's default, which RVT runs.
REFERENCE_EPS = 1e-5


def near_constant_channels(
    module: nn.Module | None, below: float = 1e-4, share: float = 0.1
) -> dict[str, tuple[int, int]]:
    """``{layer name: (near-constant channels, channels)}`` for each BatchNorm of ``module`` where
    those make up at least ``share`` of its channels. Such a channel was nearly constant on the data
    its statistics came from; at evaluation BatchNorm scales any deviation from that constant by
    1/sqrt(var + eps), about 100 at running variance 1e-4 with eps 1e-5, so a small shift in the
    input's distribution swamps the layer's output (how one fine-tuned detector in twenty collapsed
    in results/abl_terms). Healthy checkpoints there have at most one such channel.

    A channel counts when that scale exceeds what running variance ``below`` gives at eps 1e-5
    (``var + eps < below + 1e-5``): the layer's own eps decides, so at eps 1e-3 (YOLOX's, or
    ``model.detector.bn_eps``) no variance is flagged, since no channel is scaled by more than
    about 32."""
    found = {}
    limit = below + REFERENCE_EPS
    for name, m in module.named_modules() if module is not None else []:
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
            low, total = int((m.running_var + m.eps < limit).sum()), m.running_var.numel()
            if total and low >= share * total:
                found[name] = (low, total)
    return found


def near_constant_text(found: dict) -> str:
    """near_constant_channels' result as one line: ``layer (low/total), ...``; the form a warning
    and a report share. Takes the pairs as a record reads them back too (lists, not tuples)."""
    return ", ".join(f"{name} ({low}/{total})" for name, (low, total) in found.items())
