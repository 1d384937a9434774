"""A few real training steps under mixed precision: pretraining under bf16-mixed and 16-mixed,
fine-tuning under 16-mixed. Every loss must be finite (spconv is known for NaNs under fp16), no
step may be skipped as non-finite, the weights must stay finite and training must move them."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from config_helpers import tiny_pretrain_config

from evcmae.tools import pretrain as pretrain_tool

PRETRAIN_TERMS = ("occupancy", "reconstruction", "voxel_nce", "frame_contrastive", "rvt_stages", "total")


def _steps(device: str) -> int:
    # On a GPU 8 steps cost seconds and leave room for the fp16 gradient scaler's first skipped
    # steps (its initial scale of 65536 overflows until it has halved a few times); the CPU run
    # (gpu_check --dry-run) only exercises the checks.
    return 8 if device == "cuda" else 2


def _trained_weights(module) -> dict:
    return {k: p.detach().cpu().clone() for k, p in module.named_parameters() if p.requires_grad}


class StepLosses(pl.Callback):
    """Every logged training term of every step, and the trained weights before training."""

    def __init__(self, prefix: str = "train/"):
        self.prefix, self.rows, self.initial = prefix, [], None

    def on_train_start(self, trainer, module):
        self.initial = _trained_weights(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        row = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(self.prefix)}
        row["step_loss"] = float("nan") if loss is None else float(loss.detach().float())
        self.rows.append(row)


def _assert_trained_finitely(recorder: StepLosses, module, steps: int, terms) -> None:
    assert len(recorder.rows) == steps
    for i, row in enumerate(recorder.rows):
        bad = {k: v for k, v in row.items() if not math.isfinite(v)}
        assert not bad, f"step {i}: non-finite {bad}"
        assert all(f"train/{t}" in row for t in terms), f"step {i}: logged {sorted(row)}"
    state = {k: v for k, v in module.state_dict().items() if torch.is_tensor(v) and v.is_floating_point()}
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    assert not bad, f"non-finite weights or buffers after training: {bad[:5]}"
    # Only what the optimizer updates: BatchNorm statistics, the EMA teacher and the key queue
    # change at every step even when the gradient scaler skips the update.
    trained = _trained_weights(module)
    moved = [k for k, v in trained.items() if not torch.equal(v, recorder.initial[k])]
    assert moved, "no trained weight changed: every optimizer step was skipped"


def _pretrain_cfg(root, out, accelerator, precision, steps):
    return tiny_pretrain_config(
        root,
        out,
        f"trainer.accelerator={accelerator}",
        "trainer.devices=1",
        f"trainer.precision={precision}",
        f"trainer.max_steps={steps}",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        "trainer.limit_val_batches=0",
        "final_validation=false",
    )


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_pretraining_fit_is_finite(synth_tiny, tmp_path, device, accelerator, precision):
    steps = _steps(device)
    cfg = _pretrain_cfg(synth_tiny, tmp_path, accelerator, precision, steps)
    recorder = StepLosses()
    datamodule, module, trainer = pretrain_tool.build(cfg, [recorder])
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == steps
    assert module.nonfinite_total == 0
    _assert_trained_finitely(recorder, module, steps, PRETRAIN_TERMS)
    # Mixed precision keeps the weights and AdamW's moments in float32, where its eps (1e-8, which
    # float16 would round to 0) still guards the division; the half-precision copies are autocast's.
    optimizer = trainer.optimizers[0]
    assert all(p.dtype == torch.float32 for g in optimizer.param_groups for p in g["params"])
    moments = [v for state in optimizer.state.values() for k, v in state.items() if k in ("exp_avg", "exp_avg_sq")]
    assert moments and all(v.dtype == torch.float32 for v in moments)
    assert all(g["eps"] >= 1e-8 for g in optimizer.param_groups)
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if device == "cuda" and precision == "16-mixed":
        assert scaler is not None and math.isfinite(scaler.get_scale()) and scaler.get_scale() > 0


def test_finetuning_steps_under_16_mixed(tmp_path, device, accelerator):
    """The detector on the sparse encoder (spconv in fp16, RVT and YOLOX under autocast)."""
    from evcmae.tools.demo import _compose
    from evcmae.tools.pretrain import build

    steps = _steps(device)
    cfg = _compose(
        "finetune",
        [
            "data=tiny",
            "model=sparse",
            f"paths.data_dir={tmp_path}/data",
            f"paths.log_dir={tmp_path}/logs",
            f"trainer.accelerator={accelerator}",
            "trainer.devices=1",
            "trainer.precision=16-mixed",
            f"trainer.max_steps={steps}",
            "trainer.limit_val_batches=0",
            "trainer.log_every_n_steps=1",
            "trainer.enable_progress_bar=false",
            "data.seq_len=2",
            "data.augment=null",
        ],
        tmp_path / "run",
    )
    recorder = StepLosses()
    datamodule, module, trainer = build(cfg, [recorder])
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == steps
    _assert_trained_finitely(recorder, module, steps, ())  # a chunk without labels logs no train/loss
