"""Builders of bad input for the tests in this folder: recordings written column by column (any
dtype, any value, as a hostile file would hold them) and label arrays."""

import h5py
import numpy as np
import pytest

from evcmae.events.labels import BBOX_DTYPE

W, H = 64, 48


def good_columns(n=1000, seed=0, duration_us=200_000):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.integers(0, W, n).astype(np.uint16),
        "y": rng.integers(0, H, n).astype(np.uint16),
        "t": np.sort(rng.integers(0, duration_us, n)).astype(np.int64),
        "p": rng.integers(0, 2, n).astype(np.uint8),
    }


def write_columns(path, columns, size=(W, H)):
    """An HDF5 recording in the Gen4 layout with the columns exactly as given."""
    with h5py.File(path, "w") as f:
        group = f.create_group("events")
        for name, values in columns.items():
            group.create_dataset(name, data=values)
        if size is not None:
            group.create_dataset("width", data=size[0])
            group.create_dataset("height", data=size[1])
    return path


def boxes(rows, dtype=BBOX_DTYPE):
    """Labels from (t, x, y, w, h, class_id) rows in ``dtype`` (track 0, confidence 1)."""
    out = np.zeros(len(rows), dtype)
    for i, (t, x, y, w, h, cid) in enumerate(rows):
        out[i]["t"], out[i]["x"], out[i]["y"], out[i]["w"], out[i]["h"] = t, x, y, w, h
        out[i]["class_id"] = cid
    if "class_confidence" in out.dtype.names:
        out["class_confidence"] = 1.0
    return out


@pytest.fixture
def columns():
    return good_columns()


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    """Each test sees its own once-per-file warnings (the set is process-wide by design)."""
    from evcmae.events import validation

    monkeypatch.setattr(validation, "_warned", set())
