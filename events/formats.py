"""Which reader a file needs, decided by its content (magic bytes, the ``%`` header) with the
file extension only as a tie-breaker, plus the one-call ``read_events`` and the ``describe``
summary behind ``evcmae-info``.
"""

from __future__ import annotations

import os

import numpy as np

from .container import Events
from .dat import header_fields, read_dat, read_percent_header
from .errors import EventFileError
from .evt2 import read_evt2
from .evt3 import read_evt3
from .h5 import H5EventFile
from .labels import load_labels

FORMATS = ("h5", "dat", "evt2", "evt3", "aedat4", "bbox_npy")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_NPY_MAGIC = b"\x93NUMPY"
# Rows per chunk when ``describe`` walks an HDF5 recording, so memory stays bounded.
_DESCRIBE_CHUNK = 1 << 22


def _raw_kind(path, ext: str) -> str:
    """Format of a file that starts with a ``%`` header."""
    with open(path, "rb") as f:
        lines, offset = read_percent_header(f, path)
        after = f.read(2)
    fields = header_fields(lines)
    evt = fields.get("evt", "")
    fmt = fields.get("format", "").split(";")[0].strip().upper()
    if evt or fmt:
        if evt in ("2.0", "2") or fmt == "EVT2":
            return "evt2"
        if evt in ("3.0", "3") or fmt == "EVT3":
            return "evt3"
        raise EventFileError(
            path, f"Prophesee RAW encoding {fmt or 'EVT ' + evt} is not supported (only EVT 2.0 and EVT 3.0)"
        )
    # No encoding named: a DAT file (its header never names one) if the type/size bytes fit.
    if ext == ".dat" or (len(after) == 2 and after[1] == 8):
        return "dat"
    raise EventFileError(
        path,
        "'%' header names no event encoding (no '% evt' or '% format' line) "
        "and the data does not look like DAT records",
    )


def _is_box_npy(path) -> bool:
    try:
        dtype = np.load(path, mmap_mode="r", allow_pickle=False).dtype  # reads only the header
    except Exception:  # NumPy raises several types for damaged headers
        return False
    names = set(dtype.names or ())
    return bool(names & {"t", "ts"}) and {"x", "y", "w", "h", "class_id"} <= names


