"""Labelled recordings for fine-tuning: raw event files (voxelized on the fly) and RVT's
preprocessed sequences (stacked histograms), both cut into the windows preprocessing plans.

Windows follow preprocessing's plan (``events.preprocess.plan_windows``): label frames thinned
to ~10 Hz, every kept label time the exact end of a window, so both inputs see the same frames.
A raw window holds the events with ``end - window < t <= end``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from evcmae.events.container import Events
from evcmae.events.errors import EventFileError
from evcmae.events.h5 import H5EventFile, ProcessLocalH5
from evcmae.events.labels import BBOX_DTYPE, load_labels
from evcmae.events.preprocess import PreprocessConfig, filter_recording_labels, plan_windows, split_by_frame
from evcmae.events.rvt import RVTSequence, scale_boxes
from evcmae.events.validation import check_class_ids, labels_within_recording
from evcmae.finetune.classes import remap_classes


# -- recordings ---------------------------------------------------------------------------------
class _LabelFrames:
    """Label lookup shared by both recording kinds: ``_labels`` maps a window index to its boxes."""

    _labels: dict

    def labels(self, i: int) -> np.ndarray | None:
        return self._labels.get(int(i))

    @property
    def labelled(self) -> np.ndarray:
        return np.array(sorted(self._labels), dtype=np.int64)

    def gt(self) -> np.ndarray:
        parts = [self._labels[i] for i in sorted(self._labels)]
        return np.concatenate(parts) if parts else np.zeros(0, BBOX_DTYPE)


class RawRecording(_LabelFrames):
    """One ``NAME_td.h5`` (+ ``NAME_bbox.npy``): windows as events, boxes at model resolution."""

    def __init__(
        self,
        td_path,
        bbox_path=None,
        split: str = "train",
        window_us: int = 50_000,
        downsample: int = 1,
        label_cfg: PreprocessConfig | None = None,
        class_map: Sequence[int] | None = None,
        cover_all: bool = False,
    ):
        self.path, self.name = Path(td_path), Path(td_path).name.removesuffix("_td.h5")
        self.window_us, self.downsample = int(window_us), int(downsample)
        with H5EventFile(self.path) as f:
            if f.width is None or f.height is None:
                raise EventFileError(self.path, "sensor size not stated in the file (events/width, events/height)")
            self.sensor = (int(f.width), int(f.height))
            t_range = f.t_range or (0, 0)
        self.width, self.height = -(-self.sensor[0] // downsample), -(-self.sensor[1] // downsample)
        self.ends = np.zeros(0, np.int64)
        self._labels: dict[int, np.ndarray] = {}
        cfg = label_cfg or PreprocessConfig(downsample=downsample, window_ms=window_us // 1000)
        plan = None
        if bbox_path is not None and Path(bbox_path).is_file():
            labels = labels_within_recording(load_labels(bbox_path), t_range, bbox_path, self.window_us)
            if class_map is not None:
                check_class_ids(labels, len(class_map), bbox_path, "len(data.class_map)")
            labels = filter_recording_labels(labels, *self.sensor, split, cfg)
            plan = plan_windows(labels["t"], cfg.window_ms, cfg.align_ms, cfg.label_period_us)
        if plan is not None:
            frame_ts, self.ends, frame_to_repr = plan
            # scaled and remapped once, box by box, then cut into frames
            labels = scale_boxes(labels, 1.0 / downsample, self.height, self.width)
            if class_map is not None:
                labels = remap_classes(labels, class_map)
            for boxes, r in zip(split_by_frame(labels, frame_ts), frame_to_repr.tolist()):
                self._labels[int(r)] = boxes
        if cover_all or plan is None:  # a plain grid to the recording's end (inference)
            first = self.ends[0] if len(self.ends) else self.window_us
            before = np.arange(first - self.window_us, 0, -self.window_us)[::-1]
            after = np.arange(first, t_range[1] + self.window_us, self.window_us)
            grid = np.concatenate([before, after]).astype(np.int64)
            if len(self.ends):
                remap = {
                    int(np.searchsorted(grid, self.ends[r])): b for r, b in self._labels.items() if self.ends[r] in grid
                }
                self._labels = remap
            self.ends = grid
        self._file = ProcessLocalH5(self.path)

    def __len__(self) -> int:
        return len(self.ends)

    def window(self, i: int) -> Events:
        end = int(self.ends[i])
        return self._file.get().read_time_window(end - self.window_us + 1, end + 1)

    def window_start(self, i: int) -> int:
        return int(self.ends[i]) - self.window_us + 1


class RVTRecording(_LabelFrames):
    """One RVT preprocessed sequence: windows as uint8 (20, H, W) histograms."""

    def __init__(self, path, class_map: Sequence[int] | None = None):
        self.seq = RVTSequence(path)
        self.name = self.seq.name
        self.height, self.width = self.seq.shape[1], self.seq.shape[2]
        self.ends = self.seq.timestamps_us
        self._labels = {}
        for j in range(self.seq.num_label_frames):
            r, boxes = self.seq.label_frame(j, scaled=True)
            if class_map is not None:
                check_class_ids(boxes, len(class_map), self.seq.path, "len(data.class_map)")
            self._labels[r] = remap_classes(boxes, class_map) if class_map is not None else boxes

    def __len__(self) -> int:
        return len(self.seq)

    def window(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.seq.representation(i)))


LABEL_FRACTION_MODES = ("recordings", "timestamps")


def recording_classes(recording) -> set[int]:
    """Class ids with at least one box in a recording's label frames."""
    return {int(c) for boxes in recording._labels.values() for c in np.unique(boxes["class_id"])}


