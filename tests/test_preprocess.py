"""Raw dataset -> RVT layout, checked against hand-derived label frames and window times and
against histograms computed directly from the raw events of every window."""

import h5py
import numpy as np
import pytest

from evcmae.events.container import Events
from evcmae.events.errors import EventFileError
from evcmae.events.h5 import write_h5
from evcmae.events.histogram import downsample_nearest, stacked_histogram
from evcmae.events.labels import BBOX_DTYPE, save_labels
from evcmae.events.preprocess import PreprocessConfig, plan_windows, preprocess_dataset
from evcmae.events.rvt import RVTSequence, RVTSplit, scale_boxes
from evcmae.tools.preprocess import main

# make_events puts events at y = 33014 in every recording; the reader warns once per file.
pytestmark = pytest.mark.filterwarnings("ignore:.*outside the 64x48 sensor:UserWarning")

W, H = 64, 48
REPR = "stacked_histogram_dt=50_nbins=10"
N_OUT_OF_RANGE = 7

# Label times at 30 Hz from 20 ms, frame 12 missing, frame 21 late by 1.5 ms (within RVT's 2 ms
# jitter), frame 27 late by 2.5 ms (outside it).
LABEL_TIMES = [20000 + 33333 * k + {21: 1500, 27: 2500}.get(k, 0) for k in range(36) if k != 12]
# Label period = 3 x 33333 = 99999 µs; the first kept frame is the first at or after 100 ms (k=3);
# then every third frame, the gap at 12 bridged by a double period (9 -> 15), 27 rejected (24 -> 30).
KEPT_K = [3, 6, 9, 15, 18, 21, 24, 30, 33]
KEPT_TIMES = [20000 + 33333 * k + (1500 if k == 21 else 0) for k in KEPT_K]
# Windows between consecutive kept frames: 2 per label period.
REPR_STEPS = [2, 2, 4, 2, 2, 2, 4, 2]

BOXES = [  # (x, y, w, h, class) at sensor resolution, repeated at every label time
    (10, 10, 20, 15, 0),  # A: kept
    (30, 5, 3, 20, 1),  # B: side 3 < 5 -> dropped
    (50, 30, 30, 10, 2),  # C: clipped to x1 = W - 1 = 63 -> w 13
    (2, 20, 60, 10, 1),  # D: 60 > 0.9 * 64 -> dropped in train only (kept, w 60, elsewhere)
    (-5, 40, 4, 20, 0),  # E: entirely left of the sensor -> zero area -> dropped
]
A, C, D = (10, 10, 20, 15), (50, 30, 13, 10), (2, 20, 60, 10)


def make_labels():
    rows = [(t, x, y, w, h, c, i, 1.0) for t in LABEL_TIMES for i, (x, y, w, h, c) in enumerate(BOXES)]
    return np.array(rows, dtype=BBOX_DTYPE)


def make_events(seed):
    rng = np.random.default_rng(seed)
    n = 20000
    x = rng.integers(0, W, n)
    y = rng.integers(0, H, n)
    t = rng.integers(0, 1_250_000, n)
    p = rng.integers(0, 2, n)
    # Events exactly on window edges (first window is [19999, 69999], the next [69999, 119999]).
    x = np.concatenate([x, [5, 7, 9, 11]])
    y = np.concatenate([y, [5, 7, 9, 11]])
    t = np.concatenate([t, [19999, 69999, 119999, 119998]])
    p = np.concatenate([p, [1, 0, 1, 0]])
    # Corrupt coordinates, as in some public eTraM files: must be dropped and counted.
    x = np.concatenate([x, np.full(N_OUT_OF_RANGE, 3)])
    y = np.concatenate([y, np.full(N_OUT_OF_RANGE, 33014)])
    t = np.concatenate([t, np.linspace(300000, 400000, N_OUT_OF_RANGE).astype(np.int64)])
    p = np.concatenate([p, np.zeros(N_OUT_OF_RANGE, int)])
    order = np.argsort(t, kind="stable")
    return Events(x[order], y[order], t[order], p[order], width=W, height=H)


