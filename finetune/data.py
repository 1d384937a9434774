"""Fine-tuning data: chunks of L consecutive 50 ms windows, with boxes at the windows that end at
a label time, from raw recordings (voxelized on the fly, for the sparse encoder) or from RVT's
preprocessed layout (stacked histograms, the baseline).

Windows follow preprocessing's plan (``events.preprocess.plan_windows``): label frames thinned
to ~10 Hz, every kept label time the exact end of a window, so both inputs see the same frames.
A raw window holds the events with ``end - window < t <= end``.

Sampling (RVT's three modes), all by a batch sampler yielding ``ChunkKey`` tuples:

* ``stream``: each batch slot walks its own list of recordings chunk by chunk, so LSTM states
  carry across chunks; ``is_first`` marks a recording's first chunk (the module resets that
  slot's state);
* ``random``: chunks ending at a labelled window, anywhere, each starting from a zero state;
* ``mixed``: the first ``stream_fraction`` of the slots stream, the rest are random.

Augmentation (train only) is drawn once per recording pass from the key's seed, so it is the same
for every window and box of a sequence — and of every chunk of a streamed recording, whose carried
state would otherwise see the scene jump.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from evcmae.events.container import Events
from evcmae.events.h5 import H5EventFile, ProcessLocalH5
from evcmae.events.labels import BBOX_DTYPE, load_labels
from evcmae.events.preprocess import PreprocessConfig, filter_recording_labels, plan_windows, split_by_frame
from evcmae.events.rvt import RVTSequence, list_sequences, scale_boxes
from evcmae.events.voxelize import Voxelizer, VoxelBatch
from evcmae.finetune.detector import boxes_to_targets
from evcmae.finetune.evaluation import remap_classes

SAMPLING = ("stream", "random", "mixed")


# -- augmentation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Augment:
    """Zoom by ``scale`` about the origin then shift by (ox, oy), then flip horizontally."""

    flip: bool = False
    scale: float = 1.0
    ox: float = 0.0
    oy: float = 0.0

    @property
    def identity(self) -> bool:
        return not self.flip and self.scale == 1.0 and self.ox == 0.0 and self.oy == 0.0

    @classmethod
    def draw(cls, rng: np.random.Generator, width: int, height: int, flip_prob: float = 0.5,
             zoom_prob: float = 0.5, zoom_range: Sequence[float] = (0.8, 1.5)) -> "Augment":
        flip = bool(rng.random() < flip_prob)
        if rng.random() >= zoom_prob:
            return cls(flip)
        s = float(rng.uniform(*zoom_range))
        # Zoom in: the shift keeps the frame covered; zoom out: the shrunk scene stays inside.
        ox = float(rng.uniform(*sorted((0.0, width - s * width))))
        oy = float(rng.uniform(*sorted((0.0, height - s * height))))
        return cls(flip, s, ox, oy)

    def boxes(self, boxes: np.ndarray, width: int, height: int, min_side: float = 1.0) -> np.ndarray:
        if self.identity or not len(boxes):
            return boxes
        out = boxes.copy()
        x0 = boxes["x"] * self.scale + self.ox
        y0 = boxes["y"] * self.scale + self.oy
        x1 = np.clip(x0 + boxes["w"] * self.scale, 0, width)
        y1 = np.clip(y0 + boxes["h"] * self.scale, 0, height)
        x0, y0 = np.clip(x0, 0, width), np.clip(y0, 0, height)
        if self.flip:
            x0, x1 = width - x1, width - x0
        out["x"], out["y"], out["w"], out["h"] = x0, y0, x1 - x0, y1 - y0
        return out[(out["w"] >= min_side) & (out["h"] >= min_side)]

    def events(self, ev: Events, rng: np.random.Generator, width: int, height: int) -> Events:
        """Events in sensor pixels. Zooming in spreads each event over the ``scale``-wide cell it
        maps to (uniform sub-pixel jitter), so a magnified scene has no regular holes."""
        if self.identity or not len(ev):
            return ev
        x, y = ev.x.astype(np.float64), ev.y.astype(np.float64)
        if self.scale != 1.0:
            jitter = self.scale > 1.0
            x = (x + (rng.random(len(x)) if jitter else 0.5)) * self.scale + self.ox
            y = (y + (rng.random(len(y)) if jitter else 0.5)) * self.scale + self.oy
            x, y = np.floor(x), np.floor(y)
        if self.flip:
            x = width - 1 - x
        keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        return Events(x=x[keep], y=y[keep], t=ev.t[keep], p=ev.p[keep], width=width, height=height)

    def dense(self, frame: torch.Tensor) -> torch.Tensor:
        """A (C, H, W) frame with the same transform (nearest neighbour, zeros outside)."""
        if self.identity:
            return frame
        c, h, w = frame.shape
        if self.scale != 1.0 or self.ox or self.oy:
            u = torch.arange(w, dtype=torch.float32) + 0.5
            v = torch.arange(h, dtype=torch.float32) + 0.5
            src_x = (u - self.ox) / self.scale
            src_y = (v - self.oy) / self.scale
            gx = (2 * src_x / w - 1).view(1, w).expand(h, w)
            gy = (2 * src_y / h - 1).view(h, 1).expand(h, w)
            grid = torch.stack((gx, gy), -1)[None]
            frame = F.grid_sample(frame[None].float(), grid, mode="nearest", padding_mode="zeros",
                                  align_corners=False)[0].to(frame.dtype)
        if self.flip:
            frame = frame.flip(-1)
        return frame


# -- recordings ---------------------------------------------------------------------------------
class _LabelFrames:
    """Label lookup shared by both recording kinds: ``_labels`` maps a window index to its boxes."""

    _labels: dict

    def labels(self, i: int) -> Optional[np.ndarray]:
        return self._labels.get(int(i))

    @property
    def labelled(self) -> np.ndarray:
        return np.array(sorted(self._labels), dtype=np.int64)

    def gt(self) -> np.ndarray:
        parts = [self._labels[i] for i in sorted(self._labels)]
        return np.concatenate(parts) if parts else np.zeros(0, BBOX_DTYPE)


class RawRecording(_LabelFrames):
    """One ``NAME_td.h5`` (+ ``NAME_bbox.npy``): windows as events, boxes at model resolution."""

    def __init__(self, td_path, bbox_path=None, split: str = "train", window_us: int = 50_000,
                 downsample: int = 1, label_cfg: Optional[PreprocessConfig] = None,
                 class_map: Optional[Sequence[int]] = None, cover_all: bool = False):
        self.path, self.name = Path(td_path), Path(td_path).name.removesuffix("_td.h5")
        self.window_us, self.downsample = int(window_us), int(downsample)
        with H5EventFile(self.path) as f:
            if f.width is None or f.height is None:
                raise ValueError(f"{self.path}: sensor size not stated in the file")
            self.sensor = (int(f.width), int(f.height))
            t_range = f.t_range or (0, 0)
        self.width, self.height = -(-self.sensor[0] // downsample), -(-self.sensor[1] // downsample)
        self.ends = np.zeros(0, np.int64)
        self._labels: dict[int, np.ndarray] = {}
        cfg = label_cfg or PreprocessConfig(downsample=downsample, window_ms=window_us // 1000)
        plan = None
        if bbox_path is not None and Path(bbox_path).is_file():
            labels = filter_recording_labels(load_labels(bbox_path), *self.sensor, split, cfg)
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
                remap = {int(np.searchsorted(grid, self.ends[r])): b for r, b in self._labels.items()
                         if self.ends[r] in grid}
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

    def __init__(self, path, class_map: Optional[Sequence[int]] = None):
        self.seq = RVTSequence(path)
        self.name = self.seq.name
        self.height, self.width = self.seq.shape[1], self.seq.shape[2]
        self.ends = self.seq.timestamps_us
        self._labels = {}
        for j in range(self.seq.num_label_frames):
            r, boxes = self.seq.label_frame(j, scaled=True)
            self._labels[r] = remap_classes(boxes, class_map) if class_map is not None else boxes

    def __len__(self) -> int:
        return len(self.seq)

    def window(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.seq.representation(i)))


def select_fraction(items: Sequence, fraction: float, seed: int = 0) -> list:
    """A deterministic subset (at least one) for label-efficiency studies; order kept."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(items)
    n = max(1, int(round(fraction * len(items))))
    chosen = np.sort(np.random.default_rng(seed).permutation(len(items))[:n])
    return [items[i] for i in chosen]


