"""Box labels in the Prophesee / eTraM ``*_bbox.npy`` form: loading (both field spellings),
saving and the filtering applied before training and evaluation."""

from __future__ import annotations

import os

import numpy as np

from .errors import LabelFileError
from .validation import drop_negative_boxes, label_columns

BBOX_DTYPE = np.dtype(
    [
        ("t", "<i8"),
        ("x", "<f4"),
        ("y", "<f4"),
        ("w", "<f4"),
        ("h", "<f4"),
        ("class_id", "<u4"),
        ("track_id", "<u4"),
        ("class_confidence", "<f4"),
    ]
)
# Older Prophesee files (Gen1) spell two fields differently.
_ALIASES = {"ts": "t", "confidence": "class_confidence"}
_REQUIRED = ("t", "x", "y", "w", "h", "class_id")


def as_bbox_array(raw: np.ndarray, path=None) -> np.ndarray:
    """Copy a structured array with either spelling into ``BBOX_DTYPE``, checked on the way
    (``events.validation.label_columns``: NaN/inf, fractional or negative ids and times refused).

    ``track_id`` defaults to 0 and ``class_confidence`` to 1 when the source lacks them."""
    if raw.dtype.names is None:
        raise LabelFileError(path, f"box labels must be a structured array, got dtype {raw.dtype}")
    names = {_ALIASES.get(n, n): n for n in raw.dtype.names}
    missing = [f for f in _REQUIRED if f not in names]
    if missing:
        raise LabelFileError(path, f"box labels lack field(s) {missing}; fields present: {list(raw.dtype.names)}")
    if raw.dtype == BBOX_DTYPE and raw.ndim == 1:
        label_columns(raw, {f: f for f in ("t", "x", "y", "w", "h", "class_confidence")}, path)  # what can be bad
        return raw.copy()
    out = np.zeros(raw.shape[0] if raw.ndim else 0, dtype=BBOX_DTYPE)
    out["class_confidence"] = 1.0
    known = {field: source for field, source in names.items() if field in BBOX_DTYPE.names}
    for field, column in label_columns(raw, known, path).items():
        out[field] = column
    return out


def load_labels(path: str | os.PathLike) -> np.ndarray:
    """Read ``*_bbox.npy`` into ``BBOX_DTYPE`` (accepts ``ts``/``confidence`` as well). Bad values
    are refused, boxes with a negative size dropped and counted (``events.validation``)."""
    path = os.fspath(path)
    try:
        raw = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # NumPy raises several types for damaged files
        raise LabelFileError(path, f"cannot read box labels ({type(exc).__name__}: {exc})") from exc
    labels = as_bbox_array(np.atleast_1d(raw), path)
    if len(labels) > 1:
        back = np.flatnonzero(labels["t"][1:] < labels["t"][:-1])
        if back.size:
            i = int(back[0]) + 1
            raise LabelFileError(
                path,
                f"box label times are not sorted ({int(labels['t'][i - 1])} before {int(labels['t'][i])} µs)",
                "t",
                i,
            )
    return drop_negative_boxes(labels, path)


def save_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write labels as ``*_bbox.npy`` in ``BBOX_DTYPE``."""
    np.save(os.fspath(path), as_bbox_array(np.asarray(labels), path))


def clip_to_sensor(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip boxes to the sensor rectangle (a copy); boxes fully outside end with zero area."""
    out = labels.copy()
    x0 = np.clip(labels["x"], 0, width)
    y0 = np.clip(labels["y"], 0, height)
    x1 = np.clip(labels["x"] + labels["w"], 0, width)
    y1 = np.clip(labels["y"] + labels["h"], 0, height)
    out["x"], out["y"], out["w"], out["h"] = x0, y0, x1 - x0, y1 - y0
    return out


def filter_labels(
    labels: np.ndarray,
    width: int,
    height: int,
    min_side: float = 0.0,
    min_diag: float = 0.0,
    max_width_fraction: float | None = None,
) -> np.ndarray:
    """The label filter applied before training and evaluation (docs/architecture.md, "Label
    filter"): clip to the sensor, drop zero-area boxes, boxes with a side below ``min_side`` or a
    diagonal below ``min_diag``, and (train split) boxes wider than ``max_width_fraction * width``."""
    clipped = clip_to_sensor(labels, width, height)
    w, h = clipped["w"], clipped["h"]
    keep = (w > 0) & (h > 0)
    keep &= (w >= min_side) & (h >= min_side)
    keep &= np.sqrt(w.astype(np.float64) ** 2 + h.astype(np.float64) ** 2) >= min_diag
    if max_width_fraction is not None:
        keep &= w <= max_width_fraction * width
    return clipped[keep]
