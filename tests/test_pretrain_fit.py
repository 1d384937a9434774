"""Pretraining end to end on the tiny synthetic preset, in this process (a few steps each).

One shared fit checks logging, export and the EMA teacher; short separate fits check the λ = 0
branches, the non-finite handling and resuming."""

import csv
import math

import pytest
import pytorch_lightning as pl
import torch
from config_helpers import QUIET_FIT, tiny_pretrain_config

from evcmae.backbones.sparse_resnet import SparseVoxelBackbone
from evcmae.pretrain.ema import ema_momentum, horizon_base, initial_share
from evcmae.pretrain.export import load_backbone
from evcmae.pretrain.module import NonFiniteTrainingError
from evcmae.pretrain.term_gradients import TermGradients
from evcmae.tools import pretrain as pretrain_tool

TERMS = ("occupancy", "reconstruction", "voxel_nce", "frame_contrastive")
pytestmark = pytest.mark.slow


TOOL = pretrain_tool


@pytest.fixture(scope="module")
def tiny(synth_tiny):
    return synth_tiny


def make_cfg(tiny, out, *overrides):
    return tiny_pretrain_config(
        tiny,
        out,
        *QUIET_FIT,
        "trainer.max_steps=4",
        "trainer.log_every_n_steps=1",
        "data.val_max_windows=8",
        *overrides,
    )


