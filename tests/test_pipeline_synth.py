"""End to end on the `tiny` synthetic preset: synth -> raw Gen4 files -> RVT layout -> loader,
checked against representations and labels recomputed from the raw files."""

import numpy as np
import pytest

from evcmae.events.h5 import H5EventFile
from evcmae.events.histogram import events_histogram
from evcmae.events.labels import load_labels
from evcmae.events.preprocess import PreprocessConfig, preprocess_dataset
from evcmae.events.rvt import RVTSplit
from evcmae.events.synth import generate
from evcmae.events.voxelize import Voxelizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    raw = tmp_path_factory.mktemp("tiny_raw")
    generate(raw, "tiny", seed=3)
    out = tmp_path_factory.mktemp("tiny_rvt")
    summary = preprocess_dataset(raw, out, PreprocessConfig(downsample=2), workers=1, progress=False)
    assert summary.ok, summary.format()
    return raw, out


@pytest.mark.slow
def test_representations_match_raw_windows(tiny):
    raw, out = tiny
    for split in ("train", "val", "test"):
        seqs = RVTSplit(out / split)
        assert len(seqs) == len(list((raw / split).glob("*_td.h5")))
        for seq in seqs:
            with H5EventFile(raw / split / f"{seq.name}_td.h5") as f:
                h, w = f.height, f.width
                assert seq.shape == (20, h // 2, w // 2)
                for i in np.linspace(0, len(seq) - 1, 4).astype(int):
                    end = int(seq.timestamps_us[i])
                    window = f.read_time_window(end - 50_000, end + 1)  # RVT windows are closed
                    want = events_histogram(window, h, w, downsample=2).numpy()
                    np.testing.assert_array_equal(seq.representation(int(i)), want)


@pytest.mark.slow
def test_label_frames_come_from_raw_labels(tiny):
    raw, out = tiny
    for seq in RVTSplit(out / "train"):
        labels = load_labels(raw / "train" / f"{seq.name}_bbox.npy")
        assert seq.num_label_frames > 0
        for j in range(seq.num_label_frames):
            r, boxes = seq.label_frame(j, scaled=False)
            t = int(seq.label_timestamps_us[j])
            assert seq.timestamps_us[r] == t, "each label frame ends exactly at its representation"
            assert t >= 100_000 and np.all(boxes["t"] == t)
            raw_rows = labels[labels["t"] == t]
            # Kept boxes are (clipped) raw boxes of that time, same tracks and classes.
            assert set(boxes["track_id"]) <= set(raw_rows["track_id"])
            for b in boxes:
                src = raw_rows[raw_rows["track_id"] == b["track_id"]][0]
                assert b["class_id"] == src["class_id"]
                assert b["x"] >= src["x"] - 1e-3 and b["x"] + b["w"] <= src["x"] + src["w"] + 1e-3
                assert min(b["w"], b["h"]) >= 5


def test_voxelizer_on_synthetic_window(tiny):
    raw, _ = tiny
    with H5EventFile(next((raw / "pretrain").glob("*_td.h5"))) as f:
        t0 = f.t_range[0] + 200_000
        window = f.read_time_window(t0, t0 + 50_000)
        vox = Voxelizer(f.width, f.height, window_us=50_000, num_bins=10, downsample=2)(window, t0)
    assert len(window) > 1000
    assert vox.spatial_shape == (10, f.height // 2, f.width // 2)
    assert int(vox.features[:, :2].sum()) == len(window)
    assert int(vox.features[:, 1].sum()) == int(window.p.sum())
