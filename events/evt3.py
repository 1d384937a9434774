"""Prophesee RAW files in EVT 3.0: a ``%`` header, then little-endian 16-bit words whose top four
bits give the type. Most words set decoder state (row, time low/high, vector base x and
polarity); ADDR_X words emit one event and VECT_12 / VECT_8 words emit one event per set bit.

Both directions are column-wise NumPy. The decoder forward-fills each piece of state with a
running count of the words that set it (the count, minus one, is the index of the latest such
word), then expands every event word into (base x, bit mask) rows and reads the set bits off a
lookup table. The encoder works on runs of events instead of words.
"""

from __future__ import annotations

import datetime
import os

import numpy as np

from .container import Events
from .dat import read_raw
from .evt2 import check_word_types, unwrap_counter

ADDR_Y, EM_Y, ADDR_X, VECT_BASE_X, VECT_12, VECT_8 = 0x0, 0x1, 0x2, 0x3, 0x4, 0x5
TIME_LOW, CONTINUED_4, TIME_HIGH, EXT_TRIGGER, OTHERS, CONTINUED_12 = 0x6, 0x7, 0x8, 0xA, 0xE, 0xF
_KNOWN_TYPES = (
    ADDR_Y,
    EM_Y,
    ADDR_X,
    VECT_BASE_X,
    VECT_12,
    VECT_8,
    TIME_LOW,
    CONTINUED_4,
    TIME_HIGH,
    EXT_TRIGGER,
    OTHERS,
    CONTINUED_12,
)

# For every 12-bit mask m: how many pixels it covers, and which (in increasing x), so a vector
# word expands by table look-up rather than by testing 12 bits of every word.
_BITS = ((np.arange(4096)[:, None] >> np.arange(12)) & 1).astype(bool)
_POPCOUNT = _BITS.sum(axis=1).astype(np.int64)
_LANES = np.zeros((4096, 12), np.uint16)
for _m in range(4096):
    _LANES[_m, : _POPCOUNT[_m]] = np.flatnonzero(_BITS[_m])
del _m

# Largest step between consecutive TIME_HIGH values the encoder writes (it inserts intermediate
# TIME_HIGH words across longer gaps). Far below half the 12-bit range, so the decoder's wrap
# rule is unambiguous, and below the ~10-step loop threshold other decoders use.
TH_MAX_STEP = 8


