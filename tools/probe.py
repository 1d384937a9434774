"""``evcmae-probe SOURCE --data-root DIR``: the representation probe on any encoder.

SOURCE is a pretraining export folder (or a ``*_backbone.pt`` in it), a pretraining ``.ckpt``, or
a fine-tuning ``.ckpt`` (its encoder). The probe embeds every labelled box of the split's windows
with the encoder's features (BatchNorm statistics re-estimated on those unmasked windows, RoI-grid
pooling) and reports k-NN accuracy, balanced accuracy and macro F1 (``evcmae.pretrain.probe``).

``--references`` adds the encoders it must be read against, pooled the same way: ``untrained``
(the same architecture, freshly initialised), ``raw_features`` (the input voxels' own features)
and, with ``--supervised CKPT``, ``supervised`` (the encoder of a detector fine-tuned on labels).
``--compare A B ...`` adds further encoders, each row named by its folder (pretraining variants,
say). Each balanced accuracy comes with a 95 % interval from resampling whole tracks, and every
row after the first with ``pretrained_minus_this``: SOURCE's balanced accuracy minus this row's,
on the same boxes, with its interval.

    evcmae-probe runs/full --data-root data/study --compare runs/no_voxel_nce runs/occupancy_only

    evcmae-probe outputs/runs/<run> --data-root data/study --references --json probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evcmae.events.errors import ConfigError, EventFileError
from evcmae.tools.cli import entry

ENCODERS = ("pretrained", "untrained", "raw_features", "supervised")
MIN_TRACKS = 3  # below this a class is hardly recognisable by leave-one-track-out k-NN (docs/study.md)


def _voxelizer_settings(source: Path, args) -> dict:
    from evcmae.finetune.transfer import export_json

    settings = {}
    info = export_json(source)
    if info is not None and "voxelizer" in info:
        settings.update({k: info["voxelizer"][k] for k in ("width", "height", "window_us", "num_bins", "downsample")})
        settings["voxel_size"] = tuple(info["voxelizer"].get("voxel_size", (1, 1)))
    elif source.suffix == ".ckpt":
        import torch

        data = torch.load(source, map_location="cpu", weights_only=False).get("hyper_parameters", {}).get("data") or {}
        settings.update({k: data[k] for k in ("width", "height", "window_us", "num_bins", "downsample") if k in data})
        if "voxel_size" in data:
            settings["voxel_size"] = tuple(data["voxel_size"])
    for key in ("width", "height", "window_us", "num_bins", "downsample"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    missing = [k for k in ("width", "height") if k not in settings]
    if missing:
        raise ConfigError("source", str(source), f"no voxelizer settings found beside it; pass --{' --'.join(missing)}")
    settings.setdefault("window_us", 50_000)
    settings.setdefault("num_bins", 10)
    settings.setdefault("downsample", 1)
    settings.setdefault("voxel_size", (1, 1))
    return settings


def _loader(root: Path, split: str, settings: dict, max_windows: int, min_box_side: float):
    from torch.utils.data import DataLoader

    from evcmae.events.voxelize import Voxelizer
    from evcmae.pretrain.data import LabelledCollate, LabelledWindows

    files = sorted((root / split).glob("*_td.h5"))
    if not files:
        raise EventFileError(root / split, "no *_td.h5 recordings to probe")
    voxelizer = Voxelizer(
        int(settings["width"]),
        int(settings["height"]),
        int(settings["window_us"]),
        int(settings["num_bins"]),
        tuple(int(v) for v in settings["voxel_size"]),
        int(settings["downsample"]),
    )
    windows = LabelledWindows(files, voxelizer.window_us, voxelizer.width, voxelizer.height, max_windows, min_box_side)
    return DataLoader(windows, batch_size=4, collate_fn=LabelledCollate(voxelizer))


def load_encoder(source, which: str = "teacher"):
    """A ``SparseVoxelBackbone`` with the weights of any supported source."""
    from evcmae.backbones.sparse_resnet import SparseVoxelBackbone
    from evcmae.finetune.transfer import backbone_config, backbone_state
    from evcmae.pretrain.export import load_into

    kwargs, _ = backbone_config(source, which)
    state = backbone_state(source, which)
    backbone = SparseVoxelBackbone(**kwargs)
    deepest = backbone.deepest_stage_in(state)
    if deepest is not None:
        backbone.truncate(deepest)  # a detector's encoder stops where it was cut
    load_into(backbone, state, log=lambda *_: None)
    return backbone, kwargs


def run(args) -> list[dict]:
    import torch

    from evcmae.backbones.sparse_resnet import SparseVoxelBackbone
    from evcmae.pretrain.checkpointing import resolve_checkpoint
    from evcmae.pretrain.probe import RawFeatures, paired_difference, probe_votes, votes_scores
    from evcmae.tools.study_report import interval_text, signed_text, tracks_text

    torch.set_num_threads(max(1, int(args.threads)))
    source = Path(args.source)
    settings = _voxelizer_settings(source, args)
    loader = _loader(Path(args.data_root), args.split, settings, args.max_windows, args.min_box_side)
    pretrained, kwargs = load_encoder(source, args.which)
    encoders = {"pretrained": (pretrained, args.scale)}
    if args.references:
        torch.manual_seed(args.seed)
        fresh = SparseVoxelBackbone(**kwargs).truncate(args.scale)
        encoders["untrained"] = (fresh, args.scale)
        encoders["raw_features"] = (RawFeatures(), "raw")
    if args.supervised:
        encoders["supervised"] = (load_encoder(resolve_checkpoint(args.supervised))[0], args.scale)
    for other in args.compare or ():  # e.g. pretraining variants, named by their folder
        path = Path(other)
        name = path.parent.name if path.is_file() else path.name
        if name in encoders:
            raise ConfigError("--compare", other, f"its name {name!r} is taken; give each source its own folder")
        encoders[name] = (load_encoder(path, args.which)[0], args.scale)
    rows, first = [], None
    for name, (encoder, scale) in encoders.items():
        votes, labels = probe_votes(encoder, loader, scale, args.grid, args.k, recalibrate_bn=not args.no_precise_bn)
        scores = votes_scores(votes, labels)
        row = {"encoder": name, **scores}
        ci = interval_text(scores["balanced_accuracy_ci95"])
        line = (
            f"{name:<13} balanced accuracy {scores['balanced_accuracy']:.3f}{ci}  accuracy {scores['accuracy']:.3f}  "
            f"macro F1 {scores['macro_f1']:.3f}  ({scores['boxes']} boxes)"
        )
        if first is None:
            first = votes
        else:  # the references, each against the encoder under test on the same boxes
            row["pretrained_minus_this"] = paired_difference(first, votes)
            if row["pretrained_minus_this"] is not None:
                d = row["pretrained_minus_this"]
                line += f"; pretrained − {name}: {signed_text(d['balanced_accuracy'], 3)}{interval_text(d['ci95'], signed=True)}"
        rows.append(row)
        print(line, flush=True)
    tracks = rows[0]["tracks_per_class"] if rows else {}
    print(f"tracks per class (class index: tracks voted on): {tracks_text(tracks)}", flush=True)
    few = [c for c, n in tracks.items() if n < MIN_TRACKS]
    if few:
        print(
            f"note: class {', '.join(few)} has fewer than {MIN_TRACKS} tracks; with the query's own track left out "
            "it can hardly be recognised, so balanced accuracy on this split understates every encoder",
            flush=True,
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evcmae-probe", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("source", help="export folder, *_backbone.pt, pretraining or fine-tuning .ckpt")
    p.add_argument("--data-root", required=True, help="dataset root with <split>/*_td.h5 and *_bbox.npy")
    p.add_argument("--split", default="val")
    p.add_argument("--which", default="teacher", choices=("teacher", "student"))
    p.add_argument("--scale", default="x_conv3", help="backbone output to probe")
    p.add_argument("--grid", type=int, default=2, help="RoI grid (grid x grid sub-boxes per box)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--max-windows", type=int, default=64, help="label times probed, evenly spaced")
    p.add_argument("--min-box-side", type=float, default=0.0)
    p.add_argument("--references", action="store_true", help="also probe untrained and raw-feature references")
    p.add_argument("--supervised", help="a fine-tuning .ckpt whose encoder is the supervised reference")
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="SOURCE",
        help="further encoders (e.g. pretraining variants), each paired with SOURCE on the same boxes",
    )
    p.add_argument("--no-precise-bn", action="store_true", help="keep the checkpoint's BatchNorm statistics")
    p.add_argument("--seed", type=int, default=0, help="initialisation of the untrained reference")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the rows here")
    for key in ("width", "height", "window_us", "num_bins", "downsample"):
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, default=None)
    return p


@entry("evcmae-probe")
def main(argv=None) -> int:
    run(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
