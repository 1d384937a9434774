"""One folder per experiment, so every result can be traced to its question, settings and weights.

    experiments/<id>/
        hypothesis.txt          what the run is meant to show (when given)
        config.yaml             the resolved configuration
        command.txt             the command line that ran it (preceded by a "# cwd:" comment)
        metrics.json            evaluation results (finetune.evaluation), with summary.txt
        confusion_matrix.json   and confusion_matrix.png
        checkpoint.txt          path of the checkpoint the metrics came from

The id defaults to ``<YYYYmmdd-HHMMSS>-<short name>``, so folders sort by time. Relative roots
are taken from the current directory (under Hydra with ``hydra.job.chdir`` that is the run folder).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from evcmae.finetune.report import write_metrics as _write_metrics


def _slug(text: str, limit: int = 24) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return slug[:limit].rstrip("-") or "run"


def _plain_config(config: Any) -> dict:
    """A dict of plain values from a dict or an OmegaConf object (interpolations resolved)."""
    if config is None:
        return {}
    try:
        from omegaconf import OmegaConf
    except ImportError:  # omegaconf comes with hydra-core; plain dicts still work without it
        OmegaConf = None
    if OmegaConf is not None and OmegaConf.is_config(config):
        return OmegaConf.to_container(config, resolve=True)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be a dict or an OmegaConf config, got {type(config).__name__}")


@dataclass
class ExperimentRecord:
    path: Path
    hypothesis: str | None = None
    config: dict | None = None
    command: str | None = None
    metrics: dict | None = None
    confusion: dict | None = None
    checkpoint: str | None = None

    @property
    def experiment_id(self) -> str:
        return self.path.name

    @classmethod
    def create(
        cls,
        root: str | os.PathLike = "experiments",
        experiment_id: str | None = None,
        hypothesis: str | None = None,
        config: Any = None,
        command: str | Sequence[str] | None = None,
        name: str | None = None,
    ) -> ExperimentRecord:
        """Start a record: the folder, its hypothesis, config and command are written now.

        ``name`` (or the hypothesis) gives the short part of an automatic id; an automatic id
        that exists already gets a ``-2``, ``-3``... suffix, an explicit one is an error so no
        result is overwritten silently."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        if experiment_id is None:
            base = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(name or hypothesis or 'run')}"
            experiment_id, n = base, 1
            while (root / experiment_id).exists():
                n += 1
                experiment_id = f"{base}-{n}"
        path = root / experiment_id
        path.mkdir(parents=False, exist_ok=False)
        if command is None:
            command = sys.argv
        if not isinstance(command, str):
            command = shlex.join(str(c) for c in command)
        record = cls(path=path, hypothesis=hypothesis, config=_plain_config(config), command=command)
        if hypothesis is not None:
            (path / "hypothesis.txt").write_text(hypothesis.rstrip() + "\n", encoding="utf-8")
        (path / "config.yaml").write_text(
            yaml.safe_dump(record.config, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        (path / "command.txt").write_text(f"# cwd: {os.getcwd()}\n{command}\n", encoding="utf-8")
        return record

    def write_metrics(self, metrics: dict, confusion: dict | None = None) -> None:
        """Store evaluation results (``finetune.evaluation.evaluate``'s output)."""
        _write_metrics(self.path, metrics, confusion)
        self.metrics, self.confusion = metrics, confusion

    def set_checkpoint(self, checkpoint: str | os.PathLike) -> None:
        """Point at the weights (not a copy: checkpoints are large and live where training put them)."""
        self.checkpoint = str(Path(checkpoint).resolve())
        (self.path / "checkpoint.txt").write_text(self.checkpoint + "\n", encoding="utf-8")


def load_record(path: str | os.PathLike) -> ExperimentRecord:
    """Read a record folder; files not written (yet) come back as None."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no experiment record at {path}")

    def text(name):
        f = path / name
        return f.read_text(encoding="utf-8") if f.exists() else None

    def data(name):
        raw = text(name)
        return None if raw is None else json.loads(raw)

    hypothesis, config, command, checkpoint = (
        text(n) for n in ("hypothesis.txt", "config.yaml", "command.txt", "checkpoint.txt")
    )
    if command is not None:
        command = "\n".join(l for l in command.splitlines() if not l.startswith("# cwd:")).strip()
    return ExperimentRecord(
        path=path,
        hypothesis=None if hypothesis is None else hypothesis.strip(),
        config=None if config is None else (yaml.safe_load(config) or {}),
        command=command,
        metrics=data("metrics.json"),
        confusion=data("confusion_matrix.json"),
        checkpoint=None if checkpoint is None else checkpoint.strip(),
    )
