"""Representation probe: is an encoder's feature map already organised by object class?

Each labelled box of the validation windows becomes one embedding, and a k-nearest-neighbour vote
among the other boxes predicts its class. No training, so it measures the representation itself,
cheaply enough to run at every validation.

* **Pooling keeps the layout.** A box is split into a ``grid`` × ``grid`` raster of sub-boxes and
  the features of the active sites in each are averaged, then concatenated (an RoI grid): a mean
  over the whole box throws away where in the box things are, which is most of what tells a
  pedestrian from a bicycle at this resolution.
* **BatchNorm statistics from unmasked data.** The teacher's running statistics are copied from a
  student that only ever sees masked input; evaluated with them, the same untrained weights score
  far lower than with statistics of real windows. :func:`precise_bn` re-estimates them on the
  probe's own (unmasked, label-free) windows before the features are taken.
* **Scores for imbalanced classes.** Pedestrians are most of the boxes, so plain accuracy is
  reported beside balanced accuracy (mean recall over classes) and macro F1.

The same object appears at every label time, and two views of one track are near-duplicates: a
neighbour from the query's own track would make the probe measure tracking, not recognition.
``groups`` (one id per recording and track) therefore keeps a query's whole group out of its vote
in leave-one-out mode; ``mode="halves"`` instead votes the second half of the boxes (in order of
appearance, i.e. later in time) against the first.
"""

from __future__ import annotations

import copy
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from evcmae.backbones.batchnorm import cumulative_batchnorm


def box_cells(boxes: torch.Tensor, pixels_per_cell: Sequence[int]) -> torch.Tensor:
    """(M, 4) boxes x, y, w, h in sensor pixels -> (M, 4) inclusive cell ranges y0, x0, y1, x1.

    ``pixels_per_cell`` (py, px) is the voxelizer's cell size times the feature map's stride: a
    pixel (x, y) lies in cell (y // py, x // px), the floor rule the backbone's strided convs
    follow. The far edge is exclusive, hence the small step back before flooring."""
    py, px = (float(v) for v in pixels_per_cell)
    x, y, w, h = boxes.float().unbind(1)
    eps = 1e-3
    y0, x0 = torch.floor(y / py), torch.floor(x / px)
    y1 = torch.floor((y + torch.clamp(h - eps, min=0)) / py)
    x1 = torch.floor((x + torch.clamp(w - eps, min=0)) / px)
    return torch.stack([y0, x0, y1, x1], 1).long()


