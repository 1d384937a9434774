"""Checks of one column of raw event values, each on its own: integer values without a silent cast,
and polarity in its accepted spellings. ``Events`` converts its columns with these, and the
readers' checks (``events.validation``) build on them; they need neither, so neither cycle back.
"""

from __future__ import annotations

import numpy as np

from .errors import EventFileError


def first_true(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def integer_values(values, field: str, path=None, row0: int = 0, dtype=np.int64, error=EventFileError) -> np.ndarray:
    """``values`` as ``dtype``, refusing NaN/inf, fractions and values ``dtype`` cannot hold (a
    cast would turn them into other numbers without a word)."""
    a = np.asarray(values)
    dtype = np.dtype(dtype)
    if a.dtype == dtype:
        return a
    if a.dtype == np.bool_:
        return a.astype(dtype)
    info = np.iinfo(dtype)
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        if not finite.all():
            i = first_true(~finite)
            raise error(path, f"not a number ({a[i]})", field, row0 + i)
        whole = a == np.floor(a)
        if not whole.all():
            i = first_true(~whole)
            hint = " (timestamps are integer microseconds: seconds?)" if field in ("t", "ts") else ""
            raise error(path, f"fractional value {a[i]!r} where an integer is expected{hint}", field, row0 + i)
        outside = (a < info.min) | (a >= float(info.max) + 1)
    elif a.dtype.kind in "iu":
        outside = (a < info.min) | (a > info.max) if a.size else np.zeros(0, bool)
    else:
        raise error(path, f"values of type {a.dtype}, expected integers", field)
    if outside.any():
        i = first_true(outside)
        raise error(path, f"value {a[i]} outside the {dtype} range [{info.min}, {info.max}]", field, row0 + i)
    return a.astype(dtype)


def polarity(p, path=None, row0: int = 0) -> np.ndarray:
    """Polarity given as 0/1, -1/1 or booleans as uint8 0/1; anything else is refused."""
    p = np.asarray(p)
    if p.dtype == np.bool_ or p.size == 0:
        return p.astype(np.uint8)
    if p.dtype.kind == "f":
        p = integer_values(p, "p", path, row0, np.int64)
    elif p.dtype.kind not in "iu":
        raise EventFileError(path, f"values of type {p.dtype}, expected 0/1 or -1/1", "p")
    lo, hi = int(p.min()), int(p.max())
    if lo >= 0 and hi <= 1:
        return p.astype(np.uint8)
    if lo >= -1 and hi <= 1 and not np.any(p == 0):
        return (p > 0).astype(np.uint8)
    bad = (p < -1) | (p > 1) if (lo < -1 or hi > 1) else (p == 0)  # else: -1 and 0 mixed
    i = first_true(bad)
    raise EventFileError(
        path,
        f"polarity values must be 0/1 or -1/1, found range [{lo}, {hi}] (first odd value {int(p[i])})",
        "p",
        row0 + i,
    )
