"""Occupancy: which coarse cells of the masked regions hold events, predicted from the visible ones."""

from __future__ import annotations

from typing import Callable, Mapping

from evcmae.losses.occupancy import occupancy_queries
from evcmae.pretrain.objectives.base import Objective, ObjectiveOutput, StepContext


class OccupancyObjective(Objective):
    """``decoder``: a factory ``(in_channels) -> OccupancyDecoder``; ``criterion``: ``OccupancyLoss``.

    ``exclude_partially_visible`` (default on) keeps only cells the student has no voxel in as
    positives: with voxel-level (random) masking a cell holding both a masked and a visible voxel
    would otherwise be answered by "is there a student voxel here", which leaks the target."""

    def __init__(
        self,
        channels: Mapping[str, int],
        decoder: Callable,
        criterion,
        weight: float = 1.0,
        scale: str = "x_conv3",
        num_empty_per_positive: float = 1.0,
        neighbourhood: int = 1,
        exclude_partially_visible: bool = True,
    ):
        super().__init__(weight)
        self.scale, self.scales = scale, (scale,)
        self.decoder = decoder(channels[scale])
        self.criterion = criterion
        self.num_empty_per_positive, self.neighbourhood = num_empty_per_positive, neighbourhood
        self.exclude_partially_visible = exclude_partially_visible

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        coords, visible = ctx.full.coords, ctx.visible
        queries = occupancy_queries(
            coords,
            coords[visible],
            coords[~visible],
            ctx.stride(self.scale),
            self.num_empty_per_positive,
            self.neighbourhood,
            ctx.backbone.output_shapes(ctx.full.spatial_shape)[self.scale],
            self.exclude_partially_visible,
            ctx.generator,
        )
        loss = self.criterion(self.decoder(ctx.student[self.scale], queries.coords), queries.targets)
        return ObjectiveOutput(loss, {"positives": float(queries.num_positive)})