def make_raw(root, recordings):
    """recordings: (split, name, seed); returns {name: in-range Events}."""
    events = {}
    for split, name, seed in recordings:
        (root / split).mkdir(parents=True, exist_ok=True)
        ev = make_events(seed)
        write_h5(root / split / f"{name}_td.h5", ev)
        save_labels(root / split / f"{name}_bbox.npy", make_labels())
        events[name] = ev[ev.y < H]
    return events


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    raw, out = root / "raw", root / "out"
    events = make_raw(raw, [("train", "rec_a", 1), ("val", "rec_b", 2)])
    (raw / "pretrain").mkdir()  # not a split: ignored
    write_h5(raw / "pretrain" / "ignored_td.h5", make_events(3))
    with pytest.warns(UserWarning, match="dropped 7 of .* outside the 64x48 sensor"):
        summary = preprocess_dataset(raw, out, PreprocessConfig(), progress=False)
    return raw, out, events, summary


def window_reference(ev, end, downsample):
    m = (ev.t >= end - 50000) & (ev.t <= end)  # RVT: closed on both sides
    full = stacked_histogram(ev.x[m], ev.y[m], ev.t[m], ev.p[m], H, W)
    return downsample_nearest(full, downsample).numpy()


def test_window_plan_by_hand():
    frame_ts, repr_ts, frame_to_repr = plan_windows(LABEL_TIMES)
    assert frame_ts.tolist() == KEPT_TIMES
    assert repr_ts[:3].tolist() == [69999, 119999, 169998]  # one window before the first frame
    assert np.diff(frame_to_repr).tolist() == REPR_STEPS
    assert frame_to_repr[0] == 1 and len(repr_ts) == 1 + 1 + sum(REPR_STEPS)
    assert repr_ts[frame_to_repr].tolist() == KEPT_TIMES
    assert plan_windows([50000, 60000]) is None  # nothing at or after 100 ms


