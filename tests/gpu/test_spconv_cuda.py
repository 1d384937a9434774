"""spconv on the GPU against the CPU reference: the same layers, weights and sites, forward and
backward. The reference runs on the CPU in float64 (spconv's CPU path, checked against dense conv3d
in tests/test_spconv_backbone.py). Output sites come back in a different order on CUDA, so rows are
matched by coordinate before comparing."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from evcmae.backbones.benchmarks import random_voxels
from evcmae.backbones.sparse_resnet import SparseVoxelBackbone
from evcmae.backbones.spconv_compat import spconv

GRID = (6, 24, 32)


def _key(indices: torch.Tensor, shape) -> torch.Tensor:
    """One int64 per (batch, t, y, x) row, for matching rows by coordinate."""
    b, t, y, x = indices.long().cpu().unbind(1)
    T, H, W = (int(s) for s in shape)
    return ((b * T + t) * H + y) * W + x


def _sorted_rows(tensor: spconv.SparseConvTensor) -> tuple[torch.Tensor, torch.Tensor]:
    key = _key(tensor.indices, tensor.spatial_shape)
    order = torch.argsort(key)
    return key[order], tensor.features.detach().cpu().double()[order.to(tensor.features.device).cpu()]


def _coordinate_weights(tensor: spconv.SparseConvTensor, seed: int) -> torch.Tensor:
    """A fixed random weight per output coordinate (not per row), so that the loss, and therefore
    the gradients, do not depend on the order spconv returns the rows in."""
    key = _key(tensor.indices, tensor.spatial_shape)
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(int(key.max()) + 1, tensor.features.shape[1], generator=g, dtype=torch.float64)
    return table[key]


class ThreeLayers(torch.nn.Module):
    """Submanifold conv, strided sparse conv, and the inverse conv back to the input's sites: the
    three kinds the backbone and its decoders use."""

    def __init__(self):
        super().__init__()
        self.subm = spconv.SubMConv3d(4, 8, 3, padding=1, bias=True, indice_key="subm")
        self.down = spconv.SparseConv3d(8, 16, 3, stride=2, padding=1, bias=True, indice_key="down")
        self.up = spconv.SparseInverseConv3d(16, 8, 3, indice_key="down", bias=True)

    def forward(self, x):
        mid = self.subm(x)
        low = self.down(mid)
        return {"subm": mid, "down": low, "up": self.up(low)}


def _run(model, feats, coords, batch_size, device, autocast_dtype=None):
    """Forward and backward of a weighted sum over every output; returns (outputs, input grad)."""
    feats = feats.to(device).requires_grad_()
    x = spconv.SparseConvTensor(feats, coords.to(device), list(GRID), batch_size)
    precision = torch.autocast(device, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with precision:
        out = model(x)
        loss = sum(
            (o.features.double() * _coordinate_weights(o, seed).to(device)).sum() for seed, o in enumerate(out.values())
        )
    loss.backward()
    return out, feats.grad.detach().cpu().double()


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max().clamp(min=1e-12))


# float16 is spconv's mixed-precision path on CUDA (16-mixed); it has no CPU kernels worth testing.
# float32 agrees to ~1e-7 on the CPU; a wrong kernel is off by O(1).
DTYPES = [pytest.param(None, 1e-4, id="float32"), pytest.param(torch.float16, 2e-2, id="float16-autocast")]


@pytest.mark.parametrize("autocast_dtype,tolerance", DTYPES)
def test_sparse_convs_match_the_cpu_reference(device, autocast_dtype, tolerance):
    if autocast_dtype is torch.float16 and device != "cuda":
        pytest.skip("float16 autocast of spconv is a CUDA path")
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    coords, feats = random_voxels(2, GRID, 0.08, 4, g)
    reference = ThreeLayers().double()
    model = copy.deepcopy(reference).float().to(device)

    ref_out, ref_grad = _run(reference, feats.double(), coords, 2, "cpu")
    out, grad = _run(model, feats.float(), coords, 2, device, autocast_dtype)

    for name in ref_out:
        ref_keys, ref_rows = _sorted_rows(ref_out[name])
        keys, rows = _sorted_rows(out[name])
        assert torch.equal(keys, ref_keys), f"{name}: the active sites differ from the CPU reference"
        assert _relative_error(rows, ref_rows) < tolerance, name
    assert _relative_error(grad, ref_grad) < tolerance, "input gradient"
    for (name, p_ref), (_, p) in zip(reference.named_parameters(), model.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert _relative_error(p.grad.detach().cpu().double(), p_ref.grad) < tolerance, f"gradient of {name}"


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_backbone_matches_the_cpu_reference(device, mode):
    """The whole backbone on the device in float32 against the CPU in float64: every scale's
    features in both modes (training mode normalises by batch statistics). Gradients are compared in
    eval mode: in training mode BatchNorm's backward subtracts near-equal terms, and float32 rounding
    alone then moves the first conv's gradient by 2.4e-3 (measured on the CPU), which would blur a
    kernel fault with rounding; in eval mode every gradient agrees to 6e-7."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    coords, feats = random_voxels(2, GRID, 0.05, 3, g)
    reference = SparseVoxelBackbone().double().train(mode == "train")
    model = copy.deepcopy(reference).float().to(device)

    ref_out, ref_grad = _run(reference, feats.double(), coords, 2, "cpu")
    out, grad = _run(model, feats.float(), coords, 2, device)

    for name in ref_out:
        ref_keys, ref_rows = _sorted_rows(ref_out[name])
        keys, rows = _sorted_rows(out[name])
        assert torch.equal(keys, ref_keys), name
        assert _relative_error(rows, ref_rows) < 1e-4, name
    if mode == "eval":
        assert _relative_error(grad, ref_grad) < 1e-4, "input gradient"
        for (name, p_ref), (_, p) in zip(reference.named_parameters(), model.named_parameters()):
            assert _relative_error(p.grad.detach().cpu().double(), p_ref.grad) < 1e-4, f"gradient of {name}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_sparse_backbone_precision_under_autocast(device, dtype):
    """What each mixed precision does to the sparse backbone (backbones/spconv_compat.py, fault 3):
    under bf16 autocast the sparse convs run in float32 (spconv has no bf16 kernels) and give the
    float32 result exactly while dense layers still run in bf16; under fp16 autocast spconv runs its
    own float16 kernels. Gradients are finite either way."""
    if dtype is torch.float16 and device != "cuda":
        pytest.skip("float16 autocast of spconv is a CUDA path")
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    coords, feats = random_voxels(2, GRID, 0.05, 3, g)
    backbone = SparseVoxelBackbone().to(device).train()
    head = torch.nn.Linear(128, 8).to(device)

    def make():
        return spconv.SparseConvTensor(feats.to(device), coords.to(device), list(GRID), 2)

    plain = copy.deepcopy(backbone)(make())
    with torch.autocast(device, dtype=dtype):
        out = backbone(make())
        projected = head(out["x_conv4"].features)
    expected = torch.float32 if dtype is torch.bfloat16 else torch.float16
    assert {v.features.dtype for v in out.values()} == {expected}
    assert projected.dtype == dtype  # the dense layers do run in reduced precision
    if dtype is torch.bfloat16:  # rows by coordinate: two CUDA runs return a strided conv's rows in different orders
        for name, value in out.items():
            keys, rows = _sorted_rows(value)
            plain_keys, plain_rows = _sorted_rows(plain[name])
            assert torch.equal(keys, plain_keys), name
            torch.testing.assert_close(rows, plain_rows, rtol=1e-5, atol=1e-5)
    projected.float().square().mean().backward()
    grads = [p.grad for p in backbone.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert any(gr.abs().sum() > 0 for gr in grads)
