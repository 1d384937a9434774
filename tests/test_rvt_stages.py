"""Pretraining the detector's RVT stages (pretrain/objectives/rvt_stages.py): the masked-cell
weights and the loss against hand computations, the stages' identity with the detector's RVT,
and the hand-off through the export into a detector."""

import json

import pytest
import torch
import torch.nn.functional as F

from evcmae.backbones.sparse_resnet import SparseVoxelBackbone
from evcmae.events.voxelize import VoxelBatch
from evcmae.finetune.encoder import EventDetector
from evcmae.finetune.transfer import TransferError, load_pretrained_rvt
from evcmae.losses.dense_reconstruction import masked_cell_weights, weighted_latent_mse
from evcmae.pretrain.export import export_backbones
from evcmae.pretrain.module import objective_arguments
from evcmae.pretrain.objectives.base import StepContext
from evcmae.pretrain.objectives.rvt_stages import RVTStagesObjective

torch.set_num_threads(1)
GRID = (10, 36, 64)  # (t, y, x) voxels
CHANNELS = (8, 16, 24, 32)


def _voxels(batch=2, n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack([torch.randint(0, s, (n,), generator=g) for s in (batch, *GRID)], 1)
    coords = torch.unique(coords, dim=0).int()
    return VoxelBatch(coords, torch.rand(len(coords), 3, generator=g), GRID, batch)


def test_masked_cell_weights_count_the_masked_share_of_each_cell():
    # cells of 4x4 pixels on a 2x3 map, batch 2
    coords = torch.tensor(
        [
            [0, 0, 0, 0],  # cell (0, 0): 1 visible, 1 masked -> 0.5
            [0, 3, 3, 3],
            [0, 1, 5, 9],  # cell (1, 2): masked only -> 1
            [1, 0, 0, 4],  # batch 1, cell (0, 1): visible only -> 0
            [1, 2, 7, 11],  # batch 1, cell (1, 2): 2 of 3 masked
            [1, 4, 6, 10],
            [1, 5, 4, 8],
        ]
    )
    visible = torch.tensor([True, False, False, True, False, True, False])
    weights, occupied = masked_cell_weights(coords, visible, 2, (4, 4), (2, 3))
    expected = torch.zeros(2, 2, 3)
    expected[0, 0, 0], expected[0, 1, 2], expected[1, 1, 2] = 0.5, 1.0, 2 / 3
    assert torch.allclose(weights, expected)
    cells = {(0, 0, 0), (0, 1, 2), (1, 0, 1), (1, 1, 2)}
    assert {tuple(i) for i in occupied.nonzero().tolist()} == cells
    with pytest.raises(ValueError, match="outside the 1x3 map"):
        masked_cell_weights(coords, visible, 2, (4, 4), (1, 3))


def test_weighted_latent_mse_matches_a_per_cell_loop_and_ignores_shared_channel_offsets():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 5, 3, 4, generator=g), torch.randn(2, 5, 3, 4, generator=g)
    weights = torch.rand(2, 3, 4, generator=g) * (torch.rand(2, 3, 4, generator=g) > 0.4)
    num = den = 0.0
    for b in range(2):
        mean = target[b].mean(dim=(1, 2))
        std = torch.sqrt(target[b].var(dim=(1, 2), unbiased=False) + 1e-6)
        for y in range(3):
            for x in range(4):
                t = (target[b, :, y, x] - mean) / std  # each channel standardised over the map
                num += float(weights[b, y, x]) * float(((pred[b, :, y, x] - t) ** 2).mean())
                den += float(weights[b, y, x])
    assert float(weighted_latent_mse(pred, target, weights)) == pytest.approx(num / den, rel=1e-5)
    # A channel offset shared by every cell of a sample (what an untrained RVT mostly outputs) is
    # no part of the target.
    shifted = target + torch.randn(2, 5, 1, 1, generator=g) * 100
    assert float(weighted_latent_mse(pred, shifted, weights)) == pytest.approx(num / den, rel=1e-4)
    pred.requires_grad_(True)
    zero = weighted_latent_mse(pred, target, torch.zeros(2, 3, 4))
    assert float(zero.detach()) == 0.0 and zero.requires_grad


