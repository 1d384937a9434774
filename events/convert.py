"""A dataset of DAT / RAW / AEDAT4 recordings -> the Gen4 / eTraM raw layout (``NAME_td.h5``).

Pretraining and the sparse detector input read recordings window by window, which only HDF5
allows (a binary search on ``t``); the other formats must be decoded whole. Converting once gives
them the layout they read: ``OUT/<split>/NAME_td.h5`` (Blosc-compressed, sensor size stored) with
``NAME_bbox.npy`` copied beside it. HDF5 recordings already in that layout are copied as they are.

    evcmae-preprocess --in /data/gen1 --out /data/gen1_h5 --to h5 --dataset gen1
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EventFileError
from .formats import detect_format, read_events
from .h5 import write_h5


@dataclass
class ConvertSummary:
    converted: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "split/name: why"

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        lines = [f"{len(self.converted)} recordings converted to HDF5, {len(self.copied)} HDF5 recordings copied"]
        lines += [f"FAILED {f}" for f in self.failed]
        return "\n".join(lines)


def split_folders(raw_dir: Path, splits=None) -> list[str]:
    """The given splits, or every sub-folder (train, val, test, pretrain, ...)."""
    if splits:
        return list(splits)
    return sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def convert_dataset(
    raw_dir, out_dir, splits=None, width: int | None = None, height: int | None = None, on_unsorted: str = "error"
) -> ConvertSummary:
    """Write every recording of ``raw_dir/<split>/`` as ``out_dir/<split>/NAME_td.h5`` (+ labels).

    ``width``/``height`` give the sensor size for files that do not state it (Gen1 DAT headers
    may not); it is stored in every written file. One bad file is reported, never fatal."""
    from .preprocess import find_recordings

    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise EventFileError(raw_dir, "input folder not found")
    summary = ConvertSummary()
    for split in split_folders(raw_dir, splits):
        for name, rec, bbox in find_recordings(raw_dir / split):
            if rec is None:
                continue  # labels without events: nothing to convert (preprocessing reports them)
            target = out_dir / split / f"{name}_td.h5"
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                if detect_format(rec) == "h5":
                    shutil.copyfile(rec, target)
                    summary.copied.append(f"{split}/{name}")
                else:
                    events = read_events(rec, on_unsorted=on_unsorted, width=width, height=height)
                    if events.width is None or events.height is None:
                        raise EventFileError(rec, "sensor size not stated in the file; pass --width/--height")
                    tmp = target.with_name(target.name + ".part")
                    write_h5(tmp, events)
                    tmp.replace(target)
                    summary.converted.append(f"{split}/{name}")
                if bbox is not None:
                    shutil.copyfile(bbox, target.with_name(f"{name}_bbox.npy"))
            except (EventFileError, OSError, ValueError) as exc:
                summary.failed.append(f"{split}/{name}: {exc}")
    return summary
