"""evcmae-preprocess: raw event dataset folder -> RVT's preprocessed layout (or an HDF5 copy).

    evcmae-preprocess --in RAW --out RVT                      # Gen4 / eTraM HDF5, downsampled by 2
    evcmae-preprocess --in GEN1 --out GEN1_rvt --dataset gen1 # Gen1 DAT, RVT's Gen1 settings
    evcmae-preprocess --in GEN1 --out GEN1_h5 --to h5 --dataset gen1   # DAT/RAW -> NAME_td.h5

Recordings are ``NAME_td.h5``, ``NAME_td.dat``, ``NAME.raw`` (EVT 2.0 / 3.0) or ``NAME.aedat4``
beside ``NAME_bbox.npy``, in split folders train/ val/ test/. ``--dataset`` applies a public
dataset's settings (events.preprocess.DATASETS); any option given explicitly still wins.
``--to h5`` writes the Gen4 / eTraM raw layout instead, which pretraining and the sparse
detector input read.

Exit status: 0 when every recording was processed, 1 when any failed (each is named in the
summary and on stderr), 2 for bad arguments or an unusable input folder."""

from __future__ import annotations

import argparse
import json
import sys

from evcmae.events.errors import EventFileError
from evcmae.events.preprocess import DATASETS, SPLITS, PreprocessConfig, preprocess_dataset
from evcmae.tools.cli import entry

# Options whose default comes from --dataset when given, else from PreprocessConfig.
PRESET_OPTIONS = ("downsample", "min_side", "min_diag", "label_period_us", "width", "height", "keep_classes")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="evcmae-preprocess",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--in", dest="raw_dir", required=True, help="folder with train/ val/ test/")
    ap.add_argument("--out", dest="out_dir", required=True, help="output folder")
    ap.add_argument(
        "--to",
        choices=("rvt", "h5"),
        default="rvt",
        help="rvt: RVT's layout of stacked histograms (default); h5: NAME_td.h5 copies of the recordings",
    )
    ap.add_argument("--dataset", choices=sorted(DATASETS), default=None, help="a public dataset's settings")
    ap.add_argument(
        "--downsample",
        type=int,
        choices=(1, 2),
        default=None,
        help="2: event_representations_ds2_nearest.h5 (default); 1: full resolution",
    )
    ap.add_argument("--workers", type=int, default=1, help="parallel processes (one recording each)")
    ap.add_argument(
        "--splits",
        nargs="+",
        default=None,
        help="split folders to process (default: train val test for --to rvt, every folder for --to h5)",
    )
    ap.add_argument("--window-ms", type=int, default=50)
    ap.add_argument("--bins", type=int, default=10)
    ap.add_argument("--count-cutoff", type=int, default=10)
    ap.add_argument("--align-ms", type=int, default=100, help="first label frame at or after this time")
    ap.add_argument(
        "--label-period-us",
        type=int,
        default=None,
        help="thinning period (default: ~100 ms from the labels' spacing; RVT's gen1 uses 250000)",
    )
    ap.add_argument("--min-side", type=float, default=None, help="label filter: minimum box side (default 5)")
    ap.add_argument("--min-diag", type=float, default=None, help="label filter: minimum box diagonal (default 0)")
    ap.add_argument("--keep-classes", type=int, nargs="+", default=None, help="keep only these class ids")
    ap.add_argument(
        "--max-width-fraction",
        type=float,
        default=0.9,
        help="train split: drop boxes wider than this fraction of the sensor (<= 0: off)",
    )
    ap.add_argument(
        "--width", type=int, default=None, help="sensor width (overrides the files'; needed when they state none)"
    )
    ap.add_argument("--height", type=int, default=None, help="sensor height, as --width")
    ap.add_argument("--on-unsorted", choices=("error", "sort"), default="error")
    ap.add_argument(
        "--rvt-uint8-wrap", action="store_true", help="reproduce RVT's uint8 overflow for pixel-bins with >= 256 events"
    )
    ap.add_argument("--fail-fast", action="store_true", help="stop at the first failed recording")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    return ap


def preset_values(args) -> dict:
    """The dataset-dependent options: explicit flags, then the --dataset preset, then defaults."""
    preset = DATASETS.get(args.dataset, {}) if args.dataset else {}
    out = {}
    for key in PRESET_OPTIONS:
        value = getattr(args, key)
        if value is None and key in preset:
            value = preset[key]
        if value is not None:
            out[key] = value
    return out


def _convert(args) -> int:
    from evcmae.events.convert import convert_dataset

    values = preset_values(args)
    summary = convert_dataset(
        args.raw_dir, args.out_dir, args.splits, values.get("width"), values.get("height"), args.on_unsorted
    )
    print(json.dumps(summary.__dict__, indent=2) if args.json else summary.format())
    if summary.failed:
        print(f"evcmae-preprocess: {len(summary.failed)} recording(s) failed", file=sys.stderr)
    return 0 if summary.ok else 1


@entry("evcmae-preprocess")
def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.to == "h5":
            return _convert(args)
        cfg = PreprocessConfig(
            window_ms=args.window_ms,
            bins=args.bins,
            count_cutoff=args.count_cutoff,
            align_ms=args.align_ms,
            max_width_fraction=args.max_width_fraction if args.max_width_fraction > 0 else None,
            on_unsorted=args.on_unsorted,
            rvt_uint8_wrap=args.rvt_uint8_wrap,
            **preset_values(args),
        )
        summary = preprocess_dataset(
            args.raw_dir,
            args.out_dir,
            cfg,
            splits=args.splits or list(SPLITS),
            workers=args.workers,
            fail_fast=args.fail_fast,
            progress=not args.no_progress,
        )
    except (EventFileError, ValueError, OSError) as exc:
        print(f"evcmae-preprocess: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print(summary.format())
    if summary.failed:
        names = ", ".join(f"{r.split}/{r.name}" for r in summary.failed)
        print(f"evcmae-preprocess: {len(summary.failed)} recording(s) failed: {names}", file=sys.stderr)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
