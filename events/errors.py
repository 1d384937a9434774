"""Errors a user can act on. Every message names what it is about (a file, a config key) and the
problem, so a command can print it as one line (``tools/cli.py``) instead of a traceback."""

from __future__ import annotations

import os


class EvcmaeError(Exception):
    """Base of the errors caused by input the user controls (files, configs, checkpoints), as
    opposed to bugs: ``evcmae-*`` commands print these as one line and exit 2."""


def _where(field: str | None, row: int | None) -> str:
    if field is None:
        return ""
    return f"{field}: " if row is None else f"{field} (row {row}): "


class EventFileError(EvcmaeError, ValueError):
    """A recording or label file that cannot be read as asked: corrupt, truncated, of an unknown
    format, missing a dataset, or with values no recording can hold (NaN, timestamps out of order).

    ``path`` is kept so callers (CLIs, loaders) can report or skip the file; ``field`` and ``row``
    say where the first offending value is, when one value is to blame."""

    def __init__(self, path: str | os.PathLike | None, problem: str, field: str | None = None, row: int | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem, self.field, self.row = problem, field, row
        text = _where(field, row) + problem
        super().__init__(f"{self.path}: {text}" if self.path else text)


class LabelFileError(EventFileError):
    """A box label file (``*_bbox.npy``, ``labels.npz``) with a field missing or values no box can
    have. A subclass of ``EventFileError``, so code that handles bad recordings handles it too."""


class ConfigError(EvcmaeError, ValueError):
    """A config value that cannot work, found before any work starts (``tools/config_checks.py``)."""

    def __init__(self, key: str, value, problem: str):
        self.key, self.value, self.problem = key, value, problem
        super().__init__(f"{key}={value}: {problem}")


class CheckpointError(EvcmaeError, ValueError):
    """A checkpoint that cannot be used as asked: truncated, corrupt, or of the other kind
    (pretraining vs fine-tuning)."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f"{self.path}: {problem}")


class OutputFolderError(EvcmaeError):
    """A folder a run must write to (outputs, checkpoints) that cannot be written."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f"{self.path}: {problem}")
