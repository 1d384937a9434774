import warnings

import h5py
import numpy as np
import pytest

from evcmae.events.container import Events
from evcmae.events.errors import EventFileError
from evcmae.events.h5 import H5EventFile, read_h5, write_h5
from evcmae.events.labels import BBOX_DTYPE, filter_labels, load_labels, save_labels
from evcmae.events.validation import check_stream


def make_events(n=1000, w=64, h=48, seed=0):
    rng = np.random.default_rng(seed)
    return Events(
        x=rng.integers(0, w, n),
        y=rng.integers(0, h, n),
        t=np.sort(rng.integers(0, 10**6, n)),
        p=rng.integers(0, 2, n),
        width=w,
        height=h,
    )


@pytest.mark.parametrize("compression", ["blosc_zstd", "gzip", "lzf", None])
def test_h5_round_trip(tmp_path, compression):
    ev = make_events()
    path = tmp_path / "rec_td.h5"
    write_h5(path, ev, compression=compression, chunk_rows=128)
    back = read_h5(path)
    for c in "xytp":
        np.testing.assert_array_equal(getattr(back, c), getattr(ev, c))
    assert (back.width, back.height) == (64, 48)
    with h5py.File(path) as f:
        assert f["events/t"].dtype == np.int64 and f["events/x"].dtype == np.uint16


def test_time_window_reads_match_slicing(tmp_path):
    ev = make_events(5000)
    path = tmp_path / "rec_td.h5"
    write_h5(path, ev, chunk_rows=256)
    with H5EventFile(path) as f:
        assert f.t_range == (int(ev.t[0]), int(ev.t[-1]))
        for t0, t1 in [(0, 1), (123_456, 250_000), (999_000, 2_000_000), (int(ev.t[10]), int(ev.t[10]))]:
            got = f.read_time_window(t0, t1)
            want = ev[(ev.t >= t0) & (ev.t < t1)]
            np.testing.assert_array_equal(got.t, want.t)
            np.testing.assert_array_equal(got.x, want.x)


def test_out_of_range_events_dropped_counted_warned_once(tmp_path):
    ev = make_events(100)
    ev.y[[3, 50]] = 33014  # as found in public eTraM files
    path = tmp_path / "bad_td.h5"
    write_h5(path, ev)
    with pytest.warns(UserWarning, match="dropped 2 of 100 events outside the 64x48 sensor"):
        back = read_h5(path)
    assert len(back) == 98 and back.dropped_out_of_range == 2 and back.y.max() < 48
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second read of the same file stays quiet
        assert read_h5(path).dropped_out_of_range == 2


def test_decreasing_timestamps_refused_or_sorted(tmp_path):
    ev = make_events(100)
    ev.t[40], ev.t[41] = ev.t[41] + 5, ev.t[40]
    path = tmp_path / "unsorted_td.h5"
    write_h5(path, ev)
    with pytest.raises(EventFileError, match=r"unsorted_td.h5: timestamps decrease at event 41"):
        read_h5(path)
    with pytest.warns(UserWarning, match="sorted by time"):
        fixed = read_h5(path, on_unsorted="sort")
    assert fixed.is_sorted() and len(fixed) == 100


def test_polarity_minus_one_and_bad_values(tmp_path):
    path = tmp_path / "pm_td.h5"
    with h5py.File(path, "w") as f:
        for k, v in dict(x=[1, 2], y=[1, 2], t=[5, 6], p=np.array([-1, 1], np.int8)).items():
            f.create_dataset(f"events/{k}", data=v)
    np.testing.assert_array_equal(read_h5(path).p, [0, 1])
    with h5py.File(path, "a") as f:
        f["events/p"][0] = 3
    with pytest.raises(EventFileError, match="polarity"):
        read_h5(path)


