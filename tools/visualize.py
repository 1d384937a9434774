"""evcmae-viz: draw an event window (ON white, OFF black on grey) with its ground-truth boxes.

    evcmae-viz rec_td.h5 --t-start 500000 --window-ms 50 --out window.png
    evcmae-viz rec_td.h5 --sequence 40 --out clip.gif

Boxes come from --labels, or from the sibling NAME_bbox.npy of a NAME_td.h5 file; the boxes
shown are those of the label time nearest the window end, within the window."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from evcmae.tools.cli import entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evcmae-viz", description=__doc__.strip().splitlines()[0])
    parser.add_argument("file", help="event recording (.h5, or any format events.formats reads)")
    parser.add_argument("--labels", help="box labels (*_bbox.npy); default: the recording's sibling file")
    parser.add_argument("--no-labels", action="store_true", help="draw no ground-truth boxes")
    parser.add_argument("--detections", help="predicted boxes to draw too (e.g. evcmae-detect's *_bbox.npy)")
    parser.add_argument("--t-start", type=int, default=None, help="window start in µs (default: first event)")
    parser.add_argument("--window-ms", type=float, default=50.0)
    parser.add_argument(
        "--sequence", type=int, default=None, metavar="N", help="render N consecutive windows into an animated GIF"
    )
    parser.add_argument("--scale", type=int, default=1, help="enlarge the picture this many times")
    parser.add_argument("--width", type=int, default=None, help="sensor width, when the file does not say")
    parser.add_argument("--height", type=int, default=None, help="sensor height, when the file does not say")
    parser.add_argument("--out", required=True, help="output .png (or .gif with --sequence)")
    return parser


def _is_h5(path: Path) -> bool:
    return path.suffix.lower() in (".h5", ".hdf5")


def read_window(path: Path, t_start_us: int | None, t_end_us: int | None, width=None, height=None):
    """Events of ``[t_start_us, t_end_us)`` through ``events.formats`` when it is available,
    else (HDF5 only) through ``events.h5``. ``width``/``height`` supply or override the sensor
    size, so events outside it are dropped rather than drawn off the picture."""
    try:
        from evcmae.events.formats import read_events
    except ImportError:
        read_events = None
    if read_events is not None:
        return read_events(path, t_start_us, t_end_us, width=width, height=height)
    if not _is_h5(path):
        raise SystemExit(f"{path}: only HDF5 recordings can be read here (events.formats is missing)")
    from evcmae.events.h5 import H5EventFile

    with H5EventFile(path, width=width, height=height) as f:
        if t_start_us is None and t_end_us is None:
            return f.read()
        lo = f.index_of_time(t_start_us) if t_start_us is not None else 0
        hi = f.index_of_time(t_end_us) if t_end_us is not None else len(f)
        return f.read(lo, hi)


def first_event_time(path: Path) -> int:
    """Start of the recording; cheap for HDF5 (one element read), a full read otherwise."""
    if _is_h5(path):
        from evcmae.events.h5 import H5EventFile

        with H5EventFile(path) as f:
            rng = f.t_range
        return 0 if rng is None else rng[0]
    ev = read_window(path, None, None)
    return int(ev.t.min()) if len(ev) else 0


def find_labels(path: Path, explicit: str | None, disabled: bool):
    if disabled:
        return None, None
    if explicit:
        label_path = Path(explicit)
    else:
        name = path.name
        if not name.endswith("_td.h5"):
            return None, None
        label_path = path.with_name(name[: -len("_td.h5")] + "_bbox.npy")
        if not label_path.exists():
            return None, None
    from evcmae.events.labels import load_labels

    return load_labels(label_path), label_path


@entry("evcmae-viz")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from evcmae.events.render import render_window, save_gif
    from evcmae.events.validation import sensor_size

    path = Path(args.file)
    if not path.exists():
        raise SystemExit(f"{path}: no such file")
    n = 1 if args.sequence is None else args.sequence
    if n < 1:
        raise SystemExit(f"--sequence {n}: must be at least 1")
    if not args.window_ms > 0 or args.scale < 1:
        raise SystemExit(f"--window-ms {args.window_ms:g} --scale {args.scale}: both must be positive")
    for name in ("width", "height"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SystemExit(f"--{name} {getattr(args, name)}: must be positive")
    out = Path(args.out)
    if args.sequence is not None and out.suffix.lower() != ".gif":
        raise SystemExit(f"--out {out}: --sequence writes an animated GIF; give --out a .gif name")
    window = int(round(args.window_ms * 1000))
    t0 = first_event_time(path) if args.t_start is None else args.t_start
    events = read_window(path, t0, t0 + n * window, args.width, args.height)
    # The file's size, the one given, or (with a warning) the events' extent; stray events refused.
    width, height = sensor_size(events, path, args.width, args.height)
    labels, label_path = find_labels(path, args.labels, args.no_labels)
    detections = find_labels(path, args.detections, False)[0] if args.detections else None

    frames = [
        render_window(
            events, width, height, labels, t0 + i * window, t0 + (i + 1) * window, args.scale, detections=detections
        )
        for i in range(n)
    ]
    if out.parent and not out.parent.exists():
        os.makedirs(out.parent, exist_ok=True)
    if args.sequence is None:
        frames[0].save(out)
    else:
        save_gif(frames, out, args.window_ms)
    boxes = "no labels" if labels is None else f"labels from {label_path}"
    if detections is not None:
        boxes += f", detections from {args.detections}"
    print(
        f"evcmae-viz: wrote {out} ({frames[0].size[0]}x{frames[0].size[1]}, {n} window(s) of "
        f"{args.window_ms:g} ms from t={t0} µs, {len(events)} events, {boxes})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
