"""evcmae: self-supervised pretraining for event cameras, and fine-tuning into RVT/YOLOX.

The public Python API (each name is imported on first use, so ``import evcmae`` stays light):

    read_events(path, t_start_us=None, t_end_us=None)  -> Events
        Any supported recording: Gen4/eTraM HDF5, Prophesee DAT, RAW EVT 2.0/3.0, AEDAT4.
    Events
        The event container: x, y (uint16), t (int64 µs), p (0/1), width, height.
    Voxelizer(width, height, window_us=50_000, num_bins=10, ...)(windows, t_starts) -> VoxelBatch
        Sparse voxels (batch, t-bin, y, x) with per-polarity counts and mean time: the input of
        the sparse backbone.
    load_backbone(path, which="teacher")  -> (SparseVoxelBackbone, config, load report)
        A pretrained backbone from an export folder (or a file in it) written by evcmae-pretrain.
    EventDetector(input="sparse" | "histogram", ...)
        The detector: sparse event encoder (or stacked histograms) -> RVT -> PAFPN -> YOLOX head.
    load_detector(checkpoint)  -> (FinetuneModule in eval mode, FinetuneDataModule)
        A fine-tuned detector and the data settings it was trained with.
    detect(checkpoint, recording, output=None)  -> Path
        Runs the recurrent detector over a whole recording; writes its boxes as ``*_bbox.npy``.

Example::

    import evcmae
    events = evcmae.read_events("rec_td.h5", 0, 50_000)
    voxels = evcmae.Voxelizer(width=events.width, height=events.height)([events], [0])
    backbone, config, _ = evcmae.load_backbone("outputs/runs/<run>")

The folders of the checkout are the subpackages: ``evcmae.events`` (data), ``evcmae.backbones``,
``evcmae.losses``, ``evcmae.pretrain``, ``evcmae.finetune``, ``evcmae.tools`` (the ``evcmae-*``
commands) and ``evcmae.conf`` (the Hydra configs). docs/architecture.md maps them.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> "module:attribute", imported lazily
_API = {
    "read_events": "evcmae.events.formats:read_events",
    "Events": "evcmae.events.container:Events",
    "Voxelizer": "evcmae.events.voxelize:Voxelizer",
    "VoxelBatch": "evcmae.events.voxelize:VoxelBatch",
    "load_backbone": "evcmae.pretrain.export:load_backbone",
    "EventDetector": "evcmae.finetune.encoder:EventDetector",
    "load_detector": "evcmae.tools.evaluate:load_checkpoint",
    "detect": "evcmae.tools.detect:detect",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'evcmae' has no attribute {name!r}")
    module, attribute = _API[name].split(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
