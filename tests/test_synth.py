"""The synthetic benchmark generator: determinism, event invariants, the event model against hand
computations, label sanity, and the files it writes."""

import json
import math

import numpy as np
import pytest

from evcmae.events.h5 import read_h5
from evcmae.events.labels import BBOX_DTYPE, load_labels
from evcmae.events.synth import EventSimulator, SensorConfig, ensure_generated, generate, get_preset, synthesize
from evcmae.events.synth.classes import CLASS_NAMES, SPECS
from evcmae.events.synth.noise import background_activity, hot_pixels
from evcmae.events.synth.presets import PRESETS
from evcmae.events.synth.traffic import perspective
from evcmae.events.synth.writer import stale_parameters

SMALL = get_preset("tiny", duration_s=0.5, recordings={"train": 1, "val": 1, "test": 1, "pretrain": 1})
EXACT = SensorConfig(contrast=0.2, contrast_sigma=0.0, refractory_us=0.0)


@pytest.fixture(scope="module")
def rec():
    return synthesize("tiny", 0, "train", 0)


# -- determinism -------------------------------------------------------------------------------
def test_same_seed_gives_identical_files(tmp_path):
    a = generate(tmp_path / "a", SMALL, seed=3)
    b = generate(tmp_path / "b", SMALL, seed=3)
    assert a["totals"] == b["totals"]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 1 + 4 + 3  # synth.json, 4 recordings, 3 label files
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_different_seed_gives_different_data():
    a = synthesize(SMALL, 0, "train", 0)
    b = synthesize(SMALL, 1, "train", 0)
    c = synthesize(SMALL, 0, "train", 0)
    assert len(a.events) != len(b.events) or not np.array_equal(a.events.x, b.events.x)
    for col in ("x", "y", "t", "p"):
        assert np.array_equal(getattr(a.events, col), getattr(c.events, col))
    assert np.array_equal(a.labels, c.labels)


# -- events ------------------------------------------------------------------------------------
def test_event_invariants(rec):
    ev = rec.events
    assert ev.x.dtype == np.uint16 and ev.y.dtype == np.uint16 and ev.t.dtype == np.int64 and ev.p.dtype == np.uint8
    assert ev.is_sorted()
    assert ev.x.max() < ev.width == 320 and ev.y.max() < ev.height == 180
    assert set(np.unique(ev.p)) == {0, 1}
    assert 0 <= ev.t[0] and ev.t[-1] <= rec.duration_us == 1_000_000
    assert 0.001 < rec.is_noise.mean() < 0.2  # noise is present but sparse


def _square_frames(i_bg, i_obj, n_frames=80, step=0.25, x0=5.0, size=10, w=40, h=20):
    """Log frames of a uniform square (rows 5..14, columns [x, x + size)) sliding right over a
    flat background by ``step`` px per frame, with exact area coverage at the side edges."""
    cols = np.arange(w)
    for k in range(n_frames + 1):
        x = x0 + step * k
        cover = np.clip(np.minimum(cols + 1, x + size) - np.maximum(cols, x), 0, 1)
        img = np.full((h, w), i_bg)
        img[5:15] = i_bg * (1 - cover) + i_obj * cover
        yield k, x, np.log(img)


def _simulate(frames, config, dt=1000, w=40, h=20):
    sim = EventSimulator(w, h, config, np.random.default_rng(0))
    out = []
    for k, _x, log in frames:
        if k == 0:
            sim.reset(log, 0)
        else:
            out.append(sim.step(log, k * dt))
    return [np.concatenate([o[i] for o in out]) for i in range(4)]


