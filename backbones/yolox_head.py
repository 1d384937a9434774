"""YOLOX's decoupled head, SimOTA label assignment and losses, as in RVT (YOLOX ≥ 0.3 rules).

Conventions (YOLOX/RVT): boxes are (cx, cy, w, h) in input pixels; targets per image are rows
``[class, cx, cy, w, h]``; the head predicts per anchor (one per feature-map cell) the raw
``(dx, dy, log w, log h)``, an objectness logit and class logits, and a box decodes as
``centre = (d + cell)·stride``, ``size = exp(log size)·stride``.

Facts checked against uzh-rpg/RVT ``yolo_head.py`` / ``losses.py`` (they follow YOLOX 0.3):
- candidates ("in prior"): anchor points ``(cell + 0.5)·stride`` strictly within ±1.5·stride of
  the GT centre in x and y (a square; no inside-the-box test any more, unlike YOLOX 0.1's
  "in box or within 2.5·stride");
- cost = Σ_c BCE(√(σ(cls)·σ(obj)), one-hot) + 3·(−log(IoU + 1e-8)) + 1e6·(not in prior);
- dynamic k = ⌊Σ top-min(10, #candidates) IoUs⌋, at least 1; each GT takes its k cheapest
  candidates; an anchor taken by several GTs goes to the GT of least cost (over *all* GTs);
- losses: 5·Σ(1 − IoU²) + Σ BCE(obj, fg) over all anchors + Σ BCE(cls, one-hot·IoU) over the
  foreground, each divided by max(#foreground, 1); L1 term off; obj/cls bias prior 0.01.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .pafpn import ConvBnAct

REG_WEIGHT = 5.0


class HeadOutput(NamedTuple):
    raw: torch.Tensor  # (B, A, 5 + C): dx, dy, log w, log h, obj logit, class logits
    cells: torch.Tensor  # (A, 2) float: x, y cell index of each anchor
    strides: torch.Tensor  # (A,) float


class YOLOXHead(nn.Module):
    """Per level: 1×1 stem, then two 3×3 convs for classification and two for regression
    (decoupled: the two tasks want different features); objectness comes off the regression
    branch. Hidden width = 256·(widest input / 1024), RVT's scaling of YOLOX's widths."""

    def __init__(self, num_classes: int, in_channels: Sequence[int], strides: Sequence[int], prior_prob: float = 0.01):
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError("need one stride per input level")
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in strides)
        hidden = int(256 * in_channels[-1] / 1024)
        self.stems = nn.ModuleList(ConvBnAct(c, hidden, 1) for c in in_channels)
        self.cls_convs = nn.ModuleList(self._tower(hidden) for _ in in_channels)
        self.reg_convs = nn.ModuleList(self._tower(hidden) for _ in in_channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(hidden, num_classes, 1) for _ in in_channels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(hidden, 4, 1) for _ in in_channels)
        self.obj_preds = nn.ModuleList(nn.Conv2d(hidden, 1, 1) for _ in in_channels)
        # Focal-loss prior: start every anchor at p = 0.01 so the huge background does not
        # swamp the first updates.
        bias = -math.log((1 - prior_prob) / prior_prob)
        for conv in [*self.cls_preds, *self.obj_preds]:
            nn.init.constant_(conv.bias, bias)

    @staticmethod
    def _tower(hidden: int) -> nn.Sequential:
        return nn.Sequential(ConvBnAct(hidden, hidden, 3), ConvBnAct(hidden, hidden, 3))

    def forward(self, features: Sequence[torch.Tensor]) -> HeadOutput:
        outs, cells, strides = [], [], []
        for k, x in enumerate(features):
            x = self.stems[k](x)
            cls = self.cls_preds[k](self.cls_convs[k](x))
            reg_feat = self.reg_convs[k](x)
            out = torch.cat((self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat), cls), dim=1)
            outs.append(out.flatten(2).transpose(1, 2))
            h, w = x.shape[-2:]
            ys, xs = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
            cells.append(torch.stack((xs, ys), -1).view(-1, 2))
            strides.append(torch.full((h * w,), self.strides[k], device=x.device))
        return HeadOutput(torch.cat(outs, 1), torch.cat(cells).float(), torch.cat(strides).float())

    def decode(self, out: HeadOutput) -> torch.Tensor:
        """(B, A, 5 + C): cx, cy, w, h in pixels, objectness and class probabilities; the
        input of :func:`finetune.postprocess.postprocess` (and RVT's inference output)."""
        raw = out.raw
        return torch.cat((decode_boxes(raw[..., :4], out.cells, out.strides), raw[..., 4:].sigmoid()), -1)

    def loss(
        self, out: HeadOutput, targets: list[torch.Tensor], size_aware: SizeAwareWeight | None = None
    ) -> dict[str, torch.Tensor]:
        return yolox_loss(out, targets, self.num_classes, size_aware)


def decode_boxes(reg: torch.Tensor, cells: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    s = strides.unsqueeze(-1)
    return torch.cat(((reg[..., :2] + cells) * s, reg[..., 2:4].exp() * s), -1)


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    half = b[..., 2:4] / 2
    return torch.cat((b[..., :2] - half, b[..., :2] + half), -1)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box in a (N, 4) with every box in b (M, 4), both (cx, cy, w, h): (N, M)."""
    a, b = cxcywh_to_xyxy(a), cxcywh_to_xyxy(b)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-16)


def iou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-box 1 − IoU² for matched (cx, cy, w, h) pairs (YOLOX's default "iou" loss). Squaring
    flattens the loss near a perfect fit and steepens it for poor overlaps."""
    p, t = cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target)
    inter = (torch.minimum(p[:, 2:], t[:, 2:]) - torch.maximum(p[:, :2], t[:, :2])).clamp(min=0).prod(-1)
    union = pred[:, 2:].prod(-1) + target[:, 2:].prod(-1) - inter
    return 1 - (inter / (union + 1e-16)) ** 2


@dataclass(frozen=True)
class SizeAwareWeight:
    """The user's small-object weight w = clamp(α·exp(−area/τ), 1, α) per foreground anchor, from
    the area (px² at the model's input resolution) of the GT box it is assigned to. With α = 2.5,
    τ = 1024 a point-sized box weighs 2.5 and boxes above τ·ln α ≈ 938 px² (≈ 31×31) weigh 1."""

    alpha: float = 2.5
    tau: float = 1024.0

    def __call__(self, area: torch.Tensor) -> torch.Tensor:
        return (self.alpha * torch.exp(-area / self.tau)).clamp(1.0, self.alpha)


class Assignment(NamedTuple):
    fg_mask: torch.Tensor  # (A,) bool
    matched_gt: torch.Tensor  # (F,) long: GT index per foreground anchor, in anchor order
    matched_iou: torch.Tensor  # (F,) IoU between that anchor's prediction and its GT
    dynamic_k: torch.Tensor  # (G,) long


@torch.no_grad()
def simota_assign(
    pred_boxes: torch.Tensor,
    obj_logits: torch.Tensor,
    cls_logits: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    cells: torch.Tensor,
    strides: torch.Tensor,
    center_radius: float = 1.5,
    iou_weight: float = 3.0,
    outside_cost: float = 1e6,
    topk: int = 10,
) -> Assignment:
    """SimOTA for one image. pred_boxes (A, 4) decoded, obj_logits (A,), cls_logits (A, C),
    gt_boxes (G, 4), gt_classes (G,). Returns which anchors are foreground and for which GT."""
    num_anchors, num_gt = pred_boxes.shape[0], gt_boxes.shape[0]
    device = pred_boxes.device
    centres = (cells + 0.5) * strides[:, None]
    reach = center_radius * strides[None, :]
    in_prior = ((centres[None, :, 0] - gt_boxes[:, None, 0]).abs() < reach) & (
        (centres[None, :, 1] - gt_boxes[:, None, 1]).abs() < reach
    )  # (G, A)
    candidates = in_prior.any(0).nonzero().squeeze(1)
    if num_gt == 0 or candidates.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Assignment(
            torch.zeros(num_anchors, dtype=torch.bool, device=device),
            empty,
            pred_boxes.new_zeros(0),
            torch.zeros(num_gt, dtype=torch.long, device=device),
        )
    ious = pairwise_iou(gt_boxes.float(), pred_boxes[candidates].float())  # (G, K)
    prob = (cls_logits[candidates].float().sigmoid() * obj_logits[candidates, None].float().sigmoid()).sqrt()
    onehot = F.one_hot(gt_classes.long(), cls_logits.shape[1]).float()
    # CUDA autocast refuses binary_cross_entropy on probabilities outright (16-mixed fine-tuning
    # raised here on the first GPU run); the cost is float32 already, so autocast is simply off.
    with torch.autocast(device.type, enabled=False):
        cls_cost = F.binary_cross_entropy(
            prob[None].expand(num_gt, -1, -1), onehot[:, None].expand(-1, prob.shape[0], -1), reduction="none"
        ).sum(-1)
    cost = cls_cost + iou_weight * -torch.log(ious + 1e-8) + outside_cost * (~in_prior[:, candidates])

    num_cand = candidates.numel()
    dynamic_k = ious.topk(min(topk, num_cand), dim=1).values.sum(1).int().clamp(min=1).long()
    order = cost.argsort(dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(num_cand, device=device).expand(num_gt, -1))
    matching = rank < dynamic_k[:, None]  # (G, K): each GT's k cheapest candidates
    shared = matching.sum(0) > 1
    if shared.any():
        best = cost[:, shared].argmin(0)
        matching[:, shared] = False
        matching[best, shared.nonzero().squeeze(1)] = True
    fg_cand = matching.any(0)
    matched_gt = matching[:, fg_cand].float().argmax(0)
    fg_mask = torch.zeros(num_anchors, dtype=torch.bool, device=device)
    fg_mask[candidates[fg_cand]] = True
    return Assignment(fg_mask, matched_gt, ious[matched_gt, fg_cand.nonzero().squeeze(1)], dynamic_k)


def yolox_loss(
    out: HeadOutput, targets: list[torch.Tensor], num_classes: int, size_aware: SizeAwareWeight | None = None
) -> dict[str, torch.Tensor]:
    """targets: one (n_i, 5) tensor [class, cx, cy, w, h] per image. Computed in float32
    whatever the autocast dtype. With ``size_aware`` every loss term of a foreground anchor
    (IoU, objectness, class) is multiplied by the weight of its GT; background anchors keep
    weight 1 and the normaliser stays the foreground count, so small objects weigh more in
    absolute terms rather than only relative to large ones."""
    raw = out.raw.float()
    boxes = decode_boxes(raw[..., :4], out.cells, out.strides)
    obj_logits, cls_logits = raw[..., 4], raw[..., 5:]
    obj_target = torch.zeros_like(obj_logits)
    obj_weight = torch.ones_like(obj_logits)
    fg_pred, fg_gt, fg_cls, fg_cls_target, fg_weight = [], [], [], [], []
    num_gt = 0
    for b, gt in enumerate(targets):
        gt = gt.to(raw.device).float()
        num_gt += gt.shape[0]
        if gt.shape[0] == 0:
            continue
        a = simota_assign(
            boxes[b].detach(),
            obj_logits[b].detach(),
            cls_logits[b].detach(),
            gt[:, 1:5],
            gt[:, 0],
            out.cells,
            out.strides,
        )
        if a.matched_gt.numel() == 0:
            continue
        matched = gt[a.matched_gt]
        weight = size_aware(matched[:, 3] * matched[:, 4]) if size_aware is not None else torch.ones_like(a.matched_iou)
        obj_target[b, a.fg_mask] = 1.0
        obj_weight[b, a.fg_mask] = weight
        fg_pred.append(boxes[b, a.fg_mask])
        fg_gt.append(matched[:, 1:5])
        fg_cls.append(cls_logits[b, a.fg_mask])
        fg_cls_target.append(F.one_hot(matched[:, 0].long(), num_classes).float() * a.matched_iou[:, None])
        fg_weight.append(weight)

    num_fg = sum(p.shape[0] for p in fg_pred)
    norm = max(num_fg, 1)
    loss_obj = (obj_weight * F.binary_cross_entropy_with_logits(obj_logits, obj_target, reduction="none")).sum() / norm
    if num_fg:
        weight = torch.cat(fg_weight)
        loss_iou = (weight * iou_loss(torch.cat(fg_pred), torch.cat(fg_gt))).sum() / norm
        cls_bce = F.binary_cross_entropy_with_logits(torch.cat(fg_cls), torch.cat(fg_cls_target), reduction="none")
        loss_cls = (weight[:, None] * cls_bce).sum() / norm
    else:  # keep the graph connected so DDP sees every parameter used
        loss_iou = loss_cls = raw.sum() * 0.0
    loss_iou = REG_WEIGHT * loss_iou
    return {
        "loss": loss_iou + loss_obj + loss_cls,
        "loss_iou": loss_iou,
        "loss_obj": loss_obj,
        "loss_cls": loss_cls,
        "num_fg": raw.new_tensor(float(num_fg)),
        "num_gt": raw.new_tensor(float(num_gt)),
    }
