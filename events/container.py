"""The one in-memory form of an event stream, shared by every reader, writer and representation.

Columns are kept as separate contiguous NumPy arrays (x, y uint16; t int64 µs; p uint8 0/1) so that
slicing is cheap and ``torch.from_numpy`` shares memory without a copy.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from .errors import EventFileError

DTYPES = {"x": np.uint16, "y": np.uint16, "t": np.int64, "p": np.uint8}

# Files already warned about for out-of-range events, so a file warns once however often it is read.
_warned_out_of_range: set[str] = set()


@dataclass
class Events:
    """An event stream: parallel columns plus the sensor size when the source states it.

    ``dropped_out_of_range`` counts events the reader removed because their coordinates lay
    outside the sensor; ``dropped_no_time`` counts events a raw decoder could not time-stamp."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    width: int | None = None
    height: int | None = None
    dropped_out_of_range: int = 0
    dropped_no_time: int = 0
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name, dtype in DTYPES.items():
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))
        n = len(self.t)
        if not (len(self.x) == len(self.y) == len(self.p) == n):
            raise ValueError(
                f"event columns differ in length: x {len(self.x)}, y {len(self.y)}, t {n}, p {len(self.p)}"
            )

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, width: int | None = None, height: int | None = None) -> Events:
        return cls(*(np.empty(0, d) for d in DTYPES.values()), width=width, height=height)

    @classmethod
    def concatenate(cls, parts: list[Events]) -> Events:
        if not parts:
            return cls.empty()
        first = parts[0]
        return cls(
            *(np.concatenate([getattr(e, k) for e in parts]) for k in DTYPES),
            width=first.width,
            height=first.height,
            dropped_out_of_range=sum(e.dropped_out_of_range for e in parts),
            dropped_no_time=sum(e.dropped_no_time for e in parts),
            source=first.source,
        )

    # -- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.t)

    def __getitem__(self, index) -> Events:
        """Rows selected by a slice, boolean mask or index array; sensor size and source kept."""
        return Events(
            self.x[index],
            self.y[index],
            self.t[index],
            self.p[index],
            width=self.width,
            height=self.height,
            source=self.source,
            dropped_out_of_range=self.dropped_out_of_range,
            dropped_no_time=self.dropped_no_time,
        )

    def is_sorted(self) -> bool:
        return len(self.t) < 2 or bool(np.all(self.t[1:] >= self.t[:-1]))

    def time_window(self, t_start_us: int, t_end_us: int) -> Events:
        """Events with ``t_start_us <= t < t_end_us``; the stream must be time-sorted."""
        lo, hi = np.searchsorted(self.t, [t_start_us, t_end_us], side="left")
        return self[lo:hi]

    def summary(self) -> dict:
        """Counts and ranges, as ``evcmae-info`` reports them (ranges are None when empty)."""
        n = len(self)

        def rng(a):
            return (int(a.min()), int(a.max())) if n else (None, None)

        (t0, t1), (x0, x1), (y0, y1) = rng(self.t), rng(self.x), rng(self.y)
        return {
            "events": n,
            "t_min_us": t0,
            "t_max_us": t1,
            "x_min": x0,
            "x_max": x1,
            "y_min": y0,
            "y_max": y1,
            "width": self.width,
            "height": self.height,
            "on_fraction": float(np.count_nonzero(self.p)) / n if n else None,
            "dropped_out_of_range": self.dropped_out_of_range,
            "dropped_no_time": self.dropped_no_time,
        }


def normalize_polarity(p: np.ndarray, path=None) -> np.ndarray:
    """Map polarity given as 0/1, -1/1 or booleans to uint8 0/1; anything else is an error."""
    p = np.asarray(p)
    if p.dtype == np.bool_:
        return p.astype(np.uint8)
    if p.size == 0:
        return p.astype(np.uint8)
    lo, hi = int(p.min()), int(p.max())
    if lo >= 0 and hi <= 1:
        return p.astype(np.uint8)
    if lo >= -1 and hi <= 1 and not np.any(p == 0):
        return (p > 0).astype(np.uint8)
    raise EventFileError(path, f"polarity values must be 0/1 or -1/1, found range [{lo}, {hi}]")


def check_events(events: Events, path=None, on_unsorted: str = "error") -> Events:
    """Enforce the invariants every reader promises, naming ``path`` in any complaint.

    * events outside ``width`` x ``height`` (when known) are dropped and counted, with one warning
      per file;
    * timestamps must be non-decreasing: ``on_unsorted="error"`` (default) refuses the file,
      ``"sort"`` sorts stably with a warning, ``"ignore"`` leaves the order as it is.
    """
    if on_unsorted not in ("error", "sort", "ignore"):
        raise ValueError(f"on_unsorted must be 'error', 'sort' or 'ignore', not {on_unsorted!r}")
    name = None if path is None else os.fspath(path)
    ev = events
    if ev.width is not None and ev.height is not None and len(ev):
        inside = (ev.x < ev.width) & (ev.y < ev.height)
        n_out = len(ev) - int(np.count_nonzero(inside))
        if n_out:
            if name not in _warned_out_of_range:
                _warned_out_of_range.add(name)
                warnings.warn(
                    f"{name}: dropped {n_out} of {len(ev)} events outside the "
                    f"{ev.width}x{ev.height} sensor (e.g. x={int(ev.x[~inside][0])}, "
                    f"y={int(ev.y[~inside][0])})",
                    stacklevel=2,
                )
            ev = ev[inside]
            ev.dropped_out_of_range += n_out
    if on_unsorted != "ignore" and len(ev) > 1:
        back = np.flatnonzero(ev.t[1:] < ev.t[:-1])
        if back.size:
            i = int(back[0])
            if on_unsorted == "error":
                raise EventFileError(
                    name,
                    f"timestamps decrease at event {i + 1} ({int(ev.t[i])} -> {int(ev.t[i + 1])} µs; "
                    f"{back.size} decreases in all); pass on_unsorted='sort' to sort them",
                )
            warnings.warn(f"{name}: {back.size} timestamp decreases; events sorted by time", stacklevel=2)
            ev = ev[np.argsort(ev.t, kind="stable")]
    ev.source = name if name is not None else ev.source
    return ev