# -- chunks and batches -------------------------------------------------------------------------
class ChunkKey(NamedTuple):
    recording: int
    start: int
    is_first: bool
    aug_seed: int  # -1: no augmentation


@dataclass
class ChunkBatch:
    """L time steps of B chunks. ``inputs[l]``: a VoxelBatch or (B, 20, H, W) uint8 tensor;
    ``targets[l]``: per-sample (n, 5) tensors, or None where window l of sample b has no label
    (``labelled[l, b]``)."""

    inputs: list
    targets: List[List[Optional[torch.Tensor]]]
    labelled: torch.Tensor  # (L, B) bool
    is_first: torch.Tensor  # (B,) bool
    end_times: torch.Tensor  # (L, B) int64
    recordings: List[int]
    valid: torch.Tensor  # (L, B) bool: False past a recording's end (padding)

    @property
    def batch_size(self) -> int:
        return len(self.recordings)

    def to(self, device, non_blocking: bool = False) -> "ChunkBatch":
        def move(x):
            if isinstance(x, VoxelBatch):  # voxels always moved blocking, as before
                return x.to(device)
            return x.to(device, non_blocking=non_blocking)

        return ChunkBatch([move(x) for x in self.inputs],
                          [[None if t is None else t.to(device) for t in step] for step in self.targets],
                          self.labelled, self.is_first.to(device), self.end_times, self.recordings, self.valid)


