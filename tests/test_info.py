"""``evcmae-info``: the figures it reports for the real recordings, its table and JSON output,
label files, and how it refuses bad input."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from evcmae.events.container import Events
from evcmae.events.formats import describe
from evcmae.events.h5 import write_h5
from evcmae.events.labels import BBOX_DTYPE, save_labels
from evcmae.tools.info import main

EVT2_FIGURES = {
    "format": "evt2",
    "events": 539_481,
    "t_min_us": 1_317_888,
    "t_max_us": 1_367_888,
    "x_min": 60,
    "x_max": 599,
    "y_min": 18,
    "y_max": 475,
    "width": None,
    "height": None,
}
DAT_FIGURES = {
    "format": "dat",
    "events": 2_009,
    "t_min_us": 0,
    "t_max_us": 99_952,
    "x_min": 0,
    "x_max": 77,
    "y_min": 0,
    "y_max": 41,
}


def run_json(capsys, path):
    assert main([str(path), "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # exactly one JSON object, nothing else


@pytest.mark.parametrize(
    "name, figures, on",
    [
        ("evt2_gen3_ring.raw", EVT2_FIGURES, 0.682),
        ("ncars_atis_sample.dat", DAT_FIGURES, 0.672),
    ],
)
def test_json_figures(shared_data, capsys, name, figures, on):
    info = run_json(capsys, shared_data / name)
    assert {k: info[k] for k in figures} == figures
    assert round(info["on_fraction"], 3) == on
    assert info["dropped_out_of_range"] == 0 and info["dropped_no_time"] == 0
    assert info["time_sorted"] is True


def test_json_aedat4(shared_data, capsys):
    pytest.importorskip("aedat")
    info = run_json(capsys, shared_data / "dvxplorer_sample.aedat4")
    assert info["format"] == "aedat4" and info["events"] == 111_954
    assert round((info["t_max_us"] - info["t_min_us"]) / 1e6, 2) == 0.59
    assert (info["x_min"], info["x_max"], info["y_min"], info["y_max"]) == (0, 319, 0, 239)
    assert (info["width"], info["height"]) == (320, 240)


def test_console_script(shared_data):
    exe = shutil.which("evcmae-info")
    if exe is None:
        pytest.skip("evcmae-info is not installed (pip install -e .)")
    done = subprocess.run(
        [exe, str(shared_data / "evt2_gen3_ring.raw"), "--json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert {k: info[k] for k in EVT2_FIGURES} == EVT2_FIGURES
    assert round(info["on_fraction"], 3) == 0.682


def test_table(shared_data, capsys):
    assert main([str(shared_data / "ncars_atis_sample.dat")]) == 0
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert rows["format"] == "dat" and rows["events"] == "2,009"
    assert rows["t range (µs)"] == "0 – 99,952  (0.100 s)"
    assert rows["x range"] == "0 – 77" and rows["y range"] == "0 – 41"
    assert rows["on fraction"] == "0.672" and rows["width"] == "unknown"


def test_label_file(tmp_path, capsys):
    labels = np.zeros(5, BBOX_DTYPE)
    labels["t"] = [100, 100, 200, 300, 300]
    labels["class_id"] = [0, 1, 1, 5, 1]
    path = tmp_path / "rec_bbox.npy"
    save_labels(path, labels)
    info = run_json(capsys, path)
    assert info == {
        "file": str(path),
        "format": "bbox_npy",
        "boxes": 5,
        "t_min_us": 100,
        "t_max_us": 300,
        "label_frames": 3,
        "class_counts": {"0": 1, "1": 3, "5": 1},
    }


def test_h5_with_out_of_range_events(tmp_path):
    ev = Events(x=[1, 2, 5000], y=[1, 2, 3], t=[10, 20, 30], p=[1, 1, 0])
    path = tmp_path / "rec_td.h5"
    write_h5(path, ev, width=8, height=8, compression=None)
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        info = describe(path)
    assert (info["events"], info["x_max"], info["on_fraction"]) == (2, 2, 1.0)
    assert info["dropped_out_of_range"] == 1
    assert (info["width"], info["height"]) == (8, 8)


def test_unsorted_file_is_described_not_refused(tmp_path):
    path = tmp_path / "back_td.h5"
    write_h5(path, Events(x=[1, 2], y=[1, 1], t=[50, 40], p=[0, 1]), compression=None)
    info = describe(path)
    assert info["time_sorted"] is False and (info["t_min_us"], info["t_max_us"]) == (40, 50)


@pytest.mark.parametrize("content", [b"", b"not an event file at all", b"% evt 2.0\n% end\n\x01\x02"])
def test_bad_input_exits_2_naming_the_file(tmp_path, capsys, content):
    path = tmp_path / "bad.raw"
    path.write_bytes(content)
    assert main([str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(path) in captured.err and "Traceback" not in captured.err


def test_missing_file_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope.h5")]) == 2
    assert "nope.h5" in capsys.readouterr().err
