"""The pretraining objective Σ λᵢ·Lᵢ, with disabled branches skipped and non-finite terms caught.

A λ of 0 must mean the branch is not computed at all, not multiplied by zero: a computed but
unused branch leaves parameters without gradients, which DDP reports as "expected to have
finished reduction". Callers ask ``enabled_terms`` which branches to run.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

DEFAULT_WEIGHTS = {"occupancy": 1.0, "reconstruction": 1.0, "voxel_nce": 0.6, "frame_contrastive": 0.3}


class NonFiniteLossError(FloatingPointError):
    """A loss term is NaN or infinite; the training loop skips the step and counts it."""

    def __init__(self, term: str, value: float):
        super().__init__(f"loss term {term!r} is not finite ({value})")
        self.term, self.value = term, value


def enabled_terms(weights: Mapping[str, float]) -> list[str]:
    """Names of the terms to compute: those with a non-zero weight, in the mapping's order."""
    for name, w in weights.items():
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"weight of {name!r} must be finite and >= 0, got {w}")
    return [name for name, w in weights.items() if w != 0]


def weighted_total(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]):
    """(Σ λᵢ·Lᵢ over enabled terms, {name: detached term, ..., "total": detached total}).

    Every enabled term must be present (a missing one is a bug upstream: KeyError). Terms given
    with weight 0 are logged but never enter the total. Raises ``NonFiniteLossError`` naming the
    first enabled term that is NaN/inf."""
    enabled = enabled_terms(weights)
    if not enabled:
        raise ValueError("all loss weights are zero: nothing to train")
    missing = [n for n in enabled if n not in terms]
    if missing:
        raise KeyError(f"enabled loss terms not computed: {missing}")
    unknown = [n for n in terms if n not in weights]
    if unknown:
        raise KeyError(f"loss terms without a weight: {unknown}")
    for name in enabled:
        value = terms[name]
        if not bool(torch.isfinite(value).all()):
            raise NonFiniteLossError(name, float(value.detach().float().reshape(-1)[0]))
    total = sum(weights[n] * terms[n] for n in enabled)
    logged = {n: t.detach() for n, t in terms.items()}
    logged["total"] = total.detach()
    return total, logged


class PretrainLoss(nn.Module):
    """Holds the λ weights (a Hydra-friendly constructor) and combines computed terms."""

    def __init__(self, occupancy=1.0, reconstruction=1.0, voxel_nce=0.6, frame_contrastive=0.3):
        super().__init__()
        self.weights = {
            "occupancy": occupancy,
            "reconstruction": reconstruction,
            "voxel_nce": voxel_nce,
            "frame_contrastive": frame_contrastive,
        }
        self.enabled = enabled_terms(self.weights)

    def is_enabled(self, name: str) -> bool:
        return name in self.enabled

    def forward(self, terms: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return weighted_total(terms, self.weights)
