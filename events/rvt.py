"""RVT's preprocessed dataset layout (docs/architecture.md, "RVT layout"): writing one sequence
and reading sequences and splits, including ones made by RVT's own
``scripts/genx/preprocess_dataset.py``.

```
<split>/<seq>/event_representations_v2/<repr_name>/event_representations[_ds2_nearest].h5  'data'
<split>/<seq>/event_representations_v2/<repr_name>/{objframe_idx_2_repr_idx,timestamps_us}.npy
<split>/<seq>/labels_v2/labels.npz ('labels', 'objframe_idx_2_label_idx'), labels_v2/timestamps_us.npy
```
``labels.npz`` holds boxes at sensor resolution even for ds2 files: RVT halves them when loading,
which is what ``RVTSequence.label_frame`` does too.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from .errors import EventFileError
from .labels import BBOX_DTYPE, as_bbox_array

__all__ = [
    "DEFAULT_REPR_NAME",
    "representation_name",
    "representation_filename",
    "blosc_options",
    "RepresentationWriter",
    "write_repr_index",
    "write_labels",
    "scale_boxes",
    "RVTSequence",
    "RVTSplit",
    "list_sequences",
]

DEFAULT_REPR_NAME = "stacked_histogram_dt=50_nbins=10"
REPR_PARENT = "event_representations_v2"
LABELS_DIR = "labels_v2"


def representation_name(window_ms: int = 50, bins: int = 10) -> str:
    return f"stacked_histogram_dt={window_ms}_nbins={bins}"


def representation_filename(downsample: int) -> str:
    if downsample not in (1, 2):
        raise ValueError(f"downsample must be 1 or 2, not {downsample}")
    return "event_representations_ds2_nearest.h5" if downsample == 2 else "event_representations.h5"


def blosc_options() -> dict:
    """RVT's filter: Blosc (id 32001) zstd level 1, byte shuffle, no separate HDF5 shuffle."""
    return dict(hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE))


