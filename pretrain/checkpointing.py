"""Checkpoints that survive faults, shared by pretraining and fine-tuning.

* ``AtomicCheckpointIO`` (a Lightning ``CheckpointIO`` plugin, ``trainer.plugins`` in both apps'
  configs) writes every checkpoint to a temporary file in the same folder, flushes it to disk and
  renames it over the target: a run killed mid-save leaves the previous checkpoint whole, never a
  truncated one. Loading ``last*.ckpt`` that is truncated or corrupt anyway (a disk that filled
  up, a copy cut short) falls back to the newest loadable checkpoint of the folder, with a warning.
* ``read_checkpoint`` loads any checkpoint file with a one-line ``CheckpointError`` naming the file
  when it cannot, and says which kind it is (``checkpoint_kind``), so fine-tuning tools refuse a
  pretraining checkpoint with a message instead of a ``TypeError``.
* ``rebuild_schedules_on_resume`` keeps only the step count of each saved LR scheduler, so the
  schedule built for this run's ``trainer.max_steps`` continues from the saved step: resuming with
  a larger (or smaller) ``max_steps`` stretches the rest of the schedule to the new length instead
  of failing on the saved scheduler's internals.
* ``check_writable`` proves a folder can be written before step 0.
"""

from __future__ import annotations

import glob
import os
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from evcmae.events.errors import CheckpointError, OutputFolderError

# What torch.load raises for a truncated or damaged file (zip central directory, pickle stream).
_DAMAGED = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError)


def read_checkpoint(path, map_location="cpu", weights_only: bool | None = False) -> dict:
    """The checkpoint at ``path`` as a dict; ``CheckpointError`` naming the file if it cannot be."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(path, "is a folder, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(2, "no such checkpoint file", str(path))
    if path.stat().st_size == 0:
        raise CheckpointError(path, "empty file (0 bytes): the save was interrupted?")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=weights_only)
    except _DAMAGED as exc:
        if "Weights only load failed" in str(exc) and zipfile.is_zipfile(path):
            raise  # a whole file that torch.load's safe mode refuses: not damage
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0]
        raise CheckpointError(path, f"cannot be read, truncated or corrupt ({type(exc).__name__}: {first})") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(path, f"holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def resolve_checkpoint(path) -> Path:
    """``path``, or the one file a pattern such as ``checkpoints/best-step=*.ckpt`` matches (the
    step of the val-selected checkpoint is not known in advance); none or several is an error."""
    path = Path(path)
    if path.is_file() or not glob.has_magic(str(path)):
        return path
    found = sorted(glob.glob(str(path)))
    if len(found) != 1:
        raise CheckpointError(
            path, "no file matches it" if not found else f"{len(found)} files match it ({', '.join(found)}); name one"
        )
    return Path(found[0])


def checkpoint_kind(ckpt: dict) -> str:
    """``pretrain`` (teacher/student backbones), ``finetune`` (the detector), ``weights`` (a bare
    state dict, e.g. an exported backbone) or ``unknown``."""
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        return "weights" if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()) else "unknown"
    if any(k.startswith(("teacher.backbone.", "student.backbone.")) for k in state):
        return "pretrain"
    if any(k.startswith("model.") for k in state) and "detector" in (ckpt.get("hyper_parameters") or {}):
        return "finetune"
    return "unknown"


def require_kind(path, ckpt: dict, kind: str) -> dict:
    """``ckpt`` if it is of ``kind``, else a ``CheckpointError`` saying what it is and what to do."""
    found = checkpoint_kind(ckpt)
    if found == kind:
        return ckpt
    advice = {
        ("finetune", "pretrain"): "a pretraining checkpoint, not a fine-tuned detector; "
        f"fine-tune from it first: evcmae-finetune model.pretrained={path}",
        ("finetune", "weights"): "bare weights (an exported backbone?), not a fine-tuned detector checkpoint",
        ("pretrain", "finetune"): "a fine-tuned detector checkpoint, not a pretraining one",
    }
    raise CheckpointError(path, advice.get((kind, found), f"not a {kind} checkpoint (found: {found})"))


def newest_loadable(folder, exclude=()) -> tuple[Path, dict] | None:
    """The newest (by modification time) ``*.ckpt`` of ``folder`` that loads and can resume a run
    (weights-only saves cannot: they hold no optimizer state), with its contents."""
    excluded = {Path(p).resolve() for p in exclude}
    candidates = [p for p in Path(folder).glob("*.ckpt") if p.resolve() not in excluded and p.is_file()]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError:
            continue
        if "optimizer_states" in ckpt:
            return path, ckpt
    return None


def _is_last(path: Path) -> bool:
    return path.name.startswith("last") and path.suffix == ".ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves through a temporary file and a rename; loads ``last*.ckpt`` with a fallback."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(path)
        try:
            return read_checkpoint(path, map_location, weights_only=weights_only)
        except CheckpointError as exc:
            if not _is_last(path):
                raise
            found = newest_loadable(path.parent, exclude=[path])
            if found is None:
                raise CheckpointError(path, f"{exc.problem}; no other loadable checkpoint in {path.parent}") from exc
            other, ckpt = found
            warnings.warn(
                f"{path}: {exc.problem}; resuming from {other.name} (step {ckpt.get('global_step', '?')}) instead",
                stacklevel=2,
            )
            return ckpt


class EveryValidationCheckpoint(ModelCheckpoint):
    """``step=N.ckpt`` at every validation, for choosing or averaging checkpoints after the run
    (on other data, or with another rule than the best val/AP). Unmonitored like the ``last.ckpt``
    callback, so it gets a state key of its own: Lightning refuses two callbacks that share one."""

    def __init__(self, keep: bool = False, **kwargs):
        kwargs.setdefault("filename", "{step}")
        kwargs.setdefault("save_weights_only", True)
        super().__init__(monitor=None, save_top_k=-1 if keep else 0, save_last=False, **kwargs)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_validation=True, dirpath=str(self.dirpath))


# Scheduler attributes every torch LR scheduler has and that mean the same in all of them.
_STEP_KEYS = ("last_epoch", "_step_count", "_last_lr")


def rebuild_schedules_on_resume(checkpoint: dict) -> None:
    """Keep only the step count of each saved LR scheduler (call from ``on_load_checkpoint``).

    The module's ``configure_optimizers`` builds the schedule for this run's length; the saved
    state then only says where in it training stands. Without this, the saved scheduler's
    internals (its total steps, or its class: a warm-up that rounds to zero steps makes a plain
    cosine instead of a sequence of two) override or break the new one."""
    states = checkpoint.get("lr_schedulers")
    if not states:
        return
    rebased = []
    for state in states:
        kept = {k: state[k] for k in _STEP_KEYS if k in state}
        groups = len(state.get("_last_lr") or state.get("base_lrs") or [])
        kept["lr_lambdas"] = [None] * groups  # LambdaLR's load_state_dict expects the key
        rebased.append(kept)
    checkpoint["lr_schedulers"] = rebased


def check_writable(folder, what: str = "output folder") -> None:
    """Create ``folder`` if needed and write and remove a file in it, so a read-only or misplaced
    folder is found before training starts, not at the first checkpoint."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".evcmae-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputFolderError(folder, f"the {what} cannot be written ({reason})") from exc
