"""The fine-tuning weight EMA (finetune/weight_average.py) against a hand-computed average of the
weights each step left, on a toy module: what validation sees, what the checkpoint holds, resuming,
and that horizon 0 changes nothing."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from evcmae.finetune.weight_average import DetectorEMA, ema_decay

STEPS = 12


class Toy(pl.LightningModule):
    """BatchNorm then a linear layer, SGD; records its live state after every step and the weight
    each validation ran with."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1))
        self.trajectory = []  # the live state after each optimizer step
        self.validated = []  # (step, weight) each validation used

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def on_train_batch_end(self, *_):
        self.trajectory.append({k: v.detach().clone() for k, v in self.net.state_dict().items()})

    def validation_step(self, batch, _):
        pass

    def on_validation_epoch_start(self):
        if not self.trainer.sanity_checking:
            self.validated.append((self.global_step, self.net[1].weight.detach().clone()))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loaders():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, generator=g) * 2 + 1  # four batches an epoch: the interruption falls between epochs
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    train = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)
    val = DataLoader(TensorDataset(x[:4], y[:4]), batch_size=4)
    return train, val


class StopAt(pl.Callback):
    """Interrupts a run after ``step`` steps, as a killed job would be before its last save."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *_):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def fit(horizon, max_steps=STEPS, ckpt_path=None, dirpath=None, stop_at=None):
    module = Toy()
    callbacks = [DetectorEMA(horizon)] + ([StopAt(stop_at)] if stop_at else [])
    if dirpath:
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=dirpath, save_last=True, save_top_k=0))
    trainer = pl.Trainer(
        max_steps=max_steps,
        val_check_interval=4,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=bool(dirpath),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        accelerator="cpu",
        deterministic=True,
    )
    train, val = loaders()
    trainer.fit(module, train, val, ckpt_path=ckpt_path)
    return module, trainer


def reference_ema(trajectory, horizon_steps):
    """The average by the documented rule, from the live states each step left."""
    average = None
    for n, state in enumerate(trajectory):
        if average is None:
            average = {k: v.clone() for k, v in state.items()}
            continue
        d = ema_decay(horizon_steps, n)
        average = {k: d * average[k] + (1 - d) * v if v.is_floating_point() else v for k, v in state.items()}
    return average


def test_decay_rule():
    assert ema_decay(100, 0) == pytest.approx(0.1)  # warm-up: the first update takes 90 % of the new weights
    assert ema_decay(100, 10**6) == pytest.approx(0.99)  # then 1 - 1/horizon
    assert ema_decay(0.5, 10**6) == 0.0  # a horizon under one step averages nothing


def test_average_matches_hand_computed_and_is_validated():
    module, trainer = fit(horizon=0.5)  # time constant 6 steps
    # every validation ran with the average up to its step, not the live weights
    assert [s for s, _ in module.validated] == [4, 8, 12]
    for step, weight in module.validated:
        torch.testing.assert_close(weight, reference_ema(module.trajectory[:step], 0.5 * STEPS)["1.weight"])
    assert not torch.allclose(module.validated[-1][1], module.trajectory[-1]["1.weight"])
    # after fit the module keeps its live weights (parameters and BatchNorm statistics) ...
    for k, v in module.net.state_dict().items():
        torch.testing.assert_close(v, module.trajectory[-1][k], msg=k)
    # ... and a later validation in the same trainer sees the average again
    trainer.validate(module, loaders()[1], verbose=False)
    torch.testing.assert_close(module.validated[-1][1], module.validated[-2][1])


def test_checkpoint_holds_average_and_resume_continues(tmp_path):
    whole, _ = fit(horizon=0.5)
    first, _ = fit(horizon=0.5, dirpath=tmp_path, stop_at=8)
    assert len(first.trajectory) == 8
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    # the state dict evaluation loads is the average; the live weights are kept for resuming
    torch.testing.assert_close(ckpt["state_dict"]["net.1.weight"], reference_ema(first.trajectory, 6)["1.weight"])
    torch.testing.assert_close(ckpt["current_model_state"]["net.1.weight"], first.trajectory[-1]["1.weight"])
    resumed, trainer = fit(horizon=0.5, ckpt_path=tmp_path / "last.ckpt")
    assert len(resumed.trajectory) == STEPS - 8
    # the resumed run's live weights and its last validation's average equal the uninterrupted run's
    for k, v in whole.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[k], v, msg=k)
    torch.testing.assert_close(resumed.validated[-1][1], whole.validated[-1][1])


def test_horizon_zero_changes_nothing(tmp_path):
    plain, _ = fit(horizon=0.0, dirpath=tmp_path)
    assert plain.validated[-1][0] == STEPS
    torch.testing.assert_close(plain.net[1].weight, plain.trajectory[-1]["1.weight"])  # live weights kept
    for step, weight in plain.validated:
        torch.testing.assert_close(weight, plain.trajectory[step - 1]["1.weight"])
    assert "current_model_state" not in torch.load(tmp_path / "last.ckpt", weights_only=False)


def test_negative_horizon_is_refused():
    with pytest.raises(ValueError, match="horizon"):
        DetectorEMA(-0.1)
