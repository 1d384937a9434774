"""How far training moved a network from the weights it started with, part by part."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn


def relative_movement(
    initial: Mapping[str, torch.Tensor], module: nn.Module, prefixes: Iterable[str]
) -> dict[str, float]:
    """Per parameter-name prefix (a stage): ‖W − W₀‖ / ‖W₀‖ over its tensors, ``initial`` being a
    state dict of the same module. BatchNorm statistics are left out: they are not weights."""
    out = {}
    state = module.state_dict()
    for prefix in prefixes:
        keys = [k for k in state if k.startswith(f"{prefix}.") and "running_" not in k and "num_batches" not in k]
        now = torch.cat([state[k].detach().float().reshape(-1).cpu() for k in keys])
        then = torch.cat([initial[k].float().reshape(-1) for k in keys])
        out[prefix] = float((now - then).norm() / then.norm().clamp(min=1e-12))
    return out
