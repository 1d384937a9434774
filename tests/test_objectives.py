"""Pretraining objectives: scored where the student could not see, no target leak, balancing."""

from types import SimpleNamespace

import pytest
import torch

from evcmae.backbones.sparse_resnet import SparseVoxelBackbone
from evcmae.events.voxelize import VoxelBatch
from evcmae.losses.heads import ProjectionHead
from evcmae.losses.occupancy import occupancy_queries
from evcmae.losses.reconstruction import MultiScaleReconstructionLoss
from evcmae.losses.sparse_ops import coarsen, hidden_sites
from evcmae.losses.voxel_nce import VoxelInfoNCELoss
from evcmae.pretrain.ema import make_teacher
from evcmae.pretrain.masking import mask_voxels
from evcmae.pretrain.module import visible_part
from evcmae.pretrain.objectives.base import StepContext
from evcmae.pretrain.objectives.reconstruction import ReconstructionObjective
from evcmae.pretrain.objectives.voxel_nce import VoxelNCEObjective

SHAPE = (6, 32, 48)


def _voxels(n=1500, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack(
        [torch.randint(0, batch, (n,), generator=g)] + [torch.randint(0, s, (n,), generator=g) for s in SHAPE], 1
    )
    coords = torch.unique(coords, dim=0).int()
    return VoxelBatch(coords, torch.rand(coords.shape[0], 3, generator=g), SHAPE, batch)


@pytest.fixture(scope="module")
def ctx():
    torch.manual_seed(0)
    full = _voxels()
    visible = mask_voxels(full.coords, 2, "tube", 0.6, patch_size=(4, 4), generator=torch.Generator().manual_seed(1))
    backbone = SparseVoxelBackbone(blocks=(1, 1, 1, 1)).truncate("x_conv3")
    student = backbone(visible_part(full, visible))
    return StepContext(full, visible, student, backbone, make_teacher(backbone), torch.Generator().manual_seed(2))


def test_hidden_sites_by_hand():
    sites = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]])
    visible = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 3]])  # fine voxels (stride 2): cells (0,0,0,0), (0,0,0,1)
    masked = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 0], [1, 1, 1, 1]])  # cells (0,0,0,0), (0,0,1,0), (1,0,0,0)
    # (0,0,0,0) holds a visible voxel too; (0,0,0,1) holds only a visible one; the last two are hidden
    assert hidden_sites(sites, visible, masked, (2, 2, 2)).tolist() == [False, False, True, True]


def test_hidden_sites_hold_masked_and_no_visible_input(ctx):
    stride = ctx.stride("x_conv3")
    hidden = ctx.hidden("x_conv3")
    sites = {tuple(c) for c in ctx.teacher()["x_conv3"].indices.long().tolist()}
    seen = {tuple(c) for c in coarsen(ctx.full.coords[ctx.visible], stride).tolist()}
    masked = {tuple(c) for c in coarsen(ctx.full.coords[~ctx.visible], stride).tolist()}
    expected = [c in masked and c not in seen for c in map(tuple, ctx.teacher()["x_conv3"].indices.long().tolist())]
    assert hidden.tolist() == expected
    assert 0 < hidden.sum() < len(sites)


def test_reconstruction_scores_hidden_sites_only(ctx):
    torch.manual_seed(0)
    objective = ReconstructionObjective(ctx.backbone.out_channels, scales=("x_conv2", "x_conv3"))
    out = objective(ctx)
    teacher = ctx.teacher()
    restricted = {
        s: (teacher[s].features[ctx.hidden(s)], teacher[s].indices[ctx.hidden(s)]) for s in ("x_conv2", "x_conv3")
    }
    student = {s: (ctx.student[s].features, ctx.student[s].indices) for s in ("x_conv2", "x_conv3")}
    reference = MultiScaleReconstructionLoss.forward(objective.criterion, student, restricted)
    torch.testing.assert_close(out.loss, reference.loss)
    assert out.logs["masked_share/x_conv3"] == pytest.approx(float(ctx.hidden("x_conv3").float().mean()))
    everywhere = ReconstructionObjective(ctx.backbone.out_channels, scales=("x_conv3",), masked_only=False)
    assert "masked_share/x_conv3" not in everywhere(ctx).logs


def test_voxel_nce_queries_sit_at_hidden_sites(ctx, monkeypatch):
    torch.manual_seed(0)
    head = lambda c: ProjectionHead(c, hidden=32, out_dim=16)  # noqa: E731
    objective = VoxelNCEObjective(ctx.backbone.out_channels, head, VoxelInfoNCELoss(), scale="x_conv3")
    seen = {}
    original = VoxelInfoNCELoss.forward

    def spy(self, query, query_coords, *args):
        seen["coords"] = query_coords
        return original(self, query, query_coords, *args)

    monkeypatch.setattr(VoxelInfoNCELoss, "forward", spy)
    out = objective(ctx)
    hidden = {tuple(c) for c in ctx.teacher()["x_conv3"].indices[ctx.hidden("x_conv3")].long().tolist()}
    queried = {tuple(c) for c in seen["coords"].tolist()}
    assert queried and queried <= hidden
    assert out.logs["queries"] == len(queried) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in objective.head.parameters())
    assert all(p.grad is None for p in objective.teacher_head.parameters())


def test_random_masking_occupancy_target_does_not_leak():
    """With voxel-level masking, 'does the student hold a voxel in this cell' must not answer the
    occupancy question: positives exclude cells the student sees into (the default)."""
    full = _voxels(seed=3)
    visible = mask_voxels(full.coords, 2, "random", 0.7, generator=torch.Generator().manual_seed(0))
    stride = (2, 4, 4)
    student_cells = coarsen(full.coords[visible], stride)

    def leak_rate(exclude):
        q = occupancy_queries(full.coords, full.coords[visible], full.coords[~visible], stride, 1.0, 1, None, exclude)
        from evcmae.losses.sparse_ops import match_coords

        has_student = match_coords(q.coords, student_cells) >= 0
        return float(has_student[: q.num_positive].float().mean()), float(has_student[q.num_positive :].float().mean())

    pos, neg = leak_rate(True)
    assert pos == 0.0 and neg == 0.0  # the feature is constant: no information about the target
    pos, neg = leak_rate(False)
    assert pos > 0.5 and neg == 0.0  # without the exclusion it nearly gives the answer away


def test_balanced_weights_equalise_gradient_norms():
    from evcmae.pretrain.module import PretrainModule

    module = PretrainModule.__new__(PretrainModule)
    torch.nn.Module.__init__(module)
    module.weights = {"a": 1.0, "b": 0.5, "own": 2.0}
    unbalanced = SimpleNamespace(balanced=False)  # a term that trains its own network (RVT stages)
    module.objectives = {"a": SimpleNamespace(balanced=True), "b": SimpleNamespace(balanced=True), "own": unbalanced}
    module.balance_cfg = {"mode": "grad_norm"}
    module.register_buffer("grad_norm_mean", torch.tensor([4.0, 0.25, 1e-6]))
    w = module.effective_weights()
    # each balanced term's gradient after weighting is lambda * their mean norm: 1 * 2.125 and 0.5 *
    # 2.125; the unbalanced one keeps its lambda and does not enter the mean
    assert w["a"] * 4.0 == pytest.approx(1.0 * 2.125) and w["b"] * 0.25 == pytest.approx(0.5 * 2.125)
    assert w["own"] == 2.0
    module.balance_cfg = {"mode": "none"}
    assert module.effective_weights() == {"a": 1.0, "b": 0.5, "own": 2.0}
