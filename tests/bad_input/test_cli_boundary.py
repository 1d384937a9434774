"""One error boundary for every evcmae-* command: a user error is one line on stderr and exit 2;
``--debug`` or ``HYDRA_FULL_ERROR=1`` shows its traceback; a bug keeps its traceback."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import good_columns, write_columns

from evcmae.events.errors import CheckpointError, EventFileError
from evcmae.tools.cli import entry


@entry("evcmae-test")
def tool(argv=None, exc=None):
    if exc is not None:
        raise exc
    return 0


def test_user_error_is_one_line_and_exit_2(capsys):
    assert tool([], EventFileError("rec_td.h5", "not a number (nan)", "t", 3)) == 2
    captured = capsys.readouterr()
    assert captured.err == "evcmae-test: error: rec_td.h5: t (row 3): not a number (nan)\n"


def test_user_error_wrapped_in_another_is_found(capsys):
    try:
        raise CheckpointError("last.ckpt", "cannot be read")
    except CheckpointError as inner:
        outer = RuntimeError("Error in call to target")
        outer.__cause__ = inner
    assert tool([], outer) == 2
    assert capsys.readouterr().err == "evcmae-test: error: last.ckpt: cannot be read\n"


def test_a_bug_inside_instantiate_keeps_its_traceback():
    from hydra.errors import InstantiationException

    try:
        raise TypeError("__init__() got an unexpected keyword argument 'widht'")
    except TypeError as bug:
        wrapped = InstantiationException("Error in call to target 'Voxelizer'")
        wrapped.__cause__ = bug
    with pytest.raises(InstantiationException):
        tool([], wrapped)


def test_missing_file_is_a_user_error(capsys):
    assert tool([], FileNotFoundError(2, "No such file or directory", "nope.h5")) == 2
    assert capsys.readouterr().err == "evcmae-test: error: nope.h5: No such file or directory\n"


def test_sys_exit_message_becomes_the_same_line(capsys):
    assert tool([], SystemExit("checkpoint=x.ckpt: no such file")) == 2
    assert capsys.readouterr().err == "evcmae-test: error: checkpoint=x.ckpt: no such file\n"


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        tool([], ZeroDivisionError("division by zero"))


def test_debug_flag_and_hydra_full_error_show_the_traceback(monkeypatch):
    with pytest.raises(EventFileError):
        tool(["--debug"], EventFileError("a.h5", "bad"))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(EventFileError):
        tool([], EventFileError("a.h5", "bad"))


def test_environment_is_restored(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("EVCMAE_DEBUG", raising=False)
    assert tool([]) == 0
    assert "HYDRA_FULL_ERROR" not in os.environ and "EVCMAE_DEBUG" not in os.environ


# -- the real commands ---------------------------------------------------------------------------
def _run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300
    )


def _only_error_line(proc, prog):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    return errors[0]


@pytest.mark.slow
def test_pretrain_config_error_is_one_line_not_a_traceback(synth_tiny, tmp_path):
    common = ("evcmae.tools.pretrain", "data=tiny", f"data.root={synth_tiny}", f"hydra.run.dir={tmp_path}")
    line = _only_error_line(_run(*common, "masking.ratio=0"), "evcmae-pretrain")
    assert line.startswith("evcmae-pretrain: error: masking.ratio=0: must be in (0, 1)")
    debug = _run(*common, "masking.ratio=0", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


@pytest.mark.slow
def test_bad_override_is_one_line(tmp_path):
    proc = _run("evcmae.tools.finetune", "data.nonexistent_key=3", f"hydra.run.dir={tmp_path}")
    assert "Could not override 'data.nonexistent_key'" in _only_error_line(proc, "evcmae-finetune")


@pytest.fixture
def pretrain_ckpt(tmp_path):
    from evcmae.backbones.sparse_resnet import SparseVoxelBackbone

    state = {f"teacher.backbone.{k}": v for k, v in SparseVoxelBackbone(channels=(4, 4, 4, 4)).state_dict().items()}
    path = tmp_path / "pretrain_last.ckpt"
    torch.save({"state_dict": state, "global_step": 3}, path)
    return path


def test_evaluating_a_pretraining_checkpoint(pretrain_ckpt, capsys):
    from evcmae.tools import evaluate

    assert evaluate.main([f"checkpoint={pretrain_ckpt}"]) == 2  # used to be a bare TypeError
    err = capsys.readouterr().err
    assert err.startswith(f"evcmae-evaluate: error: {pretrain_ckpt}: a pretraining checkpoint, not a fine-tuned")
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_truncated_checkpoint_names_the_file(pretrain_ckpt, capsys):
    from evcmae.tools import evaluate

    data = pretrain_ckpt.read_bytes()
    pretrain_ckpt.write_bytes(data[: len(data) // 2])
    assert evaluate.main([f"checkpoint={pretrain_ckpt}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"evcmae-evaluate: error: {pretrain_ckpt}: cannot be read, truncated or corrupt")


@pytest.fixture
def detector_ckpt(tmp_path):
    """A (untrained) fine-tuning checkpoint, as Lightning writes its essentials."""
    import pytorch_lightning as pl

    from evcmae.finetune.module import FinetuneModule

    data = {"_target_": "evcmae.finetune.data.FinetuneDataModule", "root": str(tmp_path), "width": 64, "height": 48}
    detector = {"_target_": "evcmae.finetune.encoder.EventDetector", "input": "histogram", "size": "tiny"}
    module = FinetuneModule(detector, "etram8", width=64, height=48, data=data)
    path = tmp_path / "detector.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": pl.__version__,
        },
        path,
    )
    return path


def test_detect_refuses_decreasing_timestamps_in_one_line(tmp_path, detector_ckpt, capsys):
    from evcmae.tools import detect

    columns = good_columns()
    columns["t"] = columns["t"][::-1].copy()
    rec = write_columns(tmp_path / "reversed_td.h5", columns)
    assert detect.main([f"checkpoint={detector_ckpt}", f"input={rec}"]) == 2  # used to write 0 detections
    err = capsys.readouterr().err
    assert (
        err.startswith(f"evcmae-detect: error: {rec}: timestamps decrease at event 1 ") and len(err.splitlines()) == 1
    )
    assert not list(tmp_path.glob("*detections*"))


@pytest.mark.parametrize("field", ["p", "t"])
def test_detect_refuses_nan_in_one_line(tmp_path, detector_ckpt, capsys, field):
    from evcmae.tools import detect

    columns = good_columns()
    columns[field] = columns[field].astype(np.float64)
    columns[field][2] = np.nan
    rec = write_columns(tmp_path / "nan_td.h5", columns)
    assert detect.main([f"checkpoint={detector_ckpt}", f"input={rec}"]) == 2
    assert capsys.readouterr().err.startswith(f"evcmae-detect: error: {rec}: {field} (row 2): not a number")


def test_checkpoint_pattern_needs_exactly_one_match(tmp_path, capsys):
    """evcmae-evaluate takes the pattern commands.sh prints (``best-step=*.ckpt``): one match is
    the checkpoint, none or several are one line naming the pattern."""
    from evcmae.pretrain.checkpointing import resolve_checkpoint
    from evcmae.tools import evaluate

    pattern = tmp_path / "best-step=*.ckpt"
    assert evaluate.main([f"checkpoint={pattern}"]) == 2
    assert capsys.readouterr().err == f"evcmae-evaluate: error: {pattern}: no file matches it\n"
    (tmp_path / "best-step=300.ckpt").write_text("")
    assert resolve_checkpoint(pattern) == tmp_path / "best-step=300.ckpt"
    assert resolve_checkpoint(tmp_path / "last.ckpt") == tmp_path / "last.ckpt"  # no pattern: as given
    (tmp_path / "best-step=450.ckpt").write_text("")
    assert evaluate.main([f"checkpoint={pattern}"]) == 2
    assert "2 files match it" in capsys.readouterr().err
