"""Bad box labels: wrong types and values refused naming file, field and row; boxes that cannot
be drawn or learnt from dropped and counted; labels that do not belong to the recording refused."""

import numpy as np
import pytest
from conftest import boxes, good_columns, write_columns

from evcmae.events.errors import EventFileError, LabelFileError
from evcmae.events.labels import load_labels

FLOAT_IDS = [("t", "<i8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "<f8")]


@pytest.mark.parametrize("value, shown", [(-1.0, "value -1.0 outside the uint32 range"), (2.7, "fractional value")])
def test_float_class_ids_that_are_no_id_are_refused(tmp_path, value, shown):
    labels = boxes([(1000, 1, 1, 5, 5, 1), (2000, 1, 1, 5, 5, value)], FLOAT_IDS)
    np.save(tmp_path / "float_bbox.npy", labels)
    with pytest.raises(LabelFileError, match=rf"float_bbox.npy: class_id \(row 1\): {shown}"):
        load_labels(tmp_path / "float_bbox.npy")  # -1 used to become 4294967295, 2.7 become 2


def test_float_class_ids_that_are_whole_numbers_load(tmp_path):
    np.save(tmp_path / "float_bbox.npy", boxes([(1000, 1, 1, 5, 5, 3.0)], FLOAT_IDS))
    assert load_labels(tmp_path / "float_bbox.npy")["class_id"].tolist() == [3]


@pytest.mark.parametrize("field", ["x", "w", "class_confidence"])
def test_nan_in_a_box_is_refused(tmp_path, field):
    labels = boxes([(1000, 1, 1, 5, 5, 1)] * 3)
    labels[field][2] = np.nan
    np.save(tmp_path / "nan_bbox.npy", labels)
    with pytest.raises(LabelFileError, match=rf"nan_bbox.npy: {field} \(row 2\): not a number"):
        load_labels(tmp_path / "nan_bbox.npy")


def test_negative_label_time_is_refused(tmp_path):
    np.save(tmp_path / "neg_bbox.npy", boxes([(-50, 1, 1, 5, 5, 1)]))
    with pytest.raises(LabelFileError, match=r"t \(row 0\): negative label time -50"):
        load_labels(tmp_path / "neg_bbox.npy")


def test_unsorted_label_times_name_the_row(tmp_path):
    np.save(tmp_path / "order_bbox.npy", boxes([(1000, 1, 1, 5, 5, 1), (3000, 1, 1, 5, 5, 1), (2000, 1, 1, 5, 5, 1)]))
    with pytest.raises(LabelFileError, match=r"t \(row 2\): box label times are not sorted \(3000 before 2000"):
        load_labels(tmp_path / "order_bbox.npy")


def test_label_errors_are_event_file_errors(tmp_path):
    """Code that already handles bad files (preprocessing, CLIs) handles bad labels too."""
    assert issubclass(LabelFileError, EventFileError)


def test_negative_sizes_are_dropped_and_counted(tmp_path):
    labels = boxes([(1000, 1, 1, 5, 5, 1), (1000, 10, 1, -4, 5, 2), (2000, 1, 1, 5, -1, 3), (2000, 1, 1, 0, 5, 4)])
    np.save(tmp_path / "neg_bbox.npy", labels)
    with pytest.warns(UserWarning, match=r"dropped 2 of 4 boxes with a negative width or height \(first: row 1, w=-4"):
        kept = load_labels(tmp_path / "neg_bbox.npy")
    assert kept["class_id"].tolist() == [1, 4]  # the zero-width box stays for the label filter


def test_viz_does_not_draw_negative_boxes(tmp_path):
    from PIL import Image

    from evcmae.tools import visualize

    columns = good_columns()
    rec = write_columns(tmp_path / "rec_td.h5", columns)
    np.save(tmp_path / "rec_bbox.npy", boxes([(40_000, 30, 10, -20, 20, 1)]))
    with pytest.warns(UserWarning, match="negative width"):
        assert visualize.main([str(rec), "--t-start", "0", "--out", str(tmp_path / "a.png")]) == 0
    assert visualize.main([str(rec), "--t-start", "0", "--no-labels", "--out", str(tmp_path / "b.png")]) == 0
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png"))
    )


# -- labels against the recording ----------------------------------------------------------------
def _recording_with_labels(tmp_path, label_times, class_id=1):
    columns = good_columns(n=4000, duration_us=1_000_000)
    rec = write_columns(tmp_path / "rec_td.h5", columns)
    np.save(tmp_path / "rec_bbox.npy", boxes([(t, 5, 5, 20, 20, class_id) for t in label_times]))
    return rec, tmp_path / "rec_bbox.npy"


def test_labels_far_outside_the_recording_are_dropped_and_counted(tmp_path):
    from evcmae.finetune.recordings import RawRecording

    inside = [200_000, 300_000, 400_000]
    far = [51_000_000 + 50_000 * k for k in range(3)]  # ~1,000 windows past the last event
    rec, bbox = _recording_with_labels(tmp_path, inside + far)
    with pytest.warns(UserWarning, match=r"rec_bbox.npy: dropped 3 of 6 boxes whose time lies outside the recording"):
        recording = RawRecording(rec, bbox, "val", 50_000, 1)
    (tmp_path / "ref").mkdir()
    reference = RawRecording(*_recording_with_labels(tmp_path / "ref", inside), "val", 50_000, 1)
    np.testing.assert_array_equal(recording.ends, reference.ends)  # used to be ~1,000 empty windows more
    assert len(recording.gt()) == len(reference.gt()) == 3


def test_labels_all_outside_the_recording_are_refused(tmp_path):
    from evcmae.finetune.recordings import RawRecording

    rec, bbox = _recording_with_labels(tmp_path, [200_000_000, 300_000_000])  # other units, or files
    with pytest.raises(
        LabelFileError, match=r"rec_bbox.npy: t \(row 0\): every label time .* lies outside the recording"
    ):
        RawRecording(rec, bbox, "val", 50_000, 1)


def test_class_ids_beyond_the_class_map_name_file_and_id(tmp_path):
    from evcmae.finetune.recordings import RawRecording

    rec, bbox = _recording_with_labels(tmp_path, [200_000, 300_000], class_id=9)
    with pytest.raises(
        LabelFileError, match=r"rec_bbox.npy: class_id \(row 0\): class id 9 has no class: len\(data.class_map\) is 8"
    ):
        RawRecording(rec, bbox, "val", 50_000, 1, class_map=[0, 1, 2, 1, 2, 1, 1, 2])


def test_preprocessing_keeps_only_the_windows_of_the_recording(tmp_path):
    from evcmae.events.preprocess import PreprocessConfig, preprocess_recording

    cfg = PreprocessConfig(downsample=1, min_side=0)
    (tmp_path / "ref").mkdir()
    reference = preprocess_recording(
        *_recording_with_labels(tmp_path / "ref", [200_000, 300_000]), tmp_path / "o1", "val", cfg
    )
    rec, bbox = _recording_with_labels(tmp_path, [200_000, 300_000, 60_000_000])
    with pytest.warns(UserWarning, match="dropped 1 of 3 boxes whose time lies outside"):
        result = preprocess_recording(rec, bbox, tmp_path / "o2", "val", cfg)
    assert result.status == reference.status == "ok", result.error
    assert (result.label_frames, result.representations) == (reference.label_frames, reference.representations)
