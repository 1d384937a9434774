"""RVT/YOLOX detector parts: NMS, IoU loss, SimOTA, size-aware weight, shapes, padding,
recurrent state handling, parameter counts against RVT's published figures, and an overfit check."""

import math

import pytest
import torch

from evcmae.backbones import maxvit
from evcmae.backbones.batchnorm import batchnorms
from evcmae.backbones.pafpn import PAFPN
from evcmae.backbones.rvt import ConvLSTM, RVTBackbone, detach_states, reset_states, rvt_partition_size
from evcmae.backbones.yolox_head import SizeAwareWeight, iou_loss, pairwise_iou, simota_assign
from evcmae.finetune import postprocess as pp
from evcmae.finetune.detector import Detector, boxes_to_targets, split_targets


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # One intra-op thread: these models are small, and on a shared 2-core machine two threads
    # fighting another process's threads made a 0.05 s training step take seconds.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- NMS


def _reference_nms(boxes, scores, classes, thr):
    """Textbook per-class greedy loop, one box pair at a time."""
    keep = []
    for c in classes.unique().tolist():
        idx = [i for i in range(len(boxes)) if classes[i] == c]
        idx.sort(key=lambda i: -float(scores[i]))
        suppressed = set()
        for a, i in enumerate(idx):
            if i in suppressed:
                continue
            keep.append(i)
            for j in idx[a + 1 :]:
                bi, bj = boxes[i].tolist(), boxes[j].tolist()
                iw = max(0.0, min(bi[2], bj[2]) - max(bi[0], bj[0]))
                ih = max(0.0, min(bi[3], bj[3]) - max(bi[1], bj[1]))
                inter = iw * ih
                union = (bi[2] - bi[0]) * (bi[3] - bi[1]) + (bj[2] - bj[0]) * (bj[3] - bj[1]) - inter
                if inter / union > thr:
                    suppressed.add(j)
    return sorted(keep, key=lambda i: -float(scores[i]))


def _random_boxes(n, extent=100.0):
    xy = torch.rand(n, 2) * extent - 10  # some negative coordinates on purpose
    wh = torch.rand(n, 2) * 30 + 1
    return torch.cat((xy, xy + wh), 1)


@pytest.mark.parametrize("matrix_limit", [4096, 0])  # IoU-matrix path and row-by-row path
def test_nms_matches_bruteforce(monkeypatch, matrix_limit):
    monkeypatch.setattr(pp, "MATRIX_LIMIT", matrix_limit)
    for _trial in range(3):
        boxes, scores = _random_boxes(150), torch.rand(150)
        classes = torch.randint(0, 3, (150,))
        got = pp.batched_nms(boxes, scores, classes, 0.45, use_torchvision=False).tolist()
        assert got == _reference_nms(boxes, scores, classes, 0.45)
    assert pp.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


def test_nms_is_class_aware():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    kept = pp.batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.45, use_torchvision=False)
    assert kept.tolist() == [0, 1]


def test_postprocess_threshold_and_layout():
    # two anchors: (cx, cy, w, h, obj, p0, p1)
    decoded = torch.tensor(
        [
            [
                [10.0, 10, 4, 6, 0.5, 0.2, 0.8],  # score 0.4, class 1
                [50.0, 50, 2, 2, 0.5, 0.19, 0.1],
            ]
        ]
    )  # score 0.095 < 0.1
    (det,) = pp.postprocess(decoded, conf_threshold=0.1, use_torchvision=False)
    assert det.shape == (1, 7)
    torch.testing.assert_close(det[0], torch.tensor([8.0, 7, 12, 13, 0.5, 0.8, 1]))
    torch.testing.assert_close(pp.detection_scores(det), torch.tensor([0.4]))
    (none,) = pp.postprocess(decoded, conf_threshold=0.9, use_torchvision=False)
    assert none.shape == (0, 7)
    # default: torchvision when its operator works, else the pure version; same answer
    (auto,) = pp.postprocess(decoded, conf_threshold=0.1)
    torch.testing.assert_close(auto, det)


# ---------------------------------------------------------------- IoU loss, size-aware weight


