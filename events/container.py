"""The one in-memory form of an event stream, shared by every reader, writer and representation.

Columns are kept as separate contiguous NumPy arrays (x, y uint16; t int64 µs; p uint8 0/1) so that
slicing is cheap and ``torch.from_numpy`` shares memory without a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .columns import integer_values, polarity

DTYPES = {"x": np.uint16, "y": np.uint16, "t": np.int64, "p": np.uint8}


def _as_column(name: str, values, source) -> np.ndarray:
    """``values`` in the column's dtype. Columns already in it pass untouched (slicing, readers);
    others are converted without a silent wrong value: NaN and fractions are refused, and a
    coordinate no uint16 holds becomes 65535, outside every sensor (``events.validation``)."""
    a = np.asarray(values)
    dtype = DTYPES[name]
    if a.dtype == dtype:
        return np.ascontiguousarray(a)
    if name == "p":
        return np.ascontiguousarray(polarity(a, source))
    if name == "t":
        return np.ascontiguousarray(integer_values(a, "t", source))
    if a.dtype.kind == "f":
        a = integer_values(a, name, source)
    if a.size and a.dtype.kind in "iu" and (int(a.min()) < 0 or int(a.max()) > 65535):
        a = np.where((a < 0) | (a > 65535), 65535, a)
    return np.ascontiguousarray(a, dtype=dtype)


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
        for name in DTYPES:
            setattr(self, name, _as_column(name, getattr(self, name), self.source))
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