def test_bad_h5_files(tmp_path):
    missing = tmp_path / "missing_td.h5"
    with h5py.File(missing, "w") as f:
        for k in "xyp":
            f.create_dataset(f"events/{k}", data=[1])
    with pytest.raises(EventFileError, match=r"missing_td.h5: missing dataset\(s\) \['events/t'\]"):
        read_h5(missing)
    nogroup = tmp_path / "nogroup.h5"
    with h5py.File(nogroup, "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(EventFileError, match="no 'events' group"):
        read_h5(nogroup)
    full = tmp_path / "full_td.h5"
    write_h5(full, make_events(20000), compression=None)
    truncated = tmp_path / "truncated_td.h5"
    truncated.write_bytes(full.read_bytes()[:50_000])
    with pytest.raises(EventFileError, match="truncated_td.h5"):
        read_h5(truncated)
    garbage = tmp_path / "garbage_td.h5"
    garbage.write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(EventFileError, match="not a readable HDF5 file"):
        read_h5(garbage)
    with pytest.raises(FileNotFoundError):
        read_h5(tmp_path / "absent_td.h5")


def test_check_stream_rejects_bad_option():
    with pytest.raises(ValueError):
        check_stream(make_events(3), "x", on_unsorted="maybe")


def test_labels_both_spellings_round_trip(tmp_path):
    old = np.zeros(
        2,
        dtype=[
            ("ts", "<u8"),
            ("x", "<f4"),
            ("y", "<f4"),
            ("w", "<f4"),
            ("h", "<f4"),
            ("class_id", "u1"),
            ("confidence", "<f4"),
            ("track_id", "<u4"),
        ],
    )
    old["ts"] = [100, 200]
    old["w"] = [10, 20]
    old["confidence"] = [0.5, 0.9]
    old["track_id"] = [7, 8]
    np.save(tmp_path / "old_bbox.npy", old)
    labels = load_labels(tmp_path / "old_bbox.npy")
    assert labels.dtype == BBOX_DTYPE
    np.testing.assert_array_equal(labels["t"], [100, 200])
    np.testing.assert_allclose(labels["class_confidence"], [0.5, 0.9])
    np.testing.assert_array_equal(labels["track_id"], [7, 8])
    save_labels(tmp_path / "new_bbox.npy", labels)
    np.testing.assert_array_equal(load_labels(tmp_path / "new_bbox.npy"), labels)


def test_bad_label_files(tmp_path):
    np.save(tmp_path / "plain_bbox.npy", np.arange(5))
    with pytest.raises(EventFileError, match="plain_bbox.npy: box labels must be a structured array"):
        load_labels(tmp_path / "plain_bbox.npy")
    np.save(tmp_path / "nofield_bbox.npy", np.zeros(2, dtype=[("t", "<i8"), ("x", "<f4")]))
    with pytest.raises(EventFileError, match=r"lack field\(s\) \['y', 'w', 'h', 'class_id'\]"):
        load_labels(tmp_path / "nofield_bbox.npy")
    (tmp_path / "junk_bbox.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(EventFileError, match="junk_bbox.npy: cannot read box labels"):
        load_labels(tmp_path / "junk_bbox.npy")


def test_filter_labels_known_cases():
    boxes = np.zeros(5, dtype=BBOX_DTYPE)
    #               x     y    w    h
    rows = [
        (-5, 10, 20, 20),  # clipped to x 0..15: kept, w 15
        (90, 10, 20, 20),  # clipped to w 10: kept
        (10, 10, 4, 30),  # side 4 < 5: dropped
        (10, 10, 0, 10),  # zero area: dropped
        (0, 0, 95, 30),
    ]  # wider than 0.9 * 100: dropped by the train filter
    for name, values in zip("xywh", zip(*rows)):
        boxes[name] = values
    kept = filter_labels(boxes, width=100, height=50, min_side=5, max_width_fraction=0.9)
    np.testing.assert_allclose(kept["w"], [15, 10])
    np.testing.assert_allclose(kept["x"], [0, 90])
    assert len(filter_labels(boxes, 100, 50, min_side=5)) == 3
    assert len(filter_labels(boxes, 100, 50, min_diag=30)) == 2  # the 4x30 and 95x30 boxes


def test_process_local_handle_reopens_after_fork_or_pickle(tmp_path):
    import pickle

    from evcmae.events.h5 import ProcessLocalH5

    path = tmp_path / "rec_td.h5"
    write_h5(path, make_events(50))
    handle = ProcessLocalH5(path)
    first = handle.get()
    assert handle.get() is first  # one handle per process
    handle._pid = -1  # as seen from a forked worker: a different process id
    assert handle.get() is not first
    clone = pickle.loads(pickle.dumps(handle))  # what a spawned worker receives: the path only
    assert clone._file is None and len(clone.get()) == 50
