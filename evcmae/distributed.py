"""Helpers for code that runs on every rank of a DDP job (and unchanged in a single process).

One home for them, shared by pretraining (key queue, teacher buffers, probe) and by the data
modules (which shard recordings by rank). Without an initialised process group each function is
the single-process identity.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist


class Ranks(NamedTuple):
    world_size: int
    rank: int


def ranks(trainer=None) -> Ranks:
    """(world_size, rank) of a Lightning trainer, or of the process group, or (1, 0)."""
    if trainer is not None:
        return Ranks(int(trainer.world_size), int(trainer.global_rank))
    if is_distributed():
        return Ranks(dist.get_world_size(), dist.get_rank())
    return Ranks(1, 0)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_from_all_ranks(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (detached) over ranks along dim 0; identity without a process group.

    Ranks may hold different numbers of rows (a short last batch): sizes are exchanged first and
    the rows padded to the largest, then trimmed."""
    t = t.detach()
    if not is_distributed():
        return t
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    padded = t.new_zeros((max(sizes), *t.shape[1:]))
    padded[: t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)])


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm statistics, counters) into every rank's module,
    one broadcast per dtype."""
    if not is_distributed():
        return
    by_dtype: dict = {}
    for buf in module.buffers():
        by_dtype.setdefault(buf.dtype, []).append(buf)
    for bufs in by_dtype.values():
        flat = torch.cat([b.reshape(-1) for b in bufs])
        dist.broadcast(flat, src=src)
        offset = 0
        for b in bufs:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()
