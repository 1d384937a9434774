"""Gen4 / eTraM HDF5 recordings (``NAME_td.h5``): group ``events`` with 1-D datasets x, y, p, t
and optional scalar width/height. Reads by index or by time window without loading the file.

A time-window read finds its rows by binary search, which is only right if time never goes back
anywhere in the file; so before the first such read the whole ``t`` dataset is checked once, in
chunks (one comparison pass, remembered per file and process). A file read whole is checked by
that read instead."""

from __future__ import annotations

import os
import warnings

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter that public Gen4/eTraM files use)
import numpy as np

from .container import Events
from .errors import EventFileError
from .validation import (
    check_on_unsorted,
    check_stream,
    event_columns,
    first_decrease,
    integer_values,
    unsorted_error,
)

_COLUMNS = ("x", "y", "p", "t")
# Rows per read when checking the time order of a whole file (32 MiB of int64).
_ORDER_CHUNK = 1 << 22
# Order checks done in this process, by (path, size, mtime): None if in order, else the problem.
_order_checked: dict[tuple, tuple | None] = {}


def _scalar(group, name, path):
    """A stated sensor dimension (dataset or attribute), None when the file does not state it."""
    if name in group:
        value = group[name][()]
    elif name in group.attrs:
        value = group.attrs[name]
    else:
        return None
    value = np.asarray(value).reshape(-1)
    if value.size != 1 or value.dtype.kind not in "iuf" or not np.isfinite(value[0]) or value[0] != int(value[0]):
        raise EventFileError(path, f"sensor size is not an integer: {value.tolist()}", name)
    if int(value[0]) <= 0:
        raise EventFileError(path, f"sensor size must be positive, is {int(value[0])}", name)
    return int(value[0])


class H5EventFile:
    """An open Gen4/eTraM event file. Use as a context manager or call ``close``.

    ``read(start, stop)`` reads rows by index; ``read_time_window(t0, t1)`` finds the rows with
    ``t0 <= t < t1`` by binary search on the ``t`` dataset (a few dozen single-element reads), so
    a window of a multi-gigabyte recording costs only its own size.
    ``width``/``height`` override what the file says (or supply it when the file is silent)."""

    def __init__(self, path, on_unsorted: str = "error", width: int | None = None, height: int | None = None):
        self.path = os.fspath(path)
        check_on_unsorted(on_unsorted)
        self.on_unsorted = on_unsorted
        self._ordered = on_unsorted == "ignore"  # nothing to check then
        self._memory: Events | None = None  # the whole file, sorted (on_unsorted="sort" on an unsorted file)
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
            for name, given in (("width", width), ("height", height)):
                stated = _scalar(group, name, self.path)
                stated = stated if stated is not None else _scalar(self._file, name, self.path)
                setattr(self, name, given if given is not None else stated)
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
        if self._memory is not None:
            return int(self._memory.t[i])
        return int(integer_values(self._ds["t"][i : i + 1], "t", self.path, i)[0])

    def _order_key(self) -> tuple:
        st = os.stat(self.path)
        return self.path, st.st_size, st.st_mtime_ns

    def _find_decrease(self) -> tuple | None:
        """(row, t before, t after, number of decreases) of the first place time goes back, or None."""
        ds, first, count, last = self._ds["t"], None, 0, None
        for start in range(0, self._n, _ORDER_CHUNK):
            t = integer_values(ds[start : start + _ORDER_CHUNK], "t", self.path, start)
            if last is not None and len(t) and t[0] < last:
                count += 1
                first = first or (start, last, int(t[0]))
            back = np.flatnonzero(t[1:] < t[:-1])
            if back.size:
                count += int(back.size)
                i = int(back[0])
                first = first or (start + i + 1, int(t[i]), int(t[i + 1]))
            last = int(t[-1]) if len(t) else last
        return None if first is None else (*first, count)

    def _ensure_ordered(self) -> None:
        """Check the time order of the whole file once; refuse it, or (``on_unsorted="sort"``)
        hold it in memory sorted, if time goes back anywhere."""
        if self._ordered:
            return
        key = self._order_key()
        if key not in _order_checked:
            _order_checked[key] = self._find_decrease()
        if _order_checked[key] is not None:
            self._refuse_or_sort(_order_checked[key], lambda: self._read_columns(0, self._n))
        self._ordered = True

    def _refuse_or_sort(self, problem: tuple, read_whole) -> None:
        row, before, after, count = problem
        if self.on_unsorted == "error":
            raise unsorted_error(self.path, before, after, row, count)
        whole = read_whole()
        warnings.warn(f"{self.path}: {count} timestamp decreases; events sorted by time (in memory)", stacklevel=4)
        self._memory = whole[np.argsort(whole.t, kind="stable")]
        self._n = len(self._memory)

    @property
    def t_range(self) -> tuple[int, int] | None:
        self._ensure_ordered()
        return None if self._n == 0 else (self._t_at(0), self._t_at(self._n - 1))

    def index_of_time(self, t_us: int) -> int:
        """First row with ``t >= t_us`` (``len(self)`` if none)."""
        self._ensure_ordered()
        if self._memory is not None:
            return int(np.searchsorted(self._memory.t, t_us, side="left"))
        lo, hi = 0, self._n
        while lo < hi:
            mid = (lo + hi) // 2
            if self._t_at(mid) < t_us:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _read_columns(self, start: int, stop: int) -> Events:
        try:
            cols = {c: self._ds[c][start:stop] for c in _COLUMNS}
        except (OSError, RuntimeError) as exc:
            raise EventFileError(self.path, f"cannot read rows {start}:{stop} (corrupt data?): {exc}") from exc
        return event_columns(
            cols["x"], cols["y"], cols["t"], cols["p"], self.path, start, width=self.width, height=self.height
        )

    def read(self, start: int = 0, stop: int | None = None) -> Events:
        """Rows ``start:stop``: checked (``events.validation``), outside-sensor events dropped."""
        stop = self._n if stop is None else min(stop, self._n)
        start = max(0, min(start, stop))
        if start == 0 and stop == self._n and not self._ordered:
            # Read whole: the order is checked on what was read, not by a second pass.
            whole = self._read_columns(start, stop)
            i, count = first_decrease(whole.t)
            problem = None if not count else (i + 1, int(whole.t[i]), int(whole.t[i + 1]), count)
            _order_checked[self._order_key()] = problem
            if problem is None:
                self._ordered = True
                return check_stream(whole, self.path, "ignore")
            self._refuse_or_sort(problem, lambda: whole)
            self._ordered = True
        self._ensure_ordered()
        if self._memory is not None:
            part = self._memory[start:stop]
            part.width, part.height = self.width, self.height
            return check_stream(part, self.path, "ignore")
        return check_stream(self._read_columns(start, stop), self.path, "ignore")

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
