"""The detector as a graph for deployment: TorchScript or ONNX, one window per call, recurrent state
in the open.

RVT is recurrent: each of the four stages keeps an LSTM state (h, c). The exported graph is one
step, ``(x, h1, c1, h2, c2, h3, c3, h4, c4) -> (detections, h1', c1', ..., h4', c4')``: the caller
feeds zeros for the first window of a recording and each call's states to the next. Zeros are what
the detector starts from, so the first step equals the PyTorch model's. ``detections`` is the
decoded head output (B, A, 5 + C): cx, cy, w, h in input pixels, objectness and class
probabilities; thresholding and NMS stay outside (``finetune.postprocess``), as they are
data-dependent loops. Shapes are fixed at export (batch, height, width of the checkpoint's data).

The sparse encoder cannot be exported: spconv builds its rule tables (which input voxel feeds which
output) in Python and C++ outside any tensor graph, so neither TorchScript nor ONNX can record it.
For a sparse checkpoint the dense part is exported instead, from the encoder's densified output
(B, C·T', H', W') on: run the encoder in PyTorch (with spconv) and feed its output to the graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

FORMATS = ("onnx", "torchscript")
SPARSE_NOTE = (
    "the sparse encoder (spconv) is not exportable: its rule tables are built outside the tensor graph, "
    "so TorchScript and ONNX cannot record it; exported the dense part, from the encoder's output on"
)


class RecurrentStep(nn.Module):
    """One window of the dense detector with its LSTM states as plain tensor inputs and outputs.

    ``detector`` is a ``finetune.detector.Detector`` (RVT → PAFPN → YOLOX head)."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector
        self.num_stages = len(detector.backbone.stages)

    def forward(self, x: torch.Tensor, *states: torch.Tensor):
        prev = [(states[2 * i], states[2 * i + 1]) for i in range(self.num_stages)]
        features, new = self.detector.forward_backbone(x, prev)
        out = [self.detector.forward_detect(features)]
        for h, c in new:
            out += [h, c]
        return tuple(out)


def step_inputs(detector: nn.Module, in_channels: int, height: int, width: int, batch: int = 1, seed: int = 0):
    """Example inputs: a random non-negative window (histogram-like counts) and zero states, with
    the state shapes of the padded frame at each stage's stride."""
    backbone = detector.backbone
    ph, pw = backbone.padded_size(height, width)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 4, (batch, in_channels, height, width), generator=generator).float()
    states = []
    for dim, stride in zip(backbone.stage_dims, backbone.strides):
        zero = torch.zeros(batch, dim, ph // stride, pw // stride)
        states += [zero, zero.clone()]
    return (x, *states)


def io_names(num_stages: int) -> tuple[list[str], list[str]]:
    states = [f"{kind}{i + 1}" for i in range(num_stages) for kind in ("h", "c")]
    return ["x", *states], ["detections", *[f"{s}_out" for s in states]]


def dense_part(event_detector) -> tuple[nn.Module, int, int, int, str | None]:
    """(Detector, in_channels, height, width, note) of an ``EventDetector``: the whole detector for
    histograms, the part after the sparse encoder otherwise."""
    det = event_detector.detector
    in_channels = det.backbone.in_channels
    if event_detector.encoder is None:
        return det, in_channels, event_detector.height, event_detector.width, None
    _, h, w = event_detector.encoder.out_grid
    return det, in_channels, h, w, SPARSE_NOTE


def export_detector(event_detector, out_path, fmt: str = "onnx", batch: int = 1, opset: int = 18) -> dict:
    """Write the recurrent step of ``event_detector`` (eval mode) to ``out_path``, with a
    ``.json`` beside it describing inputs, outputs and what was left out; returns that description."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    event_detector = event_detector.eval()
    det, in_channels, height, width, note = dense_part(event_detector)
    step = RecurrentStep(det).eval()
    inputs = step_inputs(det, in_channels, height, width, batch)
    names_in, names_out = io_names(step.num_stages)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(step, inputs, check_trace=False)
            traced.save(str(out_path))
        else:
            _export_onnx(step, inputs, out_path, names_in, names_out, opset)
    info = {
        "format": fmt,
        "file": out_path.name,
        "input": "histogram" if note is None else "sparse encoder output (B, C*T', H', W')",
        "inputs": {n: list(t.shape) for n, t in zip(names_in, inputs)},
        "outputs": names_out,
        "detections": "(B, A, 5 + C): cx, cy, w, h (input pixels), objectness, class probabilities; no NMS",
        "strides": list(det.head.strides),
        "num_classes": int(det.head.num_classes),
        "first_window": "zeros for every state; then each call's *_out states feed the next call",
        "not_exported": note,
    }
    out_path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _export_onnx(step, inputs, out_path, names_in, names_out, opset: int) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ValueError(
            "ONNX export needs the onnx package (pip install onnx onnxscript, or the 'export' extra)"
        ) from None
    torch.onnx.export(
        step,
        inputs,
        str(out_path),
        input_names=names_in,
        output_names=names_out,
        opset_version=opset,
        dynamo=True,  # the TorchScript-based exporter has no nearest-exact upsampling (the PAFPN's)
        external_data=False,  # one self-contained file
        verbose=False,
    )
