"""Errors raised for bad event or label input. Every message names the file it is about."""

from __future__ import annotations

import os


class EventFileError(ValueError):
    """A recording or label file that cannot be read as asked: corrupt, truncated, of an unknown
    format, missing a dataset, or with timestamps out of order.

    ``path`` is kept so callers (CLIs, loaders) can report or skip the file."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
