"""Prophesee DAT files, and the ``%`` text header that DAT and RAW (EVT 2.0 / 3.0) files share.

A DAT file is the header, one byte of event type, one byte of record size (8), then records of a
little-endian uint32 timestamp (µs) and a uint32 address: x in bits 0-13, y in bits 14-27,
polarity in bits 28-31.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from .container import Events
from .errors import EventFileError
from .validation import check_stream, polarity

# A header line longer than this is binary data, not text.
_MAX_LINE = 1 << 16
# Event types a DAT file of change-detection events declares: 0x00 (ATIS "Event2d") and 0x0C (CD).
_DAT_CD_TYPES = (0x00, 0x0C)
TRUNCATED_OPTIONS = ("error", "drop")


def _is_text(line: bytes) -> bool:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c == "\t" or c >= " " for c in text) and "\x7f" not in text


def read_percent_header(f, path) -> tuple[list[str], int]:
    """Read the ``%`` lines at the start of open binary file ``f``; return them and the data offset.

    The header ends after a ``% end`` line or before the first line that does not start with
    ``%``. Old files have no ``% end``, so a ``%`` line that is not text (binary data whose first
    byte happens to be 0x25) also ends it. A header line cut off by the end of the file means the
    file is truncated inside its header."""
    lines: list[str] = []
    while True:
        start = f.tell()
        if f.read(1) != b"%":
            break
        rest = f.readline(_MAX_LINE)
        line = (b"%" + rest).rstrip(b"\r\n")
        if not rest.endswith(b"\n"):
            if len(rest) >= _MAX_LINE or not _is_text(line):
                break  # binary data, not a header line
            raise EventFileError(
                path,
                f"the '%' header never ends: file stops inside header line {len(lines) + 1} "
                f"({line[:60].decode('utf-8', 'replace')!r}); truncated?",
            )
        if not _is_text(line):
            break
        lines.append(line.decode("utf-8"))
        if line.strip().lower() == b"% end":
            return lines, f.tell()
    f.seek(start)
    return lines, start


def header_fields(lines: list[str]) -> dict[str, str]:
    """``% key value`` lines as a dict with lower-case keys (the last line of a key wins)."""
    fields = {}
    for line in lines:
        parts = line[1:].strip().split(None, 1)
        if parts:
            fields[parts[0].lower()] = parts[1].strip() if len(parts) > 1 else ""
    return fields


def header_geometry(fields: dict[str, str]) -> tuple[int | None, int | None]:
    """Sensor width and height from ``% format EVT3;height=..;width=..``, ``% geometry WxH`` or
    DAT-style ``% Width`` / ``% Height`` lines; None where the header does not say."""
    width = height = None
    try:
        if "format" in fields:
            opts = dict(kv.split("=", 1) for kv in fields["format"].split(";")[1:] if "=" in kv)
            width = int(opts["width"]) if "width" in opts else None
            height = int(opts["height"]) if "height" in opts else None
        if (width is None or height is None) and "geometry" in fields:
            w, h = fields["geometry"].lower().split("x")
            width, height = int(w), int(h)
        if width is None and "width" in fields:
            width = int(fields["width"])
        if height is None and "height" in fields:
            height = int(fields["height"])
    except ValueError:
        return None, None  # a malformed size line says nothing usable
    return width, height


def open_raw(path, truncated: str) -> tuple[str, list[str], int]:
    """Check the arguments and the file, read its header: (path, header lines, data offset)."""
    if truncated not in TRUNCATED_OPTIONS:
        raise ValueError(f"truncated must be one of {TRUNCATED_OPTIONS}, not {truncated!r}")
    path = os.fspath(path)
    if os.path.getsize(path) == 0:
        raise EventFileError(path, "empty file (0 bytes)")
    with open(path, "rb") as f:
        lines, offset = read_percent_header(f, path)
    return path, lines, offset


def read_units(path, offset: int, dtype, truncated: str, what: str) -> np.ndarray:
    """The data from ``offset`` on as an array of ``dtype`` words or records. A partial trailing
    one means a truncated file: an error, or with ``truncated="drop"`` a warning and the
    complete part."""
    dtype = np.dtype(dtype)
    n_bytes = os.path.getsize(path) - offset
    extra = n_bytes % dtype.itemsize
    if extra:
        problem = f"{what} of {n_bytes} bytes ends with {extra} byte(s) of a partial {dtype.itemsize}-byte unit"
        if truncated == "error":
            raise EventFileError(path, f"{problem} (truncated file?); pass truncated='drop' to read the complete part")
        warnings.warn(f"{path}: {problem}; read the complete part only", stacklevel=3)
    return np.fromfile(path, dtype=dtype, count=n_bytes // dtype.itemsize, offset=offset)


def read_raw(
    path,
    decode,
    word_dtype: str,
    what: str,
    no_time_reason: str,
    on_unsorted: str,
    width: int | None,
    height: int | None,
    truncated: str,
) -> Events:
    """A whole Prophesee RAW file: its header's geometry, its words through ``decode``, then the
    checks every reader applies. ``width``/``height`` override the header's geometry."""
    path, lines, offset = open_raw(path, truncated)
    if not lines:
        raise EventFileError(path, "no '%' header: not a Prophesee RAW file")
    hw, hh = header_geometry(header_fields(lines))
    words = read_units(path, offset, word_dtype, truncated, what)
    events = decode(words, width if width is not None else hw, height if height is not None else hh, path)
    if events.dropped_no_time:
        warnings.warn(f"{path}: dropped {events.dropped_no_time} events {no_time_reason}", stacklevel=3)
    return check_stream(events, path, on_unsorted)


def read_dat(
    path, on_unsorted: str = "error", width: int | None = None, height: int | None = None, truncated: str = "error"
) -> Events:
    """A whole DAT file. ``width``/``height`` override the header's ``% Width``/``% Height``."""
    path, lines, offset = open_raw(path, truncated)
    if not lines:
        raise EventFileError(path, "no '%' header: not a Prophesee DAT file")
    with open(path, "rb") as f:
        f.seek(offset)
        kind = f.read(2)
    if len(kind) < 2:
        raise EventFileError(path, "file ends after the header, before the event type and size bytes")
    ev_type, ev_size = kind[0], kind[1]
    if ev_size != 8:
        raise EventFileError(path, f"DAT record size is {ev_size} bytes; only 8-byte records are supported")
    if ev_type not in _DAT_CD_TYPES:
        raise EventFileError(path, f"DAT event type 0x{ev_type:02x} is not a change-detection event type")
    records = read_units(path, offset + 2, np.dtype([("t", "<u4"), ("addr", "<u4")]), truncated, "DAT event data")
    addr = records["addr"]
    hw, hh = header_geometry(header_fields(lines))
    events = Events(
        x=addr & 0x3FFF,
        y=(addr >> 14) & 0x3FFF,
        t=records["t"].astype(np.int64),
        p=polarity((addr >> 28).astype(np.uint8), path),
        width=width if width is not None else hw,
        height=height if height is not None else hh,
    )
    return check_stream(events, path, on_unsorted)