def _objective(**kwargs):
    backbone = SparseVoxelBackbone(channels=CHANNELS)
    return RVTStagesObjective(
        **objective_arguments(RVTStagesObjective, backbone), time_bins=GRID[0], **kwargs
    ), backbone


def test_the_pretrained_stages_are_the_detectors_rvt_by_name_and_shape():
    objective, backbone = _objective()
    detector = EventDetector("sparse", "tiny", 3, GRID[1], GRID[2], backbone, GRID)
    own = detector.detector.backbone.state_dict()
    assert objective.in_channels == detector.encoder.out_channels  # C x T' of x_conv3, as folded
    assert objective.patch_size == detector.encoder.patch_size
    pretrained = objective.rvt.state_dict()
    assert list(pretrained) == list(own)
    assert all(pretrained[k].shape == own[k].shape for k in own)


def test_the_objective_trains_the_student_stages_on_hidden_cells_only():
    objective, backbone = _objective(stages=(2, 4))
    teacher_backbone = SparseVoxelBackbone(channels=CHANNELS)
    teacher_backbone.load_state_dict(backbone.state_dict())
    full = _voxels()
    visible = torch.rand(len(full), generator=torch.Generator().manual_seed(2)) > 0.5
    student_in = VoxelBatch(full.coords[visible], full.features[visible], GRID, full.batch_size)
    ctx = StepContext(
        full=full,
        visible=visible,
        student=backbone(student_in, until="x_conv3"),
        backbone=backbone,
        teacher_backbone=teacher_backbone,
        generator=torch.Generator(),
        until="x_conv3",
    )
    out = objective(ctx)
    assert torch.isfinite(out.loss) and out.loss.requires_grad
    assert set(out.logs) == {"loss/stage2", "loss/stage4", "masked_share/stage2", "masked_share/stage4"}
    assert 0.0 < out.logs["masked_share/stage2"] < 1.0
    out.loss.backward()
    assert objective.rvt.stages[3].lstm.conv1x1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in objective.teacher_rvt.parameters())  # the EMA twin gets none
    assert backbone.conv3[0][0].weight.grad is not None  # and the sparse backbone learns through it
    # With nothing masked there is nothing to predict: the loss is zero.
    ctx_all = StepContext(
        full=full,
        visible=torch.ones(len(full), dtype=torch.bool),
        student=backbone(full, until="x_conv3"),
        backbone=backbone,
        teacher_backbone=teacher_backbone,
        generator=torch.Generator(),
        until="x_conv3",
    )
    assert float(objective(ctx_all).loss) == 0.0


def _export_with_rvt(tmp_path, objective, backbone):
    for p in objective.teacher_rvt.parameters():
        torch.nn.init.normal_(p)
    export_backbones(tmp_path / "run", backbone, backbone, parts=objective.export_parts())
    return tmp_path / "run"


def test_export_and_load_hand_the_teachers_stages_to_the_detector(tmp_path):
    objective, backbone = _objective()
    path = _export_with_rvt(tmp_path, objective, backbone)
    record = json.loads((path / "backbone.json").read_text())["rvt"]
    assert record["files"] == {"teacher": "teacher_rvt.pt", "student": "student_rvt.pt"}
    assert record["in_channels"] == objective.in_channels and record["size"] == "tiny"
    assert set(record["movement_from_init"]["teacher"]) == {f"stages.{i}" for i in range(4)}
    assert record["movement_from_init"]["student"]["stages.0"] == 0.0  # the student did not move
    detector = EventDetector("sparse", "tiny", 3, GRID[1], GRID[2], SparseVoxelBackbone(channels=CHANNELS), GRID)
    rvt = detector.detector.backbone
    messages = []
    report = load_pretrained_rvt(rvt, path, "teacher", echo=messages.append)
    assert report["loaded_count"] == report["total"] == len(rvt.state_dict())
    assert all(n > 0 for n in report["stages"].values()) and "stages used: stages.0" in messages[0]
    for k, v in objective.teacher_rvt.state_dict().items():
        assert torch.equal(rvt.state_dict()[k], v), k
    # An export without RVT stages gives None; one for another RVT size is refused whole.
    export_backbones(tmp_path / "plain", backbone, backbone)
    assert load_pretrained_rvt(rvt, tmp_path / "plain", echo=messages.append) is None
    small = EventDetector("sparse", "small", 3, GRID[1], GRID[2], SparseVoxelBackbone(channels=CHANNELS), GRID)
    with pytest.raises(TransferError, match="teacher_rvt.pt.*do not fit"):
        load_pretrained_rvt(small.detector.backbone, path, echo=messages.append)