# -- writing ------------------------------------------------------------------------------------
class RepresentationWriter:
    """Writes ``data`` (N, C, H, W) uint8 one representation at a time, chunk (1, C, H, W).

    The file is written as ``*_in_progress.h5`` and renamed on a clean close, as RVT does, so an
    interrupted run never leaves a file that looks complete."""

    def __init__(self, path, count: int, shape: tuple[int, int, int]):
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.stem + "_in_progress" + self.path.suffix)
        self._file = h5py.File(self._tmp, "w")
        self._data = self._file.create_dataset(
            "data",
            shape=(count, *shape),
            dtype=np.uint8,
            chunks=(1, *shape),
            maxshape=(None, *shape),
            **blosc_options(),
        )
        self._count, self._shape, self._next = count, tuple(shape), 0

    def append(self, representation) -> None:
        arr = np.asarray(representation)
        if arr.dtype != np.uint8 or arr.shape != self._shape:
            raise ValueError(f"expected uint8 {self._shape}, got {arr.dtype} {arr.shape}")
        if self._next >= self._count:
            raise ValueError(f"{self.path}: more than the {self._count} announced representations")
        self._data[self._next] = arr
        self._next += 1

    def close(self, ok: bool = True) -> None:
        if self._file.id.valid:
            self._file.close()
        if not ok:
            self._tmp.unlink(missing_ok=True)
            return
        if self._next != self._count:
            self._tmp.unlink(missing_ok=True)
            raise ValueError(f"{self.path}: wrote {self._next} of {self._count} representations")
        os.replace(self._tmp, self.path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        self.close(ok=exc_type is None)


def write_repr_index(repr_dir, timestamps_us, objframe_idx_2_repr_idx) -> None:
    repr_dir = Path(repr_dir)
    np.save(repr_dir / "timestamps_us.npy", np.asarray(timestamps_us, dtype=np.int64))
    np.save(repr_dir / "objframe_idx_2_repr_idx.npy", np.asarray(objframe_idx_2_repr_idx, dtype=np.int64))


def write_labels(labels_dir, labels_per_frame: list[np.ndarray], frame_timestamps_us) -> None:
    """``labels.npz`` with the frames' boxes concatenated (``BBOX_DTYPE``, sensor resolution)
    and each frame's first row; ``timestamps_us.npy`` with the frame times."""
    labels_dir = Path(labels_dir)
    sizes = np.array([len(f) for f in labels_per_frame], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    labels = (
        np.concatenate([as_bbox_array(f) for f in labels_per_frame]) if labels_per_frame else np.zeros(0, BBOX_DTYPE)
    )
    np.savez(labels_dir / "labels.npz", labels=labels, objframe_idx_2_label_idx=starts)
    np.save(labels_dir / "timestamps_us.npy", np.asarray(frame_timestamps_us, dtype=np.int64))


# -- labels at representation resolution --------------------------------------------------------
def scale_boxes(boxes: np.ndarray, factor: float, height: int, width: int) -> np.ndarray:
    """Boxes scaled by ``factor`` onto a ``height`` x ``width`` grid the way RVT's loader does:
    the far corner is clamped to ``size - 1`` and boxes left flat are dropped (float32 math)."""
    if factor == 1:
        return boxes.copy()
    out = boxes.copy()
    x, y = boxes["x"].astype(np.float32), boxes["y"].astype(np.float32)
    f = np.float32(factor)
    x1 = np.minimum((x + boxes["w"]) * f, np.float32(width - 1))
    y1 = np.minimum((y + boxes["h"]) * f, np.float32(height - 1))
    out["x"], out["y"] = x * f, y * f
    out["w"], out["h"] = x1 - out["x"], y1 - out["y"]
    return out[(out["w"] > 0) & (out["h"] > 0)]


# -- reading ------------------------------------------------------------------------------------
def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise EventFileError(path, "missing (not an RVT preprocessed sequence?)")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise EventFileError(path, f"cannot read ({type(exc).__name__}: {exc})") from exc


class RVTSequence:
    """One preprocessed sequence. Representations are read one chunk at a time on demand.

    ``repr_name`` defaults to the only representation folder (or ``DEFAULT_REPR_NAME`` when there
    are several); ``downsample`` defaults to the ds2 file when present, else the full-resolution one.
    """

    def __init__(self, path, repr_name: str | None = None, downsample: int | None = None):
        self.path = Path(path)
        self.name = self.path.name
        self.repr_dir = self._find_repr_dir(repr_name)
        if downsample is None:
            downsample = 2 if (self.repr_dir / representation_filename(2)).is_file() else 1
        self.downsample = downsample
        self.h5_path = self.repr_dir / representation_filename(downsample)
        if not self.h5_path.is_file():
            raise EventFileError(self.h5_path, "missing representation file")

        self.timestamps_us = _load_npy(self.repr_dir / "timestamps_us.npy").astype(np.int64)
        self.objframe_idx_2_repr_idx = _load_npy(self.repr_dir / "objframe_idx_2_repr_idx.npy").astype(np.int64)
        labels_dir = self.path / LABELS_DIR
        self.label_timestamps_us = _load_npy(labels_dir / "timestamps_us.npy").astype(np.int64)
        npz = labels_dir / "labels.npz"
        if not npz.is_file():
            raise EventFileError(npz, "missing (not an RVT preprocessed sequence?)")
        try:
            with np.load(npz, allow_pickle=False) as data:
                missing = {"labels", "objframe_idx_2_label_idx"} - set(data.files)
                if missing:
                    raise EventFileError(npz, f"lacks {sorted(missing)}; has {data.files}")
                # RVT's own files keep the raw *_bbox.npy dtype (e.g. t as uint64); unify it.
                self.labels = as_bbox_array(data["labels"], npz)
                self.objframe_idx_2_label_idx = data["objframe_idx_2_label_idx"].astype(np.int64)
        except EventFileError:
            raise
        except Exception as exc:
            raise EventFileError(npz, f"cannot read ({type(exc).__name__}: {exc})") from exc

        try:
            with h5py.File(self.h5_path, "r") as f:
                ds = f["data"]
                self._len, self.shape, self.dtype = ds.shape[0], tuple(ds.shape[1:]), ds.dtype
        except (OSError, KeyError) as exc:
            raise EventFileError(self.h5_path, f"cannot read dataset 'data': {exc}") from exc
        self._check_consistency()
        self._file = None
        self._pid = None
        self._repr_2_frame = {int(r): j for j, r in enumerate(self.objframe_idx_2_repr_idx)}

    def _find_repr_dir(self, repr_name):
        parent = self.path / REPR_PARENT
        if repr_name is None:
            names = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
            if not names:
                raise EventFileError(parent, "no event representation folder")
            repr_name = names[0] if len(names) == 1 else DEFAULT_REPR_NAME
            if repr_name not in names:
                raise EventFileError(parent, f"several representations {names}; pass repr_name")
        return parent / repr_name

    def _check_consistency(self):
        n_frames = len(self.objframe_idx_2_repr_idx)
        problems = []
        if len(self.timestamps_us) != self._len:
            problems.append(f"{len(self.timestamps_us)} timestamps for {self._len} representations")
        if len(self.label_timestamps_us) != n_frames or len(self.objframe_idx_2_label_idx) != n_frames:
            problems.append(
                f"{n_frames} label frames in objframe_idx_2_repr_idx, "
                f"{len(self.label_timestamps_us)} label timestamps, "
                f"{len(self.objframe_idx_2_label_idx)} label start rows"
            )
        if n_frames and (self.objframe_idx_2_repr_idx.min() < 0 or self.objframe_idx_2_repr_idx.max() >= self._len):
            problems.append("objframe_idx_2_repr_idx points outside the representations")
        if problems:
            raise EventFileError(self.path, "inconsistent sequence: " + "; ".join(problems))

    # -- representations -----------------------------------------------------------------------
    def __len__(self) -> int:
        return self._len

    def _h5(self):
        # h5py handles do not survive fork (DataLoader workers): reopen in a new process.
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.h5_path, "r")
            self._pid = os.getpid()
        return self._file

    def representation(self, i: int) -> np.ndarray:
        """Representation ``i`` as stored: uint8 (20, H, W)."""
        if not -self._len <= i < self._len:
            raise IndexError(f"representation {i} of {self._len} in {self.h5_path}")
        return self._h5()["data"][i % self._len]

    def representations(self, start: int, stop: int) -> np.ndarray:
        return self._h5()["data"][start:stop]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state

    # -- labels --------------------------------------------------------------------------------
    @property
    def num_label_frames(self) -> int:
        return len(self.objframe_idx_2_repr_idx)

    @property
    def sensor_hw(self) -> tuple[int, int]:
        """Sensor size implied by the stored grid (RVT keeps no other record of it)."""
        return self.shape[1] * self.downsample, self.shape[2] * self.downsample

    def label_frame(self, j: int, scaled: bool = True) -> tuple[int, np.ndarray]:
        """(representation index, boxes) of label frame ``j``. ``scaled`` puts the boxes on the
        representation grid (halved for ds2, as RVT's loader does); otherwise sensor pixels."""
        starts = self.objframe_idx_2_label_idx
        stop = starts[j + 1] if j + 1 < len(starts) else len(self.labels)
        boxes = self.labels[starts[j] : stop]
        if scaled:
            boxes = scale_boxes(boxes, 1.0 / self.downsample, self.shape[1], self.shape[2])
        return int(self.objframe_idx_2_repr_idx[j]), boxes

    def labels_for_repr(self, i: int, scaled: bool = True) -> np.ndarray | None:
        """Boxes of the label frame that ends at representation ``i``, or None if unlabelled."""
        j = self._repr_2_frame.get(int(i))
        return None if j is None else self.label_frame(j, scaled)[1]


def list_sequences(split_dir) -> list[Path]:
    """Sequence folders of a split, sorted by name (folders with ``labels_v2`` or representations)."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise EventFileError(split_dir, "split folder not found")
    return sorted(
        p for p in split_dir.iterdir() if p.is_dir() and ((p / LABELS_DIR).is_dir() or (p / REPR_PARENT).is_dir())
    )


class RVTSplit:
    """All sequences of one split folder, opened lazily, in name order."""

    def __init__(self, path, repr_name: str | None = None, downsample: int | None = None):
        self.path = Path(path)
        self.sequence_paths = list_sequences(self.path)
        self._kw = dict(repr_name=repr_name, downsample=downsample)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.sequence_paths]

    def __len__(self) -> int:
        return len(self.sequence_paths)

    def __getitem__(self, i: int) -> RVTSequence:
        return RVTSequence(self.sequence_paths[i], **self._kw)

    def __iter__(self):
        return (self[i] for i in range(len(self)))
