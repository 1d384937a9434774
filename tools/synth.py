"""evcmae-synth: generate a synthetic labelled event benchmark (ESIM-style traffic scenes).

    evcmae-synth --out data/synth_demo --preset demo --seed 0

writes DIR/{train,val,test}/NAME_td.h5 + NAME_bbox.npy, DIR/pretrain/NAME_td.h5 (unlabelled) and
DIR/synth.json, then prints a summary. The same preset and seed give byte-identical files."""

from __future__ import annotations

import argparse
import sys

from evcmae.tools.cli import entry


def build_parser() -> argparse.ArgumentParser:
    from evcmae.events.synth.presets import PRESETS

    parser = argparse.ArgumentParser(prog="evcmae-synth", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (new, empty, or an earlier synth output)")
    parser.add_argument(
        "--preset",
        default="demo",
        choices=sorted(PRESETS),
        help="dataset size: tiny (tests), demo (< 1 min), study (evcmae-study on a CPU), bench (GPU studies)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (output does not depend on it)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    return parser


@entry("evcmae-synth")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from evcmae.events.synth import PRESETS, generate

    p = PRESETS[args.preset]
    print(
        f"evcmae-synth: preset {p.name} ({p.width}x{p.height}, {p.duration_s:g} s per recording), "
        f"seed {args.seed} -> {args.out}"
    )
    try:
        summary = generate(args.out, p, args.seed, workers=args.workers, log=None if args.quiet else print)
    except FileExistsError as exc:
        print(f"evcmae-synth: error: {exc}", file=sys.stderr)
        return 2
    print(f"{'split':<9} {'recordings':>10} {'events':>12} {'boxes':>8}")
    for split, tot in summary["totals"].items():
        print(f"{split:<9} {tot['recordings']:>10} {tot['events']:>12,} {tot['boxes']:>8,}")
    n_rec = sum(t["recordings"] for t in summary["totals"].values())
    n_ev = sum(t["events"] for t in summary["totals"].values())
    print(f"{n_rec} recordings, {n_ev:,} events in {summary['seconds']:.1f} s; parameters in {args.out}/synth.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
