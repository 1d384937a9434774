"""Chunks of L consecutive windows, their batches and the samplers that order them.

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
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from evcmae.events.container import Events
from evcmae.events.voxelize import VoxelBatch, Voxelizer
from evcmae.finetune.augment import Augment
from evcmae.finetune.detector import boxes_to_targets

SAMPLING = ("stream", "random", "mixed")


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
    targets: list[list[torch.Tensor | None]]
    labelled: torch.Tensor  # (L, B) bool
    is_first: torch.Tensor  # (B,) bool
    end_times: torch.Tensor  # (L, B) int64
    recordings: list[int]
    valid: torch.Tensor  # (L, B) bool: False past a recording's end (padding)

    @property
    def batch_size(self) -> int:
        return len(self.recordings)

    def to(self, device, non_blocking: bool = False) -> ChunkBatch:
        def move(x):
            if isinstance(x, VoxelBatch):  # voxels always moved blocking, as before
                return x.to(device)
            return x.to(device, non_blocking=non_blocking)

        return ChunkBatch(
            [move(x) for x in self.inputs],
            [[None if t is None else t.to(device) for t in step] for step in self.targets],
            self.labelled,
            self.is_first.to(device),
            self.end_times,
            self.recordings,
            self.valid,
        )


class ChunkDataset(Dataset):
    """Map-style over ``ChunkKey``s (from the batch samplers): one chunk's windows and boxes."""

    def __init__(self, recordings: Sequence, seq_len: int = 5, augment: dict | None = None, min_box_side: float = 1.0):
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

    def __init__(self, voxelizer: Voxelizer | None = None):
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
                inputs.append(
                    self.voxelizer(
                        [st["x"] if st else empty for st in steps], [st["start"] if st else 0 for st in steps]
                    )
                )
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
        return ChunkBatch(
            inputs,
            targets,
            labelled,
            torch.tensor([k.is_first for k in keys]),
            ends,
            [k.recording for k in keys],
            valid,
        )


class ChunkBatchSampler(Sampler):
    """Batches of ``ChunkKey`` for the three sampling modes (module docstring). Deterministic per
    (seed, epoch); under DDP each rank streams its own share of the recordings."""

    def __init__(
        self,
        lengths: Sequence[int],
        labelled: Sequence[np.ndarray],
        batch_size: int,
        seq_len: int,
        mode: str = "stream",
        stream_fraction: float = 0.5,
        augment: bool = True,
        seed: int = 0,
        rank: int = 0,
        num_replicas: int = 1,
    ):
        if mode not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {mode!r}")
        self.lengths, self.labelled = list(lengths), [np.asarray(x) for x in labelled]
        self.batch_size, self.seq_len, self.mode = int(batch_size), int(seq_len), mode
        self.augment, self.seed, self.epoch = augment, int(seed), 0
        self.rank, self.num_replicas = rank, num_replicas
        n_stream = {"stream": self.batch_size, "random": 0}.get(mode, round(self.batch_size * stream_fraction))
        self.n_stream = int(min(max(n_stream, 0), self.batch_size))
        # random-access chunks: each labelled window is the last of its chunk
        self.random_chunks = [
            (r, max(0, int(j) - self.seq_len + 1)) for r, lab in enumerate(self.labelled) for j in lab
        ]
        if self.n_stream < self.batch_size and not self.random_chunks:
            raise ValueError("random-access sampling needs labelled windows; none found")
        self.streams = self._streams(np.random.default_rng([self.seed, 0])) if self.n_stream else []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _chunks(self, r: int) -> int:
        return math.ceil(self.lengths[r] / self.seq_len)

    def _streams(self, rng) -> list[list[int]]:
        """Recordings per stream slot, balanced by chunk count (longest first to the emptiest)."""
        mine = [r for r in rng.permutation(len(self.lengths)).tolist() if r % self.num_replicas == self.rank] or list(
            range(len(self.lengths))
        )
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
                seed = int(rng.integers(2**31)) if self.augment else -1
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
                batch.append(ChunkKey(r, start, True, int(rng.integers(2**31)) if self.augment else -1))
            yield batch


def sequential_keys(lengths: Sequence[int], seq_len: int) -> list[list[ChunkKey]]:
    """Evaluation order: every recording whole, one at a time, chunk after chunk."""
    return [
        [ChunkKey(r, c * seq_len, c == 0, -1)] for r, n in enumerate(lengths) for c in range(math.ceil(n / seq_len))
    ]
