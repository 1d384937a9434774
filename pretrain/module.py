"""The pretraining LightningModule: a masked student, an EMA teacher, and Σ λᵢ·Lᵢ.

Networks: ``student`` = {backbone, voxel_head?, frame_head?}; ``teacher`` = an EMA copy of the
whole student dict (so the projection heads the contrastive terms compare against are EMA too);
``decoders`` = the student-only occupancy and reconstruction decoders; ``queue`` = the frame
loss's key queue. Teacher and queue are a submodule and buffers, so checkpoints carry them.

A λ of 0 removes its branch entirely: its networks are never built, so DDP never sees a parameter
without a gradient ("expected to have finished reduction"), and it is never run.

The EMA update runs right after each real optimizer step (``optimizer_step``), not in
``on_train_batch_end``: Lightning calls callbacks' ``on_train_batch_end`` (ModelCheckpoint's
included) before the module's, so a checkpoint saved there would hold a teacher one update behind
the student, and a run resumed from it would drift from an uninterrupted one.

Randomness inside a step (mask, sampled negatives) comes from a generator seeded by (seed, rank,
epoch, batch index), never from the global RNG: a run resumed from a checkpoint draws the same
masks as one that was never interrupted, and ranks draw different ones.
"""

from __future__ import annotations

import contextlib
import math
from typing import Mapping

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from evcmae.losses.frame_contrastive import KeyQueue, gather_from_all_ranks
from evcmae.losses.total import NonFiniteLossError, enabled_terms, weighted_total
from evcmae.pretrain.ema import ema_momentum, ema_update, make_teacher
from evcmae.pretrain.objectives import frame_term, occupancy_term, reconstruction_term, visible_part, voxel_nce_term
from evcmae.pretrain.probe import box_cells, knn_accuracy, pool_boxes

TERMS = ("occupancy", "reconstruction", "voxel_nce", "frame_contrastive")


class NonFiniteTrainingError(RuntimeError):
    """The loss stayed NaN/inf for ``max_nonfinite`` consecutive steps: training cannot recover."""


