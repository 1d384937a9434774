"""evcmae-detect: run a fine-tuned recurrent detector over a whole raw recording.

    evcmae-detect checkpoint=.../last.ckpt input=rec_td.h5 [output=rec_detections_bbox.npy] [conf=0.1]

The recording is cut into 50 ms windows from its start to its end and run in streaming order,
LSTM states carried throughout (one recording, so one state, never reset). Every window's
detections are written at the window's end time in the box-label format (``*_bbox.npy``,
``BBOX_DTYPE``, sensor pixels, score obj·cls in ``class_confidence``), so the label tools
(visualisation, evaluation) read them as they read labels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from evcmae.tools.cli import entry


def _load_checkpoint(*args, **kwargs):
    from evcmae.tools.evaluate import load_checkpoint

    return load_checkpoint(*args, **kwargs)


def detect(checkpoint, input_path, output=None, conf: float = 0.1, nms: float = 0.45) -> Path:
    import torch

    from evcmae.events.histogram import stacked_histogram
    from evcmae.events.labels import BBOX_DTYPE, save_labels
    from evcmae.finetune.evaluation import detections_to_boxes
    from evcmae.finetune.postprocess import postprocess
    from evcmae.finetune.recordings import RawRecording

    module, dm = _load_checkpoint(checkpoint)
    model = module.model
    input_path = Path(input_path)
    rec = RawRecording(input_path, None, "test", dm.voxelizer.window_us, dm.downsample, cover_all=True)
    ds, bins = dm.downsample, dm.voxelizer.num_bins
    states, parts = None, []
    with torch.no_grad():
        for i in range(len(rec)):
            ev = rec.window(i)
            if model.input == "sparse":
                x = dm.voxelizer([ev], [rec.window_start(i)])
            else:
                x = stacked_histogram(ev.x, ev.y, ev.t, ev.p, rec.sensor[1], rec.sensor[0], bins=bins, downsample=ds)[
                    None
                ]
            features, states = model.forward_backbone(x, states)
            det = postprocess(model.forward_detect(features).float(), conf, nms)[0]
            boxes = detections_to_boxes(det, int(rec.ends[i]))
            for key in ("x", "y", "w", "h"):
                boxes[key] *= ds  # model pixels -> sensor pixels
            parts.append(boxes)
    result = np.concatenate(parts) if parts else np.zeros(0, BBOX_DTYPE)
    if output is None:
        output = input_path.with_name(rec.name + "_detections_bbox.npy")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_labels(output, result)
    print(f"evcmae: {len(result)} detections over {len(rec)} windows of {input_path.name} -> {output}")
    return output


@entry("evcmae-detect")
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    from evcmae.tools.evaluate import parse_overrides

    args = parse_overrides(argv)
    missing = [k for k in ("checkpoint", "input") if k not in args]
    if missing:
        raise SystemExit(f"required: {', '.join(k + '=...' for k in missing)}")
    detect(
        args["checkpoint"],
        args["input"],
        args.get("output"),
        float(args.get("conf", 0.1)),
        float(args.get("nms", 0.45)),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