def roi_grid_pool(
    features: torch.Tensor,
    coords: torch.Tensor,
    box_sample: torch.Tensor,
    boxes: torch.Tensor,
    pixels_per_cell: Sequence[int],
    grid: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoI-grid embeddings: (M, grid·grid·C) means of the active sites in each sub-box, and (M,)
    bool, the box covered at least one site. ``grid=1`` is the plain mean over the box.

    ``boxes`` (M, 4) x, y, w, h in sensor pixels; a site (y, x) of a map with ``pixels_per_cell``
    (py, px) is placed by its centre ((y + ½)·py, (x + ½)·px) into the sub-box it falls in (those
    on the box edge go to the nearest). Empty sub-boxes are zeros."""
    py, px = (float(v) for v in pixels_per_cell)
    cells = box_cells(boxes, (py, px))
    coords = coords.long()
    M, C, G = boxes.shape[0], features.shape[1], grid * grid
    out = features.new_zeros(M, G, C)
    found = torch.zeros(M, dtype=torch.bool, device=features.device)
    bx, by, bw, bh = boxes.float().unbind(1)
    for b in torch.unique(box_sample).tolist():
        rows = torch.nonzero(box_sample == b).squeeze(1)
        sites = torch.nonzero(coords[:, 0] == b).squeeze(1)
        if sites.numel() == 0:
            continue
        y, x = coords[sites, 2], coords[sites, 3]
        c = cells[rows]
        inside = (y[None] >= c[:, 0:1]) & (y[None] <= c[:, 2:3]) & (x[None] >= c[:, 1:2]) & (x[None] <= c[:, 3:4])
        cy, cx = (y.float() + 0.5) * py, (x.float() + 0.5) * px
        gy = ((cy[None] - by[rows, None]) / bh[rows, None].clamp(min=1e-6) * grid).floor().clamp(0, grid - 1)
        gx = ((cx[None] - bx[rows, None]) / bw[rows, None].clamp(min=1e-6) * grid).floor().clamp(0, grid - 1)
        cell_of = (gy * grid + gx).long()
        site_feats = features[sites]
        for k in range(G):
            weight = (inside & (cell_of == k)).to(features.dtype)
            counts = weight.sum(1, keepdim=True)
            out[rows, k] = (weight @ site_feats) / counts.clamp(min=1)
        found[rows] = inside.any(1)
    return out.reshape(M, G * C), found


def classification_scores(pred, labels) -> dict:
    """Accuracy, balanced accuracy (mean recall over the classes present in ``labels``) and macro
    F1 (over the same classes; an undefined precision counts as 0). Rows with ``pred`` -1 (no
    vote) count as wrong."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    if len(labels) == 0:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan"), "macro_f1": float("nan")}
    recalls, f1s = [], []
    for c in np.unique(labels):
        tp = float(np.sum((pred == c) & (labels == c)))
        support, predicted = float(np.sum(labels == c)), float(np.sum(pred == c))
        recall = tp / support
        precision = tp / predicted if predicted else 0.0
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {
        "accuracy": float(np.mean(pred == labels)),
        "balanced_accuracy": float(np.mean(recalls)),
        "macro_f1": float(np.mean(f1s)),
    }


@torch.no_grad()
def precise_bn(backbone: nn.Module, batches: Iterable, forward=None) -> nn.Module:
    """A copy of ``backbone`` whose BatchNorm running statistics are the exact averages over
    ``batches`` (momentum None: a cumulative mean), left in eval mode; the original is untouched.
    ``forward(model, batch)`` runs one batch (default ``model(batch)``)."""
    model = copy.deepcopy(backbone)
    model.train()
    seen = 0
    with cumulative_batchnorm(model):
        for batch in batches:
            (forward or (lambda net, x: net(x)))(model, batch)
            seen += 1
    model.eval()
    if seen == 0:
        raise ValueError("precise_bn: no batch to estimate BatchNorm statistics from")
    return model


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _search(reference: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) indices of the largest inner products, best first; faiss's exact ``IndexFlatIP``
    (NumPy gives the same answer where faiss is not installed). -1 pads when k > len(reference)."""
    k_eff = min(k, len(reference))
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        index = faiss.IndexFlatIP(reference.shape[1])
        index.add(reference)
        _, nearest = index.search(queries, k_eff)
    else:
        sims = queries @ reference.T
        nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k_eff]
    if k_eff < k:
        nearest = np.concatenate([nearest, np.full((len(queries), k - k_eff), -1)], 1)
    return nearest.astype(np.int64)


def vote(neighbour_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Majority class of each row of (Q, k) labels (-1 = no neighbour), ties going to the class
    whose best neighbour ranks higher; -1 for a row without neighbours."""
    Q, k = neighbour_labels.shape
    scores = np.zeros((Q, num_classes + 1))
    rank_bonus = (k - np.arange(k)) / (k + 1.0)  # < 1, so it only breaks ties
    rows = np.repeat(np.arange(Q), k)
    cols = np.where(neighbour_labels >= 0, neighbour_labels, num_classes).reshape(-1)
    np.add.at(scores, (rows, cols), 1.0)
    best = np.zeros((Q, num_classes + 1))
    np.maximum.at(best, (rows, cols), np.tile(rank_bonus, Q))
    scores = (scores + best)[:, :num_classes]
    pred = scores.argmax(1)
    pred[(neighbour_labels < 0).all(1)] = -1
    return pred


class Votes(NamedTuple):
    """k-NN votes of the boxes that got one: predicted class, true class, and group (recording and
    track; the unit a bootstrap resamples)."""

    pred: np.ndarray
    truth: np.ndarray
    groups: np.ndarray


