"""What bad event and label input gets, decided in one place. Every reader (``h5``, ``dat``,
``evt2``, ``evt3``, ``aedat``) and every label loader (``labels``, ``rvt``) goes through these
checks, so a problem gets the same answer whichever file format it arrives in.

Each problem is *refused* (``EventFileError`` / ``LabelFileError`` naming the file, the field and
the first offending row), *dropped and counted* (a warning with the count, once per file), or
*fixed and counted* (a warning saying what was changed):

==========================================  ====================================================
input                                       policy
==========================================  ====================================================
NaN/inf in x, y, t or p                     refused
fractional x, y, t or p (float columns)     refused (float t in seconds? the message says so)
t beyond the int64 range                    refused
polarity other than 0/1, -1/1 or bool       refused
coordinates outside the sensor              dropped and counted (``Events.dropped_out_of_range``)
coordinates no sensor has (< 0, > 65535)    dropped and counted, as outside the sensor
sensor size stated nowhere                  kept; a picture sized from the data infers it with a
                                            warning, and refuses an extent beyond
                                            ``MAX_SENSOR_SIDE`` (stray events, not a sensor)
timestamps that decrease                    refused; ``on_unsorted="sort"``: sorted, counted
labels: not structured / a field missing    refused
labels: NaN/inf in any field                refused
labels: fractional or negative t, class_id  refused (a float -1 would become 4294967295)
        or track_id
labels: negative width or height            dropped and counted
labels: times not sorted                    refused
labels: times outside the recording         dropped and counted; all of them outside: refused
                                            (other units?)
labels: class id >= number of classes       refused, before training starts
                                            (``tools/config_checks.py``)
==========================================  ====================================================

The checks of one column alone (integer values, polarity) live in ``events.columns``, where
``Events`` takes them from without importing the readers' checks.

The checks are vectorised: a column of the right integer dtype costs a dtype comparison, order
and range one comparison pass, so they stay off the readers' benchmarks.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from .columns import first_true, integer_values, polarity
from .container import Events
from .errors import EventFileError, LabelFileError

# No event sensor made so far is wider or taller (Prophesee IMX636 1280x720, Samsung Gen4
# 1280x960), and EVT 2.0/3.0 addresses have 11 bits: larger extents are stray events.
MAX_SENSOR_SIDE = 2048
_UINT16_MAX = int(np.iinfo(np.uint16).max)

# (file, kind) pairs already warned about: a file warns once however often it is read.
_warned: set[tuple[str | None, str]] = set()


def warn_once(path, kind: str, message: str, stacklevel: int = 3) -> None:
    key = (None if path is None else os.fspath(path), kind)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=stacklevel)


# -- columns -------------------------------------------------------------------------------------
def _coordinate(values, field: str, path, row0: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint16 column, mask of values no sensor has or None); NaN and fractions are refused."""
    a = np.asarray(values)
    if a.dtype == np.uint16:
        return a, None
    if a.dtype.kind == "f":
        a = integer_values(a, field, path, row0, np.int64)
    elif a.dtype.kind not in "iub":
        raise EventFileError(path, f"values of type {a.dtype}, expected integer pixel coordinates", field)
    if a.dtype.kind == "b" or a.size == 0:
        return a.astype(np.uint16), None
    impossible = (a < 0) | (a > _UINT16_MAX)
    if not impossible.any():
        return a.astype(np.uint16), None
    return np.clip(a, 0, _UINT16_MAX).astype(np.uint16), impossible


