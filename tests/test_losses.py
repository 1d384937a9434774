"""Each loss against a naive reference (Python loops over tiny inputs) or a hand computation."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from evcmae.losses.frame_contrastive import (
    FrameContrastiveLoss,
    FrameProjector,
    KeyQueue,
    knn_exclusion,
    masked_mean_pool,
    temporal_exclusion,
)
from evcmae.losses.occupancy import OccupancyDecoder, OccupancyLoss, occupancy_queries
from evcmae.losses.reconstruction import MultiScaleReconstructionLoss, normalized_targets
from evcmae.losses.sparse_ops import CoordIndex, NeighbourConv, coarsen, kernel_offsets, match_coords, unique_coords
from evcmae.losses.total import DEFAULT_WEIGHTS, NonFiniteLossError, PretrainLoss, enabled_terms, weighted_total
from evcmae.losses.voxel_nce import VoxelInfoNCELoss, exclusion_mask


def random_coords(n, batch=2, shape=(3, 6, 7), seed=0):
    """Unique (n', 4) coordinates (batch, t, y, x) inside ``shape``."""
    g = torch.Generator().manual_seed(seed)
    c = torch.stack([torch.randint(0, s, (n,), generator=g) for s in (batch, *shape)], 1)
    return torch.unique(c, dim=0)


def as_tuples(coords):
    return [tuple(r) for r in coords.tolist()]


# ---------------------------------------------------------------- coordinate helpers


def test_match_coords_against_dict():
    ref = random_coords(60, seed=1).int()
    query = torch.cat([random_coords(40, seed=2), torch.tensor([[0, -1, 0, 0], [1, 0, 0, 99], [5, 0, 0, 0]])])
    table = {c: i for i, c in enumerate(as_tuples(ref))}
    expected = [table.get(c, -1) for c in as_tuples(query)]
    assert match_coords(query, ref).tolist() == expected
    assert (match_coords(query, ref[:0]) == -1).all()


def test_lookup_never_aliases_outside_the_box():
    ref = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 0]])  # x extent 1: (y=0, x=1) would alias (y=1, x=0)
    assert match_coords(torch.tensor([[0, 0, 0, 1], [0, 0, 1, 0]]), ref).tolist() == [-1, 1]