def _take(values: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """``values[rank]`` with rank -1 (no such word yet) mapped to a placeholder the caller drops."""
    if values.size == 0:
        return np.zeros(rank.shape, values.dtype)
    return values[np.maximum(rank, 0)]


def _running_rank(mask: np.ndarray) -> np.ndarray:
    """For every word, the index among ``mask``'s words of the latest one at or before it (-1 if
    none yet): the forward fill of that state."""
    rank = np.cumsum(mask, dtype=np.int32 if mask.size < 2**31 else np.int64)
    rank -= 1
    return rank


def decode_evt3(words: np.ndarray, width: int | None = None, height: int | None = None, path=None) -> Events:
    """CD events of an EVT 3.0 word stream, in stream order (not yet range- or order-checked).

    Time is the latest TIME_HIGH << 12 plus the latest TIME_LOW if one came after that TIME_HIGH
    (0 otherwise, as Prophesee's reference decoder does), with the 24-bit counter unwrapped
    wherever TIME_HIGH goes down by at least half its range (smaller backward steps are glitches,
    left for ``check_stream`` to report). There is no separate TIME_LOW overflow count, so it
    cannot drift. Event words that come before the stream has set a TIME_HIGH, a row (ADDR_Y)
    or, for vectors, a base x are dropped and counted in ``dropped_no_time``. Events under an
    EM_Y row (exposure measurement, ATIS) are not CD events and are skipped."""
    words = np.asarray(words)
    if words.dtype != np.uint16:
        words = words.astype(np.uint16)
    types = (words >> 12).astype(np.uint8)
    check_word_types(types, _KNOWN_TYPES, path, "EVT 3.0")
    payload = words & np.uint16(0x0FFF)

    is_row = types <= EM_Y
    is_base = types == VECT_BASE_X
    is_th = types == TIME_HIGH
    is_time = is_th | (types == TIME_LOW)
    is_vec = (types == VECT_12) | (types == VECT_8)
    ev = np.flatnonzero(is_vec | (types == ADDR_X))

    row_rank = _running_rank(is_row)[ev]
    time_rank = _running_rank(is_time)[ev]
    th_rank = _running_rank(is_th)[ev]
    base_rank = _running_rank(is_base)[ev]
    ev_types = types[ev]
    ev_vec = ev_types != ADDR_X

    # Every event word becomes (start x, mask, polarity): ADDR_X is a one-bit vector at its own x;
    # a vector starts at its VECT_BASE_X plus the 12s and 8s of the vectors since that base.
    ev_pay = payload[ev]
    mask = np.where(ev_vec, ev_pay, np.uint16(1))
    mask[ev_types == VECT_8] &= np.uint16(0xFF)
    base_words = payload[is_base]
    step = np.where(ev_types == VECT_12, 12, np.where(ev_types == VECT_8, 8, 0)).astype(np.int32)
    advance = np.cumsum(step, dtype=np.int64) - step  # sum of steps of earlier event words
    # A vector's offset from its base: steps since the first event word under that base.
    first = np.flatnonzero(np.diff(base_rank, prepend=-2))
    group_start = np.repeat(advance[first], np.diff(np.append(first, ev.size)))
    base_word = _take(base_words, base_rank)
    base_x = base_word & np.uint16(0x7FF)
    x0 = np.where(ev_vec, base_x + (advance - group_start).astype(np.uint16), ev_pay & np.uint16(0x7FF))
    pol = np.where(ev_vec, base_word >> 11, ev_pay >> 11).astype(np.uint8)

    row_word = _take(words[is_row], row_rank)
    placed = (row_rank >= 0) & (th_rank >= 0) & ((base_rank >= 0) | ~ev_vec)
    is_em = (row_rank >= 0) & ((row_word >> 12) == EM_Y)
    keep = placed & ~is_em
    n_unplaced = int(_POPCOUNT[mask[~placed & ~is_em]].sum())

    time_high = unwrap_counter(payload[is_th], 24 - 12)
    # The latest time word decides the low bits: a TIME_LOW gives its value, a TIME_HIGH 0.
    time_word = words[is_time][time_rank[keep]]
    low = np.where((time_word >> 12) == TIME_LOW, time_word & np.uint16(0xFFF), np.uint16(0))
    t_word = (time_high[th_rank[keep]] << 12) | low.astype(np.int64)

    # One output event per set bit: repeat each word's columns by its bit count, then add the
    # bit's lane to x. Streams of single events (ADDR_X only) skip the repeat.
    mask = mask[keep]
    counts = _POPCOUNT[mask]
    x0, y0, p0 = x0[keep], row_word[keep] & np.uint16(0x7FF), pol[keep]
    if counts.size and counts.min() == 1 and counts.max() == 1:
        x, y, t, p = x0 + _LANES[mask, 0], y0, t_word, p0
    else:
        first = np.cumsum(counts) - counts
        nth = np.arange(int(counts.sum())) - np.repeat(first, counts)
        x = np.repeat(x0, counts) + _LANES[np.repeat(mask, counts), nth]
        y, t, p = np.repeat(y0, counts), np.repeat(t_word, counts), np.repeat(p0, counts)
    return Events(x=x, y=y, t=t, p=p, width=width, height=height, dropped_no_time=n_unplaced)


def read_evt3(
    path, on_unsorted: str = "error", width: int | None = None, height: int | None = None, truncated: str = "error"
) -> Events:
    """A whole EVT 3.0 RAW file. ``width``/``height`` override the header's geometry."""
    return read_raw(
        path,
        decode_evt3,
        "<u2",
        "EVT 3.0 data",
        "that came before the stream set their time or row",
        on_unsorted,
        width,
        height,
        truncated,
    )


# -- encoding --------------------------------------------------------------------------------------


def encode_evt3(events: Events) -> np.ndarray:
    """EVT 3.0 words for ``events`` as a sensor would write them.

    TIME_HIGH and ADDR_Y words appear only when their value changes, TIME_LOW when it changes
    or a TIME_HIGH precedes it. A run of two or
    more consecutive events with the same (t, y, p) and increasing x inside one 12-pixel block
    (x // 12) becomes one VECT_12 word (VECT_8 when the x all lie in the block's first 8 pixels),
    preceded by VECT_BASE_X unless the base left by the previous vector already fits; any other
    event is one ADDR_X word.

    Events must be sorted by time. The order of events is kept exactly, so ``decode_evt3``
    returns the same events in the same order for any time-sorted input; sorting by (t, y, p, x)
    is what lets neighbouring events share vector words, as a sensor's readout does. The 24-bit
    time counter starts at 0: a stream that starts later gets a short run of TIME_HIGH words
    leading up to its first time, so decoders count the counter's wraps correctly."""
    x = events.x.astype(np.int64)
    y = events.y.astype(np.int64)
    t = events.t
    p = events.p.astype(np.int64)
    n = len(t)
    if n == 0:
        return np.empty(0, np.uint16)
    if t[0] < 0 or not events.is_sorted():
        raise ValueError("encode_evt3 needs non-negative, non-decreasing timestamps")
    if x.max() >= 2048 or y.max() >= 2048:
        raise ValueError("EVT 3.0 addresses are 11 bits: x and y must be below 2048")
    if p.max() > 1:
        raise ValueError("polarity must be 0 or 1")

    block = x // 12
    same = np.zeros(n, bool)
    same[1:] = (t[1:] == t[:-1]) & (y[1:] == y[:-1]) & (p[1:] == p[:-1]) & (x[1:] > x[:-1]) & (block[1:] == block[:-1])
    starts = np.flatnonzero(~same)  # first event of every run (unit)
    length = np.diff(np.append(starts, n))
    vec = length >= 2
    bits = np.left_shift(1, x - block * 12)
    mask = np.bitwise_or.reduceat(bits, starts)
    tu, yu, pu = t[starts], y[starts], p[starts]
    base = block[starts] * 12
    is8 = vec & (mask < 256)

    th, tl = tu >> 12, tu & 0xFFF
    prev_th = np.concatenate(([0], th[:-1]))
    n_th = -(-(th - prev_th) // TH_MAX_STEP)  # ceil: TIME_HIGH words needed to get there
    n_th[0] = max(n_th[0], 1)
    if n_th.sum() > max(n, 1 << 20):
        raise ValueError(
            f"times up to {int(t[-1])} µs need {int(n_th.sum())} TIME_HIGH words from a "
            "counter starting at 0: subtract a time origin first"
        )
    # TIME_LOW follows every TIME_HIGH (decoders reset the low bits there) and every change.
    tl_new = n_th > 0
    tl_new[1:] |= tl[1:] != tl[:-1]
    y_new = np.ones(len(starts), bool)
    y_new[1:] = yu[1:] != yu[:-1]
    # VECT_BASE_X is needed unless the previous vector left the base at this block with this polarity.
    vi = np.flatnonzero(vec)
    left_at = base[vi] + np.where(is8[vi], 8, 12)
    base_new = np.zeros(len(starts), bool)
    base_new[vi] = True
    base_new[vi[1:]] = (base[vi[1:]] != left_at[:-1]) | (pu[vi[1:]] != pu[vi[:-1]])

    count = n_th + tl_new + y_new + base_new + 1
    pos = np.cumsum(count) - count  # first word of every unit
    out = np.empty(int(pos[-1] + count[-1]), np.uint16)
    # TIME_HIGH words: the unit's value, preceded across a long gap by steps of TH_MAX_STEP.
    th_unit = np.repeat(np.arange(len(starts)), n_th)
    j = np.arange(th_unit.size) - np.repeat(np.cumsum(n_th) - n_th, n_th)
    back = n_th[th_unit] - 1 - j
    out[pos[th_unit] + j] = (TIME_HIGH << 12) | ((th[th_unit] - TH_MAX_STEP * back) & 0xFFF)
    pos += n_th
    out[pos[tl_new]] = (TIME_LOW << 12) | tl[tl_new]
    pos += tl_new
    out[pos[y_new]] = (ADDR_Y << 12) | yu[y_new]
    pos += y_new
    out[pos[base_new]] = (VECT_BASE_X << 12) | (pu[base_new] << 11) | base[base_new]
    pos += base_new
    kind = np.where(vec, np.where(is8, VECT_8, VECT_12), ADDR_X)
    out[pos] = (kind << 12) | np.where(vec, mask, (pu << 11) | x[starts])
    return out


def write_evt3(path, events: Events, width: int, height: int) -> None:
    """Write ``events`` as an EVT 3.0 RAW file with a Metavision-style header."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    header = (
        f"% date {stamp}\n% evt 3.0\n% format EVT3;height={height};width={width}\n"
        f"% geometry {width}x{height}\n% integrator_name evcmae\n% end\n"
    )
    with open(os.fspath(path), "wb") as f:
        f.write(header.encode("ascii"))
        f.write(encode_evt3(events).astype("<u2").tobytes())
