"""evcmae-preprocess: raw Gen4/eTraM dataset folder -> RVT's preprocessed layout.

Exit status: 0 when every recording was processed, 1 when any failed (each is named in the
summary and on stderr), 2 for bad arguments or an unusable input folder."""

from __future__ import annotations

import argparse
import json
import sys

from evcmae.events.errors import EventFileError
from evcmae.events.preprocess import SPLITS, PreprocessConfig, preprocess_dataset
from evcmae.tools.cli import entry


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="evcmae-preprocess", description=__doc__.splitlines()[0])
    ap.add_argument("--in", dest="raw_dir", required=True, help="folder with train/ val/ test/")
    ap.add_argument("--out", dest="out_dir", required=True, help="output folder (RVT layout)")
    ap.add_argument(
        "--downsample",
        type=int,
        choices=(1, 2),
        default=2,
        help="2: event_representations_ds2_nearest.h5 (default); 1: full resolution",
    )
    ap.add_argument("--workers", type=int, default=1, help="parallel processes (one recording each)")
    ap.add_argument(
        "--splits",
        nargs="+",
        default=list(SPLITS),
        help="split folders to process (default: train val test; others are ignored)",
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
    ap.add_argument("--min-side", type=float, default=5.0)
    ap.add_argument("--min-diag", type=float, default=0.0)
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


@entry("evcmae-preprocess")
def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = PreprocessConfig(
            downsample=args.downsample,
            window_ms=args.window_ms,
            bins=args.bins,
            count_cutoff=args.count_cutoff,
            align_ms=args.align_ms,
            label_period_us=args.label_period_us,
            min_side=args.min_side,
            min_diag=args.min_diag,
            max_width_fraction=args.max_width_fraction if args.max_width_fraction > 0 else None,
            width=args.width,
            height=args.height,
            on_unsorted=args.on_unsorted,
            rvt_uint8_wrap=args.rvt_uint8_wrap,
        )
        summary = preprocess_dataset(
            args.raw_dir,
            args.out_dir,
            cfg,
            splits=args.splits,
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
