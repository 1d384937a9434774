"""Pretraining data: pairs of temporally adjacent event windows from raw recordings.

A sample is window k of a recording (the anchor, which the masked student and the teacher see)
plus window k + 1 of the same recording (k - 1 for the last window): the frame contrastive loss
uses the neighbour as the anchor's positive, and the recording id and window index let it leave
out queue entries from the same stretch of the same recording (false negatives).

Windows are aligned to multiples of ``window_us`` from t = 0, as RVT aligns its windows, so the
windows the probe reads end exactly at label times. Only windows lying wholly inside a recording
are used. Events are read per window (``H5EventFile.read_time_window``, a binary search), never
the whole file; voxelization runs in the collate function, i.e. in the DataLoader workers.

Resuming mid-epoch must replay exactly the batches the interrupted run had not seen (the resume
test demands identical weights), so the order of an epoch is a pure function of (seed, epoch,
rank) and the train loader records how far into its epoch it got (``state_dict``, which Lightning
saves in the checkpoint for loaders that have one).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from evcmae.events.h5 import H5EventFile, ProcessLocalH5
from evcmae.events.labels import BBOX_DTYPE, filter_labels, load_labels
from evcmae.events.voxelize import VoxelBatch, Voxelizer


def find_recordings(root, splits: Sequence[str], fallback: str | None = "train") -> list[Path]:
    """Sorted ``*_td.h5`` files of the given split folders; ``fallback`` when none of them exist."""
    root = Path(root)
    present = [s for s in splits if (root / s).is_dir()]
    if not present and fallback and (root / fallback).is_dir():
        warnings.warn(f"{root}: no {'/'.join(splits)} split, using {fallback}/ for pretraining", stacklevel=2)
        present = [fallback]
    files = [f for s in present for f in sorted((root / s).glob("*_td.h5"))]
    if not files:
        raise FileNotFoundError(
            f"no *_td.h5 recordings in {root}/{{{','.join(splits)}}}" + (f" or {root}/{fallback}" if fallback else "")
        )
    return files


class _Recordings:
    """Recording handles by index, each opened once per process (``ProcessLocalH5``)."""

    def __init__(self, files: Sequence[Path]):
        self._handles = [ProcessLocalH5(f) for f in files]

    def __getitem__(self, i: int) -> H5EventFile:
        return self._handles[i].get()


def window_range(t_range: tuple[int, int] | None, window_us: int) -> range:
    """Indices k of the windows [k·w, (k+1)·w) lying wholly inside [t_first, t_last]."""
    if t_range is None:
        return range(0)
    first = -(-t_range[0] // window_us)
    stop = (t_range[1] + 1) // window_us
    return range(first, max(first, stop))


@dataclass
class WindowPair:
    anchor: object  # events.container.Events
    neighbour: object
    anchor_t0: int
    neighbour_t0: int
    rec_id: int
    win_idx: int
    nb_idx: int


class WindowPairs(Dataset):
    """Every full window of every recording as an anchor, with its neighbour ``offset`` windows later
    (earlier for the last ones). A recording needs more than ``offset`` windows to contribute."""

    def __init__(self, files: Sequence[Path], window_us: int, offset: int = 1):
        if offset < 1:
            raise ValueError(f"neighbour offset must be >= 1, got {offset}")
        self.window_us, self.offset = window_us, offset
        self.recordings = _Recordings(files)
        items, self._last = [], {}
        for rec in range(len(files)):
            with H5EventFile(files[rec]) as f:
                windows = window_range(f.t_range, window_us)
            if len(windows) > offset:
                items += [(rec, k) for k in windows]
                self._last[rec] = windows[-1]
        self.items = np.asarray(items, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> WindowPair:
        rec, k = (int(v) for v in self.items[i])
        nb = k + self.offset if k + self.offset <= self._last[rec] else k - self.offset
        f, w = self.recordings[rec], self.window_us
        return WindowPair(
            f.read_time_window(k * w, (k + 1) * w), f.read_time_window(nb * w, (nb + 1) * w), k * w, nb * w, rec, k, nb
        )


@dataclass
class PretrainBatch:
    anchor: VoxelBatch
    neighbour: VoxelBatch
    rec_ids: torch.Tensor  # (B,) long
    win_idx: torch.Tensor  # (B,) long: anchor window index
    nb_idx: torch.Tensor  # (B,) long: neighbour window index
    empty_windows: int = 0  # samples the collate left out: anchor or neighbour without events

    def to(self, device, non_blocking: bool = False) -> PretrainBatch:
        """Lightning moves any object with ``to``."""
        return PretrainBatch(
            *(v.to(device, non_blocking) for v in (self.anchor, self.neighbour)),
            *(t.to(device, non_blocking=non_blocking) for t in (self.rec_ids, self.win_idx, self.nb_idx)),
            self.empty_windows,
        )

    @property
    def batch_size(self) -> int:
        return self.anchor.batch_size


@dataclass
class PairCollate:
    """Voxelizes anchors and neighbours into two spconv-ready batches (runs in the workers).

    A sample whose anchor or neighbour window holds no event (a recording can go quiet) has
    nothing to mask, predict or contrast: it is left out and counted in ``empty_windows``; a batch
    of nothing but such samples has ``batch_size`` 0, and the module skips it."""

    voxelizer: Voxelizer

    def __call__(self, samples: list[WindowPair]) -> PretrainBatch:
        n_in = len(samples)
        samples = [s for s in samples if len(s.anchor) and len(s.neighbour)]
        anchor = self.voxelizer([s.anchor for s in samples], [s.anchor_t0 for s in samples])
        neighbour = self.voxelizer([s.neighbour for s in samples], [s.neighbour_t0 for s in samples])
        ids = lambda name: torch.tensor([getattr(s, name) for s in samples], dtype=torch.long)  # noqa: E731
        return PretrainBatch(anchor, neighbour, ids("rec_id"), ids("win_idx"), ids("nb_idx"), n_in - len(samples))


class LabelledWindows(Dataset):
    """Windows ending at label times of labelled recordings, with their (filtered) boxes, for the
    representation probe. At most ``max_windows`` label times, evenly spaced over all of them."""

    def __init__(
        self,
        files: Sequence[Path],
        window_us: int,
        width: int,
        height: int,
        max_windows: int | None = 32,
        min_box_side: float = 0.0,
    ):
        self.window_us = window_us
        self.recordings = _Recordings(files)
        self.labels, items = [], []
        for rec, f in enumerate(files):
            bbox = Path(os.fspath(f)[: -len("_td.h5")] + "_bbox.npy")
            labels = (
                filter_labels(load_labels(bbox), width, height, min_side=min_box_side)
                if bbox.exists()
                else np.zeros(0, dtype=BBOX_DTYPE)
            )
            self.labels.append(labels)
            with H5EventFile(f) as h5:
                t_range = h5.t_range
            if t_range is None:
                continue
            times = np.unique(labels["t"])
            times = times[(times >= t_range[0] + window_us) & (times <= t_range[1] + 1)]
            items += [(rec, int(t)) for t in times]
        if max_windows is not None and len(items) > max_windows:
            keep = np.unique(np.linspace(0, len(items) - 1, max_windows).round().astype(int))
            items = [items[i] for i in keep]
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        rec, t_end = self.items[i]
        labels = self.labels[rec]
        boxes = labels[labels["t"] == t_end]
        events = self.recordings[rec].read_time_window(t_end - self.window_us, t_end)
        return events, t_end - self.window_us, rec, boxes


@dataclass
class LabelledBatch:
    voxels: VoxelBatch
    boxes: torch.Tensor  # (M, 4) float: x, y, w, h in sensor pixels
    box_sample: torch.Tensor  # (M,) long: which window of the batch
    classes: torch.Tensor  # (M,) long
    groups: torch.Tensor  # (M,) long: one id per (recording, track); the probe keeps a track out of its own vote
    cell_size: tuple[int, int]  # sensor pixels per voxel (y, x), to place the boxes on the voxel grid

    def to(self, device, non_blocking: bool = False) -> LabelledBatch:
        return LabelledBatch(
            self.voxels.to(device, non_blocking),
            *(
                t.to(device, non_blocking=non_blocking)
                for t in (self.boxes, self.box_sample, self.classes, self.groups)
            ),
            self.cell_size,
        )

    @property
    def batch_size(self) -> int:
        return self.voxels.batch_size


@dataclass
class LabelledCollate:
    voxelizer: Voxelizer

    def __call__(self, samples) -> LabelledBatch:
        voxels = self.voxelizer([s[0] for s in samples], [s[1] for s in samples])
        boxes = [s[3] for s in samples]
        cat = lambda f: np.concatenate([b[f] for b in boxes]) if boxes else np.zeros(0)  # noqa: E731
        xywh = np.stack([cat("x"), cat("y"), cat("w"), cat("h")], 1).astype(np.float32).reshape(-1, 4)
        sample = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)]) if boxes else np.zeros(0)
        rec = np.concatenate([np.full(len(b), s[2]) for b, s in zip(boxes, samples)]) if boxes else np.zeros(0)
        groups = rec.astype(np.int64) * (1 << 32) + cat("track_id").astype(np.int64)
        return LabelledBatch(
            voxels,
            torch.from_numpy(xywh),
            torch.from_numpy(sample.astype(np.int64)),
            torch.from_numpy(cat("class_id").astype(np.int64)),
            torch.from_numpy(groups),
            self.voxelizer.cell_size,
        )


class EpochSampler(DistributedSampler):
    """This rank's share of a permutation that depends only on (seed, epoch), optionally starting
    part-way into the epoch (``skip``, set when resuming).

    It subclasses ``DistributedSampler`` so that Lightning leaves it in place instead of wrapping
    the loader in its own; unlike that one it needs no process group (rank and world size are
    passed in), can skip ahead, and for evaluation (``pad=False``) gives each sample to exactly
    one rank instead of repeating some to even out the ranks."""

    def __init__(
        self, size: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0, pad: bool = True
    ):
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.size, self.pad, self.skip = size, pad, 0

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.size:
            total = math.ceil(self.size / self.num_replicas) * self.num_replicas
            order = (order * math.ceil(total / self.size))[:total]
        return order[self.rank :: self.num_replicas]

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return iter(self._indices()[skip:])

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.size / self.num_replicas)
        return len(range(self.rank, self.size, self.num_replicas))


class ResumableLoader(DataLoader):
    """A DataLoader that knows how many batches of the current epoch it has handed out.

    Lightning does not prefetch from loaders with a length, so the count at checkpoint time is the
    number of batches trained on. A finished epoch is saved as the start of the next one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._served = 0

    def __iter__(self):
        self._served = 0
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict:
        epoch, served = self.sampler.epoch, self._served
        if served >= len(self):
            epoch, served = epoch + 1, 0
        return {"epoch": int(epoch), "batches": int(served)}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.set_epoch(int(state["epoch"]))
        self.sampler.skip = int(state["batches"]) * int(self.batch_size)


