"""Training loses no more than it must: checkpoints are written atomically, a damaged last.ckpt
falls back to the newest loadable one, a changed max_steps rebuilds the schedule, and empty
windows or batches are skipped and counted."""

import math
import shutil
import warnings

import pytest
import pytorch_lightning as pl
import torch
from config_helpers import QUIET_FIT, tiny_pretrain_config
from hydra.core.global_hydra import GlobalHydra

from evcmae.events.errors import CheckpointError
from evcmae.pretrain.checkpointing import AtomicCheckpointIO, read_checkpoint, rebuild_schedules_on_resume
from evcmae.pretrain.module import warmup_cosine
from evcmae.tools import pretrain as pretrain_tool

torch.set_num_threads(1)


# -- checkpoint files (fast) ----------------------------------------------------------------------
def test_interrupted_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def killed_mid_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # as a kill during the write would

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert read_checkpoint(path)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_damaged_last_without_another_checkpoint_is_refused(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"global_step": 3}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"last.ckpt: cannot be read, truncated or corrupt .*no other loadable"):
        AtomicCheckpointIO().load_checkpoint(path)


def test_damaged_named_checkpoint_does_not_fall_back(tmp_path):
    good, bad = tmp_path / "epoch=0-step=2.ckpt", tmp_path / "epoch=0-step=4.ckpt"
    torch.save({"global_step": 2}, good)
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="step=4.ckpt: cannot be read"):
        AtomicCheckpointIO().load_checkpoint(bad)  # the user asked for this one: no substitute


def _scheduler_states(total):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    return opt, warmup_cosine(opt, total, round(0.05 * total))


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("no_config", "no backbone.json"),
        ("config_not_json", "backbone.json: not valid JSON"),
        ("config_without_backbone", "backbone.json: lacks backbone.in_channels"),
        ("truncated_weights", "teacher_backbone.pt: cannot be read, truncated or corrupt"),
    ],
)
def test_damaged_backbone_export_names_the_file(tmp_path, damage, problem):
    from evcmae.backbones.sparse_resnet import SparseVoxelBackbone
    from evcmae.pretrain.export import CONFIG_FILE, TEACHER_FILE, export_backbones, load_backbone

    net = SparseVoxelBackbone()
    export_backbones(tmp_path, net, net)
    load_backbone(tmp_path, log=None)  # whole, it loads
    config, weights = tmp_path / CONFIG_FILE, tmp_path / TEACHER_FILE
    if damage == "no_config":
        config.unlink()
    elif damage == "config_not_json":
        config.write_text(config.read_text()[:40])
    elif damage == "config_without_backbone":
        config.write_text('{"backbone": {"channels": [16, 32, 64]}}')
    else:
        weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as err:
        load_backbone(tmp_path, log=None)
    assert problem in str(err.value) and str(tmp_path) in str(err.value)
    assert "\n" not in str(err.value)


def test_schedule_is_rebuilt_for_a_new_length():
    """A 3-step run (warm-up rounds to 0) resumed as a 20-step one (warm-up 1 step): the saved
    state carries the step only, and the new schedule continues from it."""
    opt, short = _scheduler_states(3)
    for _ in range(3):
        opt.step()
        short.step()
    checkpoint = {"lr_schedulers": [short.state_dict()]}
    rebuild_schedules_on_resume(checkpoint)
    opt2, long = _scheduler_states(20)
    long.load_state_dict(checkpoint["lr_schedulers"][0])
    assert long.last_epoch == 3
    factors = []
    for _ in range(17):
        opt2.step()
        long.step()
        factors.append(opt2.param_groups[0]["lr"] / 1e-3)
    expected = [0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (s - 1) / 19)) for s in range(4, 21)]
    assert factors == pytest.approx(expected)