def test_iou_loss_hand_cases():
    box = torch.tensor([[5.0, 5.0, 2.0, 2.0]])
    assert iou_loss(box, box).item() == pytest.approx(0.0, abs=1e-6)
    assert iou_loss(box, box + torch.tensor([[10.0, 0, 0, 0]])).item() == pytest.approx(1.0)
    # shifted by half a width: intersection 2, union 6, IoU 1/3 -> 1 - 1/9
    assert iou_loss(box, box + torch.tensor([[1.0, 0, 0, 0]])).item() == pytest.approx(8 / 9)
    # nested: 1x1 inside 2x2 -> IoU 1/4
    assert iou_loss(box, torch.tensor([[5.0, 5.0, 1.0, 1.0]])).item() == pytest.approx(1 - 1 / 16)
    assert pairwise_iou(box, torch.tensor([[6.0, 5.0, 2.0, 2.0]])).item() == pytest.approx(1 / 3)


def test_size_aware_weight_values():
    w = SizeAwareWeight()  # alpha 2.5, tau 1024
    area = torch.tensor([0.0, 512.0, 1024 * math.log(2.5), 1024.0, 1e5])
    torch.testing.assert_close(w(area), torch.tensor([2.5, 2.5 * math.exp(-0.5), 1.0, 1.0, 1.0]))
    assert SizeAwareWeight(alpha=4.0, tau=100.0)(torch.tensor([100.0])).item() == pytest.approx(4 * math.exp(-1))


# ---------------------------------------------------------------- SimOTA


def _grid(h, w, stride):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cells = torch.stack((xs, ys), -1).view(-1, 2).float()
    return cells, torch.full((h * w,), float(stride))


def _far_boxes(n):
    return torch.tensor([[300.0, 300.0, 1.0, 1.0]]).repeat(n, 1)


def test_simota_dynamic_k_and_assignment():
    cells, strides = _grid(4, 4, 8)  # anchor points at 4, 12, 20, 28
    gt = torch.tensor([[12.0, 12.0, 16.0, 16.0]])
    pred = _far_boxes(16)
    anchor = lambda x, y: y * 4 + x
    pred[anchor(1, 1)] = gt[0]  # IoU 1
    pred[anchor(2, 1)] = torch.tensor([16.0, 12, 16, 16])  # shifted 4 px: IoU 0.6
    pred[anchor(1, 2)] = torch.tensor([12.0, 18, 16, 16])  # shifted 6 px: IoU 160/352
    pred[anchor(3, 3)] = gt[0]  # perfect but outside the ±1.5·stride prior: never a candidate
    a = simota_assign(pred, torch.zeros(16), torch.zeros(16, 2), gt, torch.tensor([0]), cells, strides)
    # k = floor(1 + 0.6 + 0.4545) = 2; the two cheapest candidates are the two best IoUs
    assert a.dynamic_k.tolist() == [2]
    assert a.fg_mask.nonzero().squeeze(1).tolist() == [anchor(1, 1), anchor(2, 1)]
    assert a.matched_gt.tolist() == [0, 0]
    torch.testing.assert_close(a.matched_iou, torch.tensor([1.0, 0.6]))


def test_simota_cost_is_computed_outside_autocast(monkeypatch):
    """CUDA autocast raises on binary_cross_entropy of probabilities (the first GPU run's 16-mixed
    fine-tuning did); CPU autocast lets it through, so here it is made to raise the same way. Under
    autocast the assignment must not call it with autocast on, and must equal the float32 one."""
    cells, strides = _grid(4, 4, 8)
    gts = torch.tensor([[12.0, 12, 16, 16], [20.0, 12, 16, 16]])
    pred = _far_boxes(16)
    pred[5] = torch.tensor([16.0, 12, 16, 16])
    pred[6] = torch.tensor([20.0, 13, 16, 16])
    cls = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    args = (pred, torch.zeros(16), cls, gts, torch.tensor([0, 1]), cells, strides)
    want = simota_assign(*args)
    unguarded = torch.nn.functional.binary_cross_entropy

    def refuses_autocast(*a, **k):
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError("binary_cross_entropy is unsafe to autocast")
        return unguarded(*a, **k)

    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy", refuses_autocast)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = simota_assign(*args)
    assert torch.equal(got.fg_mask, want.fg_mask) and want.fg_mask.any()
    assert torch.equal(got.matched_gt, want.matched_gt)
    torch.testing.assert_close(got.matched_iou, want.matched_iou)


