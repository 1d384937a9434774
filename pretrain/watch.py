"""Watching a run, for pretraining and fine-tuning alike: a progress bar that shows the current
loss, and a PNG of the loss and metric curves written beside the CSV log.

Both are Lightning callbacks named in each app's config (``callbacks.progress_bar``,
``callbacks.curves``); ``callbacks.progress_bar=null trainer.enable_progress_bar=false`` turns the
bar off for logs that are not a terminal. The module lives in ``pretrain/`` so fine-tuning can use
it without pretraining ever importing fine-tuning (see ``pretrain.reporting``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Mapping, Sequence

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_only

from evcmae.pretrain.reporting import plot_csv_log


class LossProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, plus chosen logged values under short names: ``show`` maps a label
    to a logged metric, e.g. ``{"loss": "train/total"}``. The module need not log them with
    ``prog_bar=True``; one it did log so is shown once, under the label."""

    def __init__(self, show: Mapping[str, str] | None = None, refresh_rate: int = 1, **kwargs):
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.show = dict(show or {})

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        for label, key in self.show.items():
            value = trainer.callback_metrics.get(key)
            if value is not None:
                items.pop(key, None)
                items[label] = f"{float(value):.4g}"
        return items


class CurvesPlot(pl.Callback):
    """When fit (and any later validate) ends, plots the CSV log's columns into ``filename``
    beside ``metrics.csv``: one panel per entry of ``panels`` (title -> column names or glob
    patterns). Runs without a ``CSVLogger`` get no plot (wandb and TensorBoard draw their own)."""

    def __init__(self, panels: Mapping[str, Sequence[str]], filename: str = "curves.png"):
        self.panels = {title: list(patterns) for title, patterns in panels.items()}
        self.filename = filename
        self.path: Path | None = None

    @rank_zero_only
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate"):
            return
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()  # rows still buffered would be missing from the plot
                csv_path = Path(logger.experiment.metrics_file_path)
                if csv_path.is_file():
                    self.path = plot_csv_log(csv_path, csv_path.with_name(self.filename), self.panels)


def profiler_span(module: pl.LightningModule, name: str):
    """A named span ``[evcmae]<name>`` for the trainer's profiler (``trainer.profiler=simple``):
    how ``evcmae-bench pretrain`` and ``evcmae-bench finetune`` report where a step's time goes. A
    no-op for a module without a trainer (tests, notebooks)."""
    trainer = module._trainer
    return trainer.profiler.profile(f"[evcmae]{name}") if trainer is not None else contextlib.nullcontext()
