"""Lightning module for fine-tuning the recurrent detector, RVT's recipe (docs/architecture.md,
"Detector").

Training: the backbone runs on every window of a chunk, carrying LSTM states; the head and loss
run once, on the features of the labelled windows only (batched together). States persist across
training steps for the streaming slots: reset where ``is_first`` marks a recording's first chunk,
detached after every step (truncated BPTT).

The encoder recipe, applied the same way whether the encoder is pretrained or not (so a
comparison of the two differs in the starting weights only):

* ``bn_recalibration_batches``: before step 0 the encoder's BatchNorm statistics are re-estimated
  on that many labelled training batches (a cumulative mean, no gradient): pretrained weights come
  with statistics of masked pretraining input and fresh ones with 0/1, neither of which is the
  fine-tuning data;
* ``encoder_freeze_steps``: the encoder takes no update (and keeps its statistics) for the first K
  steps, while the randomly initialised detector above it settles;
* ``encoder_mode`` / ``lr_scale``: the encoder's learning rate relative to the detector's, or
  ``freeze`` for the frozen-encoder protocol.

Evaluation runs each recording whole in order, predicts at its label times (threshold 0.001,
NMS 0.45, as reported metrics use) and scores with ``finetune.evaluation.evaluate`` at epoch end,
under the data module's evaluation filter (``data.eval``).
"""

from __future__ import annotations

import itertools
import math
from typing import Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from evcmae.backbones.batchnorm import cumulative_batchnorm
from evcmae.backbones.rvt import detach_states, reset_states
from evcmae.backbones.sparse_resnet import stage_movement
from evcmae.events.labels import BBOX_DTYPE
from evcmae.events.voxelize import Voxelizer
from evcmae.finetune.classes import class_names
from evcmae.finetune.evaluation import (
    AP_KEYS,
    EvalConfig,
    Recording,
    detections_to_boxes,
    evaluate,
)
from evcmae.finetune.postprocess import postprocess
from evcmae.finetune.transfer import encoder_param_groups, load_pretrained, load_pretrained_rvt
from evcmae.pretrain.checkpointing import rebuild_schedules_on_resume
from evcmae.pretrain.watch import profiler_span

PRECISE_BN_SCOPES = ("detector", "all")


def default_lr(batch_size: int, base: float = 2e-4, base_batch: int = 8) -> float:
    """RVT's square-root scaling: 2e-4 at batch 8."""
    return base * math.sqrt(batch_size / base_batch)


def frame_grid(width: int, height: int, voxel: Mapping | None = None) -> tuple[int, int, int]:
    """(time bins, frame height, frame width) of a sensor under the voxel settings: the grid the
    sparse encoder sees and the frame the boxes are in (the data module's voxelizer computes the same)."""
    voxel = dict(voxel or {})
    if "voxel_size" in voxel:
        voxel["voxel_size"] = tuple(voxel["voxel_size"])
    return Voxelizer(int(width), int(height), **voxel).spatial_shape


