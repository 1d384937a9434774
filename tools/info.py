"""``evcmae-info FILE [--json]``: what an event recording or box label file holds.

Exit codes: 0 described, 2 the file cannot be read as any supported format or holds values no
recording can (one line on stderr naming the file; ``--debug`` for the traceback), 1 an optional
reader package is missing.
"""

from __future__ import annotations

import argparse
import json
import sys

from evcmae.events.formats import describe
from evcmae.tools.cli import entry


def _fmt(key: str, value) -> str:
    if value is None:
        return "unknown"
    if key == "on_fraction":
        return f"{value:.3f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v:,}" for k, v in value.items()) or "none"
    return str(value)


def format_table(info: dict) -> str:
    """Aligned ``key  value`` lines, with ranges folded onto one line each."""
    rows = []
    skip = set()
    for key, value in info.items():
        if key in skip:
            continue
        if key.endswith("_min") or key.endswith("_min_us"):
            high = key.replace("_min", "_max")
            label = "t range (µs)" if key == "t_min_us" else key.replace("_min", " range")
            lo, hi = info.get(key), info.get(high)
            text = "none" if lo is None else f"{lo:,} – {hi:,}"
            if key == "t_min_us" and lo is not None:
                text += f"  ({(hi - lo) / 1e6:.3f} s)"
            rows.append((label, text))
            skip.add(high)
        else:
            rows.append((key.replace("_", " "), _fmt(key, value)))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {text}" for label, text in rows)


@entry("evcmae-info")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="evcmae-info",
        description="Describe an event recording (HDF5, DAT, EVT 2.0/3.0 RAW, AEDAT4) or a *_bbox.npy "
        "label file: counts, time and coordinate ranges, sensor size, ON fraction.",
    )
    parser.add_argument("file", help="the file to describe")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    try:
        info = describe(args.file)
    except ImportError as exc:
        print(f"evcmae-info: error: {args.file}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info) if args.json else format_table(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
