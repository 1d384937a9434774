"""Any readable recording opened for time-window reads: the one interface preprocessing and
``evcmae-detect`` stream through, whatever the format.

HDF5 (Gen4 / eTraM) files are read window by window (``H5EventFile``: a binary search on ``t``,
never the whole file). DAT, RAW EVT 2.0 / 3.0 and AEDAT4 carry no time index and RAW words must be
decoded in order, so those are decoded once, whole, and then served from memory; a one-minute Gen1
DAT file is a few hundred MB that way.

Also: the file naming of event datasets (:func:`recording_stem`), shared by every tool that pairs a
recording with its ``NAME_bbox.npy``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .container import Events
from .errors import EventFileError
from .formats import detect_format, read_events
from .h5 import H5EventFile

# Suffixes of event recordings in dataset folders, most preferred first when a stem has several:
# Gen4 / eTraM ``NAME_td.h5``, Gen1 ``NAME_td.dat``, Metavision ``NAME.raw``, ...
RECORDING_SUFFIXES = ("_td.h5", "_td.dat", "_td.raw", ".raw", ".dat", "_td.aedat4", ".aedat4", ".h5")


def recording_stem(path) -> str | None:
    """The recording name a file's labels use (``NAME`` of ``NAME_bbox.npy``), or None when the
    file name is not that of an event recording."""
    name = Path(path).name
    if name.endswith("_bbox.npy"):
        return None
    for suffix in RECORDING_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


class InMemoryRecording:
    """A decoded recording with ``H5EventFile``'s read interface (``read_time_window``,
    ``t_range``, ``width``/``height``, ``path``, ``on_unsorted``)."""

    def __init__(self, events: Events, path, on_unsorted: str = "error"):
        if not events.is_sorted():
            events = events[np.argsort(events.t, kind="stable")]  # only reached with on_unsorted="sort"
        self.events, self.path, self.on_unsorted = events, os.fspath(path), on_unsorted
        self.width, self.height = events.width, events.height

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.events = Events.empty(self.width, self.height)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def t_range(self) -> tuple[int, int] | None:
        t = self.events.t
        return None if len(t) == 0 else (int(t[0]), int(t[-1]))

    @property
    def dropped_out_of_range(self) -> int:
        return self.events.dropped_out_of_range

    def read_time_window(self, t_start_us: int, t_end_us: int) -> Events:
        """Events with ``t_start_us <= t < t_end_us``."""
        lo, hi = np.searchsorted(self.events.t, [t_start_us, t_end_us], side="left")
        window = self.events[int(lo) : int(hi)]
        window.dropped_out_of_range = 0  # counted once, for the whole file (``dropped_out_of_range``)
        return window


def open_recording(
    path, width: int | None = None, height: int | None = None, on_unsorted: str = "error"
) -> H5EventFile | InMemoryRecording:
    """Open any supported recording; ``width``/``height`` supply (or override) the sensor size.

    Raises ``EventFileError`` naming the file when it is of no known format or damaged."""
    path = os.fspath(path)
    fmt = detect_format(path)
    if fmt == "bbox_npy":
        raise EventFileError(path, "is a box label file (*_bbox.npy), not an event recording")
    if fmt == "h5":
        return H5EventFile(path, on_unsorted=on_unsorted, width=width, height=height)
    events = read_events(path, on_unsorted=on_unsorted, width=width, height=height)
    return InMemoryRecording(events, path, on_unsorted)
