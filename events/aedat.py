"""iniVation AEDAT 4.0 files, decoded by the optional ``aedat`` package (a Rust extension that
handles the LZ4/Zstd-compressed packets). Only the first event stream is read; IMU, trigger and
frame packets are skipped. The package gives t in µs (uint64) and polarity as a boolean ``on``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from .container import Events
from .dat import TRUNCATED_OPTIONS
from .errors import EventFileError
from .validation import check_stream, integer_values

MAGIC = b"#!AER-DAT4.0"


def _decoder_class():
    try:
        import aedat
    except ImportError as exc:
        raise ImportError("reading AEDAT4 files needs the optional 'aedat' package: pip install evcmae[aedat]") from exc
    return aedat.Decoder


def read_aedat4(
    path, on_unsorted: str = "error", width: int | None = None, height: int | None = None, truncated: str = "error"
) -> Events:
    """Events of the first event stream of an AEDAT4 file, sensor size from its stream info.

    The package stops with an error at a cut-off packet; ``truncated="drop"`` keeps the packets
    read before it (with a warning) instead of refusing the file."""
    if truncated not in TRUNCATED_OPTIONS:
        raise ValueError(f"truncated must be one of {TRUNCATED_OPTIONS}, not {truncated!r}")
    path = os.fspath(path)
    decoder_class = _decoder_class()
    if os.path.getsize(path) == 0:
        raise EventFileError(path, "empty file (0 bytes)")
    try:
        decoder = decoder_class(path)
        streams = decoder.id_to_stream()
    except (RuntimeError, OSError, ValueError) as exc:
        raise EventFileError(path, f"not a readable AEDAT4 file: {exc}") from exc
    event_ids = sorted(i for i, s in streams.items() if s.get("type") == "events")
    if not event_ids:
        raise EventFileError(path, f"no event stream; streams: {streams}")
    stream = event_ids[0]
    packets = []
    try:
        for packet in decoder:
            if packet["stream_id"] == stream and "events" in packet:
                packets.append(packet["events"])
    except (RuntimeError, OSError, ValueError) as exc:
        problem = f"decoding stopped after {sum(map(len, packets))} events: {exc} (truncated or corrupt?)"
        if truncated == "error":
            raise EventFileError(path, f"{problem}; pass truncated='drop' to keep the events before it") from exc
        warnings.warn(f"{path}: {problem}; kept the events before it", stacklevel=2)
    info = streams[stream]
    if packets:
        data = np.concatenate(packets)
        columns = dict(x=data["x"], y=data["y"], t=integer_values(data["t"], "t", path), p=data["on"].astype(np.uint8))
    else:
        columns = {k: np.empty(0) for k in "xytp"}
    events = Events(
        **columns,
        width=width if width is not None else info.get("width"),
        height=height if height is not None else info.get("height"),
    )
    return check_stream(events, path, on_unsorted)
