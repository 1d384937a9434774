"""The sparse backbone on CPU: spconv against dense conv3d, shapes and names, inverse convs."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from evcmae.backbones import spconv_compat
from evcmae.backbones.sparse_resnet import DEFAULT_STRIDES, SparseVoxelBackbone
from evcmae.backbones.spconv_compat import spconv, to_sparse_tensor
from evcmae.events.benchmarks import random_events
from evcmae.events.voxelize import VoxelBatch, Voxelizer


def _random_sites(batch, shape, density, seed):
    g = torch.Generator().manual_seed(seed)
    active = torch.rand(batch, *shape, generator=g) < density
    # nonzero() is column-major in recent torch: spconv ignores strides, hence contiguous().
    return active, active.nonzero().to(torch.int32).contiguous()


def _kernel_to_dense(w):
    """spconv 2.x weights are (out, kt, ky, kx, in) and apply as a correlation, like conv3d."""
    return w.permute(0, 4, 1, 2, 3)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 1), ((1, 3, 3), (1, 2, 2), (0, 1, 1))])
def test_sparse_stack_matches_dense_conv3d(kernel, stride, padding):
    torch.manual_seed(0)
    shape, c_in, c_mid, c_out = (5, 6, 7), 3, 4, 5
    active, coords = _random_sites(2, shape, 0.3, seed=1)
    subm = spconv.SubMConv3d(c_in, c_mid, 3, padding=1, bias=True, indice_key="s").double()
    down = spconv.SparseConv3d(c_mid, c_out, kernel, stride=stride, padding=padding, bias=True).double()
    feats = torch.randn(len(coords), c_in, dtype=torch.float64, requires_grad=True)

    out = down(subm(spconv.SparseConvTensor(feats, coords, list(shape), 2)))
    weights = torch.randn_like(out.features)
    (out.features * weights).sum().backward()

    feats_d = feats.detach().clone().requires_grad_()
    w1 = _kernel_to_dense(subm.weight.detach()).clone().requires_grad_()
    w2 = _kernel_to_dense(down.weight.detach()).clone().requires_grad_()
    b1, b2 = (m.bias.detach().clone().requires_grad_() for m in (subm, down))
    dense = _scatter(feats_d, coords, shape)
    # Submanifold: the dense result counts only at the input's active sites.
    mid = F.conv3d(dense, w1, b1, padding=1) * active[:, None]
    full = F.conv3d(mid, w2, b2, stride=stride, padding=padding)

    # Output sites: exactly those whose receptive field holds an active input.
    reach = (
        F.conv3d(
            active[:, None].double(),
            torch.ones(1, 1, *_triple(kernel), dtype=torch.float64),
            stride=stride,
            padding=padding,
        )[:, 0]
        > 0
    )
    assert list(out.spatial_shape) == list(reach.shape[1:])
    assert torch.equal(_as_set(out.indices), _as_set(reach.nonzero()))

    ob, ot, oy, ox = out.indices.long().unbind(1)
    gathered = full[ob, :, ot, oy, ox]
    torch.testing.assert_close(out.features, gathered)
    (gathered * weights).sum().backward()
    torch.testing.assert_close(feats.grad, feats_d.grad)
    torch.testing.assert_close(_kernel_to_dense(subm.weight.grad), w1.grad)
    torch.testing.assert_close(_kernel_to_dense(down.weight.grad), w2.grad)
    torch.testing.assert_close(subm.bias.grad, b1.grad)
    torch.testing.assert_close(down.bias.grad, b2.grad)


def _scatter(feats, coords, shape):
    b, t, y, x = coords.long().unbind(1)
    dense = torch.zeros(int(b.max()) + 1, *shape, feats.shape[1], dtype=feats.dtype)
    dense = dense.index_put((b, t, y, x), feats)
    return dense.permute(0, 4, 1, 2, 3)


def _triple(k):
    return (k, k, k) if isinstance(k, int) else tuple(k)


def _as_set(indices):
    """Rows as one sorted int64 key each, so coordinate sets compare regardless of order."""
    i = indices.long()
    return torch.sort(((i[:, 0] * 1000 + i[:, 1]) * 1000 + i[:, 2]) * 1000 + i[:, 3]).values


def test_cpu_patches_are_idempotent():
    first = spconv_compat.patch_cpu_stream()
    second = spconv_compat.patch_cpu_stream()
    assert first == second == (not torch.cuda.is_available())
    if second:
        assert spconv_compat.ops.get_current_stream() == 0
    wrapped = spconv_compat.ops.indice_conv
    spconv_compat.patch_cpu_threads()
    assert spconv_compat.ops.indice_conv is wrapped and wrapped.evcmae_single_threaded


def test_convs_built_for_implicit_gemm_run_natively_on_cpu(voxel_batch):
    """A CUDA build of spconv builds its convs with the implicit-GEMM algorithm, which has no CPU
    kernels (compat fault 4). Set on every conv here as that build would, the backbone still runs on
    CPU tensors, equals the native result and gradients, and keeps the algorithm it was built with."""
    from spconv.core import ConvAlgo
    from spconv.pytorch.conv import SparseConvolution

    assert spconv_compat.SparseConvolution.forward.evcmae_native_algo_on_cpu
    spconv_compat.patch_native_algo_on_cpu()  # a second application is a no-op
    assert not getattr(spconv_compat.SparseConvolution.forward.__wrapped__, "evcmae_native_algo_on_cpu", False)
    torch.manual_seed(0)
    native = SparseVoxelBackbone(blocks=(1, 1, 1, 1)).eval()
    gemm = copy.deepcopy(native)
    convs = [m for m in gemm.modules() if isinstance(m, SparseConvolution)]
    assert len(convs) >= 8
    for conv in convs:
        conv.algo = ConvAlgo.MaskImplicitGemm
    outputs = {}
    for name, model in (("native", native), ("gemm", gemm)):
        feats = voxel_batch.features.clone().requires_grad_()
        out = model(dataclasses.replace(voxel_batch, features=feats))
        sum(o.features.square().sum() for o in out.values()).backward()
        outputs[name] = ({k: v.features.detach() for k, v in out.items()}, feats.grad)
    for key, value in outputs["native"][0].items():
        torch.testing.assert_close(outputs["gemm"][0][key], value, rtol=0, atol=0)
    torch.testing.assert_close(outputs["gemm"][1], outputs["native"][1], rtol=0, atol=0)
    assert {conv.algo for conv in convs} == {ConvAlgo.MaskImplicitGemm}


def test_eval_mode_convs_on_cuda_keep_autograd_when_it_is_needed():
    """spconv runs an eval-mode conv on CUDA outside autograd (compat fault 5). The decision that
    routes it back onto the training path, with stand-ins for CUDA tensors (this machine has none):
    only CUDA, only with gradients enabled, only when something upstream or the weights need them."""
    from types import SimpleNamespace

    from spconv.pytorch.conv import SparseConvolution

    def tensor(cuda: bool, grad: bool):
        return SimpleNamespace(is_cuda=cuda, requires_grad=grad)

    decide = spconv_compat.needs_training_path
    frozen = tensor(True, False)
    assert decide(True, tensor(True, False), frozen, None)  # training mode is never changed
    assert decide(False, tensor(True, False), tensor(True, True), None)  # trainable weight
    assert decide(False, tensor(True, True), frozen, None)  # gradient wanted for the input
    assert decide(False, tensor(True, False), frozen, tensor(True, True))  # trainable bias alone
    assert not decide(False, tensor(True, False), frozen, None)  # nothing needs a gradient
    assert not decide(False, tensor(True, False), frozen, frozen)
    with torch.no_grad():
        assert not decide(False, tensor(True, True), tensor(True, True), None)  # validation, teacher
    assert not decide(False, tensor(False, True), tensor(False, True), None)  # CPU: already differentiable
    assert SparseConvolution._conv_forward.evcmae_differentiable_eval_on_cuda
    patched = SparseConvolution._conv_forward
    spconv_compat.patch_differentiable_eval_on_cuda()
    assert SparseConvolution._conv_forward is patched  # idempotent


@pytest.fixture(scope="module")
def voxel_batch() -> VoxelBatch:
    vox = Voxelizer(width=80, height=44, num_bins=10)
    windows = [random_events(n, 80, 44, 50_000, seed=s) for s, n in ((0, 2500), (1, 1200))]
    return vox(windows, [0, 0])


def test_conv_is_correct_with_several_threads(voxel_batch):
    """spconv's CPU scatter-add races between OpenMP threads (compat fault 2): unpatched, most of
    these repeats give wrong features or gradients with two threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        conv = spconv.SubMConv3d(3, 16, 3, padding=1, bias=False, indice_key="s")
        shape = voxel_batch.spatial_shape
        w = _kernel_to_dense(conv.weight.detach())
        feats_d = voxel_batch.features.clone().requires_grad_()
        b, t, y, x = voxel_batch.coords.long().unbind(1)
        ref = F.conv3d(_scatter(feats_d, voxel_batch.coords, shape), w, padding=1)[b, :, t, y, x]
        grad_out = torch.randn_like(ref)
        (ref * grad_out).sum().backward()
        for _ in range(4):
            feats = voxel_batch.features.clone().requires_grad_()
            out = conv(spconv.SparseConvTensor(feats, voxel_batch.coords, list(shape), 2))
            (out.features * grad_out).sum().backward()
            torch.testing.assert_close(out.features, ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(feats.grad, feats_d.grad, atol=1e-5, rtol=1e-5)
        assert torch.get_num_threads() == 2  # the patch restores the caller's setting
    finally:
        torch.set_num_threads(threads)


def test_backbone_outputs(voxel_batch):
    torch.manual_seed(0)
    model = SparseVoxelBackbone()
    assert model.strides == DEFAULT_STRIDES
    out = model(to_sparse_tensor(voxel_batch))
    assert list(out) == ["x_conv1", "x_conv2", "x_conv3", "x_conv4"]
    assert model.out_strides == {"x_conv1": (1, 1, 1), "x_conv2": (1, 2, 2), "x_conv3": (2, 4, 4), "x_conv4": (4, 8, 8)}
    assert model.out_channels == {"x_conv1": 16, "x_conv2": 32, "x_conv3": 64, "x_conv4": 128}
    shapes = model.output_shapes(voxel_batch.spatial_shape)
    assert shapes == {"x_conv1": (10, 44, 80), "x_conv2": (10, 22, 40), "x_conv3": (5, 11, 20), "x_conv4": (3, 6, 10)}
    for name, t in out.items():
        assert tuple(t.spatial_shape) == shapes[name]
        assert t.features.shape == (len(t.indices), model.out_channels[name])
        assert (t.indices[:, 1:] < torch.tensor(shapes[name])).all() and (t.indices >= 0).all()
        assert set(t.indices[:, 0].tolist()) == {0, 1}
    assert torch.equal(out["x_conv1"].indices, voxel_batch.coords)  # stage 1 is submanifold

    sum(t.features.mean() for t in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_backbone_module_names_are_stable():
    sd = SparseVoxelBackbone().state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["conv_input.0.weight"] == (16, 3, 3, 3, 3)
    assert shapes["conv_input.1.running_var"] == (16,)
    assert shapes["conv1.0.conv1.weight"] == (16, 3, 3, 3, 16)
    assert shapes["conv1.1.bn2.weight"] == (16,)
    assert shapes["conv2.0.0.weight"] == (32, 1, 3, 3, 16)  # stride (1, 2, 2): no kernel along t
    assert shapes["conv2.0.1.weight"] == (32,)
    assert shapes["conv3.0.0.weight"] == (64, 3, 3, 3, 32)
    assert shapes["conv4.2.conv2.weight"] == (128, 3, 3, 3, 128)
    convs = [k for k, v in shapes.items() if k.endswith("weight") and len(v) == 5]
    assert len(convs) == 1 + 4 + 3 * 5
    assert "conv1.2.conv1.weight" not in sd and "conv5.0.0.weight" not in sd


def test_backbone_configurable():
    model = SparseVoxelBackbone(
        in_channels=2, channels=(8, 8, 16), blocks=(1, 1, 0), strides=((1, 1, 1), (1, 1, 1), (2, 2, 2))
    )
    assert model.out_strides == {"x_conv1": (1, 1, 1), "x_conv2": (1, 1, 1), "x_conv3": (2, 2, 2)}
    assert model.downsample_kernel(2) is None and model.downsample_kernel(3) == (3, 3, 3)
    _, coords = _random_sites(1, (4, 8, 8), 0.2, seed=3)
    out = model(spconv.SparseConvTensor(torch.rand(len(coords), 2), coords, [4, 8, 8], 1))
    assert out["x_conv3"].features.shape[1] == 16 and list(out["x_conv3"].spatial_shape) == [2, 4, 4]
    with pytest.raises(ValueError):
        SparseVoxelBackbone(channels=(8, 16), blocks=(1,), strides=((1, 1, 1), (2, 2, 2)))


def test_non_contiguous_coords_are_handled(voxel_batch):
    """spconv reads raw memory: a column-major coords tensor must give the same result."""
    torch.manual_seed(0)
    model = SparseVoxelBackbone(blocks=(1, 0, 0, 0)).eval()
    col_major = voxel_batch.coords.t().contiguous().t()
    assert not col_major.is_contiguous()
    other = VoxelBatch(col_major, voxel_batch.features, voxel_batch.spatial_shape, voxel_batch.batch_size)
    with torch.no_grad():
        a, b = model(voxel_batch)["x_conv4"], model(other)["x_conv4"]
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.features, b.features)


def test_inverse_conv_restores_coordinates(voxel_batch):
    model = SparseVoxelBackbone(blocks=(1, 1, 1, 1))
    out = model(voxel_batch)
    names = list(out)
    for stage in range(2, 5):
        coarse, fine = out[names[stage - 1]], out[names[stage - 2]]
        inverse = spconv.SparseInverseConv3d(
            model.channels[stage - 1],
            model.channels[stage - 2],
            model.downsample_kernel(stage),
            indice_key=f"spconv{stage}",
        )
        up = inverse(coarse)
        assert torch.equal(up.indices, fine.indices)
        assert list(up.spatial_shape) == list(fine.spatial_shape)
        assert up.features.shape == (len(fine.indices), model.channels[stage - 2])


def test_truncated_backbone_equals_full_backbone_at_its_last_stage(voxel_batch):
    """The encoder the detector uses (truncated at x_conv3) computes exactly the full backbone's
    x_conv3, with the same weights, and holds no parameter of the stages it dropped."""
    import copy

    torch.manual_seed(0)
    full = SparseVoxelBackbone(in_channels=voxel_batch.features.shape[1]).eval()
    truncated = copy.deepcopy(full).truncate("x_conv3")
    with torch.no_grad():
        reference = full(voxel_batch)["x_conv3"]
        partial = full(voxel_batch, until="x_conv3")
        cut = truncated(voxel_batch)
    assert list(partial) == ["x_conv1", "x_conv2", "x_conv3"] == list(cut)
    for out in (partial["x_conv3"], cut["x_conv3"]):
        assert torch.equal(out.indices, reference.indices)
        assert torch.equal(out.features, reference.features)
    names = {k.split(".")[0] for k in truncated.state_dict()}
    assert names == {"conv_input", "conv1", "conv2", "conv3"}
    assert list(truncated.stage_modules()) == ["conv_input", "conv1", "conv2", "conv3"]
    assert truncated.out_channels == {"x_conv1": 16, "x_conv2": 32, "x_conv3": 64}
    with pytest.raises(ValueError, match="x_conv4"):
        truncated(voxel_batch, until="x_conv4")
    # a truncated encoder's weights name the stage to cut a fresh backbone at before loading them
    fresh = SparseVoxelBackbone(in_channels=voxel_batch.features.shape[1])
    assert fresh.deepest_stage_in(truncated.state_dict()) == "x_conv3"
    assert fresh.deepest_stage_in(full.state_dict()) == "x_conv4"
    assert fresh.deepest_stage_in({"conv_input.0.weight": None}) is None


def test_config_from_state_round_trips():
    from evcmae.backbones.sparse_resnet import config_from_state

    backbone = SparseVoxelBackbone(in_channels=3, channels=(8, 16, 24), blocks=(1, 2, 1), strides=DEFAULT_STRIDES[:3])
    config = config_from_state(backbone.state_dict())
    assert config == {
        "in_channels": 3,
        "channels": [8, 16, 24],
        "blocks": [1, 2, 1],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
    }


def test_bf16_autocast_runs_the_sparse_convs_in_float32(voxel_batch):
    """spconv has no bf16 kernels (a bf16 tensor raised KeyError); under bf16 autocast the sparse
    convs run in float32 (spconv_compat, fault 3), so the backbone gives the float32 result, and a
    conv handed bf16 features computes in float32 too."""
    torch.manual_seed(0)
    model = SparseVoxelBackbone().eval()
    with torch.no_grad():
        plain = model(voxel_batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(voxel_batch)
    for name in plain:
        assert mixed[name].features.dtype == torch.float32
        assert torch.equal(mixed[name].features, plain[name].features), name
    x = to_sparse_tensor(voxel_batch)
    conv = spconv.SubMConv3d(x.features.shape[1], 4, 3, padding=1, indice_key="bf16")
    out = conv(x.replace_feature(x.features.bfloat16()))
    assert out.features.dtype == torch.float32
    torch.testing.assert_close(out.features, conv(x).features, rtol=1e-2, atol=1e-2)  # bf16-rounded inputs
