"""An exponential moving average of the detector's weights during fine-tuning (``callbacks.weight_ema``).

Fine-tuning at the study's learning rate on batches of two is noisy: validation AP can collapse and
recover within a run, and two training seeds on the same labelled recordings have ended 3.3 and 14.2
test AP apart. Averaging the weights over the last stretch of the run is the usual remedy (YOLOX
evaluates an EMA of its weights). Lightning's ``WeightAveraging`` does the bookkeeping: the average
is validated (and tested) in place of the live weights, and saved checkpoints carry the average as their
``state_dict`` (the live weights under ``current_model_state``, for resuming), so evaluation,
detection and export of a checkpoint use the average without knowing about it. Weights-only saves
(``callbacks.validations``, ``step=N.ckpt``) keep the live weights.

The horizon rule: the average's time constant is ``horizon`` × ``trainer.max_steps`` steps (decay
1 − 1/that), so the same setting means the same share of the run at any length; early on the decay
is capped at (1 + n) / (10 + n) after n updates, so the first validations do not mostly hold the
initial weights. ``horizon: 0`` (the default) turns averaging off and leaves training untouched.
"""

from __future__ import annotations

import torch
from pytorch_lightning.callbacks import WeightAveraging


def ema_decay(horizon_steps: float, n_averaged: int) -> float:
    """The decay applied at an update after ``n_averaged`` earlier ones: 1 − 1/horizon_steps, capped
    by the warm-up (1 + n) / (10 + n)."""
    return min(1.0 - 1.0 / max(float(horizon_steps), 1.0), (1.0 + n_averaged) / (10.0 + n_averaged))


class DetectorEMA(WeightAveraging):
    """EMA of every parameter and buffer (BatchNorm statistics too) of the fine-tuned module."""

    def __init__(self, horizon: float = 0.0, device=None):
        if horizon < 0:
            raise ValueError(f"callbacks.weight_ema.horizon must be >= 0 (a share of trainer.max_steps), got {horizon}")
        super().__init__(device=device, use_buffers=True, avg_fn=self._average)
        self.horizon = float(horizon)
        self.horizon_steps = 0.0

    def _average(self, averaged: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():  # counters (BatchNorm's num_batches_tracked) follow the live ones
            return current
        return torch.lerp(current, averaged, ema_decay(self.horizon_steps, int(n_averaged)))

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.horizon <= 0:
            return
        if stage == "fit":
            if not trainer.max_steps or trainer.max_steps < 1:
                raise ValueError("callbacks.weight_ema needs trainer.max_steps: its horizon is a share of the run")
            self.horizon_steps = self.horizon * trainer.max_steps
        super().setup(trainer, pl_module, stage)

    def should_update(self, step_idx=None, epoch_idx=None) -> bool:
        return self._average_model is not None and step_idx is not None

    # Lightning swaps the average in for validation only; a test in the same trainer sees it too.
    def on_test_epoch_start(self, trainer, pl_module) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    on_test_epoch_end = on_test_epoch_start

    # Lightning copies the average into the module when fit ends; a checkpoint saved after that
    # (save_last at train end) would then resume from the average instead of the live weights. The
    # module keeps its live weights; validation, test and every checkpoint's state_dict hold the average.
    def on_train_end(self, trainer, pl_module) -> None:
        pass

    # Off (or outside fit, where there is no average to keep): checkpoints pass through untouched.
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self._average_model is not None:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self._average_model is not None:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