def event_columns(x, y, t, p, path=None, row0: int = 0, width=None, height=None) -> Events:
    """Raw columns of any dtype (rows ``row0``... of ``path``) as ``Events``: NaN, fractions and
    impossible polarities refused, coordinates no sensor has dropped and counted. The sensor
    range and the time order are ``check_stream``'s business."""
    original = {"x": x, "y": y}
    x, bad_x = _coordinate(x, "x", path, row0)
    y, bad_y = _coordinate(y, "y", path, row0)
    events = Events(
        x=x,
        y=y,
        t=integer_values(t, "t", path, row0, np.int64),
        p=polarity(p, path, row0),
        width=width,
        height=height,
        source=None if path is None else os.fspath(path),
    )
    if bad_x is None and bad_y is None:
        return events
    bad = bad_y if bad_x is None else bad_x if bad_y is None else bad_x | bad_y
    i = first_true(bad)
    field = "x" if bad_x is not None and bad_x[i] else "y"
    n = int(np.count_nonzero(bad))
    warn_once(
        path,
        "impossible_coordinates",
        f"{path}: dropped {n} of {len(events)} events with coordinates no sensor has (negative or above "
        f"{_UINT16_MAX}; first: row {row0 + i}, {field}={np.asarray(original[field])[i]})",
    )
    kept = events[~bad]
    kept.dropped_out_of_range += n
    return kept


# -- streams -------------------------------------------------------------------------------------
def first_decrease(t: np.ndarray) -> tuple[int, int]:
    """(index i of the first event with t[i + 1] < t[i], number of decreases), or (-1, 0)."""
    if len(t) < 2:
        return -1, 0
    back = t[1:] < t[:-1]
    n = int(np.count_nonzero(back))
    return (first_true(back), n) if n else (-1, 0)


def unsorted_error(path, t_before: int, t_after: int, row: int, count: int) -> EventFileError:
    """The refusal of a stream whose time goes back at ``row`` (0-based index of the later event)."""
    return EventFileError(
        path,
        f"timestamps decrease at event {row} ({t_before} -> {t_after} µs; {count} decreases in all); "
        "pass on_unsorted='sort' to sort them",
    )


ON_UNSORTED = ("error", "sort", "ignore")


def check_on_unsorted(on_unsorted: str) -> None:
    if on_unsorted not in ON_UNSORTED:
        raise ValueError(f"on_unsorted must be one of {ON_UNSORTED}, not {on_unsorted!r}")


def check_stream(events: Events, path=None, on_unsorted: str = "error") -> Events:
    """The invariants every reader promises, naming ``path`` in any complaint:

    * events outside ``width`` x ``height`` (when known) are dropped and counted, with one warning
      per file;
    * timestamps must be non-decreasing: ``on_unsorted="error"`` (default) refuses the stream,
      ``"sort"`` sorts it stably with a warning, ``"ignore"`` leaves the order as it is.
    """
    check_on_unsorted(on_unsorted)
    name = None if path is None else os.fspath(path)
    ev = events
    if ev.width is not None and ev.height is not None and len(ev):
        inside = (ev.x < ev.width) & (ev.y < ev.height)
        n_out = len(ev) - int(np.count_nonzero(inside))
        if n_out:
            i = first_true(~inside)
            warn_once(
                name,
                "outside_sensor",
                f"{name}: dropped {n_out} of {len(ev)} events outside the {ev.width}x{ev.height} sensor "
                f"(e.g. x={int(ev.x[i])}, y={int(ev.y[i])})",
            )
            ev = ev[inside]
            ev.dropped_out_of_range += n_out
    if on_unsorted != "ignore":
        i, count = first_decrease(ev.t)
        if count:
            if on_unsorted == "error":
                raise unsorted_error(name, int(ev.t[i]), int(ev.t[i + 1]), i + 1, count)
            warnings.warn(f"{name}: {count} timestamp decreases; events sorted by time", stacklevel=2)
            ev = ev[np.argsort(ev.t, kind="stable")]
    ev.source = name if name is not None else ev.source
    return ev


def sensor_size(events: Events, path=None, width: int | None = None, height: int | None = None) -> tuple[int, int]:
    """The sensor size to draw or grid ``events`` on: ``width``/``height`` if given, else the
    size the file states, else the events' extent (with a warning). An extent beyond
    ``MAX_SENSOR_SIDE`` is stray events, not a sensor: refused, asking for the size."""
    width = width or events.width
    height = height or events.height
    if width and height:
        return int(width), int(height)
    for field, given, col in (("x", width, events.x), ("y", height, events.y)):
        if not given and len(col) and int(col.max()) >= MAX_SENSOR_SIDE:
            i = int(np.argmax(col))
            raise EventFileError(
                path,
                f"the file states no sensor size and events reach {field}={int(col[i])}, beyond any sensor "
                f"(at most {MAX_SENSOR_SIDE} px): stray events; give the size (--width/--height) so they are dropped",
                field,
            )
    w = int(width or (int(events.x.max()) + 1 if len(events) else 1))
    h = int(height or (int(events.y.max()) + 1 if len(events) else 1))
    warnings.warn(f"{path}: the file states no sensor size; using the events' extent {w}x{h}", stacklevel=2)
    return w, h