def select_recordings(items: Sequence, fraction: float, seed: int = 0, tries: int = 2000) -> list:
    """``round(fraction · len(items))`` whole recordings (at least one), fixed by ``seed`` and
    class-balanced: of up to ``tries`` random draws, the first that holds every class the full
    set holds (else the draw holding the most classes). Order kept."""
    n = max(1, int(round(fraction * len(items))))
    if n >= len(items):
        return list(items)
    classes = [recording_classes(r) if hasattr(r, "_labels") else set() for r in items]
    wanted = set().union(*classes)
    rng = np.random.default_rng(seed)
    best, best_cover = None, -1
    for _ in range(tries):
        chosen = np.sort(rng.permutation(len(items))[:n])
        cover = len(set().union(*(classes[i] for i in chosen)))
        if cover > best_cover:
            best, best_cover = chosen, cover
        if cover == len(wanted):
            break
    return [items[i] for i in best]


def thin_timestamps(items: Sequence, fraction: float, seed: int = 0) -> list:
    """Every recording kept, with only a ``fraction`` of its labelled timestamps (LEOD's way of
    taking a label fraction on Gen1/1Mpx): every k-th label frame, k = round(1 / fraction), from an
    offset drawn per recording by ``seed``. Windows without labels stay in the recording (the
    recurrent backbone runs through them); only the loss loses them."""
    k = max(1, int(round(1.0 / fraction)))
    rng = np.random.default_rng(seed)
    for rec in items:
        frames = sorted(rec._labels)
        offset = int(rng.integers(k))
        keep = frames[offset::k] or frames[:1]  # a recording never loses all its labels
        rec._labels = {i: rec._labels[i] for i in keep}
    return list(items)


def labelled_summary(items: Sequence) -> dict:
    """What a set of recordings holds in labels: their names, label frames and boxes."""
    return {
        "recordings": [str(r.name) for r in items],
        "label_frames": int(sum(len(r._labels) for r in items)),
        "boxes": int(sum(len(b) for r in items for b in r._labels.values())),
    }


def select_fraction(items: Sequence, fraction: float, seed: int = 0, mode: str = "recordings") -> list:
    """The labelled training data for a label-efficiency run: ``mode`` "recordings" keeps whole
    recordings (:func:`select_recordings`), "timestamps" keeps a fraction of every recording's
    label times (:func:`thin_timestamps`). Deterministic in ``seed``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    if mode not in LABEL_FRACTION_MODES:
        raise ValueError(f"label_fraction_mode must be one of {LABEL_FRACTION_MODES}, got {mode!r}")
    if fraction == 1:
        return list(items)
    if mode == "timestamps":
        return thin_timestamps(items, fraction, seed)
    return select_recordings(items, fraction, seed)
