"""Sparse encoder shapes and the patch-size rule; weight transfer from exports and checkpoints."""

import pytest
import torch

from evcmae.backbones.sparse_resnet import SparseVoxelBackbone
from evcmae.events.voxelize import VoxelBatch
from evcmae.finetune.encoder import EventDetector, SparseEventEncoder, fold_time_into_channels, patch_size_for
from evcmae.finetune.transfer import TransferError, backbone_config, encoder_param_groups, load_pretrained
from evcmae.pretrain.export import export_backbones

torch.set_num_threads(1)
GRID = (10, 36, 64)


def _voxels(batch=2, n=400, grid=GRID, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack(
        [
            torch.randint(0, batch, (n,), generator=g),
            torch.randint(0, grid[0], (n,), generator=g),
            torch.randint(0, grid[1], (n,), generator=g),
            torch.randint(0, grid[2], (n,), generator=g),
        ],
        1,
    )
    coords = torch.unique(coords, dim=0).int()
    return VoxelBatch(coords, torch.rand(len(coords), 3, generator=g), grid, batch)


@pytest.mark.parametrize("output,patch,stride", [("x_conv3", 1, 4), ("x_conv2", 2, 2)])
def test_encoder_output_and_patch_rule(output, patch, stride):
    enc = SparseEventEncoder(SparseVoxelBackbone(), GRID, output)
    out = enc(_voxels())
    t = enc.backbone.output_shapes(GRID)[output][0]
    assert out.shape == (2, enc.backbone.out_channels[output] * t, -(-GRID[1] // stride), -(-GRID[2] // stride))
    assert enc.patch_size == patch == patch_size_for(stride)
    depth = int(output[-1])
    assert not any(k.startswith(f"backbone.conv{depth + 1}") for k in enc.state_dict())  # no dead stages


def test_folding_time_into_channels_matches_spconv_dense():
    """Values and gradients equal spconv's dense() (B, C, T, H, W) reshaped to (B, C·T, H, W)."""
    from evcmae.backbones.spconv_compat import spconv

    g = torch.Generator().manual_seed(0)
    B, C, T, H, W = 2, 5, 3, 7, 9
    flat = torch.randperm(B * T * H * W, generator=g)[:60]
    indices = torch.stack([flat // (T * H * W), flat // (H * W) % T, flat // W % H, flat % W], 1).int()
    features = torch.randn(60, C, generator=g, requires_grad=True)
    x = spconv.SparseConvTensor(features, indices, [T, H, W], B)
    upstream = torch.randn(B, C * T, H, W, generator=g)
    ours = fold_time_into_channels(x)
    (ours_grad,) = torch.autograd.grad(ours, features, upstream)
    theirs = x.dense().reshape(B, C * T, H, W)
    (theirs_grad,) = torch.autograd.grad(theirs, features, upstream)
    assert torch.equal(ours, theirs) and torch.equal(ours_grad, theirs_grad)
    b, t, y, xx = indices[7].tolist()
    assert torch.equal(ours[b, 2 * T + t, y, xx], features[7, 2])  # channel c·T + t


def test_patch_rule_rejects_strides_not_dividing_4():
    with pytest.raises(ValueError):
        patch_size_for(8)


def test_detector_keeps_stride_4_and_label_pixels():
    det = EventDetector("sparse", height=GRID[1], width=GRID[2], grid=GRID)
    assert det.detector.backbone.strides[0] * det.input_stride == 4
    assert det.detector.head.strides == (8, 16, 32)
    assert next(iter(det.state_dict())).startswith("encoder.backbone.")
    feats, states = det.forward_backbone(_voxels())
    assert feats[1].shape[-2:] == (det.detector.backbone.padded_size(9, 16))
    hist = EventDetector("histogram", height=GRID[1], width=GRID[2])
    assert hist.encoder is None and hist.detector.head.strides == (8, 16, 32)


@pytest.fixture
def export_dir(tmp_path):
    student, teacher = SparseVoxelBackbone(channels=(8, 16, 24, 32)), SparseVoxelBackbone(channels=(8, 16, 24, 32))
    for p in teacher.parameters():
        torch.nn.init.normal_(p)
    export_backbones(tmp_path / "run", student, teacher)
    return tmp_path / "run", teacher


def _encoder_for(path, output="x_conv3"):
    kwargs, _ = backbone_config(path)
    return SparseEventEncoder(SparseVoxelBackbone(**kwargs), GRID, output)


def test_transfer_from_export_loads_every_encoder_tensor(export_dir):
    path, teacher = export_dir
    enc = _encoder_for(path)
    messages = []
    report = load_pretrained(enc, path, "teacher", echo=messages.append)
    assert report["loaded_count"] == report["total"] == len(enc.backbone.state_dict())
    assert not report["missing"] and all(k.startswith("conv4") for k in report["unexpected"])
    assert f"loaded {report['total']} of {report['total']} tensors" in messages[0]
    # the report names every stage the encoder uses, each loaded
    assert list(report["stages"]) == list(enc.backbone.stage_modules())
    assert all(n > 0 for n in report["stages"].values()) and "stages used: conv_input" in messages[0]
    assert torch.equal(enc.backbone.conv_input[0].weight, teacher.conv_input[0].weight)


def test_transfer_from_lightning_ckpt(tmp_path, export_dir):
    _, teacher = export_dir
    state = {f"teacher.backbone.{k}": v for k, v in teacher.state_dict().items()}
    state.update({f"student.backbone.{k}": torch.zeros_like(v) for k, v in teacher.state_dict().items()})
    state["decoders.occupancy.w"] = torch.zeros(3)
    ckpt = tmp_path / "pre.ckpt"
    torch.save({"state_dict": state, "global_step": 5}, ckpt)
    kwargs, _ = backbone_config(ckpt)  # no backbone.json beside it: inferred from shapes
    assert kwargs["channels"] == [8, 16, 24, 32] and kwargs["strides"][1] == [1, 2, 2]
    enc = SparseEventEncoder(SparseVoxelBackbone(**kwargs), GRID)
    report = load_pretrained(enc, ckpt, "teacher", echo=lambda m: None)
    assert report["loaded_count"] == report["total"]
    assert torch.equal(enc.backbone.conv1[0].conv1.weight, teacher.conv1[0].conv1.weight)


def test_transfer_refuses_shape_mismatch_and_empty_match(tmp_path, export_dir):
    path, _ = export_dir
    wrong = SparseEventEncoder(SparseVoxelBackbone(), GRID)  # default channels 16/32/64/128
    with pytest.raises(TransferError, match="teacher_backbone.pt.*other shapes"):
        load_pretrained(wrong, path, "teacher", echo=lambda m: None)
    torch.save({"something.else": torch.zeros(2)}, tmp_path / "bogus.pt")
    with pytest.raises(TransferError, match="bogus.pt.*no tensor matches"):
        load_pretrained(_encoder_for(path), tmp_path / "bogus.pt", echo=lambda m: None)


def test_freeze_and_lr_scale_param_groups():
    det = EventDetector("sparse", height=GRID[1], width=GRID[2], grid=GRID)
    enc_n = len(list(det.encoder.parameters()))
    groups = encoder_param_groups(det, 1e-3, "lr_scale", 0.1)
    assert [g["name"] for g in groups] == ["detector", "encoder"]
    assert len(groups[1]["params"]) == enc_n and groups[1]["lr"] == pytest.approx(1e-4)
    assert len(encoder_param_groups(det, 1e-3, "full")) == 1
    det.encoder.freeze()
    det.train()
    assert not det.encoder.backbone.training and det.detector.training
    groups = encoder_param_groups(det, 1e-3, "freeze")
    assert len(groups) == 1 and not {id(p) for p in det.encoder.parameters()} & {id(p) for p in groups[0]["params"]}