def test_sequential_and_one_cycle_states_load_after_rebasing():
    """What older checkpoints hold (SequentialLR) and what fine-tuning uses (OneCycle)."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, OneCycleLR, SequentialLR

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    seq = SequentialLR(opt, [LinearLR(opt, 0.01, total_iters=2), CosineAnnealingLR(opt, 8)], milestones=[2])
    cycle = OneCycleLR(opt, max_lr=1e-3, total_steps=5)
    for _ in range(4):
        opt.step()
        seq.step()
        cycle.step()
    checkpoint = {"lr_schedulers": [seq.state_dict(), cycle.state_dict()]}
    rebuild_schedules_on_resume(checkpoint)
    _, fresh = _scheduler_states(10)
    fresh.load_state_dict(checkpoint["lr_schedulers"][0])
    longer = OneCycleLR(opt, max_lr=1e-3, total_steps=50)
    longer.load_state_dict(checkpoint["lr_schedulers"][1])
    assert fresh.last_epoch == longer.last_epoch == 4 and longer.total_steps == 50
    for _ in range(10):  # beyond the old 5 steps: used to raise "Tried to step 6 times"
        longer.step()


# -- pretraining fits (slow) ----------------------------------------------------------------------
def pretrain_cfg(root, out, *overrides):
    return tiny_pretrain_config(root, out, *QUIET_FIT, "callbacks.checkpoint.every_n_train_steps=2", *overrides)


def fit(root, out, steps, ckpt=None, callbacks=()):
    datamodule, module, trainer = pretrain_tool.build(pretrain_cfg(root, out, f"trainer.max_steps={steps}"), callbacks)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    return module, trainer


@pytest.mark.slow
def test_resume_with_a_larger_max_steps_ends_at_the_new_length(synth_tiny, tmp_path):
    fit(synth_tiny, tmp_path, 3)
    _, trainer = fit(synth_tiny, tmp_path, 20, ckpt="last")  # used to be KeyError: '_schedulers'
    assert trainer.global_step == 20
    for group in trainer.optimizers[0].param_groups:  # the end of the 20-step cosine
        assert group["lr"] == pytest.approx(1e-3 * 0.01)
    assert read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 20


@pytest.mark.slow
def test_damaged_last_ckpt_falls_back_to_the_newest_loadable(synth_tiny, tmp_path):
    fit(synth_tiny, tmp_path, 4)
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"last.ckpt: cannot be read, truncated .*; resuming from epoch=0-step=4.ckpt"):
        _, trainer = fit(synth_tiny, tmp_path, 6, ckpt="last")
    assert trainer.global_step == 6


class BatchCounter(pl.Callback):
    def __init__(self):
        self.empty_batches = self.empty_windows = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.empty_batches += int(batch.batch_size == 0)
        self.empty_windows += batch.empty_windows


@pytest.mark.slow
def test_runs_of_empty_windows_are_skipped_and_counted(synth_tiny, tmp_path):
    from evcmae.events.h5 import read_h5, write_h5

    root = tmp_path / "quiet"
    shutil.copytree(synth_tiny, root)
    for path in (root / "pretrain").glob("*_td.h5"):  # 0.75 s of silence in a 1 s recording
        events = read_h5(path)
        write_h5(path, events[(events.t < 150_000) | (events.t >= 900_000)])
    counter = BatchCounter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module, trainer = fit(root, tmp_path / "out", 8, callbacks=[counter])  # used to stop inside spconv
    assert trainer.global_step == 8
    assert counter.empty_batches > 0 and counter.empty_windows >= 2 * counter.empty_batches
    assert (module.empty_batches_total, module.empty_windows_total) == (counter.empty_batches, counter.empty_windows)
    assert float(trainer.callback_metrics["train/empty_windows"]) == counter.empty_windows


# -- fine-tuning (slow) ---------------------------------------------------------------------------
@pytest.mark.slow
def test_finetune_resume_with_a_larger_max_steps(synth_tiny, tmp_path):
    from evcmae.tools.demo import _compose
    from evcmae.tools.pretrain import build

    def finetune(steps, ckpt=None):
        GlobalHydra.instance().clear()
        cfg = _compose(
            "finetune",
            [
                "data=tiny",
                f"data.root={synth_tiny}",
                f"paths.log_dir={tmp_path}",
                f"trainer.max_steps={steps}",
                "trainer.limit_val_batches=0",
                "trainer.enable_progress_bar=false",
                "+trainer.enable_model_summary=false",
                "data.seq_len=2",
                "data.augment=null",
                "callbacks.checkpoint.monitor=null",
                "+callbacks.checkpoint.every_n_train_steps=1",
            ],
            tmp_path / "run",
        )
        datamodule, module, trainer = build(cfg)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
        return trainer

    finetune(2)
    trainer = finetune(4, ckpt=str(tmp_path / "run" / "checkpoints" / "last.ckpt"))  # OneCycle used to stop at 2
    assert trainer.global_step == 4
    from evcmae.finetune.module import one_cycle

    group = trainer.optimizers[0].param_groups[0]
    reference_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=group["max_lr"])
    reference = one_cycle(reference_opt, group["max_lr"], 4)  # a 4-step schedule from the start
    for _ in range(4):
        reference_opt.step()
        reference.step()
    assert group["lr"] == pytest.approx(reference_opt.param_groups[0]["lr"])
