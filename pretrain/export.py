"""The hand-off to fine-tuning: plain backbone state dicts plus the config that rebuilds them.

A Lightning checkpoint holds the whole pretraining module (heads, decoders, queue, optimizer) under
module-prefixed names; fine-tuning wants the backbone alone, loadable into a freshly constructed
``SparseVoxelBackbone`` by name and shape. ``backbone.json`` records the constructor arguments
and the voxelizer the weights were trained with, since a different voxel grid (window, bins,
downsampling) or input features would silently make the weights meaningless.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from torch import nn

from evcmae.events.errors import CheckpointError
from evcmae.events.voxelize import FEATURE_NAMES

STUDENT_FILE, TEACHER_FILE, CONFIG_FILE = "student_backbone.pt", "teacher_backbone.pt", "backbone.json"
WEIGHT_FILES = {"teacher": TEACHER_FILE, "student": STUDENT_FILE}
BACKBONE_KEYS = ("in_channels", "channels", "blocks", "strides")


def backbone_kwargs(config: dict) -> dict:
    """``SparseVoxelBackbone`` constructor arguments from a ``backbone.json``."""
    return {k: config["backbone"][k] for k in BACKBONE_KEYS}


def backbone_config(backbone: nn.Module) -> dict:
    return {
        "in_channels": int(backbone.in_channels),
        "channels": [int(c) for c in backbone.channels],
        "blocks": [int(b) for b in backbone.blocks],
        "strides": [[int(v) for v in s] for s in backbone.strides],
    }


def _plain_state(module: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def part_files(name: str) -> dict[str, str]:
    """File of each network of an exported part (``teacher_rvt.pt`` ...), by which."""
    return {"teacher": f"teacher_{name}.pt", "student": f"student_{name}.pt"}


def export_backbones(
    out_dir,
    student: nn.Module,
    teacher: nn.Module,
    voxelizer=None,
    extra: dict | None = None,
    parts: dict | None = None,
) -> dict:
    """Write the two state dicts and ``backbone.json`` into ``out_dir``; returns the paths.
    The teacher (EMA) weights are the ones to fine-tune from, as in BYOL/DINO practice.

    ``parts``: further networks pretraining trained, name -> (student, teacher, record) (the RVT
    stages): their state dicts go to ``teacher_<name>.pt`` / ``student_<name>.pt`` and the record,
    with the file names, under ``<name>`` in ``backbone.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"student": out_dir / STUDENT_FILE, "teacher": out_dir / TEACHER_FILE, "config": out_dir / CONFIG_FILE}
    torch.save(_plain_state(student), paths["student"])
    torch.save(_plain_state(teacher), paths["teacher"])
    described = {}
    for name, (part_student, part_teacher, record) in (parts or {}).items():
        files = part_files(name)
        for which, module in (("student", part_student), ("teacher", part_teacher)):
            paths[f"{which}_{name}"] = out_dir / files[which]
            torch.save(_plain_state(module), paths[f"{which}_{name}"])
        described[name] = {**record, "files": files}
    config = {
        "backbone": {"class": f"{type(student).__module__}.{type(student).__name__}", **backbone_config(student)},
        "recommended_weights": TEACHER_FILE,
    }
    if voxelizer is not None:
        config["voxelizer"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(voxelizer).items()
        }
        config["voxelizer"]["feature_names"] = list(FEATURE_NAMES)
    config.update(extra or {})
    config.update(described)
    with open(paths["config"], "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return {k: os.fspath(v) for k, v in paths.items()}


def load_into(module: nn.Module, state: dict, log=print) -> dict:
    """Non-strict, shape-checked load that says what it did: tensors whose name and shape match
    are loaded; the rest are reported, never silently dropped. Returns the report."""
    own = module.state_dict()
    matched = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    report = {
        "loaded": sorted(matched),
        "missing": sorted(k for k in own if k not in matched),
        "unexpected": sorted(k for k in state if k not in own),
        "shape_mismatch": sorted(k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape)),
    }
    module.load_state_dict(matched, strict=False)
    if log is not None:
        log(
            f"loaded {len(matched)} of {len(own)} tensors"
            + "".join(
                f"; {key} ({len(v)}): {v[:5]}{' ...' if len(v) > 5 else ''}"
                for key, v in report.items()
                if key != "loaded" and v
            )
        )
    return report


def load_backbone(path, which: str = "teacher", log=print):
    """A ``SparseVoxelBackbone`` rebuilt from an export folder (or its backbone.json) with the
    ``which`` ("teacher" or "student") weights. Returns (backbone, config, load report)."""
    from evcmae.backbones.sparse_resnet import SparseVoxelBackbone
    from evcmae.pretrain.checkpointing import read_checkpoint

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if which not in WEIGHT_FILES:
        raise ValueError(f"which must be one of {sorted(WEIGHT_FILES)}, got {which!r}")
    config = read_export_config(folder / CONFIG_FILE)
    backbone = SparseVoxelBackbone(**backbone_kwargs(config))
    report = load_into(backbone, read_checkpoint(folder / WEIGHT_FILES[which], weights_only=True), log)
    return backbone, config, report


def read_export_config(path) -> dict:
    """A ``backbone.json``; ``CheckpointError`` naming the file when it is missing, not valid, or
    lacks the backbone's constructor arguments."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path.parent, f"no {path.name}: not a backbone export folder (evcmae-export writes one)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except UnicodeDecodeError as exc:
        raise CheckpointError(path, "not a text file") from exc
    missing = (
        [k for k in BACKBONE_KEYS if k not in (config.get("backbone") or {})]
        if isinstance(config, dict)
        else ["backbone"]
    )
    if missing:
        raise CheckpointError(path, f"lacks backbone.{', backbone.'.join(missing)}: not written by evcmae-export?")
    return config