@dataclass
class _SynthSpec:
    preset: str | None = None
    seed: int = 0
    workers: int = 1


class PretrainDataModule(pl.LightningDataModule):
    """Windows from ``root/<split>/*_td.h5`` for pretraining, labelled windows of ``val_split``
    for the probe. With ``synth_preset`` set, a synthetic dataset of that preset is generated into
    ``root`` on first use (in ``prepare_data``, so on one process only)."""

    def __init__(
        self,
        root: str,
        width: int,
        height: int,
        splits: Sequence[str] = ("pretrain",),
        fallback_split: str | None = "train",
        val_split: str | None = "val",
        window_us: int = 50_000,
        num_bins: int = 10,
        downsample: int = 1,
        voxel_size: Sequence[int] = (1, 1),
        neighbour_offset: int = 1,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        val_max_windows: int | None = 32,
        min_box_side: float = 0.0,
        seed: int = 0,
        synth_preset: str | None = None,
        synth_seed: int = 0,
        synth_workers: int = 1,
    ):
        super().__init__()
        self.root = Path(root).absolute()
        self.splits, self.fallback_split, self.val_split = tuple(splits), fallback_split, val_split
        self.voxelizer = Voxelizer(
            int(width), int(height), int(window_us), int(num_bins), tuple(int(v) for v in voxel_size), int(downsample)
        )
        self.neighbour_offset = neighbour_offset
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.val_max_windows, self.min_box_side, self.seed = val_max_windows, min_box_side, seed
        self.synth = _SynthSpec(synth_preset, synth_seed, synth_workers)
        self.train_set: WindowPairs | None = None
        self.val_set: LabelledWindows | None = None

    def prepare_data(self) -> None:
        if self.synth.preset is not None:
            from evcmae.events.synth import ensure_generated

            ensure_generated(self.root, self.synth.preset, self.synth.seed, self.synth.workers)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            files = find_recordings(self.root, self.splits, self.fallback_split)
            self._check_sensor(files[0])
            self.train_set = WindowPairs(files, self.voxelizer.window_us, self.neighbour_offset)
            if len(self.train_set) < self.batch_size:
                raise ValueError(
                    f"{self.root}: {len(self.train_set)} windows, fewer than one batch of {self.batch_size}"
                )
        if self.val_set is None and self.val_split and (self.root / self.val_split).is_dir():
            files = sorted((self.root / self.val_split).glob("*_td.h5"))
            self.val_set = LabelledWindows(
                files,
                self.voxelizer.window_us,
                self.voxelizer.width,
                self.voxelizer.height,
                self.val_max_windows,
                self.min_box_side,
            )

    def box_short_sides(self, splits: Sequence[str] = ("train", "val")) -> np.ndarray:
        """Short side of every labelled box of ``root/<split>/*_bbox.npy``, in voxels (the label
        filter applied): what ``masking.patch_size=auto`` sizes its tubes by. Empty without labels."""
        cy, cx = self.voxelizer.cell_size
        sides = []
        for split in splits:
            for bbox in sorted((self.root / split).glob("*_bbox.npy")):
                labels = filter_labels(
                    load_labels(bbox), self.voxelizer.width, self.voxelizer.height, min_side=self.min_box_side
                )
                sides.append(np.minimum(labels["w"] / cx, labels["h"] / cy))
        return np.concatenate(sides) if sides else np.zeros(0)

    def _check_sensor(self, path: Path) -> None:
        with H5EventFile(path) as f:
            size = (f.width, f.height)
        if None not in size and size != (self.voxelizer.width, self.voxelizer.height):
            raise ValueError(
                f"{path} is a {size[0]}x{size[1]} recording but the data config says "
                f"{self.voxelizer.width}x{self.voxelizer.height}"
            )

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> ResumableLoader:
        world, rank = self._ranks()
        sampler = EpochSampler(len(self.train_set), world, rank, shuffle=True, seed=self.seed)
        return ResumableLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            collate_fn=PairCollate(self.voxelizer),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self):
        if self.val_set is None or len(self.val_set) == 0:
            return []
        world, rank = self._ranks()
        sampler = EpochSampler(len(self.val_set), world, rank, shuffle=False, pad=False)
        return DataLoader(
            self.val_set,
            batch_size=self.val_batch_size,
            sampler=sampler,
            collate_fn=LabelledCollate(self.voxelizer),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )
