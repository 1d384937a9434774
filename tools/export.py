"""evcmae-export: a fine-tuned detector (or an RVT checkpoint) as ONNX or TorchScript.

    evcmae-export outputs/finetune/<run>/checkpoints/last.ckpt --format onnx        # -> last.onnx
    evcmae-export rvt-t.ckpt --format torchscript --out rvt-t.pt                    # an RVT checkpoint

One call of the graph is one 50 ms window: inputs ``x`` (B, 20, H, W) and the LSTM states
``h1, c1, ..., h4, c4`` (zeros for a recording's first window), outputs ``detections`` (decoded
YOLOX output, before thresholding and NMS) and the next states ``h1_out, ...``. A ``.json`` beside
the file lists the shapes. ``--check`` runs the exported file on two consecutive windows and
compares with PyTorch (ONNX through onnxruntime, when installed).

A sparse-encoder checkpoint exports the part after the encoder (input: the encoder's densified
output); the spconv encoder itself cannot be exported and must run in PyTorch. ONNX needs the
onnx and onnxscript packages (the 'export' extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evcmae.tools.cli import entry


def check_parity(event_detector, path, fmt: str, windows: int = 2) -> float | None:
    """Largest absolute difference between PyTorch and the exported file over ``windows``
    consecutive windows (states carried); None when ONNX cannot be run (no onnxruntime)."""
    import numpy as np
    import torch

    from evcmae.finetune.export import RecurrentStep, dense_part, step_inputs

    det, in_channels, height, width, _ = dense_part(event_detector.eval())
    step = RecurrentStep(det).eval()
    if fmt == "torchscript":
        exported = torch.jit.load(str(path))
        run = lambda inputs: [t.numpy() for t in exported(*inputs)]  # noqa: E731
    else:
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        run = lambda inputs: session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})  # noqa: E731
    worst = 0.0
    inputs = step_inputs(det, in_channels, height, width, seed=0)
    with torch.no_grad():
        for w in range(windows):
            ref = step(*inputs)
            got = run(inputs)
            worst = max(worst, *(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref)))
            x = step_inputs(det, in_channels, height, width, seed=w + 1)[0]
            inputs = (x, *ref[1:])  # the next window starts from PyTorch's states
    return worst


@entry("evcmae-export")
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="evcmae-export", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("checkpoint", help="a fine-tuning .ckpt, or RVT's")
    ap.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    ap.add_argument("--out", default=None, help="output file (default: beside the checkpoint, .onnx or .pt)")
    ap.add_argument("--batch", type=int, default=1, help="batch size fixed in the graph (default 1)")
    ap.add_argument("--dataset", default=None, help="an RVT checkpoint's dataset when its class count does not say")
    ap.add_argument("--check", action="store_true", help="compare the exported file with PyTorch on two windows")
    args = ap.parse_args(argv)

    from evcmae.finetune.export import export_detector
    from evcmae.tools.evaluate import load_module

    module = load_module(args.checkpoint, dataset=args.dataset)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx" if args.format == "onnx" else ".pt")
    try:
        info = export_detector(module.model, out, args.format, args.batch)
    except ValueError as exc:
        print(f"evcmae-export: {exc}", file=sys.stderr)
        return 2
    if info["not_exported"]:
        print(f"evcmae-export: note: {info['not_exported']}")
    print(f"evcmae: {args.format} graph of one window -> {out} (inputs and outputs in {out.with_suffix('.json')})")
    if args.check:
        diff = check_parity(module.model, out, args.format)
        if diff is None:
            print("evcmae-export: --check skipped: onnxruntime is not installed")
        else:
            print(f"evcmae: max |exported - PyTorch| over 2 windows: {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