@pytest.mark.parametrize("i_obj", [0.6, 0.3, 0.05])
def test_step_edge_gives_floor_of_contrast_over_threshold(i_obj):
    """Hand computation: an edge of log contrast dL passing a pixel fires floor(|dL| / C) events;
    the leading edge then the trailing edge give that many of each polarity."""
    i_bg = 0.2
    dl = math.log(i_obj / i_bg)
    n = math.floor(abs(dl) / EXACT.contrast)
    x, y, t, p = _simulate(_square_frames(i_bg, i_obj), EXACT)
    lead = 1 if dl > 0 else 0
    on_count = np.zeros((20, 40), int)
    off_count = np.zeros((20, 40), int)
    np.add.at(on_count if lead else off_count, (y[p == lead], x[p == lead]), 1)
    np.add.at(off_count if lead else on_count, (y[p != lead], x[p != lead]), 1)
    lead_count, trail_count = (on_count, off_count) if lead else (off_count, on_count)
    # The square moved from [5, 15) to [25, 35): columns 15-34 were covered by the leading edge,
    # columns 5-24 uncovered by the trailing edge; nothing else changed.
    expect_lead = np.zeros((20, 40), int)
    expect_lead[5:15, 15:35] = n
    expect_trail = np.zeros((20, 40), int)
    expect_trail[5:15, 5:25] = n
    assert np.array_equal(lead_count, expect_lead)
    assert np.array_equal(trail_count, expect_trail)
    assert len(t) == n * 2 * 10 * 20


def test_events_sit_on_the_moving_edges_at_their_timestamps():
    x, y, t, p = _simulate(_square_frames(0.2, 0.7), EXACT)
    assert len(t) > 0 and set(np.unique(y)) <= set(range(5, 15))
    pos = 5.0 + 0.25 * t / 1000.0  # square's left edge at each event's time
    centre = x + 0.5
    dist = np.minimum(np.abs(centre - pos), np.abs(centre - (pos + 10)))
    assert dist.max() <= 1.0  # interpolated crossing times put events on the edge
    on_lead = np.abs(centre - (pos + 10)) <= 1.0
    assert np.all(p[on_lead] == 1) and np.all(p[~on_lead] == 0)


def test_refractory_period_keeps_every_mth_crossing():
    """dL = 2.0 in one 1 ms frame with C = 0.2: ten crossings 100 µs apart; with a 250 µs
    refractory period the pixel fires at crossings 0, 3, 6, 9 (t = 100, 400, 700, 1000 µs)."""
    cfg = SensorConfig(contrast=0.2, contrast_sigma=0.0, refractory_us=250.0)
    sim = EventSimulator(1, 1, cfg, np.random.default_rng(0))
    sim.reset(np.zeros((1, 1)), 0)
    x, y, t, p = sim.step(np.full((1, 1), 2.0 + 1e-7), 1000)
    assert t.tolist() == [100, 400, 700, 1000]
    assert np.all(p == 1)
    no_refr = EventSimulator(1, 1, EXACT, np.random.default_rng(0))
    no_refr.reset(np.zeros((1, 1)), 0)
    assert len(no_refr.step(np.full((1, 1), 2.0 + 1e-7), 1000)[2]) == 10


def test_thresholds_vary_per_pixel_around_nominal():
    sim = EventSimulator(200, 100, SensorConfig(), np.random.default_rng(0))
    assert abs(sim.c_on.mean() - 0.2) < 0.002 and abs(sim.c_on.std() - 0.03) < 0.002
    assert not np.array_equal(sim.c_on, sim.c_off)


def test_noise_rates():
    cfg = SensorConfig(noise_rate_hz=0.5, hot_pixel_fraction=1e-3, hot_pixel_rate_hz=(100.0, 100.0))
    rng = np.random.default_rng(1)
    x, y, t, p = background_activity(rng, 200, 100, 0, 2_000_000, cfg)
    expected = 0.5 * 200 * 100 * 2.0
    assert abs(len(t) - expected) < 5 * math.sqrt(expected)
    assert t.min() >= 0 and t.max() < 2_000_000 and x.max() < 200 and y.max() < 100
    hx, hy, ht, hp = hot_pixels(rng, 200, 100, 0, 2_000_000, cfg)
    pix = np.unique(hy.astype(int) * 200 + hx)
    assert len(pix) == 20  # 1e-3 of 20,000 pixels, each ~200 events
    assert abs(len(ht) - 20 * 200) < 5 * math.sqrt(20 * 200)