def test_a_pretraining_checkpoint_gives_the_same_stages(tmp_path):
    objective, backbone = _objective()
    for p in objective.teacher_rvt.parameters():
        torch.nn.init.normal_(p)
    state = {f"teacher.backbone.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"objectives.rvt_stages.{k}": v for k, v in objective.state_dict().items()})
    torch.save({"state_dict": state}, tmp_path / "pre.ckpt")
    rvt = EventDetector("sparse", "tiny", 3, GRID[1], GRID[2], backbone, GRID).detector.backbone
    for which, source in (("teacher", objective.teacher_rvt), ("student", objective.rvt)):
        report = load_pretrained_rvt(rvt, tmp_path / "pre.ckpt", which, echo=lambda m: None)
        assert report["loaded_count"] == report["total"]
        assert all(torch.equal(rvt.state_dict()[k], v) for k, v in source.state_dict().items()), which


def test_the_partition_follows_the_frame_and_changes_no_parameter():
    objective, _ = _objective()
    before = {k: v.clone() for k, v in objective.rvt.state_dict().items()}
    objective._fit_partition(9, 16)  # x_conv3 of the 36x64 grid
    assert objective.rvt.partition_size == objective.teacher_rvt.partition_size == (1, 1)
    x = torch.randn(1, objective.in_channels, 9, 16)
    features, _ = objective.rvt(x)
    assert features[4].shape[-2:] == (2, 2)
    assert all(torch.equal(before[k], v) for k, v in objective.rvt.state_dict().items())
    assert F.mse_loss(features[1], features[1]) == 0


@pytest.mark.slow
def test_pretraining_with_rvt_stages_hands_them_to_fine_tuning(tmp_path, synth_tiny, capsys):
    """evcmae-pretrain (2 steps; the RVT stages are on by default) exports the stages; evcmae-finetune from
    that run adopts RVT's size and loads the teacher's stages into the detector before step 0."""
    from config_helpers import QUIET_FIT, tiny_pretrain_config

    from evcmae.tools import pretrain as pretrain_tool
    from evcmae.tools.demo import _compose
    from evcmae.tools.finetune import load_start, pretrained_overrides, with_overrides
    from evcmae.tools.pretrain import build

    run = tmp_path / "pre"
    cfg = tiny_pretrain_config(synth_tiny, run, *QUIET_FIT, "trainer.max_steps=2")
    metrics = pretrain_tool.run(cfg)
    assert metrics["global_step"] == 2 and metrics["train/rvt_stages"] is not None
    info = json.loads((run / "backbone.json").read_text())
    assert info["objectives"]["rvt_stages"] == 1.0 and info["rvt"]["files"]["teacher"] == "teacher_rvt.pt"
    assert all(v > 0 for v in info["rvt"]["movement_from_init"]["student"].values())  # trained

    overrides = ["data=tiny", f"data.root={synth_tiny}", f"model.pretrained={run}", "model.detector.size=small"]
    ft = _compose("finetune", [*overrides, f"paths.log_dir={tmp_path}/logs", "logger=csv"], tmp_path / "ft")
    ft = with_overrides(ft, pretrained_overrides(ft.model))
    assert ft.model.detector.size == "tiny"  # the pretrained stages' size, not the one asked for
    _, module, _ = build(ft, check=False)
    capsys.readouterr()
    load_start(module, ft.model)
    out = capsys.readouterr().out
    total = len(module.model.detector.backbone.state_dict())
    assert f"pretrained RVT stages from {run / 'teacher_rvt.pt'} (teacher): loaded {total} of {total}" in out
    teacher = torch.load(run / "teacher_rvt.pt", weights_only=True)
    for name, tensor in module.model.detector.backbone.state_dict().items():
        assert torch.equal(tensor, teacher[name]), name