def test_coarsen_matches_set_of_floor_divisions():
    coords = random_coords(80, shape=(4, 9, 9), seed=3)
    expected = sorted({(b, t // 2, y // 4, x // 4) for b, t, y, x in as_tuples(coords)})
    assert as_tuples(coarsen(coords, (2, 4, 4))) == expected


def test_unique_coords_matches_torch_unique():
    coords = torch.cat([random_coords(50, seed=9), random_coords(50, seed=9)[:20] - 3]).int()
    coords = coords[torch.randperm(coords.shape[0])]
    assert torch.equal(unique_coords(coords), torch.unique(coords.long(), dim=0))
    assert unique_coords(coords[:0]).shape == (0, 4)


def test_kernel_offsets_centre_first():
    off = kernel_offsets(3)
    assert off.shape == (27, 4) and off[0].tolist() == [0, 0, 0, 0] and len(set(as_tuples(off))) == 27


def naive_neighbour_conv(conv, feats, coords, out_coords):
    table = {c: i for i, c in enumerate(as_tuples(coords))}
    out = []
    for q in as_tuples(out_coords):
        acc = conv.bias.detach().clone()
        for k, o in enumerate(as_tuples(conv.offsets)):
            j = table.get(tuple(a + b for a, b in zip(q, o)))
            if j is not None:
                acc = acc + feats[j] @ conv.weight[k].detach()
        out.append(acc)
    return torch.stack(out)


def test_neighbour_conv_matches_naive_loop_and_passes_gradients():
    torch.manual_seed(0)
    coords = random_coords(50, seed=4)
    feats = torch.randn(coords.shape[0], 5, requires_grad=True)
    conv = NeighbourConv(5, 3, kernel_size=3)
    out_coords = torch.cat([coords[:10], random_coords(10, seed=5)])
    out = conv(feats, conv.neighbours(CoordIndex(coords), out_coords))
    torch.testing.assert_close(out, naive_neighbour_conv(conv, feats.detach(), coords, out_coords))
    out.sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0


# ---------------------------------------------------------------- occupancy


def test_occupancy_queries_hand_example():
    # One sample, one time bin, stride (1, 2, 2). Fine voxels -> coarse cells:
    # visible (0,0) -> cell (0,0); masked (0,2),(1,3) -> cell (0,1); masked (4,4) -> cell (2,2).
    vis = torch.tensor([[0, 0, 0, 0]])
    masked = torch.tensor([[0, 0, 0, 2], [0, 0, 1, 3], [0, 0, 4, 4]])
    full = torch.cat([vis, masked])
    q = occupancy_queries(
        full, vis, masked, stride=(1, 2, 2), num_empty_per_positive=100, neighbourhood=(0, 1, 1), grid_shape=(1, 3, 3)
    )
    pos = as_tuples(q.coords[: q.num_positive])
    neg = set(as_tuples(q.coords[q.num_positive :]))
    assert pos == [(0, 0, 0, 1), (0, 0, 2, 2)] and q.targets[:2].tolist() == [1, 1]
    # the 3x3 coarse grid minus the occupied cells and (2, 0), which touches no positive
    grid = {(0, 0, y, x) for y in range(3) for x in range(3)}
    expected = grid - {(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 2, 2), (0, 0, 2, 0)}
    assert neg == expected and (q.targets[2:] == 0).all() and len(neg) == q.coords.shape[0] - 2


def test_occupancy_queries_sampling_quota_and_validity():
    full = random_coords(400, batch=3, shape=(4, 32, 32), seed=6)
    g = torch.Generator().manual_seed(1)
    is_masked = torch.rand(full.shape[0], generator=g) < 0.5
    vis, masked = full[~is_masked], full[is_masked]
    stride = (2, 4, 4)
    q = occupancy_queries(full, vis, masked, stride, num_empty_per_positive=0.5, generator=g)
    pos, neg = q.coords[: q.num_positive], q.coords[q.num_positive :]
    full_cells = set(as_tuples(coarsen(full, stride)))
    assert set(as_tuples(pos)) == set(as_tuples(coarsen(masked, stride)))
    assert not (set(as_tuples(neg)) & full_cells)  # negatives are empty in the full input
    assert len(set(as_tuples(neg))) == neg.shape[0]  # no duplicates
    pos_set = set(as_tuples(pos))
    for b, t, y, x in as_tuples(neg):  # each near a positive of its own sample
        around = itertools.product((-1, 0, 1), repeat=3)
        assert any((b, t + dt, y + dy, x + dx) in pos_set for dt, dy, dx in around)
    for b in range(3):  # per-sample quota (capped by what exists)
        n_pos = int((pos[:, 0] == b).sum())
        assert int((neg[:, 0] == b).sum()) == round(0.5 * n_pos)
    again = occupancy_queries(full, vis, masked, stride, 0.5, generator=torch.Generator().manual_seed(1))
    assert q.coords.shape[0] > 0 and (neg >= 0).all()
    ref = occupancy_queries(full, vis, masked, stride, 0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.coords, ref.coords)


def test_occupancy_queries_exclude_partially_visible():
    vis = torch.tensor([[0, 0, 0, 0]])
    masked = torch.tensor([[0, 0, 0, 1], [0, 0, 5, 5]])  # the first shares cell (0, 0) with `vis`
    q = occupancy_queries(torch.cat([vis, masked]), vis, masked, (1, 2, 2), exclude_partially_visible=True)
    assert as_tuples(q.coords[: q.num_positive]) == [(0, 0, 2, 2)]


def test_occupancy_bce_and_focal_against_hand_formula():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0], requires_grad=True)
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0])
    sig = [1 / (1 + math.exp(-z)) for z in logits.tolist()]
    pw = 3.0
    bce = [-(pw * y * math.log(p) + (1 - y) * math.log(1 - p)) for p, y in zip(sig, targets.tolist())]
    got = OccupancyLoss("bce", pos_weight=pw)(logits, targets)
    assert got.item() == pytest.approx(sum(bce) / 4, rel=1e-6)
    g, a = 2.0, 0.25
    focal = []
    for p, y in zip(sig, targets.tolist()):
        pt = p if y == 1 else 1 - p
        focal.append(-(a if y == 1 else 1 - a) * (1 - pt) ** g * math.log(pt))
    got = OccupancyLoss("focal", gamma=g, alpha=a)(logits, targets)
    assert got.item() == pytest.approx(sum(focal) / 4, rel=1e-6)
    got.backward()
    assert logits.grad.abs().sum() > 0