# -- labels --------------------------------------------------------------------------------------
def test_labels_are_well_formed(rec):
    lab = rec.labels
    assert lab.dtype == BBOX_DTYPE and len(lab) > 50
    assert np.all(lab["x"] >= 0) and np.all(lab["y"] >= 0)
    assert np.all(lab["x"] + lab["w"] <= 320 + 1e-3) and np.all(lab["y"] + lab["h"] <= 180 + 1e-3)
    assert np.all(np.minimum(lab["w"], lab["h"]) >= PRESETS["tiny"].min_box_side)
    times = np.unique(lab["t"])
    assert np.all(times % 50_000 == 0) and times.min() >= 50_000 and times.max() <= 1_000_000
    assert np.all(np.diff(lab["t"]) >= 0)
    for t in times:  # one box per object per label time
        ids = lab["track_id"][lab["t"] == t]
        assert len(ids) == len(np.unique(ids))
    assert set(np.unique(lab["class_id"])) <= set(range(8))


def test_track_ids_are_stable(rec):
    lab = rec.labels
    vmax = 15.0 * PRESETS["tiny"].scale_px_per_m * float(perspective(1.0))  # fastest class, nearest lane
    tracks = 0
    for tid in np.unique(lab["track_id"]):
        b = lab[lab["track_id"] == tid]
        assert len(np.unique(b["class_id"])) == 1
        inner = (b["x"] > 0.5) & (b["x"] + b["w"] < 319.5) & (b["y"] + b["h"] < 179.5)
        b = b[inner]
        if len(b) < 2:
            continue
        tracks += 1
        dt = np.diff(b["t"]) * 1e-6
        cx = b["x"] + b["w"] / 2
        assert np.all(np.abs(np.diff(cx)) <= vmax * dt + 0.5)
        assert np.all(np.abs(np.diff(b["w"])) <= 0.05 * b["w"][1:] + 0.5)  # size changes slowly
    assert tracks >= 3


def test_boxes_cover_the_objects_events(rec):
    """Most signal (non-noise) events in the 5 ms before a label time lie inside that time's boxes."""
    ev, lab = rec.events, rec.labels
    fractions = []
    for t in np.unique(lab["t"]):
        b = lab[lab["t"] == t]
        lo, hi = np.searchsorted(ev.t, [t - 5000, t + 1])
        sig = ~rec.is_noise[lo:hi]
        x = ev.x[lo:hi][sig] + 0.5
        y = ev.y[lo:hi][sig] + 0.5
        inside = np.zeros(len(x), bool)
        for bb in b:
            inside |= (
                (x >= bb["x"] - 2) & (x <= bb["x"] + bb["w"] + 2) & (y >= bb["y"] - 2) & (y <= bb["y"] + bb["h"] + 2)
            )
        if len(x):
            fractions.append(inside.mean())
    assert len(fractions) >= 15 and np.mean(fractions) > 0.9


def test_sizes_match_real_world_dimensions(rec):
    """Unclipped boxes, converted back to metres with the camera scale, fall in each class's
    real-world length range."""
    lab = rec.labels
    p = PRESETS["tiny"]
    inner = (lab["x"] > 0.5) & (lab["x"] + lab["w"] < p.width - 0.5) & (lab["y"] + lab["h"] < p.height - 0.5)
    lab = lab[inner & (lab["y"] > 0.5)]
    assert len(lab) > 20
    metres = lab["w"] / (p.scale_px_per_m * perspective((lab["y"] + lab["h"]) / p.height))
    for cid in np.unique(lab["class_id"]):
        lo, hi = SPECS[int(cid)].length_m
        m = metres[lab["class_id"] == cid]
        assert np.all((m >= lo - 1e-3) & (m <= hi + 1e-3)), CLASS_NAMES[int(cid)]


def test_resolution_scales_the_scene():
    """The same seed at twice the resolution gives the same traffic with boxes twice as large."""
    lo = synthesize(get_preset("tiny", duration_s=0.3), 5, "val", 0)
    hi = synthesize(get_preset("demo", duration_s=0.3), 5, "val", 0)
    a = {(int(r["t"]), int(r["track_id"])): r for r in lo.labels}
    b = {(int(r["t"]), int(r["track_id"])): r for r in hi.labels}
    common = [k for k in a if k in b and a[k]["x"] > 1 and a[k]["x"] + a[k]["w"] < 319 and a[k]["y"] > 1]
    assert len(common) >= 10
    for k in common:
        for f in ("x", "y", "w", "h"):
            assert b[k][f] == pytest.approx(2 * a[k][f], rel=1e-4, abs=1e-3)
        assert b[k]["class_id"] == a[k]["class_id"]


