"""The representation probe against brute-force NumPy computations on fixed inputs."""

import copy

import numpy as np
import pytest
import torch

from evcmae.pretrain.probe import box_cells, knn_accuracy, roi_grid_pool


def brute_force_knn(x, y, k, groups=None, mode="loo"):
    """The definition, one query at a time: cosine similarity, nearest k outside the query's group,
    majority vote, ties to the class whose best neighbour ranks highest."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(y)
    groups = np.arange(n) if groups is None else groups
    if mode == "halves":
        refs, queries = list(range(n // 2)), list(range(n // 2, n))
    else:
        refs, queries = list(range(n)), list(range(n))
    correct, voted = 0, 0
    for q in queries:
        cand = [r for r in refs if mode == "halves" or groups[r] != groups[q]]
        if not cand:
            continue
        cand.sort(key=lambda r: -float(x[q] @ x[r]))
        near = cand[:k]
        counts = {}
        for rank, r in enumerate(near):
            c = int(y[r])
            n_c, best = counts.get(c, (0, None))
            counts[c] = (n_c + 1, rank if best is None else best)
        pred = max(counts, key=lambda c: (counts[c][0], -counts[c][1]))
        voted += 1
        correct += pred == y[q]
    return correct / voted


@pytest.mark.parametrize("k", [1, 4, 10])
@pytest.mark.parametrize("mode,grouped", [("loo", False), ("loo", True), ("halves", False)])
def test_knn_accuracy_matches_brute_force(k, mode, grouped):
    rng = np.random.default_rng(k)
    n, d, classes = 120, 16, 4
    centres = rng.normal(size=(classes, d))
    y = rng.integers(0, classes, n)
    x = (centres[y] + 1.5 * rng.normal(size=(n, d))).astype(np.float32)
    groups = rng.integers(0, 30, n) if grouped else None
    got = knn_accuracy(x, y, k=k, groups=groups, mode=mode)
    want = brute_force_knn(x, y, k, groups, mode)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0.25 < got <= 1.0  # the clusters are findable


def test_knn_ties_go_to_the_nearer_class():
    # Query 0's two nearest others: one of class 1 (nearest), one of class 2: a 1-1 tie.
    x = np.array([[1, 0], [0.99, 0.14], [0.9, 0.43], [-1, 0]], dtype=np.float32)
    y = np.array([1, 1, 2, 2])
    assert knn_accuracy(x, y, k=2) == brute_force_knn(x, y, 2)


def test_knn_degenerate_inputs():
    assert np.isnan(knn_accuracy(np.ones((1, 3)), [0]))
    # Every box in one group: nobody may vote.
    assert np.isnan(knn_accuracy(np.eye(3), [0, 1, 2], groups=[5, 5, 5]))


def test_box_cells_and_pooling_match_a_loop():
    rng = np.random.default_rng(0)
    B, H, W, C, stride_px = 2, 12, 20, 5, 8
    coords = torch.tensor(
        [(b, t, yy, xx) for b in range(B) for t in range(3) for yy in range(H) for xx in range(W) if rng.random() < 0.3]
    )
    features = torch.randn(len(coords), C)
    boxes = torch.tensor(
        [[10.0, 5.0, 30.0, 17.0], [0.0, 0.0, 8.0, 8.0], [150.0, 90.0, 7.0, 3.0], [40.0, 40.0, 0.5, 0.5]]
    )
    box_sample = torch.tensor([0, 1, 1, 0])
    cells = box_cells(boxes, (stride_px, stride_px))
    # [0, 8) px is exactly cell 0: the far edge is exclusive.
    assert cells[1].tolist() == [0, 0, 0, 0]
    assert cells[0].tolist() == [5 // 8, 10 // 8, (5 + 17 - 1) // 8, (10 + 30 - 1) // 8]
    emb, found = roi_grid_pool(features, coords, box_sample, boxes, (stride_px, stride_px), grid=1)
    for m in range(len(boxes)):
        y0, x0, y1, x1 = cells[m].tolist()
        sel = [
            (i)
            for i, (b, t, yy, xx) in enumerate(coords.tolist())
            if b == box_sample[m] and y0 <= yy <= y1 and x0 <= xx <= x1
        ]
        assert bool(found[m]) == bool(sel)
        if sel:
            torch.testing.assert_close(emb[m], features[sel].mean(0))
        else:
            assert torch.all(emb[m] == 0)


def _naive_grid_pool(features, coords, box_sample, boxes, ppc, grid):
    out = torch.zeros(len(boxes), grid * grid, features.shape[1])
    found = torch.zeros(len(boxes), dtype=torch.bool)
    py, px = ppc
    for m, (x, y, w, h) in enumerate(boxes.tolist()):
        y0, x0 = int(y // py), int(x // px)
        y1, x1 = int((y + max(h - 1e-3, 0)) // py), int((x + max(w - 1e-3, 0)) // px)
        sums = torch.zeros(grid * grid, features.shape[1])
        counts = torch.zeros(grid * grid)
        for i, (b, _, sy, sx) in enumerate(coords.tolist()):
            if b != int(box_sample[m]) or not (y0 <= sy <= y1 and x0 <= sx <= x1):
                continue
            gy = min(max(int(((sy + 0.5) * py - y) / h * grid), 0), grid - 1)
            gx = min(max(int(((sx + 0.5) * px - x) / w * grid), 0), grid - 1)
            sums[gy * grid + gx] += features[i]
            counts[gy * grid + gx] += 1
            found[m] = True
        out[m] = sums / counts.clamp(min=1)[:, None]
    return out.reshape(len(boxes), -1), found


@pytest.mark.parametrize("grid", [1, 2, 3])
def test_roi_grid_pool_matches_naive_loop(grid):
    g = torch.Generator().manual_seed(0)
    coords = torch.unique(
        torch.stack(
            [torch.randint(0, 2, (300,), generator=g), torch.zeros(300, dtype=torch.long)]
            + [torch.randint(0, 20, (300,), generator=g) for _ in range(2)],
            1,
        ),
        dim=0,
    )
    features = torch.randn(len(coords), 3, generator=g)
    boxes = torch.tensor([[8.0, 4.0, 30.0, 22.0], [0.0, 0.0, 13.0, 41.0], [70.0, 70.0, 9.0, 5.0], [200.0, 0, 4, 4]])
    box_sample = torch.tensor([0, 1, 1, 0])
    emb, found = roi_grid_pool(features, coords, box_sample, boxes, (4, 4), grid)
    ref, ref_found = _naive_grid_pool(features, coords, box_sample, boxes, (4, 4), grid)
    torch.testing.assert_close(emb, ref)
    assert found.tolist() == ref_found.tolist() == [True, True, True, False]


def test_classification_scores_by_hand():
    from evcmae.pretrain.probe import classification_scores

    labels = [0, 0, 0, 0, 1, 1, 2]
    pred = [0, 0, 0, 1, 1, 0, -1]
    s = classification_scores(pred, labels)
    assert s["accuracy"] == pytest.approx(4 / 7)
    assert s["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 0) / 3)
    f1 = [
        2 * (3 / 4) * (3 / 4) / (3 / 2),
        2 * (1 / 2) * (1 / 2) / 1,
        0.0,
    ]  # precision 3/4, 1/2; class 2 never predicted
    assert s["macro_f1"] == pytest.approx(sum(f1) / 3)
    # always answering the majority class: high accuracy, balanced accuracy at chance
    majority = classification_scores([0] * 7, labels)
    assert majority["accuracy"] == pytest.approx(4 / 7) and majority["balanced_accuracy"] == pytest.approx(1 / 3)


def test_precise_bn_uses_the_data_not_the_running_statistics():
    """The probe's BatchNorm statistics come from its own unmasked windows: whatever the teacher
    carried in (statistics of masked input, or garbage) does not change the probe's features."""
    from evcmae.pretrain.probe import precise_bn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    batches = [torch.randn(16, 3) * 2 + 1 for _ in range(3)]
    clean = precise_bn(net, batches)
    corrupted = copy.deepcopy(net)
    corrupted[1].running_mean.fill_(100.0)
    corrupted[1].running_var.fill_(1e-4)
    probe = precise_bn(corrupted, batches)
    x = torch.randn(5, 3)
    torch.testing.assert_close(probe(x), clean(x))
    hidden = net[0](torch.cat(batches)).detach()
    torch.testing.assert_close(clean[1].running_mean, hidden.mean(0), rtol=1e-5, atol=1e-5)
    assert not clean.training and net[1].running_mean.abs().sum() == 0  # the original is untouched