class ChunkDataset(Dataset):
    """Map-style over ``ChunkKey``s (from the batch samplers): one chunk's windows and boxes."""

    def __init__(self, recordings: Sequence, seq_len: int = 5, augment: Optional[dict] = None,
                 min_box_side: float = 1.0):
        self.recordings, self.seq_len = list(recordings), int(seq_len)
        self.augment, self.min_box_side = dict(augment or {}), float(min_box_side)

    def __len__(self) -> int:
        return sum(len(r) for r in self.recordings)

    def __getitem__(self, key: ChunkKey) -> dict:
        rec = self.recordings[key.recording]
        rng = np.random.default_rng(key.aug_seed) if key.aug_seed >= 0 else None
        aug = Augment.draw(rng, rec.width, rec.height, **self.augment) if rng is not None else Augment()
        event_rng = np.random.default_rng([key.aug_seed if key.aug_seed >= 0 else 0, key.start])
        steps = []
        for i in range(key.start, key.start + self.seq_len):
            if i >= len(rec):
                steps.append(None)
                continue
            x = rec.window(i)
            if isinstance(x, Events):
                sensor = rec.sensor
                ev_aug = Augment(aug.flip, aug.scale, aug.ox * rec.downsample, aug.oy * rec.downsample)
                x = ev_aug.events(x, event_rng, *sensor)
                start = rec.window_start(i)
            else:
                x, start = aug.dense(x), None
            boxes = rec.labels(i)
            if boxes is not None:
                boxes = aug.boxes(boxes, rec.width, rec.height, self.min_box_side)
            steps.append({"x": x, "start": start, "boxes": boxes, "end": int(rec.ends[i])})
        return {"steps": steps, "key": key}


class Collate:
    """Voxelizes in the loader (workers when ``num_workers`` > 0), one VoxelBatch per time step."""

    def __init__(self, voxelizer: Optional[Voxelizer] = None):
        self.voxelizer = voxelizer

    def __call__(self, samples: list[dict]) -> ChunkBatch:
        L, B = len(samples[0]["steps"]), len(samples)
        inputs, targets = [], []
        labelled = torch.zeros(L, B, dtype=torch.bool)
        valid = torch.zeros(L, B, dtype=torch.bool)
        ends = torch.full((L, B), -1, dtype=torch.int64)
        for l in range(L):
            steps = [s["steps"][l] for s in samples]
            if self.voxelizer is not None:
                empty = Events.empty(self.voxelizer.width, self.voxelizer.height)
                inputs.append(self.voxelizer([st["x"] if st else empty for st in steps],
                                             [st["start"] if st else 0 for st in steps]))
            else:
                shape = next(st["x"].shape for s in samples for st in s["steps"] if st)  # for padding
                inputs.append(torch.stack([st["x"] if st else torch.zeros(shape, dtype=torch.uint8) for st in steps]))
            row = []
            for b, st in enumerate(steps):
                if st is None:
                    row.append(None)
                    continue
                valid[l, b], ends[l, b] = True, st["end"]
                if st["boxes"] is None:
                    row.append(None)
                    continue
                bx = st["boxes"]
                xywh = torch.from_numpy(np.stack([bx["x"], bx["y"], bx["w"], bx["h"]], 1).astype(np.float32))
                row.append(boxes_to_targets(xywh, torch.from_numpy(bx["class_id"].astype(np.int64))))
                labelled[l, b] = True
            targets.append(row)
        keys = [s["key"] for s in samples]
        return ChunkBatch(inputs, targets, labelled, torch.tensor([k.is_first for k in keys]), ends,
                          [k.recording for k in keys], valid)