# -- labels --------------------------------------------------------------------------------------
def label_columns(raw: np.ndarray, names: dict[str, str], path=None) -> dict[str, np.ndarray]:
    """The fields of a structured label array (``names``: our field -> the file's), checked:
    NaN/inf anywhere, fractional or negative ``t``/``class_id``/``track_id`` refused."""
    integer = {"t": np.int64, "class_id": np.uint32, "track_id": np.uint32}
    out = {}
    for field, source in names.items():
        col = raw[source]
        if field in integer:
            out[field] = integer_values(col, source, path, 0, integer[field], error=LabelFileError)
        elif col.dtype.kind == "f":
            finite = np.isfinite(col)
            if not finite.all():
                i = first_true(~finite)
                raise LabelFileError(path, f"not a number ({col[i]})", source, i)
            out[field] = col
        else:
            out[field] = col
    if "t" in out and out["t"].size and int(out["t"].min()) < 0:
        i = first_true(out["t"] < 0)
        raise LabelFileError(path, f"negative label time {int(out['t'][i])}", names["t"], i)
    return out


def drop_negative_boxes(labels: np.ndarray, path=None) -> np.ndarray:
    """Boxes with a negative width or height dropped, counted in a warning (zero-area boxes stay:
    the label filter removes them, as it does before training and evaluation)."""
    bad = (labels["w"] < 0) | (labels["h"] < 0)
    n = int(np.count_nonzero(bad))
    if not n:
        return labels
    i = first_true(bad)
    warn_once(
        path,
        "negative_boxes",
        f"{path}: dropped {n} of {len(labels)} boxes with a negative width or height "
        f"(first: row {i}, w={float(labels['w'][i]):g}, h={float(labels['h'][i]):g})",
    )
    return labels[~bad]


def labels_within_recording(
    labels: np.ndarray, t_range: tuple[int, int] | None, path=None, slack_us: int = 0
) -> np.ndarray:
    """Labels whose time lies within the recording's ``[t_first - slack, t_last + slack]``; the
    others are dropped and counted. If none is inside, the two files do not belong together (or
    use other time units): refused."""
    if not len(labels) or t_range is None:
        return labels
    t = labels["t"]
    inside = (t >= t_range[0] - slack_us) & (t <= t_range[1] + slack_us)
    n_out = len(labels) - int(np.count_nonzero(inside))
    if not n_out:
        return labels
    if n_out == len(labels):
        raise LabelFileError(
            path,
            f"every label time ({int(t.min())} .. {int(t.max())} µs) lies outside the recording "
            f"({t_range[0]} .. {t_range[1]} µs): another recording's labels, or other time units?",
            "t",
            0,
        )
    i = first_true(~inside)
    warn_once(
        path,
        "labels_outside_recording",
        f"{path}: dropped {n_out} of {len(labels)} boxes whose time lies outside the recording "
        f"({t_range[0]} .. {t_range[1]} µs; first: row {i}, t={int(t[i])})",
    )
    return labels[inside]


def check_class_ids(labels: np.ndarray, limit: int, path=None, source: str = "data.num_classes") -> None:
    """Refuse class ids the model has no output for: ``limit`` is ``source``'s number of classes."""
    ids = labels["class_id"]
    if len(ids) and int(ids.max()) >= limit:
        i = first_true(ids >= limit)
        raise LabelFileError(
            path, f"class id {int(ids[i])} has no class: {source} is {limit} (ids 0..{limit - 1})", "class_id", i
        )
