"""The four pretraining terms, each computed from one step's student and teacher outputs.

Kept apart from the Lightning module so that each term reads as what it compares: the module
decides which terms run (a λ of 0 means the function is never called) and owns the networks;
these functions only wire outputs into the loss modules of ``losses/``.
"""

from __future__ import annotations

from typing import Mapping

import torch

from evcmae.events.voxelize import VoxelBatch
from evcmae.losses.frame_contrastive import KeyQueue
from evcmae.losses.occupancy import occupancy_queries


def visible_part(full: VoxelBatch, visible: torch.Tensor) -> VoxelBatch:
    """The student's input: the visible voxels only (masked ones are absent, not zeroed, so the
    sparse convs cannot tell where they were)."""
    return VoxelBatch(full.coords[visible], full.features[visible], full.spatial_shape, full.batch_size)


def occupancy_term(
    decoder,
    criterion,
    student_out: Mapping,
    full: VoxelBatch,
    visible: torch.Tensor,
    scale: str,
    stride,
    grid_shape,
    generator: torch.Generator,
    num_empty_per_positive=1.0,
    neighbourhood=1,
    exclude_partially_visible=False,
) -> torch.Tensor:
    """Which coarse cells of the masked regions hold events, predicted from the visible ones."""
    queries = occupancy_queries(
        full.coords,
        full.coords[visible],
        full.coords[~visible],
        stride,
        num_empty_per_positive,
        neighbourhood,
        grid_shape,
        exclude_partially_visible,
        generator,
    )
    return criterion(decoder(student_out[scale], queries.coords), queries.targets)


def reconstruction_term(criterion, student_out: Mapping, teacher_out: Mapping) -> torch.Tensor:
    """The student's decoders predict the teacher's (full-input) features at several scales."""
    return criterion(student_out, teacher_out).loss


def voxel_nce_term(
    student_head,
    teacher_head,
    criterion,
    student_out: Mapping,
    teacher_out: Mapping,
    scale: str,
    generator: torch.Generator,
) -> torch.Tensor:
    """Student voxel embeddings against the teacher's at the same coordinates."""
    s, t = student_out[scale], teacher_out[scale]
    with torch.no_grad():
        t_emb = teacher_head(t.features)
    return criterion(student_head(s.features), s.indices, t_emb, t.indices, generator)


def frame_term(
    student_projector,
    teacher_projector,
    criterion,
    queue: KeyQueue,
    student_out: Mapping,
    teacher_neighbour_out: Mapping,
    scale: str,
    rec_ids: torch.Tensor,
    win_idx: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The masked anchor window against the teacher's view of the adjacent window. Returns the loss
    and the teacher keys, which the caller enqueues only once the step is known to be finite."""
    with torch.no_grad():
        keys = teacher_projector(teacher_neighbour_out[scale])
    query = student_projector(student_out[scale])
    return criterion(query, keys, queue, rec_ids, win_idx), keys
