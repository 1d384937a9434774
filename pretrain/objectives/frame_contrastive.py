"""Frame contrastive: the masked anchor window against the teacher's view of an adjacent window."""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from evcmae.distributed import gather_from_all_ranks
from evcmae.losses.frame_contrastive import KeyQueue
from evcmae.pretrain.ema import make_teacher
from evcmae.pretrain.objectives.base import Objective, ObjectiveOutput, StepContext


class FrameContrastiveObjective(Objective):
    """``projector``: a factory ``(in_channels) -> FrameProjector``, with an EMA twin for the keys;
    ``criterion``: ``FrameContrastiveLoss`` against a queue of past keys (``queue_size``).

    The step's keys are enqueued only after backward (the loss graph reads the queue buffer) and
    gathered from every rank first, so all ranks hold the same queue."""

    needs_neighbour = True

    def __init__(
        self,
        channels: Mapping[str, int],
        projector: Callable,
        criterion,
        weight: float = 1.0,
        scale: str = "x_conv3",
        queue_size: int = 4096,
    ):
        super().__init__(weight)
        self.scale, self.scales = scale, (scale,)
        self.projector = projector(channels[scale])
        self.teacher_projector = make_teacher(self.projector)
        self.criterion = criterion
        self.queue = KeyQueue(int(queue_size), self.projector.out_dim)
        self._pending: tuple | None = None

    def teacher_pairs(self):
        return [(self.teacher_projector, self.projector)]

    def start_step(self) -> None:
        self._pending = None

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        with torch.no_grad():
            keys = self.teacher_projector(ctx.teacher_neighbour()[self.scale])
        query = self.projector(ctx.student[self.scale])
        loss = self.criterion(query, keys, self.queue, ctx.rec_ids, ctx.win_idx)
        self._pending = (keys.detach(), ctx.rec_ids, ctx.nb_idx)
        return ObjectiveOutput(loss, {"queue_filled": float(self.queue.valid.float().mean())})

    def after_backward(self) -> None:
        if self._pending is not None:
            self.queue.enqueue(*(gather_from_all_ranks(t) for t in self._pending))
            self._pending = None
