"""The fine-tuning encoder recipe, the same for scratch and pretrained encoders: BatchNorm
statistics re-estimated on the training data before step 0, the encoder held for K steps."""

import pytest
import pytorch_lightning as pl
import torch

torch.set_num_threads(1)
pytestmark = pytest.mark.slow


def _build(out, synth_tiny, *overrides):
    from evcmae.tools.demo import _compose
    from evcmae.tools.pretrain import build

    cfg = _compose(
        "finetune",
        [
            "data=tiny",
            f"data.root={synth_tiny}",
            f"paths.data_dir={out}/data",
            f"paths.log_dir={out}/logs",
            "trainer.enable_progress_bar=false",
            "trainer.limit_val_batches=0",
            "validate_best=false",
            "data.seq_len=2",
            "data.augment=null",
            "optim.lr=0.002",
            "+trainer.enable_model_summary=false",
            *overrides,
        ],
        out / "run",
    )
    return build(cfg)


def _norms(module):
    return [m for m in module.model.encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_bn_recalibration_removes_the_statistics_confound(synth_tiny, tmp_path):
    """Two encoders with the same weights but different BatchNorm statistics (as a pretrained
    export and a fresh one have) start fine-tuning with identical statistics, measured on the data."""
    dm, a, trainer = _build(tmp_path / "a", synth_tiny, "trainer.max_steps=1")
    _, b, _ = _build(tmp_path / "b", synth_tiny, "trainer.max_steps=1")
    b.model.load_state_dict(a.model.state_dict())
    for m in _norms(b):  # statistics a pretraining run on masked input might leave behind
        m.running_mean.fill_(3.0)
        m.running_var.fill_(50.0)
    dm.setup("fit")
    for module in (a, b):
        module.trainer = trainer
        trainer.strategy._lightning_module = module
        trainer.fit_loop.epoch_loop._batches_that_stepped = 0
    trainer.datamodule = dm
    seen = [module.recalibrate_encoder_bn(3) for module in (a, b)]
    assert seen[0] == seen[1] > 0
    for ma, mb in zip(_norms(a), _norms(b)):
        torch.testing.assert_close(ma.running_mean, mb.running_mean)
        torch.testing.assert_close(ma.running_var, mb.running_var)
        assert float(ma.running_var.mean()) != pytest.approx(1.0)  # measured, not the 0/1 init
        assert ma.momentum == 0.01  # restored after the cumulative estimate


def test_precise_bn_reestimates_the_detector_and_leaves_the_encoder(synth_tiny, tmp_path):
    """``precise_bn`` (evcmae-evaluate precise_bn=N): every BatchNorm outside the encoder gets the
    plain mean of what it saw on the training pass, whatever it held before; the encoder's
    statistics and every weight stay as they were; ``all`` takes the encoder too."""
    dm, module, _ = _build(tmp_path, synth_tiny, "trainer.max_steps=1")
    dm.setup("fit")
    detector_norms = [m for m in module.model.detector.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert detector_norms and _norms(module)
    for m in detector_norms:
        m.running_mean.fill_(3.0)  # stale statistics, as a collapsed run leaves
        m.running_var.fill_(1e-6)
    weights = {
        k: v.clone() for k, v in module.model.state_dict().items() if "running" not in k and "num_batches" not in k
    }
    encoder_stats = [(m.running_mean.clone(), m.running_var.clone()) for m in _norms(module)]
    momenta = [m.momentum for m in detector_norms]
    probe, seen_means = detector_norms[0], []
    hook = probe.register_forward_hook(lambda m, inp, out: seen_means.append(inp[0].mean((0, 2, 3))))
    module.eval()  # as evcmae-evaluate loads it
    windows = module.precise_bn(dm.train_dataloader(), 3)
    hook.remove()
    assert windows > 0 and len(seen_means) > 0
    torch.testing.assert_close(probe.running_mean, torch.stack(seen_means).mean(0))
    assert int(probe.num_batches_tracked) == len(seen_means)
    assert all(float(m.running_var.min()) > 1e-6 for m in detector_norms)
    assert [m.momentum for m in detector_norms] == momenta  # restored after the cumulative mean
    assert not module.training and all(not m.training for m in detector_norms)  # mode restored
    for (mean, var), m in zip(encoder_stats, _norms(module)):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
    state = module.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())
    module.precise_bn(dm.train_dataloader(), 3, scope="all")
    assert any(not torch.equal(m.running_var, var) for (_, var), m in zip(encoder_stats, _norms(module)))
    with pytest.raises(ValueError, match="precise_bn_scope"):
        module.precise_bn(dm.train_dataloader(), 1, scope="head")


def test_encoder_waits_for_the_first_k_steps(synth_tiny, tmp_path):
    class Snapshots(pl.Callback):
        def __init__(self):
            self.encoder, self.head = [], []

        def on_train_batch_end(self, trainer, module, *args):
            self.encoder.append({k: v.clone() for k, v in module.model.encoder.state_dict().items()})
            self.head.append({k: v.clone() for k, v in module.model.detector.state_dict().items()})

    snaps = Snapshots()
    dm, module, trainer = _build(
        tmp_path, synth_tiny, "trainer.max_steps=3", "model.encoder_freeze_steps=2", "model.bn_recalibration_batches=2"
    )
    trainer.callbacks.append(snaps)
    start = {k: v.clone() for k, v in module.model.encoder.state_dict().items()}
    trainer.fit(module, datamodule=dm)
    recalibrated = snaps.encoder[0]
    # steps 1 and 2: no weight and no statistic of the encoder moves; the detector learns
    for k in start:
        if "running" in k or "num_batches" in k:
            continue
        assert torch.equal(snaps.encoder[0][k], start[k]) and torch.equal(snaps.encoder[1][k], start[k]), k
    assert all(torch.equal(snaps.encoder[1][k], recalibrated[k]) for k in recalibrated)
    assert any(not torch.equal(snaps.head[1][k], snaps.head[0][k]) for k in snaps.head[0])
    # step 3: the encoder trains
    assert any(not torch.equal(snaps.encoder[2][k], start[k]) for k in start if "running" not in k)


@pytest.mark.parametrize("freeze_steps", [0, 3])
def test_validation_logs_how_far_the_encoder_moved(synth_tiny, tmp_path, freeze_steps):
    """val/encoder_moved/<stage> is ‖W − W₀‖ / ‖W₀‖ from the weights at step 0, the pretraining
    export's measure: computed by hand here, and exactly 0 while the encoder is held."""
    from evcmae.backbones.sparse_resnet import stage_movement

    dm, module, trainer = _build(
        tmp_path,
        synth_tiny,
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "trainer.limit_val_batches=1",
        f"model.encoder_freeze_steps={freeze_steps}",
    )
    backbone = module.model.encoder.backbone
    start = {k: v.clone() for k, v in backbone.state_dict().items()}
    trainer.fit(module, datamodule=dm)
    logged = {k.rsplit("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if "encoder_moved" in k}
    assert sorted(logged) == sorted(backbone.stage_modules())
    expected = stage_movement(start, backbone)
    for stage, moved in logged.items():
        assert moved == pytest.approx(expected[stage], rel=1e-6)
        assert (moved == 0.0) if freeze_steps else (moved > 0.0), stage
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["encoder_start"]
    assert all(torch.equal(saved[k], start[k]) for k in start if "running" not in k and "num_batches" not in k)


def test_weight_ema_from_the_config(synth_tiny, tmp_path):
    """``callbacks.weight_ema.horizon`` builds the EMA around the real detector: the saved
    checkpoint's weights are the average (what evaluation loads), its ``current_model_state`` and
    the weights-only ``step=N.ckpt`` are the live weights the module keeps."""
    from evcmae.finetune.weight_average import DetectorEMA

    dm, module, trainer = _build(
        tmp_path,
        synth_tiny,
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "trainer.limit_val_batches=1",
        "callbacks.weight_ema.horizon=0.5",
        "callbacks.validations.keep=true",
    )
    (ema,) = [c for c in trainer.callbacks if isinstance(c, DetectorEMA)]
    trainer.fit(module, datamodule=dm)
    assert ema.horizon_steps == pytest.approx(1.5)
    live = module.state_dict()
    average = {k[len("module.") :]: v for k, v in ema._average_model.state_dict().items() if k.startswith("module.")}
    ckpts = tmp_path / "run" / "checkpoints"
    last = torch.load(ckpts / "last.ckpt", weights_only=False)
    weights_only = torch.load(ckpts / "step=3.ckpt", weights_only=False)
    assert last["state_dict"].keys() == live.keys() == weights_only["state_dict"].keys()
    for k in live:
        assert torch.equal(last["current_model_state"][k], live[k]), k
        assert torch.equal(weights_only["state_dict"][k], live[k]), k
        assert torch.equal(last["state_dict"][k], average[k]), k
    moved = [k for k in live if live[k].is_floating_point() and not torch.equal(live[k], average[k])]
    assert any(k.startswith("model.detector") for k in moved) and any(k.startswith("model.encoder") for k in moved)


def test_every_epoch_draws_its_own_chunks_and_augmentation(synth_tiny, tmp_path):
    """The chunk sampler is the training loader's batch sampler, which Lightning never hands the
    epoch to; the module does. Each epoch's batches are the sampler's draw for that epoch, and the
    augmentation seeds differ from one epoch to the next (before the fix every epoch replayed the
    first)."""
    from evcmae.finetune.chunks import ChunkBatchSampler

    class Epochs(pl.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.seen.append((trainer.current_epoch, trainer.train_dataloader.batch_sampler.epoch))

    dm, module, trainer = _build(tmp_path, synth_tiny, "trainer.max_steps=1")
    dm.setup("fit")
    per_epoch = len(dm.train_dataloader().batch_sampler)
    epochs = Epochs()
    dm, module, trainer = _build(
        tmp_path / "run",
        synth_tiny,
        f"trainer.max_steps={2 * per_epoch + 1}",
        "data.augment={flip_prob:0.5,zoom_prob:0.5,zoom_range:[0.8,1.5]}",
    )
    trainer.callbacks.append(epochs)
    trainer.fit(module, datamodule=dm)
    assert epochs.seen == [(e, e) for e in (0,) * per_epoch + (1,) * per_epoch + (2,)]

    sampler = dm.train_dataloader().batch_sampler
    assert isinstance(sampler, ChunkBatchSampler) and sampler.augment
    draws = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        draws.append([key.aug_seed for batch in sampler for key in batch])
    assert draws[0] != draws[1]