def test_group_bootstrap_resamples_whole_groups():
    from evcmae.pretrain.probe import group_bootstrap

    rng = np.random.default_rng(0)
    values = np.repeat(rng.normal(size=20), 5)  # 20 tracks, each seen at 5 label times
    groups = np.repeat(np.arange(20), 5)

    def mean(idx):
        return float(values[idx].mean())

    by_track = group_bootstrap(groups, mean)
    by_box = group_bootstrap(np.arange(100), mean)  # as if the 100 boxes were independent
    assert by_track[0] < values.mean() < by_track[1]
    # Duplicates inflate the box count 5x: the honest interval is about sqrt(5) wider.
    assert (by_track[1] - by_track[0]) > 1.8 * (by_box[1] - by_box[0])
    assert group_bootstrap(groups, mean) == by_track  # seeded
    assert group_bootstrap(groups, lambda idx: 0.25) == [0.25, 0.25]
    assert group_bootstrap(np.zeros(7), mean) is None  # one group: nothing to resample


def test_paired_difference_on_the_same_boxes():
    from evcmae.pretrain.probe import Votes, paired_difference

    truth = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    perfect = Votes(truth.copy(), truth, groups)
    wrong = Votes((truth + 1) % 3, truth, groups)
    d = paired_difference(perfect, wrong)
    assert d["balanced_accuracy"] == 1.0 and d["ci95"] == [1.0, 1.0]
    same = paired_difference(perfect, perfect)
    assert same["balanced_accuracy"] == 0.0 and same["ci95"] == [0.0, 0.0]
    fewer = Votes(truth[:-1], truth[:-1], groups[:-1])
    assert paired_difference(perfect, fewer) is None  # not the same boxes: no pairing


def test_tracks_per_class_counts_distinct_tracks_voted_on():
    from evcmae.pretrain.probe import Votes, tracks_per_class, votes_scores

    truth = np.array([0, 0, 0, 1, 1, 2, 0])
    groups = np.array([7, 7, 8, 3, 3, 5, 9])  # class 0: tracks 7, 8, 9; class 1: track 3; class 2: track 5
    votes = Votes(truth.copy(), truth, groups)
    assert tracks_per_class(votes) == {"0": 3, "1": 1, "2": 1}
    assert votes_scores(votes, truth)["tracks_per_class"] == {"0": 3, "1": 1, "2": 1}
    # Only the boxes that got a vote count: drop track 8 and class 0 has two tracks left.
    kept = groups != 8
    assert tracks_per_class(Votes(truth[kept], truth[kept], groups[kept]))["0"] == 2
