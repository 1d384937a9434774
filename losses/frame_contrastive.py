"""Frame-level contrastive loss with a queue of teacher keys (MoCo-style), temporal positives.

Query: the student's pooled embedding of window w of a recording. Positive: the teacher's
embedding of an adjacent window (w ± 1) of the same recording. Negatives: the queue of past
teacher keys. Neighbouring windows of one recording look alike, so queue entries from the same
recording within ``window_radius`` windows are masked out; optionally the ``knn_exclude`` queue
keys nearest to the positive key are masked too (exact inner-product search; faiss
``IndexFlatIP`` when available, else ``torch.topk``, same result).

The queue must receive the keys of every rank, or ranks' queues diverge under DDP: gather first,
then enqueue. Enqueue only after the backward pass (``on_after_backward`` in Lightning): the loss
graph still reads the queue buffer, and overwriting it in place before backward breaks autograd::

    loss = criterion(q, k_pos, queue, rec_ids, win_idx)
    loss.backward()
    queue.enqueue(*(gather_from_all_ranks(t) for t in (k_pos, rec_ids, win_idx)))  # evcmae.distributed
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .heads import ProjectionHead
from .infonce import info_nce


def masked_mean_pool(features: torch.Tensor, batch_idx: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N, C) voxel features -> (B, C) mean over each sample's active voxels (zeros for none)."""
    batch_idx = batch_idx.long()
    sums = features.new_zeros(batch_size, features.shape[1]).index_add_(0, batch_idx, features)
    counts = torch.bincount(batch_idx, minlength=batch_size).clamp(min=1).to(features.dtype)
    return sums / counts[:, None]


class FrameProjector(nn.Module):
    """Masked mean pool per sample -> ``ProjectionHead`` (L2-normalised)."""

    def __init__(self, in_channels: int, hidden: int = 512, out_dim: int = 128):
        super().__init__()
        self.head = ProjectionHead(in_channels, hidden, out_dim)

    @property
    def out_dim(self) -> int:
        return self.head.out_dim

    def forward(self, x, batch_idx: torch.Tensor | None = None, batch_size: int | None = None):
        """x: SparseConvTensor, or features (N, C) with batch_idx (N,) and batch_size -> (B, out_dim)."""
        if hasattr(x, "features") and hasattr(x, "indices"):
            x, batch_idx, batch_size = x.features, x.indices[:, 0], x.batch_size
        return self.head(masked_mean_pool(x, batch_idx, batch_size))


class KeyQueue(nn.Module):
    """Ring buffer of teacher keys with their recording id and window index (all buffers, so they
    are checkpointed and moved with the module). Empty slots have recording id -1."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("rec_ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("win_idx", torch.zeros(size, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @property
    def valid(self) -> torch.Tensor:
        return self.rec_ids >= 0

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, rec_ids: torch.Tensor, win_idx: torch.Tensor) -> None:
        """Write already-gathered (n, D) keys with their (n,) recording ids and window indices,
        overwriting the oldest entries; if n exceeds the queue, only the last ``size`` are kept."""
        keys, rec_ids, win_idx = keys[-self.size :], rec_ids[-self.size :], win_idx[-self.size :]
        n = keys.shape[0]
        slots = (self.ptr + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[slots] = keys.detach().to(self.keys.dtype)
        self.rec_ids[slots] = rec_ids.long()
        self.win_idx[slots] = win_idx.long()
        self.ptr.copy_((self.ptr + n) % self.size)


def temporal_exclusion(rec_ids, win_idx, queue_rec_ids, queue_win_idx, window_radius: int) -> torch.Tensor:
    """(B, K) True where queue entry k is from query b's recording within ``window_radius`` windows."""
    same = rec_ids[:, None].long() == queue_rec_ids[None, :]
    near = (win_idx[:, None].long() - queue_win_idx[None, :]).abs() <= window_radius
    return same & near


def knn_exclusion(positive_keys, queue_keys, valid, k: int, use_faiss: bool = True) -> torch.Tensor:
    """(B, K) True for the ``k`` valid queue keys with the largest inner product with each positive."""
    shape = (positive_keys.shape[0], queue_keys.shape[0])
    excluded = torch.zeros(shape, dtype=torch.bool, device=queue_keys.device)
    rows = torch.nonzero(valid).squeeze(1)
    k = min(k, rows.numel())
    if k <= 0:
        return excluded
    nearest = _faiss_topk(positive_keys, queue_keys[rows], k) if use_faiss else None
    if nearest is None:
        nearest = torch.topk(positive_keys.detach() @ queue_keys[rows].t(), k, dim=1).indices
    excluded.scatter_(1, rows[nearest.to(rows.device)], True)
    return excluded


def _faiss_topk(queries: torch.Tensor, keys: torch.Tensor, k: int) -> torch.Tensor | None:
    try:
        import faiss
    except ImportError:
        return None
    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(keys.detach().float().cpu().contiguous().numpy())
    _, nearest = index.search(queries.detach().float().cpu().contiguous().numpy(), k)
    return torch.from_numpy(nearest).long()


class FrameContrastiveLoss(nn.Module):
    """InfoNCE of the query against its positive key and the (masked) queue, temperature-scaled."""

    def __init__(self, temperature=0.1, window_radius: int = 2, knn_exclude: int = 0, use_faiss: bool = True):
        super().__init__()
        self.temperature, self.window_radius = temperature, window_radius
        self.knn_exclude, self.use_faiss = knn_exclude, use_faiss

    def negative_mask(self, positive_keys, queue: KeyQueue, rec_ids, win_idx) -> torch.Tensor:
        """(B, K) True where a queue entry is NOT used as a negative for query b."""
        same_clip = temporal_exclusion(rec_ids, win_idx, queue.rec_ids, queue.win_idx, self.window_radius)
        excluded = ~queue.valid[None, :] | same_clip
        if self.knn_exclude > 0:
            excluded = excluded | knn_exclusion(
                positive_keys, queue.keys, queue.valid, self.knn_exclude, self.use_faiss
            )
        return excluded

    def forward(self, query, positive_key, queue: KeyQueue, rec_ids, win_idx) -> torch.Tensor:
        """query (B, D) student embedding of window ``win_idx`` (B,) of recording ``rec_ids`` (B,);
        positive_key (B, D) the teacher's embedding of an adjacent window of the same recording."""
        positive_key = F.normalize(positive_key.detach(), dim=-1)
        excluded = self.negative_mask(positive_key, queue, rec_ids, win_idx)
        return info_nce(query, positive_key, queue.keys, excluded, self.temperature)
