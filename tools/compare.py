"""evcmae-compare RUN... [--baseline RUN]: AP of evaluated runs against a baseline, as Markdown.

    evcmae-compare experiments/*-fpn4 experiments/*-sizeloss --baseline experiments/*-baseline

A RUN is an experiment record folder (or a folder / file with a metrics.json from the
evaluation). Without --baseline the first RUN is the baseline. Tables: overall AP, AP by object
size and AP per class, in percent with the difference from the baseline; – where a run has no
value (a class without ground truth).
"""

from __future__ import annotations

import argparse
import json
import sys

from evcmae.finetune.compare import compare, load_run, markdown
from evcmae.tools.cli import entry


@entry("evcmae-compare")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="evcmae-compare", description=__doc__.strip().splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="experiment folders or metrics.json files")
    parser.add_argument("--baseline", metavar="RUN", default=None, help="run to compare against (default: the first)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON (fractions, not percent)")
    args = parser.parse_args(argv)
    try:
        runs = [load_run(p) for p in args.runs]
        baseline = load_run(args.baseline) if args.baseline else None
        result = compare(runs, baseline)
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        print(f"evcmae-compare: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else markdown(result).rstrip("\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