def warmup_cosine(
    optimizer, total_steps: int, warmup_steps: int, start_factor: float = 0.01, min_lr_ratio: float = 0.01
):
    """Linear warm-up from ``start_factor``·lr to lr, then a cosine down to ``min_lr_ratio``·lr at
    ``total_steps``; stepped once per optimizer step."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warmup_steps = max(0, min(int(warmup_steps), total_steps - 1))
    eta_min = optimizer.param_groups[0]["lr"] * min_lr_ratio
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=eta_min)
    if warmup_steps == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


class PretrainModule(pl.LightningModule):
    """Arguments are what the Hydra config builds (see ``conf/loss``, ``conf/optim``):

    - ``backbone``: a ``SparseVoxelBackbone``; ``masking``: a ``MaskingConfig``.
    - ``weights``: λ per term (``TERMS``); 0 disables a term.
    - ``occupancy``: {decoder: partial(in_channels), criterion, scale, num_empty_per_positive,
      neighbourhood, exclude_partially_visible}; ``reconstruction``: {criterion:
      partial(student_channels)}; ``voxel_nce``: {head: partial(in_channels), criterion, scale};
      ``frame_contrastive``: {projector: partial(in_channels), criterion, scale, queue_size}.
    - ``optim``: {optimizer: partial(params), warmup_fraction, warmup_start_factor, min_lr_ratio}.
    - ``ema``: {base, final, total_steps (None: the trainer's estimate)}.
    - ``probe``: {scale, k, mode, exclude_same_track}.
    - ``max_nonfinite``: consecutive non-finite steps tolerated (each skipped) before stopping.
    """

    def __init__(
        self,
        backbone: nn.Module,
        masking,
        weights: Mapping[str, float],
        occupancy: Mapping | None = None,
        reconstruction: Mapping | None = None,
        voxel_nce: Mapping | None = None,
        frame_contrastive: Mapping | None = None,
        optim: Mapping | None = None,
        ema: Mapping | None = None,
        probe: Mapping | None = None,
        max_nonfinite: int = 5,
        seed: int = 0,
    ):
        super().__init__()
        unknown = set(weights) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; the terms are {TERMS}")
        self.weights = {t: float(weights.get(t, 0.0)) for t in TERMS}
        self.enabled = enabled_terms(self.weights)
        if not self.enabled:
            raise ValueError("all loss weights are zero: nothing to train")
        self.masking, self.seed, self.max_nonfinite = masking, int(seed), int(max_nonfinite)
        self.optim_cfg = dict(optim or {})
        self.ema_cfg = {"base": 0.996, "final": 1.0, "total_steps": None, **(ema or {})}
        self.probe_cfg = {"scale": "x_conv4", "k": 10, "mode": "loo", "exclude_same_track": True, **(probe or {})}
        self.opts = {
            "occupancy": dict(occupancy or {}),
            "reconstruction": dict(reconstruction or {}),
            "voxel_nce": dict(voxel_nce or {}),
            "frame_contrastive": dict(frame_contrastive or {}),
        }
        self._build(backbone)
        self.nonfinite_total, self._nonfinite_streak = 0, 0
        self._has_gradients, self._pending_keys = False, None
        self._probe_parts: list = []

    # ----------------------------------------------------------------- networks
    def _scale(self, term: str) -> str:
        return self.opts[term].get("scale", "x_conv4")

    def _build(self, backbone: nn.Module) -> None:
        channels = backbone.out_channels
        self.student = nn.ModuleDict({"backbone": backbone})
        self.decoders = nn.ModuleDict()
        on = self.enabled
        if "voxel_nce" in on:
            self.student["voxel_head"] = self.opts["voxel_nce"]["head"](channels[self._scale("voxel_nce")])
            self.voxel_nce_loss = self.opts["voxel_nce"]["criterion"]
        if "frame_contrastive" in on:
            cfg = self.opts["frame_contrastive"]
            self.student["frame_head"] = cfg["projector"](channels[self._scale("frame_contrastive")])
            self.frame_loss = cfg["criterion"]
            dim = self.student["frame_head"].mlp[-1].out_features
            self.queue = KeyQueue(int(cfg.get("queue_size", 4096)), dim)
        if "occupancy" in on:
            self.decoders["occupancy"] = self.opts["occupancy"]["decoder"](channels[self._scale("occupancy")])
            self.occupancy_loss = self.opts["occupancy"]["criterion"]
        if "reconstruction" in on:
            self.decoders["reconstruction"] = self.opts["reconstruction"]["criterion"](dict(channels))
        self.teacher = make_teacher(self.student)

    @property
    def backbone(self) -> nn.Module:
        return self.student["backbone"]

    # ----------------------------------------------------------------- training
    def _section(self, name: str):
        """A named span for the trainer's profiler (``trainer.profiler=simple``), which is how
        ``evcmae-bench pretrain`` reports where a step's time goes; a no-op without a trainer."""
        trainer = self._trainer
        return trainer.profiler.profile(f"[evcmae]{name}") if trainer is not None else contextlib.nullcontext()

    def _generator(self, batch_idx: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.global_rank, self.current_epoch, batch_idx])
        return torch.Generator().manual_seed(int(state.generate_state(1, np.uint64)[0] >> 1))

    def _terms(self, batch, batch_idx: int):
        """-> ({term: loss}, teacher keys to enqueue or None, visible mask)."""
        on, gen, full = self.enabled, self._generator(batch_idx), batch.anchor
        with self._section("masking"):
            visible = self.masking(full.coords, full.batch_size, generator=gen)
        with self._section("student"):
            student = self.backbone(visible_part(full, visible))
        teacher = teacher_nb = None
        with torch.no_grad(), self._section("teacher"):
            if {"reconstruction", "voxel_nce"} & set(on):
                teacher = self.teacher["backbone"](full)
            if "frame_contrastive" in on:
                teacher_nb = self.teacher["backbone"](batch.neighbour)
        terms, keys = {}, None
        if "occupancy" in on:
            opts, scale = self.opts["occupancy"], self._scale("occupancy")
            with self._section("loss_occupancy"):
                terms["occupancy"] = occupancy_term(
                    self.decoders["occupancy"],
                    self.occupancy_loss,
                    student,
                    full,
                    visible,
                    scale,
                    self.backbone.out_strides[scale],
                    self.backbone.output_shapes(full.spatial_shape)[scale],
                    gen,
                    opts.get("num_empty_per_positive", 1.0),
                    opts.get("neighbourhood", 1),
                    opts.get("exclude_partially_visible", False),
                )
        if "reconstruction" in on:
            with self._section("loss_reconstruction"):
                terms["reconstruction"] = reconstruction_term(self.decoders["reconstruction"], student, teacher)
        if "voxel_nce" in on:
            with self._section("loss_voxel_nce"):
                terms["voxel_nce"] = voxel_nce_term(
                    self.student["voxel_head"],
                    self.teacher["voxel_head"],
                    self.voxel_nce_loss,
                    student,
                    teacher,
                    self._scale("voxel_nce"),
                    gen,
                )
        if "frame_contrastive" in on:
            with self._section("loss_frame_contrastive"):
                terms["frame_contrastive"], keys = frame_term(
                    self.student["frame_head"],
                    self.teacher["frame_head"],
                    self.frame_loss,
                    self.queue,
                    student,
                    teacher_nb,
                    self._scale("frame_contrastive"),
                    batch.rec_ids,
                    batch.win_idx,
                )
        return terms, keys, visible

    def training_step(self, batch, batch_idx: int):
        terms, keys, visible = self._terms(batch, batch_idx)
        total, logged, problem = None, None, None
        try:
            total, logged = weighted_total(terms, self.weights)
            if not bool(torch.isfinite(total)):
                problem = f"the weighted total is not finite ({float(total)})"
        except NonFiniteLossError as exc:
            problem = str(exc)
        # Every rank must skip together, or DDP's gradient all-reduce waits forever.
        if not self.trainer.strategy.reduce_boolean_decision(problem is None, all=True):
            return self._skip_step(problem or "the loss was not finite on another rank")
        self._nonfinite_streak = 0
        if keys is not None:  # enqueued after backward (the loss's graph still reads the queue)
            self._pending_keys = (keys.detach(), batch.rec_ids, batch.nb_idx)
        B = batch.batch_size
        self.log_dict({f"train/{k}": v for k, v in logged.items()}, batch_size=B)
        self.log("train/visible_fraction", visible.float().mean(), batch_size=B)
        self.log("train/nonfinite_steps", float(self.nonfinite_total), batch_size=B)
        self.log("train/ema_momentum", self.ema_momentum(self.trainer.global_step + 1), batch_size=B)
        return total

    def _skip_step(self, problem: str):
        self.nonfinite_total += 1
        self._nonfinite_streak += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_total))
        where = f"step {self.global_step} (epoch {self.current_epoch})"
        if self._nonfinite_streak >= self.max_nonfinite:
            raise NonFiniteTrainingError(
                f"stopping: the loss was not finite for {self._nonfinite_streak} consecutive steps, up to {where}; "
                f"last: {problem}. Lower optim.optimizer.lr, keep trainer.gradient_clip_val on, or train in 32-bit "
                f"(trainer.precision=32-true); resume from the last good checkpoint with ckpt_path=..."
            )
        rank_zero_warn(
            f"{where}: {problem}; optimizer step skipped "
            f"({self._nonfinite_streak} in a row, stopping at {self.max_nonfinite})"
        )
        return None

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._pending_keys = None

    def on_after_backward(self) -> None:
        """Enqueue this micro-batch's keys (every rank's: an all-gather) once backward no longer
        needs the queue. Skipped steps have no backward, so their keys are never enqueued."""
        self._has_gradients = True
        if self._pending_keys is not None:
            self.queue.enqueue(*(gather_from_all_ranks(t) for t in self._pending_keys))
            self._pending_keys = None

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """The EMA update follows the optimizer step directly: Lightning calls this once per real
        step (not per accumulated micro-batch), and before any ``on_train_batch_end`` callback, so
        a checkpoint saved there already holds the updated teacher. A step without any backward
        (every micro-batch non-finite) leaves the student unchanged, and the teacher too."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self._has_gradients:
            with self._section("ema"):
                ema_update(self.teacher, self.student, self.ema_momentum(self.trainer.global_step + 1))
                self._broadcast_teacher_buffers()
        self._has_gradients = False

    def ema_momentum(self, step: int) -> float:
        """Momentum of the update made by optimizer step ``step`` (1 = the first)."""
        return ema_momentum(step, self._ema_total_steps(), self.ema_cfg["base"], self.ema_cfg["final"])

    def _ema_total_steps(self) -> int:
        total = self.ema_cfg.get("total_steps") or self.trainer.estimated_stepping_batches
        return max(1, int(total)) if math.isfinite(total) else 1

    def _broadcast_teacher_buffers(self) -> None:
        """Teacher parameters agree across ranks by construction; its buffers (BatchNorm statistics)
        are copied from each rank's own student, whose statistics DDP only aligns at the next forward.
        Taking rank 0's keeps the teacher, and so the checkpoint, identical everywhere."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        by_dtype: dict = {}
        for buf in self.teacher.buffers():
            by_dtype.setdefault(buf.dtype, []).append(buf)
        for bufs in by_dtype.values():
            flat = torch.cat([b.reshape(-1) for b in bufs])
            dist.broadcast(flat, src=0)
            offset = 0
            for b in bufs:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["evcmae_nonfinite"] = {"total": self.nonfinite_total, "streak": self._nonfinite_streak}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("evcmae_nonfinite", {})
        self.nonfinite_total, self._nonfinite_streak = state.get("total", 0), state.get("streak", 0)

    # ----------------------------------------------------------------- optimizer
    def configure_optimizers(self):
        """AdamW-style groups: no weight decay on biases and normalisation weights (1-D tensors)."""
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        optimizer = self.optim_cfg["optimizer"]([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        total = int(self.trainer.estimated_stepping_batches)
        warmup = round(self.optim_cfg.get("warmup_fraction", 0.05) * total)
        scheduler = warmup_cosine(
            optimizer,
            total,
            warmup,
            self.optim_cfg.get("warmup_start_factor", 0.01),
            self.optim_cfg.get("min_lr_ratio", 0.01),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}

    # ----------------------------------------------------------------- probe
    def on_validation_epoch_start(self) -> None:
        self._probe_parts = []

    def validation_step(self, batch, batch_idx: int) -> None:
        """Embeds the labelled boxes with the teacher backbone (eval mode: the weights fine-tuning gets)."""
        scale = self.probe_cfg["scale"]
        backbone = self.teacher["backbone"]
        out = backbone(batch.voxels)[scale]
        _, sy, sx = backbone.out_strides[scale]
        cells = box_cells(batch.boxes, (batch.cell_size[0] * sy, batch.cell_size[1] * sx))
        emb, found = pool_boxes(out.features.float(), out.indices, batch.box_sample, cells)
        self._probe_parts.append((emb[found], batch.classes[found], batch.groups[found]))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        dim = self.teacher["backbone"].out_channels[self.probe_cfg["scale"]]
        parts = self._probe_parts or [
            (torch.zeros(0, dim, device=self.device), *(torch.zeros(0, dtype=torch.long, device=self.device),) * 2)
        ]
        emb, classes, groups = (gather_from_all_ranks(torch.cat(list(p))) for p in zip(*parts))
        self._probe_parts = []
        groups = groups if self.probe_cfg["exclude_same_track"] else None
        acc = knn_accuracy(
            emb.cpu().numpy(),
            classes.cpu().numpy(),
            int(self.probe_cfg["k"]),
            None if groups is None else groups.cpu().numpy(),
            self.probe_cfg["mode"],
        )
        # Every rank holds the same gathered values; sync_dist's mean leaves them as they are.
        self.log("probe/boxes", float(len(classes)), sync_dist=True)
        if len(classes):  # the accuracy of always answering the commonest class, for scale
            self.log("probe/majority_acc", float(torch.bincount(classes).max()) / len(classes), sync_dist=True)
        if math.isfinite(acc):
            self.log("probe/knn_acc", acc, sync_dist=True)
        else:
            rank_zero_warn(f"probe: {len(classes)} boxes with features, too few for a k-NN vote")
