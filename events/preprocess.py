"""Raw event dataset (``<split>/NAME_td.h5`` + ``NAME_bbox.npy``, or DAT / RAW / AEDAT4
recordings beside their labels, e.g. Gen1's ``NAME_td.dat``) -> RVT's preprocessed layout.

Follows RVT's ``scripts/genx/preprocess_dataset.py`` (docs/architecture.md, "RVT layout"):

* labels are filtered first (keep only ``keep_classes`` when given, as RVT keeps Gen4's first
  three; clip to the sensor as RVT does, to ``size - 1``; drop zero-area boxes, boxes with a side
  below ``min_side`` or a diagonal below ``min_diag``; in the train split boxes wider than
  ``max_width_fraction * width``);
* label frames are thinned to about 10 Hz: the first kept frame is the first label time at or
  after ``align_ms``; a later time is kept when its distance to the last kept one is a positive
  multiple of the label period (within 2 ms of jitter);
* windows are ``window_ms`` long and end exactly at every kept label time, with
  ``100 / window_ms`` windows per label period in between; a window holds the events with
  ``end - window <= t <= end`` (closed on both sides, so a boundary event is in two windows);
* representation files hold ``(2 * bins, H / ds, W / ds)`` stacked histograms; labels are stored
  at sensor resolution (loaders scale them).

HDF5 recordings are read with ``H5EventFile.read_time_window`` in spans of ``read_span_ms``, so
none is ever loaded whole; DAT / RAW / AEDAT4 files have no time index and are decoded once
(``events.recording.open_recording``).

``DATASETS`` holds each public dataset's settings as RVT preprocesses it (``evcmae-preprocess
--dataset gen1``); the data configs in ``conf/finetune/data`` state the same values.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .container import Events
from .errors import EventFileError
from .histogram import stacked_histogram
from .labels import clip_to_sensor, filter_labels, load_labels
from .recording import RECORDING_SUFFIXES, open_recording, recording_stem
from .rvt import (
    LABELS_DIR,
    REPR_PARENT,
    RepresentationWriter,
    representation_filename,
    representation_name,
    write_labels,
    write_repr_index,
)
from .validation import labels_within_recording

__all__ = [
    "DATASETS",
    "PreprocessConfig",
    "SequenceResult",
    "Summary",
    "filter_recording_labels",
    "plan_windows",
    "find_recordings",
    "preprocess_recording",
    "preprocess_dataset",
]

SPLITS = ("train", "val", "test")
FRAME_STEP_US = 100_000  # RVT thins label frames to ~10 Hz
JITTER_US = 2_000  # label times may deviate this much from the ideal grid


@dataclass
class PreprocessConfig:
    downsample: int = 2
    window_ms: int = 50
    bins: int = 10
    count_cutoff: int = 10
    align_ms: int = 100
    label_period_us: int | None = None  # None: from the labels' median spacing (RVT's gen4 rule)
    min_side: float = 5.0
    min_diag: float = 0.0
    max_width_fraction: float | None = 0.9  # applied to the train split only
    width: int | None = None  # sensor size for files that do not state it
    height: int | None = None
    on_unsorted: str = "error"
    read_span_ms: int = 250
    rvt_uint8_wrap: bool = False
    keep_classes: tuple[int, ...] | None = None  # None: all; Gen4: (0, 1, 2) as RVT

    def __post_init__(self):
        if self.keep_classes is not None:
            self.keep_classes = tuple(int(c) for c in self.keep_classes)
        if self.downsample not in (1, 2):
            raise ValueError(f"downsample must be 1 or 2, not {self.downsample}")
        if self.window_ms <= 0 or FRAME_STEP_US % (self.window_ms * 1000):
            raise ValueError(f"window_ms must divide 100, not {self.window_ms}")


# Public datasets as RVT preprocesses them (scripts/genx/preprocess_dataset.py and its filter
# configs): sensor size (for files that do not state it), downsampling, label filter, label period.
DATASETS: dict[str, dict] = {
    # Gen1 (ATIS, 304x240): full resolution, Prophesee's filter (diagonal >= 30, side >= 10),
    # labels thinned on a 250 ms grid (RVT's fixed Gen1 period).
    "gen1": dict(width=304, height=240, downsample=1, min_side=10.0, min_diag=30.0, label_period_us=250_000),
    # Gen4 / 1 Mpx (1280x720 -> 640x360): classes 0-2 kept (pedestrian, two-wheeler, car; RVT drops
    # truck, bus, traffic sign and light), the conservative side >= 5 filter.
    "gen4": dict(width=1280, height=720, downsample=2, min_side=5.0, keep_classes=(0, 1, 2)),
    # eTraM (1280x720 -> 640x360): all 8 classes, Gen4's conservative filter.
    "etram": dict(width=1280, height=720, downsample=2, min_side=5.0),
}


@dataclass
class SequenceResult:
    split: str
    name: str
    status: str = "ok"  # ok | no_labels | failed
    error: str | None = None
    representations: int = 0
    label_frames: int = 0
    boxes_in: int = 0
    boxes_kept: int = 0
    boxes_filtered: int = 0
    boxes_thinned: int = 0
    events_dropped_out_of_range: int = 0


# -- labels and window plan ---------------------------------------------------------------------
def filter_recording_labels(
    labels: np.ndarray, width: int, height: int, split: str, cfg: PreprocessConfig
) -> np.ndarray:
    if cfg.keep_classes is not None:
        labels = labels[np.isin(labels["class_id"], cfg.keep_classes)]
    # RVT crops to [0, size - 1] (crop_to_fov_filter); filter_labels then clips to size (a no-op).
    clipped = clip_to_sensor(labels, width - 1, height - 1)
    return filter_labels(
        clipped,
        width,
        height,
        min_side=cfg.min_side,
        min_diag=cfg.min_diag,
        max_width_fraction=cfg.max_width_fraction if split == "train" else None,
    )


def _label_period_us(unique_ts: np.ndarray) -> int:
    """About 100 ms, as a whole number of label intervals (RVT: 3x at 30 Hz, 6x at 60 Hz)."""
    if len(unique_ts) < 2:
        return FRAME_STEP_US
    median = float(np.median(np.diff(unique_ts)))
    return int(max(1, int(np.rint(FRAME_STEP_US / median))) * median)


def split_by_frame(labels: np.ndarray, frame_ts: np.ndarray) -> list:
    """The boxes of each label frame, for time-sorted ``labels`` (binary search, no scan per frame)."""
    lo = np.searchsorted(labels["t"], frame_ts, side="left")
    hi = np.searchsorted(labels["t"], frame_ts, side="right")
    return [labels[a:b] for a, b in zip(lo, hi)]


def plan_windows(label_times_us, window_ms: int = 50, align_ms: int = 100, label_period_us: int | None = None):
    """Kept label frame times, window end times and each frame's window index.

    Returns ``(frame_ts, repr_ts, frame_to_repr)`` (int64 arrays), or None when no label time is
    at or after ``align_ms``."""
    unique = np.unique(np.asarray(label_times_us, dtype=np.int64))
    first = int(np.searchsorted(unique, align_ms * 1000, side="left"))
    if first == len(unique):
        return None
    period = label_period_us or _label_period_us(unique)
    per_period = FRAME_STEP_US // (window_ms * 1000)
    frames, between = [int(unique[first])], []
    for ts in unique[first + 1 :].tolist():
        diff = ts - frames[-1]
        count = int(np.rint(diff / period))  # half-to-even, like Python's round on NumPy floats
        if count > 0 and abs(diff - count * period) <= JITTER_US:
            frames.append(ts)
            between.append(count * per_period)

    dt = window_ms * 1000
    # Before the first frame: ends first - k*dt whose window starts after 0 (RVT drops the
    # earliest end, the one at or below dt).
    parts = [np.arange(frames[0] - dt, 0, -dt, dtype=np.int64)[::-1][1:]]
    for a, b, n in zip(frames[:-1], frames[1:], between):
        parts.append(np.linspace(a, b, n + 1).astype(np.int64)[:-1])
    parts.append(np.array([frames[-1]], dtype=np.int64))
    repr_ts = np.concatenate(parts)
    frame_ts = np.asarray(frames, dtype=np.int64)
    return frame_ts, repr_ts, np.searchsorted(repr_ts, frame_ts, side="left").astype(np.int64)


# -- events -------------------------------------------------------------------------------------
class _WindowStream:
    """Serves windows with non-decreasing bounds from disjoint reads of ``span_us``, so every
    event is read (and every out-of-range event counted) once, and memory stays bounded."""

    def __init__(self, f, span_us: int):
        self.f, self.span_us = f, span_us
        self.buf: Events | None = None
        self.read_until: int | None = None
        self.dropped = 0

    def window(self, t0: int, t1: int) -> Events:
        """Events with ``t0 <= t < t1``."""
        if self.buf is None:
            self.buf, self.read_until = Events.empty(self.f.width, self.f.height), t0
        if t1 > self.read_until:
            hi = max(t1, self.read_until + self.span_us)
            new = self.f.read_time_window(self.read_until, hi)
            self.dropped += new.dropped_out_of_range
            if self.f.on_unsorted == "error" and len(new) and len(self.buf) and new.t[0] < self.buf.t[-1]:
                raise EventFileError(self.f.path, f"timestamps decrease near {int(new.t[0])} µs")
            keep = self.buf[int(np.searchsorted(self.buf.t, t0, side="left")) :]
            self.buf = Events.concatenate([keep, new]) if len(keep) else new
            self.read_until = hi
        return self.buf.time_window(t0, t1)


# -- one recording ------------------------------------------------------------------------------
def _describe(exc: BaseException, path: Path) -> str:
    text = str(exc)
    if isinstance(exc, EventFileError) or str(path) in text:
        return text
    return f"{path}: {type(exc).__name__}: {text}"


def preprocess_recording(
    td_path, bbox_path, out_split_dir, split: str, cfg: PreprocessConfig, tmp_dir=None
) -> SequenceResult:
    """Preprocess one recording into ``out_split_dir/NAME``; never raises for bad input.

    The sequence is assembled in ``tmp_dir`` and moved into place only when complete, so a
    failed or interrupted recording leaves nothing a loader could mistake for a sequence."""
    td_path, out_split_dir = Path(td_path), Path(out_split_dir)
    name = recording_stem(td_path) or td_path.stem
    res = SequenceResult(split, name)
    final = out_split_dir / name
    work = Path(tmp_dir or out_split_dir.parent / ".preprocess_tmp") / split / name
    try:
        if bbox_path is None:
            raise EventFileError(td_path, f"no {name}_bbox.npy beside it")
        with open_recording(td_path, width=cfg.width, height=cfg.height, on_unsorted=cfg.on_unsorted) as f:
            if f.width is None or f.height is None:
                raise EventFileError(td_path, "sensor size not stated in the file; pass width/height")
            width, height = f.width, f.height
            raw = labels_within_recording(load_labels(bbox_path), f.t_range, bbox_path, cfg.window_ms * 1000)
            labels = filter_recording_labels(raw, width, height, split, cfg)
            res.boxes_in, res.boxes_filtered = len(raw), len(raw) - len(labels)
            plan = plan_windows(labels["t"], cfg.window_ms, cfg.align_ms, cfg.label_period_us)
            if plan is None:
                res.status, res.boxes_thinned = "no_labels", len(labels)
                shutil.rmtree(final, ignore_errors=True)  # a stale sequence from an earlier run
                return res
            frame_ts, repr_ts, frame_to_repr = plan
            per_frame = split_by_frame(labels, frame_ts)

            shutil.rmtree(work, ignore_errors=True)
            repr_dir = work / REPR_PARENT / representation_name(cfg.window_ms, cfg.bins)
            repr_dir.mkdir(parents=True)
            (work / LABELS_DIR).mkdir()
            write_labels(work / LABELS_DIR, per_frame, frame_ts)
            write_repr_index(repr_dir, repr_ts, frame_to_repr)

            stream = _WindowStream(f, cfg.read_span_ms * 1000)
            shape = (2 * cfg.bins, height // cfg.downsample, width // cfg.downsample)
            with RepresentationWriter(
                repr_dir / representation_filename(cfg.downsample), len(repr_ts), shape
            ) as writer:
                for end in repr_ts.tolist():
                    ev = stream.window(end - cfg.window_ms * 1000, end + 1)
                    writer.append(
                        stacked_histogram(
                            ev.x,
                            ev.y,
                            ev.t,
                            ev.p,
                            height,
                            width,
                            bins=cfg.bins,
                            count_cutoff=cfg.count_cutoff,
                            downsample=cfg.downsample,
                            rvt_uint8_wrap=cfg.rvt_uint8_wrap,
                        ).numpy()
                    )
        res.representations, res.label_frames = len(repr_ts), len(frame_ts)
        res.boxes_kept = int(sum(len(p) for p in per_frame))
        res.boxes_thinned = len(labels) - res.boxes_kept
        # HDF5 counts per read; a decoded-whole file counted once, when it was read
        res.events_dropped_out_of_range = stream.dropped + getattr(f, "dropped_out_of_range", 0)
        shutil.rmtree(final, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work, final)
        with suppress(OSError):  # leave no empty temp folders behind
            work.parent.rmdir()
            work.parent.parent.rmdir()
    except Exception as exc:  # reported per recording; one bad file must not stop the others
        res.status, res.error = "failed", _describe(exc, td_path)
        shutil.rmtree(work, ignore_errors=True)
    return res


# -- a whole dataset ----------------------------------------------------------------------------
def find_recordings(split_dir) -> list[tuple[str, Path | None, Path | None]]:
    """``(name, recording, bbox_path)`` per recording of a split folder; a missing partner is None.

    A recording is ``NAME_td.h5`` (Gen4 / eTraM), ``NAME_td.dat`` (Gen1), ``NAME.raw`` and the
    other names of ``events.recording.RECORDING_SUFFIXES``; the labels are ``NAME_bbox.npy``.
    When one name has several recordings, HDF5 wins (it is read window by window)."""
    split_dir = Path(split_dir)
    rank = {suffix: i for i, suffix in enumerate(RECORDING_SUFFIXES)}
    tds: dict[str, Path] = {}
    for p in sorted(split_dir.iterdir()) if split_dir.is_dir() else []:
        stem = recording_stem(p)
        if stem is None or not p.is_file():
            continue
        if stem not in tds or _suffix_rank(p, rank) < _suffix_rank(tds[stem], rank):
            tds[stem] = p
    boxes = {p.name[: -len("_bbox.npy")]: p for p in split_dir.glob("*_bbox.npy")}
    return [(n, tds.get(n), boxes.get(n)) for n in sorted(tds.keys() | boxes.keys())]


def _suffix_rank(path: Path, rank: dict[str, int]) -> int:
    return min(i for suffix, i in rank.items() if path.name.endswith(suffix))


@dataclass
class Summary:
    results: list[SequenceResult] = field(default_factory=list)
    missing_splits: list[str] = field(default_factory=list)
    aborted: bool = False

    @property
    def failed(self) -> list[SequenceResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.aborted

    def totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.results:
            t = out.setdefault(
                r.split,
                dict(
                    sequences=0,
                    no_labels=0,
                    failed=0,
                    representations=0,
                    label_frames=0,
                    boxes_kept=0,
                    boxes_filtered=0,
                    boxes_thinned=0,
                    events_dropped_out_of_range=0,
                ),
            )
            t["sequences" if r.status == "ok" else r.status] += 1
            for k in (
                "representations",
                "label_frames",
                "boxes_kept",
                "boxes_filtered",
                "boxes_thinned",
                "events_dropped_out_of_range",
            ):
                t[k] += getattr(r, k)
        return out

    def format(self) -> str:
        lines = []
        for split, t in self.totals().items():
            lines.append(
                f"{split}: {t['sequences']} sequences, {t['representations']} representations, "
                f"{t['label_frames']} label frames, boxes kept {t['boxes_kept']} / dropped "
                f"{t['boxes_filtered']} by filter, {t['boxes_thinned']} by thinning, "
                f"{t['events_dropped_out_of_range']} events dropped out of range"
                + (f", {t['no_labels']} without labels after filtering" if t["no_labels"] else "")
                + (f", {t['failed']} FAILED" if t["failed"] else "")
            )
        for r in self.results:
            if r.status == "no_labels":
                lines.append(f"skipped {r.split}/{r.name}: no label at or after the alignment time after filtering")
        for split in self.missing_splits:
            lines.append(f"split folder not found: {split}")
        for r in self.failed:
            lines.append(f"FAILED {r.split}/{r.name}: {r.error}")
        if self.aborted:
            lines.append("stopped after the first failure (--fail-fast); remaining recordings not processed")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "totals": self.totals(),
            "results": [asdict(r) for r in self.results],
            "missing_splits": self.missing_splits,
            "aborted": self.aborted,
        }


def _init_worker():
    import torch

    torch.set_num_threads(1)  # parallelism comes from the pool


def _job(args):
    return preprocess_recording(*args)


def preprocess_dataset(
    raw_dir,
    out_dir,
    cfg: PreprocessConfig | None = None,
    splits=SPLITS,
    workers: int = 1,
    fail_fast: bool = False,
    progress: bool = True,
) -> Summary:
    """Preprocess every recording of ``splits`` under ``raw_dir`` into ``out_dir``.

    Failures are collected in the summary (``Summary.ok`` is False); with ``fail_fast`` the
    first failure stops the run. Folders not named in ``splits`` (e.g. ``pretrain/``) are ignored."""
    cfg = cfg or PreprocessConfig()
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise EventFileError(raw_dir, "input folder not found")
    summary = Summary()
    tmp_dir = out_dir / ".preprocess_tmp"
    jobs = []
    for split in splits:
        if not (raw_dir / split).is_dir():
            summary.missing_splits.append(split)
            continue
        for name, td, bbox in find_recordings(raw_dir / split):
            if td is None:
                summary.results.append(
                    SequenceResult(
                        split,
                        name,
                        "failed",
                        f"{bbox}: no recording beside it ({name}_td.h5, {name}_td.dat, {name}.raw, ...)",
                    )
                )
                continue
            jobs.append((td, bbox, out_dir / split, split, cfg, tmp_dir))
    if summary.missing_splits == list(splits):
        raise EventFileError(raw_dir, f"none of the split folders {list(splits)} exists")
    if fail_fast and summary.failed:
        summary.aborted = True
        return summary

    bar = tqdm(total=len(jobs), desc="recordings", unit="rec", disable=not progress)
    try:
        if workers <= 1:
            for i, job in enumerate(jobs):
                summary.results.append(_job(job))
                bar.update()
                if fail_fast and summary.results[-1].status == "failed":
                    summary.aborted = i < len(jobs) - 1
                    break
        else:
            _run_pool(jobs, workers, fail_fast, summary, bar)
    finally:
        bar.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)
    order = {s: i for i, s in enumerate(splits)}
    summary.results.sort(key=lambda r: (order.get(r.split, len(order)), r.name))
    return summary


def _run_pool(jobs, workers, fail_fast, summary, bar):
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker)
    futures = {pool.submit(_job, job): job for job in jobs}
    collected = set()

    def collect(fut):
        td, _, _, split, _, _ = futures[fut]
        try:
            res = fut.result()
        except BrokenProcessPool:
            res = SequenceResult(
                split,
                recording_stem(td) or td.stem,
                "failed",
                f"{td}: worker process died (crashed on this or another file)",
            )
        collected.add(fut)
        summary.results.append(res)
        bar.update()
        return res

    try:
        for fut in as_completed(futures):
            if collect(fut).status == "failed" and fail_fast:
                summary.aborted = True
                break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    # Recordings already running when fail-fast stopped the pool still finished: report them.
    for fut in futures:
        if fut not in collected and fut.done() and not fut.cancelled():
            collect(fut)