def test_simota_conflict_goes_to_cheapest_gt():
    cells, strides = _grid(4, 4, 8)
    gts = torch.tensor([[12.0, 12, 16, 16], [20.0, 12, 16, 16]])
    pred = _far_boxes(16)
    pred[5] = torch.tensor([16.0, 12, 16, 16])  # cell (1, 1): IoU 0.6 with both GTs
    cls = torch.zeros(16, 2)
    cls[5] = torch.tensor([-4.0, 4.0])  # looks like class 1, so cheaper for the second GT
    a = simota_assign(pred, torch.zeros(16), cls, gts, torch.tensor([0, 1]), cells, strides)
    assert a.dynamic_k.tolist() == [1, 1]
    assert a.fg_mask.nonzero().squeeze(1).tolist() == [5]
    assert a.matched_gt.tolist() == [1]


def test_simota_no_candidates():
    cells, strides = _grid(2, 2, 8)
    a = simota_assign(
        _far_boxes(4),
        torch.zeros(4),
        torch.zeros(4, 1),
        torch.tensor([[500.0, 500, 4, 4]]),
        torch.tensor([0]),
        cells,
        strides,
    )
    assert not a.fg_mask.any() and a.matched_gt.numel() == 0


# ---------------------------------------------------------------- backbone: partitions, padding, shapes


def test_window_and_grid_partitions():
    x = torch.arange(4 * 6).float().view(1, 4, 6, 1)
    win = maxvit.window_partition(x, (2, 3))
    assert win[0, :, 0].tolist() == [0, 1, 2, 6, 7, 8]  # top-left 2x3 block
    grid = maxvit.grid_partition(x, (2, 3))
    assert grid[0, :, 0].tolist() == [0, 2, 4, 12, 14, 16]  # every 2nd row / 2nd column
    torch.testing.assert_close(maxvit.window_reverse(win, (2, 3), (4, 6)), x)
    torch.testing.assert_close(maxvit.grid_reverse(grid, (2, 3), (4, 6)), x)
    with pytest.raises(ValueError):
        maxvit.window_partition(x, (3, 3))


def test_padding_rule():
    assert rvt_partition_size(360, 640) == (6, 10)  # Gen4/eTraM at half resolution
    assert rvt_partition_size(240, 304) == (4, 5)  # Gen1
    bb = RVTBackbone(partition_size=(6, 10))
    assert bb.pad_multiple == (192, 320)
    assert bb.padded_size(360, 640) == (384, 640)
    assert RVTBackbone(partition_size=(4, 5)).padded_size(240, 304) == (256, 320)
    x = torch.rand(1, 20, 50, 70)
    padded = RVTBackbone(partition_size=(2, 2)).pad(x)  # multiple of 64
    assert padded.shape[-2:] == (64, 128)
    torch.testing.assert_close(padded[..., :50, :70], x)
    assert padded[..., 50:, :].abs().sum() == 0 and padded[..., 70:].abs().sum() == 0


