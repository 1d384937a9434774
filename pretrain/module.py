"""The pretraining LightningModule: a masked student, an EMA teacher, and Σ λᵢ·Lᵢ over objectives.

Networks: ``student`` = {backbone}; ``teacher`` = its EMA copy; ``objectives`` = the configured
terms (``pretrain/objectives/``), each owning its decoder or head (and the EMA twin of a head the
teacher side needs) and its criterion. Checkpoints carry all of them.

A λ of 0 removes its objective entirely: it is never built, so DDP never sees a parameter without
a gradient ("expected to have finished reduction"), and it is never run. The backbone is cut
after the deepest scale any objective or the probe reads: a stage nothing trains is not exported
as if it had been pretrained.

**Balancing.** Each term's gradient norm at the backbone, ‖∂Lᵢ/∂(student outputs)‖, is logged as
``train/grad_norm/<term>``; it is read off the step's own backward (``term_gradients.py``), so it
costs no extra pass. With ``balance.mode=grad_norm`` (the default) a term's effective weight is
λᵢ·ḡ/n̄ᵢ, where n̄ᵢ is the running mean of its norm up to the previous step (the first step uses
the λ as they are) and ḡ the mean of the n̄ over the terms: every term then sends the backbone a
gradient of about λᵢ·ḡ, so the λ set the mix and no term drowns the others by its scale alone.
``balance.mode=none`` uses the λ as they are. An objective with ``balanced = False`` keeps its λ
either way and is left out of ḡ: one whose loss mostly trains its own large network (the RVT
stages) would otherwise have that network's gradients scaled by however little of its gradient
reaches the backbone.

The EMA update runs right after each real optimizer step (``optimizer_step``), not in
``on_train_batch_end``: Lightning calls callbacks' ``on_train_batch_end`` (ModelCheckpoint's
included) before the module's, so a checkpoint saved there would hold a teacher one update behind
the student, and a run resumed from it would drift from an uninterrupted one.

Randomness inside a step (mask, sampled negatives) comes from a generator seeded by (seed, rank,
epoch, batch index), never from the global RNG: a run resumed from a checkpoint draws the same
masks as one that was never interrupted, and ranks draw different ones.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from evcmae.backbones.sparse_resnet import stage_movement
from evcmae.distributed import broadcast_buffers, gather_from_all_ranks
from evcmae.events.voxelize import VoxelBatch
from evcmae.losses.total import NonFiniteLossError, weighted_total
from evcmae.pretrain.checkpointing import rebuild_schedules_on_resume
from evcmae.pretrain.ema import ema_momentum, ema_update, horizon_base, initial_share, make_teacher
from evcmae.pretrain.objectives.base import Objective, StepContext
from evcmae.pretrain.probe import knn_scores, precise_bn, roi_grid_pool
from evcmae.pretrain.term_gradients import TermGradients
from evcmae.pretrain.watch import profiler_span

TERMS = ("occupancy", "reconstruction", "voxel_nce", "frame_contrastive")  # the standard objectives


class NonFiniteTrainingError(RuntimeError):
    """The loss stayed NaN/inf for ``max_nonfinite`` consecutive steps: training cannot recover."""


def warmup_cosine(
    optimizer, total_steps: int, warmup_steps: int, start_factor: float = 0.01, min_lr_ratio: float = 0.01
):
    """Linear warm-up from ``start_factor``·lr to lr, then a cosine down to ``min_lr_ratio``·lr at
    ``total_steps`` (and there after); stepped once per optimizer step.

    One ``LambdaLR`` whatever the warm-up rounds to, so its saved state is the step count alone:
    a run resumed with another ``trainer.max_steps`` continues on the schedule built for the new
    length (``checkpointing.rebuild_schedules_on_resume``)."""
    from torch.optim.lr_scheduler import LambdaLR

    total_steps = max(1, int(total_steps))
    warmup_steps = max(0, min(int(warmup_steps), total_steps - 1))
    decay_steps = max(1, total_steps - warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return start_factor + (1.0 - start_factor) * step / warmup_steps
        k = min(step - warmup_steps, decay_steps)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * k / decay_steps))

    return LambdaLR(optimizer, factor)


def objective_arguments(factory, backbone: nn.Module) -> dict:
    """What the module completes an objective's factory with: the backbone's channels always, and
    the backbone itself for an objective that declares a ``backbone`` argument (one that needs its
    strides or output grids to size its own networks)."""
    kwargs = {"channels": dict(backbone.out_channels)}
    try:
        accepts = "backbone" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a callable without a signature
        accepts = False
    if accepts:
        kwargs["backbone"] = backbone
    return kwargs


def visible_part(full: VoxelBatch, visible: torch.Tensor) -> VoxelBatch:
    """The student's input: the visible voxels only (masked ones are absent, not zeroed, so the
    sparse convs cannot tell where they were)."""
    return VoxelBatch(full.coords[visible], full.features[visible], full.spatial_shape, full.batch_size)


class PretrainModule(pl.LightningModule):
    """Arguments are what the Hydra config builds (see ``conf/pretrain/``):

    - ``backbone``: a ``SparseVoxelBackbone``; ``masking``: a ``MaskingConfig`` (its ``patch_size``
      may be "auto": derived from the data's boxes, :mod:`evcmae.pretrain.masking`).
    - ``objectives``: name -> factory ``(channels=...) -> Objective`` (Hydra partials; one that
      declares ``backbone`` gets the backbone too); an entry that is None or has weight 0 is left out.
    - ``optim``: {optimizer: partial(params), warmup_fraction, warmup_start_factor, min_lr_ratio}.
    - ``ema``: {base, final, init_share (the horizon rule; None keeps ``base``), total_steps}.
    - ``balance``: {mode: grad_norm | none, momentum}.
    - ``probe``: {scale, k, mode, exclude_same_track, grid, precise_bn}.
    - ``max_nonfinite``: consecutive non-finite steps tolerated (each skipped) before stopping.
    """

    def __init__(
        self,
        backbone: nn.Module,
        masking,
        objectives: Mapping,
        optim: Mapping | None = None,
        ema: Mapping | None = None,
        balance: Mapping | None = None,
        probe: Mapping | None = None,
        max_nonfinite: int = 5,
        seed: int = 0,
    ):
        super().__init__()
        self.masking, self.seed, self.max_nonfinite = masking, int(seed), int(max_nonfinite)
        self.optim_cfg = dict(optim or {})
        self.ema_cfg = {"base": 0.996, "final": 1.0, "init_share": 1e-3, "total_steps": None, **(ema or {})}
        self.balance_cfg = {"mode": "grad_norm", "momentum": 0.9, **(balance or {})}
        if self.balance_cfg["mode"] not in ("grad_norm", "none"):
            raise ValueError(f"balance.mode must be 'grad_norm' or 'none', got {self.balance_cfg['mode']!r}")
        self.probe_cfg = {
            "scale": "x_conv3",
            "k": 10,
            "mode": "loo",
            "exclude_same_track": True,
            "grid": 2,
            "precise_bn": True,
            **(probe or {}),
        }
        built = {}
        for name, factory in (objectives or {}).items():
            if factory is None:
                continue
            objective = factory(**objective_arguments(factory, backbone))
            if not isinstance(objective, Objective):
                raise TypeError(f"objective {name!r} built a {type(objective).__name__}, not an Objective")
            if objective.weight > 0:
                built[name] = objective
        if not built:
            raise ValueError("all loss weights are zero: nothing to train")
        self.objectives = nn.ModuleDict(built)
        self.weights = {name: obj.weight for name, obj in built.items()}
        self.until = self._deepest_scale(backbone)
        backbone.truncate(self.until)
        self.student = nn.ModuleDict({"backbone": backbone})
        self.teacher = make_teacher(self.student)
        # The initial weights, kept to report how far pretraining moved each stage (backbone.json).
        self.initial_backbone = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
        self.register_buffer("grad_norm_mean", torch.zeros(len(built)))
        self.term_gradients = TermGradients(built)
        self.nonfinite_total, self._nonfinite_streak = 0, 0
        self.empty_batches_total, self.empty_windows_total = 0, 0
        self._has_gradients = False
        self._probe_parts: list = []
        self._probe_backbone = None

    def _deepest_scale(self, backbone) -> str:
        scales = {s for obj in self.objectives.values() for s in obj.scales} | {self.probe_cfg["scale"]}
        unknown = scales - set(backbone.out_strides)
        if unknown:
            raise ValueError(f"scales {sorted(unknown)} are not outputs of the backbone {list(backbone.out_strides)}")
        return max(scales, key=backbone.stage_index)

    @property
    def backbone(self) -> nn.Module:
        return self.student["backbone"]

    def setup(self, stage: str) -> None:
        # bf16-mixed works: the sparse convs run in float32 there (backbones/spconv_compat.py)
        resolve = getattr(self.masking, "resolve", None)
        if resolve is not None:
            self.masking = resolve(self.trainer.datamodule, self.backbone, self.until)

    # ----------------------------------------------------------------- training
    def _section(self, name: str):
        return profiler_span(self, name)

    def _generator(self, batch_idx: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.global_rank, self.current_epoch, batch_idx])
        return torch.Generator().manual_seed(int(state.generate_state(1, np.uint64)[0] >> 1))

    def _draw_mask(self, batch, batch_idx: int) -> tuple[torch.Generator, torch.Tensor | None]:
        """The step's generator and the student's visible-voxel mask (None for a batch with no
        voxels). The generator goes on to the objectives' sampling, so the mask is drawn once."""
        gen, full = self._generator(batch_idx), batch.anchor
        if full.batch_size == 0 or len(full) == 0:
            return gen, None
        with self._section("masking"):
            return gen, self.masking(full.coords, full.batch_size, generator=gen)

    def _context(self, batch, gen: torch.Generator, visible: torch.Tensor) -> StepContext:
        full = batch.anchor
        with self._section("student"):
            student = self.backbone(visible_part(full, visible), until=self.until)
        return StepContext(
            full=full,
            visible=visible,
            student=student,
            backbone=self.backbone,
            teacher_backbone=self.teacher["backbone"],
            generator=gen,
            neighbour=batch.neighbour,
            rec_ids=batch.rec_ids,
            win_idx=batch.win_idx,
            nb_idx=batch.nb_idx,
            until=self.until,
            section=self._section,
        )

    def _terms(self, ctx: StepContext) -> tuple[dict, dict]:
        terms, logs = {}, {}
        self.term_gradients.reset()
        if any(o.needs_teacher for o in self.objectives.values()):
            ctx.teacher()  # in its own "teacher" span, not inside the first objective's
        if any(o.needs_neighbour for o in self.objectives.values()):
            ctx.teacher_neighbour()
        for name, objective in self.objectives.items():
            # Each objective reads the student's outputs through its own taps: the backward then
            # tells each term's gradient at the backbone apart (term_gradients.py).
            taps = {
                scale: out.replace_feature(self.term_gradients.tap(name, out.features))
                for scale, out in ctx.student.items()
            }
            with self._section(f"loss_{name}"):
                out = objective(dataclasses.replace(ctx, student=taps))
            self.term_gradients.watch(name, out.loss)
            terms[name] = out.loss
            logs.update({f"{name}/{k}": v for k, v in out.logs.items()})
        return terms, logs

    def effective_weights(self) -> dict[str, float]:
        """λᵢ, rescaled by the running gradient norms when balancing (see the module docstring)."""
        balanced = [i for i, objective in enumerate(self.objectives.values()) if objective.balanced]
        norms = self.grad_norm_mean[balanced]
        if self.balance_cfg["mode"] == "none" or not balanced or not bool((norms > 0).all()):
            return dict(self.weights)
        mean = norms.mean()
        return {
            name: self.weights[name] * (float(mean / self.grad_norm_mean[i]) if i in balanced else 1.0)
            for i, name in enumerate(self.objectives)
        }

    def training_step(self, batch, batch_idx: int):
        gen, visible = self._draw_mask(batch, batch_idx)
        if not self._batch_has_work(batch, visible):
            return self._skip_empty_batch()
        ctx = self._context(batch, gen, visible)
        terms, logs = self._terms(ctx)
        problem = None
        weights = self.effective_weights()
        total, logged = None, None
        try:
            total, logged = weighted_total(terms, weights)
            if not bool(torch.isfinite(total)):
                problem = f"the weighted total is not finite ({float(total)})"
        except NonFiniteLossError as exc:
            problem = str(exc)
        # Every rank must skip together, or DDP's gradient all-reduce waits forever.
        if not self.trainer.strategy.reduce_boolean_decision(problem is None, all=True):
            return self._skip_step(problem or "the loss was not finite on another rank")
        self._nonfinite_streak = 0
        B = batch.batch_size
        self.log("train/total", logged.pop("total"), batch_size=B, prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in logged.items()}, batch_size=B)
        self.log_dict({f"train/weight/{n}": w for n, w in weights.items()}, batch_size=B)
        self.log_dict({f"train/{k}": float(v) for k, v in logs.items()}, batch_size=B)
        self.log("train/visible_fraction", ctx.visible.float().mean(), batch_size=B)
        self.log("train/nonfinite_steps", float(self.nonfinite_total), batch_size=B)
        self.log("train/ema_momentum", self.ema_momentum(self.trainer.global_step + 1), batch_size=B)
        return total

    def _batch_has_work(self, batch, visible: torch.Tensor | None) -> bool:
        """False for a batch the losses cannot use: every window empty (the collate left no sample)
        or nothing to mask (each sample one masking unit). All ranks must agree, as for non-finite
        losses."""
        self.empty_windows_total += int(getattr(batch, "empty_windows", 0))
        ok = visible is not None and not bool(visible.all())
        return self.trainer.strategy.reduce_boolean_decision(ok, all=True)

    def _skip_empty_batch(self):
        self.empty_batches_total += 1
        self.log("train/empty_batches", float(self.empty_batches_total), batch_size=1)
        self.log("train/empty_windows", float(self.empty_windows_total), batch_size=1)
        rank_zero_warn("a batch with no events, or none to mask, was skipped (counted in train/empty_batches)")
        return None

    def _skip_step(self, problem: str):
        self.nonfinite_total += 1
        self._nonfinite_streak += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_total))
        for objective in self.objectives.values():
            objective.start_step()  # nothing of a skipped step may reach a queue
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
        for objective in self.objectives.values():
            objective.start_step()

    def on_after_backward(self) -> None:
        """Objectives' after-backward work (the frame queue gathers every rank's keys and enqueues
        them). Skipped steps have no backward, so their keys are never enqueued."""
        self._has_gradients = True
        self._update_grad_norms()
        for objective in self.objectives.values():
            objective.after_backward()

    def _update_grad_norms(self) -> None:
        """Logs this backward's per-term gradient norms and moves their running means (a
        non-finite norm, as on an AMP overflow step, leaves the means as they were)."""
        norms = self.term_gradients.norms(self.device)
        self.term_gradients.reset()
        if bool(torch.isfinite(norms).all()):
            m = float(self.balance_cfg["momentum"])
            first = self.grad_norm_mean == 0
            self.grad_norm_mean.copy_(torch.where(first, norms, m * self.grad_norm_mean + (1 - m) * norms))
        # Logged per step only (the hook's default), so no batch size is needed to weight an epoch mean.
        self.log_dict({f"train/grad_norm/{n}": norms[i] for i, n in enumerate(self.term_gradients.names)})

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """The EMA update follows the optimizer step directly: Lightning calls this once per real
        step (not per accumulated micro-batch), and before any ``on_train_batch_end`` callback, so
        a checkpoint saved there already holds the updated teacher. A step without any backward
        (every micro-batch non-finite) leaves the student unchanged, and the teacher too."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self._has_gradients:
            with self._section("ema"):
                momentum = self.ema_momentum(self.trainer.global_step + 1)
                ema_update(self.teacher, self.student, momentum)
                for objective in self.objectives.values():
                    for twin, source in objective.teacher_pairs():
                        ema_update(twin, source, momentum)
                # Teacher parameters agree across ranks by construction; its buffers (BatchNorm
                # statistics) come from each rank's own student: take rank 0's everywhere.
                broadcast_buffers(self.teacher)
        self._has_gradients = False

    # ----------------------------------------------------------------- EMA
    def ema_base(self) -> float:
        """The base momentum in force: ``ema.base``, lowered by the horizon rule
        (:func:`evcmae.pretrain.ema.horizon_base`) so the run forgets its initialisation."""
        total, share = self._ema_total_steps(), self.ema_cfg.get("init_share")
        key = (total, share)
        if getattr(self, "_ema_base_key", None) != key:
            base = float(self.ema_cfg["base"])
            if share is not None:
                base = horizon_base(total, float(share), base, float(self.ema_cfg["final"]))
            self._ema_base_key, self._ema_base_value = key, base
        return self._ema_base_value

    def ema_momentum(self, step: int) -> float:
        """Momentum of the update made by optimizer step ``step`` (1 = the first)."""
        return ema_momentum(step, self._ema_total_steps(), self.ema_base(), self.ema_cfg["final"])

    def _ema_total_steps(self) -> int:
        total = self.ema_cfg.get("total_steps") or self.trainer.estimated_stepping_batches
        return max(1, int(total)) if math.isfinite(total) else 1

    def export_record(self) -> dict:
        """What ``backbone.json`` says about the weights: which network each file holds, the EMA
        schedule and the initialisation's remaining share in the teacher, and how far each stage
        moved from its initialisation."""
        total = self._ema_total_steps()
        steps = int(self.trainer.global_step) if self._trainer is not None else total
        base, final = self.ema_base(), float(self.ema_cfg["final"])
        return {
            "networks": {
                "teacher_backbone.pt": "EMA teacher (recommended for fine-tuning)",
                "student_backbone.pt": "student (the network the gradients trained)",
            },
            "stages": list(self.backbone.stage_modules()),
            "ema": {
                "base": base,
                "final": final,
                "total_steps": total,
                "init_share_target": self.ema_cfg.get("init_share"),
                "teacher_init_share": initial_share(min(steps, total), base, final) if steps else 1.0,
            },
            "movement_from_init": {
                "teacher": stage_movement(self.initial_backbone, self.teacher["backbone"]),
                "student": stage_movement(self.initial_backbone, self.backbone),
            },
            "objectives": dict(self.weights),
        }

    def export_parts(self) -> dict:
        """Networks an objective pretrains beside the backbone, for the export to write:
        name -> (student, teacher, record) (the RVT stages, ``objectives/rvt_stages.py``)."""
        parts = {}
        for objective in self.objectives.values():
            for name, part in objective.export_parts().items():
                if name in parts:
                    raise ValueError(f"two objectives export a network named {name!r}")
                parts[name] = part
        return parts

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["evcmae_nonfinite"] = {"total": self.nonfinite_total, "streak": self._nonfinite_streak}
        checkpoint["evcmae_initial_backbone"] = self.initial_backbone
        checkpoint["evcmae_initial_objectives"] = {
            name: o.initial_state for name, o in self.objectives.items() if o.initial_state is not None
        }
        checkpoint["evcmae_empty"] = {"batches": self.empty_batches_total, "windows": self.empty_windows_total}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rebuild_schedules_on_resume(checkpoint)  # the schedule follows this run's max_steps
        state = checkpoint.get("evcmae_nonfinite", {})
        self.nonfinite_total, self._nonfinite_streak = state.get("total", 0), state.get("streak", 0)
        if "evcmae_initial_backbone" in checkpoint:
            self.initial_backbone = checkpoint["evcmae_initial_backbone"]
        self._adopt_legacy_initial_states(checkpoint)
        for name, initial in checkpoint.get("evcmae_initial_objectives", {}).items():
            if name in self.objectives:
                self.objectives[name].initial_state = initial
        empty = checkpoint.get("evcmae_empty", {})
        self.empty_batches_total, self.empty_windows_total = empty.get("batches", 0), empty.get("windows", 0)

    def _adopt_legacy_initial_states(self, checkpoint: dict) -> None:
        """Checkpoints written before commit aaa9de0 (results/h16, results/h17) keep the RVT
        stages' initial weights in the state dict as the objective's module extra state
        (``objectives.<name>._extra_state`` = ``{"initial_rvt": ...}``). Moved to where this code
        keeps them, so such a run resumes instead of failing on an unexpected key."""
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("objectives.") and k.endswith("._extra_state")]:
            name, legacy = key.split(".")[1], state.pop(key)
            if name in self.objectives and isinstance(legacy, dict) and "initial_rvt" in legacy:
                self.objectives[name].initial_state = legacy["initial_rvt"]

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
        """The probe's encoder: the teacher backbone with BatchNorm statistics re-estimated on the
        (unmasked) probe windows, see :mod:`evcmae.pretrain.probe`."""
        self._probe_parts = []
        teacher = self.teacher["backbone"]
        self._probe_backbone = teacher
        if self.probe_cfg["precise_bn"] and not self.trainer.sanity_checking:
            loaders = self.trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            if loader is not None:
                scale = self.probe_cfg["scale"]
                batches = (b.to(self.device).voxels for b in loader)
                self._probe_backbone = precise_bn(teacher, batches, lambda net, v: net(v, until=scale))

    def validation_step(self, batch, batch_idx: int) -> None:
        """Embeds the labelled boxes with the probe's encoder (eval mode)."""
        scale = self.probe_cfg["scale"]
        backbone = self._probe_backbone if self._probe_backbone is not None else self.teacher["backbone"]
        backbone.eval()
        out = backbone(batch.voxels, until=scale)[scale]
        _, sy, sx = backbone.out_strides[scale]
        cell = (batch.cell_size[0] * sy, batch.cell_size[1] * sx)
        emb, found = roi_grid_pool(
            out.features.float(), out.indices, batch.box_sample, batch.boxes, cell, int(self.probe_cfg["grid"])
        )
        self._probe_parts.append((emb[found], batch.classes[found], batch.groups[found]))

    def on_validation_epoch_end(self) -> None:
        self._probe_backbone = None
        if self.trainer.sanity_checking:
            return
        if not self._probe_parts:
            rank_zero_warn("probe: no labelled box reached a feature site")
            return
        emb, classes, groups = (gather_from_all_ranks(torch.cat(list(p))) for p in zip(*self._probe_parts))
        self._probe_parts = []
        groups = groups if self.probe_cfg["exclude_same_track"] else None
        scores = knn_scores(
            emb.cpu().numpy(),
            classes.cpu().numpy(),
            int(self.probe_cfg["k"]),
            None if groups is None else groups.cpu().numpy(),
            self.probe_cfg["mode"],
        )
        # Every rank holds the same gathered values; sync_dist's mean leaves them as they are.
        self.log("probe/boxes", float(scores["boxes"]), sync_dist=True)
        for key, name in (
            ("majority_accuracy", "majority_acc"),
            ("accuracy", "knn_acc"),
            ("balanced_accuracy", "balanced_acc"),
            ("macro_f1", "macro_f1"),
        ):
            if math.isfinite(scores[key]):
                self.log(f"probe/{name}", scores[key], sync_dist=True)
        if scores["balanced_accuracy_ci95"] is not None:  # resampling whole tracks (pretrain.probe)
            low, high = scores["balanced_accuracy_ci95"]
            self.log("probe/balanced_acc_ci_low", low, sync_dist=True)
            self.log("probe/balanced_acc_ci_high", high, sync_dist=True)
