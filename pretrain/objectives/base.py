"""What every objective sees (:class:`StepContext`) and what it implements (:class:`Objective`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Mapping, NamedTuple, Sequence

import torch
from torch import nn

from evcmae.events.voxelize import VoxelBatch
from evcmae.losses.sparse_ops import hidden_sites


class ObjectiveOutput(NamedTuple):
    loss: torch.Tensor  # scalar, unweighted
    logs: dict  # name -> float or 0-d tensor, logged as train/<objective>/<name>


@dataclass
class StepContext:
    """One training step's inputs and networks' outputs, shared by all objectives.

    The teacher's passes run on demand and once (``teacher``, ``teacher_neighbour``), so a
    configuration whose objectives never read them never pays for them."""

    full: VoxelBatch  # the whole anchor window, as the teacher sees it
    visible: torch.Tensor  # (N,) bool over full.coords: what the student was given
    student: Mapping  # backbone outputs on the visible voxels, by scale (each objective gets its own views)
    backbone: nn.Module  # the student backbone (strides, output shapes)
    teacher_backbone: nn.Module
    generator: torch.Generator
    neighbour: VoxelBatch | None = None  # the adjacent window (frame contrastive)
    rec_ids: torch.Tensor | None = None
    win_idx: torch.Tensor | None = None
    nb_idx: torch.Tensor | None = None
    until: str | None = None  # deepest scale any objective reads
    section: Callable = contextlib.nullcontext  # profiler span factory: section(name)
    _cache: dict = field(default_factory=dict)

    def teacher(self) -> Mapping:
        if "teacher" not in self._cache:
            with torch.no_grad(), self.section("teacher"):
                self._cache["teacher"] = self.teacher_backbone(self.full, until=self.until)
        return self._cache["teacher"]

    def teacher_neighbour(self) -> Mapping:
        if "teacher_neighbour" not in self._cache:
            if self.neighbour is None:
                raise ValueError("this objective needs the adjacent window, which the batch does not carry")
            with torch.no_grad(), self.section("teacher"):
                self._cache["teacher_neighbour"] = self.teacher_backbone(self.neighbour, until=self.until)
        return self._cache["teacher_neighbour"]

    def stride(self, scale: str):
        return self.backbone.out_strides[scale]

    def hidden(self, scale: str) -> torch.Tensor:
        """(N_teacher,) bool: the teacher's sites at ``scale`` that lie inside masked regions."""
        key = f"hidden/{scale}"
        if key not in self._cache:
            coords = self.full.coords
            self._cache[key] = hidden_sites(
                self.teacher()[scale].indices, coords[self.visible], coords[~self.visible], self.stride(scale)
            )
        return self._cache[key]


class Objective(nn.Module):
    """A weighted pretraining term. Subclasses set ``scales`` (the backbone outputs they read),
    build their networks from ``channels`` (scale -> width) and implement ``forward``.

    ``teacher_modules`` name the student-side modules that have an EMA twin (projection heads):
    the LightningModule moves each twin after every optimizer step with the backbone's momentum.
    ``after_backward`` runs once the step's backward is done (queues update there).
    ``initial_state``: the initial weights of what ``export_parts`` exports (its movement is
    measured from them); the LightningModule keeps them in checkpoints, as the backbone's."""

    initial_state: dict | None = None

    scales: Sequence[str] = ()
    # Which teacher passes the objective reads; the module runs them once, before any objective,
    # so each objective's profiler span holds its own work only.
    needs_teacher: bool = False
    needs_neighbour: bool = False
    # Whether gradient-norm balancing rescales the term (pretrain/module.py, "Balancing").
    balanced: bool = True

    def __init__(self, weight: float = 1.0):
        super().__init__()
        if not weight >= 0:
            raise ValueError(f"an objective's weight must be >= 0, got {weight}")
        self.weight = float(weight)

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        raise NotImplementedError

    def export_parts(self) -> dict:
        """Networks the objective pretrains for the detector, to export beside the backbone:
        name -> (student, teacher, record for ``backbone.json``); none by default."""
        return {}

    def teacher_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(teacher twin, student module) pairs to update by EMA; none by default."""
        return []

    def start_step(self) -> None:
        """Called before each training step (drop state a skipped step left behind)."""

    def after_backward(self) -> None:
        """Called after a step's backward, before the optimizer step."""
