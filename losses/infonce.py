"""InfoNCE with shared negatives: the one contrastive criterion of both contrastive terms.

Each query has its own positive and scores against a set of negatives shared by all queries;
``excluded`` removes, per query, negatives that are likely positives in disguise (the same
object nearby, the same recording a few windows away). Embeddings are L2-normalised here, so
callers may pass raw head outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    excluded: torch.Tensor | None = None,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Mean over the A queries of −log softmax(positive) among [positive, negatives].

    queries (A, D) and positives (A, D) pair up row by row; negatives (M, D) are shared;
    excluded (A, M) bool drops negative m for query a. Positives carry no gradient (they come
    from the teacher); the queries do, and so do the negatives if the caller lets them."""
    q = F.normalize(queries, dim=-1)
    k = F.normalize(positives.detach(), dim=-1).to(q.dtype)
    n = F.normalize(negatives.detach(), dim=-1).to(q.dtype)
    l_pos = (q * k).sum(-1, keepdim=True)
    l_neg = q @ n.t()
    if excluded is not None:
        l_neg = l_neg.masked_fill(excluded, float("-inf"))
    logits = torch.cat([l_pos, l_neg], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
