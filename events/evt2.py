"""Prophesee RAW files in EVT 2.0: a ``%`` header, then little-endian 32-bit words whose top four
bits give the type. CD words (0x0 OFF, 0x1 ON) carry x, y and the low 6 bits of the time;
TIME_HIGH words (0x8) carry bits 6-33. Decoding is column-wise NumPy: each CD word takes the
time base of the latest TIME_HIGH before it, found with a running count.
"""

from __future__ import annotations

import warnings

import numpy as np

from .container import Events
from .dat import read_raw
from .errors import EventFileError

CD_OFF, CD_ON, TIME_HIGH, EXT_TRIGGER, OTHERS, CONTINUED = 0x0, 0x1, 0x8, 0xA, 0xE, 0xF
_KNOWN_TYPES = (CD_OFF, CD_ON, TIME_HIGH, EXT_TRIGGER, OTHERS, CONTINUED)
_TH_BITS = 28
# Words of undefined type beyond this fraction mean the data is not EVT 2.0 at all; a few are
# tolerated (skipped with a warning) as transmission glitches.
MAX_UNKNOWN_FRACTION = 0.01


def check_word_types(types: np.ndarray, known, path, fmt: str) -> None:
    """Refuse streams with many words of undefined type; warn about a few."""
    # One comparison per undefined type is several times faster than np.isin on long streams.
    unknown = [u for u in range(16) if u not in known]
    n_bad = sum(int(np.count_nonzero(types == u)) for u in unknown)
    if not n_bad:
        return
    first = int(np.argmax(np.isin(types, unknown)))
    message = (
        f"{n_bad} of {types.size} words have a type undefined in {fmt} "
        f"(first: word {first}, type 0x{int(types[first]):x})"
    )
    if n_bad > MAX_UNKNOWN_FRACTION * types.size:
        raise EventFileError(path, f"{message}: not a {fmt} stream, or corrupt")
    warnings.warn(f"{path}: {message}; those words are skipped", stacklevel=3)


def unwrap_counter(values: np.ndarray, bits: int) -> np.ndarray:
    """Extend a ``bits``-wide counter to int64, counting a wrap wherever it goes down by at least
    half its range. Smaller backward steps are left as they are, so a glitch shows up as a time
    decrease (which ``check_stream`` reports) rather than a jump of a whole counter period."""
    values = values.astype(np.int64)
    if values.size < 2:
        return values
    wrapped = (values[:-1] - values[1:]) >= (1 << (bits - 1))
    loops = np.concatenate(([0], np.cumsum(wrapped, dtype=np.int64)))
    return values + (loops << bits)


def decode_evt2(words: np.ndarray, width: int | None = None, height: int | None = None, path=None) -> Events:
    """CD events of an EVT 2.0 word stream, in stream order (not yet range- or order-checked).

    CD words before the first TIME_HIGH have no valid time: they are dropped and counted in
    ``dropped_no_time``."""
    words = np.asarray(words, dtype=np.uint32)
    types = (words >> 28).astype(np.uint8)
    check_word_types(types, _KNOWN_TYPES, path, "EVT 2.0")
    is_th = types == TIME_HIGH
    # Rank of the latest TIME_HIGH at or before each word among all TIME_HIGH words: a running
    # count forward-fills the time base without a Python loop (-1 before the first one).
    rank = np.cumsum(is_th, dtype=np.int64) - 1
    cd = np.flatnonzero(types <= CD_ON)
    rank = rank[cd]
    timed = rank >= 0
    n_untimed = int(cd.size - np.count_nonzero(timed))
    cd, rank = cd[timed], rank[timed]
    # The 28-bit TIME_HIGH counter is unwrapped across the TIME_HIGH words themselves.
    base = unwrap_counter(words[is_th] & ((1 << _TH_BITS) - 1), _TH_BITS) << 6
    w = words[cd]
    return Events(
        x=(w >> 11) & 0x7FF,
        y=w & 0x7FF,
        t=base[rank] | ((w >> 22) & 0x3F).astype(np.int64),
        p=types[cd],
        width=width,
        height=height,
        dropped_no_time=n_untimed,
    )


def read_evt2(
    path, on_unsorted: str = "error", width: int | None = None, height: int | None = None, truncated: str = "error"
) -> Events:
    """A whole EVT 2.0 RAW file. ``width``/``height`` override the header's geometry."""
    return read_raw(
        path,
        decode_evt2,
        "<u4",
        "EVT 2.0 data",
        "before the first TIME_HIGH word (no valid time)",
        on_unsorted,
        width,
        height,
        truncated,
    )