class EmaRecorder(pl.Callback):
    """Teacher and student just after each optimizer step (module's optimizer_step has run the EMA
    by the time callbacks see on_train_batch_end), and the teacher just before it."""

    def __init__(self):
        self.before, self.records = None, []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.before = {k: v.detach().clone() for k, v in module.teacher.named_parameters()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.records.append(
            (
                trainer.global_step,
                self.before,
                {k: v.detach().clone() for k, v in module.student.named_parameters()},
                {k: v.detach().clone() for k, v in module.teacher.named_parameters()},
            )
        )


@pytest.fixture(scope="module")
def fitted(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    cfg = make_cfg(tiny, out, "final_validation=true", "trainer.limit_val_batches=1.0")
    recorder = EmaRecorder()
    metrics = TOOL.run(cfg, extra_callbacks=[recorder])
    return out, metrics, recorder


def test_fit_logs_every_term_finite(fitted):
    out, metrics, _ = fitted
    with open(out / "csv" / "version_0" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for term in (*TERMS, "total"):
        values = [float(r[f"train/{term}"]) for r in rows if r.get(f"train/{term}")]
        assert len(values) == 4, term
        assert all(math.isfinite(v) for v in values), term
        assert math.isfinite(metrics[f"train/{term}"])
    assert metrics["global_step"] == 4 and metrics["train/nonfinite_steps"] == 0
    assert 0.0 <= metrics["probe/knn_acc"] <= 1.0 and metrics["probe/boxes"] > 10
    assert any(v for r in rows for k, v in r.items() if k.startswith("lr"))  # LearningRateMonitor


def test_fit_exports_backbones_with_matching_keys(fitted):
    out, _, _ = fitted
    student = torch.load(out / "student_backbone.pt", weights_only=True)
    teacher = torch.load(out / "teacher_backbone.pt", weights_only=True)
    # no objective reads x_conv4, so the exported backbone is the encoder the detector uses
    fresh = SparseVoxelBackbone().truncate("x_conv3").state_dict()
    assert student.keys() == teacher.keys() == fresh.keys()
    assert all(student[k].shape == fresh[k].shape for k in fresh)
    backbone, config, report = load_backbone(out, log=None)
    assert len(report["loaded"]) == len(fresh) and not report["missing"] and not report["unexpected"]
    assert config["voxelizer"]["width"] == 320 and config["backbone"]["channels"] == [16, 32, 64]
    # the record says which network each file is, and how far each stage moved
    assert set(config["networks"]) == {"teacher_backbone.pt", "student_backbone.pt"}
    assert config["stages"] == ["conv_input", "conv1", "conv2", "conv3"]
    for network in ("teacher", "student"):
        moved = config["movement_from_init"][network]
        assert set(moved) == set(config["stages"]) and all(v > 0 for v in moved.values())
    ema = config["ema"]
    assert ema["teacher_init_share"] == pytest.approx(initial_share(4, ema["base"]))
    assert ema["base"] == pytest.approx(horizon_base(4))  # the horizon rule at work (test_ema checks the rule)
    assert all(torch.equal(backbone.state_dict()[k], teacher[k]) for k in teacher)


def test_checkpoint_holds_teacher_and_queue(fitted):
    out, _, _ = fitted
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert any(k.startswith("teacher.backbone.") for k in state)
    queue = "objectives.frame_contrastive.queue."
    assert {queue + k for k in ("keys", "rec_ids", "win_idx", "ptr")} <= state.keys()
    assert int(state[queue + "ptr"]) == 4 * 2  # 4 steps of batch 2 enqueued
    assert any(k.startswith("objectives.voxel_nce.teacher_head.") for k in state)  # EMA twin of the head


def test_ema_teacher_follows_the_momentum_formula(fitted):
    _, _, recorder = fitted
    assert [r[0] for r in recorder.records] == [1, 2, 3, 4]
    for step, before, student, after in recorder.records:
        m = ema_momentum(step, 4, horizon_base(4))
        for name in before:
            expected = m * before[name] + (1 - m) * student[name]
            torch.testing.assert_close(after[name], expected, rtol=1e-5, atol=1e-6)
    _, _, student, teacher = recorder.records[0]
    assert any(not torch.equal(student[k], teacher[k]) for k in student)  # it lags the student
    assert ema_momentum(4, 4) == 1.0  # the last step leaves the teacher where it was
    _, before, _, after = recorder.records[-1]
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("disabled", ["voxel_nce", "frame_contrastive"])
def test_zero_weight_skips_the_branch(tiny, tmp_path, monkeypatch, disabled):
    from evcmae.pretrain.objectives.frame_contrastive import FrameContrastiveObjective
    from evcmae.pretrain.objectives.voxel_nce import VoxelNCEObjective

    def must_not_run(*args, **kwargs):
        raise AssertionError(f"{disabled} branch ran with weight 0")

    cls = {"voxel_nce": VoxelNCEObjective, "frame_contrastive": FrameContrastiveObjective}[disabled]
    monkeypatch.setattr(cls, "forward", must_not_run)

    class AllGradients(pl.Callback):
        steps = 0

        def on_before_optimizer_step(self, trainer, module, optimizer):
            missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
            assert not missing, f"parameters without gradient: {missing[:5]}"
            AllGradients.steps += 1

    cfg = make_cfg(tiny, tmp_path, f"loss.weights.{disabled}=0", "trainer.max_steps=2")
    datamodule, module, trainer = TOOL.build(cfg, [AllGradients()])
    assert disabled not in module.objectives and set(module.student) == {"backbone"}
    trainer.fit(module, datamodule=datamodule)
    assert AllGradients.steps == 2
    logged = trainer.callback_metrics
    assert f"train/{disabled}" not in logged
    assert all(f"train/{t}" in logged for t in TERMS if t != disabled)


def _nan_on_calls(monkeypatch, bad_calls):
    """Make the occupancy term NaN on the given (0-based) calls."""
    from evcmae.pretrain.objectives.occupancy import OccupancyObjective

    original, calls = OccupancyObjective.forward, []

    def occupancy(self, ctx):
        calls.append(len(calls))
        out = original(self, ctx)
        bad = bad_calls is None or calls[-1] in bad_calls
        return out._replace(loss=out.loss * float("nan")) if bad else out

    monkeypatch.setattr(OccupancyObjective, "forward", occupancy)


def test_nonfinite_step_is_skipped_and_counted(tiny, tmp_path, monkeypatch):
    _nan_on_calls(monkeypatch, {1})
    recorder = EmaRecorder()
    cfg = make_cfg(tiny, tmp_path, "trainer.max_steps=3", "model.max_nonfinite=2")
    datamodule, module, trainer = TOOL.build(cfg, [recorder])
    with pytest.warns(UserWarning, match="optimizer step skipped"):
        trainer.fit(module, datamodule=datamodule)
    assert module.nonfinite_total == 1
    assert float(trainer.callback_metrics["train/nonfinite_steps"]) == 1
    # The skipped batch changed neither the student (no gradients) nor the teacher (no EMA).
    _, _, student1, teacher1 = recorder.records[0]
    _, _, student2, teacher2 = recorder.records[1]
    assert all(torch.equal(student1[k], student2[k]) for k in student1)
    assert all(torch.equal(teacher1[k], teacher2[k]) for k in teacher1)
    adam_steps = {int(s["step"]) for s in trainer.optimizers[0].state.values()}
    assert adam_steps == {2}  # three batches, two real steps


def test_repeated_nonfinite_losses_stop_training(tiny, tmp_path, monkeypatch):
    _nan_on_calls(monkeypatch, None)
    cfg = make_cfg(tiny, tmp_path, "trainer.max_steps=10", "model.max_nonfinite=3")
    datamodule, module, trainer = TOOL.build(cfg)
    with pytest.raises(NonFiniteTrainingError, match="not finite for 3 consecutive steps.*'occupancy'"):
        trainer.fit(module, datamodule=datamodule)


class StopAt(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _same_state(a, b) -> bool:
    """Tensors equal, or dicts of them (a module's extra state: the RVT stages' initial weights)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    return torch.equal(a, b)


def test_resume_matches_an_uninterrupted_run(tiny, tmp_path):
    """4 steps straight vs 2 + resume for 2, with 3-batch epochs so the resume lands mid-epoch and
    the resumed run crosses an epoch boundary."""
    common = ("trainer.limit_train_batches=3", "callbacks.checkpoint.every_n_train_steps=1")

    def fit(out, ckpt=None, stop=None):
        cfg = make_cfg(tiny, out, *common)
        datamodule, module, trainer = TOOL.build(cfg, [StopAt(stop)] if stop else [])
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
        return torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)

    straight = fit(tmp_path / "straight")
    half = fit(tmp_path / "resumed", stop=2)
    assert half["global_step"] == 2
    resumed = fit(tmp_path / "resumed", ckpt=str(tmp_path / "resumed" / "checkpoints" / "last.ckpt"))
    assert straight["global_step"] == resumed["global_step"] == 4
    assert straight["epoch"] == resumed["epoch"]
    a, b = straight["state_dict"], resumed["state_dict"]
    assert a.keys() == b.keys()
    for prefix in ("student.", "teacher.", "objectives.", "grad_norm_mean"):
        keys = [k for k in a if k.startswith(prefix)]
        assert keys
        for k in keys:
            assert _same_state(a[k], b[k]), k
    # the exported parts' initial weights travel in the checkpoint beside the backbone's
    assert _same_state(straight["evcmae_initial_objectives"], resumed["evcmae_initial_objectives"])
    assert set(straight["evcmae_initial_objectives"]) == {"rvt_stages"}
    opt_a, opt_b = straight["optimizer_states"][0], resumed["optimizer_states"][0]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for i in opt_a["state"]:
        for name, value in opt_a["state"][i].items():
            assert torch.equal(value, opt_b["state"][i][name]), (i, name)
    assert straight["lr_schedulers"] == resumed["lr_schedulers"]


def test_resume_from_a_checkpoint_with_the_legacy_initial_state(tiny, tmp_path):
    """Checkpoints made before commit aaa9de0 hold the RVT stages' initial weights as module extra
    state in the state dict; resuming one continues with those weights as the starting point."""
    out = tmp_path / "run"
    cfg = make_cfg(tiny, out, "callbacks.checkpoint.every_n_train_steps=1")
    datamodule, module, trainer = TOOL.build(cfg, [StopAt(2)])
    trainer.fit(module, datamodule=datamodule)
    path = out / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=False)
    saved = checkpoint.pop("evcmae_initial_objectives")["rvt_stages"]
    # shifted, so that the weights after resuming can only have come from the checkpoint
    initial = {k: v + 1 if v.is_floating_point() else v for k, v in saved.items()}
    checkpoint["state_dict"]["objectives.rvt_stages._extra_state"] = {"initial_rvt": initial}
    torch.save(checkpoint, path)

    datamodule, module, trainer = TOOL.build(make_cfg(tiny, out, "trainer.max_steps=3"))
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(path))
    assert trainer.global_step == 3
    assert _same_state(module.objectives["rvt_stages"].initial_state, initial)


def test_ema_once_per_optimizer_step_under_accumulation(tiny, tmp_path, monkeypatch):
    import evcmae.pretrain.module as module_mod

    updates, original = [], module_mod.ema_update

    def record(teacher, student, m):
        if teacher is module.teacher:  # the backbone's update (heads' EMA twins get the same momentum)
            updates.append(m)
        original(teacher, student, m)

    monkeypatch.setattr(module_mod, "ema_update", record)

    class CountBatches(pl.Callback):
        batches = 0

        def on_train_batch_end(self, *args):
            CountBatches.batches += 1

    cfg = make_cfg(tiny, tmp_path, "trainer.max_steps=2", "trainer.accumulate_grad_batches=2")
    datamodule, module, trainer = TOOL.build(cfg, [CountBatches()])
    trainer.fit(module, datamodule=datamodule)
    assert CountBatches.batches == 4 and trainer.global_step == 2
    base = horizon_base(2)
    assert updates == [ema_momentum(1, 2, base), ema_momentum(2, 2, base)]


class _RecordingTermGradients(TermGradients):
    """The module's meter, also keeping each step's taps and losses so that a callback can compute
    the reference, ``torch.autograd.grad`` of each term alone, just before the real backward."""

    def reset(self):
        super().reset()
        self.kept_taps, self.kept_losses = {n: [] for n in self.names}, {}

    def tap(self, name, tensor):
        view = super().tap(name, tensor)
        if view.requires_grad:
            self.kept_taps[name].append(view)
        return view

    def watch(self, name, loss):
        super().watch(name, loss)
        self.kept_losses[name] = loss

    def reference(self) -> list[float]:
        saved_squares = {n: list(v) for n, v in self._squares.items()}
        saved_seeds = dict(self._seeds)
        row = []
        for name in self.names:
            loss, taps = self.kept_losses[name], self.kept_taps[name]
            if not loss.requires_grad or not taps:
                row.append(0.0)
                continue
            grads = torch.autograd.grad(loss, taps, retain_graph=True, allow_unused=True)
            row.append(math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads if g is not None)))
        for name, squares in self._squares.items():  # autograd.grad fired the hooks: undo that
            squares[:] = saved_squares[name]
        self._seeds.clear()
        self._seeds.update(saved_seeds)
        return row

    def norms(self, device=None):
        out = super().norms(device)
        self.measured.append(out.tolist())
        return out


def test_logged_grad_norms_equal_each_term_alone_under_accumulation(tiny, tmp_path, monkeypatch):
    """The norms read off the step's backward equal autograd.grad of each term alone, though the
    loss reaching backward is scaled by accumulation's 1/2 and each term by its balanced weight."""
    import evcmae.pretrain.module as module_mod

    monkeypatch.setattr(module_mod, "TermGradients", _RecordingTermGradients)

    class Reference(pl.Callback):
        rows: list = []

        def on_before_backward(self, trainer, module, loss):
            self.rows.append(module.term_gradients.reference())

    reference = Reference()
    cfg = make_cfg(tiny, tmp_path, "trainer.max_steps=2", "trainer.accumulate_grad_batches=2")
    datamodule, module, trainer = TOOL.build(cfg, [reference])
    module.term_gradients.measured = []
    trainer.fit(module, datamodule=datamodule)
    measured = module.term_gradients.measured
    assert len(reference.rows) == len(measured) == 4  # one backward per micro-batch
    for ref, got in zip(reference.rows, measured):
        assert got == pytest.approx(ref, rel=1e-4)
    # Frame contrastive's first batch has an empty queue (loss without gradient); by the last every
    # term reaches the backbone's outputs.
    assert all(v > 0 for v in measured[-1])
    with open(tmp_path / "csv" / "version_0" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for i, name in enumerate(module.term_gradients.names):
        logged = [float(r[f"train/grad_norm/{name}"]) for r in rows if r.get(f"train/grad_norm/{name}")]
        assert logged and logged[-1] == pytest.approx(measured[-1][i], rel=1e-6)