@pytest.mark.parametrize("stages", [(2, 3, 4), (1, 2, 3, 4)])
def test_stage_fpn_head_shapes(stages):
    det = Detector("tiny", num_classes=3, fpn_stages=stages, partition_size=(2, 2)).eval()
    x = torch.rand(2, 20, 50, 70)  # padded to 64 x 128
    with torch.no_grad():
        feats, states = det.forward_backbone(x)
        assert {k: tuple(v.shape) for k, v in feats.items()} == {
            1: (2, 32, 16, 32),
            2: (2, 64, 8, 16),
            3: (2, 128, 4, 8),
            4: (2, 256, 2, 4),
        }
        assert [tuple(h.shape) for h, _ in states] == [tuple(feats[k].shape) for k in (1, 2, 3, 4)]
        fpn = det.fpn(feats)
        assert [tuple(f.shape) for f in fpn] == [tuple(feats[s].shape) for s in stages]
        decoded = det.forward_detect(feats)
    anchors = sum(64 * 128 // s**2 for s in det.backbone.get_strides(stages))
    assert decoded.shape == (2, anchors, 5 + 3)
    assert decoded[..., 4:].min() >= 0 and decoded[..., 4:].max() <= 1
    # priors start every anchor at p ≈ 0.01
    assert decoded[..., 4].mean().item() == pytest.approx(0.01, rel=0.5)


def test_bn_eps_reaches_every_dense_batchnorm_and_defaults_to_rvts():
    def eps_of(module):
        return {m.eps for m in batchnorms(module)}

    assert eps_of(Detector("tiny", partition_size=(2, 2))) == {1e-5}  # PyTorch's default, as RVT
    det = Detector("tiny", partition_size=(2, 2), bn_eps=1e-3)
    assert eps_of(det.fpn) == eps_of(det.head) == {1e-3}
    # a channel that was constant on the statistics' data: eval-mode output deviates from beta by
    # (x - mean) / sqrt(var + eps), so the larger eps scales a small shift ~10x less than 1e-5
    bn = det.fpn.lateral[1].bn.eval()
    bn.running_mean.zero_(), bn.running_var.zero_()
    x = torch.full((1, bn.num_features, 1, 1), 0.01)
    with torch.no_grad():
        torch.testing.assert_close(
            bn(x) - bn.bias[None, :, None, None], 0.01 / (1e-3**0.5) * bn.weight[None, :, None, None]
        )
    with pytest.raises(ValueError, match="eps must be > 0"):
        Detector("tiny", partition_size=(2, 2), bn_eps=0.0)


def test_pafpn_three_levels_is_rvts_layout():
    # RVT's neck for tiny: laterals 128->64 and 256->128, top-down CSPs 2c->c, bottom-up CSPs
    # 2c->next level's c, one bottleneck per CSP at depth 0.33 and two at 0.67.
    fpn = PAFPN((64, 128, 256), depth=0.33)
    assert [m.conv.in_channels for m in fpn.lateral] == [128, 256]
    assert [(m.conv1.conv.in_channels, m.conv3.conv.out_channels) for m in fpn.bu_csp] == [(128, 128), (256, 256)]
    assert all(len(m.m) == 1 for m in fpn.td_csp) and len(PAFPN((8, 16, 32), depth=0.67).td_csp[0].m) == 2


# ---------------------------------------------------------------- recurrence


def test_convlstm_state_carry_reset_detach():
    bb = RVTBackbone(partition_size=(1, 1))
    x1 = torch.rand(2, 20, 32, 32, requires_grad=True)
    x2 = torch.rand(2, 20, 32, 32)
    f1, s1 = bb(x1)
    fresh, _ = bb(x2)
    zeros = [(torch.zeros_like(h), torch.zeros_like(c)) for h, c in s1]
    torch.testing.assert_close(bb(x2, zeros)[0][4], fresh[4])  # None == zero state
    carried, _ = bb(x2, s1)
    assert not torch.allclose(carried[4], fresh[4])  # memory changes the output
    # gradients flow through a carried state (BPTT inside a chunk) ...
    carried[4].sum().backward()
    assert x1.grad is not None and x1.grad.abs().sum() > 0
    # ... and not through a detached one (between chunks)
    detached = detach_states(s1)
    assert all(h.grad_fn is None and c.grad_fn is None and not h.requires_grad for h, c in detached)
    torch.testing.assert_close(detached[0][0], s1[0][0].detach())
    # reset: entry 0 starts a new recording, entry 1 continues
    reset = reset_states(detached, torch.tensor([True, False]))
    assert all(h[0].abs().sum() == 0 and c[0].abs().sum() == 0 for h, c in reset)
    torch.testing.assert_close(reset[3][0][1], detached[3][0][1])
    with torch.no_grad():
        torch.testing.assert_close(bb(x2, reset)[0][4][0], fresh[4][0])


def test_convlstm_gate_order():
    cell = ConvLSTM(1)
    with torch.no_grad():  # forget=0, input=1, output=1, candidate=tanh(big) ~ 1
        cell.conv1x1.weight.zero_()
        cell.conv1x1.bias.copy_(torch.tensor([-50.0, 50.0, 50.0, 50.0]))
    x = torch.zeros(1, 1, 1, 1)
    h, c = cell(x, (torch.zeros_like(x), torch.full_like(x, 7.0)))
    assert c.item() == pytest.approx(1.0, abs=1e-4)  # old cell forgotten, candidate written
    assert h.item() == pytest.approx(math.tanh(1.0), abs=1e-4)


# ---------------------------------------------------------------- parameter counts


# RVT (CVPR 2023, Gen1 table, 2 classes): whole detector = backbone + PAFPN + YOLOX head.
# The figures are rounded to 0.1 M, so the exact count must lie within ±0.05 M of them.
@pytest.mark.parametrize("size,published", [("tiny", 4.4e6), ("small", 9.9e6), ("base", 18.5e6)])
def test_parameter_counts_match_rvt(size, published):
    det = Detector(size, num_classes=2)
    count = sum(p.numel() for p in det.parameters())
    assert abs(count - published) <= 0.05e6, count


# ---------------------------------------------------------------- losses end to end


def _scene():
    x = torch.zeros(1, 20, 64, 64)
    x[:, 10:, 24:40, 20:44] = 3.0  # ON events on a 24 x 16 object
    targets = [boxes_to_targets(torch.tensor([[20.0, 24.0, 24.0, 16.0]]), torch.tensor([1]))]
    return x, targets


def test_targets_formats_and_size_aware_scaling():
    x, targets = _scene()
    torch.testing.assert_close(targets[0], torch.tensor([[1.0, 32.0, 32.0, 24.0, 16.0]]))
    padded = torch.zeros(1, 3, 5)
    padded[0, 0] = targets[0][0]
    assert [t.tolist() for t in split_targets(padded)] == [t.tolist() for t in targets]

    det = Detector("tiny", partition_size=(2, 2)).eval()  # eval: BN fixed, same outputs twice
    plain = det(x, targets=targets)[0]
    w = SizeAwareWeight(alpha=2.5, tau=1024.0)(torch.tensor(24.0 * 16.0)).item()
    det.size_aware = SizeAwareWeight()
    weighted = det(x, targets=targets)[0]
    assert plain["num_fg"] >= 1 and weighted["num_fg"] == plain["num_fg"]
    for key in ("loss_iou", "loss_cls"):
        assert weighted[key].item() == pytest.approx(w * plain[key].item(), rel=1e-4)
    assert weighted["loss_obj"] > plain["loss_obj"]


def test_loss_without_objects_is_objectness_only():
    det = Detector("tiny", partition_size=(2, 2)).eval()
    losses, _ = det(torch.rand(2, 20, 64, 64), targets=[torch.zeros(0, 5), torch.zeros(0, 5)])
    assert losses["num_fg"] == 0 and losses["loss_iou"] == 0 and losses["loss_cls"] == 0
    losses["loss"].backward()  # still connected to the head's parameters
    assert det.head.reg_preds[0].weight.grad is not None


def test_overfit_one_box():
    x, targets = _scene()
    det = Detector("tiny", partition_size=(2, 2)).train()
    opt = torch.optim.Adam(det.parameters(), lr=3e-3)
    history = []
    for _ in range(20):
        losses, _ = det(x, targets=targets)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append(losses["loss"].item())
    assert all(math.isfinite(v) for v in history)
    assert sum(history[-3:]) / 3 < 0.6 * history[0], history  # SimOTA + BN make single steps noisy
    det.eval()
    with torch.no_grad():
        decoded, _ = det(x)
    (dets,) = pp.postprocess(decoded, conf_threshold=0.0, use_torchvision=False)
    assert dets.shape[1] == 7 and dets.shape[0] >= 1
