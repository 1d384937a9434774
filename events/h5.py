"""Gen4 / eTraM HDF5 recordings (``NAME_td.h5``): group ``events`` with 1-D datasets x, y, p, t
and optional scalar width/height. Reads by index or by time window without loading the file."""

from __future__ import annotations

import os

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter that public Gen4/eTraM files use)
import numpy as np

from .container import Events, check_events, normalize_polarity
from .errors import EventFileError

_COLUMNS = ("x", "y", "p", "t")


def _scalar(group, name):
    if name in group:
        return int(np.asarray(group[name][()]).reshape(-1)[0])
    if name in group.attrs:
        return int(np.asarray(group.attrs[name]).reshape(-1)[0])
    return None


class H5EventFile:
    """An open Gen4/eTraM event file. Use as a context manager or call ``close``.

    ``read(start, stop)`` reads rows by index; ``read_time_window(t0, t1)`` finds the rows with
    ``t0 <= t < t1`` by binary search on the ``t`` dataset (a few dozen single-element reads), so
    a window of a multi-gigabyte recording costs only its own size.
    ``width``/``height`` override what the file says (or supply it when the file is silent)."""

    def __init__(self, path, on_unsorted: str = "error", width: int | None = None, height: int | None = None):
        self.path = os.fspath(path)
        self.on_unsorted = on_unsorted
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"{self.path}: no such file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise EventFileError(self.path, f"not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
        try:
            if "events" not in self._file:
                raise EventFileError(self.path, f"no 'events' group; top-level keys: {list(self._file.keys())}")
            group = self._file["events"]
            missing = [c for c in _COLUMNS if c not in group]
            if missing:
                raise EventFileError(self.path, f"missing dataset(s) {['events/' + m for m in missing]}")
            self._ds = {c: group[c] for c in _COLUMNS}
            lengths = {c: d.shape[0] for c, d in self._ds.items()}
            if len(set(lengths.values())) != 1:
                raise EventFileError(self.path, f"event datasets differ in length: {lengths}")
            self._n = lengths["t"]
            self.width = width if width is not None else _scalar(group, "width") or _scalar(self._file, "width")
            self.height = height if height is not None else _scalar(group, "height") or _scalar(self._file, "height")
        except Exception:
            self._file.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._file.close()

    def __len__(self) -> int:
        return self._n

    def _t_at(self, i: int) -> int:
        return int(self._ds["t"][i])

    @property
    def t_range(self) -> tuple[int, int] | None:
        return None if self._n == 0 else (self._t_at(0), self._t_at(self._n - 1))

    def index_of_time(self, t_us: int) -> int:
        """First row with ``t >= t_us`` (``len(self)`` if none); assumes sorted timestamps."""
        lo, hi = 0, self._n
        while lo < hi:
            mid = (lo + hi) // 2
            if self._t_at(mid) < t_us:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def read(self, start: int = 0, stop: int | None = None) -> Events:
        stop = self._n if stop is None else min(stop, self._n)
        start = max(0, min(start, stop))
        try:
            cols = {c: self._ds[c][start:stop] for c in _COLUMNS}
        except (OSError, RuntimeError) as exc:
            raise EventFileError(self.path, f"cannot read rows {start}:{stop} (corrupt data?): {exc}") from exc
        events = Events(
            x=cols["x"],
            y=cols["y"],
            t=cols["t"],
            p=normalize_polarity(cols["p"], self.path),
            width=self.width,
            height=self.height,
        )
        return check_events(events, self.path, self.on_unsorted)

    def read_time_window(self, t_start_us: int, t_end_us: int) -> Events:
        """Events with ``t_start_us <= t < t_end_us``."""
        return self.read(self.index_of_time(t_start_us), self.index_of_time(t_end_us))


class ProcessLocalH5:
    """An ``H5EventFile`` opened on first use, once per process: h5py handles must not cross a
    fork, so a DataLoader worker opens its own, and pickling carries only the path."""

    def __init__(self, path, **kwargs):
        self.path, self._kwargs = os.fspath(path), kwargs
        self._pid, self._file = None, None

    def get(self) -> H5EventFile:
        if self._pid != os.getpid():
            self._file, self._pid = H5EventFile(self.path, **self._kwargs), os.getpid()
        return self._file

    def __getstate__(self):
        return {"path": self.path, "_kwargs": self._kwargs, "_pid": None, "_file": None}


def read_h5(path, on_unsorted: str = "error", **kw) -> Events:
    """The whole recording."""
    with H5EventFile(path, on_unsorted=on_unsorted, **kw) as f:
        return f.read()


COMPRESSIONS = ("blosc_zstd", "gzip", "lzf", None)


def _compression_options(compression: str | None) -> dict:
    if compression == "blosc_zstd":  # what public Gen4/eTraM files use
        return dict(hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE))
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression is None:
        return {}
    raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")


def write_h5(
    path,
    events: Events,
    width: int | None = None,
    height: int | None = None,
    compression: str | None = "blosc_zstd",
    chunk_rows: int = 1 << 16,
) -> None:
    """Write events in the Gen4/eTraM layout (``events/x,y,p,t`` plus scalar width/height)."""
    opts = _compression_options(compression)
    width = events.width if width is None else width
    height = events.height if height is None else height
    chunks = (max(1, min(chunk_rows, len(events))),)
    with h5py.File(os.fspath(path), "w") as f:
        group = f.create_group("events")
        for name in _COLUMNS:
            group.create_dataset(name, data=getattr(events, name), maxshape=(None,), chunks=chunks, **opts)
        if width is not None:
            group.create_dataset("width", data=np.int64(width))
        if height is not None:
            group.create_dataset("height", data=np.int64(height))
