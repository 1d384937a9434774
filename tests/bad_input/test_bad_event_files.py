"""Bad event recordings: each is refused naming the file, the field and the first offending row,
or dropped and counted with a warning; never read as something else without a word."""

import re

import numpy as np
import pytest
from conftest import H, W, good_columns, write_columns
from PIL import Image

from evcmae.events.container import Events
from evcmae.events.errors import EventFileError
from evcmae.events.formats import read_events
from evcmae.events.h5 import H5EventFile, read_h5
from evcmae.tools import info, visualize


def one_error_line(captured, prog):
    """stderr holds exactly one line, ``prog: error: ...``, and no traceback."""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), captured.err
    return lines[0]


# -- time order ------------------------------------------------------------------------------------
def test_decrease_far_from_the_window_is_still_refused(tmp_path, columns):
    """A windowed read finds its rows by binary search: a decrease anywhere makes it wrong, so
    the whole file is checked, not just the window read."""
    columns["t"][700] = columns["t"][699] - 1000
    path = write_columns(tmp_path / "late_decrease_td.h5", columns)
    with pytest.raises(EventFileError, match=r"late_decrease_td.h5: timestamps decrease at event 700 .*1 decreases"):
        read_events(path, 0, 50_000)
    with H5EventFile(path) as f, pytest.raises(EventFileError, match="event 700"):
        f.t_range  # noqa: B018  (what pretraining's window count starts from)


def test_sort_option_reads_windows_of_the_sorted_stream(tmp_path, columns):
    t_sorted = columns["t"].copy()
    columns["t"] = columns["t"][::-1].copy()
    path = write_columns(tmp_path / "reversed_td.h5", columns)
    with pytest.warns(UserWarning, match="sorted by time"):
        window = read_events(path, 50_000, 100_000, on_unsorted="sort")
    expected = t_sorted[(t_sorted >= 50_000) & (t_sorted < 100_000)]
    np.testing.assert_array_equal(window.t, expected)


def test_sort_option_after_a_whole_read_keeps_windows_right(tmp_path, columns):
    t_sorted = columns["t"].copy()
    columns["t"] = columns["t"][::-1].copy()
    path = write_columns(tmp_path / "reversed_td.h5", columns)
    with H5EventFile(path, on_unsorted="sort") as f, pytest.warns(UserWarning, match="sorted by time"):
        np.testing.assert_array_equal(f.read().t, t_sorted)
        window = f.read_time_window(50_000, 100_000)
    np.testing.assert_array_equal(window.t, t_sorted[(t_sorted >= 50_000) & (t_sorted < 100_000)])


def test_reversed_recording_is_refused_by_pretraining(tmp_path, columns):
    from evcmae.pretrain.data import WindowPairs

    columns["t"] = columns["t"][::-1].copy()
    path = write_columns(tmp_path / "reversed_td.h5", columns)
    with pytest.raises(EventFileError, match="reversed_td.h5: timestamps decrease at event 1 "):
        WindowPairs([path], 50_000)  # used to give 0 windows


