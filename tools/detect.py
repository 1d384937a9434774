"""evcmae-detect: run a fine-tuned recurrent detector over a whole recording, of any format.

    evcmae-detect checkpoint=.../last.ckpt input=rec_td.h5 [output=rec_detections_bbox.npy] [conf=0.1]
    evcmae-detect checkpoint=rvt-t.ckpt input=rec.raw video=rec.mp4      # an RVT checkpoint, RAW EVT3
    evcmae-detect checkpoint=... input=rec_td.dat --video rec.gif           # --key value works too

Detections go to ``output=`` (default: ``<recording>_detections_bbox.npy`` beside the input). An
existing file there is never replaced unless ``overwrite=true``: the run stops before the model
loads, so a labels file or an earlier run's detections cannot be lost by a mistyped path.

The input is any readable recording: Gen4/eTraM HDF5 (read window by window), Prophesee DAT, RAW
EVT 2.0/3.0 or AEDAT4 (decoded once). It is cut into 50 ms windows from its first event to its
last and run in streaming order with a progress bar, LSTM states carried throughout (one
recording, so one state, never reset). Every window's detections are written at the window's end
time in the box-label format (``*_bbox.npy``, ``BBOX_DTYPE``, sensor pixels), scored as
``protocol`` scores (``rvt``, the default: class confidence, as RVT's evaluator reads detections;
``yolox``: objectness × class), so the label tools and ``evcmae-evaluate labels=... detections=...``
read them as they read labels.

``video=OUT.gif|OUT.mp4`` also writes the events of each window with the detections drawn over
them (``video_scale=2`` enlarges; MP4 needs imageio-ffmpeg). ``width=``/``height=`` give the
sensor size of a file that does not state it (default: the checkpoint's data settings);
``dataset=`` names an RVT checkpoint's dataset when its class count does not.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from evcmae.tools.cli import entry


def window_ends(t_first: int, t_last: int, window_us: int) -> np.ndarray:
    """Ends of the windows (end - window, end] on the window grid that cover [t_first, t_last]."""
    first = (t_first // window_us + 1) * window_us
    return np.arange(first, t_last + window_us, window_us, dtype=np.int64)


def _model_input(model, data: dict, events, end: int, sensor: tuple[int, int]):
    from evcmae.events.histogram import stacked_histogram
    from evcmae.events.voxelize import Voxelizer

    window, ds = int(data.get("window_us", 50_000)), int(data.get("downsample", 1))  # the data defaults
    if model.input == "sparse":
        voxelizer = Voxelizer(
            sensor[0], sensor[1], window, int(data["num_bins"]), tuple(data.get("voxel_size", (1, 1))), ds
        )
        return voxelizer([events], [end - window + 1])
    return stacked_histogram(
        events.x, events.y, events.t, events.p, sensor[1], sensor[0], bins=int(data["num_bins"]), downsample=ds
    )[None]


def detect(
    checkpoint,
    input_path,
    output=None,
    conf: float = 0.1,
    nms: float = 0.45,
    protocol: str = "rvt",
    video=None,
    video_scale: int = 1,
    width: int | None = None,
    height: int | None = None,
    dataset: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    import torch
    from tqdm import tqdm

    from evcmae.events.labels import BBOX_DTYPE, save_labels
    from evcmae.events.recording import open_recording, recording_stem
    from evcmae.finetune.classes import class_names
    from evcmae.finetune.evaluation import detections_to_boxes
    from evcmae.finetune.postprocess import PROTOCOLS, postprocess
    from evcmae.tools.evaluate import load_module

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
    input_path = Path(input_path)
    if output is None:
        output = input_path.with_name((recording_stem(input_path) or input_path.stem) + "_detections_bbox.npy")
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output}: already exists; pass output=<another file> or overwrite=true")
    writer = None
    if video is not None:
        from evcmae.events.video import VideoWriter, check_video_path

        check_video_path(video)  # before the model runs, not after
    module = load_module(checkpoint, dataset=dataset)
    model, data = module.model, dict(module.hparams.get("data") or {})
    window, ds = int(data.get("window_us", 50_000)), int(data.get("downsample", 1))
    with open_recording(input_path, width, height) as rec:
        if rec.width is None or rec.height is None:  # a file silent about its size: the training data's
            rec.width, rec.height = data.get("width"), data.get("height")
        if rec.width is None or rec.height is None:
            raise ValueError(f"{input_path}: the file does not state its sensor size: pass width= and height=")
        sensor = (int(rec.width), int(rec.height))
        frame = (sensor[0] // ds, sensor[1] // ds)
        if model.input == "histogram" and frame != (model.width, model.height):
            raise ValueError(
                f"{input_path}: a {sensor[0]}x{sensor[1]} sensor at downsample {ds} gives {frame[0]}x{frame[1]} "
                f"histograms, but the detector was built for {model.width}x{model.height}"
            )
        ends = window_ends(*rec.t_range, window) if rec.t_range else np.zeros(0, np.int64)
        if video is not None:
            writer = VideoWriter(video, fps=1e6 / window)
        names = class_names(module.classes)
        states, parts = None, []
        with torch.no_grad():
            # no bar where nobody watches (not a terminal): logs and one-line errors stay clean
            for end in tqdm(ends.tolist(), desc=input_path.name, unit="win", disable=None if progress else True):
                events = rec.read_time_window(end - window + 1, end + 1)
                features, states = model.forward_backbone(_model_input(model, data, events, end, sensor), states)
                det = postprocess(model.forward_detect(features).float(), conf, nms)[0]
                boxes = detections_to_boxes(det, end, protocol)
                for key in ("x", "y", "w", "h"):
                    boxes[key] *= ds  # model pixels -> sensor pixels
                parts.append(boxes)
                if writer is not None:
                    writer.add(_frame(events, boxes, sensor, video_scale, names))
    if writer is not None:
        writer.close()
        print(f"evcmae: {writer.count} frames -> {writer.path}")
    result = np.concatenate(parts) if parts else np.zeros(0, BBOX_DTYPE)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_labels(output, result)
    print(f"evcmae: {len(result)} detections over {len(ends)} windows of {input_path.name} -> {output}")
    return output


def _frame(events, boxes, sensor, scale: int, names):
    from PIL import Image

    from evcmae.events.render import PREDICTION_COLOR, draw_boxes, event_image

    img = Image.fromarray(event_image(events.x, events.y, events.p, sensor[0], sensor[1]))
    # only boxes that reach into the picture (a raw YOLOX box may lie beyond the frame)
    inside = (boxes["x"] + boxes["w"] > 0) & (boxes["y"] + boxes["h"] > 0)
    boxes = boxes[inside & (boxes["x"] < sensor[0] - 1) & (boxes["y"] < sensor[1] - 1)]
    if scale != 1:
        img = img.resize((sensor[0] * scale, sensor[1] * scale), Image.NEAREST)
    return draw_boxes(img, boxes, names, scale=scale, thickness=max(1, scale), color=PREDICTION_COLOR, show_score=True)


@entry("evcmae-detect")
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    from evcmae.events.errors import EventFileError
    from evcmae.tools.evaluate import parse_overrides

    args = parse_overrides(argv)
    missing = [k for k in ("checkpoint", "input") if k not in args]
    if missing:
        raise SystemExit(f"required: {', '.join(k + '=...' for k in missing)}")
    try:
        detect(
            args["checkpoint"],
            args["input"],
            args.get("output"),
            float(args.get("conf", 0.1)),
            float(args.get("nms", 0.45)),
            str(args.get("protocol", "rvt")),
            args.get("video"),
            int(args.get("video_scale", 1)),
            args.get("width"),
            args.get("height"),
            args.get("dataset"),
            not args.get("no_progress", False),
            bool(args.get("overwrite", False)),
        )
    except (EventFileError, ValueError, FileNotFoundError, FileExistsError) as exc:
        raise SystemExit(f"evcmae-detect: {exc}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
