"""Per-sample voxel masking: ratios, unit shapes, independence, determinism, edge cases."""

import pytest
import torch

from evcmae.pretrain.masking import MaskingConfig, mask_voxels, unit_ids


def _grid_coords(batch, T, H, W, density=1.0, seed=0):
    """Unique sorted (b, t, y, x) int32 coordinates, optionally a random subset of the grid."""
    g = torch.Generator().manual_seed(seed)
    active = torch.rand(batch, T, H, W, generator=g) < density
    return active.nonzero().to(torch.int32).contiguous()


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _constant_within(visible, keys):
    """True when every group of voxels sharing a key is all visible or all masked."""
    _, inv = torch.unique(keys, dim=0, return_inverse=True)
    lo = torch.full((int(inv.max()) + 1,), 2).scatter_reduce(0, inv, visible.long(), "amin")
    hi = torch.full((int(inv.max()) + 1,), -1).scatter_reduce(0, inv, visible.long(), "amax")
    return bool((lo == hi).all())


def test_tube_masks_whole_patches_through_all_time_bins():
    coords = _grid_coords(2, 6, 32, 48)  # every cell occupied: 4 x 6 patches of 8 x 8 per sample
    visible = mask_voxels(coords, 2, "tube", 0.7, patch_size=(8, 8), generator=_gen())
    c = coords.long()
    tube = torch.stack([c[:, 0], c[:, 2] // 8, c[:, 3] // 8], 1)
    assert _constant_within(visible, tube)
    for b in range(2):
        n_patches, kept = 4 * 6, visible[c[:, 0] == b]
        # Every masked patch is masked in all 6 bins, so the voxel ratio equals the patch ratio.
        assert (~kept).sum().item() == round(0.7 * n_patches) * 8 * 8 * 6


def test_ratio_counts_occupied_patches_only():
    """A sample whose events cover 10 patches of a large grid masks 7 of them, not 70 % of the grid."""
    ys, xs = torch.meshgrid(torch.arange(0, 160, 16), torch.tensor([3]), indexing="ij")
    coords = torch.stack([torch.zeros(10), torch.zeros(10), ys.flatten(), xs.flatten()], 1).int()
    coords = torch.cat([coords, coords + torch.tensor([0, 1, 1, 1])])  # two voxels per patch
    visible = mask_voxels(coords, 1, "tube", 0.7, patch_size=(16, 16), generator=_gen())
    assert (~visible).sum().item() == 7 * 2


def test_block_masks_spatiotemporal_blocks():
    coords = _grid_coords(1, 8, 16, 16)
    visible = mask_voxels(coords, 1, "block", 0.5, block_size=(2, 4, 4), generator=_gen(1))
    c = coords.long()
    blocks = torch.stack([c[:, 1] // 2, c[:, 2] // 4, c[:, 3] // 4], 1)
    assert _constant_within(visible, blocks)
    assert (~visible).sum().item() == (4 * 4 * 4 // 2) * 2 * 4 * 4
    # Unlike tubes, a spatial patch is masked in some time blocks and kept in others.
    assert not _constant_within(visible, torch.stack([c[:, 2] // 4, c[:, 3] // 4], 1))


def test_random_masks_exact_count_per_sample():
    coords = _grid_coords(3, 4, 20, 20, density=0.1, seed=2)
    visible = mask_voxels(coords, 3, "random", 0.7, generator=_gen())
    for b in range(3):
        n = int((coords[:, 0] == b).sum())
        assert int((~visible[coords[:, 0] == b]).sum()) == int(0.7 * n + 0.5)


@pytest.mark.parametrize("strategy", ["random", "tube", "block"])
def test_samples_are_masked_independently(strategy):
    one = _grid_coords(1, 8, 64, 64, density=0.2, seed=3)
    coords = torch.cat([one, one + torch.tensor([1, 0, 0, 0], dtype=torch.int32)])  # same voxels twice
    visible = mask_voxels(coords, 2, strategy, 0.7, patch_size=(8, 8), block_size=(2, 8, 8), generator=_gen())
    first, second = visible[: len(one)], visible[len(one) :]
    assert not torch.equal(first, second)
    assert abs(first.float().mean() - second.float().mean()) < 0.1  # same ratio, other patches


def test_never_zero_visible():
    # sample 0: one voxel; sample 1: empty; sample 2: two voxels in one patch; sample 3: three patches
    coords = torch.tensor(
        [[0, 3, 5, 5], [2, 0, 1, 1], [2, 1, 2, 2], [3, 0, 0, 0], [3, 0, 0, 40], [3, 0, 40, 0]], dtype=torch.int32
    )
    for strategy in ("random", "tube", "block"):
        for ratio in (0.7, 0.99, 1.0):
            visible = mask_voxels(coords, 4, strategy, ratio, generator=_gen())
            for b in (0, 2, 3):
                assert visible[coords[:, 0] == b].any(), (strategy, ratio, b)
    visible = mask_voxels(coords, 4, "tube", 1.0, generator=_gen())
    assert visible[coords[:, 0] == 3].sum() == 1  # ratio 1 keeps exactly one patch
    assert mask_voxels(coords, 4, "tube", 0.0).all()
    assert mask_voxels(coords[:0], 4).shape == (0,)


def test_determinism_with_seeded_generator():
    coords = _grid_coords(2, 5, 48, 48, density=0.3, seed=4)
    cfg = MaskingConfig(strategy="tube", ratio=0.7, patch_size=(8, 8))
    a, b = cfg(coords, 2, _gen(7)), cfg(coords, 2, _gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, cfg(coords, 2, _gen(8)))
    assert cfg(coords, 2).dtype == torch.bool  # without a generator: global RNG


def test_permutation_neither_duplicates_nor_drops():
    """``random.shuffle`` on a tensor swaps views and duplicates rows, so some units are drawn twice
    and others never. A true permutation masks an exact count and every unit equally often."""
    coords = _grid_coords(2, 1, 4, 5)  # 20 voxels per sample
    g = _gen(5)
    counts = torch.zeros(len(coords))
    draws = 300
    for _ in range(draws):
        visible = mask_voxels(coords, 2, "random", 0.7, generator=g)
        assert int((~visible[:20]).sum()) == 14 and int((~visible[20:]).sum()) == 14
        counts += (~visible).float()
    freq = counts / draws
    assert ((freq > 0.55) & (freq < 0.85)).all()


def test_unsorted_input_keeps_alignment():
    coords = _grid_coords(2, 4, 32, 32, density=0.3, seed=6)
    shuffled = coords[torch.randperm(len(coords), generator=_gen(1))]
    visible = mask_voxels(shuffled, 2, "tube", 0.7, patch_size=(8, 8), generator=_gen())
    c = shuffled.long()
    assert _constant_within(visible, torch.stack([c[:, 0], c[:, 2] // 8, c[:, 3] // 8], 1))


def test_unit_ids_number_the_occupied_patches():
    coords = torch.tensor([[0, 0, 0, 0], [0, 5, 1, 1], [0, 0, 0, 20], [1, 0, 0, 0]], dtype=torch.int32)
    unit, sample = unit_ids(coords, MaskingConfig(patch_size=(16, 16)))
    assert unit.tolist() == [0, 0, 1, 2] and sample.tolist() == [0, 0, 1]


def test_invalid_arguments():
    coords = torch.zeros(3, 4, dtype=torch.int32)
    with pytest.raises(ValueError):
        mask_voxels(coords, 1, "checkerboard")
    with pytest.raises(ValueError):
        mask_voxels(coords, 1, ratio=1.5)
    for ratio in (0.0, 1.0):  # a config must mask something and leave something
        with pytest.raises(ValueError, match="ratio"):
            MaskingConfig(ratio=ratio)
    with pytest.raises(ValueError):
        mask_voxels(coords + torch.tensor([2, 0, 0, 0], dtype=torch.int32), 2)
    with pytest.raises(ValueError):
        MaskingConfig(patch_size=(0, 4))


def test_tube_size_rule_from_box_sizes():
    from evcmae.pretrain.masking import FALLBACK_PATCH, tube_size_from_boxes

    # median short side 5 voxels at stride 4 -> one stride; 13 -> 12; never below the stride
    assert tube_size_from_boxes([5, 4, 6, 30, 2], 4) == (4, 4)
    assert tube_size_from_boxes([13, 13, 20], 4) == (12, 12)
    assert tube_size_from_boxes([1, 2, 3], 8) == (8, 8)
    assert tube_size_from_boxes([], 4) == FALLBACK_PATCH


def test_auto_patch_resolves_from_the_data_module():
    class Data:
        def box_short_sides(self):
            return [9.0, 10.0, 11.0]

    class Backbone:
        out_strides = {"x_conv3": (2, 4, 4)}

    cfg = MaskingConfig(patch_size="auto")
    with pytest.raises(ValueError, match="auto"):
        cfg(torch.zeros(1, 4, dtype=torch.int32), 1)
    resolved = cfg.resolve(Data(), Backbone(), "x_conv3")
    assert resolved.patch_size == (8, 8) and resolved.ratio == cfg.ratio