def test_occupancy_decoder_gradients_and_no_query_leak():
    torch.manual_seed(0)
    coords = random_coords(40, shape=(2, 5, 5), seed=7)
    feats = torch.randn(coords.shape[0], 8, requires_grad=True)
    dec = OccupancyDecoder(8, hidden=16)
    queries = random_coords(30, shape=(2, 5, 5), seed=8)
    far = torch.tensor([[0, 0, 50, 50], [1, 1, 60, 60]])  # no student site within reach
    logits = dec((feats, coords), torch.cat([queries, far]))
    assert logits.shape == (queries.shape[0] + 2,)
    # a query's logit does not depend on which other cells are queried
    torch.testing.assert_close(dec((feats, coords), queries[:5]), logits[:5])
    torch.testing.assert_close(logits[-2], logits[-1])  # out of reach: bias only
    loss = OccupancyLoss()(logits, torch.ones_like(logits))
    loss.backward()
    assert feats.grad.abs().sum() > 0
    empty = OccupancyLoss()(logits[:0], logits[:0])
    assert empty.item() == 0 and empty.requires_grad


# ---------------------------------------------------------------- reconstruction


def naive_reconstruction(module, student, teacher):
    losses = []
    for s in module.scales:
        dec = module.decoders[s]
        (sf, sc), (tf, tc) = student[s], teacher[s]
        pred = naive_neighbour_conv(dec.gather, sf.detach(), sc, tc)
        table = set(as_tuples(sc))
        offsets = as_tuples(dec.gather.offsets)
        reach = torch.tensor([any(tuple(a + b for a, b in zip(q, o)) in table for o in offsets) for q in as_tuples(tc)])
        if not reach.any():
            continue
        pred = dec.mlp(pred)[reach]
        tgt = tf[reach]
        tgt = (tgt - tgt.mean(1, keepdim=True)) / torch.sqrt(tgt.var(1, unbiased=False, keepdim=True) + 1e-6)
        losses.append(((pred - tgt) ** 2).mean())
    return sum(losses) / len(losses)


def make_pyramid(seed, channels=None):
    """Teacher sees all voxels; the student a subset (as with masking)."""
    if channels is None:
        channels = {"x_conv2": 4, "x_conv3": 6, "x_conv4": 8}
    g = torch.Generator().manual_seed(seed)
    student, teacher = {}, {}
    for i, (name, c) in enumerate(channels.items()):
        tc = random_coords(40, shape=(2, 6, 6), seed=seed + i)
        keep = torch.rand(tc.shape[0], generator=g) < 0.5
        teacher[name] = (torch.randn(tc.shape[0], c, generator=g), tc)
        student[name] = (torch.randn(int(keep.sum()), c, generator=g, requires_grad=True), tc[keep])
    return student, teacher, channels


def test_reconstruction_matches_naive_loop_and_gradients():
    torch.manual_seed(0)
    student, teacher, channels = make_pyramid(10)
    module = MultiScaleReconstructionLoss(channels)
    res = module(student, teacher)
    torch.testing.assert_close(res.loss, naive_reconstruction(module, student, teacher))
    assert set(res.per_scale) == set(channels) and all(0 < c <= 1 for c in res.coverage.values())
    res.loss.backward()
    assert all(student[s][0].grad.abs().sum() > 0 for s in channels)


def test_reconstruction_kernel1_scores_only_shared_voxels_and_smooth_l1():
    student, teacher, channels = make_pyramid(20)
    module = MultiScaleReconstructionLoss(channels, scales=("x_conv4",), kernel_size=1, loss="smooth_l1", beta=0.5)
    (sf, sc), (tf, tc) = student["x_conv4"], teacher["x_conv4"]
    res = module(student, teacher)
    rows = match_coords(tc, sc)
    hit = rows >= 0
    dec = module.decoders["x_conv4"]
    pred = dec.mlp(sf[rows[hit]] @ dec.gather.weight[0] + dec.gather.bias)
    expected = F.smooth_l1_loss(pred, normalized_targets(tf[hit]), beta=0.5)
    torch.testing.assert_close(res.loss, expected)
    assert res.coverage["x_conv4"] == pytest.approx(hit.float().mean().item())