def test_files_dtypes_chunks_and_compression(dataset):
    _, out, _, summary = dataset
    assert summary.ok and summary.missing_splits == ["test"]
    assert sorted(p.name for p in out.iterdir()) == ["train", "val"]  # no pretrain, no temp folder
    seq = out / "train" / "rec_a"
    rdir = seq / "event_representations_v2" / REPR
    assert sorted(p.name for p in rdir.iterdir()) == [
        "event_representations_ds2_nearest.h5",
        "objframe_idx_2_repr_idx.npy",
        "timestamps_us.npy",
    ]
    assert sorted(p.name for p in (seq / "labels_v2").iterdir()) == ["labels.npz", "timestamps_us.npy"]
    n = 1 + 1 + sum(REPR_STEPS)
    with h5py.File(rdir / "event_representations_ds2_nearest.h5", "r") as f:
        assert list(f.keys()) == ["data"]
        ds = f["data"]
        assert ds.dtype == np.uint8 and ds.shape == (n, 20, H // 2, W // 2)
        assert ds.chunks == (1, 20, H // 2, W // 2)
        plist = ds.id.get_create_plist()
        assert plist.get_nfilters() == 1
        filter_id, _, values, _ = plist.get_filter(0)
        assert filter_id == 32001 and tuple(values[4:7]) == (1, 1, 5)  # level 1, byte shuffle, zstd
    for f in ("objframe_idx_2_repr_idx.npy", "timestamps_us.npy"):
        assert np.load(rdir / f).dtype == np.int64
    assert np.load(seq / "labels_v2" / "timestamps_us.npy").dtype == np.int64
    with np.load(seq / "labels_v2" / "labels.npz") as z:
        assert sorted(z.files) == ["labels", "objframe_idx_2_label_idx"]
        assert z["labels"].dtype == BBOX_DTYPE and z["objframe_idx_2_label_idx"].dtype == np.int64


def test_label_times_are_window_ends(dataset):
    _, out, _, _ = dataset
    for split, name in (("train", "rec_a"), ("val", "rec_b")):
        seq = RVTSequence(out / split / name)
        assert seq.label_timestamps_us.tolist() == KEPT_TIMES
        assert seq.timestamps_us[seq.objframe_idx_2_repr_idx].tolist() == KEPT_TIMES
        assert np.all(np.diff(seq.timestamps_us) > 0)


def test_each_representation_is_the_histogram_of_its_raw_window(dataset):
    _, out, events, _ = dataset
    for split, name in (("train", "rec_a"), ("val", "rec_b")):
        with RVTSequence(out / split / name) as seq:
            assert seq.downsample == 2 and seq.shape == (20, H // 2, W // 2)
            assert len(seq) == 1 + 1 + sum(REPR_STEPS)
            for i, end in enumerate(seq.timestamps_us.tolist()):
                got = seq.representation(i)
                assert got.dtype == np.uint8
                np.testing.assert_array_equal(got, window_reference(events[name], end, 2))
            # the boundary event at (9, 9), t = 119999, lies in windows 1 and 2 (ON, ds2 pixel (4, 4))
            assert seq.representation(1)[19, 4, 4] >= 1 and seq.representation(2)[10, 4, 4] >= 1


def test_labels_filtered_and_scaled(dataset):
    _, out, _, _ = dataset
    expected = {("train", "rec_a"): [A, C], ("val", "rec_b"): [A, C, D]}
    for (split, name), boxes in expected.items():
        seq = RVTSequence(out / split / name)
        k = len(boxes)
        assert seq.objframe_idx_2_label_idx.tolist() == list(range(0, k * len(KEPT_TIMES), k))
        stored = np.stack([seq.labels[f] for f in ("x", "y", "w", "h")], 1)
        np.testing.assert_array_equal(stored, np.array(boxes * len(KEPT_TIMES), np.float32))
        assert seq.labels["t"].tolist() == [t for t in KEPT_TIMES for _ in boxes]
        repr_idx, half = seq.label_frame(4)
        assert repr_idx == seq.objframe_idx_2_repr_idx[4]
        # x, y halved; the far corner clamped to the ds2 grid's last pixel (31, 23) as RVT's loader does.
        scaled = [(5, 5, 10, 7.5), (25, 15, 6, 5)] + ([(1, 10, 30, 5)] if k == 3 else [])
        np.testing.assert_array_equal(
            np.stack([half[f] for f in ("x", "y", "w", "h")], 1), np.array(scaled, np.float32)
        )
        assert seq.labels_for_repr(repr_idx) is not None and seq.labels_for_repr(0) is None
        assert seq.label_frame(4, scaled=False)[1]["w"].tolist() == [b[2] for b in boxes]


def test_summary_counts(dataset):
    _, _, _, summary = dataset
    totals = summary.totals()
    n_times, kept_frames = len(LABEL_TIMES), len(KEPT_TIMES)
    assert totals["train"] == dict(
        sequences=1,
        no_labels=0,
        failed=0,
        representations=1 + 1 + sum(REPR_STEPS),
        label_frames=kept_frames,
        boxes_kept=2 * kept_frames,
        boxes_filtered=3 * n_times,
        boxes_thinned=2 * (n_times - kept_frames),
        events_dropped_out_of_range=N_OUT_OF_RANGE,
    )
    assert totals["val"]["boxes_kept"] == 3 * kept_frames
    assert totals["val"]["boxes_filtered"] == 2 * n_times
    assert "events dropped out of range" in summary.format()


def test_full_resolution_variant(tmp_path):
    events = make_raw(tmp_path / "raw", [("test", "rec_c", 4)])
    summary = preprocess_dataset(tmp_path / "raw", tmp_path / "out", PreprocessConfig(downsample=1), progress=False)
    assert summary.ok and summary.missing_splits == ["train", "val"]
    rdir = tmp_path / "out" / "test" / "rec_c" / "event_representations_v2" / REPR
    assert (rdir / "event_representations.h5").is_file()
    assert not (rdir / "event_representations_ds2_nearest.h5").exists()
    with RVTSequence(rdir.parents[1]) as seq:
        assert seq.downsample == 1 and seq.shape == (20, H, W)
        for i in (0, 1, 5, len(seq) - 1):
            np.testing.assert_array_equal(
                seq.representation(i), window_reference(events["rec_c"], seq.timestamps_us[i], 1)
            )
        _, boxes = seq.label_frame(0)  # full resolution: unscaled
        assert boxes["w"].tolist() == [20, 13, 60]


@pytest.fixture
def raw_with_corrupt(tmp_path):
    raw = tmp_path / "raw"
    make_raw(raw, [("train", "good_1", 5), ("train", "good_2", 6), ("val", "good_3", 7)])
    (raw / "train" / "bad_td.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    save_labels(raw / "train" / "bad_bbox.npy", make_labels())
    save_labels(raw / "val" / "early_bbox.npy", make_labels()[:5])  # labels only at 20 ms
    write_h5(raw / "val" / "early_td.h5", make_events(8))
    save_labels(raw / "val" / "orphan_bbox.npy", make_labels())  # no events file
    return raw


def check_corrupt_reported(summary, out):
    failed = {f"{r.split}/{r.name}": r.error for r in summary.failed}
    assert set(failed) == {"train/bad", "val/orphan"}
    assert "bad_td.h5" in failed["train/bad"] and "orphan_td.h5" in failed["val/orphan"]
    assert not summary.ok
    assert {r.name for r in summary.results if r.status == "ok"} == {"good_1", "good_2", "good_3"}
    assert [r.name for r in summary.results if r.status == "no_labels"] == ["early"]
    assert "FAILED train/bad" in summary.format()
    assert sorted(p.name for p in (out / "train").iterdir()) == ["good_1", "good_2"]
    assert not (out / ".preprocess_tmp").exists()
    assert RVTSplit(out / "train").names == ["good_1", "good_2"]


def test_corrupt_recording_reported_by_name(raw_with_corrupt, tmp_path):
    out = tmp_path / "out"
    check_corrupt_reported(preprocess_dataset(raw_with_corrupt, out, progress=False), out)


@pytest.mark.slow
def test_corrupt_recording_reported_by_name_in_process_pool(raw_with_corrupt, tmp_path):
    out = tmp_path / "out"
    check_corrupt_reported(preprocess_dataset(raw_with_corrupt, out, workers=2, progress=False), out)


def test_fail_fast_stops(raw_with_corrupt, tmp_path):
    summary = preprocess_dataset(raw_with_corrupt, tmp_path / "out", fail_fast=True, progress=False)
    assert summary.aborted and not summary.ok
    assert [f"{r.split}/{r.name}" for r in summary.failed] in (["train/bad"], ["val/orphan"])


def test_cli_exit_status_and_messages(raw_with_corrupt, tmp_path, capsys):
    assert main(["--in", str(raw_with_corrupt), "--out", str(tmp_path / "o1"), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "train/bad" in captured.err and "bad_td.h5" in captured.out
    assert "Traceback" not in captured.err

    missing = tmp_path / "nowhere"
    assert main(["--in", str(missing), "--out", str(tmp_path / "o2")]) == 2
    captured = capsys.readouterr()
    assert str(missing) in captured.err and "Traceback" not in captured.err

    good = tmp_path / "good"
    make_raw(good, [("train", "rec", 9)])
    assert (
        main(
            [
                "--in",
                str(good),
                "--out",
                str(tmp_path / "o3"),
                "--downsample",
                "1",
                "--no-progress",
                "--splits",
                "train",
            ]
        )
        == 0
    )
    assert (tmp_path / "o3/train/rec/event_representations_v2" / REPR / "event_representations.h5").is_file()


def test_reads_layout_written_by_rvt_tool(tmp_path):
    """RVT's own files: raw Gen4 label dtype in labels.npz, Blosc options given as raw HDF5 filter
    values, objframe_idx_2_label_idx saved from a Python list."""
    seq_dir = tmp_path / "test" / "moorea_2019-02-19_001_td_0_60000000"
    rdir = seq_dir / "event_representations_v2" / REPR
    rdir.mkdir(parents=True)
    (seq_dir / "labels_v2").mkdir()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 11, (3, 20, 12, 16)).astype(np.uint8)
    with h5py.File(rdir / "event_representations_ds2_nearest.h5", "w") as f:
        f.create_dataset(
            "data",
            data=data,
            chunks=(1, 20, 12, 16),
            maxshape=(None, 20, 12, 16),
            compression=32001,
            compression_opts=(0, 0, 0, 0, 1, 1, 5),
            shuffle=False,
        )
    np.save(rdir / "timestamps_us.npy", np.array([100000, 150000, 200000], np.int64))
    np.save(rdir / "objframe_idx_2_repr_idx.npy", np.array([0, 2], np.int64))
    gen4 = np.dtype(
        [
            ("t", "<u8"),
            ("x", "<f4"),
            ("y", "<f4"),
            ("w", "<f4"),
            ("h", "<f4"),
            ("class_id", "u1"),
            ("class_confidence", "<f4"),
            ("track_id", "<u4"),
        ]
    )
    labels = np.array(
        [(100000, 4, 4, 10, 8, 2, 0.9, 7), (200000, 0, 2, 30, 40, 0, 1.0, 8), (200000, 20, 2, 6, 6, 1, 1.0, 9)],
        dtype=gen4,
    )
    np.savez(seq_dir / "labels_v2" / "labels.npz", labels=labels, objframe_idx_2_label_idx=[0, 1])
    np.save(seq_dir / "labels_v2" / "timestamps_us.npy", np.array([100000, 200000], np.int64))

    split = RVTSplit(tmp_path / "test")
    assert split.names == ["moorea_2019-02-19_001_td_0_60000000"]
    seq = split[0]
    assert len(seq) == 3 and seq.sensor_hw == (24, 32)
    np.testing.assert_array_equal(seq.representation(2), data[2])
    assert seq.labels.dtype == BBOX_DTYPE and seq.labels["class_id"].tolist() == [2, 0, 1]
    repr_idx, boxes = seq.label_frame(1)
    assert repr_idx == 2 and len(boxes) == 2
    # Halved on the 12 x 16 grid; far corners clamped to (15, 11): (0, 2, 30, 40) -> y1 = 21 -> 11.
    xywh = np.stack([boxes[f] for f in ("x", "y", "w", "h")], 1)
    np.testing.assert_array_equal(xywh, np.array([(0, 1, 15, 10), (10, 1, 3, 3)], np.float32))
    assert boxes["track_id"].tolist() == [8, 9] and boxes["t"].tolist() == [200000, 200000]
    np.testing.assert_array_equal(boxes, scale_boxes(seq.label_frame(1, scaled=False)[1], 0.5, 12, 16))


def test_loader_names_missing_file(tmp_path):
    (tmp_path / "seq" / "event_representations_v2" / REPR).mkdir(parents=True)
    with pytest.raises(EventFileError, match="event_representations.h5"):
        RVTSequence(tmp_path / "seq")


# -- DAT / RAW recordings, dataset presets, conversion to HDF5 -------------------------------------
def write_dat(path, ev, header=b"% Data file containing Event2D events.\n% Version 2\n"):
    """DAT with no sensor size in its header (as old Gen1 files): type 0x00, 8-byte records."""
    records = np.empty((len(ev), 2), "<u4")
    records[:, 0] = ev.t
    records[:, 1] = ev.x.astype(np.uint32) | (ev.y.astype(np.uint32) << 14) | (ev.p.astype(np.uint32) << 28)
    path.write_bytes(header + bytes([0x00, 8]) + records.tobytes())


def same_recording_three_ways(root):
    """One recording stored as NAME_td.h5, NAME_td.dat and NAME.raw (EVT 3.0) in three datasets."""
    from evcmae.events.evt3 import write_evt3

    ev = make_events(11)
    ev = ev[ev.y < H]  # DAT and EVT3 cannot hold y = 33014
    for kind in ("h5", "dat", "raw"):
        (root / kind / "train").mkdir(parents=True)
        save_labels(root / kind / "train" / "rec_bbox.npy", make_labels())
    write_h5(root / "h5" / "train" / "rec_td.h5", ev)
    write_dat(root / "dat" / "train" / "rec_td.dat", ev)
    write_evt3(root / "raw" / "train" / "rec.raw", ev, W, H)
    return ev


def test_dat_and_raw_recordings_preprocess_exactly_as_hdf5(tmp_path):
    same_recording_three_ways(tmp_path)
    cfg = PreprocessConfig(width=W, height=H)  # the DAT header states no size
    outputs = {}
    for kind in ("h5", "dat", "raw"):
        summary = preprocess_dataset(tmp_path / kind, tmp_path / f"{kind}_rvt", cfg, splits=["train"], progress=False)
        assert summary.ok and [r.name for r in summary.results] == ["rec"], kind
        with RVTSequence(tmp_path / f"{kind}_rvt" / "train" / "rec") as seq:
            outputs[kind] = (np.stack([seq.representation(i) for i in range(len(seq))]), seq.labels.copy())
    for kind in ("dat", "raw"):
        np.testing.assert_array_equal(outputs[kind][0], outputs["h5"][0])
        np.testing.assert_array_equal(outputs[kind][1], outputs["h5"][1])
    assert outputs["h5"][0].sum() > 0


def test_recording_names_and_preference(tmp_path):
    from evcmae.events.preprocess import find_recordings

    for name in ("a_td.h5", "a_td.dat", "b_td.dat", "c.raw", "d_bbox.npy", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = {n: (td.name if td else None, bbox.name if bbox else None) for n, td, bbox in find_recordings(tmp_path)}
    assert found == {
        "a": ("a_td.h5", None),  # HDF5 preferred: read window by window
        "b": ("b_td.dat", None),
        "c": ("c.raw", None),
        "d": (None, "d_bbox.npy"),
    }


def test_keep_classes_drops_before_thinning():
    from evcmae.events.preprocess import filter_recording_labels

    labels = make_labels()
    labels["class_id"] = np.arange(len(labels)) % 7  # Gen4's 7 original classes
    kept = filter_recording_labels(labels, W, H, "val", PreprocessConfig(min_side=0, keep_classes=(0, 1, 2)))
    assert set(kept["class_id"].tolist()) <= {0, 1, 2} and len(kept) > 0
    everything = filter_recording_labels(labels, W, H, "val", PreprocessConfig(min_side=0))
    assert set(everything["class_id"].tolist()) - {0, 1, 2}


def test_dataset_presets_match_the_data_configs():
    """evcmae-preprocess --dataset X and data=X (which preprocesses on first use) agree."""
    from hydra import compose, initialize_config_dir

    from evcmae.events.preprocess import DATASETS
    from evcmae.tools.pretrain import config_dir

    with initialize_config_dir(config_dir=config_dir("finetune"), version_base="1.3"):
        for dataset, preset in DATASETS.items():
            data = compose(config_name="finetune", overrides=[f"data={dataset}", "data.root=/x"]).data
            for key, value in preset.items():
                got = data[key]
                assert (list(got) if key == "keep_classes" else got) == (
                    list(value) if key == "keep_classes" else value
                ), (
                    dataset,
                    key,
                )
            assert data.get("min_diag", 0.0) == preset.get("min_diag", 0.0)


def test_cli_dataset_preset_and_conversion_to_hdf5(tmp_path, capsys):
    from evcmae.events.h5 import read_h5

    ev = same_recording_three_ways(tmp_path)
    (tmp_path / "dat" / "pretrain").mkdir()
    write_dat(tmp_path / "dat" / "pretrain" / "unlabelled_td.dat", ev[:500])
    # --to h5: every folder, sensor size from the options (the DAT header has none)
    out = tmp_path / "dat_h5"
    assert (
        main(["--in", str(tmp_path / "dat"), "--out", str(out), "--to", "h5", "--width", str(W), "--height", str(H)])
        == 0
    )
    assert "2 recordings converted" in capsys.readouterr().out
    back = read_h5(out / "train" / "rec_td.h5")
    assert (back.width, back.height) == (W, H)
    for col in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(getattr(back, col), getattr(ev, col))
    assert (out / "train" / "rec_bbox.npy").read_bytes() == (tmp_path / "dat" / "train" / "rec_bbox.npy").read_bytes()
    assert len(read_h5(out / "pretrain" / "unlabelled_td.h5")) == 500
    # without a size the DAT file is refused by name
    assert main(["--in", str(tmp_path / "dat"), "--out", str(tmp_path / "x"), "--to", "h5"]) == 1
    assert "rec_td.dat" in capsys.readouterr().out
    # --dataset gen1: Gen1's sensor (304x240, the events fit), full resolution, its label filter
    assert (
        main(["--in", str(tmp_path / "dat"), "--out", str(tmp_path / "g1"), "--dataset", "gen1", "--no-progress"]) == 0
    )
    with RVTSequence(tmp_path / "g1" / "train" / "rec") as seq:
        assert seq.downsample == 1 and seq.shape == (20, 240, 304)
        assert (seq.labels["w"] >= 10).all() and (seq.labels["h"] >= 10).all()  # side >= 10
