"""Each public dataset end to end on a tiny fixture in its own layout and format
(tests/dataset_fixtures.py): evcmae-preprocess --dataset -> evcmae-finetune data=<dataset> for
2 steps -> evcmae-evaluate, then evcmae-detect on the same recording in three file formats."""

import json
import re

import numpy as np
import pytest
import torch
from dataset_fixtures import write_dat, write_dataset

from evcmae.finetune.classes import class_names

torch.set_num_threads(1)

# data config -> (fixture / preprocessing preset, class set, GT boxes per label frame by class
# in the test recording: its four objects' classes, after the dataset's class filter and map)
CASES = {
    "gen1": ("gen1", "gen1", {"car": 2, "pedestrian": 2}),
    "gen4": ("gen4", "gen4", {"pedestrian": 1, "two-wheeler": 1, "car": 1}),  # the 4th (class 5) dropped
    "etram": ("etram", "etram8", {"pedestrian": 1, "car": 1, "bicycle": 1, "bus": 1}),
    "etram3": ("etram", "etram3", {"pedestrian": 1, "vehicle": 2, "micro-mobility": 1}),
}


def finetune_two_steps(dataset, root, rvt_root, out):
    from evcmae.tools.demo import _compose
    from evcmae.tools.finetune import train

    cfg = _compose(
        "finetune",
        [
            f"data={dataset}",
            f"data.root={root}",
            f"data.rvt_root={rvt_root}",
            "model=histogram",
            f"paths.log_dir={out}/logs",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "trainer.enable_progress_bar=false",
            "+trainer.enable_model_summary=false",
            "data.seq_len=2",
            "data.batch_size=1",
            "data.augment=null",
            "validate_best=false",
        ],
        out / "run",
    )
    return train(cfg)["checkpoint"]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", list(CASES))
def test_preprocess_finetune_evaluate(dataset, tmp_path):
    from evcmae.tools.evaluate import main as evaluate
    from evcmae.tools.preprocess import main as preprocess

    fixture, classes, per_frame = CASES[dataset]
    root = write_dataset(tmp_path / fixture, fixture)
    rvt_root = tmp_path / f"{fixture}_rvt"
    assert preprocess(["--in", str(root), "--out", str(rvt_root), "--dataset", fixture, "--no-progress"]) == 0
    assert sorted(p.name for p in rvt_root.iterdir()) == ["test", "train", "val"]

    checkpoint = finetune_two_steps(dataset, root, rvt_root, tmp_path)
    assert checkpoint.endswith(".ckpt")

    out = tmp_path / "eval"
    assert evaluate([f"checkpoint={checkpoint}", "split=test", f"out={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"]["name"] == "rvt" and metrics["classes"] == list(class_names(classes))
    counts = metrics["counts"]
    assert counts["recordings"] == 1 and counts["images"] >= 2
    expected = {name: per_frame.get(name, 0) * counts["images"] for name in class_names(classes)}
    assert counts["gt_per_class"] == expected
    assert "AP_class_agnostic" in metrics and "AP_per_class" in metrics


@pytest.mark.slow
def test_detect_reads_dat_raw_and_hdf5_alike_and_draws(tmp_path):
    from evcmae.events.evt3 import write_evt3
    from evcmae.events.formats import read_events
    from evcmae.events.h5 import write_h5
    from evcmae.events.labels import load_labels
    from evcmae.tools.detect import main as detect

    root = write_dataset(tmp_path / "gen1", "gen1")
    checkpoint = finetune_two_steps("gen1", root, tmp_path / "gen1_rvt", tmp_path)
    events = read_events(root / "test" / "gen1_test_002_td.dat", width=304, height=240)
    events = events[events.t < 400_000]  # 8 windows are enough here
    dat = tmp_path / "short_td.dat"
    write_dat(dat, events)
    write_evt3(tmp_path / "same.raw", events, 304, 240)
    write_h5(tmp_path / "same_td.h5", events)

    # conf=0: every anchor that survives NMS, so the outputs are many and input-dependent
    common = [f"checkpoint={checkpoint}", "conf=0", "no_progress=true"]
    assert detect([*common, f"input={dat}", f"output={tmp_path}/dat.npy", "--video", str(tmp_path / "dat.gif")]) == 0
    assert detect([*common, f"input={tmp_path / 'same.raw'}", f"output={tmp_path}/raw.npy"]) == 0
    assert detect([*common, f"input={tmp_path / 'same_td.h5'}", f"output={tmp_path}/h5.npy"]) == 0
    from_dat, from_raw, from_h5 = (load_labels(tmp_path / f"{k}.npy") for k in ("dat", "raw", "h5"))
    # overwrite=true replaces an earlier output (the raw file's, with the same detections)
    assert detect([*common, f"input={dat}", f"output={tmp_path}/raw.npy", "overwrite=true"]) == 0
    np.testing.assert_array_equal(load_labels(tmp_path / "raw.npy"), from_dat)
    assert len(from_dat) > 100
    np.testing.assert_array_equal(from_raw, from_dat)
    np.testing.assert_array_equal(from_h5, from_dat)
    # one detection time per 50 ms window, in sensor pixels, RVT's score (class confidence)
    assert np.all(np.diff(np.unique(from_dat["t"])) == 50_000)
    assert from_dat["x"].min() >= -304 and (from_dat["class_confidence"] <= 1).all()

    from PIL import Image

    with Image.open(tmp_path / "dat.gif") as gif:
        assert gif.n_frames == len(np.unique(from_dat["t"])) and gif.size == (304, 240)
    pytest.importorskip("imageio_ffmpeg", reason="MP4 needs imageio-ffmpeg")
    assert detect([*common, f"input={dat}", f"output={tmp_path}/again.npy", f"video={tmp_path}/clip.mp4"]) == 0
    assert (tmp_path / "clip.mp4").stat().st_size > 1000


def test_detect_refuses_unreadable_input_and_unknown_video(tmp_path, capsys):
    from evcmae.finetune.encoder import EventDetector
    from evcmae.finetune.rvt_checkpoint import rvt_name
    from evcmae.tools.detect import main as detect

    model = EventDetector("histogram", "tiny", 2, 240, 304, partition_split=1)
    torch.save({"state_dict": {f"mdl.{rvt_name(k)}": v for k, v in model.state_dict().items()}}, tmp_path / "rvt.ckpt")
    bogus = tmp_path / "rec.raw"
    bogus.write_bytes(b"not an event file at all")
    # one line each, exit status 2; the video suffix is checked before the model runs
    assert detect([f"checkpoint={tmp_path / 'rvt.ckpt'}", f"input={bogus}", f"video={tmp_path / 'out.avi'}"]) == 2
    assert re.search(r"out\.avi.*\.gif or \.mp4", capsys.readouterr().err)
    assert detect([f"checkpoint={tmp_path / 'rvt.ckpt'}", f"input={bogus}"]) == 2
    assert re.search(r"rec\.raw.*unknown file format", capsys.readouterr().err)
    # an existing output (here: the recording's labels) is refused before the model loads, unchanged
    labels = tmp_path / "rec_bbox.npy"
    labels.write_bytes(b"the only copy of the labels")
    assert detect([f"checkpoint={tmp_path / 'absent.ckpt'}", f"input={bogus}", f"output={labels}"]) == 2
    assert re.search(r"rec_bbox\.npy: already exists.*overwrite=true", capsys.readouterr().err)
    assert labels.read_bytes() == b"the only copy of the labels"
