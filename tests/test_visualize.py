"""evcmae-viz and the drawing functions behind it."""

import sys

import numpy as np
import pytest
from PIL import Image

from evcmae.events.container import Events
from evcmae.events.h5 import write_h5
from evcmae.events.labels import BBOX_DTYPE, save_labels
from evcmae.events.render import (
    BACKGROUND,
    OFF_COLOR,
    ON_COLOR,
    boxes_in_window,
    class_color,
    event_image,
    render_window,
)
from evcmae.tools import visualize


def _boxes(rows):
    out = np.zeros(len(rows), BBOX_DTYPE)
    for i, (t, x, y, w, h, cid, tid) in enumerate(rows):
        out[i] = (t, x, y, w, h, cid, tid, 1.0)
    return out


def test_event_image_colours_by_latest_polarity():
    # pixel (1, 1): ON then OFF -> OFF; (3, 2): ON; (0, 0): OFF then ON -> ON; the rest untouched
    x = np.array([1, 3, 0, 1, 0])
    y = np.array([1, 2, 0, 1, 0])
    p = np.array([1, 1, 0, 0, 1])
    img = event_image(x, y, p, 5, 4)
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8
    assert tuple(img[1, 1]) == OFF_COLOR and tuple(img[2, 3]) == ON_COLOR and tuple(img[0, 0]) == ON_COLOR
    assert tuple(img[3, 4]) == BACKGROUND
    assert (np.all(img == BACKGROUND, axis=2)).sum() == 20 - 3


def test_boxes_of_the_label_time_nearest_the_window_end():
    lab = _boxes(
        [(10_000, 0, 0, 5, 5, 1, 1), (40_000, 1, 1, 5, 5, 1, 1), (50_000, 2, 2, 5, 5, 3, 2), (60_000, 3, 3, 5, 5, 1, 1)]
    )
    chosen = boxes_in_window(lab, 0, 50_000)
    assert chosen["t"].tolist() == [50_000] and chosen["class_id"].tolist() == [3]
    assert boxes_in_window(lab, 20_000, 45_000)["t"].tolist() == [40_000]
    assert len(boxes_in_window(lab, 61_000, 100_000)) == 0


@pytest.fixture
def recording(tmp_path):
    """A 64x48 recording with events in two windows and boxes at 40 and 50 ms."""
    n = 400
    rng = np.random.default_rng(0)
    ev = Events(
        rng.integers(0, 64, n),
        rng.integers(0, 48, n),
        np.sort(rng.integers(0, 100_000, n)),
        rng.integers(0, 2, n),
        width=64,
        height=48,
    )
    path = tmp_path / "rec_td.h5"
    write_h5(path, ev, 64, 48)
    save_labels(tmp_path / "rec_bbox.npy", _boxes([(40_000, 2, 2, 10, 10, 1, 7), (50_000, 10, 8, 20, 16, 3, 9)]))
    return path


def test_png_has_sensor_size_and_boxes_in_class_colour(recording, tmp_path):
    out = tmp_path / "w.png"
    assert (
        visualize.main([str(recording), "--t-start", "0", "--window-ms", "50", "--scale", "2", "--out", str(out)]) == 0
    )
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (96, 128, 3)
    bus = class_color(3)
    # the box at 50 ms (the sibling rec_bbox.npy was found without --labels): x 10..30, y 8..24
    for yy in (30, 40):  # left and right edges at mid height, enlarged twice
        assert tuple(img[yy, 20]) == bus and tuple(img[yy, 59]) == bus
    assert tuple(img[47, 40]) == bus  # bottom edge
    assert (np.all(img == bus, axis=2)).sum() > 2 * (40 + 32)  # outline plus the name tag
    assert not np.any(np.all(img == class_color(1), axis=2))  # the 40 ms box is not the nearest


def test_without_labels_no_box_is_drawn(recording, tmp_path):
    out = tmp_path / "n.png"
    assert visualize.main([str(recording), "--t-start", "0", "--no-labels", "--out", str(out)]) == 0
    img = np.asarray(Image.open(out).convert("RGB"))
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert colours <= {BACKGROUND, ON_COLOR, OFF_COLOR}


def test_gif_has_one_frame_per_window(recording, tmp_path):
    out = tmp_path / "seq.gif"
    assert (
        visualize.main([str(recording), "--t-start", "0", "--window-ms", "20", "--sequence", "5", "--out", str(out)])
        == 0
    )
    with Image.open(out) as gif:
        assert gif.n_frames == 5 and gif.size == (64, 48)


def test_sequence_needs_a_gif_name(recording, tmp_path):
    assert visualize.main([str(recording), "--sequence", "3", "--out", str(tmp_path / "x.png")]) == 2


def test_reads_hdf5_without_events_formats(recording, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "events.formats", None)  # import fails as if not written yet
    out = tmp_path / "f.png"
    assert visualize.main([str(recording), "--out", str(out)]) == 0
    assert Image.open(out).size == (64, 48)


def test_renders_synthetic_data_with_boxes(tmp_path):
    from evcmae.events.synth import get_preset, synthesize

    rec = synthesize(get_preset("tiny", duration_s=0.2), 0, "train", 0)
    img = np.asarray(render_window(rec.events, 320, 180, rec.labels, 150_000, 200_000))
    assert img.shape == (180, 320, 3)
    drawn = {int(c) for c in rec.labels["class_id"][rec.labels["t"] == 200_000]}
    for cid in drawn:
        assert np.any(np.all(img == class_color(cid), axis=2))
    events_drawn = np.all(img == ON_COLOR, axis=2) | np.all(img == OFF_COLOR, axis=2)
    assert 0.005 < events_drawn.mean() < 0.5  # sparse edges, not a filled picture
