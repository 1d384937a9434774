"""Pretraining data: window pairs, per-window reads, collation, deterministic and resumable order."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from evcmae.events.h5 import H5EventFile
from evcmae.events.labels import load_labels
from evcmae.events.synth import get_preset
from evcmae.pretrain.data import (
    EpochSampler,
    LabelledWindows,
    PretrainDataModule,
    ResumableLoader,
    WindowPairs,
    find_recordings,
    window_range,
)


@pytest.fixture(scope="module")
def tiny(synth_tiny):
    return synth_tiny


def test_window_range_keeps_whole_windows_only():
    assert list(window_range((0, 99_999), 50_000)) == [0, 1]
    assert list(window_range((1, 100_000), 50_000)) == [1]  # [0, 50 ms) starts before the first event
    assert list(window_range((10, 40), 50_000)) == []
    assert list(window_range(None, 50_000)) == []


def test_pairs_are_adjacent_windows_of_one_recording(tiny):
    files = find_recordings(tiny, ["pretrain"])
    ds = WindowPairs(files, 50_000)
    assert len(ds) > 10
    recs = set()
    for i in range(len(ds)):
        s = ds[i]
        recs.add(s.rec_id)
        assert abs(s.nb_idx - s.win_idx) == 1
        assert s.anchor_t0 == s.win_idx * 50_000 and s.neighbour_t0 == s.nb_idx * 50_000
        for events, t0 in ((s.anchor, s.anchor_t0), (s.neighbour, s.neighbour_t0)):
            assert len(events) > 0
            assert events.t.min() >= t0 and events.t.max() < t0 + 50_000
    assert recs == set(range(len(files)))
    # Deterministic: a second index over the same files is the same list.
    assert np.array_equal(WindowPairs(files, 50_000).items, ds.items)


def test_windows_are_read_by_time_window_never_whole(tiny, monkeypatch):
    files = find_recordings(tiny, ["pretrain"])
    sizes = {}
    for f in files:
        with H5EventFile(f) as h5:
            sizes[str(f)] = len(h5)
    rows = []
    original = H5EventFile.read

    def spy(self, start=0, stop=None):
        rows.append(((stop if stop is not None else len(self)) - start, len(self)))
        return original(self, start, stop)

    monkeypatch.setattr(H5EventFile, "read", spy)
    ds = WindowPairs(files, 50_000)
    for i in range(0, len(ds), 5):
        ds[i]
    assert rows and all(n < total / 5 for n, total in rows)


def test_fallback_to_train_split(tiny):
    with pytest.warns(UserWarning, match="using train/"):
        files = find_recordings(tiny, ["no_such_split"])
    assert files and all(f.parent.name == "train" for f in files)
    with pytest.raises(FileNotFoundError):
        find_recordings(tiny, ["no_such_split"], fallback=None)


def test_collate_gives_two_spconv_batches(tiny):
    dm = PretrainDataModule(str(tiny), 320, 180, batch_size=3)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    for vb in (batch.anchor, batch.neighbour):
        assert vb.coords.dtype == torch.int32 and vb.coords.shape[1] == 4
        assert vb.features.shape == (len(vb), 3)
        assert vb.batch_size == 3 and vb.spatial_shape == (10, 180, 320)
        assert set(vb.coords[:, 0].tolist()) == {0, 1, 2}
        assert len(torch.unique(vb.coords, dim=0)) == len(vb)  # SubM convs need unique sites
    assert batch.rec_ids.shape == batch.win_idx.shape == batch.nb_idx.shape == (3,)
    assert torch.all((batch.nb_idx - batch.win_idx).abs() == 1)


def test_sensor_size_mismatch_is_refused(tiny):
    with pytest.raises(ValueError, match="320x180"):
        PretrainDataModule(str(tiny), 640, 360).setup()


def test_sampler_is_deterministic_sharded_and_skips():
    a = EpochSampler(10, seed=3)
    assert list(a) == list(EpochSampler(10, seed=3))
    a.set_epoch(1)
    assert sorted(a) == list(range(10)) and list(a) != list(EpochSampler(10, seed=3))
    shards = [list(EpochSampler(10, 3, r, seed=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # padded so every rank takes as many steps
    assert set().union(*shards) == set(range(10))
    val = [list(EpochSampler(10, 3, r, shuffle=False, pad=False)) for r in range(3)]
    assert sorted(sum(val, [])) == list(range(10))  # evaluation: each sample once
    s = EpochSampler(10, seed=3)
    s.skip = 4
    assert list(s) == list(EpochSampler(10, seed=3))[4:]
    assert list(s) == list(EpochSampler(10, seed=3))  # the skip applies once


def test_loader_state_resumes_mid_epoch():
    data = list(range(12))
    full = ResumableLoader(data, batch_size=2, sampler=EpochSampler(12, seed=1), drop_last=True)
    seen = []
    for i, b in enumerate(full):
        seen.append(b.tolist())
        if i == 2:
            state = full.state_dict()
    assert state == {"epoch": 0, "batches": 3}
    resumed = ResumableLoader(data, batch_size=2, sampler=EpochSampler(12, seed=1), drop_last=True)
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == seen[3:]
    # A finished epoch is saved as the start of the next.
    assert full.state_dict() == {"epoch": 1, "batches": 0}


def test_labelled_windows_end_at_label_times(tiny):
    files = sorted((tiny / "val").glob("*_td.h5"))
    ds = LabelledWindows(files, 50_000, 320, 180, max_windows=6)
    assert len(ds) == 6
    labels = load_labels(str(files[0]).replace("_td.h5", "_bbox.npy"))
    for i in range(len(ds)):
        events, t0, rec, boxes = ds[i]
        assert t0 + 50_000 in set(labels["t"].tolist())
        assert len(boxes) > 0 and np.all(boxes["t"] == t0 + 50_000)
        assert len(events) == 0 or (events.t.min() >= t0 and events.t.max() < t0 + 50_000)


def test_datamodule_generates_synthetic_data_on_first_use(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        "evcmae.events.synth.writer.generate", lambda root, preset, seed, workers=1: calls.append((root, preset))
    )
    dm = PretrainDataModule(str(tmp_path / "d"), 320, 180, synth_preset="tiny")
    dm.prepare_data()
    assert calls == [(tmp_path / "d", "tiny")]
    (tmp_path / "d").mkdir()
    described = {"preset": "tiny", "seed": 0, "parameters": asdict(get_preset("tiny"))}
    (tmp_path / "d" / "synth.json").write_text(json.dumps(described))
    dm.prepare_data()
    assert len(calls) == 1  # present: not generated again