def knn_predict(embeddings, labels, k: int = 10, groups=None, mode: str = "loo") -> tuple[np.ndarray, np.ndarray]:
    """k-NN class votes of L2-normalised embeddings (cosine similarity): (predicted, labels) of the
    boxes that got a vote (:func:`knn_votes`)."""
    votes = knn_votes(embeddings, labels, k, groups, mode)
    return votes.pred, votes.truth


def knn_votes(embeddings, labels, k: int = 10, groups=None, mode: str = "loo") -> Votes:
    """mode "loo": every embedding is voted on by its k nearest others outside its group
    (``groups`` None: each embedding is its own group). mode "halves": the second half is voted on
    by the first."""
    x = _normalise(np.asarray(embeddings))
    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    g = np.arange(n) if groups is None else np.asarray(groups)
    if n < 2:
        return Votes(np.zeros(0, np.int64), np.zeros(0, np.int64), g[:0])
    num_classes = int(y.max()) + 1
    if mode == "halves":
        half = n // 2
        nearest = _search(x[:half], x[half:], k)
        neighbour_labels = np.where(nearest >= 0, y[np.maximum(nearest, 0)], -1)
        return Votes(vote(neighbour_labels, num_classes), y[half:], g[half:])
    if mode != "loo":
        raise ValueError(f"mode must be 'loo' or 'halves', got {mode!r}")
    largest_group = int(np.unique(g, return_counts=True)[1].max())
    nearest = _search(x, x, k + largest_group)
    same = (nearest < 0) | (g[np.maximum(nearest, 0)] == g[:, None])
    # Keep the first k neighbours outside the query's group, in rank order.
    order = np.argsort(same, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(nearest, order, 1)
    kept[np.take_along_axis(same, order, 1)] = -1
    neighbour_labels = np.where(kept >= 0, y[np.maximum(kept, 0)], -1)
    has_vote = (kept >= 0).any(1)
    return Votes(vote(neighbour_labels, num_classes)[has_vote], y[has_vote], g[has_vote])


def knn_accuracy(embeddings, labels, k: int = 10, groups=None, mode: str = "loo") -> float:
    """Plain accuracy of :func:`knn_predict`; NaN when there is nothing to vote on."""
    pred, truth = knn_predict(embeddings, labels, k, groups, mode)
    return float((pred == truth).mean()) if len(truth) else float("nan")


def knn_scores(embeddings, labels, k: int = 10, groups=None, mode: str = "loo") -> dict:
    """:func:`classification_scores` of the k-NN votes, plus the box count and the accuracy of
    always answering the commonest class (for scale)."""
    return votes_scores(knn_votes(embeddings, labels, k, groups, mode), labels)


def votes_scores(votes: Votes, labels) -> dict:
    """:func:`classification_scores` of ``votes``, the box count of ``labels`` (every box, voted or
    not), the majority-class accuracy, and a 95 % interval of the balanced accuracy
    (:func:`group_bootstrap`)."""
    scores = classification_scores(votes.pred, votes.truth)
    labels = np.asarray(labels)
    scores["boxes"] = int(len(labels))
    scores["majority_accuracy"] = float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")
    scores["tracks_per_class"] = tracks_per_class(votes)
    scores["balanced_accuracy_ci95"] = group_bootstrap(
        votes.groups, lambda idx: classification_scores(votes.pred[idx], votes.truth[idx])["balanced_accuracy"]
    )
    return scores


def tracks_per_class(votes: Votes) -> dict[str, int]:
    """How many tracks (groups) of each class were voted on, keyed by class index. A class seen in
    one or two tracks can hardly be recognised when the query's own track is left out, so the
    probe's level on a small split depends on this as much as on the encoder."""
    return {str(int(c)): int(len(np.unique(votes.groups[votes.truth == c]))) for c in np.unique(votes.truth)}


def group_bootstrap(groups, statistic, resamples: int = 1000, seed: int = 0) -> list[float] | None:
    """Percentile 95 % interval of ``statistic(index)`` over bootstrap resamples of whole groups.

    Boxes of one track at successive label times are near-duplicates, so resampling boxes would
    understate the spread; a resample draws as many groups as there are, with replacement, and
    takes every box of each. ``statistic`` gets the box indices of a resample. None with fewer
    than two groups."""
    groups = np.asarray(groups)
    ids, inverse = np.unique(groups, return_inverse=True)
    if len(ids) < 2:
        return None
    members = [np.flatnonzero(inverse == i) for i in range(len(ids))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        picked = rng.integers(len(ids), size=len(ids))
        value = statistic(np.concatenate([members[i] for i in picked]))
        if np.isfinite(value):
            values.append(value)
    if not values:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def paired_difference(a: Votes, b: Votes) -> dict | None:
    """Balanced accuracy of ``a`` minus that of ``b`` on the same boxes, with its 95 % interval
    (one group resample serves both, so what the two share cancels). None when the two voted on
    different boxes (an encoder without sites under some box drops it)."""
    same = len(a.truth) == len(b.truth) and np.array_equal(a.truth, b.truth) and np.array_equal(a.groups, b.groups)
    if not same:
        return None

    def diff(idx):
        bal = [classification_scores(v.pred[idx], v.truth[idx])["balanced_accuracy"] for v in (a, b)]
        return bal[0] - bal[1]

    return {"balanced_accuracy": float(diff(np.arange(len(a.truth)))), "ci95": group_bootstrap(a.groups, diff)}


class RawFeatures(nn.Module):
    """The "no encoder" reference: the input voxels' own features (per-polarity counts, mean time),
    offered under the name ``raw`` at stride 1, so the probe pools them exactly as it pools an
    encoder's features."""

    out_strides = {"raw": (1, 1, 1)}

    def forward(self, voxels, until: str | None = None) -> dict:
        from evcmae.backbones.spconv_compat import to_sparse_tensor

        return {"raw": to_sparse_tensor(voxels)}


@torch.no_grad()
def embed_boxes(backbone: nn.Module, batches: Iterable, scale: str, grid: int = 2, device="cpu"):
    """(embeddings, classes, groups) of every labelled box of ``batches`` (``LabelledBatch``), from
    ``backbone``'s ``scale`` output in eval mode, RoI-grid pooled."""
    backbone = backbone.to(device).eval()
    parts = []
    for batch in batches:
        batch = batch.to(device)
        out = backbone(batch.voxels, until=scale)[scale]
        _, sy, sx = backbone.out_strides[scale]
        cell = (batch.cell_size[0] * sy, batch.cell_size[1] * sx)
        emb, found = roi_grid_pool(out.features.float(), out.indices, batch.box_sample, batch.boxes, cell, grid)
        parts.append((emb[found].cpu(), batch.classes[found].cpu(), batch.groups[found].cpu()))
    if not parts:
        raise ValueError("probe: no labelled window to embed")
    return tuple(torch.cat(list(p)) for p in zip(*parts))


def probe_votes(
    backbone: nn.Module,
    loader,
    scale: str,
    grid: int = 2,
    k: int = 10,
    mode: str = "loo",
    exclude_same_track: bool = True,
    recalibrate_bn: bool = True,
    device="cpu",
) -> tuple[Votes, np.ndarray]:
    """The whole probe on one encoder: BatchNorm statistics re-estimated on the probe's windows
    (``recalibrate_bn``), boxes embedded and voted on. Returns the votes and every box's class:
    :func:`votes_scores` scores them, :func:`paired_difference` compares two encoders box by box."""
    if recalibrate_bn and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
        backbone = precise_bn(
            backbone.to(device), (b.to(device).voxels for b in loader), lambda n, v: n(v, until=scale)
        )
    emb, classes, groups = embed_boxes(backbone, loader, scale, grid, device)
    labels = classes.numpy()
    # Without the group rule every box is its own group, for the vote and for the bootstrap alike.
    return knn_votes(emb.numpy(), labels, k, groups.numpy() if exclude_same_track else None, mode), labels
