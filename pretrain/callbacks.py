"""Callbacks that turn a pretraining run into files: the exported backbone, the final metrics a
sweep summary reads, and (for checking DDP) each rank's teacher and queue."""

from __future__ import annotations

import json
import math
import os
from collections import deque
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from evcmae.pretrain.export import export_backbones


class BackboneExport(pl.Callback):
    """At the end of fit, writes student/teacher backbone state dicts and ``backbone.json`` into
    ``dirpath`` (one process only) and says where they are."""

    def __init__(self, dirpath: str):
        self.dirpath = dirpath
        self.paths: dict | None = None

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module) -> None:
        voxelizer = getattr(trainer.datamodule, "voxelizer", None)
        self.paths = export_backbones(
            self.dirpath,
            pl_module.student["backbone"],
            pl_module.teacher["backbone"],
            voxelizer,
            {"global_step": int(trainer.global_step), **pl_module.export_record()},
            parts=pl_module.export_parts(),
        )
        names = ", ".join(Path(v).name for v in self.paths.values())
        print(f"evcmae: exported backbone weights to {self.dirpath} ({names})")


class FinalMetrics(pl.Callback):
    """Writes ``path`` (JSON): each training metric averaged over the last ``window`` logged steps
    (a single step's loss is too noisy to compare runs by), the latest validation metrics, and the
    step count. Rewritten after fit and after each validation, so it always holds the latest."""

    def __init__(self, path: str, window: int = 20, prefixes=("train/", "probe/")):
        self.path, self.window, self.prefixes = path, int(window), tuple(prefixes)
        self._recent: dict[str, deque] = {}
        self.metrics: dict = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/"):
                # kept as tensors: float() here would sync a GPU on every step
                value = value.detach().clone() if torch.is_tensor(value) else float(value)
                self._recent.setdefault(key, deque(maxlen=self.window)).append(value)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._write(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._write(trainer)

    @rank_zero_only
    def _write(self, trainer) -> None:
        metrics = {k: sum(float(x) for x in v) / len(v) for k, v in sorted(self._recent.items()) if v}
        for key, value in trainer.callback_metrics.items():
            if key.startswith(self.prefixes) and not key.startswith("train/"):
                metrics[key] = float(value)
        metrics = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
        self.metrics = {"global_step": int(trainer.global_step), **metrics}
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump(self.metrics, f, indent=2)
            f.write("\n")


class RankStateDump(pl.Callback):
    """At the end of fit every rank saves its teacher and queue to ``dirpath/rank{R}.pt``: ranks
    whose teachers or queues differ have silently diverged (the DDP test compares the files)."""

    def __init__(self, dirpath: str):
        self.dirpath = dirpath

    def on_fit_end(self, trainer, pl_module) -> None:
        os.makedirs(self.dirpath, exist_ok=True)
        state = {
            "teacher": {k: v.detach().cpu() for k, v in pl_module.teacher.state_dict().items()},
            "global_step": int(trainer.global_step),
            "world_size": int(trainer.world_size),
        }
        objectives = getattr(pl_module, "objectives", {})
        # every objective's networks and buffers (EMA heads, the frame queue) must agree too
        state["objectives"] = {k: v.detach().cpu() for k, v in objectives.state_dict().items()}
        if "frame_contrastive" in objectives:
            queue = objectives["frame_contrastive"].queue
            state["queue"] = {k: v.detach().cpu() for k, v in queue.state_dict().items()}
        torch.save(state, os.path.join(self.dirpath, f"rank{trainer.global_rank}.pt"))
