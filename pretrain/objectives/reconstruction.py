"""Multi-scale latent reconstruction of the EMA teacher's features where the student could not see."""

from __future__ import annotations

from typing import Mapping, Sequence

from evcmae.losses.reconstruction import MultiScaleReconstructionLoss
from evcmae.pretrain.objectives.base import Objective, ObjectiveOutput, StepContext


class ReconstructionObjective(Objective):
    """One decoder per scale predicts the teacher's normalised features at the teacher's sites.

    ``masked_only`` (default on) scores only the sites inside masked regions (``StepContext.hidden``):
    elsewhere the student has the input itself and the target is close to an identity. The logs
    give, per scale, the hidden share of the teacher's sites and the share of those the decoder
    can reach (a student site within its kernel)."""

    needs_teacher = True

    def __init__(
        self,
        channels: Mapping[str, int],
        weight: float = 1.0,
        scales: Sequence[str] = ("x_conv2", "x_conv3"),
        kernel_size: int = 3,
        hidden: int | None = None,
        loss: str = "mse",
        beta: float = 1.0,
        masked_only: bool = True,
    ):
        super().__init__(weight)
        self.scales, self.masked_only = tuple(scales), masked_only
        self.criterion = MultiScaleReconstructionLoss(
            dict(channels), scales=self.scales, hidden=hidden, kernel_size=kernel_size, loss=loss, beta=beta
        )

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        teacher = ctx.teacher()
        targets = {s: ctx.hidden(s) for s in self.scales} if self.masked_only else None
        result = self.criterion(ctx.student, teacher, targets)
        logs = {f"coverage/{s}": c for s, c in result.coverage.items()}
        logs.update({f"loss/{s}": v for s, v in result.per_scale.items()})
        if targets is not None:
            logs.update(
                {f"masked_share/{s}": float(m.float().mean()) if m.numel() else 0.0 for s, m in targets.items()}
            )
        return ObjectiveOutput(result.loss, logs)
