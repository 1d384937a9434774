"""Class maps: the class-name sets of each dataset and the eTraM 8 -> 3 super-class table.

Index = class_id in the label files; which set a run uses is the data config's ``classes``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from evcmae.events.labels import as_bbox_array

CLASS_SETS: dict[str, tuple[str, ...]] = {
    "etram8": ("pedestrian", "car", "bicycle", "bus", "motorbike", "truck", "tram", "wheelchair"),
    "etram3": ("pedestrian", "vehicle", "micro-mobility"),
    "gen4": ("pedestrian", "two-wheeler", "car"),
    "gen1": ("car", "pedestrian"),
}
# eTraM 8 classes -> 3 super-classes (vehicle = car, bus, truck, tram; micro-mobility = bicycle,
# motorbike, wheelchair), as an index table: ETRAM8_TO_3[id8] = id3.
ETRAM8_TO_3: tuple[int, ...] = (0, 1, 2, 1, 2, 1, 1, 2)


def class_names(classes: str | Sequence[str]) -> tuple[str, ...]:
    """A class-set name from ``CLASS_SETS`` or an explicit list, so configs can say either."""
    return CLASS_SETS[classes] if isinstance(classes, str) else tuple(classes)


def remap_classes(boxes: np.ndarray, mapping: Sequence[int] = ETRAM8_TO_3) -> np.ndarray:
    """A copy with ``class_id`` sent through ``mapping`` (e.g. eTraM's 8 classes to 3)."""
    out = as_bbox_array(np.asarray(boxes)).copy()
    table = np.asarray(mapping, dtype=np.int64)
    if len(out) and int(out["class_id"].max()) >= len(table):
        raise ValueError(f"class_id {int(out['class_id'].max())} has no entry in a {len(table)}-class map")
    out["class_id"] = table[out["class_id"].astype(np.int64)]
    return out
