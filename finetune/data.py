"""Fine-tuning data: chunks of L consecutive 50 ms windows, with boxes at the windows that end at
a label time, from raw recordings (voxelized on the fly, for the sparse encoder) or from RVT's
preprocessed layout (stacked histograms, the baseline).

The data module puts together the pieces: the recordings (``recordings.py``: the window plan,
the label fraction), the chunk samplers (``chunks.py``: stream, random, mixed) and augmentation
(``augment.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping, Sequence

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from evcmae.events.preprocess import PreprocessConfig
from evcmae.events.rvt import list_sequences
from evcmae.events.voxelize import Voxelizer
from evcmae.finetune.chunks import ChunkBatchSampler, ChunkDataset, Collate, sequential_keys
from evcmae.finetune.classes import class_names
from evcmae.finetune.evaluation import EvalConfig
from evcmae.finetune.recordings import RawRecording, RVTRecording, labelled_summary, select_fraction


# -- the data module ----------------------------------------------------------------------------
class FinetuneDataModule(pl.LightningDataModule):
    """Raw recordings (``input="sparse"``) or their RVT preprocessed copy (``"histogram"``).

    With ``synth_preset`` the synthetic dataset is generated into ``root`` on first use, and for
    the histogram input preprocessed into ``rvt_root``. ``classes`` names the class ids the labels
    carry (after ``class_map``); ``eval`` is this data's evaluation filter
    (``finetune.evaluation.EvalConfig``), which the module scores its predictions with."""

    def __init__(
        self,
        root: str,
        input: str = "sparse",
        rvt_root: str | None = None,
        width: int = 640,
        height: int = 360,
        window_us: int = 50_000,
        num_bins: int = 10,
        downsample: int = 2,
        voxel_size: Sequence[int] = (1, 1),
        seq_len: int = 5,
        batch_size: int = 2,
        sampling: str = "stream",
        stream_fraction: float = 0.5,
        num_workers: int = 0,
        class_map: Sequence[int] | None = None,
        label_fraction: float = 1.0,
        label_fraction_mode: str = "recordings",
        min_side: float = 5.0,
        max_width_fraction: float = 0.9,
        align_ms: int = 100,
        min_diag: float = 0.0,
        label_period_us: int | None = None,
        keep_classes: Sequence[int] | None = None,
        partition_split: int = 2,
        augment: dict | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        min_box_side: float = 1.0,
        seed: int = 0,
        subset_seed: int | None = None,
        synth_preset: str | None = None,
        synth_seed: int = 0,
        synth_workers: int = 1,
        classes: str | Sequence[str] = "etram8",
        eval: Mapping | None = None,
    ):
        super().__init__()
        if root in (None, "", "???"):
            raise ValueError("data.root is not set: point it at the dataset folder (train/ val/ test/), data.root=...")
        self.root = Path(root).absolute()
        self.input = input
        self.sensor = (int(width), int(height))
        self.rvt_root = Path(rvt_root).absolute() if rvt_root else self.root.with_name(self.root.name + "_rvt")
        self.voxelizer = Voxelizer(
            int(width), int(height), int(window_us), int(num_bins), tuple(int(v) for v in voxel_size), int(downsample)
        )
        self.downsample, self.seq_len, self.batch_size = int(downsample), int(seq_len), int(batch_size)
        self.sampling, self.stream_fraction, self.num_workers = sampling, stream_fraction, num_workers
        self.class_names = class_names(classes)
        self.class_map = None if class_map is None else [int(c) for c in class_map]
        if self.class_map is not None and max(self.class_map, default=0) >= len(self.class_names):
            raise ValueError(
                f"data.class_map sends labels to class {max(self.class_map)}, but data.classes "
                f"({classes if isinstance(classes, str) else 'the list'}) has {len(self.class_names)} classes"
            )
        self.eval_config = EvalConfig(**dict(eval or {}))
        self.label_fraction, self.seed = float(label_fraction), int(seed)
        self._subset_seed = None if subset_seed is None else int(subset_seed)
        self.label_fraction_mode = label_fraction_mode
        # RVT's attention partition for this sensor (partition_split_32; Gen1: 1): a property of the
        # frame size, so the data config carries it and the detector reads it from there.
        self.partition_split = int(partition_split)
        self.label_cfg = dict(
            min_side=min_side,
            max_width_fraction=max_width_fraction,
            align_ms=align_ms,
            min_diag=min_diag,
            label_period_us=label_period_us,
            keep_classes=None if keep_classes is None else tuple(int(c) for c in keep_classes),
        )
        self.augment = augment
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.min_box_side = float(min_box_side)
        self.synth = (synth_preset, synth_seed, synth_workers)
        self._recordings: dict[str, list] = {}
        self._train_subset: dict = {}

    @property
    def subset_seed(self) -> int:
        """The seed that draws the labelled subset: ``subset_seed`` if given, else ``seed``. Apart,
        the subset stays while the training seed changes (evcmae-study's finetune_repeats)."""
        return self.seed if self._subset_seed is None else self._subset_seed

    @property
    def frame_hw(self) -> tuple[int, int]:
        _, h, w = self.voxelizer.spatial_shape
        return h, w

    def prepare_data(self) -> None:
        preset, seed, workers = self.synth
        if preset is not None:
            from evcmae.events.synth import ensure_generated

            if ensure_generated(self.root, preset, seed, workers) and self.rvt_root.is_dir():
                self._remove_stale_rvt_cache()
        if self.input == "histogram" and not self.rvt_root.is_dir():
            from evcmae.events.preprocess import preprocess_dataset

            print(f"evcmae: preprocessing {self.root} into RVT's layout at {self.rvt_root}")
            cfg = PreprocessConfig(
                downsample=self.downsample,
                window_ms=self.voxelizer.window_us // 1000,
                bins=self.voxelizer.num_bins,
                width=self.sensor[0],  # for recordings that do not state it (Gen1 DAT)
                height=self.sensor[1],
                **self.label_cfg,
            )
            preprocess_dataset(self.root, self.rvt_root, cfg)

    def _remove_stale_rvt_cache(self) -> None:
        """The histogram cache was preprocessed from the recordings just generated again, so it is
        made again too; a folder holding anything but split folders is not ours to remove."""
        others = sorted(p.name for p in self.rvt_root.iterdir() if p.name not in ("train", "val", "test"))
        if others:
            raise SystemExit(
                f"{self.rvt_root}: preprocessed from recordings that were just generated again, and it holds "
                f"{others[0]!r} besides split folders; move it away so that it can be preprocessed again"
            )
        print(f"evcmae: removing {self.rvt_root}, preprocessed from the earlier recordings", flush=True)
        shutil.rmtree(self.rvt_root)

    def recordings(self, split: str) -> list:
        """Recordings of a split (``train``/``val``/``test`` or a folder name), cached."""
        folder = self.splits.get(split, split)
        if folder not in self._recordings:
            if self.input == "histogram":
                recs = [RVTRecording(p, self.class_map) for p in list_sequences(self.rvt_root / folder)]
            else:
                cfg = PreprocessConfig(
                    downsample=self.downsample, window_ms=self.voxelizer.window_us // 1000, **self.label_cfg
                )
                recs = []
                for td in sorted((self.root / folder).glob("*_td.h5")):
                    bbox = td.with_name(td.name.removesuffix("_td.h5") + "_bbox.npy")
                    recs.append(
                        RawRecording(td, bbox, folder, self.voxelizer.window_us, self.downsample, cfg, self.class_map)
                    )
            if not recs:
                raise FileNotFoundError(
                    f"no recordings in split '{folder}' under "
                    f"{self.rvt_root if self.input == 'histogram' else self.root}"
                )
            if split == "train":
                recs = [r for r in recs if len(r.labelled)]
                available = len(recs)
                recs = select_fraction(recs, self.label_fraction, self.subset_seed, self.label_fraction_mode)
                self._train_subset = {
                    "label_fraction": self.label_fraction,
                    "mode": self.label_fraction_mode,
                    "seed": self.subset_seed,
                    "of_recordings": available,
                    **labelled_summary(recs),
                }
            self._recordings[folder] = recs
        return self._recordings[folder]

    def labelled_subset(self) -> dict:
        """The labelled training data this run's label fraction, mode and seed select: recording
        names, label frames and boxes (seeds can draw the same recordings; this shows it)."""
        self.recordings("train")
        return dict(self._train_subset)

    def _collate(self) -> Collate:
        return Collate(self.voxelizer if self.input == "sparse" else None)

    def _ranks(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        recs = self.recordings("train")
        rank, world = self._ranks()
        sampler = ChunkBatchSampler(
            [len(r) for r in recs],
            [r.labelled for r in recs],
            self.batch_size,
            self.seq_len,
            self.sampling,
            self.stream_fraction,
            augment=self.augment is not None,
            seed=self.seed,
            rank=rank,
            num_replicas=world,
        )
        dataset = ChunkDataset(recs, self.seq_len, self.augment, self.min_box_side)
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self._collate(),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def eval_dataloader(self, split: str) -> DataLoader:
        recs = self.recordings(split)
        dataset = ChunkDataset(recs, self.seq_len, None, self.min_box_side)
        return DataLoader(
            dataset,
            batch_sampler=sequential_keys([len(r) for r in recs], self.seq_len),
            collate_fn=self._collate(),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")
