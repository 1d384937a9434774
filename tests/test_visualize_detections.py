import numpy as np
from PIL import Image

from evcmae.events.container import Events
from evcmae.events.h5 import write_h5
from evcmae.events.labels import BBOX_DTYPE, save_labels
from evcmae.events.render import PREDICTION_COLOR, class_color, render_window


def boxes(rows):
    out = np.zeros(len(rows), BBOX_DTYPE)
    for i, (t, x, y, w, h, c, score) in enumerate(rows):
        out[i] = (t, x, y, w, h, c, i, score)
    return out


def test_predictions_drawn_in_their_colour_beside_ground_truth():
    ev = Events(x=[5], y=[5], t=[10], p=[1], width=64, height=48)
    gt = boxes([(40_000, 10, 20, 12, 10, 1, 1.0)])
    det = boxes([(40_000, 40, 20, 12, 10, 1, 0.87), (90_000, 2, 2, 5, 5, 0, 0.5)])  # second: other window
    img = np.asarray(render_window(ev, 64, 48, gt, 0, 50_000, detections=det))
    assert tuple(img[29, 10]) == class_color(1)  # left edge of the ground-truth box
    assert tuple(img[29, 40]) == PREDICTION_COLOR  # left edge of the predicted box
    assert tuple(img[4, 2]) != PREDICTION_COLOR  # the prediction of another time is not drawn


def test_cli_draws_detections(tmp_path):
    from evcmae.tools.visualize import main

    ev = Events(x=np.arange(30), y=np.full(30, 10), t=np.arange(30) * 1000, p=np.ones(30), width=64, height=48)
    write_h5(tmp_path / "rec_td.h5", ev)
    save_labels(tmp_path / "rec_bbox.npy", boxes([(20_000, 4, 4, 20, 20, 1, 1.0)]))
    save_labels(tmp_path / "det_bbox.npy", boxes([(20_000, 30, 8, 20, 20, 3, 0.9)]))
    out = tmp_path / "w.png"
    assert (
        main(
            [
                str(tmp_path / "rec_td.h5"),
                "--t-start",
                "0",
                "--detections",
                str(tmp_path / "det_bbox.npy"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    img = np.asarray(Image.open(out).convert("RGB"))
    assert tuple(img[15, 4]) == class_color(1) and tuple(img[15, 30]) == PREDICTION_COLOR