# -- files ---------------------------------------------------------------------------------------
def test_output_layout_and_readback(tmp_path):
    summary = generate(tmp_path, SMALL, seed=0)
    meta = json.loads((tmp_path / "synth.json").read_text())
    assert meta["preset"] == "tiny" and meta["seed"] == 0 and meta["parameters"]["duration_s"] == 0.5
    assert meta["classes"] == list(CLASS_NAMES) and meta["totals"] == summary["totals"]
    for split in ("train", "val", "test", "pretrain"):
        (info,) = meta["splits"][split]
        ev = read_h5(tmp_path / split / f"{info['name']}_td.h5")
        assert (ev.width, ev.height) == (320, 180) and len(ev) == info["events"] > 1000 and ev.is_sorted()
        bbox = tmp_path / split / f"{info['name']}_bbox.npy"
        if split == "pretrain":
            assert not bbox.exists() and info["boxes"] == 0
        else:
            lab = load_labels(bbox)
            assert lab.dtype == BBOX_DTYPE and len(lab) == info["boxes"] > 0
            assert lab["t"].max() <= ev.t.max() + 50_000


def test_generate_refuses_a_folder_of_other_data(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate(tmp_path, SMALL, seed=0)


def test_rerun_replaces_an_earlier_output(tmp_path):
    bigger = get_preset("tiny", duration_s=0.2, recordings={"train": 2})
    generate(tmp_path, bigger, seed=0)
    generate(tmp_path, get_preset("tiny", duration_s=0.2, recordings={"train": 1}), seed=0)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [
        "synth_train_000_bbox.npy",
        "synth_train_000_td.h5",
    ]


def test_ensure_generated_regenerates_a_dataset_of_other_parameters(tmp_path, capsys):
    """A preset that grew (the study's val and test splits went from 4 to 16) finds the older
    dataset and generates it again; the recordings both have are byte-identical, since each one
    depends only on (seed, split, index)."""
    small = get_preset("tiny", duration_s=0.2, recordings={"train": 1, "val": 1})
    grown = get_preset("tiny", duration_s=0.2, recordings={"train": 1, "val": 2})
    assert ensure_generated(tmp_path, small, 0) is True
    first = (tmp_path / "val" / "synth_val_000_td.h5").read_bytes()
    assert ensure_generated(tmp_path, small, 0) is False and stale_parameters(tmp_path, small, 0) == []
    assert stale_parameters(tmp_path, grown, 1) == ["seed", "recordings"]
    capsys.readouterr()
    assert ensure_generated(tmp_path, grown, 0) is True
    assert "with other recordings; generating it again" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "val").glob("*_td.h5")) == ["synth_val_000_td.h5", "synth_val_001_td.h5"]
    assert (tmp_path / "val" / "synth_val_000_td.h5").read_bytes() == first
    assert json.loads((tmp_path / "synth.json").read_text())["parameters"]["recordings"]["val"] == 2
    (tmp_path / "synth.json").write_text('{"preset": "tiny", "se')  # cut short: made again, not a traceback
    assert stale_parameters(tmp_path, grown, 0) == ["synth.json"]
    assert ensure_generated(tmp_path, grown, 0) is True and stale_parameters(tmp_path, grown, 0) == []
    assert (tmp_path / "val" / "synth_val_000_td.h5").read_bytes() == first


def test_presets():
    assert {"tiny", "demo", "bench"} <= set(PRESETS)
    assert (PRESETS["tiny"].width, PRESETS["tiny"].height) == (320, 180)
    assert (PRESETS["demo"].width, PRESETS["demo"].height) == (640, 360)
    bench = PRESETS["bench"]
    assert bench.count("pretrain") >= bench.count("train") >= 10
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
