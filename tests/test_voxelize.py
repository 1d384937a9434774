import numpy as np
import pytest

from evcmae.events.benchmarks import naive_voxelize
from evcmae.events.container import Events
from evcmae.events.voxelize import Voxelizer


def reference(events, t_start, window_us, num_bins, cell_y, cell_x):
    """Per-event Python loop: the definition the vectorised code must reproduce."""
    acc = {}
    for x, y, t, p in zip(events.x.tolist(), events.y.tolist(), events.t.tolist(), events.p.tolist()):
        dt = t - t_start
        k = dt * num_bins // window_us
        b0 = -(-k * window_us // num_bins)
        b1 = -(-(k + 1) * window_us // num_bins)
        v = acc.setdefault((k, y // cell_y, x // cell_x), [0, 0, 0.0])
        v[p] += 1
        v[2] += (dt - b0) / (b1 - b0)
    keys = sorted(acc)
    return np.array(keys), np.array([[acc[k][0], acc[k][1], acc[k][2] / (acc[k][0] + acc[k][1])] for k in keys])


def random_events(rng, n, w, h, t0, dur):
    return Events(
        x=rng.integers(0, w, n),
        y=rng.integers(0, h, n),
        t=np.sort(rng.integers(t0, t0 + dur, n)),
        p=rng.integers(0, 2, n),
        width=w,
        height=h,
    )


@pytest.mark.parametrize("voxel_size,downsample,num_bins", [((1, 1), 1, 10), ((2, 3), 1, 5), ((1, 1), 2, 7)])
def test_matches_reference_loop(voxel_size, downsample, num_bins):
    rng = np.random.default_rng(0)
    w, h, t0, win = 40, 30, 1_000_123, 50_000
    # Few pixels so voxels hold several events of both polarities.
    ev = random_events(rng, 4000, w, h, t0, win)
    vox = Voxelizer(w, h, window_us=win, num_bins=num_bins, voxel_size=voxel_size, downsample=downsample)
    out = vox(ev, t0)
    cy, cx = voxel_size[0] * downsample, voxel_size[1] * downsample
    ref_coords, ref_feats = reference(ev, t0, win, num_bins, cy, cx)
    assert out.spatial_shape == (num_bins, -(-h // cy), -(-w // cx))
    np.testing.assert_array_equal(out.coords[:, 0].numpy(), 0)
    np.testing.assert_array_equal(out.coords[:, 1:].numpy(), ref_coords)
    np.testing.assert_array_equal(out.features[:, :2].numpy(), ref_feats[:, :2])
    # mean_time is quantised to at least 1/256 of a bin (2**-12 here).
    np.testing.assert_allclose(out.features[:, 2].numpy(), ref_feats[:, 2], atol=2**-8)
    assert out.features[:, :2].sum() == len(ev)


def test_agrees_with_naive_numpy_at_full_size():
    rng = np.random.default_rng(1)
    ev = random_events(rng, 200_000, 640, 360, 0, 50_000)
    out = Voxelizer(640, 360)(ev, 0)
    cells, feats = naive_voxelize(ev, 10, 50_000, 640, 360)
    c = out.coords.numpy().astype(np.int64)
    np.testing.assert_array_equal((c[:, 1] * 360 + c[:, 2]) * 640 + c[:, 3], cells)
    np.testing.assert_array_equal(out.features[:, :2].numpy(), feats[:, :2])
    np.testing.assert_allclose(out.features[:, 2].numpy(), feats[:, 2], atol=2**-11)


def test_bin_boundaries_are_exact():
    # window 1000 µs in 3 bins: bins start at 0, 334, 667 (ceil(k * 1000 / 3)).
    t = np.array([0, 333, 334, 666, 667, 999])
    ev = Events(x=np.zeros(6), y=np.zeros(6), t=t + 500, p=np.ones(6), width=2, height=2)
    out = Voxelizer(2, 2, window_us=1000, num_bins=3)(ev, 500)
    np.testing.assert_array_equal(out.coords[:, 1].numpy(), [0, 1, 2])
    np.testing.assert_array_equal(out.features[:, 1].numpy(), [2, 2, 2])


def test_batch_index_unique_sorted_and_empty_window():
    rng = np.random.default_rng(2)
    wins = [
        random_events(rng, 500, 32, 16, 0, 10_000),
        Events.empty(32, 16),
        random_events(rng, 300, 32, 16, 0, 10_000),
    ]
    out = Voxelizer(32, 16, window_us=10_000, num_bins=4)(wins, [0, 0, 0])
    assert out.batch_size == 3
    np.testing.assert_array_equal(out.counts_per_sample().numpy() > 0, [True, False, True])
    c = out.coords.numpy().astype(np.int64)
    lin = ((c[:, 0] * 4 + c[:, 1]) * 16 + c[:, 2]) * 32 + c[:, 3]
    assert np.all(np.diff(lin) > 0), "coordinates must be unique and sorted"
    assert out.coords.dtype.is_floating_point is False and out.features.shape[1] == 3


def test_unsorted_input_gives_same_voxels():
    rng = np.random.default_rng(3)
    ev = random_events(rng, 2000, 20, 20, 0, 5000)
    shuffled = ev[rng.permutation(len(ev))]
    vox = Voxelizer(20, 20, window_us=5000, num_bins=5)
    a, b = vox(ev, 0), vox(shuffled, 0)
    np.testing.assert_array_equal(a.coords.numpy(), b.coords.numpy())
    np.testing.assert_allclose(a.features.numpy(), b.features.numpy(), atol=1e-6)


def test_large_sensor_uses_wide_keys():
    # 1280x720 cells need 20 bits: still int32 keys; a 20000x20000 grid forces the int64 path.
    ev = Events(x=[19_999, 5], y=[19_999, 7], t=[10, 20], p=[1, 0], width=20_000, height=20_000)
    out = Voxelizer(20_000, 20_000, window_us=100, num_bins=2)(ev, 0)
    np.testing.assert_array_equal(out.coords.numpy(), [[0, 0, 7, 5], [0, 0, 19_999, 19_999]])
    np.testing.assert_allclose(out.features[:, 2].numpy(), [0.4, 0.2], atol=1e-5)


def test_bad_input_is_refused():
    vox = Voxelizer(10, 10, window_us=1000, num_bins=2)
    with pytest.raises(ValueError, match="outside the window"):
        vox(Events(x=[1], y=[1], t=[1500], p=[1]), 0)
    with pytest.raises(ValueError, match="exceed the 10x10 sensor"):
        vox(Events(x=[10], y=[1], t=[5], p=[1]), 0)
    with pytest.raises(ValueError, match="start times"):
        vox([Events.empty()], [0, 1])
    with pytest.raises(ValueError):
        Voxelizer(10, 10, window_us=5, num_bins=10)