def detect_format(path) -> str:
    """One of ``FORMATS`` for ``path``; ``EventFileError`` if it is empty or of no known format."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise EventFileError(path, "is a folder, not a file")
    size = os.path.getsize(path)  # FileNotFoundError for a missing file
    if size == 0:
        raise EventFileError(path, "empty file (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(4096)
    ext = os.path.splitext(path)[1].lower()
    # HDF5 allows a user block, which moves the signature to 512, 1024, 2048, ... bytes.
    for at in (0, 512, 1024, 2048):
        if head[at : at + 8] == _HDF5_MAGIC:
            return "h5"
    if head.startswith(b"#!AER-DAT4"):
        return "aedat4"
    if head.startswith(b"#!AER-DAT"):
        version = head[9:12].decode("ascii", "replace")
        raise EventFileError(path, f"AEDAT {version} is not supported (only AEDAT 4.0)")
    if head.startswith(_NPY_MAGIC):
        if _is_box_npy(path):
            return "bbox_npy"
        raise EventFileError(path, "a NumPy .npy file, but not a structured array of box labels")
    if head.startswith(b"%"):
        return _raw_kind(path, ext)
    known_ext = (".h5", ".hdf5", ".raw", ".dat", ".aedat4", ".npy")
    hint = f" (the extension {ext!r} says otherwise)" if ext in known_ext else ""
    raise EventFileError(
        path, f"unknown file format: first bytes {head[:8]!r} match none of {', '.join(FORMATS)}{hint}"
    )


def _reader(fmt: str):
    if fmt == "aedat4":
        from .aedat import read_aedat4  # needs the optional 'aedat' package

        return read_aedat4
    return {"dat": read_dat, "evt2": read_evt2, "evt3": read_evt3}[fmt]


def _check_box_file(path, fmt: str) -> None:
    if fmt == "bbox_npy":
        raise EventFileError(path, "is a box label file (*_bbox.npy), not an event recording")


def read_events(
    path,
    t_start_us: int | None = None,
    t_end_us: int | None = None,
    on_unsorted: str = "error",
    width: int | None = None,
    height: int | None = None,
    truncated: str = "error",
) -> Events:
    """Events of any supported recording with ``t_start_us <= t < t_end_us`` (either bound may be
    None). HDF5 files read only the window; the others are decoded whole and then sliced.
    ``truncated`` applies to the formats that can tell (DAT, EVT 2.0/3.0, AEDAT4)."""
    path = os.fspath(path)
    fmt = detect_format(path)
    _check_box_file(path, fmt)
    lo = -np.inf if t_start_us is None else t_start_us
    hi = np.inf if t_end_us is None else t_end_us
    if fmt == "h5":
        with H5EventFile(path, on_unsorted=on_unsorted, width=width, height=height) as f:
            start = 0 if t_start_us is None else f.index_of_time(t_start_us)
            stop = len(f) if t_end_us is None else f.index_of_time(t_end_us)
            return f.read(start, stop)
    events = _reader(fmt)(path, on_unsorted=on_unsorted, width=width, height=height, truncated=truncated)
    if t_start_us is None and t_end_us is None:
        return events
    if events.is_sorted():
        first, last = np.searchsorted(events.t, [lo, hi], side="left")
        return events[first:last]
    return events[(events.t >= lo) & (events.t < hi)]


def _summarize(chunks, fmt: str, path: str) -> dict:
    """``Events.summary`` over a sequence of chunks, plus whether time never decreases."""
    n = n_on = dropped_range = dropped_time = 0
    lo = {k: None for k in "txy"}
    hi = {k: None for k in "txy"}
    ordered, last_t = True, None
    width = height = None
    for ev in chunks:
        width, height = ev.width, ev.height
        dropped_range += ev.dropped_out_of_range
        dropped_time += ev.dropped_no_time
        if not len(ev):
            continue
        n += len(ev)
        n_on += int(np.count_nonzero(ev.p))
        for k in "txy":
            col = getattr(ev, k)
            lo[k] = int(col.min()) if lo[k] is None else min(lo[k], int(col.min()))
            hi[k] = int(col.max()) if hi[k] is None else max(hi[k], int(col.max()))
        ordered &= ev.is_sorted() and (last_t is None or int(ev.t[0]) >= last_t)
        last_t = int(ev.t[-1])
    return {
        "file": path,
        "format": fmt,
        "events": n,
        "t_min_us": lo["t"],
        "t_max_us": hi["t"],
        "x_min": lo["x"],
        "x_max": hi["x"],
        "y_min": lo["y"],
        "y_max": hi["y"],
        "width": width,
        "height": height,
        "on_fraction": n_on / n if n else None,
        "time_sorted": ordered,
        "dropped_out_of_range": dropped_range,
        "dropped_no_time": dropped_time,
    }


def _h5_chunks(path):
    with H5EventFile(path, on_unsorted="ignore") as f:
        if len(f) == 0:
            yield f.read(0, 0)
        for start in range(0, len(f), _DESCRIBE_CHUNK):
            yield f.read(start, start + _DESCRIBE_CHUNK)


def _describe_labels(path) -> dict:
    labels = load_labels(path)
    ids, counts = np.unique(labels["class_id"], return_counts=True)
    return {
        "file": path,
        "format": "bbox_npy",
        "boxes": len(labels),
        "t_min_us": int(labels["t"].min()) if len(labels) else None,
        "t_max_us": int(labels["t"].max()) if len(labels) else None,
        "label_frames": int(np.unique(labels["t"]).size),
        "class_counts": {str(int(i)): int(c) for i, c in zip(ids, counts)},
    }


def describe(path) -> dict:
    """What ``evcmae-info`` reports: format, counts, ranges, sensor size (None if unknown), ON
    fraction, whether time is sorted, and dropped-event counters; for a ``*_bbox.npy`` file the
    number of boxes, time range, label frames and boxes per class. Unsorted recordings are
    described (``time_sorted: false``), not refused."""
    path = os.fspath(path)
    fmt = detect_format(path)
    if fmt == "bbox_npy":
        return _describe_labels(path)
    if fmt == "h5":
        return _summarize(_h5_chunks(path), fmt, path)
    return _summarize([_reader(fmt)(path, on_unsorted="ignore")], fmt, path)