def one_cycle(
    optimizer, max_lr, total_steps: int, warmup: float = 0.005, div_factor: float = 20.0, final_div: float = 1e4
):
    """OneCycle as RVT sets it: linear warm-up from max_lr/20 over ``warmup`` of the steps, then
    linear decay to max_lr/``final_div``. torch divides the *initial* lr by its final_div_factor,
    so it gets ``final_div / div_factor``; momentum is not cycled (AdamW)."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=int(total_steps),
        pct_start=warmup,
        div_factor=div_factor,
        final_div_factor=final_div / div_factor,
        anneal_strategy="linear",
        cycle_momentum=False,
    )


class FinetuneModule(pl.LightningModule):
    """Hydra builds it from ``conf/finetune/model`` (see there for each argument).

    ``detector`` is the ``EventDetector``'s config (``_target_`` and its arguments); the module
    instantiates it itself, adding what follows from the data so the two cannot disagree: the class
    count (from ``classes``) and the frame and voxel grid (from the sensor ``width``/``height`` and
    ``voxel``, the voxelizer settings). The arguments are the checkpoint's hyperparameters, so a
    checkpoint alone rebuilds the module; ``data`` (the data module's config) is stored, not used,
    so evaluation and detection can rebuild the same windows, resolution and classes."""

    def __init__(
        self,
        detector: Mapping,
        classes="etram8",
        width: int = 640,
        height: int = 360,
        voxel: Mapping | None = None,
        lr: float | None = None,
        batch_size: int = 8,
        encoder_mode: str = "full",
        lr_scale: float = 0.1,
        warmup: float = 0.005,
        total_steps: int | None = None,
        conf_threshold: float = 0.001,
        nms_threshold: float = 0.45,
        pretrained: str | None = None,
        pretrained_which: str = "teacher",
        pretrained_rvt: bool = True,
        data: Mapping | None = None,
        encoder_freeze_steps: int = 0,
        bn_recalibration_batches: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.classes = classes if isinstance(classes, str) else list(classes)
        grid = frame_grid(width, height, voxel)
        self.model = instantiate(
            dict(detector), num_classes=len(class_names(classes)), height=grid[1], width=grid[2], grid=list(grid)
        )
        if encoder_mode == "freeze" and self.model.encoder is not None:
            self.model.encoder.freeze()
        self._states = None
        self._eval_states = None
        self._encoder_start: dict | None = None  # the encoder's weights at step 0, to log how far they move
        self._preds: dict[int, list] = {}
        self.last_metrics: dict | None = None
        self.last_confusion: dict | None = None

    # ------------------------------------------------------------------ encoder recipe
    def _encoder_frozen_now(self) -> bool:
        return self.global_step < int(self.hparams.encoder_freeze_steps)

    def on_train_start(self) -> None:
        if self.global_step == 0 and self.hparams.bn_recalibration_batches:
            self.recalibrate_encoder_bn(int(self.hparams.bn_recalibration_batches))
        if self.global_step == 0 and self.model.encoder is not None:
            state = self.model.encoder.backbone.state_dict()
            self._encoder_start = {k: v.detach().clone().cpu() for k, v in state.items()}
        self._set_sampler_epoch()  # a run resumed mid-epoch skips on_train_epoch_start

    def on_train_epoch_start(self) -> None:
        self._set_sampler_epoch()

    def _set_sampler_epoch(self) -> None:
        """Hands the epoch to the training loader's batch sampler. Lightning sets it on a loader's
        sampler only, and the chunk sampler is a batch sampler: without this every epoch would
        replay the first one's chunk order, random chunks and augmentation draws."""
        sampler = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(self.current_epoch)

    def log_encoder_movement(self) -> None:
        """``val/encoder_moved/<stage>``: ‖W − W₀‖ / ‖W₀‖ from the weights fine-tuning started
        with (pretrained or fresh), the same measure as the pretraining export's
        ``stage_movement``: whether fine-tuning rewrites what pretraining wrote shows in every run."""
        if self._encoder_start is None or self.trainer.sanity_checking:
            return
        for stage, moved in stage_movement(self._encoder_start, self.model.encoder.backbone).items():
            self.log(f"val/encoder_moved/{stage}", moved, batch_size=1)

    @torch.no_grad()
    def recalibrate_encoder_bn(self, batches: int) -> int:
        """Re-estimate the encoder's BatchNorm statistics on ``batches`` training batches (every
        window of each chunk); returns the number of windows seen. A no-op without an encoder."""
        encoder = self.model.encoder
        with cumulative_batchnorm(encoder) as norms:
            if not norms:
                return 0
            was_training = encoder.training
            encoder.backbone.train()
            seen = 0
            for batch in self._first_batches(self.trainer.datamodule.train_dataloader(), batches):
                for x in batch.inputs:
                    if len(x):
                        encoder(x)
                        seen += 1
        encoder.train(was_training)
        return seen

    @torch.no_grad()
    def precise_bn(self, loader, batches: int, scope: str = "detector") -> int:
        """Re-estimate BatchNorm statistics on ``batches`` batches of ``loader`` (a training loader:
        its chunks are run the way training runs them, states carried, labelled windows through the
        PAFPN and head); returns the number of labelled windows seen. ``scope``: ``detector`` (every
        BatchNorm outside the sparse encoder, whose statistics stay as trained) or ``all``. Only the
        BatchNorm layers run in training mode, so dropout and drop-path stay off. A cumulative mean,
        as ``recalibrate_encoder_bn``: a diagnostic and repair for a checkpoint whose running
        statistics do not describe its data (``evcmae-evaluate precise_bn=N``)."""
        if scope not in PRECISE_BN_SCOPES:
            raise ValueError(f"precise_bn_scope must be one of {PRECISE_BN_SCOPES}, got {scope!r}")
        owner = self.model if scope == "all" else self.model.detector
        was_training, seen, states = self.training, 0, None
        with cumulative_batchnorm(owner) as norms:
            self.eval()
            for m in norms:
                m.train()
            for batch in self._first_batches(loader, batches):
                feats, where, states = self._run_chunk(batch, states)
                if feats is not None:
                    self.model.forward_detect(feats)
                    seen += len(where)
        self.train(was_training)
        return seen

    def _first_batches(self, loader, batches: int):
        """The first ``batches`` batches of ``loader``, on this module's device (the statistics
        passes above run outside Lightning's loop, which would otherwise move them)."""
        for batch in itertools.islice(loader, batches):
            yield batch.to(self.device) if hasattr(batch, "to") else batch

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        encoder = self.model.encoder
        if encoder is not None and not encoder.frozen:
            encoder.train(not self._encoder_frozen_now())  # statistics held while the encoder waits

    def on_before_optimizer_step(self, optimizer) -> None:
        encoder = self.model.encoder
        if encoder is not None and self._encoder_frozen_now():
            for p in encoder.parameters():
                p.grad = None  # AdamW skips parameters without a gradient: no update, no moment

    def load_pretrained(self, logger=None) -> dict | None:
        """Loads ``pretrained`` (a pretraining export or checkpoint) into the sparse encoder, and
        the RVT stages too where pretraining trained them and ``pretrained_rvt`` is on (the report's
        ``rvt``, None otherwise); returns the load report, None without a source. Called before
        fitting from scratch, never when a checkpoint is loaded (its weights replace these anyway)."""
        if not self.hparams.pretrained:
            return None
        if self.model.encoder is None:
            raise ValueError("model.pretrained needs the sparse input (model=sparse)")
        path, which = self.hparams.pretrained, self.hparams.pretrained_which
        report = load_pretrained(self.model.encoder, path, which, logger)
        # pretrained RVT stages, where the run trained them (objectives/rvt_stages.py)
        wanted = self.hparams.pretrained_rvt
        report["rvt"] = load_pretrained_rvt(self.model.detector.backbone, path, which, logger) if wanted else None
        return report

    # ------------------------------------------------------------------ recurrent pass
    def _section(self, name: str):
        return profiler_span(self, name)

    def _run_chunk(self, batch, states):
        """Backbone over the chunk's windows; returns labelled features (batched), their
        (step, sample) indices, and the final states."""
        if states is not None and states[0] is not None and states[0][0].shape[0] != batch.batch_size:
            states = None
        states = reset_states(states, batch.is_first)
        picked, where = [], []
        for l, x in enumerate(batch.inputs):
            with self._section("encoder"):
                x = self.model.encode(x)
            with self._section("rvt"):
                features, states = self.model.detector.forward_backbone(x, states)
            idx = torch.nonzero(batch.labelled[l]).flatten()
            if len(idx):
                idx_dev = idx.to(self.device)
                picked.append({k: f.index_select(0, idx_dev) for k, f in features.items()})
                where += [(l, int(b)) for b in idx]
        if not picked:
            return None, [], states
        feats = {k: torch.cat([p[k] for p in picked]) for k in picked[0]}
        return feats, where, states

    def training_step(self, batch, batch_idx: int):
        feats, where, states = self._run_chunk(batch, self._states)
        self._states = detach_states(states)
        if feats is None:  # no label in this chunk: nothing to learn from; keep the graph alive
            return sum(p.sum() * 0 for p in self.parameters() if p.requires_grad)
        targets = [batch.targets[l][b] for l, b in where]
        with self._section("head_and_loss"):
            losses = self.model.forward_detect(feats, targets)
        if self._trainer is not None:  # also callable on its own (tests, notebooks)
            for k, v in losses.items():
                self.log(f"train/{k}", v.detach().float(), batch_size=len(where), prog_bar=k == "loss")
        return losses["loss"]

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch):
        feats, where, self._eval_states = self._run_chunk(batch, self._eval_states)
        if feats is None:
            return
        decoded = self.model.forward_detect(feats)
        dets = postprocess(decoded.float(), self.hparams.conf_threshold, self.hparams.nms_threshold)
        for det, (l, b) in zip(dets, where):
            boxes = detections_to_boxes(det, int(batch.end_times[l, b]), self.trainer.datamodule.eval_config.protocol)
            self._preds.setdefault(batch.recordings[b], []).append(boxes)

    def validation_step(self, batch, batch_idx: int):
        self._eval_step(batch)

    def test_step(self, batch, batch_idx: int):
        self._eval_step(batch)

    def on_validation_epoch_start(self) -> None:
        self._preds, self._eval_states = {}, None

    on_test_epoch_start = on_validation_epoch_start

    def _finish(self, split: str, prefix: str) -> None:
        data = self.trainer.datamodule
        metrics, confusion = evaluate_predictions(data.recordings(split), self._preds, self.classes, data.eval_config)
        self.last_metrics, self.last_confusion = metrics, confusion
        for key in (*AP_KEYS, "AP_class_agnostic"):
            value = metrics.get(key)
            self.log(f"{prefix}/{key}", float(value) if value is not None else 0.0, batch_size=1)
        self._preds, self._eval_states = {}, None

    def on_validation_epoch_end(self) -> None:
        self._finish("val", "val")
        self.log_encoder_movement()

    def on_test_epoch_end(self) -> None:
        self._finish("test", "test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._encoder_start is not None:  # a resumed run measures from the same start
            checkpoint["encoder_start"] = self._encoder_start

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rebuild_schedules_on_resume(checkpoint)  # OneCycle follows this run's max_steps
        self._encoder_start = checkpoint.get("encoder_start")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        lr = self.hparams.lr or default_lr(self.hparams.batch_size)
        groups = encoder_param_groups(self.model, lr, self.hparams.encoder_mode, self.hparams.lr_scale)
        optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
        total = self.hparams.total_steps or self.trainer.estimated_stepping_batches
        if not total or total == float("inf") or total < 1:
            raise ValueError("OneCycle needs the real number of steps: set trainer.max_steps (or total_steps)")
        scheduler = one_cycle(optimizer, [g["lr"] for g in groups], int(total), self.hparams.warmup)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}


def evaluate_predictions(recordings, preds: Mapping[int, list], classes, config: EvalConfig):
    """Metrics and confusion matrix for a split's recordings and the predictions per recording."""
    recs = []
    for i, rec in enumerate(recordings):
        parts = preds.get(i, [])
        pred = np.concatenate(parts) if parts else np.zeros(0, BBOX_DTYPE)
        recs.append(Recording(rec.gt(), pred, rec.height, rec.width, 0, rec.name))
    return evaluate(recs, classes, config)