def test_reconstruction_targets_are_normalised_and_detached():
    t = torch.randn(5, 7, requires_grad=True) * 3 + 2
    n = normalized_targets(t)
    assert not n.requires_grad
    torch.testing.assert_close(n.mean(1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(n.var(1, unbiased=False), torch.ones(5), atol=1e-4, rtol=0)


def test_reconstruction_scale_out_of_reach_is_skipped_but_stays_in_graph():
    student, teacher, channels = make_pyramid(30)
    sf, sc = student["x_conv2"]
    student["x_conv2"] = (sf, sc + torch.tensor([0, 0, 100, 100]))  # far from every teacher voxel
    module = MultiScaleReconstructionLoss(channels)
    res = module(student, teacher)
    assert "x_conv2" not in res.per_scale and res.coverage["x_conv2"] == 0
    torch.testing.assert_close(res.loss, (res.per_scale["x_conv3"] + res.per_scale["x_conv4"]) / 2)
    res.loss.backward()  # every decoder's parameters reached (DDP-safe)
    assert all(p.grad is not None for p in module.parameters())


# ---------------------------------------------------------------- voxel InfoNCE


def naive_voxel_nce(s_emb, s_coords, t_emb, t_coords, tau, radius):
    s_emb, t_emb = F.normalize(s_emb, dim=1), F.normalize(t_emb, dim=1)
    t_list = as_tuples(t_coords)
    losses = []
    for i, c in enumerate(as_tuples(s_coords)):
        if c not in t_list:
            continue
        j = t_list.index(c)
        pos = math.exp(float(s_emb[i] @ t_emb[j]) / tau)
        neg = 0.0
        for m, cm in enumerate(t_list):
            if cm[0] == c[0] and (cm[2] - c[2]) ** 2 + (cm[3] - c[3]) ** 2 <= radius**2:
                continue
            neg += math.exp(float(s_emb[i] @ t_emb[m]) / tau)
        losses.append(-math.log(pos / (pos + neg)))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("radius", [0.0, 1.5])
def test_voxel_nce_matches_naive_loop(radius):
    g = torch.Generator().manual_seed(0)
    t_coords = random_coords(30, shape=(2, 5, 5), seed=11)
    s_coords = torch.cat([t_coords[::2], torch.tensor([[0, 0, 9, 9]])])  # one student voxel unmatched
    s_emb = torch.randn(s_coords.shape[0], 6, generator=g, requires_grad=True)
    t_emb = torch.randn(t_coords.shape[0], 6, generator=g, requires_grad=True)
    loss = VoxelInfoNCELoss(temperature=0.1, exclusion_radius=radius)(s_emb, s_coords, t_emb, t_coords)
    expected = naive_voxel_nce(s_emb.detach(), s_coords, t_emb.detach(), t_coords, 0.1, radius)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert s_emb.grad.abs().sum() > 0 and t_emb.grad is None


def test_voxel_nce_exclusion_mask_by_hand():
    anchors = torch.tensor([[0, 0, 5, 5]])
    negs = torch.tensor([[0, 3, 5, 5], [0, 0, 6, 6], [0, 0, 7, 5], [1, 0, 5, 5], [0, 1, 5, 6]])
    assert exclusion_mask(anchors, negs, 1.0).tolist() == [[True, False, False, False, True]]
    assert exclusion_mask(anchors, negs, 1.5).tolist() == [[True, True, False, False, True]]
    assert exclusion_mask(anchors, negs, -1).tolist() == [[True, False, False, False, False]]


def test_voxel_nce_caps_are_reproducible():
    t_coords = random_coords(200, shape=(3, 8, 8), seed=12)
    emb = torch.randn(t_coords.shape[0], 8)
    module = VoxelInfoNCELoss(max_negatives=16, max_anchors=8)
    a = module(emb + 0.1, t_coords, emb, t_coords, generator=torch.Generator().manual_seed(3))
    b = module(emb + 0.1, t_coords, emb, t_coords, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(a) and a.item() == b.item()


# ---------------------------------------------------------------- frame contrastive


def test_masked_mean_pool_and_projector():
    feats = torch.arange(12, dtype=torch.float).reshape(6, 2)
    batch = torch.tensor([0, 0, 2, 2, 2, 0])
    pooled = masked_mean_pool(feats, batch, 4)
    zero = torch.zeros(2)
    expected = torch.stack([feats[[0, 1, 5]].mean(0), zero, feats[[2, 3, 4]].mean(0), zero])
    torch.testing.assert_close(pooled, expected)
    out = FrameProjector(2, hidden=8, out_dim=4)(feats, batch, 4)
    assert out.shape == (4, 4)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))


def test_key_queue_wraps_and_keeps_newest():
    q = KeyQueue(size=5, dim=2)
    assert not q.valid.any()
    q.enqueue(torch.ones(3, 2), torch.tensor([7, 7, 7]), torch.tensor([0, 1, 2]))
    q.enqueue(torch.full((4, 2), 2.0), torch.tensor([8, 8, 8, 8]), torch.tensor([3, 4, 5, 6]))
    assert q.rec_ids.tolist() == [8, 8, 7, 8, 8] and q.win_idx.tolist() == [5, 6, 2, 3, 4] and int(q.ptr) == 2
    q.enqueue(torch.arange(14.0).reshape(7, 2), torch.arange(7), torch.arange(7))  # more than fits
    assert sorted(q.rec_ids.tolist()) == [2, 3, 4, 5, 6] and int(q.ptr) == 2
    assert set(q.state_dict()) == {"keys", "rec_ids", "win_idx", "ptr"}


def test_temporal_and_knn_exclusion_masks():
    rec = torch.tensor([1, 2])
    win = torch.tensor([10, 0])
    q_rec = torch.tensor([1, 1, 1, 2, -1])
    q_win = torch.tensor([8, 12, 13, 0, 10])
    assert temporal_exclusion(rec, win, q_rec, q_win, 2).tolist() == [
        [True, True, False, False, False],
        [False, False, False, True, False],
    ]
    g = torch.Generator().manual_seed(0)
    keys = F.normalize(torch.randn(20, 8, generator=g), dim=1)
    pos = F.normalize(torch.randn(3, 8, generator=g), dim=1)
    valid = torch.ones(20, dtype=torch.bool)
    valid[[0, 5]] = False
    sims = (pos @ keys.t()).masked_fill(~valid, -2)
    expected = torch.zeros(3, 20, dtype=torch.bool).scatter_(1, sims.topk(4, dim=1).indices, True)
    pytest.importorskip("faiss")
    assert torch.equal(knn_exclusion(pos, keys, valid, 4, use_faiss=True), expected)
    assert torch.equal(knn_exclusion(pos, keys, valid, 4, use_faiss=False), expected)


def naive_frame_loss(query, pos, queue, rec, win, tau, radius, excluded_knn):
    query, pos = F.normalize(query, dim=1), F.normalize(pos, dim=1)
    losses = []
    for b in range(query.shape[0]):
        num = math.exp(float(query[b] @ pos[b]) / tau)
        den = num
        for k in range(queue.size):
            r, w = int(queue.rec_ids[k]), int(queue.win_idx[k])
            if r < 0 or (r == int(rec[b]) and abs(w - int(win[b])) <= radius) or excluded_knn[b, k]:
                continue
            den += math.exp(float(query[b] @ queue.keys[k]) / tau)
        losses.append(-math.log(num / den))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("knn", [0, 3])
def test_frame_contrastive_matches_naive_loop(knn):
    g = torch.Generator().manual_seed(1)
    queue = KeyQueue(size=16, dim=8)
    keys = F.normalize(torch.randn(12, 8, generator=g), dim=1)
    queue.enqueue(keys, torch.randint(0, 3, (12,), generator=g), torch.randint(0, 6, (12,), generator=g))
    query = torch.randn(4, 8, generator=g, requires_grad=True)
    pos = torch.randn(4, 8, generator=g)
    rec, win = torch.tensor([0, 1, 2, 5]), torch.tensor([2, 3, 4, 0])
    crit = FrameContrastiveLoss(temperature=0.1, window_radius=1, knn_exclude=knn, use_faiss=False)
    loss = crit(query, pos, queue, rec, win)
    excluded_knn = torch.zeros(4, 16, dtype=torch.bool)
    if knn:
        excluded_knn = knn_exclusion(F.normalize(pos, dim=1), queue.keys, queue.valid, knn, use_faiss=False)
    expected = naive_frame_loss(query.detach(), pos, queue, rec, win, 0.1, 1, excluded_knn)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert query.grad.abs().sum() > 0


def test_frame_contrastive_empty_queue_is_finite():
    """At the start of training the queue is empty: every negative is masked, the loss is 0."""
    query = torch.randn(3, 4, requires_grad=True)
    crit = FrameContrastiveLoss(knn_exclude=2)
    loss = crit(query, torch.randn(3, 4), KeyQueue(8, 4), torch.zeros(3), torch.zeros(3))
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(query.grad).all()


# ---------------------------------------------------------------- total


def test_weighted_total_and_logging():
    values = {"occupancy": 2.0, "reconstruction": 1.0, "voxel_nce": 3.0, "frame_contrastive": 4.0}
    terms = {k: torch.tensor(v) for k, v in values.items()}
    total, logged = weighted_total(terms, DEFAULT_WEIGHTS)
    assert total.item() == pytest.approx(2 + 1 + 0.6 * 3 + 0.3 * 4)
    assert set(logged) == set(terms) | {"total"}


def test_zero_weight_skips_the_branch():
    weights = {"occupancy": 1.0, "reconstruction": 0.0, "voxel_nce": 0.6, "frame_contrastive": 0}
    assert enabled_terms(weights) == ["occupancy", "voxel_nce"]
    x = torch.tensor(1.0, requires_grad=True)
    terms = {"occupancy": 2 * x, "voxel_nce": 3 * x, "reconstruction": torch.tensor(float("nan"))}
    total, logged = weighted_total(terms, weights)  # a disabled term never enters, even as NaN
    assert total.item() == pytest.approx(2 + 1.8) and math.isnan(logged["reconstruction"])
    total.backward()
    assert x.grad.item() == pytest.approx(3.8)
    with pytest.raises(KeyError):
        weighted_total({"occupancy": x}, weights)  # an enabled term was not computed
    loss = PretrainLoss(reconstruction=0.0)
    assert not loss.is_enabled("reconstruction") and loss.is_enabled("voxel_nce")
    with pytest.raises(ValueError):
        enabled_terms({"occupancy": -1.0})


def test_non_finite_term_is_named():
    terms = {k: torch.tensor(1.0) for k in DEFAULT_WEIGHTS}
    terms["reconstruction"] = torch.tensor(float("inf"))
    with pytest.raises(NonFiniteLossError) as err:
        weighted_total(terms, DEFAULT_WEIGHTS)
    assert err.value.term == "reconstruction" and "reconstruction" in str(err.value)
    assert isinstance(err.value, FloatingPointError)


# ---------------------------------------------------------------- with the real backbone


def test_losses_on_sparse_backbone_outputs():
    """The coordinate frame the losses assume (coarse cell = fine // cumulative stride) is the one
    the backbone's strided convs produce, and every loss backpropagates into the student."""
    from evcmae.backbones import sparse_resnet
    from evcmae.events.voxelize import VoxelBatch
    from evcmae.losses.heads import ProjectionHead
    from evcmae.pretrain.ema import make_teacher

    g = torch.Generator().manual_seed(0)
    shape = (6, 32, 48)
    full = random_coords(1500, batch=2, shape=shape, seed=13)
    feats = torch.rand(full.shape[0], 3, generator=g)
    vis = torch.rand(full.shape[0], generator=g) < 0.5
    torch.manual_seed(0)
    student = sparse_resnet.SparseVoxelBackbone(blocks=(1, 1, 1, 1))
    teacher = make_teacher(student)
    s_out = student(VoxelBatch(full[vis].int(), feats[vis], shape, 2))
    with torch.no_grad():
        t_out = teacher(VoxelBatch(full.int(), feats, shape, 2))
    stride = student.out_strides["x_conv4"]
    assert (match_coords(coarsen(full, stride), t_out["x_conv4"].indices) >= 0).all()

    q = occupancy_queries(full, full[vis], full[~vis], stride, generator=g)
    occ = OccupancyLoss()(OccupancyDecoder(128, hidden=16)(s_out["x_conv4"], q.coords), q.targets)
    rec = MultiScaleReconstructionLoss(student.out_channels)(s_out, t_out).loss
    head = ProjectionHead(128, hidden=32, out_dim=16)
    s4, t4 = s_out["x_conv4"], t_out["x_conv4"]
    nce = VoxelInfoNCELoss()(head(s4.features), s4.indices, head(t4.features), t4.indices)
    frame = FrameProjector(128, hidden=32, out_dim=16)(s4)
    (occ + rec + nce + frame.sum()).backward()
    assert all(p.grad is not None for p in student.parameters())