def test_viz_refuses_decreasing_timestamps_in_one_line(tmp_path, columns, capsys):
    columns["t"] = columns["t"][::-1].copy()
    path = write_columns(tmp_path / "reversed_td.h5", columns)
    out = tmp_path / "window.png"
    assert visualize.main([str(path), "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr(), "evcmae-viz")
    assert f"{path}: timestamps decrease at event 1 " in line
    assert not out.exists()  # used to be an empty picture


# -- NaN, fractions, types -------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["x", "y", "t", "p"])
def test_nan_in_any_column_is_refused_naming_field_and_row(tmp_path, columns, field):
    columns[field] = columns[field].astype(np.float64)
    columns[field][3] = np.nan
    path = write_columns(tmp_path / f"nan_{field}_td.h5", columns)
    with pytest.raises(EventFileError, match=rf"nan_{field}_td.h5: {field} \(row 3\): not a number") as err:
        read_h5(path)
    assert (err.value.field, err.value.row) == (field, 3)


@pytest.mark.parametrize("field", ["t", "p"])
def test_evcmae_info_reports_nan_in_one_line(tmp_path, columns, capsys, field):
    columns[field] = columns[field].astype(np.float64)
    columns[field][5] = np.nan
    path = write_columns(tmp_path / "nan_td.h5", columns)
    assert info.main([str(path)]) == 2  # polarity NaN used to crash it
    assert one_error_line(capsys.readouterr(), "evcmae-info").endswith(f"{field} (row 5): not a number (nan)")


def test_time_in_seconds_is_refused(tmp_path, columns):
    columns["t"] = columns["t"] / 1e6  # float seconds
    path = write_columns(tmp_path / "seconds_td.h5", columns)
    first_fraction = int(np.argmax(columns["t"] != np.floor(columns["t"])))
    with pytest.raises(EventFileError, match=rf"t \(row {first_fraction}\): fractional value .*seconds\?"):
        read_h5(path)


def test_integral_float_columns_read_exactly(tmp_path, columns):
    reference = read_h5(write_columns(tmp_path / "int_td.h5", columns))
    floats = {k: v.astype(np.float64) for k, v in columns.items()}
    back = read_h5(write_columns(tmp_path / "float_td.h5", floats))
    for k in "xytp":
        np.testing.assert_array_equal(getattr(back, k), getattr(reference, k))


def test_polarity_out_of_range_names_the_row(tmp_path, columns):
    columns["p"] = columns["p"].astype(np.int8)
    columns["p"][17] = 2
    path = write_columns(tmp_path / "pol_td.h5", columns)
    with pytest.raises(EventFileError, match=r"p \(row 17\): polarity values must be 0/1 or -1/1"):
        read_h5(path)


def test_events_built_from_nan_floats_are_refused():
    with pytest.raises(EventFileError, match=r"x \(row 1\): not a number"):
        Events(x=np.array([1.0, np.nan]), y=[0, 0], t=[0, 1], p=[0, 1])


@pytest.mark.parametrize("stated", [0, -640, 12.5])
def test_impossible_stated_sensor_size_is_refused(tmp_path, columns, stated):
    path = write_columns(tmp_path / "size_td.h5", columns, size=(stated, H))
    with pytest.raises(EventFileError, match="size_td.h5: width: sensor size"):
        read_h5(path)


# -- coordinates ---------------------------------------------------------------------------------
def test_coordinates_no_sensor_has_are_dropped_and_counted(tmp_path, columns):
    reference = {k: v.copy() for k, v in columns.items()}
    columns["x"] = columns["x"].astype(np.int32)
    columns["y"] = columns["y"].astype(np.int32)
    columns["x"][10] = -5  # would wrap to 65531
    columns["y"][20] = 70_000  # would wrap to 4464
    path = write_columns(tmp_path / "wrap_td.h5", columns)
    with pytest.warns(UserWarning, match=r"dropped 2 of 1000 events with coordinates no sensor has .*row 10, x=-5"):
        back = read_h5(path)
    keep = np.ones(1000, bool)
    keep[[10, 20]] = False
    assert back.dropped_out_of_range == 2
    for k in "xytp":
        np.testing.assert_array_equal(getattr(back, k), reference[k][keep])


def test_viz_refuses_stray_events_when_the_file_states_no_size(tmp_path, columns, capsys):
    columns["y"][5] = 33014  # as in public eTraM files
    path = write_columns(tmp_path / "nosize_td.h5", columns, size=None)
    out = tmp_path / "w.png"
    assert visualize.main([str(path), "--out", str(out)]) == 2  # used to write a 64x33015 picture
    line = one_error_line(capsys.readouterr(), "evcmae-viz")
    assert re.search(r"nosize_td.h5: y: the file states no sensor size and events reach y=33014", line)
    assert not out.exists()
    with pytest.warns(UserWarning, match=r"dropped 1 of \d+ events outside the 64x48 sensor"):
        assert visualize.main([str(path), "--out", str(out), "--width", str(W), "--height", str(H)]) == 0
    assert Image.open(out).size == (W, H)


def test_viz_infers_a_plausible_size_with_a_warning(tmp_path, capsys):
    columns = good_columns()
    path = write_columns(tmp_path / "nosize_td.h5", columns, size=None)
    first = columns["t"] < columns["t"][0] + 50_000
    extent = (int(columns["x"][first].max()) + 1, int(columns["y"][first].max()) + 1)
    out = tmp_path / "w.png"
    with pytest.warns(UserWarning, match=rf"states no sensor size; using the events' extent {extent[0]}x{extent[1]}"):
        assert visualize.main([str(path), "--out", str(out)]) == 0
    assert Image.open(out).size == extent