class ChunkBatchSampler(Sampler):
    """Batches of ``ChunkKey`` for the three sampling modes (module docstring). Deterministic per
    (seed, epoch); under DDP each rank streams its own share of the recordings."""

    def __init__(self, lengths: Sequence[int], labelled: Sequence[np.ndarray], batch_size: int,
                 seq_len: int, mode: str = "stream", stream_fraction: float = 0.5, augment: bool = True,
                 seed: int = 0, rank: int = 0, num_replicas: int = 1):
        if mode not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {mode!r}")
        self.lengths, self.labelled = list(lengths), [np.asarray(x) for x in labelled]
        self.batch_size, self.seq_len, self.mode = int(batch_size), int(seq_len), mode
        self.augment, self.seed, self.epoch = augment, int(seed), 0
        self.rank, self.num_replicas = rank, num_replicas
        n_stream = {"stream": self.batch_size, "random": 0}.get(mode, round(self.batch_size * stream_fraction))
        self.n_stream = int(min(max(n_stream, 0), self.batch_size))
        # random-access chunks: each labelled window is the last of its chunk
        self.random_chunks = [(r, max(0, int(j) - self.seq_len + 1))
                              for r, lab in enumerate(self.labelled) for j in lab]
        if self.n_stream < self.batch_size and not self.random_chunks:
            raise ValueError("random-access sampling needs labelled windows; none found")
        self.streams = self._streams(np.random.default_rng([self.seed, 0])) if self.n_stream else []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _chunks(self, r: int) -> int:
        return math.ceil(self.lengths[r] / self.seq_len)

    def _streams(self, rng) -> list[list[int]]:
        """Recordings per stream slot, balanced by chunk count (longest first to the emptiest)."""
        mine = [r for r in rng.permutation(len(self.lengths)).tolist() if r % self.num_replicas == self.rank] \
            or list(range(len(self.lengths)))
        streams = [[] for _ in range(self.n_stream)]
        load = [0] * self.n_stream
        for r in sorted(mine, key=lambda r: -self._chunks(r)):
            k = int(np.argmin(load))
            streams[k].append(r)
            load[k] += self._chunks(r)
        for k, s in enumerate(streams):  # more slots than recordings: reuse them
            if not s:
                s.append(mine[k % len(mine)])
        return streams

    def _stream_keys(self, recordings: list[int], rng) -> Iterator[ChunkKey]:
        while True:  # cycles, so a short stream keeps its slot filled until the epoch ends
            for r in recordings:
                seed = int(rng.integers(2 ** 31)) if self.augment else -1
                for c in range(self._chunks(r)):
                    yield ChunkKey(r, c * self.seq_len, c == 0, seed)

    def __len__(self) -> int:
        if self.n_stream == 0:
            return max(1, len(self.random_chunks) // self.batch_size)
        return max(sum(self._chunks(r) for r in s) for s in self.streams)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        iters = [self._stream_keys(s, rng) for s in self.streams]
        for _ in range(len(self)):
            batch = [next(it) for it in iters]
            for _ in range(self.batch_size - self.n_stream):
                r, start = self.random_chunks[int(rng.integers(len(self.random_chunks)))]
                batch.append(ChunkKey(r, start, True, int(rng.integers(2 ** 31)) if self.augment else -1))
            yield batch


def sequential_keys(lengths: Sequence[int], seq_len: int) -> list[list[ChunkKey]]:
    """Evaluation order: every recording whole, one at a time, chunk after chunk."""
    return [[ChunkKey(r, c * seq_len, c == 0, -1)] for r, n in enumerate(lengths)
            for c in range(math.ceil(n / seq_len))]


# -- the data module ----------------------------------------------------------------------------
class FinetuneDataModule(pl.LightningDataModule):
    """Raw recordings (``input="sparse"``) or their RVT preprocessed copy (``"histogram"``).

    With ``synth_preset`` the synthetic dataset is generated into ``root`` on first use, and for
    the histogram input preprocessed into ``rvt_root``."""

    def __init__(self, root: str, input: str = "sparse", rvt_root: Optional[str] = None,
                 width: int = 640, height: int = 360, window_us: int = 50_000, num_bins: int = 10,
                 downsample: int = 2, voxel_size: Sequence[int] = (1, 1), seq_len: int = 5,
                 batch_size: int = 2, sampling: str = "stream", stream_fraction: float = 0.5,
                 num_workers: int = 0, class_map: Optional[Sequence[int]] = None,
                 label_fraction: float = 1.0, min_side: float = 5.0, max_width_fraction: float = 0.9,
                 align_ms: int = 100, augment: Optional[dict] = None, train_split: str = "train",
                 val_split: str = "val", test_split: str = "test", min_box_side: float = 1.0,
                 seed: int = 0, synth_preset: Optional[str] = None, synth_seed: int = 0,
                 synth_workers: int = 1, **_ignored):
        super().__init__()
        self.root = Path(root).absolute()
        self.input = input
        self.rvt_root = Path(rvt_root).absolute() if rvt_root else self.root.with_name(self.root.name + "_rvt")
        self.voxelizer = Voxelizer(int(width), int(height), int(window_us), int(num_bins),
                                   tuple(int(v) for v in voxel_size), int(downsample))
        self.downsample, self.seq_len, self.batch_size = int(downsample), int(seq_len), int(batch_size)
        self.sampling, self.stream_fraction, self.num_workers = sampling, stream_fraction, num_workers
        self.class_map = None if class_map is None else [int(c) for c in class_map]
        self.label_fraction, self.seed = float(label_fraction), int(seed)
        self.label_cfg = dict(min_side=min_side, max_width_fraction=max_width_fraction, align_ms=align_ms)
        self.augment = augment
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.min_box_side = float(min_box_side)
        self.synth = (synth_preset, synth_seed, synth_workers)
        self._recordings: dict[str, list] = {}

    @property
    def frame_hw(self) -> tuple[int, int]:
        _, h, w = self.voxelizer.spatial_shape
        return h, w

    def prepare_data(self) -> None:
        preset, seed, workers = self.synth
        if preset is not None:
            from evcmae.events.synth import ensure_generated

            ensure_generated(self.root, preset, seed, workers)
        if self.input == "histogram" and not self.rvt_root.is_dir():
            from evcmae.events.preprocess import preprocess_dataset

            print(f"evcmae: preprocessing {self.root} into RVT's layout at {self.rvt_root}")
            cfg = PreprocessConfig(downsample=self.downsample, window_ms=self.voxelizer.window_us // 1000,
                                   bins=self.voxelizer.num_bins, **self.label_cfg)
            preprocess_dataset(self.root, self.rvt_root, cfg)

    def recordings(self, split: str) -> list:
        """Recordings of a split (``train``/``val``/``test`` or a folder name), cached."""
        folder = self.splits.get(split, split)
        if folder not in self._recordings:
            if self.input == "histogram":
                recs = [RVTRecording(p, self.class_map) for p in list_sequences(self.rvt_root / folder)]
            else:
                cfg = PreprocessConfig(downsample=self.downsample, window_ms=self.voxelizer.window_us // 1000,
                                       **self.label_cfg)
                recs = []
                for td in sorted((self.root / folder).glob("*_td.h5")):
                    bbox = td.with_name(td.name.removesuffix("_td.h5") + "_bbox.npy")
                    recs.append(RawRecording(td, bbox, folder, self.voxelizer.window_us, self.downsample,
                                             cfg, self.class_map))
            if not recs:
                raise FileNotFoundError(f"no recordings in split '{folder}' under "
                                        f"{self.rvt_root if self.input == 'histogram' else self.root}")
            if split == "train":
                recs = [r for r in recs if len(r.labelled)]
                recs = select_fraction(recs, self.label_fraction, self.seed)
            self._recordings[folder] = recs
        return self._recordings[folder]

    def _collate(self) -> Collate:
        return Collate(self.voxelizer if self.input == "sparse" else None)

    def _ranks(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        recs = self.recordings("train")
        rank, world = self._ranks()
        sampler = ChunkBatchSampler([len(r) for r in recs], [r.labelled for r in recs], self.batch_size,
                                    self.seq_len, self.sampling, self.stream_fraction,
                                    augment=self.augment is not None, seed=self.seed, rank=rank, num_replicas=world)
        dataset = ChunkDataset(recs, self.seq_len, self.augment, self.min_box_side)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=self._collate(),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def eval_dataloader(self, split: str) -> DataLoader:
        recs = self.recordings(split)
        dataset = ChunkDataset(recs, self.seq_len, None, self.min_box_side)
        return DataLoader(dataset, batch_sampler=sequential_keys([len(r) for r in recs], self.seq_len),
                          collate_fn=self._collate(), num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")
